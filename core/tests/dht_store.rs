//! DHT storage, answers and peer sync against forged, stale, misfiled and flooding input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vx6_core::dht::{Contact, Dht, DhtConfig, Purpose, Request, Response};
use vx6_core::record::{NameClaim, ServiceRecord};
use vx6_core::registry::RegistryLimits;
use vx6_core::{Identity, NodeId, Record, SignedRecord};

const UNIX: u64 = 1_800_000_000;

#[allow(clippy::disallowed_methods)] // a fixed epoch
fn epoch() -> Instant {
    Instant::now()
}

fn peer(b: u8) -> Contact {
    Contact {
        id: NodeId::from_bytes([b; 32]),
        addr: SocketAddr::from(([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b], 4433)),
    }
}

fn claim(id: &Identity, name: &str, seq: u64, expires_at: u64) -> SignedRecord {
    SignedRecord::sign(
        id,
        Record::NameClaim(NameClaim {
            seq,
            expires_at,
            username: name.parse().unwrap(),
        }),
    )
    .unwrap()
}

fn store(dht: &mut Dht, records: Vec<Vec<u8>>) -> (u16, u16) {
    match dht.handle_request(epoch(), UNIX, peer(9), Request::Store { records }) {
        Response::Stored { accepted, rejected } => (accepted, rejected),
        other => panic!("{other:?}"),
    }
}

#[test]
fn storage_rejects_forged_replayed_expired_and_future_records() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let alice = Identity::from_secret_bytes(&[3; 32]);
    let good = claim(&alice, "alice", 5, UNIX + 3600);
    assert_eq!(store(&mut dht, vec![good.as_bytes().to_vec()]), (1, 0));

    let mut forged = good.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let other_key = {
        // Alice's record with Mallory's key in the signer field.
        let mut b = good.as_bytes().to_vec();
        b[2..34].copy_from_slice(
            &Identity::from_secret_bytes(&[4; 32])
                .public_key()
                .to_bytes(),
        );
        b
    };
    let replayed = claim(&alice, "alice", 4, UNIX + 3600);
    let expired = claim(&alice, "alice", 6, UNIX - 1);
    let future = claim(&alice, "alice", 7, UNIX + 365 * 24 * 3600);
    let (accepted, rejected) = store(
        &mut dht,
        vec![
            forged,
            other_key,
            replayed.as_bytes().to_vec(),
            expired.as_bytes().to_vec(),
            future.as_bytes().to_vec(),
            b"garbage".to_vec(),
        ],
    );
    assert_eq!((accepted, rejected), (0, 6));
    // What is held is still the good record.
    let key = good.dht_key();
    let Response::Value { records, .. } =
        dht.handle_request(epoch(), UNIX, peer(9), Request::FindValue { key })
    else {
        panic!()
    };
    assert_eq!(records, vec![good.as_bytes().to_vec()]);
}

#[test]
fn a_store_flood_hits_the_bounds_and_evicts_nothing() {
    let limits = RegistryLimits {
        max_claims: 50,
        max_claims_per_name: 4,
        ..RegistryLimits::default()
    };
    let mut dht = Dht::new(
        NodeId::from_bytes([1; 32]),
        DhtConfig {
            store: limits,
            ..DhtConfig::default()
        },
    );
    let victim = claim(
        &Identity::from_secret_bytes(&[200; 32]),
        "victim",
        1,
        UNIX + 60,
    );
    assert_eq!(store(&mut dht, vec![victim.as_bytes().to_vec()]), (1, 0));
    // Many keys each claim "victim" and many other names.
    let mut accepted_total = 0;
    for k in 0..100u8 {
        let id = Identity::from_secret_bytes(&[k; 32]);
        let batch = vec![
            claim(&id, "victim", 1, UNIX + 60).as_bytes().to_vec(),
            claim(&id, &format!("n{k}"), 1, UNIX + 60)
                .as_bytes()
                .to_vec(),
        ];
        accepted_total += store(&mut dht, batch).0;
    }
    assert!(dht.store().len() <= 50, "{}", dht.store().len());
    assert!(accepted_total <= 49);
    let held: Vec<_> = dht.store().claims_for(&"victim".parse().unwrap()).collect();
    assert!(held.len() <= 4);
    assert!(
        held.iter().any(|r| r.as_bytes() == victim.as_bytes()),
        "the first claim was evicted"
    );
}

#[test]
fn answers_with_misfiled_or_forged_records_are_not_believed() {
    let local = NodeId::from_bytes([1; 32]);
    let mut dht = Dht::new(local, DhtConfig::default());
    let now = epoch();
    dht.add_contact(peer(2), now);
    let key = vx6_core::record::name_key(&"alice".parse().unwrap());
    let id = dht.start(now, key, Purpose::FindValue).unwrap();
    let out = dht.poll_outgoing().unwrap();
    // A valid claim, but for another name: it does not belong under this key.
    let wrong = claim(
        &Identity::from_secret_bytes(&[5; 32]),
        "mallory",
        1,
        UNIX + 60,
    );
    dht.handle_response(
        now,
        UNIX,
        out.to,
        out.txid,
        Response::Value {
            records: vec![wrong.as_bytes().to_vec()],
            closer: vec![],
        },
    );
    let result = dht.poll_result().unwrap();
    assert_eq!(result.id, id);
    assert!(result.records.is_empty());
    assert_eq!(dht.stats().bad_answers, 1);
}

#[test]
fn answers_from_the_wrong_peer_are_ignored() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let now = epoch();
    dht.add_contact(peer(2), now);
    dht.start(now, NodeId::from_bytes([7; 32]), Purpose::FindNode)
        .unwrap();
    let out = dht.poll_outgoing().unwrap();
    dht.handle_response(
        now,
        UNIX,
        peer(3),
        out.txid,
        Response::Nodes { closer: vec![] },
    );
    assert!(
        dht.poll_result().is_none(),
        "a spoofed answer finished the lookup"
    );
    dht.handle_timeout(now + Duration::from_secs(3));
    assert!(dht.poll_result().is_some());
}

#[test]
fn sync_exchanges_what_each_side_lacks_and_rejects_forgeries() {
    let now = epoch();
    let mut a = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let mut b = Dht::new(NodeId::from_bytes([2; 32]), DhtConfig::default());
    let alice = Identity::from_secret_bytes(&[3; 32]);
    let old = claim(&alice, "alice", 1, UNIX + 600);
    let new = claim(&alice, "alice", 2, UNIX + 600);
    let svc = SignedRecord::sign(
        &alice,
        Record::Service(ServiceRecord {
            seq: 1,
            expires_at: UNIX + 600,
            service: "ssh".parse().unwrap(),
        }),
    )
    .unwrap();
    store(&mut a, vec![old.as_bytes().to_vec()]);
    store(
        &mut b,
        vec![new.as_bytes().to_vec(), svc.as_bytes().to_vec()],
    );
    a.start_sync(now, peer(2), 0);
    let out = a.poll_outgoing().unwrap();
    let Request::Sync { digest } = out.request else {
        panic!()
    };
    let answer = b.handle_request(now, UNIX, peer(1), Request::Sync { digest });
    a.handle_response(now, UNIX, peer(2), out.txid, answer);
    let held: Vec<_> = a.store().iter().map(|r| r.as_bytes().to_vec()).collect();
    assert!(held.contains(&new.as_bytes().to_vec()));
    assert!(held.contains(&svc.as_bytes().to_vec()));
    // A forged record inside a sync answer is refused.
    let mut c = Dht::new(NodeId::from_bytes([4; 32]), DhtConfig::default());
    c.start_sync(now, peer(2), 0);
    let out = c.poll_outgoing().unwrap();
    let mut forged = new.as_bytes().to_vec();
    forged[40] ^= 0xff;
    c.handle_response(
        now,
        UNIX,
        peer(2),
        out.txid,
        Response::Synced {
            records: vec![forged],
            want: vec![],
        },
    );
    assert!(c.store().is_empty());
    assert_eq!(c.stats().rejected, 1);
}

#[test]
fn a_value_lookup_that_finds_nothing_tries_again_over_disjoint_paths() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let now = epoch();
    for b in 2..8 {
        dht.add_contact(peer(b), now);
    }
    let key = vx6_core::record::name_key(&"alice".parse().unwrap());
    let id = dht.start(now, key, Purpose::FindValue).unwrap();
    let mut asked = 0;
    while let Some(out) = dht.poll_outgoing() {
        asked += 1;
        dht.handle_response(
            now,
            UNIX,
            out.to,
            out.txid,
            Response::Value {
                records: vec![],
                closer: vec![],
            },
        );
    }
    let result = dht.poll_result().unwrap();
    assert_eq!(result.id, id);
    assert!(result.records.is_empty());
    // Every peer was asked on the first, one-path attempt and again on the second.
    assert_eq!(asked, 12);
    assert_eq!(result.queries, 12);
}
