//! A reader that stalls does not make the nodes buffer without bound: flow control holds the
//! sender back. One test per binary, because it reads the process's peak memory.
//!
//!   VX6_BACKPRESSURE_MB=1024 cargo test --release -p vx6-runtime-smol --test backpressure -- --nocapture

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use smol::future;
use smol::prelude::*;
use vx6_core::Identity;
use vx6_core::service::Access;
use vx6_runtime_smol::{NodeConfig, start};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

#[test]
fn a_stalled_reader_keeps_memory_bounded() {
    let mb: usize = std::env::var("VX6_BACKPRESSURE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mb * 1024 * 1024;
    smol::block_on(async {
        let config = |seed: u8, name: &str| {
            NodeConfig::new(
                Identity::from_secret_bytes(&[seed; 32]),
                name.parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
        };
        let owner = start(config(11, "sink")).unwrap();
        let incoming = owner
            .serve("sink".parse().unwrap(), Access::Public)
            .unwrap();
        let client = start(config(12, "source")).unwrap();
        let to = format!("{}@{}/sink", owner.id(), owner.local_addr());
        let before = peak_rss_mib();
        let sent_so_far = AtomicUsize::new(0);
        let mut sent_at_wake = 0;

        let reader = async {
            let mut stream = incoming.accept().await.unwrap();
            // Asleep while the sender pushes as hard as it can, then slow: 64 KiB per 1 ms.
            smol::Timer::after(Duration::from_secs(3)).await;
            sent_at_wake = sent_so_far.load(Ordering::Relaxed);
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            let mut stall = 0u32;
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
                stall += 1;
                if stall.is_multiple_of(4) {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
            }
            got
        };
        let writer = async {
            let mut stream = client.connect(&to).await.unwrap();
            let mut chunk = vec![0u8; 256 * 1024];
            let mut sent = 0;
            while sent < total {
                chunk[..8].copy_from_slice(&(sent as u64).to_le_bytes());
                stream.write_all(&chunk).await.unwrap();
                sent += chunk.len();
                sent_so_far.store(sent, Ordering::Relaxed);
            }
            stream.close().await.unwrap();
            // Keep the stream until the reader is done: dropping it early would not change
            // what is buffered, but keeps the test about flow control only.
            stream
        };
        let (got, _stream) = future::zip(reader, writer).await;
        assert_eq!(got, total);
        // While the reader slept, the sender got no further than the flow-control windows.
        assert!(
            sent_at_wake <= 64 * 1024 * 1024,
            "{sent_at_wake} bytes accepted while the reader slept"
        );
        let growth = peak_rss_mib() - before;
        eprintln!(
            "{mb} MiB through a stalled, then slow reader: peak RSS grew by {growth:.0} MiB \
             (from {before:.0} MiB); {} MiB were accepted while the reader slept",
            sent_at_wake / (1024 * 1024)
        );
        // The windows are 16 MiB per stream and 32 MiB per session, on each side; anything
        // near the transfer size would mean the sender was never held back.
        assert!(
            growth < 200.0,
            "peak RSS grew by {growth:.0} MiB for a {mb} MiB transfer"
        );
        client.shutdown().await;
        owner.shutdown().await;
    });
}
