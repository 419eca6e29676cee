//! An in-process service: every stream opened to `<name>.echo` gets its bytes back.
//!
//!   cargo run --release -p vx6-runtime-smol --example echo -- --name alice --listen '[::1]:4433'

mod common;

use std::sync::Arc;

use clap::Parser;
use vx6_runtime_smol::smol;
use vx6_runtime_smol::smol::prelude::*;
use vx6_runtime_smol::{Access, VxStream};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
}

async fn echo(stream: VxStream) -> std::io::Result<()> {
    let (mut r, mut w) = smol::io::split(stream);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.close().await;
        }
        w.write_all(&buf[..n]).await?;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One executor, run by the main thread, for the node's tasks and the example's.
    let ex = Arc::new(smol::Executor::new());
    smol::block_on(ex.run(async {
        let node = cli.node.start(&ex)?;
        let incoming = node.serve("echo".parse()?, Access::Public)?;
        eprintln!("serving {}.echo", cli.node.name);
        while let Some(stream) = incoming.accept().await {
            ex.spawn(async move {
                if let Err(e) = echo(stream).await {
                    eprintln!("echo: {e}");
                }
            })
            .detach();
        }
        Ok(())
    }))
}
