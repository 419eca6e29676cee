//! The async-std implementation of [`Runtime`]. async-std runs on async-io's reactor, so its
//! sockets and timers are the async-io ones; tasks go to async-std's executor.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use crate::async_io::{ListenerIo, TimerIo, UdpIo, tcp_connect};
use crate::runtime::{AsyncListener, AsyncStream, AsyncTimer, AsyncUdpSocket, BoxFuture, Runtime};

/// Runs nodes on async-std.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(TimerIo::at(at))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        async_std::task::spawn(future);
    }

    fn bind_udp(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>> {
        Ok(Box::new(UdpIo::bind(addr)?))
    }

    fn tcp_connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<Box<dyn AsyncStream>>> {
        tcp_connect(addr)
    }

    fn tcp_listen(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncListener>> {
        Ok(Box::new(ListenerIo::bind(addr)?))
    }
}
