//! Opens a local port that leads to a service by name (or by address), like `vx6 node
//! --forward`.
//!
//!   cargo run --release -p vx6-runtime-smol --example connect -- \
//!       --name bob --listen '[2001:db8::2]:4433' --bootstrap '[2001:db8::1]:4433' \
//!       --forward alice.web=127.0.0.1:8081

mod common;

use std::sync::Arc;

use std::net::SocketAddr;

use clap::Parser;
use vx6_runtime_smol::smol;
use vx6_runtime_smol::{Runtime, SmolRuntime, bridge};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// `DESTINATION=LOCALADDR`: `username.service` or `[NODEID@]ADDR/SERVICE`, and the local
    /// port that leads there.
    #[arg(long)]
    forward: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (destination, local) = cli
        .forward
        .rsplit_once('=')
        .ok_or_else(|| anyhow::anyhow!("--forward: expected DESTINATION=LOCALADDR"))?;
    let local: SocketAddr = local
        .parse()
        .map_err(|_| anyhow::anyhow!("--forward: {local:?} is not HOST:PORT"))?;
    let destination = destination.to_owned();
    // One executor, run by the main thread, for the node's tasks and the example's.
    let ex = Arc::new(smol::Executor::new());
    smol::block_on(ex.run(async {
        let node = cli.node.start(&ex)?;
        let listener = SmolRuntime::default().tcp_listen(local)?;
        eprintln!("forwarding {local} -> {destination}");
        loop {
            let (tcp, from) = std::future::poll_fn(|cx| listener.poll_accept(cx)).await?;
            let (node, destination) = (node.clone(), destination.clone());
            // `open`, not `connect`: the first bytes go out with the request, as the daemon's
            // forwards send them; a refusal ends the bridge at its first read.
            match node.open(&destination) {
                Ok(stream) => ex.spawn(bridge(tcp, stream)).detach(),
                Err(e) => eprintln!("{from}: {e}"),
            }
        }
    }))
}
