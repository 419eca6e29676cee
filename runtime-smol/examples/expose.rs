//! Publishes a local TCP port as a service, e.g. a web app on 127.0.0.1:8080 as `alice.web`.
//!
//!   cargo run --release -p vx6-runtime-smol --example expose -- \
//!       --name alice --listen '[2001:db8::1]:4433' --service web=127.0.0.1:8080 --public

mod common;

use std::sync::Arc;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use clap::Parser;
use vx6_runtime_smol::smol;
use vx6_runtime_smol::vx6_core::NodeId;
use vx6_runtime_smol::{Access, NodeEvent};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// `NAME=HOST:PORT`: the local service to publish.
    #[arg(long)]
    service: String,
    /// A node allowed to use it (repeatable).
    #[arg(long)]
    allow: Vec<NodeId>,
    /// Let every authenticated node use it.
    #[arg(long)]
    public: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (name, target) = cli
        .service
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--service: expected NAME=HOST:PORT"))?;
    let target: SocketAddr = target
        .parse()
        .map_err(|_| anyhow::anyhow!("--service: {target:?} is not HOST:PORT"))?;
    let access = match (cli.public, cli.allow.is_empty()) {
        (true, _) => Access::Public,
        (false, false) => Access::Allow(cli.allow.iter().copied().collect::<BTreeSet<_>>()),
        (false, true) => anyhow::bail!("say who may use the service: --allow NODEID or --public"),
    };
    // One executor, run by the main thread, for the node's tasks and the example's.
    let ex = Arc::new(smol::Executor::new());
    smol::block_on(ex.run(async {
        let node = cli.node.start(&ex)?;
        node.publish(name.parse()?, target, access)?;
        eprintln!("publishing {}.{name} -> {target}", cli.node.name);
        // What the node learns about its reachability, as an operator would want to see it.
        let mut events = node.events();
        while let Some(event) = events.next().await {
            match event {
                NodeEvent::AddressesObserved { addresses } => {
                    eprintln!("peers see this node at {addresses:?}")
                }
                NodeEvent::Reachability { verdicts } => eprintln!("dialable: {verdicts:?}"),
                NodeEvent::HomeRelays { relays } => {
                    eprintln!("home relays: {}", relays.len())
                }
                _ => {}
            }
        }
        Ok(())
    }))
}
