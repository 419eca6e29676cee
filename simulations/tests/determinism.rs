//! The same seed gives the same run, message for message; another seed gives another run.

use vx6_simulations::scenario::{Params, run_churn, run_lookups};

fn small(seed: u64) -> Params {
    Params {
        lookups: 60,
        publishers: 10,
        ..Params::new(300, seed)
    }
}

#[test]
fn same_seed_same_trace() {
    let a = run_lookups("a", &small(7));
    let b = run_lookups("b", &small(7));
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.events, b.events);
    let c = run_lookups("c", &small(8));
    assert_ne!(a.trace, c.trace);
}

#[test]
fn adversaries_and_churn_are_deterministic_too() {
    let p = Params {
        adversaries: 0.2,
        paths: 3,
        ..small(9)
    };
    assert_eq!(run_lookups("x", &p).trace, run_lookups("y", &p).trace);
    let p = Params {
        churn: 0.1,
        ..small(10)
    };
    assert_eq!(run_churn("x", &p, 3).trace, run_churn("y", &p, 3).trace);
}

#[test]
fn small_network_meets_the_basics() {
    let o = run_lookups("basics", &small(11));
    let nodes = o.node_lookups.unwrap();
    assert!(
        nodes.success() >= 0.99,
        "node lookups {:.3}",
        nodes.success()
    );
    let values = o.value_lookups.unwrap();
    assert!(
        values.success() >= 0.99,
        "resolution {:.3}",
        values.success()
    );
}
