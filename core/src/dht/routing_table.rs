//! Kademlia's routing table: 256 buckets of at most `k` contacts by distance from the local id.
//!
//! Policy (what happens at each bound):
//! - a contact heard from again moves to the tail of its bucket (most recently seen);
//! - a new contact joins its bucket if there is room;
//! - in a full bucket, a head (least recently seen) that has failed [`STALE_AFTER`] RPCs in a row
//!   is replaced; otherwise the newcomer waits in the bucket's replacement cache (bounded, newest
//!   kept), from which failed entries are refilled. Long-lived nodes are kept, as in Kademlia:
//!   an attacker cannot flush a bucket by creating new ids;
//! - anti-eclipse: a bucket takes at most `max_per_subnet` contacts from one /64 (IPv6) or /24
//!   (IPv4) network; addresses that are not globally routable are exempt (see
//!   [`subnet`](super::contact::subnet)).

use std::collections::VecDeque;
use std::time::Instant;

use super::contact::{Contact, subnet};
use super::distance::Distance;
use crate::identity::NodeId;

/// Consecutive RPC failures after which a contact counts as stale.
pub const STALE_AFTER: u32 = 2;

/// Bounds of a routing table.
#[derive(Debug, Clone, Copy)]
pub struct RoutingConfig {
    /// Contacts per bucket (Kademlia's k).
    pub k: usize,
    /// Contacts per bucket from one network.
    pub max_per_subnet: usize,
    /// Waiting contacts per bucket.
    pub replacements: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            k: 20,
            max_per_subnet: 2,
            replacements: 8,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    last_seen: Instant,
    failures: u32,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    replacements: VecDeque<Contact>,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new contact.
    Added,
    /// Already known; refreshed (address updated).
    Refreshed,
    /// Replaced a stale head.
    ReplacedStale,
    /// The bucket is full of live contacts; kept as a replacement.
    Cached,
    /// Refused by the per-subnet limit.
    SubnetFull,
    /// The local id is never a contact.
    Local,
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: NodeId,
    config: RoutingConfig,
    buckets: Vec<Bucket>,
    len: usize,
}

impl RoutingTable {
    /// An empty table around `local`.
    pub fn new(local: NodeId, config: RoutingConfig) -> Self {
        Self {
            local,
            config,
            // Grown on demand: only the first few dozen buckets are ever used in practice, and
            // a simulator holds 100 000 tables.
            buckets: Vec::new(),
            len: 0,
        }
    }

    /// The local id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Contacts held (not counting replacements).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no contact is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_of(&self, id: &NodeId) -> Option<usize> {
        let lz = Distance::between(&self.local, id).leading_zeros();
        (lz < 256).then_some(lz as usize)
    }

    /// Records that `contact` was heard from (it answered, or sent us a request) at `now`.
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Inserted {
        let Some(b) = self.bucket_of(&contact.id) else {
            return Inserted::Local;
        };
        let config = self.config;
        if self.buckets.len() <= b {
            self.buckets.resize_with(b + 1, Bucket::default);
        }
        let bucket = &mut self.buckets[b];
        if let Some(pos) = bucket
            .entries
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            let mut e = bucket.entries.remove(pos);
            e.contact = contact;
            e.last_seen = now;
            e.failures = 0;
            bucket.entries.push(e);
            return Inserted::Refreshed;
        }
        let net = subnet(&contact.addr);
        if net.is_some()
            && bucket
                .entries
                .iter()
                .filter(|e| subnet(&e.contact.addr) == net)
                .count()
                >= config.max_per_subnet
        {
            return Inserted::SubnetFull;
        }
        let entry = Entry {
            contact,
            last_seen: now,
            failures: 0,
        };
        if bucket.entries.len() < config.k {
            // Grow to at most k: doubling would leave a full bucket of 20 with room for 32,
            // which across a simulator's 100 000 tables is gigabytes.
            let len = bucket.entries.len();
            if len == bucket.entries.capacity() {
                bucket
                    .entries
                    .reserve_exact((len * 2).max(4).min(config.k) - len);
            }
            bucket.entries.push(entry);
            self.len += 1;
            return Inserted::Added;
        }
        if bucket.entries[0].failures >= STALE_AFTER {
            bucket.entries.remove(0);
            bucket.entries.push(entry);
            return Inserted::ReplacedStale;
        }
        bucket.replacements.retain(|c| c.id != contact.id);
        if bucket.replacements.len() >= config.replacements {
            bucket.replacements.pop_front();
        }
        bucket.replacements.push_back(contact);
        Inserted::Cached
    }

    /// Records an RPC failure for `id`; a stale contact is dropped for a waiting replacement.
    pub fn record_failure(&mut self, id: &NodeId) {
        let Some(bucket) = self.bucket_of(id).and_then(|b| self.buckets.get_mut(b)) else {
            return;
        };
        let Some(pos) = bucket.entries.iter().position(|e| e.contact.id == *id) else {
            return;
        };
        bucket.entries[pos].failures += 1;
        if bucket.entries[pos].failures >= STALE_AFTER
            && let Some(replacement) = bucket.replacements.pop_back()
        {
            let last_seen = bucket.entries[pos].last_seen;
            bucket.entries.remove(pos);
            bucket.entries.push(Entry {
                contact: replacement,
                last_seen,
                failures: 0,
            });
        }
    }

    /// Removes `id` (it proved to be someone else, or misbehaved).
    pub fn remove(&mut self, id: &NodeId) {
        if let Some(bucket) = self.bucket_of(id).and_then(|b| self.buckets.get_mut(b)) {
            let before = bucket.entries.len();
            bucket.entries.retain(|e| e.contact.id != *id);
            self.len -= before - bucket.entries.len();
        }
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.bucket_of(id)
            .and_then(|b| self.buckets.get(b))
            .is_some_and(|b| b.entries.iter().any(|e| e.contact.id == *id))
    }

    /// The `n` live contacts closest to `target`, closest first. Stale contacts come last.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut all: Vec<(bool, Distance, Contact)> = Vec::new();
        let mut live = 0;
        for b in self.buckets_by_distance(target) {
            if live >= n {
                break;
            }
            for e in &self.buckets[b].entries {
                let stale = e.failures >= STALE_AFTER;
                live += usize::from(!stale);
                all.push((stale, Distance::between(&e.contact.id, target), e.contact));
            }
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n, |a| (a.0, a.1));
            all.truncate(n);
        }
        all.sort_by_key(|a| (a.0, a.1));
        all.into_iter().map(|(_, _, c)| c).collect()
    }

    /// Bucket indices, nearest to `target` first. Each bucket is one interval of distance
    /// from the target, so visiting them in this order and stopping once enough contacts are
    /// found gives the closest without scanning the whole table (it answers every request).
    ///
    /// With `t = local XOR target` and `p` its leading zeros: bucket `p` shares more than `p`
    /// bits with the target and comes first. A deeper bucket `j` agrees with the target up to
    /// bit `p`, then with `t` until bit `j`, where its distance bit is `!t[j]`: if `t[j]` is
    /// set it is nearer than every bucket deeper than `j`, otherwise farther. Shallower
    /// buckets `j < p` share exactly `j` bits with the target: `p - 1` down to 0.
    fn buckets_by_distance(&self, target: &NodeId) -> impl Iterator<Item = usize> + use<> {
        let len = self.buckets.len();
        let d = Distance::between(&self.local, target);
        let p = (d.leading_zeros() as usize).min(len);
        let t = d.to_bytes();
        let bit = |j: usize| t[j / 8] >> (7 - j % 8) & 1 == 1;
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for j in p + 1..len {
            if bit(j) { &mut near } else { &mut far }.push(j);
        }
        (p..(p + 1).min(len))
            .chain(near)
            .chain(far.into_iter().rev())
            .chain((0..p).rev())
    }

    /// Every contact, bucket by bucket.
    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// Checks the table's invariants (used by tests; cheap enough for debug assertions).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            if b.entries.len() > self.config.k {
                return Err(format!("bucket {i} holds {} > k", b.entries.len()));
            }
            for e in &b.entries {
                count += 1;
                if self.bucket_of(&e.contact.id) != Some(i) {
                    return Err(format!("{} is in bucket {i}", e.contact.id));
                }
                let net = subnet(&e.contact.addr);
                if net.is_some()
                    && b.entries
                        .iter()
                        .filter(|o| subnet(&o.contact.addr) == net)
                        .count()
                        > self.config.max_per_subnet
                {
                    return Err(format!("bucket {i} over its subnet limit"));
                }
            }
            let mut ids: Vec<_> = b.entries.iter().map(|e| e.contact.id).collect();
            ids.sort();
            ids.dedup();
            if ids.len() != b.entries.len() {
                return Err(format!("bucket {i} holds a duplicate"));
            }
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries", self.len));
        }
        Ok(())
    }
}
