//! Hidden aliases at the node (DESIGN.md §6b): the aliases this node hosts, whose records it
//! signs and stores in the DHT again before they lapse, and lookups of other aliases' records.
//! Introduction and rendezvous, which make an alias reachable, build on these.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Event, Node};
use crate::alias::record::{
    ALIAS_RECORD_LIFETIME_SECS, EXPIRY_GRACE_SECS, MAX_ALIAS_CLIENTS, MAX_INTRO_POINTS,
};
use crate::alias::{
    AliasAddress, AliasDescriptor, AliasKey, AliasPublication, AliasRecord, AliasRecordError,
    BlindedKey, Period,
};
use crate::dht::{LookupId, LookupResult, Purpose};
use crate::failure::{Cause, Failure};
use crate::identity::PublicKey;

/// How often an alias record is signed and stored again: well within its lifetime, so the
/// nodes that hold it change with the network and a lapse never shows.
const REPUBLISH_EVERY: Duration = Duration::from_secs(3600);
/// Aliases one node hosts at most.
pub const MAX_HOSTED_ALIASES: usize = 64;

/// Why an alias could not be hosted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostAliasError {
    /// The node already hosts [`MAX_HOSTED_ALIASES`].
    #[error("this node already hosts {MAX_HOSTED_ALIASES} aliases")]
    TooMany,
    /// More introduction relays or clients than a record holds.
    #[error(
        "an alias lists at most {MAX_INTRO_POINTS} introduction relays and {MAX_ALIAS_CLIENTS} clients"
    )]
    TooLarge,
}

struct Hosted {
    key: AliasKey,
    descriptor: AliasDescriptor,
    clients: Vec<PublicKey>,
    seq: u64,
    next: Instant,
}

/// The node's alias state.
#[derive(Default)]
pub(super) struct Aliases {
    hosted: BTreeMap<AliasAddress, Hosted>,
    /// Stores in flight: whose record, for which period.
    publishing: BTreeMap<LookupId, (AliasAddress, Period)>,
    /// Lookups in flight: the id handed out, and which alias.
    lookups: BTreeMap<LookupId, (u64, AliasAddress)>,
    next_id: u64,
}

impl Node {
    /// Hosts the alias of `key`: signs its record (introduction relays `descriptor`, readable
    /// only by `clients` when that is not empty) and stores it in the DHT now, again every
    /// hour, and for the next period ahead of time. Returns the alias's address.
    pub fn host_alias(
        &mut self,
        now: Instant,
        key: AliasKey,
        descriptor: AliasDescriptor,
        clients: Vec<PublicKey>,
    ) -> Result<AliasAddress, HostAliasError> {
        if descriptor.intro.len() > MAX_INTRO_POINTS || clients.len() > MAX_ALIAS_CLIENTS {
            return Err(HostAliasError::TooLarge);
        }
        let address = key.address();
        if !self.aliases.hosted.contains_key(&address)
            && self.aliases.hosted.len() >= MAX_HOSTED_ALIASES
        {
            return Err(HostAliasError::TooMany);
        }
        let seq = self.aliases.hosted.get(&address).map_or(0, |h| h.seq);
        self.aliases.hosted.insert(
            address,
            Hosted {
                key,
                descriptor,
                clients,
                seq,
                next: now,
            },
        );
        self.publish_alias(now, address);
        Ok(address)
    }

    /// Replaces a hosted alias's introduction relays (one was lost, or a new one came up) and
    /// publishes at once; false if the alias is not hosted here.
    pub fn update_alias(
        &mut self,
        now: Instant,
        address: &AliasAddress,
        descriptor: AliasDescriptor,
    ) -> bool {
        if descriptor.intro.len() > MAX_INTRO_POINTS {
            return false;
        }
        let Some(h) = self.aliases.hosted.get_mut(address) else {
            return false;
        };
        h.descriptor = descriptor;
        self.publish_alias(now, *address);
        true
    }

    /// Stops hosting an alias (its records lapse by themselves within hours).
    pub fn drop_alias(&mut self, address: &AliasAddress) -> bool {
        self.aliases.hosted.remove(address).is_some()
    }

    /// The aliases this node hosts.
    pub fn hosted_aliases(&self) -> impl Iterator<Item = &AliasAddress> {
        self.aliases.hosted.keys()
    }

    /// Looks up `address`'s record for the current period and opens it with this node's key;
    /// the answer arrives as [`Event::AliasFound`] with the returned id.
    pub fn lookup_alias(&mut self, now: Instant, address: AliasAddress) -> u64 {
        self.aliases.next_id += 1;
        let id = self.aliases.next_id;
        let period = Period::containing(self.discovery.unix);
        let key = BlindedKey::of(&address, period).dht_key();
        match self.dht.start(now, key, Purpose::FindValue) {
            Ok(lookup) => {
                self.aliases.lookups.insert(lookup, (id, address));
                self.drain_dht(now);
            }
            Err(e) => self.events.push_back(Event::AliasFound {
                id,
                address,
                result: Err(Failure::new(Cause::LimitReached, e.to_string())),
            }),
        }
        id
    }

    /// Signs and stores `address`'s record for the current period, and for the next one too
    /// once the current one is within its last grace span (clients' clocks differ).
    fn publish_alias(&mut self, now: Instant, address: AliasAddress) {
        let unix = self.discovery.unix;
        let current = Period::containing(unix);
        let mut periods = vec![current];
        if unix.saturating_add(EXPIRY_GRACE_SECS) >= current.end() {
            periods.push(Period(current.0 + 1));
        }
        let Some(h) = self.aliases.hosted.get_mut(&address) else {
            return;
        };
        h.next = now + REPUBLISH_EVERY;
        h.seq = unix.max(h.seq + 1);
        let mut records = Vec::new();
        for period in periods {
            let starts = unix.max(period.start());
            let publication = AliasPublication {
                period,
                seq: h.seq,
                expires_at: (starts + ALIAS_RECORD_LIFETIME_SECS)
                    .min(period.end() + EXPIRY_GRACE_SECS),
                descriptor: &h.descriptor,
                clients: &h.clients,
            };
            match AliasRecord::seal(&h.key, &publication, &mut self.circuits.rng) {
                Ok(r) => records.push((period, r)),
                Err(e) => tracing::warn!("alias {address}: record not sealed: {e}"),
            }
        }
        let unix = self.discovery.unix;
        for (period, record) in records {
            if let Ok(lookup) = self.dht.publish_alias(now, unix, &record) {
                self.aliases.publishing.insert(lookup, (address, period));
            }
        }
        self.drain_dht(now);
    }

    /// When a hosted alias is next due to be published.
    pub(super) fn aliases_next_timeout(&self) -> Option<Instant> {
        self.aliases.hosted.values().map(|h| h.next).min()
    }

    pub(super) fn aliases_timeout(&mut self, now: Instant) {
        let due: Vec<AliasAddress> = self
            .aliases
            .hosted
            .iter()
            .filter(|(_, h)| h.next <= now)
            .map(|(a, _)| *a)
            .collect();
        for address in due {
            self.publish_alias(now, address);
        }
    }

    /// A finished lookup, if it was an alias's; true if it was.
    pub(super) fn aliases_on_lookup(&mut self, result: &LookupResult) -> bool {
        if let Some((address, period)) = self.aliases.publishing.remove(&result.id) {
            self.events.push_back(Event::AliasPublished {
                address,
                period: period.0,
                stored_at: result.stored_at,
            });
            return true;
        }
        let Some((id, address)) = self.aliases.lookups.remove(&result.id) else {
            return false;
        };
        let unix = self.discovery.unix;
        let result = match &result.alias {
            None => Err(Failure::new(
                Cause::NameNotFound,
                format!("no record of alias {address} in the DHT"),
            )),
            Some(record) => record
                .open(&address, Some(&self.identity), unix)
                .map_err(|e| {
                    let cause = match e {
                        AliasRecordError::NotAuthorized => Cause::AccessDenied,
                        AliasRecordError::Expired | AliasRecordError::FuturePeriod => {
                            Cause::NameNotFound
                        }
                        _ => Cause::ProtocolViolation,
                    };
                    Failure::new(cause, format!("alias {address}: {e}"))
                }),
        };
        self.events.push_back(Event::AliasFound {
            id,
            address,
            result,
        });
        true
    }
}
