//! The kind-specific bodies of records, and the bounds a decoded body must respect.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;
use crate::names::{OperatorName, ServiceName, Username};

/// Most addresses a node record may list; more is a malformed record.
pub const MAX_ADDRESSES: usize = 8;
/// Most relays a node record may name as the way in; more is a malformed record.
pub const MAX_VIA: usize = 4;

/// Transport a node accepts sessions on at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// QUIC over UDP.
    Quic,
    /// TLS over TCP with VX6's stream multiplexing.
    Tcp,
}

/// One place a node can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// Which transport listens there.
    pub transport: Transport,
    /// The socket address (IPv6 or IPv4).
    pub addr: SocketAddr,
}

/// A node's offer to relay circuits for others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCapability {
    /// Circuits it is willing to carry at once.
    pub max_circuits: u32,
    /// Who runs it, so path selection can avoid two relays of one operator.
    pub operator: Option<OperatorName>,
}

/// Where and how a node can be reached. Its owner is the record's signer.
///
/// On the wire `via` is an optional tail after the other fields (docs/PROTOCOL.md), so the
/// record of a node that needs no relay to be reached is what it always was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Sequence number.
    pub seq: u64,
    /// Unix second of expiry.
    pub expires_at: u64,
    /// Reachable addresses, at most [`MAX_ADDRESSES`].
    pub addresses: Vec<NodeAddress>,
    /// Present if the node relays for others.
    pub relay: Option<RelayCapability>,
    /// Relays that hold a session from this node and extend circuits to it over that
    /// session: the way in for a node that cannot be dialed (behind a NAT or firewall), at
    /// most [`MAX_VIA`].
    pub via: Vec<NodeId>,
}

/// The node body's fields before the optional `via` tail, as postcard writes them.
#[derive(Serialize, Deserialize)]
pub(super) struct NodeBodyHead {
    pub seq: u64,
    pub expires_at: u64,
    pub addresses: Vec<NodeAddress>,
    pub relay: Option<RelayCapability>,
}

/// A service offered by the signer. Only the name is published: the local target never is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Sequence number.
    pub seq: u64,
    /// Unix second of expiry.
    pub expires_at: u64,
    /// The service's name under its owner.
    pub service: ServiceName,
}

/// The signer's claim to a username. Anyone may claim any name; resolution deals with conflicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    /// Sequence number.
    pub seq: u64,
    /// Unix second of expiry.
    pub expires_at: u64,
    /// The claimed username.
    pub username: Username,
}

impl NodeRecord {
    pub(super) fn check_bounds(&self) -> Result<(), &'static str> {
        if self.addresses.len() > MAX_ADDRESSES {
            return Err("node record lists more than 8 addresses");
        }
        if self.via.len() > MAX_VIA {
            return Err("node record names more than 4 relays as its way in");
        }
        Ok(())
    }
}
