//! Circuits end to end on the virtual network: a stream through two relays, failover to the
//! standby when a relay dies mid-transfer, `auto` falling back when the direct route is
//! blackholed, and the same seed giving the same run.

mod harness;

use std::time::Duration;

use harness::{Net, UNIX_START, echo_services, identity, payload};
use vx6_core::Cause;
use vx6_core::node::{CircuitEvent, CircuitRole, Event, NodeConfig, Route};
use vx6_core::pins::Pins;
use vx6_core::policy::{PathKind, Policy, PolicyId, SlaState, SwitchReason, Violation};
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
    let mut records = vec![record(&net, OWNER, 2, false)];
    for i in 0..RELAYS {
        records.push(record(&net, 2 + i, 10 + i as u8, true));
    }
    let now = net.now;
    net.hosts[CLIENT].node.learn_records(now, &records);
    net
}

/// Sends `len` bytes from the client to the owner's echo by `route` and checks they come back.
fn echo_through(net: &mut Net, len: usize, seed: u8, route: Route) -> vx6_core::node::StreamHandle {
    let owner = net.node_id(OWNER);
    let data = payload(len, seed);
    let h = net.open_routed(CLIENT, OWNER, Some(owner), "echo", data.clone(), route);
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data);
    h
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
    echo_through(&mut net, 300_000, 7, Route::Relay { hops: 2 });
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
    // Said as events too: the silent circuit failed (a timeout), the link moved.
    let log = &net.hosts[CLIENT].log;
    assert!(log.iter().any(|e| matches!(
        e,
        Event::Circuit(CircuitEvent::Failed { failure, .. }) if failure.cause == Cause::Timeout
    )));
    assert!(
        log.iter()
            .any(|e| matches!(e, Event::Circuit(CircuitEvent::FailedOver { .. })))
    );
    assert!(
        log.iter()
            .any(|e| matches!(e, Event::Circuit(CircuitEvent::Up { active: false, .. })))
    );
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
    echo_through(&mut net, 50_000, 3, Route::default());
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
    // That stream tried direct again beside it; with the route back, the next one goes direct.
    let direct = |n: &Net| {
        n.hosts[CLIENT].node.status().sessions.iter().any(|s| {
            s.peer == Some(owner) && s.established && !vx6_core::node::is_virtual(&s.remote)
        })
    };
    assert!(
        net.run_until(Duration::from_secs(15), direct),
        "a direct session came up"
    );
    let h3 = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::default(),
    );
    assert!(
        net.run_until(Duration::from_secs(1), |n| {
            n.hosts[CLIENT].node.status().sessions.iter().any(|s| {
                s.peer == Some(owner) && !vx6_core::node::is_virtual(&s.remote) && s.streams == 1
            })
        }),
        "the next stream went direct"
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    assert_eq!(net.hosts[CLIENT].apps[&h3].received, data);
}

/// An `auto` stream that fell back to relays (the direct route blackholed) rides a managed
/// link: once the route is back, the link's direct path comes up and the live connection moves
/// onto it, the stream losing nothing.
#[test]
fn an_auto_stream_that_fell_back_moves_to_the_direct_path_once_it_works() {
    let mut net = network(13);
    net.cut.insert((CLIENT, OWNER));
    let owner = net.node_id(OWNER);
    let mut data = payload(1_000_000, 5);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::default(),
    );
    // The stream stays open across the move.
    net.hosts[CLIENT].apps.get_mut(&h).unwrap().hold = true;
    let relayed = |n: &Net| {
        n.hosts[CLIENT].node.counters().auto_fallbacks == 1
            && n.hosts[CLIENT].apps[&h].received.len() > 100_000
    };
    assert!(net.run_until(Duration::from_secs(30), relayed));
    let links = net.hosts[CLIENT].node.auto_links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].path, Some(PathKind::Relay));
    net.cut.clear();
    let direct = |n: &Net| {
        n.hosts[CLIENT]
            .node
            .auto_links()
            .first()
            .is_some_and(|l| l.path == Some(PathKind::Direct))
    };
    assert!(
        net.run_until(Duration::from_secs(60), direct),
        "{:?}",
        net.hosts[CLIENT].node.auto_links()
    );
    // More bytes on the same stream, now over the direct path.
    let more = payload(500_000, 6);
    data.extend_from_slice(&more);
    net.hosts[CLIENT]
        .apps
        .get_mut(&h)
        .unwrap()
        .to_send
        .extend_from_slice(&more);
    let len = data.len();
    assert!(net.run_until(Duration::from_secs(60), |n| {
        n.hosts[CLIENT].apps[&h].received.len() >= len || n.hosts[CLIENT].apps[&h].failed.is_some()
    }));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data);
    let link = &net.hosts[CLIENT].node.auto_links()[0];
    assert!(link.switches >= 1, "{link:?}");
    assert!(net.hosts[CLIENT].log.iter().any(|e| matches!(
        e,
        Event::Circuit(CircuitEvent::Switched { policy, to: Some(PathKind::Direct), .. })
            if *policy == PolicyId::AUTO
    )));
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

/// Six relays of which the client knows only `relays`, owners at 1 and `extra_owner`.
fn small_network(seed: u64, configure: fn(&mut NodeConfig), relays: usize) -> Net {
    let mut net = Net::new(seed);
    net.configure = configure;
    net.add_host(identity(1), ServiceTable::new(false), Pins::default());
    net.add_host(identity(2), echo_services(Access::Public), Pins::default());
    for i in 0..relays {
        net.add_host(
            identity(10 + i as u8),
            ServiceTable::new(false),
            Pins::default(),
        );
    }
    net.add_host(identity(3), echo_services(Access::Public), Pins::default());
    let mut records = Vec::new();
    for (host, seed) in (1..2 + relays).zip(std::iter::once(2u8).chain(10..)) {
        records.push(record(&net, host, seed, host != OWNER));
    }
    records.push(record(&net, 2 + relays, 3, false));
    let now = net.now;
    net.hosts[CLIENT].node.learn_records(now, &records);
    net
}

fn record(net: &Net, host: usize, seed: u8, relay: bool) -> vx6_core::SignedRecord {
    let id = identity(seed);
    let username = format!("n{seed}").parse().unwrap();
    OwnRecords {
        identity: &id,
        username: &username,
        addresses: vec![
            NodeAddress {
                transport: Transport::Quic,
                addr: net.hosts[host].addr,
            },
            NodeAddress {
                transport: Transport::Tcp,
                addr: net.hosts[host].addr,
            },
        ],
        services: Vec::new(),
        relay: relay.then_some(RelayCapability {
            max_circuits: 100,
            operator: None,
        }),
        via: Vec::new(),
    }
    .sign(UNIX_START, UNIX_START, 3600)[0]
        .clone()
}

#[test]
fn a_relay_refuses_circuits_past_its_per_peer_limit_and_says_so() {
    fn one_per_peer(c: &mut NodeConfig) {
        c.relay.enabled = true;
        c.relay.limits.max_per_peer = 1;
    }
    refused_past_a_limit(one_per_peer, "limit for this peer");
}

#[test]
fn a_relay_refuses_circuits_past_its_total_limit_and_says_so() {
    fn one_in_all(c: &mut NodeConfig) {
        c.relay.enabled = true;
        // Owners count circuits ending at them the same way: leave theirs alone.
        let owners = [identity(2).node_id(), identity(3).node_id()];
        if !owners.contains(&c.identity.node_id()) {
            c.relay.limits.max_circuits = 1;
        }
    }
    refused_past_a_limit(one_in_all, "at the circuit limit");
}

/// Two relays at a limit of one circuit (for this peer, or at all): a first link takes both
/// (active and standby), a second link is refused everywhere and fails saying why.
fn refused_past_a_limit(configure: fn(&mut NodeConfig), why: &str) {
    let mut net = small_network(6, configure, 2);
    let first_owner = net.node_id(OWNER);
    let second = net.hosts.len() - 1;
    let second_owner = net.node_id(second);
    let hop = Route::Relay { hops: 1 };
    let a = net.open_routed(
        CLIENT,
        OWNER,
        Some(first_owner),
        "echo",
        payload(1000, 1),
        hop,
    );
    assert!(net.run_until(Duration::from_secs(10), |n| n.apps_done(CLIENT)));
    assert!(net.hosts[CLIENT].apps[&a].failed.is_none());
    // Both relays now carry one circuit of this client (active and standby): a link to a second
    // owner finds every relay at its limit for this peer.
    assert!(net.run_until(Duration::from_secs(5), |n| {
        client_circuits(n).iter().filter(|c| c.ready).count() == 2
    }));
    let b = net.open_routed(
        CLIENT,
        second,
        Some(second_owner),
        "echo",
        payload(1000, 2),
        hop,
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let failure = net.hosts[CLIENT].apps[&b].failed.clone().expect("refused");
    assert_eq!(failure.cause, vx6_core::Cause::LimitReached, "{failure}");
    assert!(failure.detail.contains(why), "{failure}");
    let refused: u64 = (2..4)
        .map(|i| net.hosts[i].node.counters().circuits_refused)
        .sum();
    assert!(refused >= 2, "each relay refused and counted: {refused}");
    // The first link was not disturbed.
    assert_eq!(
        client_circuits(&net)
            .iter()
            .filter(|c| c.owner == Some(first_owner))
            .count(),
        2
    );
}

#[test]
fn relayed_circuits_expire_when_idle_and_a_node_that_does_not_relay_refuses() {
    fn quick_expiry(c: &mut NodeConfig) {
        c.relay.enabled = true;
        c.relay.limits.idle_expiry_secs = 2;
    }
    let mut net = small_network(7, quick_expiry, 4);
    let owner = net.node_id(OWNER);
    net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        payload(1000, 1),
        Route::Relay { hops: 2 },
    );
    assert!(net.run_until(Duration::from_secs(10), |n| {
        client_circuits(n).iter().filter(|c| c.ready).count() == 2
    }));
    let relaying = |n: &Net| -> usize {
        (2..6)
            .map(|i| n.hosts[i].node.status().circuits.len())
            .sum()
    };
    assert_eq!(relaying(&net), 4, "two circuits of two hops");
    // The client vanishes without a word: its probes stop, and the relays' circuits idle out.
    net.down.insert(CLIENT);
    net.run_until(Duration::from_secs(15), |n| relaying(n) == 0);
    assert_eq!(relaying(&net), 0);
    let expired: u64 = (2..6)
        .map(|i| net.hosts[i].node.counters().circuits_expired)
        .sum();
    assert!(expired >= 2, "{expired}");

    // Relaying is an explicit choice: a node that did not make it refuses to extend.
    let mut net = small_network(8, |_| {}, 2);
    let owner = net.node_id(OWNER);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        vec![1],
        Route::Relay { hops: 1 },
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let failure = net.hosts[CLIENT].apps[&h].failed.clone().expect("refused");
    assert!(failure.detail.contains("NotRelay"), "{failure}");
}

#[test]
fn tcp_mode_splices_streams_through_two_relays() {
    let mut net = network(9);
    net.routed_transport = Transport::Tcp;
    let owner = net.node_id(OWNER);
    let data = payload(400_000, 5);
    echo_through(&mut net, 400_000, 5, Route::Relay { hops: 2 });
    let circuits = client_circuits(&net);
    assert_eq!(
        circuits.len(),
        1,
        "a spliced circuit has no standby: {circuits:?}"
    );
    assert_eq!(circuits[0].path.len(), 2);
    assert!(circuits[0].bytes > 400_000, "{circuits:?}");
    // The relays spliced the bytes; neither holds a session with both ends.
    let spliced: u64 = (2..2 + RELAYS)
        .flat_map(|i| net.hosts[i].node.status().circuits)
        .map(|c| c.bytes)
        .sum();
    assert!(spliced > 2 * 800_000, "{spliced}");
    // A second stream rides the same virtual session.
    let h2 = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::Relay { hops: 2 },
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    assert_eq!(net.hosts[CLIENT].apps[&h2].received, data);
    assert_eq!(client_circuits(&net).len(), 1);
}

#[test]
fn circuit_setups_past_a_relays_rate_are_refused_counted_and_retried_later() {
    fn slow_setups(c: &mut NodeConfig) {
        c.relay.enabled = true;
        c.relay.limits.setups_per_second = 1;
    }
    // One relay, three owners: three links want a circuit through it at once, against a rate
    // of one setup a second with bursts of two.
    let mut net = small_network(10, slow_setups, 1);
    let third = net.add_host(identity(4), echo_services(Access::Public), Pins::default());
    let r = record(&net, third, 4, false);
    let now = net.now;
    net.hosts[CLIENT].node.learn_records(now, [&r]);
    let hop = Route::Relay { hops: 1 };
    let owners = [OWNER, net.hosts.len() - 2, third];
    let handles: Vec<_> = owners
        .iter()
        .map(|&o| {
            let id = net.node_id(o);
            net.open_routed(CLIENT, o, Some(id), "echo", payload(1000, o as u8), hop)
        })
        .collect();
    net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT));
    let refused = net.hosts[2].node.counters().circuits_refused;
    assert!(refused >= 1, "the relay refused setups over its rate");
    // Refused setups are built again after a backoff, and get through as the rate allows.
    for h in handles {
        let app = &net.hosts[CLIENT].apps[&h];
        assert!(app.failed.is_none(), "{:?}", app.failed);
        assert_eq!(app.received.len(), 1000);
    }
}

// ---- managed links: the policy moves a live connection between direct and relayed paths --

fn managed(net: &mut Net, settings: &str) -> PolicyId {
    let id = PolicyId(1);
    let policy = Policy::default().with_settings(settings).unwrap();
    let now = net.now;
    net.hosts[CLIENT].node.set_policy(now, id, policy);
    id
}

fn path_of(net: &Net, id: PolicyId) -> Option<PathKind> {
    net.hosts[CLIENT]
        .node
        .policy_status(id)
        .and_then(|s| s.path)
}

fn switches(net: &Net) -> Vec<(Option<PathKind>, Option<PathKind>, SwitchReason)> {
    net.hosts[CLIENT]
        .log
        .iter()
        .filter_map(|e| match e {
            Event::Circuit(CircuitEvent::Switched {
                from, to, reason, ..
            }) => Some((*from, *to, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_sla_moves_a_live_stream_off_a_lossy_direct_path_and_back_only_after_the_hold_down() {
    let mut net = network(21);
    let owner = net.node_id(OWNER);
    let id = managed(&mut net, "via=direct,max-loss=5%,hold-down=3s");
    let data = payload(4_000_000, 4);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::Policy(id),
    );
    assert!(net.run_until(Duration::from_secs(10), |n| {
        path_of(n, id) == Some(PathKind::Direct)
            && n.hosts[CLIENT].apps[&h].received.len() > 100_000
    }));
    // The direct path turns lossy mid-transfer: the stream moves to a relay path and lives.
    net.lossy.insert((CLIENT, OWNER), 0.3);
    let degraded = net.now;
    assert!(net.run_until(Duration::from_secs(10), |n| path_of(n, id)
        == Some(PathKind::Relay)));
    let detected = net.now - degraded;
    assert!(net.run_until(Duration::from_secs(120), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(
        app.received, data,
        "every byte, in order, across the switch"
    );
    assert!(
        matches!(
            switches(&net).last(),
            Some((
                Some(PathKind::Direct),
                Some(PathKind::Relay),
                SwitchReason::Sla(Violation::Loss { .. })
            ))
        ),
        "{:?} after {detected:?}",
        switches(&net)
    );
    // The path recovers: the link fails back only once it met the SLA for the hold-down.
    net.lossy.clear();
    let recovered = net.now;
    assert!(net.run_until(Duration::from_secs(20), |n| path_of(n, id)
        == Some(PathKind::Direct)));
    assert!(
        net.now - recovered >= Duration::from_secs(3),
        "failback waited for the hold-down: {:?}",
        net.now - recovered
    );
    assert_eq!(
        switches(&net).last().map(|s| s.2),
        Some(SwitchReason::Failback)
    );
    echo_through(&mut net, 50_000, 5, Route::Policy(id));
    let status = net.hosts[CLIENT].node.policy_status(id).unwrap();
    assert_eq!(status.switches, 2, "{status:?}");
    assert_eq!(status.sla, SlaState::Met);
}

#[test]
fn an_oscillating_path_makes_at_most_one_switch_per_hold_down() {
    let mut net = network(22);
    let owner = net.node_id(OWNER);
    let id = managed(&mut net, "via=direct,max-loss=5%,hold-down=4s");
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        payload(1000, 1),
        Route::Policy(id),
    );
    assert!(net.run_until(Duration::from_secs(10), |n| path_of(n, id)
        == Some(PathKind::Direct)));
    let start = net.now;
    for i in 0..12 {
        if i % 2 == 0 {
            net.lossy.insert((CLIENT, OWNER), 0.4);
        } else {
            net.lossy.clear();
        }
        net.advance(Duration::from_millis(1500));
    }
    let elapsed = net.now - start;
    let n = net.hosts[CLIENT].node.policy_status(id).unwrap().switches;
    assert!(n >= 1, "the loss was seen");
    assert!(
        n <= 1 + (elapsed.as_secs() / 4),
        "{n} switches in {elapsed:?}: {:?}",
        switches(&net)
    );
    assert!(net.hosts[CLIENT].apps[&h].failed.is_none());
}

#[test]
fn a_policy_changed_at_run_time_moves_the_link_at_once() {
    let mut net = network(23);
    let id = managed(&mut net, "via=direct");
    echo_through(&mut net, 10_000, 6, Route::Policy(id));
    // Until the relay path is up and measured beside the direct one.
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.hosts[CLIENT].node.policy_status(id).is_some_and(|s| {
            s.path == Some(PathKind::Direct)
                && s.paths
                    .iter()
                    .any(|p| p.0 == PathKind::Relay && p.3 == SlaState::Met)
        })
    }));
    let now = net.now;
    let relay = Policy::default().with_settings("via=relay,hops=2").unwrap();
    net.hosts[CLIENT].node.set_policy(now, id, relay);
    assert_eq!(
        path_of(&net, id),
        Some(PathKind::Relay),
        "moved at once: {:?} {:?}",
        net.hosts[CLIENT].node.policy_status(id),
        switches(&net)
    );
    net.advance(Duration::from_millis(1));
    assert_eq!(
        switches(&net).last().copied(),
        Some((
            Some(PathKind::Direct),
            Some(PathKind::Relay),
            SwitchReason::PolicyChanged
        ))
    );
    echo_through(&mut net, 10_000, 7, Route::Policy(id));
    let status = net.hosts[CLIENT].node.policy_status(id).unwrap();
    assert!(
        status.paths.iter().all(|p| p.0 == PathKind::Relay),
        "a relay-only policy keeps no direct path: {status:?}"
    );
    let now = net.now;
    let direct = Policy::default().with_settings("via=direct").unwrap();
    net.hosts[CLIENT].node.set_policy(now, id, direct);
    assert!(net.run_until(Duration::from_secs(5), |n| path_of(n, id)
        == Some(PathKind::Direct)));
    echo_through(&mut net, 10_000, 8, Route::Policy(id));
}

#[test]
fn a_strict_policy_uses_no_path_that_breaks_its_sla() {
    let mut net = network(24);
    let owner = net.node_id(OWNER);
    let id = managed(&mut net, "via=relay,max-rtt=100ms,strict");
    echo_through(&mut net, 10_000, 6, Route::Policy(id));
    // Every path turns slow: the link stops using them rather than use a bad one.
    let fast = net.latency;
    net.latency = Duration::from_millis(30);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.hosts[CLIENT]
            .node
            .policy_status(id)
            .is_some_and(|s| s.path.is_none())
    }));
    assert!(
        matches!(
            switches(&net).last(),
            Some((Some(_), None, SwitchReason::Sla(_)))
        ),
        "{:?}",
        switches(&net)
    );
    net.latency = fast;
    assert!(net.run_until(Duration::from_secs(20), |n| path_of(n, id).is_some()));
    net.advance(Duration::from_millis(1));
    assert_eq!(
        switches(&net).last().map(|s| s.2),
        Some(SwitchReason::Recovered)
    );
    echo_through(&mut net, 10_000, 7, Route::Policy(id));
    let _ = owner;
}

#[test]
fn a_managed_link_without_a_direct_path_rides_relays_and_survives_a_dead_relay() {
    let mut net = network(25);
    net.cut.insert((CLIENT, OWNER));
    let owner = net.node_id(OWNER);
    let id = managed(&mut net, "via=auto,max-loss=5%");
    let data = payload(3_000_000, 5);
    let h = net.open_routed(
        CLIENT,
        OWNER,
        Some(owner),
        "echo",
        data.clone(),
        Route::Policy(id),
    );
    // Two relay paths while the direct one cannot come up, one of them carrying the data.
    assert!(net.run_until(Duration::from_secs(20), |n| {
        let relays_up = client_circuits(n)
            .iter()
            .filter(|c| c.ready && !c.path.is_empty())
            .count();
        relays_up == 2 && n.hosts[CLIENT].apps[&h].received.len() > 200_000
    }));
    assert_eq!(path_of(&net, id), Some(PathKind::Relay));
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
    assert_eq!(app.received, data);
    assert!(
        switches(&net)
            .iter()
            .any(|s| s.2 == SwitchReason::PathDown && s.1 == Some(PathKind::Relay)),
        "{:?}",
        switches(&net)
    );
    // The direct path was tried again and again on its own backoff, not every tick.
    let failed = net.hosts[CLIENT].node.counters().circuits_failed;
    assert!(failed < 20, "{failed} failed builds");
}

/// Clients that cannot reach their owner directly ask it, through their relay path, to punch
/// towards their public address; however many links ask, an owner sends punch probes at one
/// target prefix at a bounded rate (it could otherwise be made to spray a victim).
#[test]
fn punch_requests_are_carried_out_at_a_bounded_rate_per_target() {
    let mut net = network(26);
    let via = net.hosts[2].addr;
    for i in 0..net.hosts.len() {
        if i != 2 {
            net.hosts[i].node.bootstrap(&[via]);
        }
    }
    let me = net.hosts[CLIENT].addr;
    assert!(
        net.run_until(Duration::from_secs(30), |n| {
            n.hosts[CLIENT].node.observed_addresses() == [me]
        }),
        "the client learns where it is seen"
    );
    net.cut.insert((CLIENT, OWNER));
    let owner = net.node_id(OWNER);
    let start = net.now;
    for id in 1..=4u32 {
        let policy = Policy::default().with_settings("via=auto").unwrap();
        let now = net.now;
        net.hosts[CLIENT].node.set_policy(now, PolicyId(id), policy);
        net.open_routed(
            CLIENT,
            OWNER,
            Some(owner),
            "echo",
            payload(1000, id as u8),
            Route::Policy(PolicyId(id)),
        );
    }
    net.run_until(Duration::from_secs(3), |_| false);
    let asked = net.hosts[CLIENT].node.counters().punch_requests;
    let answered = net.hosts[OWNER].node.counters().punches_answered;
    let elapsed = (net.now - start).as_secs();
    assert!(asked >= 4, "every link asked: {asked}");
    assert!(
        answered >= 1 && answered <= 3 + elapsed,
        "{answered} of {asked} carried out in {elapsed} s (burst 3, one a second)"
    );
    // The route stays cut: each link gives up after its 3 attempts and says so, once.
    assert!(net.run_until(Duration::from_secs(120), |n| {
        n.hosts[CLIENT].node.counters().punches_failed == 4
    }));
    net.run_until(Duration::from_secs(60), |_| false);
    let c = net.hosts[CLIENT].node.counters();
    assert_eq!((c.punches_failed, c.punch_requests), (4, 12));
}
