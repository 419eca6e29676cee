//! DHT storage, answers and peer sync against forged, stale, misfiled and flooding input; and
//! alias records, stored and served beside signed records and checked like them (forged,
//! expired, too early, replayed, misfiled), bounded, and found by a value lookup.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use vx6_core::alias::{
    AliasDescriptor, AliasKey, AliasPublication, AliasRecord, BlindedKey, IntroPoint, Period,
};
use vx6_core::dht::{AliasStoreError, Contact, Dht, DhtConfig, Purpose, Request, Response};
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

// ---- alias records ----

fn record(alias: &AliasKey, period: Period, seq: u64, expires_at: u64) -> AliasRecord {
    let relay = Identity::from_secret_bytes(&[77; 32]);
    AliasRecord::seal(
        alias,
        &AliasPublication {
            period,
            seq,
            expires_at,
            descriptor: &AliasDescriptor {
                intro: vec![IntroPoint {
                    relay: relay.node_id(),
                    key: relay.public_key().to_bytes(),
                    addr: "[fd00::77]:4433".parse().unwrap(),
                }],
            },
            clients: &[],
        },
        &mut ChaCha20Rng::seed_from_u64(seq),
    )
    .unwrap()
}

fn now_record(alias: &AliasKey, seq: u64) -> AliasRecord {
    record(alias, Period::containing(UNIX), seq, UNIX + 3600)
}

fn find(dht: &mut Dht, key: NodeId) -> Vec<Vec<u8>> {
    match dht.handle_request(epoch(), UNIX, peer(9), Request::FindValue { key }) {
        Response::Value { records, .. } => records,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stored_alias_record_is_served_under_its_blinded_key_only() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let alias = AliasKey::from_secret_bytes(&[2; 32]);
    let r = now_record(&alias, 1);
    assert_eq!(store(&mut dht, vec![r.as_bytes().to_vec()]), (1, 0));
    assert_eq!(dht.aliases().len(), 1);
    let key = BlindedKey::of(&alias.address(), Period::containing(UNIX)).dht_key();
    assert_eq!(find(&mut dht, key), vec![r.as_bytes().to_vec()]);
    // Not under the alias key's own id, nor under next period's key.
    assert!(find(&mut dht, alias.address().public_key().node_id()).is_empty());
    let next = BlindedKey::of(&alias.address(), Period(Period::containing(UNIX).0 + 1));
    assert!(find(&mut dht, next.dht_key()).is_empty());
}

#[test]
fn forged_expired_early_replayed_and_equivocating_records_are_refused() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let alias = AliasKey::from_secret_bytes(&[3; 32]);
    let good = now_record(&alias, 5);
    assert_eq!(store(&mut dht, vec![good.as_bytes().to_vec()]), (1, 0));
    let mut forged = good.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let period = Period::containing(UNIX);
    let expired = record(&alias, period, 6, UNIX - 1);
    let early = record(
        &alias,
        Period(period.0 + 2),
        7,
        Period(period.0 + 2).start() + 60,
    );
    let replayed = now_record(&alias, 4);
    let twin = record(&alias, period, 5, UNIX + 1800);
    let (accepted, rejected) = store(
        &mut dht,
        vec![
            forged,
            expired.as_bytes().to_vec(),
            early.as_bytes().to_vec(),
            replayed.as_bytes().to_vec(),
            twin.as_bytes().to_vec(),
        ],
    );
    assert_eq!((accepted, rejected), (0, 5));
    // The good one is still what is served; a newer one replaces it.
    let key = good.dht_key();
    assert_eq!(find(&mut dht, key), vec![good.as_bytes().to_vec()]);
    let newer = now_record(&alias, 8);
    assert_eq!(store(&mut dht, vec![newer.as_bytes().to_vec()]), (1, 0));
    assert_eq!(find(&mut dht, key), vec![newer.as_bytes().to_vec()]);
    // Next period's record is taken in the last hours of this one, not sooner.
    let ahead = record(
        &alias,
        Period(period.0 + 1),
        1,
        Period(period.0 + 1).start() + 60,
    );
    assert_eq!(store(&mut dht, vec![ahead.as_bytes().to_vec()]), (0, 1));
    let late = period.end() - 1800;
    let stored = dht.handle_request(
        epoch(),
        late,
        peer(9),
        Request::Store {
            records: vec![ahead.as_bytes().to_vec()],
        },
    );
    assert_eq!(
        stored,
        Response::Stored {
            accepted: 1,
            rejected: 0
        }
    );
    // A record that claims to hold for longer than records may is refused.
    let long = record(&alias, period, 9, period.end());
    assert_eq!(store(&mut dht, vec![long.as_bytes().to_vec()]), (0, 1));
}

#[test]
fn a_flood_of_alias_records_hits_the_bound_and_evicts_nothing_live() {
    let mut dht = Dht::new(
        NodeId::from_bytes([1; 32]),
        DhtConfig {
            max_alias_records: 8,
            ..DhtConfig::default()
        },
    );
    let honest = now_record(&AliasKey::from_secret_bytes(&[200; 32]), 1);
    assert_eq!(store(&mut dht, vec![honest.as_bytes().to_vec()]), (1, 0));
    let mut accepted = 0;
    for k in 0..40u8 {
        let flood = now_record(&AliasKey::from_secret_bytes(&[k; 32]), 1);
        accepted += store(&mut dht, vec![flood.as_bytes().to_vec()]).0;
    }
    assert_eq!(accepted, 7);
    assert_eq!(dht.aliases().len(), 8);
    assert_eq!(
        find(&mut dht, honest.dht_key()),
        vec![honest.as_bytes().to_vec()]
    );
    // Expired records make room; the store itself says why it refuses.
    let mut store_direct = vx6_core::dht::AliasStore::new(1, 1);
    let short = record(
        &AliasKey::from_secret_bytes(&[50; 32]),
        Period::containing(UNIX),
        1,
        UNIX + 10,
    );
    let local = vx6_core::dht::AliasSource::Local;
    store_direct.insert(short, UNIX, local).unwrap();
    let other = now_record(&AliasKey::from_secret_bytes(&[51; 32]), 1);
    assert_eq!(
        store_direct.insert(other.clone(), UNIX + 5, local),
        Err(AliasStoreError::Full(1))
    );
    assert_eq!(store_direct.insert(other, UNIX + 11, local), Ok(()));
}

#[test]
fn one_source_fills_only_its_share() {
    let mut dht = Dht::new(
        NodeId::from_bytes([1; 32]),
        DhtConfig {
            max_alias_records: 100,
            max_alias_records_per_source: 4,
            ..DhtConfig::default()
        },
    );
    let mut accepted = 0;
    for k in 0..10u8 {
        let flood = now_record(&AliasKey::from_secret_bytes(&[k; 32]), 1);
        accepted += store(&mut dht, vec![flood.as_bytes().to_vec()]).0;
    }
    assert_eq!(accepted, 4);
    // Another peer still stores.
    let honest = now_record(&AliasKey::from_secret_bytes(&[200; 32]), 1);
    let stored = dht.handle_request(
        epoch(),
        UNIX,
        peer(10),
        Request::Store {
            records: vec![honest.as_bytes().to_vec()],
        },
    );
    assert_eq!(
        stored,
        Response::Stored {
            accepted: 1,
            rejected: 0
        }
    );
}

#[test]
fn a_value_lookup_returns_the_alias_record_and_blames_a_misfiled_one() {
    let local = NodeId::from_bytes([1; 32]);
    let mut dht = Dht::new(local, DhtConfig::default());
    let now = epoch();
    dht.add_contact(peer(2), now);
    dht.add_contact(peer(3), now);
    let alias = AliasKey::from_secret_bytes(&[4; 32]);
    let r = now_record(&alias, 1);
    let id = dht.start(now, r.dht_key(), Purpose::FindValue).unwrap();
    let mut asked = Vec::new();
    while let Some(out) = dht.poll_outgoing() {
        asked.push(out);
    }
    assert_eq!(asked.len(), 2);
    // One peer answers with another alias's record under this key: a lie.
    let misfiled = now_record(&AliasKey::from_secret_bytes(&[5; 32]), 1);
    dht.handle_response(
        now,
        UNIX,
        asked[0].to,
        asked[0].txid,
        Response::Value {
            records: vec![misfiled.as_bytes().to_vec()],
            closer: vec![],
        },
    );
    dht.handle_response(
        now,
        UNIX,
        asked[1].to,
        asked[1].txid,
        Response::Value {
            records: vec![r.as_bytes().to_vec()],
            closer: vec![],
        },
    );
    let result = dht.poll_result().unwrap();
    assert_eq!(result.id, id);
    assert_eq!(
        result.alias.as_ref().map(|a| a.as_bytes()),
        Some(r.as_bytes())
    );
    assert!(result.records.is_empty());
    assert_eq!(dht.stats().bad_answers, 1);
    assert_eq!(dht.stats().lookups_found, 1);
    // What was found is held, and this node now answers for it.
    assert_eq!(find(&mut dht, r.dht_key()), vec![r.as_bytes().to_vec()]);
}

#[test]
fn an_answer_out_of_date_by_this_nodes_clock_is_not_a_lie() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    let now = epoch();
    dht.add_contact(peer(2), now);
    let alias = AliasKey::from_secret_bytes(&[4; 32]);
    let stale = record(&alias, Period::containing(UNIX), 1, UNIX - 1);
    dht.start(now, stale.dht_key(), Purpose::FindValue).unwrap();
    let out = dht.poll_outgoing().unwrap();
    dht.handle_response(
        now,
        UNIX,
        out.to,
        out.txid,
        Response::Value {
            records: vec![stale.as_bytes().to_vec()],
            closer: vec![],
        },
    );
    assert_eq!(dht.stats().bad_answers, 0);
    // Not dropped from the routing table: asked again on the retry over disjoint paths.
    let again = dht.poll_outgoing().expect("the peer is asked again");
    assert_eq!(again.to, peer(2));
}
