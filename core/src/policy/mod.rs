//! Path policy (DESIGN.md §8): which of a link's paths carries its traffic, from what probes
//! measure on each and the SLA the operator set.
//!
//! - [`Policy`]: prefer direct, relay or auto; hop count; SLA thresholds; strict or best of the
//!   bad on a violation; the hold-down before failing back.
//! - [`ProbeWindow`]: RTT, loss and jitter over a path's last probes.
//! - [`decide`]: the choice itself, a pure function of the paths' measurements, the policy and
//!   the time of the last switch.

mod decide;
mod probe_window;
mod spec;

pub use decide::{Decision, PathKind, PathView, SlaState, SwitchReason, Violation, decide, judge};
pub use probe_window::{LOST_AFTER, MIN_SAMPLES, PathStats, ProbeWindow, WINDOW};
pub use spec::PolicyParseError;

use std::time::Duration;

/// Which paths a managed link may use, and which it prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefer {
    /// Direct while it meets the SLA; a relay path when it does not.
    Direct,
    /// Relay paths only: the SLA chooses among them.
    Relay,
    /// Like `Direct`: whatever works, direct preferred.
    Auto,
}

/// Thresholds a path must stay within. Unset thresholds are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sla {
    /// Most smoothed round-trip time.
    pub max_rtt: Option<Duration>,
    /// Most probe loss, in parts per thousand.
    pub max_loss_permille: Option<u16>,
    /// Most jitter (mean difference between consecutive RTT samples).
    pub max_jitter: Option<Duration>,
}

impl Sla {
    /// Whether no threshold is set.
    pub fn is_empty(&self) -> bool {
        self.max_rtt.is_none() && self.max_loss_permille.is_none() && self.max_jitter.is_none()
    }
}

/// What a link does when every path violates its SLA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnViolation {
    /// Use the least bad path.
    #[default]
    BestOfBad,
    /// Use none: traffic waits until a path meets the SLA again.
    Strict,
}

/// A forward's path policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Which paths, in which order.
    pub prefer: Prefer,
    /// Relays on a relay path.
    pub hops: u8,
    /// The thresholds.
    pub sla: Sla,
    /// When no path meets them.
    pub on_violation: OnViolation,
    /// How long the preferred path must meet the SLA, and the last switch lie back, before
    /// the link fails back to it.
    pub hold_down: Duration,
}

/// The hold-down unless the policy sets one.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(10);

impl Default for Policy {
    fn default() -> Self {
        Self {
            prefer: Prefer::Auto,
            hops: crate::node::DEFAULT_HOPS,
            sla: Sla::default(),
            on_violation: OnViolation::default(),
            hold_down: DEFAULT_HOLD_DOWN,
        }
    }
}

impl Policy {
    /// Whether the policy may put traffic on the direct path.
    pub fn allows_direct(&self) -> bool {
        self.prefer != Prefer::Relay
    }

    /// Whether `kind` is the kind this policy prefers.
    pub fn prefers(&self, kind: PathKind) -> bool {
        match self.prefer {
            Prefer::Direct | Prefer::Auto => kind == PathKind::Direct,
            Prefer::Relay => kind == PathKind::Relay,
        }
    }
}

/// A forward's policy, by a number its runtime chooses (so a running forward's policy can
/// change in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId(pub u32);

impl PolicyId {
    /// The policy of the links `auto` streams fall back to when the direct path does not
    /// work at first: the default policy (prefer direct, no SLA), so such a link keeps trying
    /// the direct path (with hole punching) and moves its connections there once it works.
    /// Runtimes and embedders number their own policies below it.
    pub const AUTO: PolicyId = PolicyId(u32::MAX);
}
