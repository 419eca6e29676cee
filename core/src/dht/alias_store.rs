//! The alias records a DHT node holds for others: opaque to it (it can check signature, period
//! and expiry, never read the introduction relays), one per blinded key, and bounded.

use std::collections::HashMap;

use crate::alias::AliasRecord;
use crate::identity::NodeId;

/// Who stored a record here, for the per-source bound: the storing peer's network (its /64 or
/// /24, [`super::contact::subnet`]), or its id where its address has no such network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliasSource {
    /// A peer's network.
    Net([u8; 9]),
    /// A peer, by id.
    Node(NodeId),
    /// This node: its own records and those its lookups found.
    Local,
}

/// Why an alias record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasStoreError {
    /// Expired, or for a period too far ahead.
    #[error("alias record is not current: {0}")]
    NotCurrent(crate::alias::AliasRecordError),
    /// An older sequence number than the one held.
    #[error("alias record seq {offered} is older than the held {held}")]
    Stale {
        /// The offered record's.
        offered: u64,
        /// The held record's.
        held: u64,
    },
    /// The held sequence number with other contents: the owner signed two versions.
    #[error("alias record seq {0} is held with other contents")]
    Equivocation(u64),
    /// The store is full of live records.
    #[error("alias store is full ({0} records)")]
    Full(usize),
    /// This source's share of the store is full of live records.
    #[error("this source already stored {0} alias records here")]
    SourceFull(usize),
}

/// Alias records by DHT key, at most `limit` of them and `per_source` from any one source.
#[derive(Debug)]
pub struct AliasStore {
    limit: usize,
    per_source: usize,
    records: HashMap<NodeId, (AliasRecord, AliasSource)>,
    by_source: HashMap<AliasSource, usize>,
}

impl AliasStore {
    /// An empty store for at most `limit` records, `per_source` of them from one source.
    pub fn new(limit: usize, per_source: usize) -> Self {
        Self {
            limit,
            per_source,
            records: HashMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Records held (some may have expired since).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Keeps `record`, stored by `source`, at `unix_now`; a higher seq replaces the held one.
    /// When full, expired records make room first; live ones are never evicted, so a flood of
    /// new keys cannot push out what honest owners stored: it is refused, each source can fill
    /// only its share, and what it did store lapses within hours.
    pub fn insert(
        &mut self,
        record: AliasRecord,
        unix_now: u64,
        source: AliasSource,
    ) -> Result<(), AliasStoreError> {
        record
            .check_time(unix_now)
            .map_err(AliasStoreError::NotCurrent)?;
        let key = record.dht_key();
        if let Some((held, _)) = self.records.get(&key)
            && held.is_live(unix_now)
        {
            if record.seq() < held.seq() {
                return Err(AliasStoreError::Stale {
                    offered: record.seq(),
                    held: held.seq(),
                });
            }
            if record.seq() == held.seq() {
                return if record.as_bytes() == held.as_bytes() {
                    Ok(())
                } else {
                    Err(AliasStoreError::Equivocation(held.seq()))
                };
            }
        } else if self.records.len() >= self.limit {
            self.remove_expired(unix_now);
            if self.records.len() >= self.limit {
                return Err(AliasStoreError::Full(self.limit));
            }
        }
        if source != AliasSource::Local
            && self.by_source.get(&source).copied().unwrap_or(0) >= self.per_source
        {
            self.remove_expired(unix_now);
            if self.by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
                return Err(AliasStoreError::SourceFull(self.per_source));
            }
        }
        if let Some((_, old)) = self.records.insert(key, (record, source)) {
            self.uncount(old);
        }
        *self.by_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// The live record under `key`.
    pub fn get(&self, key: &NodeId, unix_now: u64) -> Option<&AliasRecord> {
        self.records
            .get(key)
            .map(|(r, _)| r)
            .filter(|r| r.is_live(unix_now))
    }

    fn remove_expired(&mut self, unix_now: u64) {
        let expired: Vec<NodeId> = self
            .records
            .iter()
            .filter(|(_, (r, _))| !r.is_live(unix_now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some((_, source)) = self.records.remove(&k) {
                self.uncount(source);
            }
        }
    }

    fn uncount(&mut self, source: AliasSource) {
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }
}
