//! An embedded client reaches an embedded owner through two embedded relays (the embedding
//! API's `connect_via` and `NodeConfig::relay`), and the bytes come back intact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future;
use smol::io::split;
use smol::prelude::*;
use vx6_core::Identity;
use vx6_core::node::CircuitRole;
use vx6_core::service::Access;
use vx6_runtime_smol::{Node, NodeConfig, RelayConfig, Route, Runtime, SmolRuntime, VxStream};

fn config(seed: u8, name: &str) -> NodeConfig {
    NodeConfig::new(
        Identity::from_secret_bytes(&[seed; 32]),
        name.parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
}

async fn echo(stream: VxStream) {
    let (mut r, mut w) = split(stream);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await.unwrap();
    }
    w.close().await.unwrap();
}

async fn scenario(runtime: Arc<dyn Runtime>) {
    let owner = Node::start(runtime.clone(), config(1, "alice")).unwrap();
    let incoming = owner
        .serve("echo".parse().unwrap(), Access::Public)
        .unwrap();
    let rt = runtime.clone();
    runtime.spawn(Box::pin(async move {
        while let Some(stream) = incoming.accept().await {
            rt.spawn(Box::pin(echo(stream)));
        }
    }));
    let mut relays = Vec::new();
    for i in 0..3u8 {
        let mut c = config(10 + i, &format!("relay{i}"));
        c.bootstrap.push(owner.local_addr());
        c.relay = RelayConfig {
            enabled: true,
            ..RelayConfig::default()
        };
        relays.push(Node::start(runtime.clone(), c).unwrap());
    }
    let mut c = config(2, "bob");
    c.bootstrap.push(owner.local_addr());
    let client = Node::start(runtime.clone(), c).unwrap();

    let route = Route::Relay { hops: 2 };
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match client.connect_via("alice.echo", route).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect: {e}; retrying");
                smol::Timer::after(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("connect through relays: {e}"),
        }
    };
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut r, mut w) = split(stream);
    let send = async {
        w.write_all(&data).await.unwrap();
        w.close().await.unwrap();
    };
    let receive = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = future::zip(send, receive).await;
    assert!(got == data, "the bytes came back changed");

    let status = client.status();
    let circuits: Vec<_> = status
        .circuits
        .iter()
        .filter(|c| c.role == CircuitRole::Client)
        .collect();
    assert!(
        circuits.iter().any(|c| c.active && c.path.len() == 2),
        "{circuits:?}"
    );
    assert!(
        status
            .sessions
            .iter()
            .all(|s| s.peer != Some(owner.id()) || vx6_core::node::is_virtual(&s.remote)),
        "the client has no direct session with the owner"
    );
    managed_connection_and_metrics(&client).await;
    client.shutdown().await;
    for r in relays {
        r.shutdown().await;
    }
    owner.shutdown().await;
}

/// A connection under a path policy (the direct path a circuit of no relays, a relay path
/// beside it), and the metrics registry, as an embedding application gets them.
async fn managed_connection_and_metrics(client: &Node) {
    use vx6_core::policy::{PathKind, Policy, PolicyId};
    let id = PolicyId(7);
    let policy = Policy::default()
        .with_settings("via=direct,max-loss=5%")
        .unwrap();
    client.set_policy(id, policy);
    let mut stream = client
        .connect_via("alice.echo", Route::Policy(id))
        .await
        .unwrap();
    stream.write_all(b"managed").await.unwrap();
    let mut back = [0u8; 7];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"managed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.policy_status(id);
        let relay_measured = status.as_ref().is_some_and(|s| {
            s.paths
                .iter()
                .any(|p| p.0 == PathKind::Relay && p.2.samples > 0)
        });
        if status.as_ref().and_then(|s| s.path) == Some(PathKind::Direct) && relay_measured {
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    let mut text = String::new();
    vx6_runtime_smol::prometheus_client::encoding::text::encode(&mut text, &client.metrics())
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value(r#"vx6_forwarded_bytes_total{path="relay",direction="out"}"#) >= 5_000_000.0);
    assert!(value(r#"vx6_forwarded_bytes_total{path="direct",direction="out"}"#) >= 7.0);
    assert!(value(r#"vx6_circuits{role="client"}"#) >= 2.0);
    drop(stream);
}

#[test]
fn through_two_relays_under_smol() {
    smol::block_on(scenario(Arc::new(SmolRuntime::default())));
}
