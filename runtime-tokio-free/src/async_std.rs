//! The async-std implementation of [`Runtime`](crate::Runtime). async-std runs on async-io's
//! reactor, so its sockets and timers are the async-io ones; tasks go to async-std's executor.

use crate::async_io::{AsyncIoRuntime, Spawn};
use crate::runtime::BoxFuture;

/// async-std's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsyncStdExecutor;

impl Spawn for AsyncStdExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        async_std::task::spawn(future);
    }
}

/// Runs nodes on async-std: `Arc::new(AsyncStdRuntime::default())`.
pub type AsyncStdRuntime = AsyncIoRuntime<AsyncStdExecutor>;
