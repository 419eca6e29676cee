//! VX6 for async Rust applications, on any executor that is not tokio.
//!
//! A [`Runtime`] gives the node its clock, timers, tasks and sockets; the [`Node`] runs the
//! sans-IO core on them and offers the embedding API: publish a local TCP service or serve
//! one in-process, resolve `username.service`, and open streams that are `AsyncRead +
//! AsyncWrite`. `vx6-runtime-smol` is the recommended front door; this crate also has an
//! async-std runtime behind the `async-std` feature.
//!
//! ```no_run
//! # #[cfg(feature = "async-std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! use vx6_core::Identity;
//! use vx6_core::service::Access;
//! use vx6_runtime_tokio_free::{AsyncStdRuntime, Node, NodeConfig};
//!
//! async_std::task::block_on(async {
//!     let identity = Identity::from_secret_bytes(&[7; 32]);
//!     let config = NodeConfig::new(identity, "alice".parse()?, "[::1]:4433".parse()?);
//!     let node = Node::start(Arc::new(AsyncStdRuntime::default()), config)?;
//!     // Offer an in-process echo service to everyone.
//!     let incoming = node.serve("echo".parse()?, Access::Public)?;
//!     while let Some(mut stream) = incoming.accept().await {
//!         let mut buf = Vec::new();
//!         stream.read_to_end(&mut buf).await?;
//!         stream.write_all(&buf).await?;
//!         stream.close().await?;
//!     }
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "async-std"))]
//! # fn main() {}
//! ```

#[cfg(feature = "async-io")]
pub mod async_io;
#[cfg(feature = "async-std")]
mod async_std;
mod bridge;
mod driver;
mod error;
mod events;
mod node;
pub mod runtime;
mod shared;
mod stream;

#[cfg(feature = "async-std")]
pub use async_std::{AsyncStdExecutor, AsyncStdRuntime};
pub use bridge::bridge;
pub use error::Error;
pub use events::{Events, NodeEvent};
pub use node::{
    Incoming, Node, NodeConfig, NodeLimits, Reachability, RelayConfig, Resolved, Route,
};
/// The metrics library [`Node::metrics`] returns a registry of (to encode it, or add to it).
pub use prometheus_client;
pub use runtime::{AsyncListener, AsyncStream, AsyncTimer, AsyncUdpSocket, BoxFuture, Runtime};
pub use stream::VxStream;
pub use vx6_core::service::Access;
