//! A path's last probes, and the round-trip time, loss and jitter they show.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Probes a window remembers (3 s of them on a path probed every 100 ms).
pub const WINDOW: usize = 30;
/// A probe unanswered for this long (or three RTTs, if longer) counts as lost.
pub const LOST_AFTER: Duration = Duration::from_millis(400);
/// Probes that must be answered or lost before a window judges a path.
pub const MIN_SAMPLES: u16 = 5;

/// What a path's probes measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Mean round-trip time of the answered probes.
    pub rtt: Option<Duration>,
    /// Probes lost, in parts per thousand of those answered or lost.
    pub loss_permille: u16,
    /// Mean difference between consecutive round-trip times.
    pub jitter: Option<Duration>,
    /// Probes answered or lost (the rest are still in flight).
    pub samples: u16,
}

struct Sent {
    nonce: u64,
    at: Instant,
    rtt: Option<Duration>,
}

/// The last [`WINDOW`] probes sent on one path.
#[derive(Default)]
pub struct ProbeWindow {
    sent: VecDeque<Sent>,
}

impl ProbeWindow {
    /// Records a probe sent at `at`.
    pub fn sent(&mut self, nonce: u64, at: Instant) {
        if self.sent.len() >= WINDOW {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            nonce,
            at,
            rtt: None,
        });
    }

    /// Records the answer to probe `nonce`, received at `now`; returns its round-trip time, or
    /// `None` for a nonce the window does not hold (too old, repeated, or never sent).
    pub fn answered(&mut self, nonce: u64, now: Instant) -> Option<Duration> {
        let s = self
            .sent
            .iter_mut()
            .find(|s| s.nonce == nonce && s.rtt.is_none())?;
        let rtt = now.saturating_duration_since(s.at);
        s.rtt = Some(rtt);
        Some(rtt)
    }

    /// Forgets everything (the path changed under the window).
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// What the window shows at `now`.
    pub fn stats(&self, now: Instant) -> PathStats {
        let rtts: Vec<Duration> = self.sent.iter().filter_map(|s| s.rtt).collect();
        let rtt = (!rtts.is_empty()).then(|| rtts.iter().sum::<Duration>() / rtts.len() as u32);
        let lost_after = rtt.map_or(LOST_AFTER, |r| (r * 3).max(LOST_AFTER));
        let lost = self
            .sent
            .iter()
            .filter(|s| s.rtt.is_none() && now.saturating_duration_since(s.at) >= lost_after)
            .count();
        let samples = rtts.len() + lost;
        let loss_permille = (lost * 1000).checked_div(samples).unwrap_or(0) as u16;
        let jitter = (rtts.len() >= 2).then(|| {
            let total: Duration = rtts.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
            total / (rtts.len() - 1) as u32
        });
        PathStats {
            rtt,
            loss_permille,
            jitter,
            samples: samples as u16,
        }
    }
}
