//! A VX6 stream as an `AsyncRead + AsyncWrite` byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use vx6_core::{Cause, Failure};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use vx6_core::node::StreamHandle;
use vx6_core::session::StreamRead;

use crate::shared::Shared;

/// Reads bigger than this are served in several calls: it bounds what one call copies.
const READ_CHUNK: usize = 256 * 1024;

/// One stream to or from a service. Dropping it before closing it aborts the stream.
#[derive(Debug)]
pub struct VxStream {
    shared: Arc<Shared>,
    handle: StreamHandle,
    buffered: Bytes,
    /// A failure (or reset) met after the data a read returned; the next read reports it.
    failed_after: Option<Failure>,
    read_done: bool,
    write_done: bool,
}

impl VxStream {
    pub(crate) fn new(shared: Arc<Shared>, handle: StreamHandle) -> Self {
        Self {
            shared,
            handle,
            buffered: Bytes::new(),
            failed_after: None,
            read_done: false,
            write_done: false,
        }
    }

    pub(crate) fn handle(&self) -> StreamHandle {
        self.handle
    }
}

/// An I/O error that carries the [`Failure`] itself (`get_ref()` and downcast to branch on its
/// cause), with the closest [`io::ErrorKind`].
fn failed(failure: Failure) -> io::Error {
    let kind = match failure.cause {
        Cause::AccessDenied => io::ErrorKind::PermissionDenied,
        Cause::UnknownService | Cause::NameNotFound => io::ErrorKind::NotFound,
        Cause::TargetUnavailable | Cause::LimitReached => io::ErrorKind::ConnectionRefused,
        Cause::Timeout | Cause::HandshakeTimeout => io::ErrorKind::TimedOut,
        Cause::Unreachable => io::ErrorKind::HostUnreachable,
        Cause::ConnectionLost => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::ConnectionReset,
    };
    io::Error::new(kind, failure)
}

impl AsyncRead for VxStream {
    /// Fills `buf` with as much as the stream has now: QUIC hands data over a packet at a
    /// time, and a read per packet would cost the application (and, through a bridge, the
    /// local socket) a system call per 1.2 KiB.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() || self.read_done {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if this.buffered.is_empty()
            && let Some(failure) = this.failed_after.take()
        {
            return Poll::Ready(Err(failed(failure)));
        }
        let mut filled = take_into(&mut this.buffered, buf);
        if filled == buf.len() {
            return Poll::Ready(Ok(filled));
        }
        let mut st = this.shared.lock();
        let now = this.shared.runtime.now();
        if let Some(failure) = st.failure(this.handle) {
            return Poll::Ready(if filled > 0 {
                Ok(filled)
            } else {
                Err(failed(failure))
            });
        }
        let mut took = false;
        while filled < buf.len() {
            let max = (buf.len() - filled).min(READ_CHUNK);
            match st.node.stream_read(now, this.handle, max) {
                StreamRead::Data(bytes) => {
                    took = true;
                    this.buffered = bytes;
                    filled += take_into(&mut this.buffered, &mut buf[filled..]);
                }
                // What was read is returned first; the end, or the error, on the next call.
                StreamRead::Blocked if filled > 0 => break,
                StreamRead::Blocked => {
                    st.slot(this.handle).reader = Some(cx.waker().clone());
                    if took {
                        st.wake_driver();
                    }
                    return Poll::Pending;
                }
                StreamRead::Finished => {
                    // An unknown handle also reads as finished: a failure may explain it.
                    if let Some(failure) = st.failure(this.handle) {
                        if filled > 0 {
                            this.failed_after = Some(failure);
                            break;
                        }
                        return Poll::Ready(Err(failed(failure)));
                    }
                    this.read_done = true;
                    if filled > 0 {
                        break;
                    }
                    return Poll::Ready(Ok(0));
                }
                StreamRead::Reset(code) => {
                    // The node forgets a reset stream as it reports it: keep the reset.
                    let failure = vx6_core::node::reset_failure(code);
                    if filled > 0 {
                        this.failed_after = Some(failure);
                        break;
                    }
                    return Poll::Ready(Err(failed(failure)));
                }
            }
        }
        if took {
            // Reading returned flow-control credit, which the driver sends.
            st.wake_driver();
        }
        Poll::Ready(Ok(filled))
    }
}

/// Moves as much of `from` as fits to the front of `to`; returns how much that was.
fn take_into(from: &mut Bytes, to: &mut [u8]) -> usize {
    let n = from.len().min(to.len());
    to[..n].copy_from_slice(&from.split_to(n));
    n
}

impl AsyncWrite for VxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        if let Some(failure) = st.failure(self.handle) {
            return Poll::Ready(Err(failed(failure)));
        }
        let now = self.shared.runtime.now();
        match st.node.stream_write(now, self.handle, buf) {
            Ok(0) if !buf.is_empty() => {
                st.slot(self.handle).writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already with the session, within its flow-control window.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_done {
            self.write_done = true;
            let mut st = self.shared.lock();
            let now = self.shared.runtime.now();
            st.node.stream_finish(now, self.handle);
            st.wake_driver();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for VxStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let now = self.shared.runtime.now();
        // A finished direction is left to end cleanly (a reset would drop unacknowledged
        // data); otherwise the stream is aborted.
        if !self.write_done {
            st.node.stream_reset(now, self.handle);
        }
        st.streams.remove(&self.handle);
        st.wake_driver();
    }
}
