//! Side sockets: UDP sockets beside the node's own, which the core asks its runtime for when
//! this node's NAT picks a port per destination and a peer's does not (birthday hole punching,
//! [`crate::reach::birthday`]).
//!
//! The runtime carries out [`SideOp`]s in order (open, send from, close), feeds what a side
//! socket receives to [`Node::handle_side_datagram`], and sends every transmit whose destination
//! [`Node::side_socket_for`] names from that socket instead of the node's own. The socket on
//! which the far end's probe arrived is pinned to that address and kept while a session runs
//! there; the attempt's other sockets close at once, and all of them when it ends unanswered.
//!
//! Both roles cost the node little and the far end a bounded amount: one attempt or spray at a
//! time, at most one every [`BIRTHDAY_GAP`], each started only for a managed link of this node
//! or a punch request on an owner link (an authenticated client allowed to a service), at most
//! [`PER_LINK`] per link, and never towards a loopback, link-local, multicast or unspecified
//! address. A socket is won only by the far side's punch probe (its nonce) or a QUIC
//! handshake packet, from the one address it sent to, so an address that merely answers
//! probes (a relay the requester named) cannot take it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::Node;
use super::session::Kind;
use crate::reach::birthday::{SIDE_SOCKETS, SPRAY_PROBES, spray_ports};
use crate::relay::header::{self, Kind as Datagram, PROBE_PUNCH};

/// How long an attempt's sockets wait for the far side's probes. Each sends one probe, at the
/// start: that opens its NAT's mapping (for far longer than this), which is all it is for.
const ATTEMPT_FOR: Duration = Duration::from_secs(6);
/// Attempts and sprays, in either role: at most one every this long, node-wide.
pub const BIRTHDAY_GAP: Duration = Duration::from_secs(5);
/// Attempts and sprays one link may cause, in either role (a client asks 3 times).
pub const PER_LINK: u32 = 3;
/// Probes of a spray sent per tick, and the tick (1024 probes in 0.4 s).
const SPRAY_BURST: usize = 128;
const SPRAY_TICK: Duration = Duration::from_millis(50);
/// Side sockets pinned to a peer at most (each carries a direct session).
pub const MAX_PINNED: usize = 16;
/// How long a pinned socket outlives the last session at its address.
const PIN_IDLE: Duration = Duration::from_secs(30);
/// How often pinned sockets are checked for sessions.
const PIN_SWEEP: Duration = Duration::from_secs(5);

/// A side socket, named by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SideSocket(u32);

impl fmt::Display for SideSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "side socket {}", self.0)
    }
}

/// What the runtime does with side sockets, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideOp {
    /// Bind a new UDP socket on an ephemeral port, at the address
    /// [`crate::reach::dial_back_source`] gives for the node's socket and `peer`, and feed
    /// what it receives to [`Node::handle_side_datagram`]. If it cannot be bound, nothing is
    /// owed: the attempt only has one port fewer.
    Open {
        /// Its name.
        socket: SideSocket,
        /// The peer it will talk to (for the address family).
        peer: SocketAddr,
    },
    /// Send `datagram` to `to` from `socket`.
    Send {
        /// From.
        socket: SideSocket,
        /// To.
        to: SocketAddr,
        /// The bytes.
        datagram: Vec<u8>,
    },
    /// Close `socket` (what it still receives is dropped).
    Close(SideSocket),
}

/// Who started an attempt, to tell when the far side's probe arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// This node's managed link.
    Client(u64),
    /// The owner link on which the client asked.
    Owner(u64),
}

/// An attempt from many ports (this node is the hard side).
struct Attempt {
    to: SocketAddr,
    nonce: u64,
    role: Role,
    sockets: Vec<SideSocket>,
    until: Instant,
}

/// Probes to random ports of a hard side's address (this node is the other side).
struct Spray {
    ip: IpAddr,
    nonce: u64,
    ports: Vec<u16>,
}

#[derive(Default)]
pub(super) struct State {
    next_id: u32,
    /// Open side sockets, and the address each is pinned to.
    open: BTreeMap<SideSocket, Option<SocketAddr>>,
    /// Pinned addresses: their socket, and when a session last ran there (ordered, so the
    /// sweep's closes come in the same order in every run).
    pins: BTreeMap<SocketAddr, (SideSocket, Instant)>,
    ops: VecDeque<SideOp>,
    attempt: Option<Attempt>,
    spray: Option<(Spray, Instant)>,
    /// No attempt or spray starts before this.
    next_allowed: Option<Instant>,
    next_sweep: Option<Instant>,
}

impl State {
    fn id(&mut self) -> SideSocket {
        self.next_id = self.next_id.wrapping_add(1);
        SideSocket(self.next_id)
    }

    fn close(&mut self, socket: SideSocket) {
        if let Some(Some(addr)) = self.open.remove(&socket)
            && self.pins.get(&addr).is_some_and(|(s, _)| *s == socket)
        {
            self.pins.remove(&addr);
        }
        self.ops.push_back(SideOp::Close(socket));
    }

    /// Ends the attempt `role` started, if it runs (its link is gone, or punching cannot work).
    pub(super) fn cancel(&mut self, role: Role) {
        if self.attempt.as_ref().is_some_and(|a| a.role == role) {
            let a = self.attempt.take().expect("checked");
            for s in a.sockets {
                self.close(s);
            }
        }
    }

    /// Whether an attempt towards `to` with `nonce` is running.
    pub(super) fn attempt_towards(&self, to: SocketAddr, nonce: u64) -> bool {
        self.attempt
            .as_ref()
            .is_some_and(|a| a.to == to && a.nonce == nonce)
    }

    /// Whether an attempt or spray may start now (and if so, the next waits its turn).
    fn take_turn(&mut self, now: Instant) -> bool {
        let busy = self.attempt.is_some() || self.spray.is_some();
        if busy || self.next_allowed.is_some_and(|t| now < t) {
            return false;
        }
        self.next_allowed = Some(now + BIRTHDAY_GAP);
        true
    }
}

impl Node {
    /// Next thing the runtime must do with side sockets.
    pub fn poll_side_op(&mut self) -> Option<SideOp> {
        self.side.ops.pop_front()
    }

    /// The side socket a datagram to `to` leaves from (`None`: the node's own socket).
    pub fn side_socket_for(&self, to: SocketAddr) -> Option<SideSocket> {
        // Asked for every datagram sent: with nothing pinned (nearly always) it costs a branch.
        if self.side.pins.is_empty() {
            return None;
        }
        self.side.pins.get(&to).map(|(s, _)| *s)
    }

    /// Side sockets open now.
    pub fn side_sockets(&self) -> usize {
        self.side.open.len()
    }

    /// A datagram arrived on side socket `socket` from `remote`. Only the address the socket
    /// waits for (or is pinned to) is heard; the rest is dropped and counted. On an attempt's
    /// socket, the far side's punch probe (the attempt's nonce) or a QUIC handshake packet
    /// (the far side dialing where a probe from this socket came from) wins the attempt.
    pub fn handle_side_datagram(
        &mut self,
        now: Instant,
        socket: SideSocket,
        remote: SocketAddr,
        data: BytesMut,
    ) {
        self.circuits.clock = now;
        let pinned = match self.side.open.get(&socket) {
            Some(p) => *p,
            None => {
                self.counters.datagrams_dropped += 1;
                return;
            }
        };
        match pinned {
            Some(addr) if addr == remote => {}
            Some(_) => {
                self.counters.datagrams_dropped += 1;
                return;
            }
            None => {
                let Some(a) = &self.side.attempt else {
                    self.counters.datagrams_dropped += 1;
                    return;
                };
                if a.to != remote || !wins(&data, a.nonce) {
                    self.counters.datagrams_dropped += 1;
                    return;
                }
                self.birthday_hit(now, socket, remote);
            }
        }
        self.handle_datagram(now, remote, None, None, data);
    }

    /// Starts an attempt from many ports towards `to` (this node's NAT picks a port per
    /// destination, the far side's does not); whether it started.
    pub(super) fn start_birthday(
        &mut self,
        now: Instant,
        to: SocketAddr,
        nonce: u64,
        role: Role,
    ) -> bool {
        let pinned = self.side.pins.len();
        if pinned >= MAX_PINNED || !punchable(to.ip()) || !self.side.take_turn(now) {
            return false;
        }
        // A pin already there is stale (the direct path over it failed): a new one replaces it.
        if let Some(&(old, _)) = self.side.pins.get(&to) {
            self.side.close(old);
        }
        let mut sockets = Vec::with_capacity(SIDE_SOCKETS);
        for _ in 0..SIDE_SOCKETS {
            let socket = self.side.id();
            self.side.open.insert(socket, None);
            self.side.ops.push_back(SideOp::Open { socket, peer: to });
            sockets.push(socket);
        }
        self.side.attempt = Some(Attempt {
            to,
            nonce,
            role,
            sockets: sockets.clone(),
            until: now + ATTEMPT_FOR,
        });
        let datagram = header::probe(Datagram::Probe, None, PROBE_PUNCH, nonce);
        for socket in sockets {
            let datagram = datagram.clone();
            self.side.ops.push_back(SideOp::Send {
                socket,
                to,
                datagram,
            });
        }
        self.counters.birthday_attempts += 1;
        tracing::debug!("birthday hole punching: {SIDE_SOCKETS} ports towards {to}");
        self.side_timeout(now);
        true
    }

    /// Starts sending probes to random ports of `ip` (a hard side opening many ports towards
    /// this node); whether it started.
    pub(super) fn start_spray(&mut self, now: Instant, ip: IpAddr, nonce: u64) -> bool {
        if !punchable(ip) || !self.side.take_turn(now) {
            return false;
        }
        let ports = spray_ports(SPRAY_PROBES, || self.circuits.random_u64());
        self.side.spray = Some((Spray { ip, nonce, ports }, now));
        self.counters.birthday_sprays += 1;
        tracing::debug!("birthday hole punching: {SPRAY_PROBES} probes to ports of {ip}");
        self.side_timeout(now);
        true
    }

    /// The far side's probe came in on `socket` from `remote`: the attempt won.
    fn birthday_hit(&mut self, now: Instant, socket: SideSocket, remote: SocketAddr) {
        let Some(attempt) = self.side.attempt.take() else {
            return;
        };
        for s in attempt.sockets {
            if s != socket {
                self.side.close(s);
            }
        }
        if !self.punch_role_live(attempt.role) {
            // The link it was for has gone meanwhile: nothing will use the socket.
            self.side.close(socket);
            return;
        }
        if let Some(&(old, _)) = self.side.pins.get(&remote) {
            self.side.close(old);
        }
        self.side.open.insert(socket, Some(remote));
        self.side.pins.insert(remote, (socket, now));
        self.side.next_sweep.get_or_insert(now + PIN_SWEEP);
        self.counters.birthday_hits += 1;
        tracing::info!(
            "hole punched through a NAT that picks a port per peer: {remote} answers on {socket}"
        );
        self.punched(now, attempt.role, remote, attempt.nonce);
    }

    /// Sends what is due, ends attempts that went unanswered, closes idle pins.
    pub(super) fn side_timeout(&mut self, now: Instant) {
        if let Some(a) = &self.side.attempt
            && a.until <= now
        {
            tracing::debug!("birthday hole punching towards {}: no answer", a.to);
            let role = a.role;
            self.side.cancel(role);
        }
        if let Some((spray, at)) = &mut self.side.spray
            && *at <= now
        {
            *at = now + SPRAY_TICK;
            let (ip, nonce) = (spray.ip, spray.nonce);
            let cut = spray.ports.len().saturating_sub(SPRAY_BURST);
            let ports = spray.ports.split_off(cut);
            if spray.ports.is_empty() {
                self.side.spray = None;
            }
            for port in ports {
                let p = header::probe(Datagram::Probe, None, PROBE_PUNCH, nonce);
                let to = SocketAddr::new(ip, port);
                self.queue_datagram(super::circuits::plain_transmit(to, p.len()), p);
            }
        }
        if self.side.next_sweep.is_none_or(|t| t <= now) && !self.side.pins.is_empty() {
            self.side.next_sweep = Some(now + PIN_SWEEP);
            let live: Vec<SocketAddr> = self
                .sessions
                .iter()
                .filter_map(|(_, s)| match &s.kind {
                    Kind::Quic { conn, .. } if !s.down => Some(conn.remote_address()),
                    _ => None,
                })
                .collect();
            let mut idle = Vec::new();
            for (addr, (socket, seen)) in &mut self.side.pins {
                if live.contains(addr) {
                    *seen = now;
                } else if now.saturating_duration_since(*seen) >= PIN_IDLE {
                    idle.push(*socket);
                }
            }
            for socket in idle {
                self.side.close(socket);
            }
        }
    }

    pub(super) fn side_next_timeout(&self) -> Option<Instant> {
        let attempt = self.side.attempt.as_ref().map(|a| a.until);
        let spray = self.side.spray.as_ref().map(|(_, at)| *at);
        let sweep = self.side.next_sweep.filter(|_| !self.side.pins.is_empty());
        [attempt, spray, sweep].into_iter().flatten().min()
    }
}

/// Whether `data` may win an attempt whose probes carry `nonce`: the far side's punch probe,
/// or a QUIC long-header packet (a handshake: the far side dialing the port a probe from this
/// socket showed it).
fn wins(data: &[u8], nonce: u64) -> bool {
    let punch = header::parse(data).is_ok_and(|h| h.kind == Datagram::Probe && h.label.is_none())
        && header::probe_body(data) == (PROBE_PUNCH, nonce);
    let quic_long = data.first().is_some_and(|b| b & 0xc0 == 0xc0);
    punch || quic_long
}

/// Whether probes may be aimed at `ip`: not at this host, its link, a group or nobody.
fn punchable(ip: IpAddr) -> bool {
    let local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_far_sides_probe_or_handshake_wins() {
        let punch = header::probe(Datagram::Probe, None, PROBE_PUNCH, 7);
        assert!(wins(&punch, 7));
        assert!(!wins(&punch, 8), "another nonce");
        // An address that merely answers probes (a relay named as the target) cannot win.
        let answer = header::probe(Datagram::ProbeReply, None, PROBE_PUNCH, 7);
        assert!(!wins(&answer, 7));
        let observe = header::observe_probe(7);
        assert!(!wins(&observe, 7));
        assert!(wins(&[0xc3, 0, 0, 0, 1], 7), "a QUIC long-header packet");
        assert!(!wins(&[0x43, 0, 0], 7), "a QUIC short-header packet");
        assert!(!wins(&[], 7));
    }

    #[test]
    fn probes_are_never_aimed_at_this_host_its_link_or_a_group() {
        for bad in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
        ] {
            assert!(!punchable(bad.parse().unwrap()), "{bad}");
        }
        for ok in ["203.0.113.5", "2001:db8::5", "10.1.2.3", "fd6b::2"] {
            assert!(punchable(ok.parse().unwrap()), "{ok}");
        }
        assert!(!punchable("255.255.255.255".parse().unwrap()));
        assert!(!punchable("ff02::1".parse().unwrap()));
    }
}
