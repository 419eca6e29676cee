//! The local registry: every record a node knows, with the rules for what replaces what.
//!
//! Merge rules, applied by [`Registry::insert`]:
//! - a record is keyed by (kind, owner) for node records, (owner, service) for service records and
//!   (username, owner) for name claims;
//! - an expired or too-far-future record is rejected ([`Freshness`]);
//! - a higher `seq` replaces a lower one; a lower `seq` is rejected as stale (this is what stops
//!   replays of old records);
//! - the same `seq` with the same bytes is a no-op; the same `seq` with different bytes is an
//!   equivocation by the owner and is rejected, keeping what was held first;
//! - bounds: at most `max_*_per_owner` keys per owner and `max_*` keys per kind. A record for a
//!   key already held may always be updated; a record for a new key beyond a bound is rejected.
//!   Nothing is ever evicted to make room: space comes back only as records expire
//!   ([`Registry::remove_expired`]), so a flood of valid records cannot push out what is held.

mod snapshot;

use std::collections::BTreeMap;

pub use snapshot::{LoadError, LoadReport, SNAPSHOT_VERSION};

use crate::identity::NodeId;
use crate::names::{ServiceName, Username};
use crate::record::{Freshness, FreshnessError, Record, RecordKind, SignedRecord};

/// The bounds of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Node records held at most (one per owner).
    pub max_nodes: usize,
    /// Service records held at most, over all owners.
    pub max_services: usize,
    /// Name claims held at most, over all owners.
    pub max_claims: usize,
    /// Services one owner may have held.
    pub max_services_per_owner: usize,
    /// Usernames one owner may have claimed.
    pub max_claims_per_owner: usize,
    /// Claims held for one username (competing keys); more are rejected.
    pub max_claims_per_name: usize,
    /// Which expiry times are acceptable.
    pub freshness: Freshness,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_nodes: 100_000,
            max_services: 100_000,
            max_claims: 100_000,
            max_services_per_owner: 64,
            max_claims_per_owner: 4,
            max_claims_per_name: 16,
            freshness: Freshness::default(),
        }
    }
}

/// What an accepted insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A key the registry did not hold.
    New,
    /// A newer `seq` replaced the held record.
    Replaced {
        /// The replaced record's `seq`.
        previous_seq: u64,
    },
    /// The exact record was already held.
    Unchanged,
}

/// Why an insert was refused. The registry is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Expired or future-dated.
    #[error(transparent)]
    Freshness(#[from] FreshnessError),
    /// Older than what is held (a replay or a late arrival).
    #[error("record seq {offered} is older than the held seq {held}")]
    OlderSeq {
        /// The held record's `seq`.
        held: u64,
        /// The offered record's `seq`.
        offered: u64,
    },
    /// Same `seq` as the held record but different content.
    #[error("owner signed two different records with seq {seq}; keeping the first")]
    Equivocation {
        /// The contested `seq`.
        seq: u64,
    },
    /// The owner already has as many keys of this kind as allowed.
    #[error("owner already holds {limit} {kind:?} records")]
    OwnerFull {
        /// Kind of record.
        kind: RecordKind,
        /// The bound that was hit.
        limit: usize,
    },
    /// The username already has as many competing claims as allowed.
    #[error("username already has {limit} competing claims")]
    NameFull {
        /// The bound that was hit.
        limit: usize,
    },
    /// The registry holds as many records of this kind as allowed.
    #[error("registry already holds {limit} {kind:?} records")]
    KindFull {
        /// Kind of record.
        kind: RecordKind,
        /// The bound that was hit.
        limit: usize,
    },
}

/// The records a node knows. Iteration order is deterministic (sorted by key).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    limits: RegistryLimits,
    nodes: BTreeMap<NodeId, SignedRecord>,
    services: BTreeMap<NodeId, BTreeMap<ServiceName, SignedRecord>>,
    service_count: usize,
    claims: BTreeMap<Username, BTreeMap<NodeId, SignedRecord>>,
    claims_per_owner: BTreeMap<NodeId, usize>,
    claim_count: usize,
}

/// Decides whether `offered` may replace `held` (if any).
fn merge(
    held: Option<&SignedRecord>,
    offered: &SignedRecord,
) -> Result<Option<Inserted>, Rejected> {
    let Some(held) = held else {
        return Ok(None);
    };
    let (h, o) = (held.record().seq(), offered.record().seq());
    if o > h {
        Ok(Some(Inserted::Replaced { previous_seq: h }))
    } else if o < h {
        Err(Rejected::OlderSeq {
            held: h,
            offered: o,
        })
    } else if held.as_bytes() == offered.as_bytes() {
        Ok(Some(Inserted::Unchanged))
    } else {
        Err(Rejected::Equivocation { seq: o })
    }
}

impl Registry {
    /// An empty registry with the given bounds.
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The bounds this registry enforces.
    pub fn limits(&self) -> &RegistryLimits {
        &self.limits
    }

    /// Offers a verified record at wall-clock time `unix_now`; see the module docs for the rules.
    pub fn insert(&mut self, record: SignedRecord, unix_now: u64) -> Result<Inserted, Rejected> {
        self.limits.freshness.check(&record, unix_now)?;
        let owner = record.owner();
        match record.record() {
            Record::Node(_) => {
                let outcome = merge(self.nodes.get(&owner), &record)?;
                if outcome.is_none() && self.nodes.len() >= self.limits.max_nodes {
                    return Err(Rejected::KindFull {
                        kind: RecordKind::Node,
                        limit: self.limits.max_nodes,
                    });
                }
                self.nodes.insert(owner, record);
                Ok(outcome.unwrap_or(Inserted::New))
            }
            Record::Service(s) => {
                let name = s.service.clone();
                let held = self.services.get(&owner);
                let outcome = merge(held.and_then(|m| m.get(&name)), &record)?;
                if outcome.is_none() {
                    let owned = held.map_or(0, BTreeMap::len);
                    if owned >= self.limits.max_services_per_owner {
                        return Err(Rejected::OwnerFull {
                            kind: RecordKind::Service,
                            limit: self.limits.max_services_per_owner,
                        });
                    }
                    if self.service_count >= self.limits.max_services {
                        return Err(Rejected::KindFull {
                            kind: RecordKind::Service,
                            limit: self.limits.max_services,
                        });
                    }
                    self.service_count += 1;
                }
                self.services.entry(owner).or_default().insert(name, record);
                Ok(outcome.unwrap_or(Inserted::New))
            }
            Record::NameClaim(c) => {
                let name = c.username.clone();
                let held = self.claims.get(&name).and_then(|m| m.get(&owner));
                let outcome = merge(held, &record)?;
                if outcome.is_none() {
                    let contested = self.claims.get(&name).map_or(0, BTreeMap::len);
                    if contested >= self.limits.max_claims_per_name {
                        return Err(Rejected::NameFull {
                            limit: self.limits.max_claims_per_name,
                        });
                    }
                    let owned = self.claims_per_owner.get(&owner).copied().unwrap_or(0);
                    if owned >= self.limits.max_claims_per_owner {
                        return Err(Rejected::OwnerFull {
                            kind: RecordKind::NameClaim,
                            limit: self.limits.max_claims_per_owner,
                        });
                    }
                    if self.claim_count >= self.limits.max_claims {
                        return Err(Rejected::KindFull {
                            kind: RecordKind::NameClaim,
                            limit: self.limits.max_claims,
                        });
                    }
                    self.claim_count += 1;
                    *self.claims_per_owner.entry(owner).or_default() += 1;
                }
                self.claims.entry(name).or_default().insert(owner, record);
                Ok(outcome.unwrap_or(Inserted::New))
            }
        }
    }

    /// Drops every record that has expired at `unix_now`; returns how many.
    pub fn remove_expired(&mut self, unix_now: u64) -> usize {
        let live = |r: &SignedRecord| r.record().expires_at() > unix_now;
        let before = self.len();
        self.nodes.retain(|_, r| live(r));
        for by_name in self.services.values_mut() {
            by_name.retain(|_, r| live(r));
        }
        self.services.retain(|_, m| !m.is_empty());
        self.service_count = self.services.values().map(BTreeMap::len).sum();
        for by_owner in self.claims.values_mut() {
            by_owner.retain(|_, r| live(r));
        }
        self.claims.retain(|_, m| !m.is_empty());
        self.claims_per_owner.clear();
        for owner in self.claims.values().flat_map(BTreeMap::keys) {
            *self.claims_per_owner.entry(*owner).or_default() += 1;
        }
        self.claim_count = self.claims_per_owner.values().sum();
        before - self.len()
    }

    /// The node record of `owner`, if held.
    pub fn node(&self, owner: &NodeId) -> Option<&SignedRecord> {
        self.nodes.get(owner)
    }

    /// The service record `service` of `owner`, if held.
    pub fn service(&self, owner: &NodeId, service: &ServiceName) -> Option<&SignedRecord> {
        self.services.get(owner)?.get(service)
    }

    /// Every service record of `owner`, by service name.
    pub fn services_of(&self, owner: &NodeId) -> impl Iterator<Item = &SignedRecord> {
        self.services
            .get(owner)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Every claim to `username`, one per claiming key, by owner. More than one means the name
    /// is contested; callers must not silently pick one.
    pub fn claims_for(&self, username: &Username) -> impl Iterator<Item = &SignedRecord> {
        self.claims
            .get(username)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Every record stored under DHT key `key` (see [`SignedRecord::dht_key`]): the claims to
    /// `username` if `key` is its name key, or the node and service records of the owner `key`.
    pub fn records_for_key(
        &self,
        key: &NodeId,
        username: Option<&Username>,
    ) -> impl Iterator<Item = &SignedRecord> {
        let claims = username
            .filter(|u| crate::record::name_key(u) == *key)
            .into_iter()
            .flat_map(|u| self.claims_for(u));
        self.nodes
            .get(key)
            .into_iter()
            .chain(self.services_of(key))
            .chain(claims)
    }

    /// Every record held: node records, then service records, then name claims, each sorted.
    pub fn iter(&self) -> impl Iterator<Item = &SignedRecord> {
        self.nodes
            .values()
            .chain(self.services.values().flat_map(BTreeMap::values))
            .chain(self.claims.values().flat_map(BTreeMap::values))
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.service_count + self.claim_count
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
