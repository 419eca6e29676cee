//! Bounds the daemon keeps on its own sockets (DESIGN.md §8b): output waiting for a session
//! socket, and listeners that cannot accept for a while.

use std::time::{Duration, Instant};

/// Unsent output to one session socket past which the daemon stops reading that socket. Output
/// is taken from the core only once the socket has taken the previous batch, and the core
/// closes a peer whose unread replies pass its multiplexer's high-water mark plus control
/// backlog (1.25 MiB), so a batch stays below this mark. It is well above what honest data
/// can queue on purpose: two nodes sending bulk data to each other must never both stop
/// reading, which would deadlock them. It is the daemon's own bound should a batch ever be
/// larger.
pub const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// Time a closing session socket is given to take its last bytes before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Time between attempts on listeners whose accept failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Bytes for a session socket that it has not taken yet.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    off: usize,
}

impl Outbox {
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.off..]
    }

    pub fn is_empty(&self) -> bool {
        self.off == self.buf.len()
    }

    /// Whether reading the socket waits until the peer takes our output.
    pub fn over_high_water(&self) -> bool {
        self.unsent().len() > OUT_HIGH_WATER
    }

    /// The socket took `n` more bytes. The allocation is kept for the next batch: a fresh one
    /// per batch costs page faults at high throughput.
    pub fn sent(&mut self, n: usize) {
        self.off += n;
        if self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
        }
    }

    /// Where the core appends its next batch, after what is still unsent.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Forgets everything unsent (the socket failed).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.off = 0;
    }
}

/// Accept failures other than an aborted connection: out of file descriptors, mostly. The
/// connection stays queued and an edge-triggered listener is not woken for it again, so every
/// listener is tried again on a timer until a round of attempts passes without failure. A run
/// of failures is logged when it starts and when it ends, not per connection.
#[derive(Debug, Default)]
pub struct AcceptRetry {
    at: Option<Instant>,
    failures: u64,
}

impl AcceptRetry {
    /// Counts a failure; returns whether it starts a run (the one failure to log).
    pub fn failed(&mut self, now: Instant) -> bool {
        self.failures += 1;
        self.at.get_or_insert(now + ACCEPT_RETRY);
        self.failures == 1
    }

    /// When the listeners are to be tried again.
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }

    /// Whether the listeners are to be tried now; a round of attempts follows a `true`.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.at.is_some_and(|at| at <= now) {
            self.at = None;
            true
        } else {
            false
        }
    }

    /// After a round of attempts: the number of failures in the run, if this round ended it.
    pub fn round_done(&mut self) -> Option<u64> {
        if self.at.is_none() && self.failures > 0 {
            Some(std::mem::take(&mut self.failures))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keeps_order_and_empties() {
        let mut out = Outbox::default();
        out.tail().extend_from_slice(b"hello");
        out.sent(2);
        // Final records go after what the socket has not taken yet.
        out.tail().extend_from_slice(b"!");
        assert_eq!(out.unsent(), b"llo!");
        out.sent(4);
        assert!(out.is_empty());
        assert_eq!(out.unsent(), b"");
        out.tail().extend_from_slice(b"x");
        assert_eq!(out.unsent(), b"x");
        out.discard();
        assert!(out.is_empty());
    }

    #[test]
    fn reading_pauses_only_past_the_mark() {
        let mut out = Outbox::default();
        out.tail().resize(OUT_HIGH_WATER, 0);
        assert!(!out.over_high_water());
        out.tail().push(0);
        assert!(out.over_high_water());
        out.sent(1);
        assert!(!out.over_high_water());
    }

    #[test]
    fn accept_failures_are_retried_and_logged_once_per_run() {
        let t0 = Instant::now();
        let mut retry = AcceptRetry::default();
        assert_eq!(retry.deadline(), None);
        assert!(!retry.due(t0));
        assert!(retry.failed(t0), "the first failure of a run is logged");
        assert!(!retry.failed(t0), "later ones are not");
        assert_eq!(retry.deadline(), Some(t0 + ACCEPT_RETRY));
        assert!(!retry.due(t0));
        // The round at the deadline fails again: still the same run, retried later.
        let t1 = t0 + ACCEPT_RETRY;
        assert!(retry.due(t1));
        assert!(!retry.failed(t1));
        assert_eq!(retry.round_done(), None);
        assert_eq!(retry.deadline(), Some(t1 + ACCEPT_RETRY));
        // A round without failure ends the run.
        let t2 = t1 + ACCEPT_RETRY;
        assert!(retry.due(t2));
        assert_eq!(retry.round_done(), Some(3));
        assert_eq!(retry.deadline(), None);
        assert_eq!(retry.round_done(), None);
        assert!(retry.failed(t2), "a new run is logged again");
    }
}
