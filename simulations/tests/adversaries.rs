//! Colluding adversaries that answer every lookup with the adversaries closest to the target
//! (and hide every record) do not stop lookups over disjoint paths.

use vx6_simulations::scenario::{Params, run_lookups};

#[test]
fn disjoint_paths_beat_colluding_adversaries() {
    let p = Params {
        adversaries: 0.2,
        paths: 3,
        lookups: 200,
        publishers: 20,
        ..Params::new(1500, 3)
    };
    let o = run_lookups("colluding", &p);
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

#[test]
fn one_path_value_lookups_fall_back_to_disjoint_paths() {
    let p = Params {
        adversaries: 0.2,
        paths: 1,
        lookups: 200,
        publishers: 20,
        ..Params::new(1500, 4)
    };
    let values = run_lookups("one path", &p).value_lookups.unwrap();
    assert!(
        values.success() >= 0.99,
        "resolution {:.3}",
        values.success()
    );
}
