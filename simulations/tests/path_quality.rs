//! Relay path selection in a simulated network: it keeps its rules on every trial, the same
//! seed gives the same report, and weighting toward fast relays beats choosing uniformly.

use vx6_simulations::path_quality::{PathParams, Strategy, run};

/// Small enough for a debug build (where `vx6-core` is not optimised).
fn small(seed: u64) -> PathParams {
    PathParams {
        trials: 400,
        candidates: 128,
        ..PathParams::new(3000, seed)
    }
}

#[test]
fn same_seed_same_report() {
    let a = run(&small(21));
    let b = run(&small(21));
    assert_eq!(a, b);
    let c = run(&small(22));
    assert_ne!(a.trace, c.trace);
}

#[test]
fn selection_keeps_its_rules_on_every_trial() {
    let r = run(&small(23));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.failed, 0);
    assert_eq!(r.trials, 400);
    // The model must exercise what is checked: unhealthy candidates, shared prefixes and
    // operators (so that diversity is not free), and trials where full diversity is possible.
    assert!(r.unhealthy_relays > 0);
    assert!(r.relay_prefixes < r.relays);
    assert!(r.operators > 0);
    assert!(r.full_possible > 0);
    let selected = r.get(Strategy::Selected);
    assert_eq!(selected.unhealthy, 0.0);
    assert_eq!(
        selected.full_diversity,
        r.full_possible as f64 / r.trials as f64,
        "select reaches full diversity exactly when the candidates allow it"
    );
    assert!(
        r.get(Strategy::UniformAny).unhealthy > 0.0,
        "uniform choice among all candidates should hit unhealthy relays"
    );
    // The optima bound every strategy from below, trial by trial.
    let best = &r.get(Strategy::BestAny).samples;
    let best_admissible = &r.get(Strategy::BestAdmissible).samples;
    for s in Strategy::ALL {
        for (t, x) in r.get(s).samples.iter().enumerate() {
            assert!(best[t] <= *x, "{s:?} beats the optimum on trial {t}");
        }
    }
    for s in [Strategy::Selected, Strategy::UniformAdmissible] {
        for (t, x) in r.get(s).samples.iter().enumerate() {
            assert!(
                best_admissible[t] <= *x,
                "{s:?} beats the admissible optimum on trial {t}"
            );
        }
    }
}

#[test]
fn weighted_selection_beats_uniform_choice() {
    let r = run(&small(24));
    let selected = r.get(Strategy::Selected);
    for s in [Strategy::UniformAdmissible, Strategy::UniformAny] {
        let other = r.get(s);
        assert!(
            selected.rtt.p50 <= other.rtt.p50,
            "median path RTT: select {:.1} ms, {s:?} {:.1} ms",
            selected.rtt.p50,
            other.rtt.p50
        );
        // `select` weights by the client's RTT: its first leg is where it must win.
        assert!(
            selected.legs[0] < other.legs[0],
            "mean first leg: select {:.1} ms, {s:?} {:.1} ms",
            selected.legs[0],
            other.legs[0]
        );
    }
}
