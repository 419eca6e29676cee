//! Lookups against static networks: they find the k closest, and keep failed nodes out.

use std::net::SocketAddr;

use proptest::prelude::*;
use vx6_core::NodeId;
use vx6_core::dht::routing_table::{RoutingConfig, RoutingTable};
use vx6_core::dht::{Contact, Distance, Lookup, LookupConfig};

#[allow(clippy::disallowed_methods)] // a fixed epoch for table timestamps
fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}

/// A static network where every node's table was filled from every other node (subject to
/// the table's own bounds); lookups run synchronously against it.
fn network(ids: &[[u8; 32]]) -> Vec<RoutingTable> {
    let now = epoch();
    let contacts: Vec<Contact> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Contact {
            id: NodeId::from_bytes(*id),
            addr: SocketAddr::from((
                [
                    0xfd,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    (i >> 8) as u8,
                    i as u8,
                ],
                1,
            )),
        })
        .collect();
    contacts
        .iter()
        .map(|me| {
            let mut t = RoutingTable::new(me.id, RoutingConfig::default());
            for c in &contacts {
                t.insert(*c, now);
            }
            t
        })
        .collect()
}

fn run(tables: &[RoutingTable], from: usize, target: NodeId, paths: usize) -> Vec<Contact> {
    let config = LookupConfig {
        paths,
        ..LookupConfig::default()
    };
    let seeds = tables[from].closest(&target, config.k);
    let mut l = Lookup::new(tables[from].local(), target, &seeds, config);
    let by_id = |id: &NodeId| tables.iter().find(|t| t.local() == *id);
    for _ in 0..10_000 {
        let Some(c) = l.next_query() else {
            if l.is_done() {
                break;
            }
            continue;
        };
        let answer = by_id(&c.id)
            .map(|t| t.closest(&target, config.k))
            .unwrap_or_default();
        l.on_answer(&c.id, &answer);
    }
    assert!(l.is_done());
    l.closest()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn static_network_lookups_find_the_k_closest(
        ids in proptest::collection::btree_set(any::<[u8; 32]>(), 30..160),
        target in any::<[u8; 32]>(),
        from in any::<prop::sample::Index>(),
        paths in 1usize..4,
    ) {
        let ids: Vec<_> = ids.into_iter().collect();
        let tables = network(&ids);
        let from = from.index(ids.len());
        let target = NodeId::from_bytes(target);
        let got: Vec<NodeId> = run(&tables, from, target, paths).iter().map(|c| c.id).collect();
        let mut want: Vec<NodeId> = ids
            .iter()
            .map(|i| NodeId::from_bytes(*i))
            .filter(|id| *id != tables[from].local())
            .collect();
        want.sort_by_key(|id| Distance::between(id, &target));
        want.truncate(20);
        if paths == 1 {
            prop_assert_eq!(got, want);
        } else {
            // Disjoint paths each find their own neighbourhood; together they still hold
            // the closest node.
            prop_assert_eq!(got.first(), want.first());
        }
    }
}

#[test]
fn failures_and_blame_keep_nodes_out_of_the_result() {
    let ids: Vec<[u8; 32]> = (0..50u8).map(|i| [i.wrapping_mul(37); 32]).collect();
    let tables = network(&ids);
    let target = NodeId::from_bytes([200; 32]);
    let seeds = tables[0].closest(&target, 20);
    let mut l = Lookup::new(tables[0].local(), target, &seeds, LookupConfig::default());
    let mut failed = Vec::new();
    while !l.is_done() {
        let Some(c) = l.next_query() else { continue };
        if failed.len() < 3 {
            failed.push(c.id);
            l.on_failure(&c.id);
        } else {
            l.on_answer(&c.id, &[]);
        }
    }
    assert!(l.closest().iter().all(|c| !failed.contains(&c.id)));
}

#[test]
fn a_lookup_with_one_seed_still_uses_every_path() {
    // A joining node knows one peer: its answer is shared out, so the paths are disjoint from
    // the first hop rather than one path doing all the work.
    let contact = |b: u8| Contact {
        id: NodeId::from_bytes([b; 32]),
        addr: SocketAddr::from(([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b], 4433)),
    };
    let local = NodeId::from_bytes([0; 32]);
    let target = NodeId::from_bytes([255; 32]);
    let answer: Vec<Contact> = (10..19).map(contact).collect();
    let in_flight = |paths: usize| {
        let config = LookupConfig {
            paths,
            ..LookupConfig::default()
        };
        let mut l = Lookup::new(local, target, &[contact(1)], config);
        assert_eq!(l.next_query().map(|c| c.id), Some(contact(1).id));
        l.on_answer(&contact(1).id, &answer);
        std::iter::from_fn(|| l.next_query()).count()
    };
    assert_eq!(in_flight(1), 3);
    assert_eq!(in_flight(3), 9);
}

/// Every answer names 20 new, closer, made-up nodes: the lookup stops at its query budget, per
/// path, and ends with the nodes that answered.
#[test]
fn a_lookup_led_on_by_made_up_contacts_stops_at_its_budget() {
    let target = NodeId::from_bytes([0; 32]);
    let local = NodeId::from_bytes([0xff; 32]);
    let mut next = 0u32;
    // Each fake id is closer to the target than all before it.
    let mut fake = || {
        next += 1;
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&(u32::MAX - next).to_be_bytes());
        Contact {
            id: NodeId::from_bytes(id),
            addr: SocketAddr::from(([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 4433)),
        }
    };
    for paths in [1, 3] {
        let config = LookupConfig {
            paths,
            ..LookupConfig::default()
        };
        let seeds: Vec<Contact> = (0..3).map(|_| fake()).collect();
        let mut l = Lookup::new(local, target, &seeds, config);
        let mut sent = 0;
        while let Some(c) = l.next_query() {
            sent += 1;
            let answer: Vec<Contact> = (0..20).map(|_| fake()).collect();
            l.on_answer(&c.id, &answer);
            assert!(sent <= paths * config.max_queries, "{sent} queries");
        }
        assert!(l.is_done());
        assert_eq!(sent, paths * config.max_queries);
        assert_eq!(l.closest().len(), config.k);
    }
}
