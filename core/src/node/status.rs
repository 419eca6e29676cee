//! A snapshot of a node's state for `vx6 status` and metrics.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::NodeId;
use crate::record::Transport;

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// Node-local id.
    pub id: u64,
    /// The peer, once authenticated.
    pub peer: Option<NodeId>,
    /// Transport.
    pub transport: Transport,
    /// Peer address.
    pub remote: SocketAddr,
    /// Whether this node dialed it.
    pub outgoing: bool,
    /// Whether the handshake completed.
    pub established: bool,
    /// Round-trip time estimate.
    pub rtt: Option<Duration>,
    /// Current UDP payload size (QUIC only, after path MTU discovery).
    pub mtu: Option<u16>,
    /// Service streams open on it.
    pub streams: usize,
    /// Bytes sent on the wire (QUIC: UDP payload; TCP: TLS records).
    pub bytes_sent: u64,
    /// Bytes received on the wire.
    pub bytes_received: u64,
}

/// Counters that only go up (serialized as they are named for `vx6 status --json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Streams refused because the peer was not allowed.
    pub refused_access: u64,
    /// Streams refused because the local target failed.
    pub refused_target: u64,
    /// Service requests that did not parse.
    pub bad_requests: u64,
    /// Sessions that finished their handshake (both roles, direct and behind circuits).
    pub sessions_opened: u64,
    /// Sessions that ended in a failure (handshake or later).
    pub sessions_failed: u64,
    /// Incoming sessions refused at the session limit.
    pub sessions_refused: u64,
    /// Service streams opened (both roles).
    pub streams_opened: u64,
    /// Streams refused at once at a limit (the node's, a session's, or the owner's).
    pub streams_refused_limit: u64,
    /// Incoming handshakes dropped because they did not finish in time.
    pub handshakes_timed_out: u64,
    /// Incoming handshakes dropped, oldest first, to make room for newer ones.
    pub handshakes_evicted: u64,
    /// Incoming QUIC handshakes refused because the client could not prove its address.
    pub handshakes_refused: u64,
    /// QUIC Retry packets sent (address validation under load).
    pub quic_retries: u64,
    /// DHT datagrams dropped unread: their source prefix was over its request rate.
    pub dht_rate_limited: u64,
    /// Datagrams dropped: an unknown kind arrived, or the send queue was full.
    pub datagrams_dropped: u64,
    /// Circuits this node built that came up.
    pub circuits_built: u64,
    /// Circuits this node built (or relayed) that failed: refused, or silent too long.
    pub circuits_failed: u64,
    /// Circuit setups this node refused (at a limit, rate-limited, malformed, not a relay).
    pub circuits_refused: u64,
    /// Circuits this node relays that came up.
    pub circuits_relayed: u64,
    /// Circuits that ended at this node (it owns the service).
    pub circuits_ended_here: u64,
    /// Relayed circuits torn down after their idle expiry.
    pub circuits_expired: u64,
    /// Times a link moved its datagrams to its standby circuit.
    pub circuit_failovers: u64,
    /// `auto` streams that moved to a relay path.
    pub auto_fallbacks: u64,
    /// Times a managed link moved its traffic to another path (by reason: `Node::path_switches`).
    pub path_switches: u64,
    /// Hole-punching requests this node sent to owners (through a relay path).
    pub punch_requests: u64,
    /// Hole-punching requests this node carried out as an owner.
    pub punches_answered: u64,
    /// Birthday hole punching: attempts from many ports this node made (its NAT picks a port
    /// per destination), sprays to random ports of a peer's address it sent, and attempts
    /// that won.
    pub birthday_attempts: u64,
    /// See `birthday_attempts`.
    pub birthday_sprays: u64,
    /// See `birthday_attempts`.
    pub birthday_hits: u64,
    /// Links that stay relayed because both ends' NATs pick a port per destination.
    pub punches_impossible: u64,
    /// Links whose punching attempts all failed (they stay relayed).
    pub punches_failed: u64,
    /// Dial-backs this node sent for peers asking whether they can be dialed.
    pub dial_backs_sent: u64,
    /// Dial-backs asked for and not sent (over the rate for the asker's prefix, or the queue
    /// full); the answer says so, so the asker does not count a missing one.
    pub dial_backs_declined: u64,
    /// Relay datagrams forwarded.
    pub relay_forwarded: u64,
    /// Relay datagrams dropped: malformed.
    pub relay_malformed: u64,
    /// Relay datagrams dropped: no circuit has their label.
    pub relay_unknown_label: u64,
    /// Relay datagrams dropped: their label is bound to another address.
    pub relay_wrong_source: u64,
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// Sessions, by id.
    pub sessions: Vec<SessionStatus>,
    /// Service streams open.
    pub streams: usize,
    /// Circuits this node builds, relays or ends.
    pub circuits: Vec<super::CircuitStatus>,
    /// Relays in the directory.
    pub relays_known: usize,
    /// Incoming sessions in their handshake.
    pub handshakes_in_flight: usize,
    /// Counters.
    pub counters: Counters,
}
