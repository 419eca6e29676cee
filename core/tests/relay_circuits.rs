//! Circuits end to end on the virtual network: a stream through two relays, failover to the
//! standby when a relay dies mid-transfer, `auto` falling back when the direct route is
//! blackholed, and the same seed giving the same run.

mod harness;

use std::time::Duration;

use harness::{Net, UNIX_START, echo_services, identity, payload};
use vx6_core::node::{CircuitRole, NodeConfig, Route};
use vx6_core::pins::Pins;
use vx6_core::record::{NodeAddress, OwnRecords, RelayCapability, Transport};
use vx6_core::service::Access;
use vx6_core::service::ServiceTable;

const CLIENT: usize = 0;
const OWNER: usize = 1;
const RELAYS: usize = 6;

fn relaying(c: &mut NodeConfig) {
    c.relay.enabled = true;
}

/// A client, an owner offering `echo`, and six relays the client knows from their records.
fn network(seed: u64) -> Net {
    let mut net = Net::new(seed);
    net.configure = relaying;
    net.add_host(identity(1), ServiceTable::new(false), Pins::default());
    net.add_host(identity(2), echo_services(Access::Public), Pins::default());
    for i in 0..RELAYS {
        net.add_host(
            identity(10 + i as u8),
            ServiceTable::new(false),
            Pins::default(),
        );
    }
    let mut records = Vec::new();
    for (i, seed) in std::iter::once(2u8)
        .chain(10..10 + RELAYS as u8)
        .enumerate()
    {
        let host = if i == 0 { OWNER } else { 1 + i };
        let id = identity(seed);
        let username = format!("n{seed}").parse().unwrap();
        let signed = OwnRecords {
            identity: &id,
            username: &username,
            addresses: vec![NodeAddress {
                transport: Transport::Quic,
                addr: net.hosts[host].addr,
            }],
            services: Vec::new(),
            relay: (host != OWNER).then_some(RelayCapability {
                max_circuits: 100,
                operator: None,
            }),
        }
        .sign(UNIX_START, 3600);
        records.push(signed[0].clone());
    }
    let now = net.now;
    net.hosts[CLIENT].node.learn_records(now, &records);
    net
}

fn client_circuits(net: &Net) -> Vec<vx6_core::node::CircuitStatus> {
    net.hosts[CLIENT]
        .node
        .status()
        .circuits
        .into_iter()
        .filter(|c| c.role == CircuitRole::Client)
        .collect()
}

#[test]
fn a_stream_crosses_two_relays_and_relays_see_only_ciphertext() {
    let mut net = network(1);
    let owner = net.node_id(OWNER);
    let data = payload(300_000, 7);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::Relay { hops: 2 },
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data);
    let circuits = client_circuits(&net);
    assert_eq!(
        circuits.len(),
        2,
        "an active circuit and a standby: {circuits:?}"
    );
    assert_eq!(circuits.iter().filter(|c| c.active).count(), 1);
    for c in &circuits {
        assert_eq!(c.path.len(), 2);
        assert!(!c.path.contains(&owner));
        assert_eq!(c.limits.len(), 2, "each relay states its limits");
    }
    let (a, b) = (&circuits[0].path, &circuits[1].path);
    assert!(
        a.iter().all(|n| !b.contains(n)),
        "the standby uses other relays"
    );
    // No relay holds a session with the owner's client in it, nor the client's with the owner:
    // the end-to-end session exists only at its ends, behind virtual addresses.
    let client_sessions = net.hosts[CLIENT].node.status().sessions;
    assert!(
        client_sessions
            .iter()
            .all(|s| s.peer != Some(owner) || vx6_core::node::is_virtual(&s.remote))
    );
    let relayed: u64 = (2..2 + RELAYS)
        .map(|i| net.hosts[i].node.counters().relay_forwarded)
        .sum();
    assert!(relayed > 400, "datagrams went through relays: {relayed}");
    for i in 2..2 + RELAYS {
        let st = net.hosts[i].node.status();
        for c in st.circuits {
            assert_eq!(c.role, CircuitRole::Relay);
            assert!(
                !c.path.contains(&net.node_id(CLIENT)) || !c.path.contains(&owner),
                "a relay knows only its neighbours, never both ends"
            );
        }
    }
}

#[test]
fn a_dead_relay_moves_the_link_to_its_standby_without_losing_the_stream() {
    let mut net = network(2);
    let owner = net.node_id(OWNER);
    let data = payload(3_000_000, 9);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::Relay { hops: 2 },
    );
    // Until the standby is up and some data has moved.
    assert!(net.run_until(Duration::from_secs(10), |n| {
        client_circuits(n).iter().filter(|c| c.ready).count() == 2
            && n.hosts[CLIENT].apps[&h].received.len() > 200_000
    }));
    let active = client_circuits(&net)
        .into_iter()
        .find(|c| c.active)
        .unwrap();
    let dead = (0..net.hosts.len())
        .find(|i| net.node_id(*i) == active.path[0])
        .unwrap();
    net.down.insert(dead);
    assert!(net.run_until(Duration::from_secs(60), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data, "every byte, in order");
    let c = net.hosts[CLIENT].node.counters();
    assert!(c.circuit_failovers >= 1, "{c:?}");
    let now = client_circuits(&net);
    assert!(
        now.iter().all(|c| !c.path.contains(&active.path[0])),
        "the dead relay is avoided"
    );
}

#[test]
fn auto_falls_back_to_relays_when_the_direct_route_is_blackholed() {
    let mut net = network(3);
    net.cut.insert((CLIENT, OWNER));
    let owner = net.node_id(OWNER);
    let data = payload(50_000, 3);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::default(),
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data);
    assert_eq!(net.hosts[CLIENT].node.counters().auto_fallbacks, 1);
    // With the route back, a new auto stream prefers... the direct session once it works; the
    // relayed one meanwhile keeps serving.
    net.cut.clear();
    let h2 = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::default(),
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    assert_eq!(net.hosts[CLIENT].apps[&h2].received, data);
}

#[test]
fn direct_only_without_relays_fails_with_a_reason() {
    let mut net = Net::new(4);
    net.add_host(identity(1), ServiceTable::new(false), Pins::default());
    net.add_host(identity(2), echo_services(Access::Public), Pins::default());
    let owner = net.node_id(1);
    let h = net.open_routed(0, 1, Some(owner), "echo", vec![1], Route::Relay { hops: 2 });
    net.run_until(Duration::from_secs(5), |n| n.apps_done(0));
    let failure = net.hosts[0].apps[&h].failed.clone().expect("fails");
    assert_eq!(failure.cause, vx6_core::Cause::Unreachable, "{failure}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut net = network(seed);
        let owner = net.node_id(OWNER);
        net.open_routed(
            CLIENT,
            OWNER,
            Some(owner),
            "echo",
            payload(100_000, 1),
            Route::Relay { hops: 2 },
        );
        net.run_until(Duration::from_secs(20), |n| n.apps_done(CLIENT));
        let circuits: Vec<_> = client_circuits(&net)
            .into_iter()
            .map(|c| (c.path, c.active, c.packets))
            .collect();
        (
            circuits,
            net.hosts[CLIENT].node.counters(),
            net.now - net.hosts.len() as u32 * Duration::ZERO,
        )
    };
    let a = run(5);
    let b = run(5);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
}
