//! The control channel in the home directory: `vx6 status`, `vx6 resolve` and the like connect,
//! send one request line and read one reply. The server owns its listener and its clients; the
//! daemon answers the requests it hands out ([`ControlServer::read`]).
//!
//! On Unix it is a socket file, `control.sock`, that only the node's user can reach. Elsewhere
//! (Windows) it is a TCP listener on 127.0.0.1, and `control.sock` is a file naming its address
//! and a random secret every request line must start with: loopback is reachable by every local
//! user, the file only by this one (it sits in the user's own profile directory).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use anyhow::Result;
use mio::{Registry, Token};

#[cfg(unix)]
type Listener = mio::net::UnixListener;
#[cfg(unix)]
type Stream = mio::net::UnixStream;
#[cfg(not(unix))]
type Listener = mio::net::TcpListener;
#[cfg(not(unix))]
type Stream = mio::net::TcpStream;

/// Longest request line accepted; a client that sends more is dropped.
pub const MAX_REQUEST: usize = 256;

struct Client {
    socket: Stream,
    request: Vec<u8>,
    reply: Vec<u8>,
    off: usize,
    /// The request was handed out; reading is over.
    answered: bool,
}

/// The listener, its clients, and the resolutions some of them wait for.
pub struct ControlServer {
    path: Option<PathBuf>,
    listener: Option<Listener>,
    clients: HashMap<Token, Client>,
    /// Clients waiting for a resolution, by resolution id.
    resolving: HashMap<u64, Token>,
    /// What every request line must start with (the channel is not a private file).
    #[cfg(not(unix))]
    secret: String,
}

impl ControlServer {
    /// Binds the socket at `path` (if any) under `token`, refusing if another daemon answers on
    /// it and replacing a stale one.
    pub fn bind(registry: &Registry, path: Option<PathBuf>, token: Token) -> Result<Self> {
        #[cfg(not(unix))]
        let secret = new_secret();
        let listener = match &path {
            #[cfg(unix)]
            Some(path) => Some(bind(registry, path, token)?),
            #[cfg(not(unix))]
            Some(path) => Some(bind(registry, path, token, &secret)?),
            None => None,
        };
        Ok(Self {
            path,
            listener,
            clients: HashMap::new(),
            resolving: HashMap::new(),
            #[cfg(not(unix))]
            secret,
        })
    }

    /// Whether `token` is one of this server's clients.
    pub fn owns(&self, token: Token) -> bool {
        self.clients.contains_key(&token)
    }

    /// Accepts waiting clients, registering each under a token from `next_token`; returns
    /// them (they may have sent their request already).
    pub fn accept(
        &mut self,
        registry: &Registry,
        mut next_token: impl FnMut() -> Token,
    ) -> Vec<Token> {
        let mut accepted = Vec::new();
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
        accepted
    }

    /// The client's request line, once it is complete (handed out once); meanwhile, what it
    /// has been sent of its reply goes on.
    pub fn read(&mut self, registry: &Registry, token: Token) -> Option<String> {
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
            let line = String::from_utf8_lossy(&c.request[..end]).trim().to_owned();
            #[cfg(not(unix))]
            let line = match line.split_once(' ') {
                Some((secret, rest)) if same(secret.as_bytes(), self.secret.as_bytes()) => {
                    rest.to_owned()
                }
                _ => {
                    self.close(registry, token);
                    return None;
                }
            };
            Some(line)
        }
    }

    /// Sends `text` as the client's reply, then closes it.
    pub fn reply(&mut self, registry: &Registry, token: Token, text: String) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.reply = text.into_bytes();
            self.flush(registry, token);
        }
    }

    /// The client waits for resolution `id` (see [`ControlServer::resolved`]).
    pub fn wait_for(&mut self, id: u64, token: Token) {
        self.resolving.insert(id, token);
    }

    /// Resolution `id` finished: the client waiting for it, if any, gets `text`.
    pub fn resolved(&mut self, registry: &Registry, id: u64, text: String) {
        if let Some(token) = self.resolving.remove(&id) {
            self.reply(registry, token, text);
        }
    }

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

/// How long a client waits for an answer unless the request says otherwise.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends one request to a running daemon's control socket and returns the reply, waiting for
/// it up to `wait`.
#[cfg(unix)]
pub fn request(path: &Path, line: &str, wait: std::time::Duration) -> Result<String> {
    let socket = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "no daemon is running for this home (cannot connect to {})",
            path.display()
        )
    })?;
    socket.set_read_timeout(Some(wait))?;
    exchange(socket, line)
}

/// Writes one request line and reads the reply to its end.
fn exchange(mut socket: impl Read + Write, line: &str) -> Result<String> {
    socket.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    socket
        .read_to_string(&mut reply)
        .context("reading the daemon's reply")?;
    Ok(reply)
}

/// Binds 127.0.0.1:0 and writes its address and `secret` to the file at `path`, refusing if
/// the daemon a previous file names still answers.
#[cfg(not(unix))]
fn bind(registry: &Registry, path: &Path, token: Token, secret: &str) -> Result<Listener> {
    if let Ok((addr, _)) = read_channel_file(path)
        && std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
            .is_ok()
    {
        anyhow::bail!(
            "another vx6 daemon is running for this home (its control channel at {addr}, named \
             in {}, answers)",
            path.display()
        );
    }
    let mut listener = mio::net::TcpListener::bind(([127, 0, 0, 1], 0).into())
        .context("binding the control channel on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    crate::atomic::write(path, format!("{addr} {secret}\n").as_bytes())
        .with_context(|| format!("writing control channel file {}", path.display()))?;
    registry.register(&mut listener, token, mio::Interest::READABLE)?;
    Ok(listener)
}

#[cfg(not(unix))]
fn new_secret() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal bytes, compared in time that does not depend on where they differ.
#[cfg(not(unix))]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(not(unix))]
fn read_channel_file(path: &Path) -> Result<(std::net::SocketAddr, String)> {
    let text = std::fs::read_to_string(path)?;
    let (addr, secret) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("control channel file {} is malformed", path.display()))?;
    let addr = addr
        .parse()
        .with_context(|| format!("control channel file {} names no address", path.display()))?;
    Ok((addr, secret.to_owned()))
}

/// Sends one request to a running daemon's control channel and returns the reply, waiting for
/// it up to `wait`.
#[cfg(not(unix))]
pub fn request(path: &Path, line: &str, wait: std::time::Duration) -> Result<String> {
    let (addr, secret) = read_channel_file(path).with_context(|| {
        format!(
            "no daemon is running for this home (cannot read {})",
            path.display()
        )
    })?;
    let socket = std::net::TcpStream::connect(addr).with_context(|| {
        format!("no daemon is running for this home (nothing answers at {addr})")
    })?;
    socket.set_read_timeout(Some(wait))?;
    exchange(socket, &format!("{secret} {line}"))
}
