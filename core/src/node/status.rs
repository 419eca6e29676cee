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
    /// Incoming sessions in their handshake.
    pub handshakes_in_flight: usize,
    /// Counters.
    pub counters: Counters,
}
