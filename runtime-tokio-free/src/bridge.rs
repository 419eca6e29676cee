//! Carrying bytes both ways between two streams, each direction ending on its own (half-close),
//! as a TCP-backed service and a local forward need.

use futures_lite::io::split;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};

use crate::runtime::AsyncStream;
use crate::stream::VxStream;

/// Bytes moved per read: large enough that a fast link is not held back by system calls.
const CHUNK: usize = 256 * 1024;

/// Copies `from` into `to` until EOF, then ends `to`'s direction. On an error the direction is
/// left unfinished, so the stream is aborted when both halves are gone.
async fn pipe(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.close().await;
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
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
