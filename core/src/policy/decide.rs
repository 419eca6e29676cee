//! The policy decision: which path a managed link uses now.

use std::fmt;
use std::time::{Duration, Instant};

use super::probe_window::{MIN_SAMPLES, PathStats};
use super::{OnViolation, Policy, Sla};

/// What kind of path carries a link's datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// Straight to the owner (a circuit of zero relays).
    Direct,
    /// Through relays.
    Relay,
}

impl PathKind {
    /// The name metrics, logs and status use.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which threshold a path broke, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Round-trip time above the maximum.
    Rtt {
        /// Measured.
        measured: Duration,
        /// The threshold.
        max: Duration,
    },
    /// Loss above the maximum (parts per thousand).
    Loss {
        /// Measured.
        measured: u16,
        /// The threshold.
        max: u16,
    },
    /// Jitter above the maximum.
    Jitter {
        /// Measured.
        measured: Duration,
        /// The threshold.
        max: Duration,
    },
}

impl Violation {
    /// How far over its threshold, in parts per thousand of it (1000 is at the threshold); a
    /// path that lost every probe is the worst of all.
    fn badness(&self) -> u64 {
        let ratio = |m: u128, max: u128| (m * 1000 / max.max(1)) as u64;
        match *self {
            Violation::Loss { measured, .. } if measured >= 1000 => u64::MAX,
            Violation::Rtt { measured, max } | Violation::Jitter { measured, max } => {
                ratio(measured.as_micros(), max.as_micros())
            }
            Violation::Loss { measured, max } => ratio(measured.into(), max.into()),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        match self {
            Violation::Rtt { measured, max } => {
                write!(f, "rtt {:.1} ms > {:.1} ms", ms(measured), ms(max))
            }
            Violation::Loss { measured, max } => write!(
                f,
                "loss {:.1}% > {:.1}%",
                f64::from(*measured) / 10.0,
                f64::from(*max) / 10.0
            ),
            Violation::Jitter { measured, max } => {
                write!(f, "jitter {:.1} ms > {:.1} ms", ms(measured), ms(max))
            }
        }
    }
}

/// How a path stands against an SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaState {
    /// Too few probes answered or lost to say.
    Unknown,
    /// Within every threshold.
    Met,
    /// Over a threshold (the worst one).
    Violated(Violation),
}

impl SlaState {
    /// The name metrics, logs and status use.
    pub fn as_str(&self) -> &'static str {
        match self {
            SlaState::Unknown => "unknown",
            SlaState::Met => "met",
            SlaState::Violated(_) => "violated",
        }
    }
}

/// One of a link's paths, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathView {
    /// Direct or relayed.
    pub kind: PathKind,
    /// Built and answering (a path that is not may not be chosen).
    pub up: bool,
    /// What its probes measured.
    pub stats: PathStats,
    /// Since when it has met the SLA without a break (kept by the caller from [`judge`]).
    pub met_since: Option<Instant>,
}

/// Why a link changed paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// The link had no path yet, or moves to its preferred one before any switch.
    Initial,
    /// The path in use stopped answering or was torn down.
    PathDown,
    /// The path in use broke the SLA.
    Sla(Violation),
    /// The preferred path met the SLA for the whole hold-down.
    Failback,
    /// A path came back after a strict policy had left the link without one.
    Recovered,
    /// The policy changed.
    PolicyChanged,
}

impl SwitchReason {
    /// The bounded label metrics use.
    pub fn as_str(&self) -> &'static str {
        match self {
            SwitchReason::Initial => "initial",
            SwitchReason::PathDown => "path_down",
            SwitchReason::Sla(Violation::Rtt { .. }) => "sla_rtt",
            SwitchReason::Sla(Violation::Loss { .. }) => "sla_loss",
            SwitchReason::Sla(Violation::Jitter { .. }) => "sla_jitter",
            SwitchReason::Failback => "failback",
            SwitchReason::Recovered => "recovered",
            SwitchReason::PolicyChanged => "policy_changed",
        }
    }
}

impl fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchReason::Initial => f.write_str("initial choice"),
            SwitchReason::PathDown => f.write_str("path down"),
            SwitchReason::Sla(v) => write!(f, "sla: {v}"),
            SwitchReason::Failback => f.write_str("failback after hold-down"),
            SwitchReason::Recovered => f.write_str("a path meets the SLA again"),
            SwitchReason::PolicyChanged => f.write_str("policy changed"),
        }
    }
}

/// A change of path: to the path at index `to` of the views, or to none (strict mode with
/// every path in violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The path to use now.
    pub to: Option<usize>,
    /// Why.
    pub reason: SwitchReason,
}

/// How `stats` stand against `sla`.
pub fn judge(sla: &Sla, stats: &PathStats) -> SlaState {
    if stats.samples < MIN_SAMPLES {
        return SlaState::Unknown;
    }
    let mut worst: Option<Violation> = None;
    let mut consider = |v: Violation| {
        if worst.is_none_or(|w| v.badness() > w.badness()) {
            worst = Some(v);
        }
    };
    if let Some(max) = sla.max_loss_permille
        && stats.loss_permille > max
    {
        consider(Violation::Loss {
            measured: stats.loss_permille,
            max,
        });
    }
    if let (Some(max), Some(measured)) = (sla.max_rtt, stats.rtt)
        && measured > max
    {
        consider(Violation::Rtt { measured, max });
    }
    if let (Some(max), Some(measured)) = (sla.max_jitter, stats.jitter)
        && measured > max
    {
        consider(Violation::Jitter { measured, max });
    }
    match worst {
        Some(v) => SlaState::Violated(v),
        // Every probe lost: nothing measured, and nothing met.
        None if stats.rtt.is_none() => SlaState::Violated(Violation::Loss {
            measured: 1000,
            max: sla.max_loss_permille.unwrap_or(1000),
        }),
        None => SlaState::Met,
    }
}

/// Which path a link should use now, given its paths, the one in use (`current`, an index
/// into `paths`) and when it last switched; `None` to stay.
///
/// - A path that is down, or direct under a relay-only policy, is never chosen.
/// - Leaving a path that broke the SLA (or went down) is immediate: to the best path that
///   meets the SLA, else one not yet judged, else (best of the bad) the least bad one, or
///   (strict) none.
/// - Returning to the preferred kind of path waits until such a path has met the SLA for the
///   whole hold-down and the last switch is a hold-down old, so an oscillating path causes at
///   most one failback per hold-down.
/// - Among equals: the preferred kind first, then the lower RTT, then the lower index.
pub fn decide(
    policy: &Policy,
    paths: &[PathView],
    current: Option<usize>,
    last_switch: Option<Instant>,
    now: Instant,
) -> Option<Decision> {
    let allowed = |i: usize| {
        let p = &paths[i];
        p.up && (policy.allows_direct() || p.kind == PathKind::Relay)
    };
    let state = |i: usize| judge(&policy.sla, &paths[i].stats);
    let rank = |i: usize| {
        let p = &paths[i];
        (
            !policy.prefers(p.kind),
            p.stats.rtt.unwrap_or(Duration::MAX),
            i,
        )
    };
    let best = |want: fn(&SlaState) -> bool| {
        (0..paths.len())
            .filter(|&i| allowed(i) && want(&state(i)))
            .min_by_key(|&i| rank(i))
    };
    let best_met = best(|s| *s == SlaState::Met);
    let best_unknown = best(|s| *s == SlaState::Unknown);
    let least_bad = (0..paths.len())
        .filter(|&i| allowed(i))
        .filter_map(|i| match state(i) {
            SlaState::Violated(v) => Some((v.badness(), rank(i), i)),
            _ => None,
        })
        .min()
        .map(|(_, _, i)| i);
    let fallback = best_met.or(best_unknown).or(match policy.on_violation {
        OnViolation::BestOfBad => least_bad,
        OnViolation::Strict => None,
    });
    let switch = |to: Option<usize>, reason| (to != current).then_some(Decision { to, reason });

    let Some(cur) = current.filter(|&c| c < paths.len() && allowed(c)) else {
        let reason = match (current, last_switch) {
            (Some(_), _) => SwitchReason::PathDown,
            (None, Some(_)) => SwitchReason::Recovered,
            (None, None) => SwitchReason::Initial,
        };
        return match fallback {
            Some(to) => Some(Decision {
                to: Some(to),
                reason,
            }),
            None if current.is_some() => Some(Decision { to: None, reason }),
            None => None,
        };
    };
    match state(cur) {
        SlaState::Violated(v) => {
            let reason = SwitchReason::Sla(v);
            if let Some(to) = best_met.or(best_unknown) {
                return switch(Some(to), reason);
            }
            match policy.on_violation {
                OnViolation::Strict => switch(None, reason),
                OnViolation::BestOfBad => match least_bad {
                    Some(to) if to != cur => {
                        // Wide enough for the badness of a path that lost everything (u64::MAX).
                        let better = |i: usize| match state(i) {
                            SlaState::Violated(w) => u128::from(w.badness()),
                            _ => 0,
                        };
                        // Only for a clear gain, so two bad paths do not trade places.
                        (better(to) * 5 < better(cur) * 4).then_some(Decision {
                            to: Some(to),
                            reason,
                        })
                    }
                    _ => None,
                },
            }
        }
        SlaState::Met | SlaState::Unknown => {
            if policy.prefers(paths[cur].kind) {
                return None;
            }
            let preferred = (0..paths.len())
                .filter(|&i| allowed(i) && policy.prefers(paths[i].kind))
                .filter(|&i| state(i) == SlaState::Met)
                .min_by_key(|&i| rank(i))?;
            let held = |since: Instant| now.saturating_duration_since(since) >= policy.hold_down;
            match last_switch {
                // Before any switch the link moves to its preferred path as soon as that
                // meets the SLA.
                None => switch(Some(preferred), SwitchReason::Initial),
                Some(t) if held(t) && paths[preferred].met_since.is_some_and(held) => {
                    switch(Some(preferred), SwitchReason::Failback)
                }
                Some(_) => None,
            }
        }
    }
}
