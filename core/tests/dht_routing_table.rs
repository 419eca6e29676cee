//! Routing-table invariants and policies.

use std::net::SocketAddr;
use std::time::Instant;

use proptest::prelude::*;
use vx6_core::NodeId;
use vx6_core::dht::contact::Contact;
use vx6_core::dht::distance::Distance;
use vx6_core::dht::routing_table::{Inserted, RoutingConfig, RoutingTable};
fn contact(id: [u8; 32], net: u8, host: u8) -> Contact {
    Contact {
        id: NodeId::from_bytes(id),
        addr: SocketAddr::from((
            [
                0x20, 0x01, 0x0d, 0xb8, 0, net, 0, 0, 0, 0, 0, 0, 0, 0, 0, host,
            ],
            4433,
        )),
    }
}

#[allow(clippy::disallowed_methods)] // a fixed epoch for table timestamps
fn epoch() -> Instant {
    Instant::now()
}

proptest! {
    #[test]
    fn invariants_hold_under_any_inserts_and_failures(
        ops in proptest::collection::vec((any::<[u8; 32]>(), 0u8..4, any::<u8>(), any::<bool>()), 0..400)
    ) {
        let now = epoch();
        let mut t = RoutingTable::new(NodeId::from_bytes([0; 32]), RoutingConfig { k: 4, max_per_subnet: 2, replacements: 2 });
        for (id, net, host, fail) in ops {
            let c = contact(id, net, host);
            if fail {
                t.record_failure(&c.id);
            } else {
                t.insert(c, now);
            }
            prop_assert!(t.check_invariants().is_ok(), "{:?}", t.check_invariants());
        }
    }

    #[test]
    fn closest_is_sorted_and_complete(ids in proptest::collection::btree_set(any::<[u8; 32]>(), 1..200), target in any::<[u8; 32]>()) {
        let now = epoch();
        let mut t = RoutingTable::new(NodeId::from_bytes([7; 32]), RoutingConfig { k: 1000, max_per_subnet: 1000, replacements: 0 });
        for (i, id) in ids.iter().enumerate() {
            t.insert(contact(*id, 0, i as u8), now);
        }
        let target = NodeId::from_bytes(target);
        let got = t.closest(&target, 20);
        let mut want: Vec<_> = t.contacts().copied().collect();
        want.sort_by_key(|c| Distance::between(&c.id, &target));
        want.truncate(20);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn closest_matches_a_full_scan_for_targets_near_and_far(
        ids in proptest::collection::vec(any::<[u8; 32]>(), 1..300),
        shared_bits in 0usize..24,
        noise in any::<[u8; 32]>(),
        n in 1usize..40,
    ) {
        let now = epoch();
        let local = [0x5a; 32];
        // Contacts spread over many buckets: each id keeps a random prefix of the local id.
        let mut t = RoutingTable::new(NodeId::from_bytes(local), RoutingConfig { k: 8, max_per_subnet: 1000, replacements: 0 });
        for (i, id) in ids.iter().enumerate() {
            let keep = (id[0] as usize) % 20;
            t.insert(contact(near(&local, id, keep), 0, i as u8), now);
        }
        let target = NodeId::from_bytes(near(&local, &noise, shared_bits));
        let got = t.closest(&target, n);
        let mut want: Vec<_> = t.contacts().copied().collect();
        want.sort_by_key(|c| Distance::between(&c.id, &target));
        want.truncate(n);
        prop_assert_eq!(got, want);
    }
}

/// `other` with its first `bits` bits taken from `base`.
fn near(base: &[u8; 32], other: &[u8; 32], bits: usize) -> [u8; 32] {
    let mut out = *other;
    for i in 0..bits {
        let mask = 0x80u8 >> (i % 8);
        out[i / 8] = (out[i / 8] & !mask) | (base[i / 8] & mask);
    }
    out
}

#[test]
fn full_bucket_keeps_live_nodes_and_replaces_stale_ones() {
    let now = epoch();
    let mut t = RoutingTable::new(
        NodeId::from_bytes([0; 32]),
        RoutingConfig {
            k: 2,
            max_per_subnet: 9,
            replacements: 2,
        },
    );
    // All in bucket 0 (first bit set).
    let a = contact([0x80; 32], 1, 1);
    let b = contact([0x81; 32], 1, 2);
    let c = contact([0x82; 32], 1, 3);
    assert_eq!(t.insert(a, now), Inserted::Added);
    assert_eq!(t.insert(b, now), Inserted::Added);
    assert_eq!(t.insert(c, now), Inserted::Cached);
    assert!(!t.contains(&c.id));
    t.record_failure(&a.id);
    t.record_failure(&a.id);
    assert!(!t.contains(&a.id), "stale head replaced from the cache");
    assert!(t.contains(&c.id));
    assert_eq!(t.len(), 2);
}

#[test]
fn subnet_limit_stops_one_network_filling_a_bucket() {
    let now = epoch();
    let mut t = RoutingTable::new(NodeId::from_bytes([0; 32]), RoutingConfig::default());
    let mut added = 0;
    for i in 0..10u8 {
        let mut id = [0x80; 32];
        id[31] = i;
        if t.insert(contact(id, 5, i), now) == Inserted::Added {
            added += 1;
        }
    }
    assert_eq!(added, 2);
}
