//! An alias record in a simulated network of 300 nodes: published by one node under its
//! blinded key, held by the nodes closest to that key, found from anywhere, readable only with
//! the address; and the same seed gives the same run.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use vx6_core::Identity;
use vx6_core::alias::{
    AliasDescriptor, AliasKey, AliasPublication, AliasRecord, AliasRecordError, IntroPoint, Period,
};
use vx6_core::dht::Purpose;
use vx6_simulations::net::{Net, UNIX_EPOCH_AT_START};
use vx6_simulations::scenario::{Params, bootstrap};

fn sealed(alias: &AliasKey, unix: u64) -> AliasRecord {
    let relay = Identity::from_secret_bytes(&[77; 32]);
    AliasRecord::seal(
        alias,
        &AliasPublication {
            period: Period::containing(unix),
            seq: 1,
            expires_at: unix + 3600,
            descriptor: &AliasDescriptor {
                intro: vec![IntroPoint {
                    relay: relay.node_id(),
                    key: relay.public_key().to_bytes(),
                    addr: "[fd00::77]:4433".parse().unwrap(),
                }],
            },
            clients: &[],
        },
        &mut ChaCha20Rng::seed_from_u64(1),
    )
    .unwrap()
}

/// Publishes from node 5, then looks the record up from `askers`; returns the network and what
/// each lookup found.
fn run(seed: u64, askers: &[u32]) -> (Net, AliasKey, Vec<Option<AliasRecord>>) {
    let mut net = bootstrap(&Params::new(300, seed));
    let alias = AliasKey::from_secret_bytes(&[9; 32]);
    let unix = UNIX_EPOCH_AT_START + net.now_us() / 1_000_000;
    let record = sealed(&alias, unix);
    let now = net.now();
    net.dht(5).publish_alias(now, unix, &record).unwrap();
    net.poke(5);
    net.run_to_idle();
    let stored = net.take_finished();
    assert!(
        stored
            .iter()
            .any(|f| f.node == 5 && f.result.stored_at >= 10)
    );
    let mut found = Vec::new();
    for &from in askers {
        let now = net.now();
        let id = net
            .dht(from)
            .start(now, record.dht_key(), Purpose::FindValue)
            .unwrap();
        net.poke(from);
        net.run_to_idle();
        let result = net
            .take_finished()
            .into_iter()
            .find(|f| f.node == from && f.result.id == id)
            .expect("the lookup finished");
        found.push(result.result.alias);
    }
    (net, alias, found)
}

#[test]
fn an_alias_record_is_found_from_anywhere_and_read_only_with_the_address() {
    let askers: Vec<u32> = (100..300).step_by(10).collect();
    let (net, alias, found) = run(21, &askers);
    let unix = UNIX_EPOCH_AT_START + net.now_us() / 1_000_000;
    for (from, record) in askers.iter().zip(&found) {
        let record = record
            .as_ref()
            .unwrap_or_else(|| panic!("node {from} found nothing"));
        assert_eq!(
            record
                .open(&alias.address(), None, unix)
                .unwrap()
                .intro
                .len(),
            1
        );
        let stranger = AliasKey::from_secret_bytes(&[10; 32]).address();
        assert_eq!(
            record.open(&stranger, None, unix),
            Err(AliasRecordError::WrongAlias)
        );
    }
    // Held by the publisher's k closest and the askers that cached it: nowhere near everyone.
    let holders = (0..300u32)
        .filter(|&i| !net.dht_ref(i).aliases().is_empty())
        .count();
    assert!((10..=60).contains(&holders), "{holders} nodes hold it");
}

#[test]
fn the_same_seed_gives_the_same_alias_run() {
    let (a, _, _) = run(22, &[150, 250]);
    let (b, _, _) = run(22, &[150, 250]);
    assert_eq!(a.trace_hash(), b.trace_hash());
    let (c, _, _) = run(23, &[150, 250]);
    assert_ne!(a.trace_hash(), c.trace_hash());
}
