//! Sessions: authenticated, encrypted node-to-node associations that carry streams.
//!
//! Two transports sit behind one stream interface ([`Session`]): QUIC (quinn-proto, with
//! rustls inside) and TLS over TCP with VX6's own multiplexer ([`mux`]). Both authenticate peers
//! by Ed25519 key ([`tls`]). Stream ids are `u64` on both.

pub mod cid;
pub mod mux;
pub mod quic;
pub mod tcp;
pub mod tls;

use bytes::Bytes;

/// A stream event, by stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened a stream; take it with `accept_stream`.
    Opened,
    /// Data, a FIN or a reset is waiting to be read.
    Readable(u64),
    /// A write that was blocked may make progress now.
    Writable(u64),
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRead {
    /// Bytes, in order.
    Data(Bytes),
    /// Nothing now; a `Readable` event will follow.
    Blocked,
    /// The peer finished its direction; no more data will come.
    Finished,
    /// The peer aborted the stream with this code.
    Reset(u32),
}

/// Bytes offered to a stream.
#[derive(Debug)]
pub enum Outgoing<'a> {
    /// Borrowed: the part the stream takes is copied.
    Slice(&'a [u8]),
    /// Owned: the part the stream takes is split off without a copy (QUIC keeps it until
    /// acknowledged); what is left stays in place for the next try.
    Bytes(&'a mut Bytes),
}

impl Outgoing<'_> {
    /// The bytes on offer.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Outgoing::Slice(s) => s,
            Outgoing::Bytes(b) => b,
        }
    }
}

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream does not exist (never opened, or already closed).
    #[error("unknown stream")]
    Unknown,
    /// The peer aborted the stream (reset or stop-sending) with this code.
    #[error("stream reset by peer with code {0}")]
    Reset(u32),
    /// The local side already finished this direction.
    #[error("stream already finished")]
    Finished,
}
