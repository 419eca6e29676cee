//! Arbitrary bytes arriving at a node from the network, as UDP datagrams (QUIC) and as the byte
//! stream of an accepted TCP session (TLS): nothing may panic, and the node keeps working.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vx6_core::node::{Node, NodeConfig};
use vx6_core::Identity;

fn node(now: Instant) -> Node {
    let mut config = NodeConfig::new(
        Identity::from_secret_bytes(&[5; 32]),
        Arc::new(rustls::crypto::ring::default_provider()),
        [1; 32],
    );
    config.limits.max_sessions = 8;
    Node::new(now, config).expect("node starts")
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let now = *EPOCH.get_or_init(Instant::now);
    let mut n = node(now);
    let from = "[fd6a::9]:4433".parse().unwrap();
    // Datagrams: chunks separated by 0xff 0xff.
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate() {
        n.handle_datagram(now + Duration::from_millis(i as u64), from, None, None, BytesMut::from(chunk));
    }
    let mut buf = Vec::new();
    while n.poll_transmit(now, 1, &mut buf).is_some() {}
    // The same bytes as a TCP session's stream.
    if let Some(sid) = n.accept_tcp(now, from) {
        n.handle_tcp_data(now, sid, data);
        let mut out = Vec::new();
        let _ = n.poll_tcp_transmit(sid, &mut out);
    }
    n.handle_timeout(now + Duration::from_secs(120));
    while n.poll_event().is_some() {}
});
