//! Whether a record is valid at a given wall-clock time.

use super::SignedRecord;

/// How long records may live, and how much clock disagreement is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Longest lifetime a record may claim; a record that expires later than
    /// `now + max_lifetime_secs + max_skew_secs` is rejected as future-dated.
    pub max_lifetime_secs: u64,
    /// Tolerated difference between the signer's clock and ours.
    pub max_skew_secs: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            max_lifetime_secs: 7 * 24 * 3600,
            max_skew_secs: 300,
        }
    }
}

/// Why a record is not valid now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshnessError {
    /// The record's expiry has passed.
    #[error("record expired at {expires_at} (now {now})")]
    Expired {
        /// The record's expiry.
        expires_at: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The record claims to live longer than allowed, which only a wrong clock or an attempt to
    /// pin stale data for a long time produces.
    #[error("record expires at {expires_at}, beyond the allowed {latest}")]
    TooFarFuture {
        /// The record's expiry.
        expires_at: u64,
        /// The latest expiry accepted at the time of the check.
        latest: u64,
    },
}

impl Freshness {
    /// Checks that `record` is valid at `unix_now`.
    pub fn check(&self, record: &SignedRecord, unix_now: u64) -> Result<(), FreshnessError> {
        let expires_at = record.record().expires_at();
        if expires_at <= unix_now {
            return Err(FreshnessError::Expired {
                expires_at,
                now: unix_now,
            });
        }
        let latest = unix_now
            .saturating_add(self.max_lifetime_secs)
            .saturating_add(self.max_skew_secs);
        if expires_at > latest {
            return Err(FreshnessError::TooFarFuture { expires_at, latest });
        }
        Ok(())
    }
}
