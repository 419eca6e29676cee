//! What an executor must provide to run a VX6 node, in the spirit of quinn's runtime module:
//! one clock, timers, task spawning, a UDP socket with batched send and receive, and TCP.
//! Every implementation here is tokio-free; embedders can write their own.

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};
use quinn_udp::{RecvMeta, Transmit};

/// A boxed future that can move between threads.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An executor and reactor that can run a node.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// The node's only clock: every `now` the core sees comes from here.
    fn now(&self) -> Instant;
    /// Wall-clock time in unix seconds, for record validity (a simulation overrides it).
    fn unix_time(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
    /// A timer that fires at `at`.
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>>;
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// Binds the node's UDP socket (QUIC sessions and DHT datagrams share it).
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>>;
    /// Opens a TCP connection (TLS-over-TCP sessions, and services backed by a TCP address).
    fn tcp_connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<Box<dyn AsyncStream>>>;
    /// Listens for TCP connections (TLS-over-TCP sessions, local forwards).
    fn tcp_listen(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncListener>>;
}

/// A timer that can be moved to a new deadline.
pub trait AsyncTimer: Send + Debug {
    /// Moves the deadline.
    fn reset(self: Pin<&mut Self>, at: Instant);
    /// Ready once the deadline has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A UDP socket with batched I/O (GSO on send, GRO and multi-message receive where the OS has
/// them).
pub trait AsyncUdpSocket: Send + Sync + Debug {
    /// Sends one transmit (possibly a GSO batch of `segment_size` datagrams).
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<()>>;
    /// Receives up to `bufs.len()` batches; returns how many `meta` entries were filled.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Most datagrams one transmit may carry.
    fn max_transmit_segments(&self) -> usize;
}

/// A byte stream: a TCP connection, or a VX6 stream.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A TCP listener.
pub trait AsyncListener: Send + Sync + Debug {
    /// Accepts the next connection.
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Box<dyn AsyncStream>, SocketAddr)>>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}
