//! The side sockets the core asks for (birthday hole punching, `vx6_core::node::SideOp`):
//! plain non-blocking UDP sockets, one datagram per call. They carry probes, and once one is
//! pinned to a peer, that peer's direct session. Their tokens are slots of a small slab, so a
//! token is never reused while its socket is open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use mio::{Interest, Registry, Token};
use vx6_core::node::{Node, SideOp, SideSocket};

/// The first side socket's token; the slab stays below the daemon's dynamic tokens.
pub const BASE: usize = 1 << 19;
/// Slots at most (the core keeps far fewer open).
pub const SLOTS: usize = 1 << 12;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Socket buffers asked for, as for the node's own socket.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

pub struct SideSockets {
    registry: Registry,
    slots: Vec<Option<(SideSocket, mio::net::UdpSocket)>>,
    by_id: HashMap<SideSocket, usize>,
    buf: Vec<u8>,
}

impl SideSockets {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            slots: Vec::new(),
            by_id: HashMap::new(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Carries out what the node asks (`local`: the node's own socket's address).
    pub fn apply(&mut self, node: &mut Node, local: Option<SocketAddr>) {
        while let Some(op) = node.poll_side_op() {
            match op {
                SideOp::Open { socket, peer } => self.open(socket, local, peer),
                SideOp::Send {
                    socket,
                    to,
                    datagram,
                } => {
                    self.send(socket, to, &datagram);
                }
                SideOp::Close(socket) => self.close(socket),
            }
        }
    }

    fn open(&mut self, socket: SideSocket, local: Option<SocketAddr>, peer: SocketAddr) {
        let bind = vx6_core::reach::dial_back_source(local, peer);
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < SLOTS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                tracing::debug!("{socket}: no slot left");
                return;
            }
        };
        let opened = mio::net::UdpSocket::bind(bind).and_then(|mut s| {
            // The one that wins carries a direct session: the main socket's buffers (a limit,
            // not memory taken).
            let sock = socket2::SockRef::from(&s);
            let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
            self.registry
                .register(&mut s, Token(BASE + slot), Interest::READABLE)
                .map(|()| s)
        });
        match opened {
            Ok(s) => {
                self.slots[slot] = Some((socket, s));
                self.by_id.insert(socket, slot);
            }
            // One port fewer for the attempt: nothing else depends on it.
            Err(e) => tracing::debug!("{socket} at {bind}: {e}"),
        }
    }

    fn close(&mut self, socket: SideSocket) {
        if let Some(slot) = self.by_id.remove(&socket)
            && let Some((_, mut s)) = self.slots[slot].take()
        {
            let _ = self.registry.deregister(&mut s);
        }
    }

    /// Sends one datagram from `socket`; false when the socket is full (the datagram is lost,
    /// as on a congested link: QUIC recovers, probes are repeated).
    pub fn send(&self, socket: SideSocket, to: SocketAddr, datagram: &[u8]) -> bool {
        let Some((_, s)) = self
            .by_id
            .get(&socket)
            .and_then(|i| self.slots[*i].as_ref())
        else {
            return false;
        };
        match s.send_to(datagram, to) {
            Ok(_) => true,
            Err(e) => {
                tracing::trace!("{socket} to {to}: {e}");
                false
            }
        }
    }

    /// Reads what side socket `token` has for the node.
    pub fn receive(&mut self, token: Token, node: &mut Node, now: Instant) {
        let Some(Some((socket, s))) = self.slots.get(token.0 - BASE) else {
            return;
        };
        loop {
            match s.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    node.handle_side_datagram(now, *socket, from, BytesMut::from(&self.buf[..n]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ICMP errors surface here; they are not fatal.
                Err(e) => tracing::trace!("{socket}: {e}"),
            }
        }
    }
}
