//! An embedded node learns what stands in front of it as the daemon does: its peers (each at
//! its own loopback address) tell it the address they see it at, and dial it back from fresh
//! ports, which the runtime opens for each dial-back; nothing stands in front on loopback, so
//! the dial-backs arrive and it can be dialed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vx6_core::Identity;
use vx6_core::reach::{Mapping, Verdict};
use vx6_runtime_smol::{Node, NodeConfig, SmolRuntime};

fn config(seed: u8, ip: u8) -> NodeConfig {
    NodeConfig::new(
        Identity::from_secret_bytes(&[seed; 32]),
        format!("n{seed}").parse().unwrap(),
        format!("127.0.0.{ip}:0").parse().unwrap(),
    )
}

#[test]
fn peers_dial_an_embedded_node_back_from_fresh_ports() {
    smol::block_on(async {
        let runtime = Arc::new(SmolRuntime::default());
        let first = Node::start(runtime.clone(), config(40, 2)).unwrap();
        let mut peers = vec![];
        for i in 0..3u8 {
            let mut c = config(41 + i, 3 + i);
            c.bootstrap.push(first.local_addr());
            peers.push(Node::start(runtime.clone(), c).unwrap());
        }
        let mut c = config(50, 9);
        c.bootstrap.push(first.local_addr());
        let me = Node::start(runtime.clone(), c).unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let r = me.reachability();
            if r.dialable == [(true, Verdict::Reachable)] && !r.observed.is_empty() {
                assert_eq!(r.observed, vec![me.local_addr()]);
                assert_eq!(r.mappings, vec![(true, Mapping::None)]);
                assert!(r.home_relays.is_empty());
                break;
            }
            assert!(Instant::now() < deadline, "{r:?}");
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        let sent: u64 = std::iter::once(&first)
            .chain(&peers)
            .map(|p| p.status().counters.dial_backs_sent)
            .sum();
        assert!(sent >= 2, "dial-backs sent: {sent}");
        assert!(me.auto_links().is_empty());
        me.shutdown().await;
        for p in peers {
            p.shutdown().await;
        }
        first.shutdown().await;
    });
}
