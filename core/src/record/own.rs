//! The records a node publishes about itself, signed in one place for every runtime.

use super::{NameClaim, NodeAddress, NodeRecord, Record, ServiceRecord, SignedRecord};
use crate::identity::Identity;
use crate::names::{ServiceName, Username};

/// What a node says about itself at one moment.
#[derive(Debug, Clone)]
pub struct OwnRecords<'a> {
    /// The node's key.
    pub identity: &'a Identity,
    /// The username it claims.
    pub username: &'a Username,
    /// Where it accepts sessions (empty: no node record, so nobody can reach it by name).
    pub addresses: Vec<NodeAddress>,
    /// The services it offers, by name only.
    pub services: Vec<ServiceName>,
    /// Its offer to relay, if it makes one.
    pub relay: Option<super::RelayCapability>,
    /// Relays that extend circuits to it over a session it keeps (when it cannot be dialed).
    pub via: Vec<crate::identity::NodeId>,
}

impl OwnRecords<'_> {
    /// Signs the node record, one record per service and the name claim, all with `seq`
    /// (higher than any earlier publication's, so this one replaces them: storers refuse a
    /// second record under one `seq`) and living `lifetime_secs` from `unix_now`.
    pub fn sign(&self, seq: u64, unix_now: u64, lifetime_secs: u64) -> Vec<SignedRecord> {
        let expires_at = unix_now + lifetime_secs;
        let node = (!self.addresses.is_empty()).then(|| {
            Record::Node(NodeRecord {
                seq,
                expires_at,
                addresses: self.addresses.clone(),
                relay: self.relay.clone(),
                via: self.via.clone(),
            })
        });
        let services = self.services.iter().map(|service| {
            Record::Service(ServiceRecord {
                seq,
                expires_at,
                service: service.clone(),
            })
        });
        let claim = Record::NameClaim(NameClaim {
            seq,
            expires_at,
            username: self.username.clone(),
        });
        node.into_iter()
            .chain(services)
            .chain([claim])
            .filter_map(|r| SignedRecord::sign(self.identity, r).ok())
            .collect()
    }
}
