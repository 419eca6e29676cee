//! One session as the node holds it: the transport state plus what the node knows about it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{Connection, ConnectionHandle, Dir, VarInt};

use super::{Dial, StreamHandle};
use crate::identity::NodeId;
use crate::record::Transport;
use crate::session::tcp::TcpSession;
use crate::session::tls::PeerMismatch;
use crate::session::{Outgoing, StreamError, StreamRead, quic};

pub(super) enum Kind {
    Quic {
        handle: ConnectionHandle,
        conn: Box<Connection>,
    },
    Tcp {
        conn: Box<TcpSession>,
        /// Whether the runtime reported the TCP connection as established.
        connected: bool,
        bytes_sent: u64,
        bytes_received: u64,
    },
}

pub(super) struct Session {
    pub kind: Kind,
    pub remote: SocketAddr,
    /// Set for sessions this node dialed.
    pub dial: Option<Dial>,
    /// Filled by the dial's verifier when another node answered.
    pub mismatch: PeerMismatch,
    /// The expected peer came from a pin, not from the user.
    pub expected_from_pin: bool,
    pub peer: Option<NodeId>,
    pub established: bool,
    /// Lost or failed: no new streams; kept only until QUIC has drained.
    pub down: bool,
    pub streams: BTreeSet<StreamHandle>,
    /// Client streams waiting for the handshake (or for stream credit) before they can open.
    pub pending: Vec<StreamHandle>,
}

impl Session {
    pub fn transport(&self) -> Transport {
        match self.kind {
            Kind::Quic { .. } => Transport::Quic,
            Kind::Tcp { .. } => Transport::Tcp,
        }
    }

    pub fn open(&mut self, now: Instant) -> Option<u64> {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::open(conn),
            Kind::Tcp { conn, .. } => conn.mux().open_stream(now),
        }
    }

    pub fn accept(&mut self) -> Option<u64> {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::accept(conn),
            Kind::Tcp { conn, .. } => conn.mux().accept_stream(),
        }
    }

    pub fn write(&mut self, id: u64, data: Outgoing<'_>) -> Result<usize, StreamError> {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::write(conn, id, data),
            Kind::Tcp { conn, .. } => {
                let n = conn.mux().write(id, data.as_slice())?;
                if let Outgoing::Bytes(b) = data {
                    // `split_to` lets go of the buffer once all of it is taken (`advance` would
                    // keep it alive behind an empty view: 64 KiB per idle connection).
                    drop(b.split_to(n));
                }
                Ok(n)
            }
        }
    }

    pub fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::finish(conn, id),
            Kind::Tcp { conn, .. } => conn.mux().finish(id),
        }
    }

    /// Stops receiving on a stream whose sending side stays open (to deliver a refusal).
    pub fn stop(&mut self, id: u64, code: u32) {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::stop(conn, id, code),
            Kind::Tcp { conn, .. } => conn.mux().stop(id),
        }
    }

    pub fn reset(&mut self, id: u64, code: u32) {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::reset(conn, id, code),
            Kind::Tcp { conn, .. } => conn.mux().reset(id, code),
        }
    }

    pub fn read(&mut self, now: Instant, id: u64, max: usize) -> StreamRead {
        match &mut self.kind {
            Kind::Quic { conn, .. } => quic::read(conn, id, max),
            Kind::Tcp { conn, .. } => conn.mux().read(now, id, max),
        }
    }

    /// Lets the peer open more streams while it uses three quarters of what it may, doubling
    /// up to `ceiling` (QUIC only: the multiplexer reserves nothing per allowed stream).
    pub fn grow_stream_limit(&mut self, ceiling: u32) {
        if let Kind::Quic { conn, .. } = &mut self.kind {
            let limit = conn.max_concurrent_streams(Dir::Bi);
            let open = self.streams.len() as u64;
            if open * 4 >= limit * 3 && limit < u64::from(ceiling) {
                let grown = (limit * 2).min(u64::from(ceiling));
                conn.set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(grown as u32));
            }
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match &mut self.kind {
            Kind::Quic { conn, .. } => conn.poll_timeout(),
            Kind::Tcp { conn, .. } => conn.poll_timeout(),
        }
    }
}
