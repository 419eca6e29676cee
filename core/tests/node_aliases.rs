//! Hidden aliases at the node, on the virtual network: an owner hosts an alias, a client that
//! knows only the address finds its introduction relays through the DHT, a client left off an
//! authorizing alias is refused by name, changed relays are republished at once, and records
//! are stored again on the hour, for the next period ahead of its start.

mod harness;

use std::time::Duration;

use harness::{Net, identity};
use vx6_core::alias::{AliasAddress, AliasDescriptor, AliasKey, IntroPoint, Period};
use vx6_core::node::Event;
use vx6_core::pins::Pins;
use vx6_core::service::ServiceTable;
use vx6_core::{Cause, Failure};

const OWNER: usize = 1;

fn intro(seed: u8) -> IntroPoint {
    let relay = identity(seed);
    IntroPoint {
        relay: relay.node_id(),
        key: relay.public_key().to_bytes(),
        addr: format!("[fd00::{seed}]:4433").parse().unwrap(),
    }
}

fn descriptor(seeds: &[u8]) -> AliasDescriptor {
    AliasDescriptor {
        intro: seeds.iter().copied().map(intro).collect(),
    }
}

/// Eight nodes, each entering through the one before.
fn network(seed: u64) -> Net {
    let mut net = Net::new(seed);
    for i in 0..8u8 {
        net.add_host(identity(60 + i), ServiceTable::new(false), Pins::default());
    }
    for i in 1..8 {
        let via = net.hosts[i - 1].addr;
        net.hosts[i].node.bootstrap(&[via]);
    }
    net.run_until(Duration::from_secs(5), |_| false);
    net
}

fn lookup(net: &mut Net, client: usize, address: AliasAddress) -> Result<AliasDescriptor, Failure> {
    let now = net.now;
    let id = net.hosts[client].node.lookup_alias(now, address);
    let found = |n: &Net| {
        n.hosts[client].log.iter().find_map(|e| match e {
            Event::AliasFound { id: i, result, .. } if *i == id => Some(result.clone()),
            _ => None,
        })
    };
    assert!(net.run_until(Duration::from_secs(20), |n| found(n).is_some()));
    found(net).unwrap()
}

fn published(net: &Net, address: AliasAddress) -> Vec<(u64, u32)> {
    net.hosts[OWNER]
        .log
        .iter()
        .filter_map(|e| match e {
            Event::AliasPublished {
                address: a,
                period,
                stored_at,
            } if *a == address => Some((*period, *stored_at)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_with_the_address_finds_the_introduction_relays() {
    let mut net = network(71);
    let key = AliasKey::from_secret_bytes(&[5; 32]);
    let now = net.now;
    let address = net.hosts[OWNER]
        .node
        .host_alias(now, key, descriptor(&[91, 92, 93]), vec![])
        .unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        !published(n, address).is_empty()
    }));
    assert!(published(&net, address)[0].1 > 0, "stored nowhere");
    assert_eq!(lookup(&mut net, 7, address), Ok(descriptor(&[91, 92, 93])));
    // The nodes that store it never learn whose it is: the owner's id is nowhere in it.
    let owner = net.node_id(OWNER);
    for (i, h) in net.hosts.iter().enumerate() {
        if let Some(r) = h.node.dht().aliases().get(
            &vx6_core::alias::BlindedKey::of(&address, Period::containing(harness::UNIX_START))
                .dht_key(),
            harness::UNIX_START + 60,
        ) {
            assert!(
                !r.as_bytes().windows(32).any(|w| w == owner.as_bytes()),
                "node {i} holds the owner's id"
            );
        }
    }
    // An alias nobody hosts is not found, and says so.
    let stray = AliasKey::from_secret_bytes(&[6; 32]).address();
    let err = lookup(&mut net, 7, stray).unwrap_err();
    assert_eq!(err.cause, Cause::NameNotFound, "{err}");
}

#[test]
fn an_authorizing_alias_refuses_unlisted_clients_by_name() {
    let mut net = network(72);
    let listed = 6;
    let now = net.now;
    let listed_key = identity(60 + listed as u8).public_key();
    let address = net.hosts[OWNER]
        .node
        .host_alias(
            now,
            AliasKey::from_secret_bytes(&[7; 32]),
            descriptor(&[94]),
            vec![listed_key],
        )
        .unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        !published(n, address).is_empty()
    }));
    assert_eq!(lookup(&mut net, listed, address), Ok(descriptor(&[94])));
    let refused = lookup(&mut net, 7, address).unwrap_err();
    assert_eq!(refused.cause, Cause::AccessDenied, "{refused}");
    assert!(
        refused.to_string().contains("listed clients only"),
        "{refused}"
    );
}

#[test]
fn changed_relays_are_published_at_once_and_records_again_on_the_hour() {
    let mut net = network(73);
    let now = net.now;
    let address = net.hosts[OWNER]
        .node
        .host_alias(
            now,
            AliasKey::from_secret_bytes(&[8; 32]),
            descriptor(&[95, 96]),
            vec![],
        )
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |n| published(n, address).len()
            == 1)
    );
    // Relay 96 is lost: the owner republishes without it, and clients see the change.
    let now = net.now;
    assert!(
        net.hosts[OWNER]
            .node
            .update_alias(now, &address, descriptor(&[95, 97]))
    );
    assert!(
        net.run_until(Duration::from_secs(10), |n| published(n, address).len()
            == 2)
    );
    assert_eq!(lookup(&mut net, 5, address), Ok(descriptor(&[95, 97])));
    // An hour later it is signed and stored again without being asked: a newer record.
    let key = vx6_core::alias::BlindedKey::of(&address, Period::containing(harness::UNIX_START))
        .dht_key();
    let unix = harness::UNIX_START + 60;
    let node = &mut net.hosts[OWNER].node;
    let before = node.dht().aliases().get(&key, unix).unwrap().seq();
    let hour = net.now + Duration::from_secs(3600);
    assert_eq!(node.poll_timeout().map(|t| t <= hour), Some(true));
    node.handle_timeout(hour);
    let after = node.dht().aliases().get(&key, unix).unwrap().seq();
    assert!(
        after > before,
        "not republished after an hour ({before} -> {after})"
    );
}

#[test]
fn the_next_periods_record_is_published_before_it_starts() {
    // One node, its clock set 30 minutes before a period ends (no DHT peers: the stores end at
    // once, at no node, which is all this needs).
    let mut net = Net::new(74);
    net.add_host(identity(60), ServiceTable::new(false), Pins::default());
    let first = Period::containing(harness::UNIX_START);
    let node = &mut net.hosts[0].node;
    node.set_unix_time(first.end() - 1800);
    let now = net.now;
    let address = node
        .host_alias(
            now,
            AliasKey::from_secret_bytes(&[9; 32]),
            descriptor(&[98]),
            vec![],
        )
        .unwrap();
    let mut periods = Vec::new();
    while let Some(e) = node.poll_event() {
        if let Event::AliasPublished {
            address: a, period, ..
        } = e
        {
            assert_eq!(a, address);
            periods.push(period);
        }
    }
    periods.sort();
    assert_eq!(periods, vec![first.0, first.0 + 1]);
    // Earlier in the period, only the current one.
    node.set_unix_time(first.start() + 60);
    assert!(node.update_alias(now, &address, descriptor(&[99])));
    let mut periods = Vec::new();
    while let Some(e) = node.poll_event() {
        if let Event::AliasPublished { period, .. } = e {
            periods.push(period);
        }
    }
    assert_eq!(periods, vec![first.0]);
}

#[test]
fn hosted_aliases_are_bounded() {
    let mut net = Net::new(75);
    net.add_host(identity(60), ServiceTable::new(false), Pins::default());
    let now = net.now;
    let node = &mut net.hosts[0].node;
    for n in 0..vx6_core::node::MAX_HOSTED_ALIASES {
        node.host_alias(
            now,
            AliasKey::from_secret_bytes(&[n as u8; 32]),
            descriptor(&[]),
            vec![],
        )
        .unwrap();
    }
    let over = node.host_alias(
        now,
        AliasKey::from_secret_bytes(&[250; 32]),
        descriptor(&[]),
        vec![],
    );
    assert_eq!(over, Err(vx6_core::node::HostAliasError::TooMany));
    // Hosting one it already hosts again is an update, not one more.
    let again = node.host_alias(
        now,
        AliasKey::from_secret_bytes(&[3; 32]),
        descriptor(&[1]),
        vec![],
    );
    assert!(again.is_ok());
    assert!(node.drop_alias(&again.unwrap()));
    assert_eq!(
        node.hosted_aliases().count(),
        vx6_core::node::MAX_HOSTED_ALIASES - 1
    );
}
