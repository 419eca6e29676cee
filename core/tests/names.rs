//! Named direct mode in virtual time: nodes enter the DHT through any live peer (by address),
//! an owner publishes `alice.echo`, and a client that never met it resolves the name and
//! streams to it. Contested names are refused with the candidates listed.

mod harness;

use std::time::Duration;

use harness::{ECHO_PORT, Net, UNIX_START, identity, payload};
use vx6_core::node::Event;
use vx6_core::pins::Pins;
use vx6_core::record::{NameClaim, NodeAddress, NodeRecord, ServiceRecord, Transport};
use vx6_core::resolve::Target;
use vx6_core::service::{Access, Backend, Service, ServiceTable};
use vx6_core::{Identity, Record, SignedRecord};

fn owner_records(id: &Identity, addr: std::net::SocketAddr, name: &str) -> Vec<SignedRecord> {
    let expires_at = UNIX_START + 3600;
    [
        Record::Node(NodeRecord {
            seq: 1,
            expires_at,
            addresses: vec![NodeAddress {
                transport: Transport::Quic,
                addr,
            }],
            relay: None,
            via: Vec::new(),
        }),
        Record::Service(ServiceRecord {
            seq: 1,
            expires_at,
            service: "echo".parse().unwrap(),
        }),
        Record::NameClaim(NameClaim {
            seq: 1,
            expires_at,
            username: name.parse().unwrap(),
        }),
    ]
    .into_iter()
    .map(|r| SignedRecord::sign(id, r).unwrap())
    .collect()
}

fn echo_service() -> ServiceTable {
    let mut t = ServiceTable::new(false);
    t.add(
        "echo".parse().unwrap(),
        Service {
            target: Backend::Tcp(format!("127.0.0.1:{ECHO_PORT}").parse().unwrap()),
            access: Access::Public,
        },
    )
    .unwrap();
    t
}

/// A chain of nodes, each entering through the previous one's address only.
fn network(net: &mut Net, count: u8) {
    for i in 0..count {
        let services = if i == 1 {
            echo_service()
        } else {
            ServiceTable::new(false)
        };
        net.add_host(identity(40 + i), services, Pins::default());
    }
    for i in 1..count as usize {
        let via = net.hosts[i - 1].addr;
        net.hosts[i].node.bootstrap(&[via]);
    }
    net.run_until(Duration::from_secs(5), |_| false);
}

#[test]
fn a_client_resolves_a_name_it_never_met_and_streams_to_it() {
    let mut net = Net::new(31);
    network(&mut net, 6);
    let now = net.now;
    let owner_addr = net.hosts[1].addr;
    let records = owner_records(&identity(41), owner_addr, "alice");
    net.hosts[1].node.publish(now, &records);
    net.run_until(Duration::from_secs(5), |_| false);

    // The client (last in the chain) knows only its own bootstrap peer.
    let client = 5;
    let now = net.now;
    let target: Target = "alice.echo".parse().unwrap();
    let h = net.hosts[client]
        .node
        .open_stream_by_name(now, target, Transport::Quic);
    net.hosts[client].apps.insert(
        h,
        harness::App {
            to_send: payload(50_000, 9),
            ..Default::default()
        },
    );
    assert!(net.run_until(Duration::from_secs(20), |n| n.apps_done(client)));
    let app = &net.hosts[client].apps[&h];
    assert_eq!(app.failed, None);
    assert_eq!(app.received, payload(50_000, 9));
    let owner = identity(41).node_id();
    assert!(net.hosts[client].log.iter().any(|e| matches!(
        e,
        Event::NamePinned { username, node } if username == "alice" && *node == owner
    )));
    assert_eq!(
        net.hosts[client].node.status().sessions[0].peer,
        Some(owner)
    );
    // The next stream to the same name uses the answer just found: resolved at once, with no
    // lookup (a forward resolves per connection).
    let now = net.now;
    let target: Target = "alice.echo".parse().unwrap();
    net.hosts[client]
        .node
        .open_stream_by_name(now, target, Transport::Quic);
    let first = net.hosts[client].node.poll_event();
    assert!(
        matches!(first, Some(Event::Resolved { result: Ok((node, _)), .. }) if node == owner),
        "{first:?}"
    );
}

#[test]
fn a_contested_name_is_refused_with_the_candidates() {
    let mut net = Net::new(32);
    network(&mut net, 5);
    let now = net.now;
    let (a, b) = (net.hosts[1].addr, net.hosts[2].addr);
    net.hosts[1]
        .node
        .publish(now, &owner_records(&identity(41), a, "bob"));
    net.hosts[2]
        .node
        .publish(now, &owner_records(&identity(42), b, "bob"));
    net.run_until(Duration::from_secs(5), |_| false);
    let now = net.now;
    let id = net.hosts[4].node.resolve(now, "bob.echo".parse().unwrap());
    net.run_until(Duration::from_secs(10), |_| false);
    let result = net.hosts[4].log.iter().find_map(|e| match e {
        Event::Resolved {
            id: got, result, ..
        } if *got == id => Some(result.clone()),
        _ => None,
    });
    let err = result.expect("resolution finished").unwrap_err();
    assert_eq!(err.cause, vx6_core::Cause::NameAmbiguous, "{err}");
    assert!(err.detail.contains(&identity(41).node_id().to_string()));
    assert!(err.detail.contains(&identity(42).node_id().to_string()));
    // The self-authenticating form picks one without ambiguity.
    let prefix = &identity(42).node_id().to_string()[..10];
    let id = net.hosts[4]
        .node
        .resolve(net.now, format!("bob.echo.{prefix}").parse().unwrap());
    net.run_until(Duration::from_secs(10), |_| false);
    let ok = net.hosts[4].log.iter().find_map(|e| match e {
        Event::Resolved {
            id: got,
            result: Ok((node, _)),
            ..
        } if *got == id => Some(*node),
        _ => None,
    });
    assert_eq!(ok, Some(identity(42).node_id()));
}

fn holds_all(net: &Net, host: usize, records: &[SignedRecord]) -> bool {
    let store = net.hosts[host].node.dht().store();
    records
        .iter()
        .all(|r| store.iter().any(|x| x.as_bytes() == r.as_bytes()))
}

#[test]
fn first_contact_exchanges_record_digests() {
    let mut net = Net::new(33);
    net.add_host(identity(50), echo_service(), Pins::default());
    net.add_host(identity(51), ServiceTable::new(false), Pins::default());
    // Alone, the owner can only keep its records.
    let now = net.now;
    let records = owner_records(&identity(50), net.hosts[0].addr, "alice");
    net.hosts[0].node.publish(now, &records);
    net.run_until(Duration::from_secs(1), |_| false);
    assert!(!holds_all(&net, 1, &records));
    // The newcomer gets them by syncing with its first contact, without looking anything up.
    let via = net.hosts[0].addr;
    net.hosts[1].node.bootstrap(&[via]);
    assert!(net.run_until(Duration::from_secs(5), |n| holds_all(n, 1, &records)));
}

#[test]
fn periodic_sync_repairs_a_store_that_was_lost() {
    let mut net = Net::new(34);
    network(&mut net, 3);
    // Every datagram of the publish is lost: only the owner holds its records.
    net.loss = 1.0;
    let now = net.now;
    let records = owner_records(&identity(41), net.hosts[1].addr, "alice");
    net.hosts[1].node.publish(now, &records);
    net.run_until(Duration::from_secs(10), |_| false);
    net.loss = 0.0;
    assert!(!holds_all(&net, 0, &records) && !holds_all(&net, 2, &records));
    // Maintenance rounds sync with neighbours: the records reach both.
    let repaired = net.run_until(2 * vx6_core::node::MAINTENANCE_INTERVAL, |n| {
        holds_all(n, 0, &records) && holds_all(n, 2, &records)
    });
    assert!(repaired);
}

/// A node publishes as it starts, usually before its bootstrap peer has answered: those records
/// reach the nodes closest to their keys once the first peer answers, not only the bootstrap
/// peer (by sync) and not half an hour later at the next republish.
#[test]
fn records_published_before_any_peer_answered_are_stored_once_one_does() {
    let mut net = Net::new(33);
    network(&mut net, 5);
    let owner = net.add_host(identity(50), echo_service(), Pins::default());
    let now = net.now;
    let records = owner_records(&identity(50), net.hosts[owner].addr, "late");
    net.hosts[owner].node.publish(now, &records);
    let via = net.hosts[4].addr;
    net.hosts[owner].node.bootstrap(&[via]);
    net.run_until(Duration::from_secs(5), |_| false);
    let claim = records
        .iter()
        .find(|r| matches!(r.record(), Record::NameClaim(_)))
        .unwrap();
    let holders = (0..5)
        .filter(|i| {
            net.hosts[*i]
                .node
                .dht()
                .store()
                .iter()
                .any(|r| r.as_bytes() == claim.as_bytes())
        })
        .count();
    assert_eq!(
        holders, 5,
        "the claim reached {holders} of the 5 other nodes"
    );
}
