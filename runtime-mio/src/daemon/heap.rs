//! Gives the heap that a burst of traffic freed back to the system once the burst is over.
//!
//! glibc keeps freed memory for reuse and returns only what lies at the top of the heap; after a
//! bulk transfer the buffers are freed but scattered, so an idle daemon kept the peak: 33.6 MB
//! of heap with 2.7 MB in use, measured (malloc_stats) on a TLS/TCP owner after 2 GB. Once the
//! daemon has been quiet for a moment after much work, `malloc_trim` returns the free pages.
//! Other C libraries (musl on routers) return freed memory by themselves; there it is a no-op.

use std::time::{Duration, Instant};

/// Quiet time after which a trim runs.
const QUIET: Duration = Duration::from_secs(2);
/// Events handled since the last trim before another is worth it: keepalives and the odd
/// lookup leave nothing to give back.
const BUSY_EVENTS: u64 = 4096;

/// When to trim: after [`BUSY_EVENTS`] events, [`QUIET`] after the last one.
#[derive(Debug, Default)]
pub struct HeapTrim {
    events: u64,
    last: Option<Instant>,
}

impl HeapTrim {
    /// `n` I/O events were handled at `now`.
    pub fn handled(&mut self, now: Instant, n: usize) {
        if n > 0 {
            self.events += n as u64;
            self.last = Some(now);
        }
    }

    /// When the next trim is due, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        (self.events >= BUSY_EVENTS)
            .then_some(self.last)
            .flatten()
            .map(|t| t + QUIET)
    }

    /// Trims if it is due.
    pub fn run(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.events = 0;
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it works on the
    // allocator's own state under the allocator's lock.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!("heap trimmed (memory released: {})", released == 1);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_burst_once_it_is_quiet() {
        let t0 = Instant::now();
        let mut h = HeapTrim::default();
        h.handled(t0, 10);
        assert_eq!(h.deadline(), None, "a few events are not a burst");
        h.handled(t0, BUSY_EVENTS as usize);
        assert_eq!(h.deadline(), Some(t0 + QUIET));
        h.handled(t0 + Duration::from_secs(1), 1);
        assert_eq!(h.deadline(), Some(t0 + Duration::from_secs(1) + QUIET));
        h.run(t0 + Duration::from_secs(2));
        assert!(h.deadline().is_some(), "not quiet long enough yet");
        h.run(t0 + Duration::from_secs(3));
        assert_eq!(
            h.deadline(),
            None,
            "trimmed: nothing due until the next burst"
        );
    }
}
