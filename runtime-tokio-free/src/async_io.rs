//! Sockets and timers on async-io's reactor, which smol and async-std both run on: the shared
//! half of their `Runtime` implementations.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Instant;

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use crate::runtime::{AsyncListener, AsyncStream, AsyncTimer, AsyncUdpSocket, BoxFuture, Runtime};

/// Where an async-io based runtime runs its tasks: the one thing smol and async-std differ in.
pub trait Spawn: Send + Sync + fmt::Debug + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: BoxFuture<()>);
}

/// A [`Runtime`] with async-io's sockets and timers, and tasks spawned by `S`.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsyncIoRuntime<S>(pub S);

impl<S: Spawn> Runtime for AsyncIoRuntime<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(TimerIo::at(at))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn(future);
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

/// Socket buffers asked for; fast links drop packets with the default 208 KiB.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// A UDP socket driven by async-io, with quinn-udp's batched system calls.
pub struct UdpIo {
    io: Async<UdpSocket>,
    state: UdpSocketState,
    readable: Arc<Readable>,
    /// `readable` as a waker: the one async-io always sees for this socket.
    readable_waker: Waker,
}

/// Whether a receive may find something without waiting: true while the socket is fresh, after
/// a receive found data, and once async-io reports it readable; false once one would have
/// blocked. async-io wakes this (not the task) when the socket becomes readable, so the flag
/// is set even when async-io's own tick check would report nothing on the next poll (an event
/// in the tick that registered the interest), and the task is woken after it.
struct Readable {
    maybe: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Readable {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.maybe.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = task {
            w.wake();
        }
    }
}

impl fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpIo").field("io", &self.io).finish()
    }
}

impl UdpIo {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        let state = UdpSocketState::new((&socket).into())?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
        let readable = Arc::new(Readable {
            maybe: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Ok(Self {
            io: Async::new(socket)?,
            state,
            readable_waker: Waker::from(readable.clone()),
            readable,
        })
    }
}

impl AsyncUdpSocket for UdpIo {
    // The socket is tried first and readiness waited for only when it would block: async-io
    // reports a source ready only after an event that follows the first poll, so polling first
    // would make a fresh socket (a side socket's first probe) wait for nothing.
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.state.send(self.io.get_ref().into(), transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.io.poll_writable(cx))?
                }
                result => return Poll::Ready(result),
            }
        }
    }

    // Unlike a send, a receive is not tried on every poll: the driver polls on each wake-up,
    // most of which are for a stream, and each try that would block is a system call. Once a
    // receive has blocked, the socket is tried again only after async-io reports it readable.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.readable.maybe.load(Ordering::Acquire) {
                {
                    let mut task = self.readable.task.lock().unwrap_or_else(|e| e.into_inner());
                    if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *task = Some(cx.waker().clone());
                    }
                }
                let mut readable_cx = Context::from_waker(&self.readable_waker);
                if self.io.poll_readable(&mut readable_cx)?.is_pending()
                    && !self.readable.maybe.load(Ordering::Acquire)
                {
                    return Poll::Pending;
                }
            }
            match self.state.recv(self.io.get_ref().into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable.maybe.store(false, Ordering::Release);
                }
                result => {
                    self.readable.maybe.store(true, Ordering::Release);
                    return Poll::Ready(result);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// async-io's timer behind [`AsyncTimer`].
#[derive(Debug)]
pub struct TimerIo(Timer);

impl TimerIo {
    /// A timer for `at`.
    pub fn at(at: Instant) -> Self {
        Self(Timer::at(at))
    }
}

impl AsyncTimer for TimerIo {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.set_at(at);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll(cx).map(|_| ())
    }
}

/// Connects to `addr` on async-io's reactor.
pub fn tcp_connect(addr: SocketAddr) -> BoxFuture<io::Result<Box<dyn AsyncStream>>> {
    Box::pin(async move {
        let stream = Async::<TcpStream>::connect(addr).await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(Box::new(stream) as Box<dyn AsyncStream>)
    })
}

/// A TCP listener on async-io's reactor.
#[derive(Debug)]
pub struct ListenerIo(Async<TcpListener>);

impl ListenerIo {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self(Async::<TcpListener>::bind(addr)?))
    }
}

impl AsyncListener for ListenerIo {
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Box<dyn AsyncStream>, SocketAddr)>> {
        loop {
            ready!(self.0.poll_readable(cx))?;
            match self.0.get_ref().accept() {
                Ok((stream, addr)) => {
                    stream.set_nodelay(true)?;
                    let stream = Async::new(stream)?;
                    return Poll::Ready(Ok((Box::new(stream), addr)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}
