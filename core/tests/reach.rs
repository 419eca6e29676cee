//! The rule for trusting observed addresses, and the mapping observations imply.
#![allow(clippy::disallowed_methods)] // Instant::now as an origin for virtual time

mod harness;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use harness::{Net, echo_services, identity, payload};
use proptest::prelude::*;
use vx6_core::node::{CircuitRole, Event, NodeConfig, Route};
use vx6_core::pins::Pins;
use vx6_core::reach::{
    DialBacks, MAX_REPORTERS, MIN_AGREE, MIN_VERDICT, Mapping, OBSERVATION_TTL, Observations,
    Verdict, birthday, dial_back_source,
};
use vx6_core::record::Record;
use vx6_core::service::{Access, ServiceTable};

fn v6(n: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)),
        port,
    )
}

fn v4(a: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, a)), port)
}

fn reporter(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, n, 0, 0, 0, 1))
}

proptest! {
    /// However many times each liar answers, and whatever it names, liars who are fewer than
    /// half of the reporters heard so far never get their address agreed, and once every
    /// honest reporter has answered, the truth is.
    #[test]
    fn a_minority_of_liars_cannot_choose_the_published_address(
        honest in MIN_AGREE..12usize,
        liars_share in 0.0f64..0.5,
        lies in prop::collection::vec((0u16..4, 1u16..), 1..40),
        order in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let truth = v6(1, 4433);
        let liars = ((honest as f64) * liars_share) as usize;
        let liars = liars.min(honest - 1);
        let mut o = Observations::default();
        let mut events: Vec<(IpAddr, SocketAddr)> = (0..honest)
            .map(|i| (reporter(i as u16), truth))
            .collect();
        for (k, (liar, port)) in lies.iter().enumerate() {
            if liars == 0 {
                break;
            }
            let who = reporter(1000 + (*liar as usize % liars) as u16);
            events.push((who, v6(2 + (k as u16 % 3), *port)));
        }
        // Any interleaving.
        let n = events.len();
        for i in 0..n {
            let j = (order.rotate_left(i as u32) as usize) % n;
            events.swap(i, j);
        }
        let mut heard = std::collections::BTreeSet::new();
        let mut lying = std::collections::BTreeSet::new();
        for (i, (who, seen)) in events.into_iter().enumerate() {
            o.record(who, seen, t0 + Duration::from_millis(i as u64));
            heard.insert(who);
            if seen != truth {
                lying.insert(who);
            }
            let agreed = o.agreed();
            if lying.len() * 2 < heard.len() {
                prop_assert!(agreed.iter().all(|a| *a == truth), "{agreed:?}");
            }
        }
        prop_assert_eq!(o.agreed(), vec![truth]);
    }

    /// The table of reporters stays bounded, dropping the oldest report first.
    #[test]
    fn reporters_are_bounded(n in 1u16..200) {
        let t0 = Instant::now();
        let mut o = Observations::default();
        for i in 0..n {
            o.record(reporter(i), v6(1, 4433), t0 + Duration::from_millis(u64::from(i)));
        }
        prop_assert!(o.len() <= MAX_REPORTERS);
        prop_assert_eq!(o.len(), usize::from(n).min(MAX_REPORTERS));
    }
}

#[test]
fn agreement_needs_enough_reporters_and_a_majority() {
    let t0 = Instant::now();
    let mut o = Observations::default();
    o.record(reporter(1), v6(1, 4433), t0);
    o.record(reporter(2), v6(1, 4433), t0);
    assert!(o.agreed().is_empty(), "two are not enough");
    o.record(reporter(3), v6(1, 4433), t0);
    assert_eq!(o.agreed(), vec![v6(1, 4433)]);
    for i in 4..7 {
        o.record(reporter(i), v6(9, 1), t0);
    }
    assert!(o.agreed().is_empty(), "three against three is no majority");
    // The same reporter answering again replaces its report rather than adding one.
    o.record(reporter(4), v6(1, 4433), t0);
    o.record(reporter(4), v6(1, 4433), t0);
    assert_eq!(o.agreed(), vec![v6(1, 4433)]);
    o.expire(t0 + OBSERVATION_TTL);
    assert!(o.is_empty());
}

#[test]
fn the_mapping_follows_what_peers_see() {
    let t0 = Instant::now();
    let local = [
        v6(1, 4433),
        SocketAddr::new("10.0.0.2".parse().unwrap(), 4433),
    ];
    let mut o = Observations::default();
    for i in 0..3 {
        o.record(reporter(i), v6(1, 4433), t0);
    }
    assert_eq!(o.mapping(&local), vec![(false, Mapping::None)]);
    let v4_reporter = |n: u8| IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
    let mut nat = o.clone();
    for i in 1..4 {
        nat.record(v4_reporter(i), v4(7, 4433), t0);
    }
    assert!(
        nat.mapping(&local)
            .contains(&(true, Mapping::PortPreserving))
    );
    let mut moved = o.clone();
    for i in 1..4 {
        moved.record(v4_reporter(i), v4(7, 61000), t0);
    }
    assert!(
        moved
            .mapping(&local)
            .contains(&(true, Mapping::EndpointIndependent))
    );
    let mut symmetric = o;
    for i in 1..4 {
        symmetric.record(v4_reporter(i), v4(7, 61000 + u16::from(i)), t0);
    }
    assert!(
        symmetric
            .mapping(&local)
            .contains(&(true, Mapping::EndpointDependent))
    );
}

/// On the virtual network (no translation), a node's DHT contacts tell it the address they
/// see; once three agree it is reported, and the mapping is "none".
#[test]
fn peers_tell_a_node_where_they_see_it() {
    let mut net = Net::new(41);
    for i in 0..6u8 {
        net.add_host(identity(60 + i), ServiceTable::new(false), Pins::default());
    }
    for i in 1..6 {
        let via = net.hosts[i - 1].addr;
        net.hosts[i].node.bootstrap(&[via]);
    }
    let me = net.hosts[5].addr;
    net.hosts[5].node.set_local_addresses(vec![me]);
    let done = net.run_until(Duration::from_secs(30), |n| {
        n.hosts[5].node.observed_addresses() == [me]
    });
    assert!(
        done,
        "{:?} {:?} table {}",
        net.hosts[5].node.observed_addresses(),
        net.hosts[5].node.reachability(),
        net.hosts[5].node.dht().table().len()
    );
    let (families, reporters) = net.hosts[5].node.reachability();
    assert_eq!(families, vec![(false, Mapping::None)]);
    assert!(reporters >= MIN_AGREE);
    assert!(
        net.hosts[5]
            .log
            .iter()
            .any(|e| matches!(e, Event::AddressesObserved { addresses } if addresses == &vec![me]))
    );
}

proptest! {
    /// Dial-backs can be forged (sent from anywhere) or withheld, so a verdict needs
    /// [`MIN_VERDICT`] peers and a majority of the family: liars fewer than the honest peers
    /// never turn the truth into its opposite, and once the honest peers are enough, the
    /// truth is the verdict.
    #[test]
    fn a_minority_of_liars_cannot_turn_the_verdict(
        truth in any::<bool>(),
        honest in MIN_VERDICT..10usize,
        liars_share in 0.0f64..0.5,
        order in any::<u64>(),
    ) {
        let liars = ((honest as f64) * liars_share / (1.0 - liars_share)) as usize;
        let liars = liars.min(honest - 1);
        let t0 = Instant::now();
        let mut peers: Vec<(u16, bool)> = (0..honest as u16).map(|i| (i, truth)).collect();
        peers.extend((0..liars as u16).map(|i| (1000 + i, !truth)));
        // Any order of arrival.
        let mut seed = order;
        for i in (1..peers.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            peers.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let lie = if truth { Verdict::Unreachable } else { Verdict::Reachable };
        let mut d = DialBacks::default();
        let (mut heard_honest, mut heard_liars) = (0, 0);
        for (n, arrived) in peers {
            d.record(reporter(n), arrived, t0);
            if arrived == truth { heard_honest += 1 } else { heard_liars += 1 }
            if heard_liars <= heard_honest {
                prop_assert_ne!(d.verdict(false), lie);
            }
        }
        let want = if truth { Verdict::Reachable } else { Verdict::Unreachable };
        prop_assert_eq!(d.verdict(false), want);
        prop_assert_eq!(d.verdict(true), Verdict::Unknown, "no IPv4 peer answered");
    }
}

proptest! {
    /// Behind a NAT that picks a port per peer, every honest reporter sees another port at the
    /// same address: that address is agreed (what the far side of a birthday punch sprays at),
    /// while no whole address is; liars fewer than the honest never choose it.
    #[test]
    fn a_random_port_nat_agrees_on_its_address_alone(
        honest in MIN_AGREE..12usize,
        liars_share in 0.0f64..0.5,
        ports in prop::collection::vec(1024u16.., 12),
        lie in 1u16..200,
    ) {
        let t0 = Instant::now();
        let liars = (((honest as f64) * liars_share) as usize).min(honest - 1);
        let mut o = Observations::default();
        for (i, port) in ports.iter().take(honest).enumerate() {
            o.record(reporter(i as u16), v4(1, *port), t0);
        }
        for i in 0..liars {
            o.record(reporter(1000 + i as u16), v4(lie as u8, 4433), t0);
        }
        prop_assert_eq!(o.agreed_ip(true), Some(v4(1, 0).ip()));
        prop_assert_eq!(o.agreed_ip(false), None, "no IPv6 reporter");
    }

    /// The ports a spray probes are distinct, in the range NATs hand out, as many as asked.
    #[test]
    fn spray_ports_are_distinct_and_in_range(n in 0usize..2048, seed in any::<u64>()) {
        let mut s = seed;
        let ports = birthday::spray_ports(n, || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s >> 11
        });
        prop_assert_eq!(ports.len(), n);
        prop_assert!(ports.iter().all(|p| *p >= birthday::LOWEST_PORT));
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        prop_assert_eq!(distinct.len(), n);
    }
}

#[test]
fn one_peer_is_not_a_verdict_and_outcomes_expire() {
    let t0 = Instant::now();
    let mut d = DialBacks::default();
    d.record(reporter(1), false, t0);
    assert_eq!(d.verdict(false), Verdict::Unknown);
    d.record(reporter(2), false, t0);
    assert_eq!(d.verdict(false), Verdict::Unknown);
    d.record(reporter(3), false, t0);
    assert_eq!(d.verdict(false), Verdict::Unreachable);
    d.expire(t0 + vx6_core::reach::OUTCOME_TTL);
    assert!(d.is_empty());
    for i in 0..100 {
        d.record(reporter(i), true, t0 + Duration::from_secs(u64::from(i)));
    }
    assert_eq!(d.len(), vx6_core::reach::MAX_OUTCOMES);
}

/// Six nodes, one of them (`firewalled`) behind a stateful firewall if asked; every node
/// bootstrapped from the one before.
fn six(seed: u64, firewalled: Option<usize>) -> Net {
    let mut net = Net::new(seed);
    for i in 0..6u8 {
        net.add_host(identity(60 + i), ServiceTable::new(false), Pins::default());
    }
    net.firewalled.extend(firewalled);
    for i in 1..6 {
        let via = net.hosts[i - 1].addr;
        net.hosts[i].node.bootstrap(&[via]);
    }
    net
}

/// With nothing in front of it, a node's contacts dial it back from ports it never sent to,
/// and the dial-backs arrive: it can be dialed. Behind a stateful firewall the same
/// dial-backs are dropped: it cannot, though its contacts answer it all the same.
#[test]
fn dial_backs_tell_an_open_node_from_a_firewalled_one() {
    for (firewalled, want) in [(None, Verdict::Reachable), (Some(5), Verdict::Unreachable)] {
        let mut net = six(43, firewalled);
        let done = net.run_until(Duration::from_secs(40), |n| {
            n.hosts[5].node.dial_back_verdicts() == [(false, want)]
        });
        assert!(
            done,
            "{firewalled:?}: {:?}, {} answered",
            net.hosts[5].node.dial_back_verdicts(),
            net.hosts[5].node.reachability().1
        );
        assert!(net.hosts[5].log.iter().any(
            |e| matches!(e, Event::Reachability { verdicts } if verdicts == &[(false, want)])
        ));
        let sent: u64 = (0..5)
            .map(|i| net.hosts[i].node.counters().dial_backs_sent)
            .sum();
        assert!(sent >= 2, "dial-backs sent: {sent}");
    }
}

fn relaying(c: &mut NodeConfig) {
    c.relay.enabled = true;
}

/// An owner behind a stateful firewall (no session can be opened to it): it learns so from
/// dial-backs, keeps sessions to home relays and names them in its record; a client's relay
/// path ends at one of them, which reaches the owner over the session the owner keeps. The
/// direct route, and relays the owner named not, cannot reach it.
#[test]
fn an_owner_nobody_can_dial_is_reached_through_the_relays_it_keeps() {
    const CLIENT: usize = 0;
    const OWNER: usize = 1;
    let mut net = Net::new(44);
    net.configure = relaying;
    net.add_host(identity(70), ServiceTable::new(false), Pins::default());
    net.add_host(identity(71), echo_services(Access::Public), Pins::default());
    for i in 0..5u8 {
        net.add_host(identity(72 + i), ServiceTable::new(false), Pins::default());
    }
    net.firewalled.insert(OWNER);
    let nowhere: SocketAddr = "[fd6a::99]:4433".parse().unwrap();
    // Nobody can add the owner to their table first, so it joins last, from a node that
    // knows the others: its lookups are how it meets anyone.
    let order = [CLIENT, 2, 3, 4, 5, 6, OWNER];
    for (k, &i) in order.iter().enumerate() {
        if i == OWNER {
            net.advance(Duration::from_secs(5));
        }
        if k > 0 {
            let via = net.hosts[order[k - 1]].addr;
            net.hosts[i].node.bootstrap(&[via]);
        }
        // The owner's address leads nowhere, as an address behind a NAT that gives every
        // peer another port does: only the sessions it keeps reach it.
        let addr = match i {
            OWNER => nowhere,
            _ => net.hosts[i].addr,
        };
        net.publish_at(i, addr);
    }
    let published = |n: &Net| {
        let owner = n.node_id(OWNER);
        let via = n.hosts[OWNER].node.home_relays().to_vec();
        !via.is_empty()
            && n.hosts[CLIENT].node.dht().store().iter().any(|r| {
                r.owner() == owner && matches!(r.record(), Record::Node(x) if x.via == via)
            })
    };
    assert!(
        net.run_until(Duration::from_secs(60), published),
        "verdicts {:?} ({} answers, table {}), home relays {:?}, client holds {:?}",
        net.hosts[OWNER].node.dial_back_verdicts(),
        net.hosts[OWNER].node.reachability().1,
        net.hosts[OWNER].node.dht().table().len(),
        net.hosts[OWNER].node.home_relays(),
        net.hosts[CLIENT]
            .node
            .dht()
            .store()
            .iter()
            .filter(|r| r.owner() == net.node_id(OWNER))
            .map(|r| r.record().clone())
            .collect::<Vec<_>>()
    );
    let home = net.hosts[OWNER].node.home_relays().to_vec();
    assert!(home.len() >= 2, "home relays {home:?}");
    assert!(
        net.hosts[OWNER]
            .log
            .iter()
            .any(|e| matches!(e, Event::HomeRelays { .. }))
    );

    // At its published address: nothing is there.
    let owner = net.node_id(OWNER);
    let h = net.open_routed_at(
        CLIENT,
        nowhere,
        Some(owner),
        "echo",
        payload(1000, 1),
        Route::Direct,
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    assert!(net.hosts[CLIENT].apps[&h].failed.is_some());

    let data = payload(200_000, 2);
    let h = net.open_routed_at(
        CLIENT,
        nowhere,
        Some(owner),
        "echo",
        data.clone(),
        Route::Relay { hops: 2 },
    );
    assert!(net.run_until(Duration::from_secs(30), |n| n.apps_done(CLIENT)));
    let app = &net.hosts[CLIENT].apps[&h];
    assert!(app.failed.is_none(), "{:?}", app.failed);
    assert_eq!(app.received, data);
    let circuits: Vec<_> = net.hosts[CLIENT]
        .node
        .status()
        .circuits
        .into_iter()
        .filter(|c| c.role == CircuitRole::Client)
        .collect();
    assert!(!circuits.is_empty());
    for c in &circuits {
        let exit = c.path.last().unwrap();
        assert!(
            home.contains(exit),
            "exit {exit} is not a home relay {home:?}"
        );
    }
}

#[test]
fn a_dial_back_leaves_from_the_nodes_own_address_when_it_has_one() {
    let v4_peer: SocketAddr = "198.51.100.7:4433".parse().unwrap();
    let v6_peer: SocketAddr = "[2001:db8::7]:4433".parse().unwrap();
    let own4: SocketAddr = "192.0.2.1:4433".parse().unwrap();
    let any6: SocketAddr = "[::]:4433".parse().unwrap();
    assert_eq!(
        dial_back_source(Some(own4), v4_peer),
        "192.0.2.1:0".parse().unwrap()
    );
    // Another family, or a wildcard socket: the kernel picks the address; the port is fresh.
    assert_eq!(
        dial_back_source(Some(own4), v6_peer),
        "[::]:0".parse().unwrap()
    );
    assert_eq!(
        dial_back_source(Some(any6), v4_peer),
        "0.0.0.0:0".parse().unwrap()
    );
    assert_eq!(dial_back_source(None, v6_peer), "[::]:0".parse().unwrap());
}

/// A node that could not be dialed keeps home relays; once its firewall is gone and peers'
/// dial-backs arrive again, its record names none and the sessions it kept only as a way in
/// are closed.
#[test]
fn home_relays_are_let_go_once_the_node_can_be_dialed() {
    const NODE: usize = 5;
    let mut net = Net::new(46);
    net.configure = relaying;
    for i in 0..6u8 {
        net.add_host(identity(80 + i), ServiceTable::new(false), Pins::default());
    }
    net.firewalled.insert(NODE);
    for i in 0..6 {
        if i > 0 {
            let via = net.hosts[i - 1].addr;
            net.hosts[i].node.bootstrap(&[via]);
        }
        let own = net.hosts[i].addr;
        net.publish_at(i, own);
    }
    net.run_until(Duration::from_secs(60), |n| {
        !n.hosts[NODE].node.home_relays().is_empty()
    });
    let home = net.hosts[NODE].node.home_relays().to_vec();
    assert!(!home.is_empty(), "never kept home relays");
    net.firewalled.clear();
    let freed = net.run_until(Duration::from_secs(1800), |n| {
        n.hosts[NODE].node.home_relays().is_empty()
    });
    assert!(freed, "{:?}", net.hosts[NODE].node.dial_back_verdicts());
    net.run_until(Duration::from_secs(5), |_| false);
    let kept: Vec<_> = net.hosts[NODE]
        .node
        .status()
        .sessions
        .into_iter()
        .filter(|s| s.outgoing && s.peer.is_some_and(|p| home.contains(&p)))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}
