//! The rule for trusting observed addresses, and the mapping observations imply.
#![allow(clippy::disallowed_methods)] // Instant::now as an origin for virtual time

mod harness;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use harness::{Net, identity};
use proptest::prelude::*;
use vx6_core::node::Event;
use vx6_core::pins::Pins;
use vx6_core::reach::{MAX_REPORTERS, MIN_AGREE, Mapping, OBSERVATION_TTL, Observations};
use vx6_core::service::ServiceTable;

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
