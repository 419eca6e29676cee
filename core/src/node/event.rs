//! What a [`Node`](super::Node) tells its runtime.

use std::fmt;
use std::net::SocketAddr;

use crate::alias::{AliasAddress, AliasDescriptor};
use crate::failure::Failure;
use crate::identity::NodeId;
use crate::policy::{PathKind, PolicyId, SwitchReason};
use crate::record::Transport;

/// A session, by node-local number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub(crate) u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A service stream, by node-local number (stable from open to close, on both transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamHandle(pub(crate) u64);

impl fmt::Display for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Something the runtime must act on or may log. Drained with `Node::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session finished its handshake.
    SessionUp {
        /// Which.
        session: SessionId,
        /// The authenticated peer.
        peer: NodeId,
        /// Over what.
        transport: Transport,
        /// Peer address.
        remote: SocketAddr,
    },
    /// A session ended; its streams are gone (each got [`Event::StreamFailed`] first).
    SessionDown {
        /// Which.
        session: SessionId,
        /// The peer, if the handshake got that far.
        peer: Option<NodeId>,
        /// Peer address.
        remote: SocketAddr,
        /// Whether this node dialed it (an incoming session that never authenticated is
        /// anyone's; runtimes count those rather than log each).
        outgoing: bool,
        /// Why.
        failure: Failure,
    },
    /// A peer dialed by address without a NodeId was pinned; persist it.
    PinLearned {
        /// The dialed address.
        addr: SocketAddr,
        /// The node that answered there.
        node: NodeId,
    },
    /// Open a TCP connection to `addr` for this (TCP-transport) session, then report it with
    /// `handle_tcp_connected` or `handle_tcp_closed`.
    TcpConnect {
        /// Which session.
        session: SessionId,
        /// Where to.
        addr: SocketAddr,
    },
    /// Close this session's TCP connection; the session is gone.
    TcpClose {
        /// Which session.
        session: SessionId,
        /// Last bytes to write before closing (a GOAWAY or TLS alert).
        flush: Vec<u8>,
    },
    /// An authorized stream wants its local target: connect, then call `target_connected` or
    /// `target_failed`.
    ConnectTarget {
        /// The stream.
        stream: StreamHandle,
        /// The service it is for.
        service: crate::names::ServiceName,
        /// Where it goes: for [`Backend::InProcess`](crate::service::Backend::InProcess), the
        /// application takes the stream (and calls `target_connected` once it does).
        target: crate::service::Backend,
    },
    /// Read from the stream.
    StreamReadable(StreamHandle),
    /// A blocked write to the stream may proceed.
    StreamWritable(StreamHandle),
    /// The stream is gone without a clean end (refused by the owner, or its session failed);
    /// close the local connection.
    StreamFailed {
        /// The stream.
        stream: StreamHandle,
        /// Why.
        failure: Failure,
    },
    /// A name resolution finished (see `Node::resolve`).
    Resolved {
        /// Which resolution.
        id: u64,
        /// The name as asked.
        name: String,
        /// The node and its addresses, or why not.
        result: Result<(NodeId, Vec<crate::record::NodeAddress>), Failure>,
    },
    /// A name was resolved on first use; persist the pin.
    NamePinned {
        /// The username.
        username: String,
        /// The node now pinned for it.
        node: NodeId,
    },
    /// Records this node published (see `Node::publish`) were stored, at `stored_at` of the
    /// nodes closest to `key` (0 if the node knew no one yet).
    Published {
        /// The DHT key they sit under (the node's id, or a name's key).
        key: NodeId,
        /// How many records.
        records: usize,
        /// How many nodes accepted them.
        stored_at: u32,
    },
    /// A hosted alias's record for `period` was stored, at `stored_at` of the nodes closest
    /// to its blinded key.
    AliasPublished {
        /// The alias.
        address: AliasAddress,
        /// The period the record is for.
        period: u64,
        /// How many nodes accepted it.
        stored_at: u32,
    },
    /// A lookup started by `Node::lookup_alias` finished.
    AliasFound {
        /// The id `lookup_alias` returned.
        id: u64,
        /// The alias.
        address: AliasAddress,
        /// Its introduction relays, or why not (`AccessDenied` when it admits listed clients
        /// only and this node is not one, `NameNotFound` when no record was found).
        result: Result<AliasDescriptor, Failure>,
    },
    /// Something happened to a circuit this node built (for logs and applications).
    Circuit(CircuitEvent),
    /// The addresses enough peers agree they see this node at changed (publish them).
    AddressesObserved {
        /// The agreed addresses, at most one per address family.
        addresses: Vec<SocketAddr>,
    },
    /// What peers' dial-backs say about whether this node can be dialed changed.
    Reachability {
        /// The verdict per address family (`true`: IPv4).
        verdicts: Vec<(bool, crate::reach::Verdict)>,
    },
    /// The relays this node's record names as its way in changed (it republished): a node
    /// that cannot be dialed keeps sessions to a few relays, which extend circuits to it.
    HomeRelays {
        /// The relays, each with a session up (empty: the node can be dialed again).
        relays: Vec<NodeId>,
    },
    /// An answer to `Node::ping`.
    PingReply {
        /// Which ping.
        id: u64,
        /// The path it took.
        path: PathKind,
        /// Its relays (none for the direct path).
        relays: Vec<NodeId>,
        /// Whether it went through a circuit (a managed link's direct path is one of zero
        /// relays) rather than as a plain datagram.
        circuit: bool,
        /// The round trip.
        rtt: std::time::Duration,
    },
    /// This node refused a peer's stream (owner side; for logs and counters).
    Refused {
        /// Who asked.
        peer: NodeId,
        /// For what (as sent, possibly invalid).
        service: String,
        /// Why.
        failure: Failure,
    },
}

/// What happened to a circuit of a relayed link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitEvent {
    /// A circuit of the link to `owner` came up through `path`; `active` if it carries the
    /// link's datagrams (else it is the standby).
    Up {
        /// The owner the link leads to.
        owner: NodeId,
        /// Its relays, nearest first.
        path: Vec<NodeId>,
        /// Carries the link's datagrams now.
        active: bool,
    },
    /// The link to `owner` moved its datagrams to its standby, through `path`.
    FailedOver {
        /// The owner.
        owner: NodeId,
        /// The standby's relays, now active.
        path: Vec<NodeId>,
    },
    /// A managed link to `owner` moved its traffic from one path to another (`to` is `None`
    /// when a strict policy finds no path that meets its SLA).
    Switched {
        /// The owner.
        owner: NodeId,
        /// The policy that manages the link.
        policy: PolicyId,
        /// The path it left, if any.
        from: Option<PathKind>,
        /// The path it took, if any.
        to: Option<PathKind>,
        /// The relays of the path it took (none for the direct path).
        path: Vec<NodeId>,
        /// Why.
        reason: SwitchReason,
    },
    /// A circuit to `owner` failed: refused, unreachable, or silent too long.
    Failed {
        /// The owner.
        owner: NodeId,
        /// Its relays.
        path: Vec<NodeId>,
        /// Why.
        failure: Failure,
    },
}

impl Event {
    /// The stream this event is about, if any.
    pub fn stream(&self) -> Option<StreamHandle> {
        match self {
            Event::ConnectTarget { stream, .. } | Event::StreamFailed { stream, .. } => {
                Some(*stream)
            }
            Event::StreamReadable(s) | Event::StreamWritable(s) => Some(*s),
            _ => None,
        }
    }
}
