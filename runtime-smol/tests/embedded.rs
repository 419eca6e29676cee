//! Embedded nodes, under smol and under async-std: an owner serves an in-process echo service,
//! a client that only knows the owner's address connects to `alice.echo` by name and moves
//! 50 MB through it; the bytes come back intact. Under smol both on its global executor and on
//! an executor the application runs on its own thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future;
use smol::io::split;
use smol::prelude::*;
use vx6_core::service::Access;
use vx6_core::{Cause, Identity};
use vx6_runtime_smol::{Node, NodeConfig, Runtime, SmolExecutor, SmolRuntime, VxStream};
use vx6_runtime_tokio_free::AsyncStdRuntime;
use vx6_runtime_tokio_free::async_io::AsyncIoRuntime;

const SIZE: usize = 50 * 1024 * 1024;

fn config(seed: u8, name: &str) -> NodeConfig {
    NodeConfig::new(
        Identity::from_secret_bytes(&[seed; 32]),
        name.parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
}

/// Echoes every accepted stream back to its sender.
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

/// Deterministic pseudo-random bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn connect_retrying(node: &Node, to: &str) -> VxStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match node.connect(to).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {to}: {e}; retrying");
                async_io_sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connect {to}: {e}"),
        }
    }
}

async fn async_io_sleep(d: Duration) {
    smol::Timer::after(d).await;
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
    let mut client_config = config(2, "bob");
    client_config.bootstrap.push(owner.local_addr());
    let client = Node::start(runtime.clone(), client_config).unwrap();

    let resolved = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.resolve("alice.echo").await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{e}; retrying");
                    async_io_sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(resolved.node, owner.id());
    assert_eq!(resolved.addresses[0].addr, owner.local_addr());

    let stream = connect_retrying(&client, "alice.echo").await;
    let data = payload(SIZE);
    let want = blake3::hash(&data);
    let (mut r, mut w) = split(stream);
    let send = async {
        for chunk in data.chunks(256 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.close().await.unwrap();
    };
    let receive = async {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let (mut total, mut largest) = (0, 0);
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
            largest = largest.max(n);
        }
        (total, largest, hasher.finalize())
    };
    let ((), (total, largest, got)) = future::zip(send, receive).await;
    assert_eq!(total, SIZE);
    assert_eq!(got, want);
    // A read takes what several packets brought (a QUIC packet carries at most 8952 bytes
    // here), not one packet's worth per call.
    assert!(largest > 9000, "largest read {largest} bytes");

    // The owner pinned nobody; the client pinned alice on first use and says so.
    let mut events = client.events();
    let mut pinned = false;
    while let Some(Some(e)) = future::or(async { Some(events.next().await) }, async {
        async_io_sleep(Duration::from_millis(100)).await;
        None
    })
    .await
    {
        if let vx6_runtime_smol::NodeEvent::NamePinned { username, node } = e {
            pinned |= username == "alice" && node == owner.id();
        }
    }
    assert!(pinned, "no NamePinned event");
    assert!(client.pins().get_name(&"alice".parse().unwrap()) == Some(owner.id()));

    // Failures carry their cause: a service that does not exist is refused like a forbidden
    // one, and the error says so as a type, not only as text.
    let Err(refused) = client.connect("alice.nosuch").await else {
        panic!("a service that does not exist was reached");
    };
    assert_eq!(refused.cause(), Some(Cause::AccessDenied), "{refused}");

    // `open` does not wait for the owner: what is written at once travels with the request.
    let mut early = client.open("alice.echo").unwrap();
    early.write_all(b"before any answer").await.unwrap();
    early.close().await.unwrap();
    let mut back = Vec::new();
    early.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"before any answer");
    // Its refusal is the first read's error, with the failure inside.
    let mut early = client.open("alice.nosuch").unwrap();
    let _ = early.write_all(b"lost").await;
    let e = early.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    let failure = e
        .get_ref()
        .and_then(|f| f.downcast_ref::<vx6_core::Failure>());
    assert_eq!(failure.map(|f| f.cause), Some(Cause::AccessDenied), "{e}");

    client.shutdown().await;
    owner.shutdown().await;
    let Err(after) = client.connect("alice.echo").await else {
        panic!("a node that shut down still connects");
    };
    assert_eq!(after.cause(), Some(Cause::Closed), "{after}");
}

#[test]
fn fifty_megabytes_by_name_under_smol() {
    smol::block_on(scenario(Arc::new(SmolRuntime::default())));
}

#[test]
fn fifty_megabytes_by_name_on_an_executor_the_application_runs() {
    let ex = Arc::new(smol::Executor::new());
    let runtime = Arc::new(AsyncIoRuntime(SmolExecutor::owned(ex.clone())));
    smol::block_on(ex.run(scenario(runtime)));
}

#[test]
fn fifty_megabytes_by_name_under_async_std() {
    async_std::task::block_on(scenario(Arc::new(AsyncStdRuntime::default())));
}
