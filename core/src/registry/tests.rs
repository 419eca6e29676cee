//! Model-based property tests of the merge rules, bounds and file format.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::identity::Identity;
use crate::record::tests::identity;
use crate::record::{NameClaim, NodeRecord, ServiceRecord};

const NOW: u64 = 1_800_000_000;

fn limits() -> RegistryLimits {
    RegistryLimits::default()
}

/// One offered record, described compactly so proptest can shrink it.
#[derive(Debug, Clone)]
struct Offer {
    owner: u8,
    kind: u8,
    name: u8,
    seq: u64,
    /// Expiry relative to NOW; spans expired, valid and too-far-future.
    expires_delta: i64,
    /// Varies the content at the same seq (to provoke equivocation).
    variant: bool,
}

fn offer() -> impl Strategy<Value = Offer> {
    let window =
        (Freshness::default().max_lifetime_secs + Freshness::default().max_skew_secs) as i64;
    (
        0u8..3,
        0u8..3,
        0u8..3,
        0u64..6,
        prop_oneof![-100i64..=0, 1i64..=window, window + 1..window + 100],
        any::<bool>(),
    )
        .prop_map(|(owner, kind, name, seq, expires_delta, variant)| Offer {
            owner,
            kind,
            name,
            seq,
            expires_delta,
            variant,
        })
}

fn build(o: &Offer) -> SignedRecord {
    let expires_at = NOW.checked_add_signed(o.expires_delta).unwrap();
    let name = format!("n{}", o.name);
    let record = match o.kind {
        0 => Record::Node(NodeRecord {
            seq: o.seq,
            expires_at,
            addresses: vec![crate::record::NodeAddress {
                transport: crate::record::Transport::Quic,
                addr: format!("[fd00::{}]:4433", u8::from(o.variant))
                    .parse()
                    .unwrap(),
            }],
            relay: None,
            via: Vec::new(),
        }),
        1 => Record::Service(ServiceRecord {
            seq: o.seq,
            // The variant changes the expiry by a second: same key, same seq, other bytes.
            expires_at: expires_at - u64::from(o.variant),
            service: name.parse().unwrap(),
        }),
        _ => Record::NameClaim(NameClaim {
            seq: o.seq,
            expires_at: expires_at - u64::from(o.variant),
            username: name.parse().unwrap(),
        }),
    };
    SignedRecord::sign(&identity(o.owner + 10), record).unwrap()
}

/// The key a record is held under, for the model.
fn key(r: &SignedRecord) -> (u8, NodeId, String) {
    match r.record() {
        Record::Node(_) => (0, r.owner(), String::new()),
        Record::Service(s) => (1, r.owner(), s.service.to_string()),
        Record::NameClaim(c) => (2, r.owner(), c.username.to_string()),
    }
}

proptest! {
    #[test]
    fn merge_rules_match_the_model(offers in proptest::collection::vec(offer(), 1..40)) {
        let mut registry = Registry::new(limits());
        let mut model: BTreeMap<(u8, NodeId, String), Vec<u8>> = BTreeMap::new();
        for o in &offers {
            let rec = build(o);
            let before = registry.to_bytes();
            let result = registry.insert(rec.clone(), NOW);
            let fresh = limits().freshness.check(&rec, NOW).is_ok();
            let k = key(&rec);
            match model.get(&k).map(|b| SignedRecord::decode(b).unwrap()) {
                _ if !fresh => {
                    prop_assert!(matches!(result, Err(Rejected::Freshness(_))));
                }
                None => {
                    prop_assert_eq!(&result, &Ok(Inserted::New));
                    model.insert(k, rec.as_bytes().to_vec());
                }
                Some(held) if rec.record().seq() > held.record().seq() => {
                    prop_assert_eq!(&result, &Ok(Inserted::Replaced { previous_seq: held.record().seq() }));
                    model.insert(k, rec.as_bytes().to_vec());
                }
                Some(held) if rec.record().seq() < held.record().seq() => {
                    prop_assert!(matches!(result, Err(Rejected::OlderSeq { .. })), "{result:?}");
                }
                Some(held) if held.as_bytes() == rec.as_bytes() => {
                    prop_assert_eq!(&result, &Ok(Inserted::Unchanged));
                }
                Some(_) => {
                    prop_assert!(matches!(result, Err(Rejected::Equivocation { .. })), "{result:?}");
                }
            }
            if result.is_err() {
                prop_assert_eq!(registry.to_bytes(), before, "a rejected insert changed the registry");
            }
            let held: BTreeMap<_, _> = registry.iter().map(|r| (key(r), r.as_bytes().to_vec())).collect();
            prop_assert_eq!(&held, &model);
            prop_assert_eq!(registry.len(), model.len());
        }
    }

    #[test]
    fn snapshot_round_trips(offers in proptest::collection::vec(offer(), 0..30)) {
        let mut registry = Registry::new(limits());
        for o in &offers {
            let _ = registry.insert(build(o), NOW);
        }
        let bytes = registry.to_bytes();
        let (loaded, report) = Registry::from_bytes(&bytes, limits(), NOW).unwrap();
        prop_assert_eq!(report, LoadReport { loaded: registry.len(), expired: 0, invalid: 0 });
        prop_assert_eq!(loaded.to_bytes(), bytes);
    }

    #[test]
    fn any_bit_flip_in_a_snapshot_is_detected(
        offers in proptest::collection::vec(offer(), 1..10),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut registry = Registry::new(limits());
        for o in &offers {
            let _ = registry.insert(build(o), NOW);
        }
        let mut bytes = registry.to_bytes();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Registry::from_bytes(&bytes, limits(), NOW).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Registry::from_bytes(&bytes, limits(), NOW);
    }
}

fn service(id: &Identity, name: &str, seq: u64, expires_at: u64) -> SignedRecord {
    SignedRecord::sign(
        id,
        Record::Service(ServiceRecord {
            seq,
            expires_at,
            service: name.parse().unwrap(),
        }),
    )
    .unwrap()
}

fn claim(id: &Identity, name: &str, expires_at: u64) -> SignedRecord {
    SignedRecord::sign(
        id,
        Record::NameClaim(NameClaim {
            seq: 1,
            expires_at,
            username: name.parse().unwrap(),
        }),
    )
    .unwrap()
}

#[test]
fn owner_flood_hits_its_bound_and_evicts_nothing() {
    let limits = RegistryLimits {
        max_services_per_owner: 3,
        ..limits()
    };
    let mut registry = Registry::new(limits);
    let victim = identity(1);
    registry
        .insert(service(&victim, "ssh", 1, NOW + 60), NOW)
        .unwrap();
    let flooder = identity(2);
    let mut accepted = 0;
    for i in 0..50 {
        match registry.insert(service(&flooder, &format!("s{i}"), 1, NOW + 60), NOW) {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(
                e,
                Rejected::OwnerFull {
                    kind: RecordKind::Service,
                    limit: 3
                }
            ),
        }
    }
    assert_eq!(accepted, 3);
    assert!(
        registry
            .service(&victim.node_id(), &"ssh".parse().unwrap())
            .is_some()
    );
    // Updates to a held key are still allowed at the bound.
    assert_eq!(
        registry.insert(service(&flooder, "s0", 2, NOW + 60), NOW),
        Ok(Inserted::Replaced { previous_seq: 1 })
    );
}

#[test]
fn kind_bound_rejects_new_keys_until_records_expire() {
    let limits = RegistryLimits {
        max_claims: 2,
        ..limits()
    };
    let mut registry = Registry::new(limits);
    registry
        .insert(claim(&identity(1), "a", NOW + 10), NOW)
        .unwrap();
    registry
        .insert(claim(&identity(2), "b", NOW + 100), NOW)
        .unwrap();
    assert_eq!(
        registry.insert(claim(&identity(3), "c", NOW + 100), NOW),
        Err(Rejected::KindFull {
            kind: RecordKind::NameClaim,
            limit: 2
        })
    );
    assert_eq!(registry.remove_expired(NOW + 10), 1);
    assert_eq!(
        registry.insert(claim(&identity(3), "c", NOW + 100), NOW + 10),
        Ok(Inserted::New)
    );
    assert_eq!(registry.len(), 2);
}

#[test]
fn contested_name_lists_every_claimant() {
    let mut registry = Registry::new(limits());
    for seed in [1, 2, 3] {
        registry
            .insert(claim(&identity(seed), "alice", NOW + 60), NOW)
            .unwrap();
    }
    let owners: Vec<_> = registry
        .claims_for(&"alice".parse().unwrap())
        .map(SignedRecord::owner)
        .collect();
    assert_eq!(owners.len(), 3);
}

#[test]
fn load_drops_records_that_expired_on_disk() {
    let mut registry = Registry::new(limits());
    registry
        .insert(claim(&identity(1), "a", NOW + 10), NOW)
        .unwrap();
    registry
        .insert(claim(&identity(2), "b", NOW + 100), NOW)
        .unwrap();
    let (loaded, report) = Registry::from_bytes(&registry.to_bytes(), limits(), NOW + 50).unwrap();
    assert_eq!(
        report,
        LoadReport {
            loaded: 1,
            expired: 1,
            invalid: 0
        }
    );
    assert_eq!(loaded.len(), 1);
}

#[test]
fn load_errors_name_the_problem() {
    let good = Registry::new(limits()).to_bytes();
    let err = |b: &[u8]| {
        Registry::from_bytes(b, limits(), NOW)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(&good[..10]), "file is truncated (10 bytes)");
    assert_eq!(
        err(b"not a registry file at all, no no no no"),
        "not a VX6 registry file (bad magic)"
    );
    let mut v9 = good.clone();
    v9[4] = 9;
    assert!(err(&v9).contains("version 9 is not supported"));
    let mut flipped = good;
    flipped.push(0);
    assert_eq!(err(&flipped), "checksum mismatch");
}
