//! The daemon's connections: accepting sessions and forwarded connections, dialing peers and
//! targets, and moving bytes between their sockets and the node (session sockets here; local
//! ones through `local.rs`), with the bounds of `limits.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use vx6_core::node::{Dial, SessionId, StreamHandle};
use vx6_core::{Cause, Failure};

use super::limits::{AcceptRetry, Outbox};
use super::local::{Local, Pumped, Role};
use super::{Daemon, accept_skips, unreachable};
use crate::spec::ForwardTarget;

pub(super) struct Peer {
    pub(super) socket: TcpStream,
    pub(super) session: SessionId,
    pub(super) connecting: bool,
    pub(super) out: Outbox,
    /// Reading stopped at the output high-water mark; it resumes once the output drains.
    pub(super) read_paused: bool,
    /// The session has ended: its last bytes are being written, and nothing is read.
    pub(super) closing: bool,
}

impl Peer {
    pub(super) fn new(socket: TcpStream, session: SessionId, connecting: bool) -> Self {
        Self {
            socket,
            session,
            connecting,
            out: Outbox::default(),
            read_paused: false,
            closing: false,
        }
    }
}

pub(super) enum Conn {
    Local(Local),
    Peer(Peer),
}

impl Daemon {
    pub(super) fn accept_peers(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.tcp_listener else {
                return;
            };
            let what = "a session connection";
            let Some((mut socket, addr)) = accept_from(listener, what, &mut self.accept_retry, now)
            else {
                return;
            };
            let Some(session) = self.node.accept_tcp(now, addr) else {
                tracing::debug!("refusing session from {addr}: session limit reached");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let Ok(token) = self.register(&mut socket) else {
                self.node.handle_tcp_closed(
                    now,
                    session,
                    Failure::new(Cause::Closed, "could not register socket"),
                );
                continue;
            };
            self.by_session.insert(session, token);
            self.conns
                .insert(token, Conn::Peer(Peer::new(socket, session, false)));
            self.read_peer(now, token);
        }
    }

    pub(super) fn accept_forward(&mut self, now: Instant, i: usize) {
        loop {
            let (spec, listener) = &self.forwards[i];
            let what = format!("on forward {}", spec.local);
            let Some((mut socket, from)) = accept_from(listener, what, &mut self.accept_retry, now)
            else {
                return;
            };
            let spec = &self.forwards[i].0;
            let route = spec.route_of(i);
            let stream = match &spec.target {
                ForwardTarget::Direct {
                    expected,
                    addr,
                    service,
                } => {
                    let dial = Dial {
                        addr: *addr,
                        transport: self.transport,
                        expected: *expected,
                    };
                    self.node
                        .open_stream_routed(now, &dial, service.clone(), route)
                }
                ForwardTarget::Named(target) => {
                    self.node
                        .open_stream_by_name_routed(now, target.clone(), self.transport, route)
                }
            };
            let spec = &self.forwards[i].0;
            tracing::debug!("forward {} accepted {from} as stream {stream}", spec.local);
            let Ok(token) = self.register(&mut socket) else {
                self.node.stream_reset(now, stream);
                continue;
            };
            self.by_stream.insert(stream, token);
            self.conns.insert(
                token,
                Conn::Local(Local::new(socket, stream, Role::Forward(i))),
            );
        }
    }

    /// Tries every listener again after accept failures: what they left queued raises no new
    /// readiness edge.
    pub(super) fn retry_accepts(&mut self, now: Instant) {
        self.accept_peers(now);
        for i in 0..self.forwards.len() {
            self.accept_forward(now, i);
        }
        if let Some(failures) = self.accept_retry.round_done() {
            tracing::info!("accepting connections again after {failures} failed attempt(s)");
        }
    }

    pub(super) fn on_conn(&mut self, now: Instant, token: Token, readable: bool, writable: bool) {
        match self.conns.get_mut(&token) {
            Some(Conn::Local(l)) => {
                if l.connecting {
                    match l.socket.take_error() {
                        Ok(Some(e)) | Err(e) => {
                            let reason = e.to_string();
                            let stream = l.stream;
                            self.node.target_failed(now, stream, &reason);
                            self.drop_conn(token, false);
                            return;
                        }
                        Ok(None) => {}
                    }
                    match l.socket.peer_addr() {
                        Ok(_) => {
                            l.connecting = false;
                            self.node.target_connected(now, l.stream);
                        }
                        Err(e) if e.kind() == ErrorKind::NotConnected => return,
                        Err(e) => {
                            let stream = l.stream;
                            self.node.target_failed(now, stream, &e.to_string());
                            self.drop_conn(token, false);
                            return;
                        }
                    }
                }
                if readable {
                    l.set_readable();
                    self.pump(now, token, true, false);
                }
                if writable {
                    self.pump(now, token, false, true);
                }
            }
            Some(Conn::Peer(p)) => {
                if p.connecting {
                    if let Ok(Some(e)) | Err(e) = p.socket.take_error() {
                        let session = p.session;
                        self.node.handle_tcp_closed(now, session, unreachable(&e));
                        self.drop_conn(token, false);
                        return;
                    }
                    match p.socket.peer_addr() {
                        Ok(_) => {
                            p.connecting = false;
                            let _ = p.socket.set_nodelay(true);
                            let session = p.session;
                            self.node.handle_tcp_connected(now, session);
                        }
                        Err(e) if e.kind() == ErrorKind::NotConnected => return,
                        Err(e) => {
                            let session = p.session;
                            self.node.handle_tcp_closed(now, session, unreachable(&e));
                            self.drop_conn(token, false);
                            return;
                        }
                    }
                }
                if readable {
                    self.read_peer(now, token);
                }
                if writable {
                    self.flush_peer(now, token);
                }
            }
            None if self.control.owns(token) => self.serve_control(token),
            None if self.metrics.as_ref().is_some_and(|m| m.owns(token)) => {
                self.serve_metrics(token)
            }
            None => {}
        }
    }

    pub(super) fn pump(&mut self, now: Instant, token: Token, up: bool, down: bool) {
        let Some(Conn::Local(l)) = self.conns.get_mut(&token) else {
            return;
        };
        let mut state = Pumped::Open;
        if down {
            state = l.pump_down(&mut self.node, now);
        }
        if up && state == Pumped::Open {
            state = l.pump_up(&mut self.node, now, &mut self.local_scratch);
        }
        match state {
            Pumped::Open => {}
            Pumped::Done => self.drop_conn(token, false),
            Pumped::Failed => {
                if let Some(Conn::Local(l)) = self.conns.get_mut(&token)
                    && let (Role::Forward(i), Some(failure)) = (l.role, l.reset.take())
                {
                    self.forward_failed(i, failure);
                }
                self.drop_conn(token, true);
            }
        }
    }

    pub(super) fn drop_conn(&mut self, token: Token, abort: bool) {
        match self.conns.remove(&token) {
            Some(Conn::Local(mut l)) => {
                let _ = self.poll.registry().deregister(&mut l.socket);
                self.by_stream.remove(&l.stream);
                if abort {
                    l.abort();
                }
            }
            Some(Conn::Peer(mut p)) => {
                let _ = self.poll.registry().deregister(&mut p.socket);
                self.by_session.remove(&p.session);
            }
            None => {}
        }
    }

    pub(super) fn read_peer(&mut self, now: Instant, token: Token) {
        loop {
            let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
                return;
            };
            if p.closing {
                return;
            }
            // A peer that sends without reading what we answer is not read either, so it
            // cannot make us queue more for it.
            if p.out.over_high_water() {
                p.read_paused = true;
                return;
            }
            let session = p.session;
            match p.socket.read(&mut self.scratch) {
                Ok(0) => {
                    self.node.handle_tcp_closed(
                        now,
                        session,
                        Failure::new(Cause::ConnectionLost, "closed by peer"),
                    );
                    return;
                }
                Ok(n) => self.node.handle_tcp_data(now, session, &self.scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let failure = Failure::new(Cause::ConnectionLost, e.to_string());
                    self.node.handle_tcp_closed(now, session, failure);
                    return;
                }
            }
        }
    }

    /// Writes what the session has for its socket. Returns whether it resumed reading the
    /// socket, which may have given the node more to do.
    pub(super) fn flush_peer(&mut self, now: Instant, token: Token) -> bool {
        let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
            return false;
        };
        if p.connecting {
            return false;
        }
        loop {
            while !p.out.is_empty() {
                match p.socket.write(p.out.unsent()) {
                    Ok(n) => p.out.sent(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!("session socket write: {e}");
                        p.out.discard();
                        if p.closing {
                            self.close_peer(token);
                        }
                        return false;
                    }
                }
            }
            if p.closing {
                self.close_peer(token);
                return false;
            }
            if p.read_paused {
                // No new readiness edge comes for what arrived while paused: read it now.
                p.read_paused = false;
                self.read_peer(now, token);
                return true;
            }
            if !self.node.poll_tcp_transmit(p.session, p.out.tail()) {
                return false;
            }
        }
    }

    /// Shuts a session socket down and drops it.
    pub(super) fn close_peer(&mut self, token: Token) {
        if let Some(Conn::Peer(p)) = self.conns.get(&token) {
            let _ = p.socket.shutdown(std::net::Shutdown::Both);
        }
        self.drop_conn(token, false);
    }

    /// Drops closing session sockets whose peer has not taken their last bytes in time.
    pub(super) fn expire_closing(&mut self, now: Instant) {
        while let Some(&(deadline, token)) = self.closing.front()
            && deadline <= now
        {
            self.closing.pop_front();
            // Tokens are never reused: one still here is the closing socket, not yet drained.
            self.close_peer(token);
        }
    }

    /// Starts a non-blocking connect and registers the socket for both directions.
    pub(super) fn dial(&mut self, addr: SocketAddr) -> std::io::Result<(TcpStream, Token)> {
        let mut socket = TcpStream::connect(addr)?;
        let token = self.register(&mut socket)?;
        Ok((socket, token))
    }

    /// Registers a connection for both directions under a new token.
    pub(super) fn register(&mut self, socket: &mut TcpStream) -> std::io::Result<Token> {
        let token = self.token();
        self.poll
            .registry()
            .register(socket, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(token)
    }

    pub(super) fn connect_peer(&mut self, now: Instant, session: SessionId, addr: SocketAddr) {
        match self.dial(addr) {
            Ok((socket, token)) => {
                self.by_session.insert(session, token);
                self.conns
                    .insert(token, Conn::Peer(Peer::new(socket, session, true)));
            }
            Err(e) => self.node.handle_tcp_closed(now, session, unreachable(&e)),
        }
    }

    pub(super) fn connect_target(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        target: SocketAddr,
    ) {
        match self.dial(target) {
            Ok((socket, token)) => {
                self.by_stream.insert(stream, token);
                self.conns
                    .insert(token, Conn::Local(Local::new(socket, stream, Role::Target)));
            }
            Err(e) => self
                .node
                .target_failed(now, stream, &format!("{target}: {e}")),
        }
    }
}

/// The next connection queued on `listener`; `None` when the accept loop must stop: nothing is
/// queued, or accepting failed (EMFILE and the like), which `retry` brings the daemon back for
/// and logs once per run of failures.
fn accept_from(
    listener: &TcpListener,
    what: impl std::fmt::Display,
    retry: &mut AcceptRetry,
    now: Instant,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept() {
            Ok(x) => return Some(x),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if accept_skips(&e) => continue,
            Err(e) => {
                if retry.failed(now) {
                    tracing::warn!(
                        "accepting {what}: {e} (retrying; further failures are logged when they \
                         stop)"
                    );
                }
                return None;
            }
        }
    }
}
