//! Per-source-prefix token buckets: what a node answers for free (DHT requests, each answered
//! with a signature) is costed per request, so one source cannot spend the node's CPU alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::limits::Prefix;

/// Tokens are kept in millionths, so refills are exact integer arithmetic.
const SCALE: u64 = 1_000_000;
/// How often idle buckets are swept out of the table.
const SWEEP: Duration = Duration::from_secs(10);

/// A rate per source prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
    /// Prefixes tracked at most; sources beyond share one bucket (so a flood from many
    /// prefixes costs a bounded table, and still a bounded rate).
    pub max_prefixes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, limit: &RateLimit) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let refill = elapsed.as_micros() as u64 * u64::from(limit.per_second);
        self.tokens = (self.tokens + refill).min(u64::from(limit.burst) * SCALE);
        if self.tokens >= SCALE {
            self.tokens -= SCALE;
            true
        } else {
            false
        }
    }
}

/// Buckets by source prefix, bounded by [`RateLimit::max_prefixes`].
#[derive(Debug)]
pub(super) struct PrefixBuckets {
    limit: RateLimit,
    buckets: HashMap<Prefix, Bucket>,
    overflow: Bucket,
    next_sweep: Option<Instant>,
}

impl PrefixBuckets {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
            overflow: Bucket {
                tokens: u64::from(limit.burst) * SCALE,
                last: now,
            },
            next_sweep: None,
        }
    }

    /// Whether one more request from `from` may be served now (and if so, it is counted).
    pub fn allow(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.next_sweep.is_none_or(|t| t <= now) {
            // A bucket idle this long has refilled completely: forgetting it changes nothing.
            let full_after = Duration::from_secs(
                u64::from(self.limit.burst).div_ceil(u64::from(self.limit.per_second.max(1))),
            );
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            self.next_sweep = Some(now + SWEEP);
        }
        let limit = self.limit;
        let prefix = Prefix::of(from);
        if let Some(b) = self.buckets.get_mut(&prefix) {
            return b.take(now, &limit);
        }
        if self.buckets.len() >= limit.max_prefixes {
            return self.overflow.take(now, &limit);
        }
        let mut fresh = Bucket {
            tokens: u64::from(limit.burst) * SCALE,
            last: now,
        };
        let allowed = fresh.take(now, &limit);
        self.buckets.insert(prefix, fresh);
        allowed
    }
}
