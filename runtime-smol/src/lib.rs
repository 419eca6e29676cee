//! VX6 on smol: the recommended way to embed a VX6 node in an async Rust application.
//!
//! [`SmolRuntime`] runs the node's driver on smol's executor, with async-io sockets and
//! timers; everything else is the executor-agnostic API of `vx6-runtime-tokio-free`,
//! re-exported here. The `examples/` folder has `expose` (publish a local TCP port as a
//! service), `connect` (open a local port to a named service) and `echo` (an in-process
//! service).
//!
//! ```no_run
//! use vx6_runtime_smol::smol::prelude::*;
//! use vx6_runtime_smol::{Node, NodeConfig, smol};
//! use vx6_runtime_smol::vx6_core::Identity;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let identity = Identity::from_secret_bytes(&[9; 32]);
//!         let mut config = NodeConfig::new(identity, "bob".parse()?, "[::1]:4434".parse()?);
//!         config.bootstrap.push("[::1]:4433".parse()?);
//!         let node = vx6_runtime_smol::start(config)?;
//!         // Through the DHT to alice's in-process echo service.
//!         let mut stream = node.connect("alice.echo").await?;
//!         stream.write_all(b"hello").await?;
//!         stream.close().await?;
//!         let mut back = Vec::new();
//!         stream.read_to_end(&mut back).await?;
//!         assert_eq!(back, b"hello");
//!         node.shutdown().await;
//!         Ok(())
//!     })
//! }
//! ```

use std::sync::Arc;

pub use smol;
pub use vx6_core;
use vx6_runtime_tokio_free::async_io::{AsyncIoRuntime, Spawn};
pub use vx6_runtime_tokio_free::*;

/// smol's global executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct SmolExecutor;

impl Spawn for SmolExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }
}

/// Runs nodes on smol: async-io sockets and timers, tasks on smol's global executor.
pub type SmolRuntime = AsyncIoRuntime<SmolExecutor>;

/// Starts a node on smol.
pub fn start(config: NodeConfig) -> Result<Node, Error> {
    Node::start(Arc::new(SmolRuntime::default()), config)
}
