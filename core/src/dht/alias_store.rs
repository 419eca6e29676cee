//! The alias records a DHT node holds for others: opaque to it (it can check signature, period
//! and expiry, never read the introduction relays), one per blinded key, and bounded.

use std::collections::HashMap;

use crate::alias::AliasRecord;
use crate::identity::NodeId;

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
}

/// Alias records by DHT key, at most `limit` of them.
#[derive(Debug)]
pub struct AliasStore {
    limit: usize,
    records: HashMap<NodeId, AliasRecord>,
}

impl AliasStore {
    /// An empty store for at most `limit` records.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            records: HashMap::new(),
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

    /// Keeps `record` at `unix_now`; a higher seq replaces the held one. When full, expired
    /// records make room first; live ones are never evicted, so a flood of new keys cannot
    /// push out what honest owners stored (it is refused, and ages out within a day).
    pub fn insert(&mut self, record: AliasRecord, unix_now: u64) -> Result<(), AliasStoreError> {
        record
            .check_time(unix_now)
            .map_err(AliasStoreError::NotCurrent)?;
        let key = record.dht_key();
        if let Some(held) = self.records.get(&key)
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
            self.records.retain(|_, r| r.is_live(unix_now));
            if self.records.len() >= self.limit {
                return Err(AliasStoreError::Full(self.limit));
            }
        }
        self.records.insert(key, record);
        Ok(())
    }

    /// The live record under `key`.
    pub fn get(&self, key: &NodeId, unix_now: u64) -> Option<&AliasRecord> {
        self.records.get(key).filter(|r| r.is_live(unix_now))
    }
}
