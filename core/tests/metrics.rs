//! The node's metrics: bounded labels (a thousand peers and streams add no series), and what
//! they count matches what moved.

mod harness;

use std::time::Duration;

use harness::{Net, echo_services, identity, payload};
use prometheus_client::encoding::text::encode;
use vx6_core::Identity;
use vx6_core::pins::Pins;
use vx6_core::record::Transport;
use vx6_core::service::{Access, ServiceTable};

const OWNER: usize = 0;

fn exposition(net: &Net, host: usize) -> String {
    let mut text = String::new();
    encode(&mut text, &net.hosts[host].node.metrics()).unwrap();
    text
}

/// The series in an exposition: one per sample line.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Every host on the virtual network shares one /64: room for a thousand of them.
fn roomy(c: &mut vx6_core::node::NodeConfig) {
    c.limits.max_sessions_per_prefix = 2000;
    c.limits.max_handshakes_per_prefix = 2000;
    c.limits.max_handshakes = 2000;
    c.limits.max_sessions = 2000;
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse::<f64>()
        .unwrap() as u64
}

#[test]
fn a_thousand_peers_and_streams_add_no_series() {
    let mut net = Net::new(31);
    net.configure = roomy;
    net.add_host(identity(1), echo_services(Access::Public), Pins::default());
    let first = net.add_host(identity(2), ServiceTable::new(false), Pins::default());
    net.open(
        first,
        OWNER,
        Transport::Quic,
        None,
        "echo",
        payload(1000, 1),
    );
    assert!(net.run_until(Duration::from_secs(10), |n| n.apps_done(first)));
    let before = series(&exposition(&net, OWNER));
    assert!(before.len() > 50, "{before:?}");
    for i in 0..1000u32 {
        let mut secret = [9u8; 32];
        secret[..4].copy_from_slice(&i.to_be_bytes());
        let h = net.add_host(
            Identity::from_secret_bytes(&secret),
            ServiceTable::new(false),
            Pins::default(),
        );
        net.open(
            h,
            OWNER,
            Transport::Quic,
            None,
            "echo",
            payload(100, i as u8),
        );
    }
    assert!(net.run_until(Duration::from_secs(60), |n| {
        (first + 1..n.hosts.len()).all(|h| n.apps_done(h))
    }));
    let text = exposition(&net, OWNER);
    assert!(value(&text, "vx6_streams_opened_total") >= 1001, "{text}");
    assert_eq!(series(&text), before, "the same series, whatever the load");
}

#[test]
fn forwarded_bytes_count_what_the_streams_carried() {
    let mut net = Net::new(32);
    net.add_host(identity(1), echo_services(Access::Public), Pins::default());
    let client = net.add_host(identity(2), ServiceTable::new(false), Pins::default());
    net.open(
        client,
        OWNER,
        Transport::Quic,
        None,
        "echo",
        payload(300_000, 3),
    );
    assert!(net.run_until(Duration::from_secs(20), |n| n.apps_done(client)));
    let text = exposition(&net, client);
    let out = value(
        &text,
        r#"vx6_forwarded_bytes_total{path="direct",direction="out"}"#,
    );
    let back = value(
        &text,
        r#"vx6_forwarded_bytes_total{path="direct",direction="in"}"#,
    );
    assert_eq!((out, back), (300_000, 300_000));
    assert_eq!(
        value(
            &text,
            r#"vx6_forwarded_bytes_total{path="relay",direction="out"}"#
        ),
        0
    );
    assert!(
        value(
            &text,
            r#"vx6_datagrams_total{path="direct",direction="out"}"#
        ) > 200
    );
    assert_eq!(
        value(&text, r#"vx6_connect_seconds_count{path="direct"}"#),
        1
    );
    assert_eq!(value(&text, r#"vx6_sessions{transport="quic"}"#), 1);
}
