//! Signed records: what a node says about itself, its services and its name.
//!
//! Every record carries a `seq` (a newer one replaces an older one) and an `expires_at` (unix
//! seconds). It is signed by its owner's key over a domain-separated message, and verified with
//! Ed25519's strict rules, so that a record cannot be forged, altered, or passed off as another
//! kind. The wire layout is in `docs/PROTOCOL.md`.

mod body;
mod envelope;
mod freshness;
mod own;

pub use body::{NameClaim, NodeAddress, NodeRecord, RelayCapability, ServiceRecord, Transport};
#[cfg(fuzzing)]
pub use envelope::fuzz_decode_body;
pub use envelope::{
    DecodeError, EncodeError, MAX_RECORD_LEN, RECORD_VERSION, SignedRecord, name_key,
};
pub use freshness::{Freshness, FreshnessError};
pub use own::OwnRecords;

/// The kinds of record, with their wire byte. The byte is also part of the signed domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A node's reachable addresses and relay capability.
    Node = 1,
    /// A service a node offers, by name only (never its local target).
    Service = 2,
    /// A key's claim to a username.
    NameClaim = 3,
}

impl RecordKind {
    /// Every kind, in wire order.
    pub const ALL: [RecordKind; 3] = [RecordKind::Node, RecordKind::Service, RecordKind::NameClaim];

    /// The kind's wire byte, if any kind has it.
    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == b)
    }

    /// The kind's name in the signature domain `vx6/record/v1/<label>`.
    pub fn label(self) -> &'static str {
        match self {
            RecordKind::Node => "node",
            RecordKind::Service => "service",
            RecordKind::NameClaim => "name-claim",
        }
    }
}

/// The body of a record, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// See [`NodeRecord`].
    Node(NodeRecord),
    /// See [`ServiceRecord`].
    Service(ServiceRecord),
    /// See [`NameClaim`].
    NameClaim(NameClaim),
}

impl Record {
    /// This record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Node(_) => RecordKind::Node,
            Record::Service(_) => RecordKind::Service,
            Record::NameClaim(_) => RecordKind::NameClaim,
        }
    }

    /// Sequence number: among records with the same key, the higher one wins.
    pub fn seq(&self) -> u64 {
        match self {
            Record::Node(r) => r.seq,
            Record::Service(r) => r.seq,
            Record::NameClaim(r) => r.seq,
        }
    }

    /// Unix second at which the record stops being valid.
    pub fn expires_at(&self) -> u64 {
        match self {
            Record::Node(r) => r.expires_at,
            Record::Service(r) => r.expires_at,
            Record::NameClaim(r) => r.expires_at,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
