//! Path selection's rules, property by property, and its weighting.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use vx6_core::NodeId;
use vx6_core::relay::{Candidate, Constraints, Diversity, PassedOver, SelectError, select};

fn node(n: u16) -> NodeId {
    let mut b = [0u8; 32];
    b[..2].copy_from_slice(&n.to_be_bytes());
    NodeId::from_bytes(b)
}

/// A candidate in IPv6 /48 number `prefix` (or, above 1000, in IPv4 /16 `prefix - 1000`).
fn candidate(n: u16, prefix: u16, operator: Option<u8>) -> Candidate {
    let addr: SocketAddr = if prefix >= 1000 {
        let p = prefix - 1000;
        format!("10.{}.{}.{}:4433", p % 256, n % 256, 1 + n / 256)
    } else {
        format!("[fd6a:{prefix:x}::{n:x}]:4433")
    }
    .parse()
    .unwrap();
    Candidate {
        node: node(n),
        addr,
        operator: operator.map(|o| format!("op{o}").parse().unwrap()),
        successes: 10,
        failures: 0,
        uptime: Duration::from_secs(3600),
        rtt: Duration::from_millis(20),
        rtt_measured: true,
    }
}

fn prefix_of(c: &Candidate) -> String {
    match c.addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            format!("{}.{}", o[0], o[1])
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            format!("{:x}:{:x}:{:x}", s[0], s[1], s[2])
        }
    }
}

prop_compose! {
    fn candidates()(
        specs in prop::collection::vec(
            (0u16..12, prop::option::of(0u8..6), 0u32..20, 0u32..20, 1u64..300, any::<bool>()),
            0..40,
        )
    ) -> Vec<Candidate> {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (prefix, op, s, f, rtt, v4))| {
                // Some nodes listed twice, to exercise the duplicate rule.
                let n = (i % 30) as u16;
                let mut c = candidate(n, if v4 { 1000 + prefix } else { prefix }, op);
                c.successes = s;
                c.failures = f;
                c.rtt = Duration::from_millis(rtt);
                c
            })
            .collect()
    }
}

prop_compose! {
    fn constraints()(
        hops in 1usize..5,
        endpoints in prop::collection::vec(0u16..30, 0..3),
        exclude in prop::collection::btree_set(0u16..30, 0..4),
        min in 0u32..900,
        max_rtt in prop::option::of(50u64..400),
        exit in prop::collection::vec(0u16..30, 0..3),
    ) -> Constraints {
        Constraints {
            hops,
            endpoints: endpoints.into_iter().map(node).collect(),
            exclude: exclude.into_iter().map(node).collect(),
            min_success_permille: min,
            max_rtt: max_rtt.map(Duration::from_millis),
            exit_among: exit.into_iter().map(node).collect(),
        }
    }
}

proptest! {
    #[test]
    fn every_rule_holds(cands in candidates(), cons in constraints(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let by_node: BTreeMap<NodeId, &Candidate> =
            cands.iter().rev().map(|c| (c.node, c)).collect();
        match select(&cands, &cons, &mut rng) {
            Ok(sel) => {
                prop_assert_eq!(sel.path.len(), cons.hops);
                let on_path: BTreeSet<NodeId> = sel.path.iter().copied().collect();
                prop_assert_eq!(on_path.len(), cons.hops, "a node twice");
                if !cons.exit_among.is_empty() {
                    let last = sel.path.last().unwrap();
                    prop_assert!(cons.exit_among.contains(last), "the exit is not the owner's");
                }
                for n in &sel.path {
                    prop_assert!(!cons.endpoints.contains(n), "an endpoint relays");
                    prop_assert!(!cons.exclude.contains(n), "an excluded node relays");
                    let c = by_node[n];
                    if c.successes + c.failures > 0 {
                        let ratio = u64::from(c.successes) * 1000
                            / u64::from(c.successes + c.failures);
                        prop_assert!(ratio >= u64::from(cons.min_success_permille));
                    }
                    if let Some(max) = cons.max_rtt {
                        prop_assert!(c.rtt <= max);
                    }
                }
                // Diversity as claimed.
                let path: Vec<&Candidate> = sel.path.iter().map(|n| by_node[n]).collect();
                if sel.diversity <= Diversity::PrefixOnly {
                    let prefixes: BTreeSet<String> = path.iter().map(|c| prefix_of(c)).collect();
                    prop_assert_eq!(prefixes.len(), path.len(), "prefixes repeat");
                }
                if sel.diversity == Diversity::Full {
                    let ops: Vec<_> = path.iter().filter_map(|c| c.operator.clone()).collect();
                    let distinct: BTreeSet<_> = ops.iter().cloned().collect();
                    prop_assert_eq!(distinct.len(), ops.len(), "operators repeat");
                }
                // Every candidate entry is accounted for exactly once.
                prop_assert_eq!(sel.path.len() + sel.passed_over.len(), cands.len());
            }
            Err(SelectError::TooFew { hops, usable, .. }) => {
                prop_assert_eq!(hops, cons.hops);
                prop_assert!(usable < hops);
            }
            Err(SelectError::NoExit(n)) => {
                prop_assert_eq!(n, cons.exit_among.len());
                prop_assert!(n > 0);
                // Each of them is unusable: take it as the only exit and drop every rule it
                // could fail but the ones that made it unusable, and still no path.
                for e in &cons.exit_among {
                    // Only a node's first entry counts.
                    let usable = cands.iter().find(|c| c.node == *e).is_some_and(|c| {
                        !cons.endpoints.contains(e)
                            && !cons.exclude.contains(e)
                            && (c.successes + c.failures == 0
                                || u64::from(c.successes) * 1000
                                    / u64::from(c.successes + c.failures)
                                    >= u64::from(cons.min_success_permille))
                            && cons.max_rtt.is_none_or(|m| c.rtt <= m)
                    });
                    prop_assert!(!usable, "usable exit {} refused", e);
                }
            }
        }
    }

    /// With enough candidates in distinct prefixes under distinct operators, the path is
    /// always fully diverse, however many others crowd one prefix or one operator.
    #[test]
    fn diversity_holds_when_the_candidates_allow(
        hops in 1usize..5,
        crowd in 0usize..30,
        seed in any::<u64>(),
    ) {
        let mut cands: Vec<Candidate> = (0..crowd as u16)
            .map(|i| {
                let mut c = candidate(100 + i, 7, Some(1));
                // The crowd is healthier and faster, so a careless draw would pick it.
                c.rtt = Duration::from_millis(1);
                c.successes = 1000;
                c
            })
            .collect();
        cands.extend((0..hops as u16).map(|i| candidate(i, 20 + i, Some(10 + i as u8))));
        let cons = Constraints { hops, ..Constraints::default() };
        let sel = select(&cands, &cons, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        prop_assert_eq!(sel.diversity, Diversity::Full);
        let prefixes: BTreeSet<String> = sel
            .path
            .iter()
            .map(|n| prefix_of(cands.iter().find(|c| c.node == *n).unwrap()))
            .collect();
        prop_assert_eq!(prefixes.len(), hops);
    }

    #[test]
    fn the_same_seed_chooses_the_same_path(cands in candidates(), cons in constraints(), seed in any::<u64>()) {
        let a = select(&cands, &cons, &mut ChaCha8Rng::seed_from_u64(seed));
        let b = select(&cands, &cons, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(a, b);
    }
}

#[test]
fn reasons_name_the_rule() {
    let mut slow = candidate(4, 4, None);
    slow.rtt = Duration::from_millis(900);
    let mut sick = candidate(5, 5, None);
    sick.successes = 1;
    sick.failures = 9;
    let cands = vec![
        candidate(1, 1, Some(1)),
        candidate(2, 1, Some(2)),
        candidate(3, 3, Some(1)),
        slow,
        sick,
        candidate(6, 6, None),
        candidate(1, 1, Some(1)),
        candidate(7, 7, None),
    ];
    let cons = Constraints {
        hops: 2,
        endpoints: vec![node(6)],
        exclude: BTreeSet::from([node(7)]),
        max_rtt: Some(Duration::from_millis(500)),
        ..Constraints::default()
    };
    let sel = select(&cands, &cons, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let why: BTreeMap<NodeId, PassedOver> = sel.passed_over.iter().cloned().collect();
    assert_eq!(
        why[&node(4)],
        PassedOver::TooSlow(Duration::from_millis(900))
    );
    assert_eq!(why[&node(5)], PassedOver::Unhealthy(100));
    assert_eq!(why[&node(6)], PassedOver::Endpoint);
    assert_eq!(why[&node(7)], PassedOver::Excluded);
    assert!(
        sel.passed_over
            .iter()
            .any(|(n, r)| *n == node(1) && *r == PassedOver::Duplicate)
    );
    // Of nodes 1, 2 and 3, nodes 1 and 2 share a prefix and nodes 1 and 3 an operator: only
    // {2, 3} is fully diverse.
    assert_eq!(sel.diversity, Diversity::Full);
    let path: BTreeSet<NodeId> = sel.path.iter().copied().collect();
    assert_eq!(path, BTreeSet::from([node(2), node(3)]));
    assert_eq!(why[&node(1)], PassedOver::SamePrefix(node(2)));
}

#[test]
fn healthy_fast_relays_are_drawn_more_often_but_not_always() {
    let mut good = candidate(1, 1, None);
    good.rtt = Duration::from_millis(5);
    good.successes = 200;
    let mut fair = candidate(2, 2, None);
    fair.rtt = Duration::from_millis(80);
    fair.successes = 6;
    fair.failures = 4;
    let cands = vec![good, fair];
    let cons = Constraints {
        hops: 1,
        ..Constraints::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut wins = 0;
    for _ in 0..2000 {
        if select(&cands, &cons, &mut rng).unwrap().path == [node(1)] {
            wins += 1;
        }
    }
    assert!(
        wins > 1700 && wins < 2000,
        "the good relay won {wins} of 2000"
    );
}

#[test]
fn a_path_too_long_for_the_candidates_is_refused_with_counts() {
    let cands = vec![candidate(1, 1, None), candidate(2, 2, None)];
    let cons = Constraints {
        hops: 3,
        ..Constraints::default()
    };
    let err = select(&cands, &cons, &mut ChaCha8Rng::seed_from_u64(1)).unwrap_err();
    assert_eq!(
        err,
        SelectError::TooFew {
            hops: 3,
            usable: 2,
            candidates: 2
        }
    );
}
