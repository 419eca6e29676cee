//! The bounds of DESIGN.md §8b, each driven to its limit in virtual time: unauthenticated
//! handshakes (table size, per-prefix cap, deadline), streams per session and per node, and a
//! multiplexer peer that sends without reading.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{Net, echo_services, identity, payload};
use vx6_core::Cause;
use vx6_core::node::NodeConfig;
use vx6_core::pins::Pins;
use vx6_core::record::Transport;
use vx6_core::service::{Access, ServiceTable};
use vx6_core::session::mux::{CONTROL_BACKLOG, Frame, Mux, MuxClosed, MuxConfig};

const TRANSPORTS: [Transport; 2] = [Transport::Quic, Transport::Tcp];

fn pair(seed: u64, configure: fn(&mut NodeConfig)) -> Net {
    let mut net = Net::new(seed);
    net.configure = configure;
    net.add_host(identity(1), ServiceTable::new(false), Pins::default());
    net.add_host(identity(2), echo_services(Access::Public), Pins::default());
    net
}

/// A source address in its own /64.
fn flood_source(i: u32) -> SocketAddr {
    let [a, b, c, d] = i.to_be_bytes();
    format!(
        "[fd6b:{:x}:{:x}::1]:40000",
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d])
    )
    .parse()
    .unwrap()
}

#[test]
fn silent_tcp_connections_never_lock_out_an_honest_peer() {
    let mut net = pair(21, |c| {
        c.limits.max_handshakes = 64;
        c.limits.max_handshakes_per_prefix = 8;
    });
    let now = net.now;
    // 5000 connections that never say anything, from 5000 prefixes, then 100 from the honest
    // client's own /64 (the harness's hosts all sit in fd6a::/64).
    for i in 0..5000 {
        assert!(net.hosts[1].node.accept_tcp(now, flood_source(i)).is_some());
    }
    for port in 0..100u16 {
        let from = SocketAddr::new("fd6a::99".parse().unwrap(), 1000 + port);
        assert!(net.hosts[1].node.accept_tcp(now, from).is_some());
    }
    let status = net.hosts[1].node.status();
    assert_eq!(status.handshakes_in_flight, 64);
    // Past the table's 64, the oldest of all went; past the prefix's 8, the prefix's oldest.
    assert_eq!(status.counters.handshakes_evicted, (5000 - 64) + 100);
    // Unauthenticated sessions are counted, not listed.
    assert!(status.sessions.is_empty());

    // The honest client, in the flood's /64, gets in while the flood is held; its stream works.
    let owner = net.node_id(1);
    let h = net.open(
        0,
        1,
        Transport::Tcp,
        Some(owner),
        "echo",
        payload(20_000, 1),
    );
    assert!(net.run_until(Duration::from_secs(5), |n| n.apps_done(0)));
    let app = &net.hosts[0].apps[&h];
    assert_eq!(app.failed, None);
    assert_eq!(app.received, payload(20_000, 1));

    // The flood ages out on the handshake deadline.
    net.run_until(Duration::from_secs(11), |_| false);
    let status = net.hosts[1].node.status();
    assert_eq!(status.handshakes_in_flight, 0);
    assert_eq!(status.counters.handshakes_timed_out, 63);
    assert_eq!(status.sessions.iter().filter(|s| s.established).count(), 1);
}

#[test]
fn the_handshake_table_is_bounded_and_evicts_oldest_first() {
    let mut net = pair(22, |c| c.limits.max_handshakes = 3);
    let t0 = net.now;
    let sids: Vec<_> = (0..3)
        .map(|i| net.hosts[1].node.accept_tcp(t0, flood_source(i)).unwrap())
        .collect();
    net.hosts[1].node.accept_tcp(t0, flood_source(3)).unwrap();
    // The oldest is told to close its socket.
    let closed: Vec<_> = std::iter::from_fn(|| net.hosts[1].node.poll_event())
        .filter_map(|e| match e {
            vx6_core::node::Event::TcpClose { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![sids[0]]);
    assert_eq!(net.hosts[1].node.status().handshakes_in_flight, 3);
}

#[test]
fn a_full_session_refuses_new_streams_at_once() {
    for transport in TRANSPORTS {
        let mut net = pair(23, |c| {
            c.quic.max_streams = 4;
            c.mux.max_peer_streams = 4;
        });
        let owner = net.node_id(1);
        let held: Vec<_> = (0..4)
            .map(|i| net.open(0, 1, transport, Some(owner), "echo", payload(100, i)))
            .collect();
        for h in &held {
            net.hosts[0].apps.get_mut(h).unwrap().hold = true;
        }
        assert!(net.run_until(Duration::from_secs(5), |n| {
            held.iter()
                .all(|h| n.hosts[0].apps[h].received.len() == 100)
        }));
        let extra = net.open(0, 1, transport, Some(owner), "echo", payload(10, 9));
        // Refused in the same call, with its cause; nothing waits.
        let failed = net.hosts[0].node.poll_event();
        assert!(
            matches!(
                &failed,
                Some(vx6_core::node::Event::StreamFailed { stream, failure })
                    if *stream == extra && failure.cause == Cause::LimitReached
            ),
            "{transport:?}: {failed:?}"
        );
        assert_eq!(net.hosts[0].node.status().counters.streams_refused_limit, 1);
        // The held streams are unharmed, and once one ends a new stream fits again.
        let first = held[0];
        net.hosts[0].apps.get_mut(&first).unwrap().hold = false;
        assert!(net.run_until(Duration::from_secs(5), |n| n.hosts[0].apps[&first].eof));
        net.run_until(Duration::from_secs(1), |_| false);
        let again = net.open(0, 1, transport, Some(owner), "echo", payload(10, 10));
        assert!(net.run_until(Duration::from_secs(5), |n| n.hosts[0].apps[&again].eof));
        assert_eq!(net.hosts[0].apps[&again].failed, None, "{transport:?}");
    }
}

#[test]
fn the_node_stream_limit_refuses_both_roles() {
    // Client side: the client's own limit.
    let mut net = pair(24, |c| c.limits.max_streams = 2);
    let owner = net.node_id(1);
    let a = net.open(0, 1, Transport::Quic, Some(owner), "echo", payload(10, 1));
    let b = net.open(0, 1, Transport::Quic, Some(owner), "echo", payload(10, 2));
    let c = net.open(0, 1, Transport::Quic, Some(owner), "echo", payload(10, 3));
    for h in [a, b] {
        net.hosts[0].apps.get_mut(&h).unwrap().hold = true;
    }
    net.run_until(Duration::from_secs(2), |_| false);
    let failed = net.hosts[0].apps[&c].failed.clone().unwrap();
    assert_eq!(failed.cause, Cause::LimitReached, "{failed}");
    assert_eq!(net.hosts[0].apps[&a].failed, None);

    // Owner side: only the owner is limited; it answers "overloaded".
    for transport in TRANSPORTS {
        let mut net = Net::new(25);
        net.add_host(identity(1), ServiceTable::new(false), Pins::default());
        net.configure = |c| c.limits.max_streams = 2;
        net.add_host(identity(2), echo_services(Access::Public), Pins::default());
        let owner = net.node_id(1);
        let held: Vec<_> = (0..3)
            .map(|i| net.open(0, 1, transport, Some(owner), "echo", payload(10, i)))
            .collect();
        for h in &held {
            net.hosts[0].apps.get_mut(h).unwrap().hold = true;
        }
        net.run_until(Duration::from_secs(2), |_| false);
        let causes: Vec<_> = held
            .iter()
            .map(|h| net.hosts[0].apps[h].failed.as_ref().map(|f| f.cause))
            .collect();
        assert_eq!(
            causes,
            [None, None, Some(Cause::LimitReached)],
            "{transport:?}"
        );
        assert_eq!(net.hosts[1].node.status().counters.streams_refused_limit, 1);
    }
}

#[test]
fn a_peer_that_sends_without_reading_is_closed() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut mux = Mux::new(now, false, MuxConfig::default());
    let mut pings = bytes::BytesMut::new();
    for opaque in 0..100_000u64 {
        Frame::Ping { ack: false, opaque }.encode(&mut pings);
    }
    // The peer never takes our output (no poll_output), and keeps sending.
    for chunk in pings.chunks(4096) {
        mux.handle_input(now, chunk);
        if mux.closed().is_some() {
            break;
        }
    }
    assert!(
        matches!(mux.closed(), Some(MuxClosed::NotReading(n)) if *n > CONTROL_BACKLOG),
        "{:?}",
        mux.closed()
    );
    // What it holds stays within the bound (plus the frame that crossed it, and GOAWAY).
    let mut held = 0;
    mux.drain_output(|b| held = b.len());
    assert!(held <= 1024 * 1024 + CONTROL_BACKLOG + 64, "{held}");
}

#[test]
fn a_peer_opening_streams_past_the_limit_gets_resets_and_memory_stays_bounded() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut mux = Mux::new(
        now,
        false,
        MuxConfig {
            max_peer_streams: 16,
        },
    );
    let mut frames = bytes::BytesMut::new();
    for i in 0..1000u32 {
        Frame::Data {
            stream: 2 * i + 1,
            fin: false,
            payload: bytes::Bytes::from_static(b"x"),
        }
        .encode(&mut frames);
    }
    mux.handle_input(now, &frames);
    assert!(mux.closed().is_none());
    assert_eq!(mux.stream_count(), 16);
    let mut accepted = 0;
    while mux.accept_stream().is_some() {
        accepted += 1;
    }
    assert_eq!(accepted, 16);
}

#[test]
fn a_quic_initial_flood_meets_retry_and_the_handshake_table() {
    let mut net = pair(26, |c| {
        c.limits.retry_threshold = 16;
        c.limits.max_handshakes = 32;
    });
    let now = net.now;
    // Real client Initials, from a node that dials 500 addresses; each is then delivered to the
    // owner from its own source prefix.
    let mut flooder = vx6_core::node::Node::new(
        now,
        NodeConfig::new(
            identity(50),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
            [50; 32],
        ),
    )
    .unwrap();
    let mut initials = Vec::new();
    for i in 0..500u16 {
        let dial = vx6_core::node::Dial {
            addr: format!("[fd6d::{i:x}]:4433").parse().unwrap(),
            transport: Transport::Quic,
            expected: None,
        };
        flooder.open_stream(now, &dial, "echo".parse().unwrap());
    }
    let mut buf = Vec::new();
    while let Some(t) = flooder.poll_transmit(now, 1, &mut buf) {
        initials.push((t.destination, buf[..t.size].to_vec()));
    }
    assert_eq!(initials.len(), 500);
    for (i, (_, data)) in initials.iter().enumerate() {
        let from = flood_source(i as u32);
        net.hosts[1]
            .node
            .handle_datagram(now, from, None, None, data.as_slice().into());
    }
    let status = net.hosts[1].node.status();
    assert_eq!(status.handshakes_in_flight, 16);
    assert_eq!(status.counters.quic_retries, 500 - 16);

    // An honest client answers its Retry and gets through.
    let owner = net.node_id(1);
    let h = net.open(0, 1, Transport::Quic, Some(owner), "echo", payload(5000, 4));
    assert!(net.run_until(Duration::from_secs(5), |n| n.apps_done(0)));
    assert_eq!(net.hosts[0].apps[&h].failed, None);
    assert_eq!(net.hosts[0].apps[&h].received, payload(5000, 4));
    net.run_until(Duration::from_secs(11), |_| false);
    let status = net.hosts[1].node.status();
    assert_eq!(status.handshakes_in_flight, 0);
    assert_eq!(status.counters.handshakes_timed_out, 16);
}

#[test]
fn dht_requests_are_rate_limited_per_prefix_before_their_signature_is_checked() {
    use vx6_core::dht::datagram;
    use vx6_core::dht::message::{Body, DHT_VERSION, Message, Request};
    let mut net = pair(27, |c| {
        c.limits.dht_requests.per_second = 10;
        c.limits.dht_requests.burst = 20;
        c.limits.dht_requests.max_prefixes = 8;
    });
    let now = net.now;
    let target = net.node_id(1);
    let ping = |txid| {
        let message = Message {
            version: DHT_VERSION,
            txid,
            listen: None,
            body: Body::Request(Request::Ping),
        };
        datagram::encode(&identity(60), &target, &message).unwrap()
    };
    let answers = |net: &mut Net| {
        let mut buf = Vec::new();
        std::iter::from_fn(|| net.hosts[1].node.poll_transmit(net.now, 1, &mut buf)).count()
    };
    // One source at full speed: the burst is answered, the rest dropped unread.
    let from: SocketAddr = "[fd6e::1]:5000".parse().unwrap();
    for txid in 0..1000 {
        net.hosts[1]
            .node
            .handle_datagram(now, from, None, None, ping(txid).as_slice().into());
    }
    assert_eq!(answers(&mut net), 20);
    assert_eq!(net.hosts[1].node.status().counters.dht_rate_limited, 980);
    // A second later, the rate's worth more.
    net.advance(Duration::from_secs(1));
    let later = net.now;
    for txid in 1000..1100 {
        net.hosts[1]
            .node
            .handle_datagram(later, from, None, None, ping(txid).as_slice().into());
    }
    assert_eq!(answers(&mut net), 10);
    // Many prefixes: past the table's bound they share one bucket, so the total stays bounded.
    for i in 0..1000u32 {
        net.hosts[1].node.handle_datagram(
            later,
            flood_source(i),
            None,
            None,
            ping(5000 + u64::from(i)).as_slice().into(),
        );
    }
    let answered = answers(&mut net);
    assert!(answered <= 8 * 20 + 20, "{answered}");
    // An honest source outside the flood is still served.
    let honest: SocketAddr = "[fd6f::1]:5000".parse().unwrap();
    net.advance(Duration::from_secs(3));
    let t = net.now;
    net.hosts[1]
        .node
        .handle_datagram(t, honest, None, None, ping(9999).as_slice().into());
    assert_eq!(answers(&mut net), 1);
}

#[test]
fn datagrams_of_no_known_kind_are_dropped_and_counted() {
    let mut net = pair(28, |_| {});
    let now = net.now;
    let from: SocketAddr = "[fd6e::1]:5000".parse().unwrap();
    for first in [0x00u8, 0x20, 0x3f] {
        net.hosts[1]
            .node
            .handle_datagram(now, from, None, None, [first; 64].as_slice().into());
    }
    net.hosts[1]
        .node
        .handle_datagram(now, from, None, None, [].as_slice().into());
    assert_eq!(net.hosts[1].node.status().counters.datagrams_dropped, 4);
    // In the relay header's range: a label nobody handed out, and a reserved kind.
    for d in [[0x10u8, 0, 0, 0, 9], [0x13, 0, 0, 0, 9]] {
        net.hosts[1]
            .node
            .handle_datagram(now, from, None, None, d.as_slice().into());
    }
    let c = net.hosts[1].node.status().counters;
    assert_eq!((c.relay_unknown_label, c.relay_malformed), (1, 1));
}

/// Answers to this node's own requests, from where they went, pass the DHT rate limit (peers
/// sharing a prefix would otherwise fail its lookups); answers nobody asked for do not.
#[test]
fn dht_answers_this_node_awaits_pass_the_rate_limit_and_unsolicited_ones_do_not() {
    use vx6_core::dht::datagram;
    use vx6_core::dht::message::{Body, DHT_VERSION, Message, Response};
    let mut net = pair(29, |c| {
        c.limits.dht_requests.per_second = 1;
        c.limits.dht_requests.burst = 1;
    });
    let now = net.now;
    let peer = net.hosts[1].addr;
    let me = net.node_id(0);
    // Whatever comes from the peer's prefix has used up its bucket...
    let pong = |txid| {
        let message = Message {
            version: DHT_VERSION,
            txid,
            listen: None,
            body: Body::Response(Response::Pong),
        };
        datagram::encode(&identity(61), &me, &message).unwrap()
    };
    for txid in 0..50 {
        net.hosts[0]
            .node
            .handle_datagram(now, peer, None, None, pong(txid).as_slice().into());
    }
    let limited = net.hosts[0].node.status().counters.dht_rate_limited;
    assert_eq!(limited, 49, "unsolicited answers are limited like requests");
    // ...yet the node's own bootstrap ping to that peer is answered and counted as such.
    net.hosts[0].node.bootstrap(&[peer]);
    net.run_until(Duration::from_secs(2), |n| {
        n.hosts[0].node.dht().table().contacts().next().is_some()
    });
    assert!(
        net.hosts[0].node.dht().table().contacts().next().is_some(),
        "the peer's answer got through"
    );
    assert_eq!(
        net.hosts[0].node.status().counters.dht_rate_limited,
        limited
    );
}

/// Dial-backs cost the runtime a socket each: a flood of requests from one prefix gets 16 at
/// once and 4 a second; from thousands of prefixes, 100 at once and 50 a second in all. Every
/// request is still answered (rate-limited as probes are), saying whether a dial-back comes.
#[test]
fn dial_back_requests_are_bounded_per_prefix_and_in_all() {
    use vx6_core::relay::header;
    let mut net = pair(29, |_| {});
    let now = net.now;
    let node = &mut net.hosts[1].node;
    let one: SocketAddr = "[fd6c::1]:4000".parse().unwrap();
    let mut sent = 0;
    let mut promised = 0;
    let mut buf = Vec::new();
    for nonce in 0..40u64 {
        let probe = header::dial_back_probe(nonce);
        node.handle_datagram(now, one, None, None, probe.as_slice().into());
        while node.poll_dial_back().is_some() {
            sent += 1;
        }
        // Every request is answered; only the answers of those dialed back promise one.
        let answer = node.poll_transmit(now, 1, &mut buf).expect("answered");
        assert!(answer.size + header::dial_back(nonce).len() <= probe.len());
        if buf[header::HEADER_LEN] & header::PROBE_DIAL_BACK_COMING != 0 {
            promised += 1;
        }
    }
    assert_eq!(sent, 16, "one prefix: its burst");
    assert_eq!(promised, 16, "a declined request's answer promises nothing");
    let c = node.status().counters;
    assert_eq!((c.dial_backs_sent, c.dial_backs_declined), (16, 24));
    for i in 0..3000 {
        let probe = header::dial_back_probe(u64::from(i));
        node.handle_datagram(now, flood_source(i), None, None, probe.as_slice().into());
        while node.poll_dial_back().is_some() {
            sent += 1;
        }
    }
    assert_eq!(sent, 100, "many prefixes: the total burst");
    let later = now + Duration::from_secs(2);
    for i in 3000..3400 {
        let probe = header::dial_back_probe(u64::from(i));
        node.handle_datagram(later, flood_source(i), None, None, probe.as_slice().into());
        while node.poll_dial_back().is_some() {
            sent += 1;
        }
    }
    assert_eq!(
        sent, 200,
        "two seconds later: 50 a second more, up to the burst"
    );
}
