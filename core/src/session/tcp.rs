//! A session over TCP: rustls (TLS 1.3) on the byte stream, then the [`Mux`](super::mux::Mux).
//!
//! Sans-IO like the rest of core: the runtime hands in bytes read from the socket and writes out
//! what [`TcpSession::poll_transmit`] returns.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use super::mux::{Mux, MuxConfig};
use super::tls::peer_key;
use crate::failure::{Cause, Failure};
use crate::identity::PublicKey;

/// Most bytes rustls may hold in its send buffers.
const TLS_BUFFER_LIMIT: usize = 4 * 1024 * 1024;
/// Plaintext encrypted per step of [`TcpSession::poll_transmit`]: four TLS records.
const ENCRYPT_SLICE: usize = 64 * 1024;

/// Why a TCP session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpSessionError {
    /// TLS failed: handshake (including peer verification) or record layer.
    #[error("TLS: {0}")]
    Tls(String),
    /// The multiplexer closed the session.
    #[error("{0}")]
    Mux(#[from] super::mux::MuxClosed),
    /// The peer closed the TCP connection.
    #[error("connection closed by peer")]
    Eof,
    /// This side closed the session before its handshake completed.
    #[error("closed during the handshake")]
    Closed,
}

impl TcpSessionError {
    /// As a [`Failure`]; `established`: whether the handshake had completed.
    pub fn failure(&self, established: bool) -> Failure {
        use super::mux::MuxClosed as M;
        let cause = match self {
            Self::Tls(_) | Self::Mux(M::Protocol(_) | M::FlowControl) => Cause::ProtocolViolation,
            Self::Mux(M::Timeout) if !established => Cause::HandshakeTimeout,
            Self::Mux(M::Timeout) => Cause::Timeout,
            Self::Mux(M::GoAway(_)) | Self::Eof => Cause::ConnectionLost,
            Self::Mux(M::NotReading(_)) => Cause::LimitReached,
            Self::Closed => Cause::Closed,
        };
        Failure::new(cause, self.to_string())
    }
}

/// One TLS-over-TCP session.
pub struct TcpSession {
    tls: rustls::Connection,
    mux: Mux,
    peer: Option<PublicKey>,
    failed: Option<TcpSessionError>,
}

impl TcpSession {
    /// The dialing side.
    pub fn client(
        now: Instant,
        config: Arc<rustls::ClientConfig>,
        mux: MuxConfig,
    ) -> Result<Self, rustls::Error> {
        let name = ServerName::try_from("vx6").expect("static name is valid");
        let tls = rustls::ClientConnection::new(config, name)?;
        Ok(Self::new(tls.into(), Mux::new(now, true, mux)))
    }

    /// The accepting side.
    pub fn server(
        now: Instant,
        config: Arc<rustls::ServerConfig>,
        mux: MuxConfig,
    ) -> Result<Self, rustls::Error> {
        let tls = rustls::ServerConnection::new(config)?;
        Ok(Self::new(tls.into(), Mux::new(now, false, mux)))
    }

    fn new(mut tls: rustls::Connection, mux: Mux) -> Self {
        // A bound, not a throttle: `poll_transmit` moves the records out after every 64 KiB
        // slice, so rustls never holds near this much; reaching it is a broken invariant, and
        // fails the session rather than losing bytes.
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Self {
            tls,
            mux,
            peer: None,
            failed: None,
        }
    }

    /// The peer's verified key, once the handshake has completed.
    pub fn peer(&self) -> Option<&PublicKey> {
        self.peer.as_ref()
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Why the session failed, if it has.
    pub fn error(&self) -> Option<&TcpSessionError> {
        self.failed.as_ref()
    }

    /// The multiplexer (streams live there once the handshake is done).
    pub fn mux(&mut self) -> &mut Mux {
        &mut self.mux
    }

    /// Read-only view of the multiplexer.
    pub fn mux_ref(&self) -> &Mux {
        &self.mux
    }

    /// Feeds bytes read from the socket.
    pub fn handle_input(&mut self, now: Instant, mut data: &[u8]) {
        while !data.is_empty() && self.failed.is_none() {
            if let Err(e) = self.tls.read_tls(&mut data) {
                self.failed = Some(TcpSessionError::Tls(e.to_string()));
                return;
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    self.failed = Some(TcpSessionError::Tls(e.to_string()));
                    return;
                }
            };
            if self.peer.is_none() && !self.tls.is_handshaking() {
                match self.tls.peer_certificates().and_then(|c| c.first()) {
                    Some(cert) => match peer_key(cert) {
                        Ok(key) => {
                            self.peer = Some(key);
                            // A first RTT sample right away, for status and window tuning.
                            self.mux.send_ping(now);
                        }
                        Err(e) => {
                            self.failed = Some(TcpSessionError::Tls(e.to_string()));
                            return;
                        }
                    },
                    None => {
                        self.failed = Some(TcpSessionError::Tls("peer sent no certificate".into()));
                        return;
                    }
                }
            }
            let pending = state.plaintext_bytes_to_read();
            if pending > 0 {
                // Decrypted bytes go straight into the multiplexer's input buffer, copied out
                // of rustls's own (no zero-filled staging area in between).
                let buf = self.mux.input_buffer();
                buf.reserve(pending);
                let mut reader = self.tls.reader();
                loop {
                    let n = match reader.fill_buf() {
                        Ok(chunk) if !chunk.is_empty() => {
                            buf.extend_from_slice(chunk);
                            chunk.len()
                        }
                        _ => break,
                    };
                    reader.consume(n);
                }
                self.mux.process_input(now);
            }
            if state.peer_has_closed() {
                self.failed = Some(TcpSessionError::Eof);
            }
        }
        if let Some(reason) = self.mux.closed()
            && self.failed.is_none()
        {
            self.failed = Some(TcpSessionError::Mux(reason.clone()));
        }
    }

    /// The socket reached EOF.
    pub fn handle_eof(&mut self) {
        if self.failed.is_none() {
            self.failed = Some(TcpSessionError::Eof);
        }
    }

    /// Appends bytes to write to the socket; returns whether any were added.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        let tls = &mut self.tls;
        let mut overflow = false;
        if !tls.is_handshaking() {
            self.mux.drain_output(|frames| {
                // Encrypt in slices and move each slice's records out at once: rustls allocates
                // a buffer per record, and keeping only a few alive at a time lets the allocator
                // reuse them instead of growing and trimming the heap (page faults, per perf).
                for slice in frames.chunks(ENCRYPT_SLICE) {
                    overflow |= tls.writer().write_all(slice).is_err();
                    while tls.wants_write() {
                        if tls.write_tls(out).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        while tls.wants_write() {
            if tls.write_tls(out).is_err() {
                break;
            }
        }
        if overflow && self.failed.is_none() {
            self.failed = Some(TcpSessionError::Tls("TLS send buffer limit reached".into()));
        }
        out.len() > before
    }

    /// Timers of the multiplexer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.tls.is_handshaking() {
            return;
        }
        self.mux.handle_timeout(now);
        if let Some(reason) = self.mux.closed()
            && self.failed.is_none()
        {
            self.failed = Some(TcpSessionError::Mux(reason.clone()));
        }
    }

    /// When [`TcpSession::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.tls.is_handshaking() {
            None
        } else {
            self.mux.poll_timeout()
        }
    }

    /// Starts a clean close: GOAWAY and TLS close_notify. During the handshake there is nothing
    /// to say goodbye in (a close_notify then is a fatal alert to the peer): the session just
    /// ends, and the peer sees the connection close.
    pub fn close(&mut self, code: u32) {
        if self.tls.is_handshaking() {
            if self.failed.is_none() {
                self.failed = Some(TcpSessionError::Closed);
            }
            return;
        }
        self.mux.go_away(code);
        self.tls.send_close_notify();
    }
}
