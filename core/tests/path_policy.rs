//! The path policy's rules, property by property: its decision, the probe window it judges,
//! and the text form of a policy.
#![allow(clippy::disallowed_methods)] // Instant::now as an origin for virtual time

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vx6_core::policy::{
    Decision, OnViolation, PathKind, PathStats, PathView, Policy, Prefer, ProbeWindow, SlaState,
    SwitchReason, decide, judge,
};

fn stats(rtt_ms: u64, loss_permille: u16, jitter_ms: u64) -> PathStats {
    PathStats {
        rtt: Some(Duration::from_millis(rtt_ms)),
        loss_permille,
        jitter: Some(Duration::from_millis(jitter_ms)),
        samples: 20,
    }
}

fn arb_view(t0: Instant) -> impl Strategy<Value = PathView> {
    (
        any::<bool>(),
        prop::bool::weighted(0.85),
        0u64..400,
        0u16..=1000,
        0u64..100,
        prop::option::of(0u64..30_000),
        0u16..30,
    )
        .prop_map(
            move |(direct, up, rtt, loss, jitter, met_ms, samples)| PathView {
                kind: if direct {
                    PathKind::Direct
                } else {
                    PathKind::Relay
                },
                up,
                stats: PathStats {
                    samples,
                    ..stats(rtt, loss, jitter)
                },
                met_since: met_ms.map(|m| t0 + Duration::from_millis(m)),
            },
        )
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(Prefer::Direct),
            Just(Prefer::Relay),
            Just(Prefer::Auto)
        ],
        prop::option::of(1u64..300),
        prop::option::of(0u16..=1000),
        prop::option::of(1u64..100),
        any::<bool>(),
        1u64..20,
    )
        .prop_map(|(prefer, rtt, loss, jitter, strict, hold)| {
            let mut p = Policy {
                prefer,
                hold_down: Duration::from_secs(hold),
                on_violation: if strict {
                    OnViolation::Strict
                } else {
                    OnViolation::BestOfBad
                },
                ..Policy::default()
            };
            p.sla.max_rtt = rtt.map(Duration::from_millis);
            p.sla.max_loss_permille = loss;
            p.sla.max_jitter = jitter.map(Duration::from_millis);
            p
        })
}

type Case = (
    Policy,
    Vec<PathView>,
    Option<usize>,
    Option<u64>,
    u64,
    Instant,
);

fn arb_case() -> impl Strategy<Value = Case> {
    let t0 = Instant::now();
    (
        arb_policy(),
        prop::collection::vec(arb_view(t0), 0..5),
        prop::option::of(0usize..6),
        prop::option::of(0u64..40_000),
        0u64..40_000,
    )
        .prop_map(move |(p, v, c, last, now)| (p, v, c, last, now, t0))
}

fn allowed(policy: &Policy, v: &PathView) -> bool {
    v.up && (policy.allows_direct() || v.kind == PathKind::Relay)
}

proptest! {
    /// A path that is down, or direct under a relay-only policy, is never chosen.
    #[test]
    fn only_allowed_paths_are_chosen((policy, views, current, last, now, t0) in arb_case()) {
        let now = t0 + Duration::from_millis(now);
        let last = last.map(|l| t0 + Duration::from_millis(l));
        if let Some(Decision { to: Some(i), .. }) = decide(&policy, &views, current, last, now) {
            prop_assert!(allowed(&policy, &views[i]));
        }
    }

    /// Strict mode never moves traffic onto a path that breaks the SLA.
    #[test]
    fn strict_never_chooses_a_violating_path((mut policy, views, current, last, now, t0) in arb_case()) {
        policy.on_violation = OnViolation::Strict;
        let now = t0 + Duration::from_millis(now);
        let last = last.map(|l| t0 + Duration::from_millis(l));
        if let Some(Decision { to: Some(i), .. }) = decide(&policy, &views, current, last, now) {
            prop_assert!(!matches!(judge(&policy.sla, &views[i].stats), SlaState::Violated(_)));
        }
    }

    /// Leaving a bad or lost path, the link takes one that meets the SLA whenever there is one.
    #[test]
    fn a_path_that_meets_the_sla_wins_over_bad_ones((policy, views, current, last, now, t0) in arb_case()) {
        let now = t0 + Duration::from_millis(now);
        let last = last.map(|l| t0 + Duration::from_millis(l));
        let cur_ok = current
            .filter(|&c| c < views.len() && allowed(&policy, &views[c]))
            .is_some_and(|c| !matches!(judge(&policy.sla, &views[c].stats), SlaState::Violated(_)));
        let any_met = views.iter().any(|v| allowed(&policy, v) && judge(&policy.sla, &v.stats) == SlaState::Met);
        if !cur_ok && any_met {
            let d = decide(&policy, &views, current, last, now);
            let to = d.and_then(|d| d.to).or(current.filter(|&c| c < views.len()));
            prop_assert!(to.is_some_and(|i| judge(&policy.sla, &views[i].stats) == SlaState::Met), "{d:?}");
        }
    }

    /// A failback happens only a hold-down after the last switch, to a path that met the SLA
    /// for the whole hold-down; a healthy path of the preferred kind is never left.
    #[test]
    fn failback_waits_for_the_hold_down((policy, views, current, last, now, t0) in arb_case()) {
        let now = t0 + Duration::from_millis(now);
        let last = last.map(|l| t0 + Duration::from_millis(l));
        let d = decide(&policy, &views, current, last, now);
        if let Some(Decision { to: Some(i), reason: SwitchReason::Failback }) = d {
            let last = last.expect("a failback follows a switch");
            prop_assert!(now.saturating_duration_since(last) >= policy.hold_down);
            let since = views[i].met_since.expect("met");
            prop_assert!(now.saturating_duration_since(since) >= policy.hold_down);
            prop_assert!(policy.prefers(views[i].kind));
        }
        if let Some(c) = current.filter(|&c| c < views.len() && allowed(&policy, &views[c]))
            && policy.prefers(views[c].kind)
            && judge(&policy.sla, &views[c].stats) == SlaState::Met
        {
            prop_assert_eq!(d, None, "a healthy preferred path is kept");
        }
    }

    /// A direct path that flips between good and bad faster than the hold-down causes one
    /// switch away from it and none back, however long it goes on.
    #[test]
    fn an_oscillating_path_switches_at_most_once_per_hold_down(
        flips in prop::collection::vec(1u64..80, 1..40),
        hold in 2u64..30,
    ) {
        let t0 = Instant::now();
        let policy = Policy {
            prefer: Prefer::Direct,
            hold_down: Duration::from_secs(hold),
            ..Policy::default().with_settings("max-loss=5%").unwrap()
        };
        let good = stats(5, 0, 1);
        let bad = stats(5, 300, 1);
        let mut direct = PathView { kind: PathKind::Direct, up: true, stats: good, met_since: Some(t0) };
        let relay = PathView { kind: PathKind::Relay, up: true, stats: stats(40, 0, 2), met_since: Some(t0) };
        let (mut current, mut last, mut switches) = (Some(0usize), Some(t0), 0u64);
        let mut now = t0;
        let mut healthy = true;
        for &tenths in &flips {
            // Each phase lasts a few hundred ms to a few s, judged every 100 ms.
            healthy = !healthy;
            for _ in 0..tenths {
                now += Duration::from_millis(100);
                direct.stats = if healthy { good } else { bad };
                direct.met_since = if healthy { direct.met_since.or(Some(now)) } else { None };
                if let Some(d) = decide(&policy, &[direct, relay], current, last, now) {
                    current = d.to;
                    last = Some(now);
                    switches += 1;
                }
            }
        }
        let elapsed = now - t0;
        prop_assert!(switches <= 1 + 2 * (elapsed.as_secs() / hold), "{switches} in {elapsed:?}");
        if flips.iter().all(|&t| t * 100 < hold * 1000) {
            prop_assert!(switches <= 1, "never healthy for a hold-down: {switches}");
        }
    }

    /// The same inputs give the same decision.
    #[test]
    fn the_decision_is_a_pure_function((policy, views, current, last, now, t0) in arb_case()) {
        let now = t0 + Duration::from_millis(now);
        let last = last.map(|l| t0 + Duration::from_millis(l));
        prop_assert_eq!(
            decide(&policy, &views, current, last, now),
            decide(&policy, &views, current, last, now)
        );
    }

    /// A policy written out reads back as itself.
    #[test]
    fn a_policy_round_trips_through_its_text(policy in arb_policy(), hops in 1u8..=8) {
        let policy = Policy { hops, hold_down: Duration::from_millis(policy.hold_down.as_millis() as u64), ..policy };
        let text = policy.to_string();
        prop_assert_eq!(Policy::default().with_settings(&text), Ok(policy), "{}", text);
    }

    /// Any text either parses or names what is wrong; it never panics.
    #[test]
    fn any_policy_text_parses_or_is_refused(text in "[a-z=%.,0-9 -]{0,40}") {
        let _ = Policy::default().with_settings(&text);
    }

    /// Loss in the window is the share of probes lost among those answered or lost, and the
    /// probes still in flight count as neither.
    #[test]
    fn the_window_counts_what_was_lost(answers in prop::collection::vec(any::<bool>(), 1..60)) {
        let t0 = Instant::now();
        let mut w = ProbeWindow::default();
        for (i, &answered) in answers.iter().enumerate() {
            let at = t0 + Duration::from_millis(100 * i as u64);
            w.sent(i as u64, at);
            if answered {
                prop_assert!(w.answered(i as u64, at + Duration::from_millis(5)).is_some());
                prop_assert!(w.answered(i as u64, at + Duration::from_millis(6)).is_none(), "an answer counts once");
            }
        }
        let now = t0 + Duration::from_millis(100 * answers.len() as u64 + 1000);
        let s = w.stats(now);
        let kept = &answers[answers.len().saturating_sub(vx6_core::policy::WINDOW)..];
        let lost = kept.iter().filter(|a| !**a).count();
        prop_assert_eq!(usize::from(s.samples), kept.len());
        prop_assert_eq!(usize::from(s.loss_permille), lost * 1000 / kept.len());
        prop_assert_eq!(s.rtt.is_some(), lost < kept.len());
    }
}

#[test]
fn bad_settings_name_the_setting() {
    let err = |t: &str| Policy::default().with_settings(t).unwrap_err().to_string();
    assert!(err("max-rtt=fast").contains("max-rtt"));
    assert!(err("max-loss=120%").contains("max-loss"));
    assert!(err("max-loss=5").contains("max-loss"));
    assert!(err("hops=0").contains("hops"));
    assert!(err("via=tor").contains("via"));
    assert!(err("colour=blue").contains("colour"));
    assert!(err("hold-down=10s,,strict").contains("empty"));
    let p = Policy::default()
        .with_settings("via=direct,max-rtt=150ms,max-loss=0.5%,max-jitter=30ms,hold-down=8s,strict")
        .unwrap();
    assert_eq!(p.prefer, Prefer::Direct);
    assert_eq!(p.sla.max_loss_permille, Some(5));
    assert_eq!(p.hold_down, Duration::from_secs(8));
    assert_eq!(p.on_violation, OnViolation::Strict);
}

#[test]
fn too_few_samples_judge_nothing_and_all_lost_is_a_violation() {
    let sla = Policy::default().with_settings("max-rtt=50ms").unwrap().sla;
    let few = PathStats {
        samples: 2,
        ..stats(500, 0, 0)
    };
    assert_eq!(judge(&sla, &few), SlaState::Unknown);
    let dead = PathStats {
        rtt: None,
        jitter: None,
        loss_permille: 1000,
        samples: 10,
    };
    assert!(matches!(judge(&sla, &dead), SlaState::Violated(_)));
    assert_eq!(judge(&sla, &stats(20, 0, 0)), SlaState::Met);
}

#[test]
fn best_of_bad_never_moves_onto_a_path_that_answers_nothing() {
    let now = Instant::now();
    let policy = Policy::default()
        .with_settings("via=direct,max-rtt=50ms")
        .unwrap();
    let slow_relay = PathView {
        kind: PathKind::Relay,
        up: true,
        stats: stats(200, 0, 1),
        met_since: None,
    };
    let silent_direct = PathView {
        kind: PathKind::Direct,
        up: true,
        stats: PathStats {
            rtt: None,
            jitter: None,
            loss_permille: 1000,
            samples: 10,
        },
        met_since: None,
    };
    assert_eq!(
        decide(
            &policy,
            &[slow_relay, silent_direct],
            Some(0),
            Some(now),
            now
        ),
        None,
        "the slow path that answers is the least bad"
    );
}

/// The current path lost everything (the greatest badness there is) and another is merely
/// slow: best-of-bad moves to the slow one (the comparison once overflowed here and panicked,
/// found when a NAT restart broke a punched path in `hole_punching.rs`).
#[test]
fn best_of_bad_leaves_a_path_that_lost_everything() {
    let now = Instant::now();
    let policy = Policy::default()
        .with_settings("via=direct,max-rtt=50ms,max-loss=5%")
        .unwrap();
    let slow_relay = PathView {
        kind: PathKind::Relay,
        up: true,
        stats: stats(200, 0, 1),
        met_since: None,
    };
    let dead_direct = PathView {
        kind: PathKind::Direct,
        up: true,
        stats: PathStats {
            rtt: Some(Duration::from_millis(1)),
            jitter: Some(Duration::from_millis(1)),
            loss_permille: 1000,
            samples: 20,
        },
        met_since: None,
    };
    let d = decide(&policy, &[slow_relay, dead_direct], Some(1), Some(now), now);
    assert_eq!(d.and_then(|d| d.to), Some(0), "{d:?}");
}
