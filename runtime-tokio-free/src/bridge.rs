//! Carrying bytes both ways between two streams, each direction ending on its own (half-close),
//! as a TCP-backed service and a local forward need.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::split;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, future};

use crate::runtime::AsyncStream;
use crate::stream::VxStream;

/// Bytes moved per read: large enough that a fast link is not held back by system calls.
const CHUNK: usize = 256 * 1024;

thread_local! {
    /// The read buffer of every pipe polled on this thread. A pipe uses it only within one
    /// poll, never across an `.await`, so one per thread serves them all.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// Copies `from` into `to` until EOF, then ends `to`'s direction. On an error the direction is
/// left unfinished, so the stream is aborted when both halves are gone.
///
/// Memory follows use, as in the mio daemon: each read goes into the thread's scratch buffer
/// and is handed to `to` in the same poll, and only what `to` does not take at once (its
/// flow-control window is full) is copied into a buffer of this pipe's own, freed once
/// written. A pipe that waits for data holds no buffer; a buffer per pipe would cost every
/// idle connection 512 KiB.
async fn pipe(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    loop {
        let rest = match future::poll_fn(|cx| read_through(cx, &mut from, &mut to)).await {
            Ok(Some(rest)) => rest,
            Ok(None) => {
                let _ = to.close().await;
                return;
            }
            Err(_) => return,
        };
        if !rest.is_empty() && to.write_all(&rest).await.is_err() {
            return;
        }
    }
}

/// One read from `from` into the scratch buffer, written to `to` as far as it goes without
/// waiting. Returns what is left to write, `None` at EOF.
fn read_through(
    cx: &mut Context<'_>,
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> Poll<io::Result<Option<Vec<u8>>>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let n = match Pin::new(&mut *from).poll_read(cx, scratch) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let mut written = 0;
        while written < n {
            match Pin::new(&mut *to).poll_write(cx, &scratch[written..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => written += k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The caller writes the rest and waits for `to` then.
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(Some(scratch[written..n].to_vec())))
    })
}

/// Connects a local TCP connection (or any byte stream) with a VX6 stream until both
/// directions have ended.
pub async fn bridge(local: Box<dyn AsyncStream>, stream: VxStream) {
    let (local_read, local_write) = split(local);
    let (stream_read, stream_write) = split(stream);
    future::zip(
        pipe(local_read, stream_write),
        pipe(stream_read, local_write),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` in reads of at most `step` bytes, waiting (`Pending`) before each.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Takes at most `step` bytes per write and waits before every other write, as a stream
    /// whose flow-control window keeps filling does.
    #[derive(Default)]
    struct Narrow {
        got: Vec<u8>,
        step: usize,
        ready: bool,
        closed: bool,
    }

    impl AsyncWrite for Narrow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.closed = true;
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn every_byte_arrives_in_order_whatever_the_writer_takes() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        for (read_step, write_step) in [(CHUNK * 2, 1000), (7, 3), (100_000, CHUNK * 4)] {
            let from = Trickle {
                data: data.clone(),
                at: 0,
                step: read_step,
                ready: false,
            };
            let mut to = Narrow {
                step: write_step,
                ..Narrow::default()
            };
            future::block_on(pipe(from, &mut to));
            assert!(to.got == data, "steps {read_step}/{write_step}");
            assert!(to.closed, "EOF ends the writing direction");
        }
    }
}
