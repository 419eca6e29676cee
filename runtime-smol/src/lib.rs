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

/// Where the node's tasks run: smol's global executor, or an executor the application owns.
///
/// An application that drives its own [`smol::Executor`] (say from its main thread with
/// `smol::block_on(executor.run(…))`) starts its node with [`start_on`], so that the node's
/// tasks run where the application's do and smol starts no global executor threads.
#[derive(Debug, Default, Clone)]
pub struct SmolExecutor(Option<Arc<smol::Executor<'static>>>);

impl SmolExecutor {
    /// Tasks go to `executor`, which the application runs.
    pub fn owned(executor: Arc<smol::Executor<'static>>) -> Self {
        Self(Some(executor))
    }
}

impl Spawn for SmolExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        match &self.0 {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }
}

/// Runs nodes on smol: async-io sockets and timers, tasks on a [`SmolExecutor`].
pub type SmolRuntime = AsyncIoRuntime<SmolExecutor>;

/// Starts a node on smol's global executor.
pub fn start(config: NodeConfig) -> Result<Node, Error> {
    Node::start(Arc::new(SmolRuntime::default()), config)
}

/// Starts a node whose tasks run on `executor`; the application must keep running it
/// (`smol::block_on(executor.run(…))`) for as long as the node lives.
pub fn start_on(executor: Arc<smol::Executor<'static>>, config: NodeConfig) -> Result<Node, Error> {
    Node::start(
        Arc::new(AsyncIoRuntime(SmolExecutor::owned(executor))),
        config,
    )
}
