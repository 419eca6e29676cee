//! What hostile or merely numerous peers cost the node, summarised in the log every
//! [`SUMMARY_INTERVAL`] while it goes on: a flood of connections would otherwise write a line
//! per connection (DESIGN.md §8b: floods are counted and summarised, not logged one by one).

use std::time::{Duration, Instant};

use vx6_core::node::Counters;

/// How often a summary may be written.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The counters as last summarised, and when the next summary is due.
pub struct FloodLog {
    last: Counters,
    next: Instant,
}

impl FloodLog {
    pub fn new(now: Instant) -> Self {
        Self {
            last: Counters::default(),
            next: now + SUMMARY_INTERVAL,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// The summary line for what changed since the last one, if anything did and one is due.
    pub fn summary(&mut self, now: Instant, counters: Counters) -> Option<String> {
        if now < self.next {
            return None;
        }
        self.next = now + SUMMARY_INTERVAL;
        let last = std::mem::replace(&mut self.last, counters);
        let parts: Vec<String> = [
            (
                "handshakes timed out",
                counters.handshakes_timed_out - last.handshakes_timed_out,
            ),
            (
                "handshakes dropped for newer ones",
                counters.handshakes_evicted - last.handshakes_evicted,
            ),
            (
                "QUIC retries sent",
                counters.quic_retries - last.quic_retries,
            ),
            (
                "unvalidated QUIC handshakes refused",
                counters.handshakes_refused - last.handshakes_refused,
            ),
            (
                "sessions refused at the session limit",
                counters.sessions_refused - last.sessions_refused,
            ),
            (
                "streams refused at a limit",
                counters.streams_refused_limit - last.streams_refused_limit,
            ),
            (
                "DHT requests over their rate",
                counters.dht_rate_limited - last.dht_rate_limited,
            ),
            (
                "datagrams dropped",
                counters.datagrams_dropped - last.datagrams_dropped,
            ),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "in the last {}s: {}",
                SUMMARY_INTERVAL.as_secs(),
                parts.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_only_what_changed_and_only_when_due() {
        let t0 = Instant::now();
        let mut log = FloodLog::new(t0);
        let mut c = Counters {
            handshakes_timed_out: 4000,
            quic_retries: 12,
            ..Counters::default()
        };
        assert_eq!(log.summary(t0, c), None, "not due yet");
        let line = log.summary(t0 + SUMMARY_INTERVAL, c).unwrap();
        assert_eq!(
            line,
            "in the last 10s: 4000 handshakes timed out, 12 QUIC retries sent"
        );
        assert_eq!(
            log.summary(t0 + 2 * SUMMARY_INTERVAL, c),
            None,
            "nothing new"
        );
        c.handshakes_timed_out += 1;
        let line = log.summary(t0 + 3 * SUMMARY_INTERVAL, c).unwrap();
        assert_eq!(line, "in the last 10s: 1 handshakes timed out");
    }
}
