//! The control socket in the home directory: `vx6 status`, `vx6 resolve` and the like connect,
//! send one request line and read one reply. The server owns its listener and its clients; the
//! daemon answers the requests it hands out ([`ControlServer::read`]). Unix only: elsewhere it
//! binds nothing and the daemon runs without it.

use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::collections::HashMap;
#[cfg(unix)]
use std::io::{ErrorKind, Read, Write};

#[cfg(unix)]
use anyhow::Context as _;
use anyhow::Result;
use mio::{Registry, Token};

/// Longest request line accepted; a client that sends more is dropped.
pub const MAX_REQUEST: usize = 256;

#[cfg(unix)]
struct Client {
    socket: mio::net::UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    off: usize,
    /// The request was handed out; reading is over.
    answered: bool,
}

/// The listener, its clients, and the resolutions some of them wait for.
pub struct ControlServer {
    path: Option<PathBuf>,
    #[cfg(unix)]
    listener: Option<mio::net::UnixListener>,
    #[cfg(unix)]
    clients: HashMap<Token, Client>,
    /// Clients waiting for a resolution, by resolution id.
    #[cfg(unix)]
    resolving: HashMap<u64, Token>,
}

impl ControlServer {
    /// Binds the socket at `path` (if any) under `token`, refusing if another daemon answers on
    /// it and replacing a stale one.
    pub fn bind(registry: &Registry, path: Option<PathBuf>, token: Token) -> Result<Self> {
        #[cfg(unix)]
        let listener = match &path {
            Some(path) => Some(bind(registry, path, token)?),
            None => None,
        };
        #[cfg(not(unix))]
        let _ = (registry, token);
        Ok(Self {
            path,
            #[cfg(unix)]
            listener,
            #[cfg(unix)]
            clients: HashMap::new(),
            #[cfg(unix)]
            resolving: HashMap::new(),
        })
    }

    /// Whether `token` is one of this server's clients.
    pub fn owns(&self, token: Token) -> bool {
        #[cfg(unix)]
        return self.clients.contains_key(&token);
        #[cfg(not(unix))]
        {
            let _ = token;
            false
        }
    }

    /// Accepts waiting clients, registering each under a token from `next_token`; returns
    /// them (they may have sent their request already).
    pub fn accept(
        &mut self,
        registry: &Registry,
        mut next_token: impl FnMut() -> Token,
    ) -> Vec<Token> {
        let mut accepted = Vec::new();
        #[cfg(unix)]
        while let Some(listener) = &self.listener {
            let mut socket = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("control accept: {e}");
                    break;
                }
            };
            let token = next_token();
            let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
            if registry.register(&mut socket, token, interest).is_ok() {
                self.clients.insert(
                    token,
                    Client {
                        socket,
                        request: Vec::new(),
                        reply: Vec::new(),
                        off: 0,
                        answered: false,
                    },
                );
                accepted.push(token);
            }
        }
        #[cfg(not(unix))]
        let _ = (registry, &mut next_token);
        accepted
    }

    /// The client's request line, once it is complete (handed out once); meanwhile, what it
    /// has been sent of its reply goes on.
    pub fn read(&mut self, registry: &Registry, token: Token) -> Option<String> {
        #[cfg(unix)]
        {
            let c = self.clients.get_mut(&token)?;
            if c.answered {
                self.flush(registry, token);
                return None;
            }
            let mut buf = [0u8; MAX_REQUEST];
            loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => c.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.close(registry, token);
                        return None;
                    }
                }
                if c.request.len() > MAX_REQUEST {
                    self.close(registry, token);
                    return None;
                }
            }
            let end = c.request.iter().position(|b| *b == b'\n')?;
            c.answered = true;
            Some(String::from_utf8_lossy(&c.request[..end]).trim().to_owned())
        }
        #[cfg(not(unix))]
        {
            let _ = (registry, token);
            None
        }
    }

    /// Sends `text` as the client's reply, then closes it.
    pub fn reply(&mut self, registry: &Registry, token: Token, text: String) {
        #[cfg(unix)]
        if let Some(c) = self.clients.get_mut(&token) {
            c.reply = text.into_bytes();
            self.flush(registry, token);
        }
        #[cfg(not(unix))]
        let _ = (registry, token, text);
    }

    /// The client waits for resolution `id` (see [`ControlServer::resolved`]).
    pub fn wait_for(&mut self, id: u64, token: Token) {
        #[cfg(unix)]
        self.resolving.insert(id, token);
        #[cfg(not(unix))]
        let _ = (id, token);
    }

    /// Resolution `id` finished: the client waiting for it, if any, gets `text`.
    pub fn resolved(&mut self, registry: &Registry, id: u64, text: String) {
        #[cfg(unix)]
        if let Some(token) = self.resolving.remove(&id) {
            self.reply(registry, token, text);
        }
        #[cfg(not(unix))]
        let _ = (registry, id, text);
    }

    #[cfg(unix)]
    fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if c.reply.is_empty() {
            return;
        }
        while c.off < c.reply.len() {
            match c.socket.write(&c.reply[c.off..]) {
                Ok(n) => c.off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(registry, token);
    }

    #[cfg(unix)]
    fn close(&mut self, registry: &Registry, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = registry.deregister(&mut c.socket);
        }
        self.resolving.retain(|_, t| *t != token);
    }

    /// Removes the socket file (clean shutdown).
    pub fn remove_socket(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(unix)]
fn bind(registry: &Registry, path: &Path, token: Token) -> Result<mio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another vx6 daemon is running for this home (control socket {} answers)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let mut listener = mio::net::UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    registry.register(&mut listener, token, mio::Interest::READABLE)?;
    Ok(listener)
}

/// Sends one request to a running daemon's control socket and returns the reply.
#[cfg(unix)]
pub fn request(path: &Path, line: &str) -> Result<String> {
    let mut socket = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "no daemon is running for this home (cannot connect to {})",
            path.display()
        )
    })?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    socket.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    socket
        .read_to_string(&mut reply)
        .context("reading the daemon's reply")?;
    Ok(reply)
}

/// Without Unix sockets there is no control channel yet.
#[cfg(not(unix))]
pub fn request(_path: &Path, _line: &str) -> Result<String> {
    anyhow::bail!("the control socket is not supported on this platform yet")
}
