//! Hole punching through simulated NATs on the virtual network: a NAT that keeps ports against
//! one that picks a random port per flow goes direct by the birthday approach (in both roles,
//! through side sockets), two random-port NATs stay relayed and say so, and what one node can
//! make another send or open is bounded.
#![allow(clippy::disallowed_methods)] // Instant::now as an origin for virtual time

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{Nat, Net, echo_services, identity, payload};
use vx6_core::SignedRecord;
use vx6_core::node::{BIRTHDAY_GAP, MAX_PINNED, NodeConfig, Route};
use vx6_core::pins::Pins;
use vx6_core::policy::{PathKind, Policy, PolicyId};
use vx6_core::reach::birthday::SIDE_SOCKETS;
use vx6_core::record::Record;
use vx6_core::service::{Access, ServiceTable};

const CLIENT: usize = 0;
const OWNER: usize = 1;
const POLICY: PolicyId = PolicyId(1);

fn relaying(c: &mut NodeConfig) {
    c.relay.enabled = true;
}

/// A client and an owner (offering `echo`) behind the NATs given, and five public relays.
/// Everyone knows its own address; the relays join first, the two ends last, from the last
/// relay. Returns the network and the address the client dials the owner at (where its NAT
/// keeps the port, the mapped one; behind a random-port NAT its own, unreachable).
fn sites(seed: u64, client: Option<Nat>, owner: Option<Nat>) -> (Net, SocketAddr) {
    let mut net = Net::new(seed);
    net.configure = relaying;
    net.add_host(identity(90), ServiceTable::new(false), Pins::default());
    net.add_host(identity(91), echo_services(Access::Public), Pins::default());
    for i in 0..5u8 {
        net.add_host(identity(92 + i), ServiceTable::new(false), Pins::default());
    }
    net.nat.extend(client.map(|n| (CLIENT, n)));
    net.nat.extend(owner.map(|n| (OWNER, n)));
    for i in 0..net.hosts.len() {
        let own = net.hosts[i].addr;
        net.hosts[i].node.set_local_addresses(vec![own]);
    }
    for i in [2, 3, 4, 5, 6, CLIENT, OWNER] {
        // Each relay from the one before; the two ends from the last, which knows them all.
        let via = match i {
            2 => None,
            3..=6 => Some(net.hosts[i - 1].addr),
            _ => Some(net.hosts[6].addr),
        };
        net.hosts[i].node.bootstrap(&Vec::from_iter(via));
        let own = net.hosts[i].addr;
        net.publish_at(i, own);
    }
    let owner_at = match owner {
        Some(Nat::KeepsPort) => SocketAddr::new(net.public_ip(OWNER), net.hosts[OWNER].addr.port()),
        _ => net.hosts[OWNER].addr,
    };
    let now = net.now;
    let policy = Policy::default().with_settings("via=auto").unwrap();
    net.hosts[CLIENT].node.set_policy(now, POLICY, policy);
    (net, owner_at)
}

fn path(net: &Net) -> Option<PathKind> {
    net.hosts[CLIENT]
        .node
        .policy_status(POLICY)
        .and_then(|s| s.path)
}

/// The owner's newest node record that names its home relays, from whichever node stores it.
fn owner_record(net: &Net) -> Option<SignedRecord> {
    let owner = net.node_id(OWNER);
    net.hosts
        .iter()
        .flat_map(|h| h.node.dht().store().iter())
        .filter(|r| r.owner() == owner)
        .filter(|r| matches!(r.record(), Record::Node(x) if !x.via.is_empty()))
        .max_by_key(|r| r.record().seq())
        .cloned()
}

/// Opens a managed stream to the owner's echo once both ends know enough of themselves to
/// punch (the owner's record names its home relays; both have heard from three peers) and the
/// client knows relays to build paths over. The client learns the owner's record first, as
/// resolving its name would.
fn open(
    net: &mut Net,
    owner_at: SocketAddr,
    len: usize,
) -> (vx6_core::node::StreamHandle, Vec<u8>) {
    let ready = |n: &Net| {
        owner_record(n).is_some()
            && n.hosts[CLIENT].node.reachability().1 >= 3
            && n.hosts[OWNER].node.reachability().1 >= 3
            && n.hosts[CLIENT].node.status().relays_known >= 3
    };
    assert!(
        net.run_until(Duration::from_secs(90), ready),
        "owner {:?} home relays {:?}, client {:?}",
        net.hosts[OWNER].node.reachability(),
        net.hosts[OWNER].node.home_relays(),
        net.hosts[CLIENT].node.reachability()
    );
    let owner = net.node_id(OWNER);
    let record = owner_record(net).expect("checked");
    let now = net.now;
    net.hosts[CLIENT].node.learn_records(now, [&record]);
    let data = payload(len, 3);
    let h = net.open_routed_at(
        CLIENT,
        owner_at,
        Some(owner),
        "echo",
        data.clone(),
        Route::Policy(POLICY),
    );
    net.hosts[CLIENT].apps.get_mut(&h).unwrap().hold = true;
    (h, data)
}

fn echoed(net: &Net, h: vx6_core::node::StreamHandle, data: &[u8]) -> bool {
    net.hosts[CLIENT].apps[&h].received.len() == data.len()
}

/// One side behind a NAT that keeps ports, the other behind one that picks a random port per
/// flow: the random-port side opens 256 side sockets towards the other, which probes 1024
/// random ports of its address; one probe lands, the socket it landed on is pinned, and the
/// managed link moves its live stream to the direct path through it.
#[test]
fn birthday_punching_goes_direct_against_a_random_port_nat_in_either_role() {
    for (seed, client, owner) in [
        (81, Nat::KeepsPort, Nat::RandomPort),
        (82, Nat::RandomPort, Nat::KeepsPort),
    ] {
        let (mut net, owner_at) = sites(seed, Some(client), Some(owner));
        let (h, data) = open(&mut net, owner_at, 200_000);
        let direct = net.run_until(Duration::from_secs(60), |n| {
            path(n) == Some(PathKind::Direct) && echoed(n, h, &data)
        });
        let (hard, easy) = match owner {
            Nat::RandomPort => (OWNER, CLIENT),
            Nat::KeepsPort => (CLIENT, OWNER),
        };
        let (hc, ec) = (
            net.hosts[hard].node.counters(),
            net.hosts[easy].node.counters(),
        );
        assert!(
            direct,
            "client {client:?}, owner {owner:?}: path {:?}, echoed {} of {}; hard side \
             attempts {} hits {}, easy side sprays {}",
            path(&net),
            net.hosts[CLIENT].apps[&h].received.len(),
            data.len(),
            hc.birthday_attempts,
            hc.birthday_hits,
            ec.birthday_sprays
        );
        assert_eq!(net.hosts[CLIENT].apps[&h].received, data);
        assert!(hc.birthday_attempts >= 1 && hc.birthday_hits >= 1);
        assert!(ec.birthday_sprays >= 1 && ec.birthday_attempts == 0);
        // The winning socket carries the direct session; the attempt's others are closed.
        assert_eq!(net.hosts[hard].node.side_sockets(), 1);
        assert_eq!(net.hosts[hard].side.len(), 1);
        assert!(net.hosts[hard].side_peak <= SIDE_SOCKETS + MAX_PINNED);
        assert!(net.hosts[easy].side_peak == 0);
        // More crosses the direct path.
        let more = payload(100_000, 4);
        let app = net.hosts[CLIENT].apps.get_mut(&h).unwrap();
        app.to_send.extend_from_slice(&more);
        app.hold = false;
        assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
        let app = &net.hosts[CLIENT].apps[&h];
        assert!(app.failed.is_none(), "{:?}", app.failed);
        assert_eq!(app.received.len(), data.len() + more.len());
        assert_eq!(path(&net), Some(PathKind::Direct));
    }
}

/// Both behind NATs that pick a random port per flow: no port of either side can be learned,
/// so the client hears so from the owner's answer, stops asking, and the stream stays on its
/// relay path, whole. The attempt's side sockets all close.
#[test]
fn two_random_port_nats_stay_relayed_and_say_so() {
    let (mut net, owner_at) = sites(83, Some(Nat::RandomPort), Some(Nat::RandomPort));
    let (h, data) = open(&mut net, owner_at, 100_000);
    let told = net.run_until(Duration::from_secs(60), |n| {
        n.hosts[CLIENT].node.counters().punches_impossible >= 1 && echoed(n, h, &data)
    });
    assert!(
        told,
        "path {:?}, client counters {:?}",
        path(&net),
        net.hosts[CLIENT].node.counters()
    );
    net.run_until(Duration::from_secs(20), |_| false);
    assert_eq!(path(&net), Some(PathKind::Relay));
    assert_eq!(net.hosts[CLIENT].apps[&h].received, data);
    assert_eq!(net.hosts[CLIENT].node.counters().birthday_hits, 0);
    for i in [CLIENT, OWNER] {
        assert_eq!(net.hosts[i].node.side_sockets(), 0, "host {i}");
        assert!(net.hosts[i].side.is_empty(), "host {i}");
        assert!(net.hosts[i].side_peak <= SIDE_SOCKETS);
    }
    // Neither sprayed at the other: the owner's answer said both sides pick ports.
    assert_eq!(net.hosts[OWNER].node.counters().birthday_sprays, 0);
}

/// However many managed links a client behind a random-port NAT keeps towards one owner, the
/// owner sprays random ports at it at most once per [`BIRTHDAY_GAP`] (a spray is
/// `SPRAY_PROBES` datagrams aimed at an address it was told: the bound on what a client can
/// aim at a victim), and the client runs one attempt of side sockets at a time.
#[test]
fn sprays_and_side_sockets_are_bounded_however_many_links_ask() {
    let (mut net, _) = sites(84, Some(Nat::RandomPort), None);
    let owner_at = net.hosts[OWNER].addr;
    assert!(net.run_until(Duration::from_secs(60), |n| {
        n.hosts[CLIENT].node.reachability().1 >= 3
            && n.hosts[CLIENT].node.status().relays_known >= 3
    }));
    // The direct route is cut: every link falls back to relays and asks for punching.
    net.cut.insert((CLIENT, OWNER));
    let owner = net.node_id(OWNER);
    let start = net.now;
    for id in 2..=9u32 {
        let now = net.now;
        let policy = Policy::default().with_settings("via=auto").unwrap();
        net.hosts[CLIENT].node.set_policy(now, PolicyId(id), policy);
        net.open_routed_at(
            CLIENT,
            owner_at,
            Some(owner),
            "echo",
            payload(1000, id as u8),
            Route::Policy(PolicyId(id)),
        );
    }
    net.run_until(Duration::from_secs(30), |_| false);
    let elapsed = net.now - start;
    let turns = 1 + elapsed.as_secs() / BIRTHDAY_GAP.as_secs();
    let sprays = net.hosts[OWNER].node.counters().birthday_sprays;
    let attempts = net.hosts[CLIENT].node.counters().birthday_attempts;
    assert!(
        sprays >= 1,
        "the owner never sprayed: client {:?} owner {:?}",
        net.hosts[CLIENT].node.counters(),
        net.hosts[OWNER].node.counters()
    );
    assert!(sprays <= turns, "{sprays} sprays in {elapsed:?}");
    assert!(attempts <= turns, "{attempts} attempts in {elapsed:?}");
    assert!(
        net.hosts[CLIENT].side_peak <= SIDE_SOCKETS,
        "{}",
        net.hosts[CLIENT].side_peak
    );
}

/// A client anyone can reach says so in its request: an owner behind a random-port NAT then
/// just probes it from its own socket, the client learns the owner's mapped port from those
/// probes and dials there; no side socket is opened on either side.
#[test]
fn an_open_client_needs_no_side_sockets() {
    let (mut net, owner_at) = sites(85, None, Some(Nat::RandomPort));
    let (h, data) = open(&mut net, owner_at, 100_000);
    assert!(
        net.run_until(Duration::from_secs(60), |n| {
            path(n) == Some(PathKind::Direct) && echoed(n, h, &data)
        }),
        "path {:?}, app {:?}, owner counters {:?}",
        path(&net),
        net.hosts[CLIENT].apps[&h].failed,
        net.hosts[OWNER].node.counters()
    );
    for i in [CLIENT, OWNER] {
        let c = net.hosts[i].node.counters();
        assert_eq!((c.birthday_attempts, c.birthday_sprays), (0, 0), "host {i}");
        assert_eq!(net.hosts[i].side_peak, 0, "host {i}");
    }
    assert!(net.hosts[OWNER].node.counters().punches_answered >= 1);
}

/// The direct path through a pinned side socket breaks for longer than a QUIC session lives
/// (the route between the two is cut for 40 s): the link falls back to relays and punches
/// again towards the same address. A new attempt replaces the stale pin, and once the route is
/// back the link goes direct through a new socket, with one side socket open in the end (none
/// leaked, the address routed through the new one).
#[test]
fn a_broken_punched_path_is_punched_again_through_a_new_socket() {
    let (mut net, owner_at) = sites(86, Some(Nat::RandomPort), Some(Nat::KeepsPort));
    let (h, data) = open(&mut net, owner_at, 50_000);
    assert!(net.run_until(Duration::from_secs(60), |n| {
        path(n) == Some(PathKind::Direct) && echoed(n, h, &data)
    }));
    let first: Vec<u16> = net.hosts[CLIENT].side.values().copied().collect();
    assert_eq!(first.len(), 1);
    net.cut.insert((CLIENT, OWNER));
    assert!(
        net.run_until(Duration::from_secs(60), |n| path(n)
            == Some(PathKind::Relay)),
        "never left the broken direct path"
    );
    net.run_until(Duration::from_secs(40), |_| false);
    net.cut.clear();
    let again = net.run_until(Duration::from_secs(120), |n| {
        path(n) == Some(PathKind::Direct) && n.hosts[CLIENT].node.counters().birthday_hits >= 2
    });
    let c = net.hosts[CLIENT].node.counters();
    assert!(
        again,
        "path {:?}, attempts {} hits {}, side sockets {:?}",
        path(&net),
        c.birthday_attempts,
        c.birthday_hits,
        net.hosts[CLIENT].side
    );
    let now: Vec<u16> = net.hosts[CLIENT].side.values().copied().collect();
    assert_eq!(now.len(), 1, "one side socket open: {now:?}");
    assert_ne!(now, first, "the stale socket was replaced");
    assert_eq!(net.hosts[CLIENT].node.side_sockets(), 1);
    // At most 3 per breakage: the first punch, and the punching after the cut.
    assert!(c.birthday_attempts <= 6, "{} attempts", c.birthday_attempts);
}
