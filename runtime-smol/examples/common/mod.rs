//! What the examples share: their command line and how they start a node.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use vx6_runtime_smol::vx6_core::Identity;
use vx6_runtime_smol::vx6_core::record::Transport;
use vx6_runtime_smol::{Node, NodeConfig, smol};

/// The node every example runs.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The username this node claims.
    #[arg(long)]
    pub name: String,
    /// Where it accepts sessions (a concrete address, so others can reach it by name).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Sessions over `quic` or `tcp`.
    #[arg(long, default_value = "quic")]
    pub transport: String,
    /// A peer to enter the network through (repeatable).
    #[arg(long)]
    pub bootstrap: Vec<SocketAddr>,
    /// The node key's 32-byte secret as 64 hex digits (default: a new key for this run).
    #[arg(long)]
    pub secret_hex: Option<String>,
}

impl NodeArgs {
    /// Starts the node on `executor` (which the example runs on its main thread) and says
    /// where it is on stderr.
    pub fn start(&self, executor: &Arc<smol::Executor<'static>>) -> anyhow::Result<Node> {
        let identity = match &self.secret_hex {
            Some(hex) => {
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| anyhow::anyhow!("--secret-hex: not hex"))?;
                let secret: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("--secret-hex: need 64 hex digits"))?;
                Identity::from_secret_bytes(&secret)
            }
            None => Identity::generate(&mut rand_core::OsRng),
        };
        let mut config = NodeConfig::new(identity, self.name.parse()?, self.listen);
        config.transport = match self.transport.as_str() {
            "quic" => Transport::Quic,
            "tcp" => Transport::Tcp,
            other => anyhow::bail!("--transport: {other:?} is neither quic nor tcp"),
        };
        config.bootstrap = self.bootstrap.clone();
        let node = vx6_runtime_smol::start_on(executor.clone(), config)?;
        eprintln!("node {} listening on {}", node.id(), node.local_addr());
        Ok(node)
    }
}
