//! QUIC sessions: quinn-proto configuration and the mapping of its stream API onto VX6's.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, Dir, EndpointConfig, IdleTimeout, ReadError,
    ReadableError, ServerConfig, StreamId, TransportConfig, TransportErrorCode, VarInt, WriteError,
};

use crate::failure::{Cause, Failure};

use super::cid::KeyedCidGenerator;
use super::tls::{PeerMismatch, TlsFactory, TlsSetupError};
use super::{Outgoing, StreamError, StreamRead};

/// Tuning of QUIC sessions.
#[derive(Debug, Clone, Copy)]
pub struct QuicTuning {
    /// Per-stream receive window in bytes. quinn-proto keeps a stream's waiting data as one
    /// chunk per packet, and copies it all into one buffer once more than 2048 chunks wait
    /// (its defragmentation): on a 1500-byte path an 8 MiB window let that happen whenever the
    /// application read slower than the network, which cost the receiver 12.7% of its CPU
    /// (BENCHMARKS.md). 2 MiB stays under 2048 packets of even 1280-byte paths, and still
    /// covers 160 Mbit/s per stream at 100 ms RTT.
    pub stream_window: u32,
    /// Per-connection receive window in bytes.
    pub connection_window: u32,
    /// Streams a peer may have open at once, at most.
    pub max_streams: u32,
    /// Streams a peer may have open at first. quinn-proto reserves state for every stream the
    /// peer may open (about 90 bytes each, reserved as the limit is granted), so a session
    /// starts with this many and the node doubles it while the peer uses three quarters of it,
    /// up to `max_streams`: an idle or handshaking session then costs kilobytes, not the
    /// 1.4 MiB that 16 384 reserved streams cost.
    pub initial_streams: u32,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Silence after which a connection is dead.
    pub idle_timeout: Duration,
    /// Largest UDP payload path MTU discovery probes for. quinn's default (1452) suits the
    /// internet; jumbo-frame LANs and loopback carry far larger datagrams, and per-packet cost is
    /// what limits QUIC's throughput. Failed probes cost a few lost datagrams, no more.
    pub mtu_upper_bound: u16,
}

impl Default for QuicTuning {
    fn default() -> Self {
        Self {
            stream_window: 2 * 1024 * 1024,
            connection_window: 32 * 1024 * 1024,
            max_streams: 16_384,
            initial_streams: 128,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            mtu_upper_bound: 8952,
        }
    }
}

fn transport(t: &QuicTuning) -> Arc<TransportConfig> {
    let mut c = TransportConfig::default();
    c.stream_receive_window(VarInt::from_u32(t.stream_window))
        .receive_window(VarInt::from_u32(t.connection_window))
        .send_window(u64::from(t.connection_window))
        .max_concurrent_bidi_streams(VarInt::from_u32(t.initial_streams.min(t.max_streams)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(t.keep_alive))
        .max_idle_timeout(IdleTimeout::try_from(t.idle_timeout).ok())
        .datagram_receive_buffer_size(None);
    let mut mtud = quinn_proto::MtuDiscoveryConfig::default();
    mtud.upper_bound(t.mtu_upper_bound);
    c.mtu_discovery_config(Some(mtud));
    Arc::new(c)
}

/// Per-node secrets of the QUIC endpoint, derived from the node key so that they survive
/// restarts (see [`KeyedCidGenerator`]).
pub struct QuicSecrets {
    /// Stateless reset key.
    pub reset: [u8; 32],
    /// Address validation token key.
    pub token: [u8; 32],
    /// Connection id validation key.
    pub cid: [u8; 32],
}

impl QuicSecrets {
    /// Derives every secret from the node's secret key.
    pub fn derive(node_secret: &[u8; 32]) -> Self {
        Self {
            reset: blake3::derive_key("vx6 2026 quic stateless reset key", node_secret),
            token: blake3::derive_key("vx6 2026 quic address token key", node_secret),
            cid: blake3::derive_key("vx6 2026 quic connection id key", node_secret),
        }
    }
}

/// Everything quinn-proto needs, derived from the node's key and seed.
pub struct QuicConfigs {
    /// Endpoint-wide settings (stateless reset key derived from the node key, so a restarted node
    /// can tell peers of its previous run that their connection is gone).
    pub endpoint: Arc<EndpointConfig>,
    /// Accepting side.
    pub server: Arc<ServerConfig>,
    transport: Arc<TransportConfig>,
}

impl QuicConfigs {
    /// Builds configurations. `secrets` must be stable per node and secret; `rng_seed` makes
    /// every random choice of the endpoint reproducible.
    pub fn new(
        tls: &TlsFactory,
        tuning: &QuicTuning,
        secrets: &QuicSecrets,
        rng_seed: [u8; 32],
    ) -> Result<Self, TlsSetupError> {
        let transport = transport(tuning);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secrets.reset);
        let mut endpoint = EndpointConfig::new(Arc::new(reset_key));
        endpoint.rng_seed(Some(rng_seed));
        // QUIC packets keep their fixed bit, so a first byte without it marks a VX6 datagram
        // (DHT, later relay) on the same socket.
        endpoint.grease_quic_bit(false);
        // Accept datagrams as large as path MTU discovery may probe for.
        endpoint
            .max_udp_payload_size(tuning.mtu_upper_bound)
            .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
        let cid_key = secrets.cid;
        endpoint.cid_generator(move || Box::new(KeyedCidGenerator::new(cid_key, rng_seed)));
        let crypto = QuicServerConfig::try_from(tls.server()?)
            .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
        let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&secrets.token);
        let mut server = ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
        server.transport_config(transport.clone());
        Ok(Self {
            endpoint: Arc::new(endpoint),
            server: Arc::new(server),
            transport,
        })
    }

    /// Client configuration for one dial; see [`TlsFactory::client`].
    pub fn client(
        &self,
        tls: &TlsFactory,
        expected: Option<crate::NodeId>,
        mismatch: &PeerMismatch,
    ) -> Result<ClientConfig, TlsSetupError> {
        let crypto = QuicClientConfig::try_from(tls.client(expected, mismatch)?)
            .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut config = ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.transport.clone());
        Ok(config)
    }
}

/// Why a QUIC connection ended, as a [`Failure`]. `established`: whether its handshake had
/// completed (a silent peer before that is a handshake timeout).
pub fn failure(err: &ConnectionError, established: bool) -> Failure {
    use ConnectionError as E;
    let cause = match err {
        E::TimedOut if !established => Cause::HandshakeTimeout,
        E::TimedOut => Cause::Timeout,
        E::Reset => Cause::ResetByPeer,
        // What `Endpoint::refuse` sends at the peer's session limit.
        E::ConnectionClosed(c) if c.error_code == TransportErrorCode::CONNECTION_REFUSED => {
            Cause::LimitReached
        }
        E::ApplicationClosed(_) | E::ConnectionClosed(_) => Cause::ConnectionLost,
        E::LocallyClosed => Cause::Closed,
        E::CidsExhausted => Cause::LimitReached,
        E::TransportError(_) | E::VersionMismatch => Cause::ProtocolViolation,
    };
    Failure::new(cause, err.to_string())
}

fn sid(id: u64) -> StreamId {
    StreamId::from(VarInt::from_u64(id).unwrap_or(VarInt::MAX))
}

fn code(c: VarInt) -> u32 {
    u32::try_from(u64::from(c)).unwrap_or(u32::MAX)
}

/// Opens a bidirectional stream, if the peer's limit allows.
pub fn open(conn: &mut Connection) -> Option<u64> {
    conn.streams().open(Dir::Bi).map(u64::from)
}

/// Takes a stream the peer opened.
pub fn accept(conn: &mut Connection) -> Option<u64> {
    conn.streams().accept(Dir::Bi).map(u64::from)
}

/// Writes what flow control allows; `Ok(0)` means blocked until a `Writable` event.
pub fn write(conn: &mut Connection, id: u64, data: Outgoing<'_>) -> Result<usize, StreamError> {
    let mut stream = conn.send_stream(sid(id));
    let written = match data {
        Outgoing::Slice(s) => stream.write(s),
        Outgoing::Bytes(b) => stream
            .write_chunks(std::slice::from_mut(b))
            .map(|w| w.bytes),
    };
    match written {
        Ok(n) => Ok(n),
        Err(WriteError::Blocked) => Ok(0),
        Err(WriteError::Stopped(c)) => Err(StreamError::Reset(code(c))),
        Err(WriteError::ClosedStream) => Err(StreamError::Unknown),
    }
}

/// Half-closes the local direction.
pub fn finish(conn: &mut Connection, id: u64) -> Result<(), StreamError> {
    match conn.send_stream(sid(id)).finish() {
        Ok(()) => Ok(()),
        Err(quinn_proto::FinishError::Stopped(c)) => Err(StreamError::Reset(code(c))),
        Err(quinn_proto::FinishError::ClosedStream) => Err(StreamError::Finished),
    }
}

/// Asks the peer to stop sending (the sending direction stays open).
pub fn stop(conn: &mut Connection, id: u64, error: u32) {
    let _ = conn.recv_stream(sid(id)).stop(VarInt::from_u32(error));
}

/// Aborts both directions.
pub fn reset(conn: &mut Connection, id: u64, error: u32) {
    let _ = conn.send_stream(sid(id)).reset(VarInt::from_u32(error));
    let _ = conn.recv_stream(sid(id)).stop(VarInt::from_u32(error));
}

/// Reads up to `max` bytes in order.
pub fn read(conn: &mut Connection, id: u64, max: usize) -> StreamRead {
    let mut stream = conn.recv_stream(sid(id));
    let mut chunks = match stream.read(true) {
        Ok(chunks) => chunks,
        Err(ReadableError::ClosedStream) => return StreamRead::Finished,
        Err(ReadableError::IllegalOrderedRead) => return StreamRead::Finished,
    };
    let result = match chunks.next(max) {
        Ok(Some(chunk)) => StreamRead::Data(chunk.bytes),
        Ok(None) => StreamRead::Finished,
        Err(ReadError::Blocked) => StreamRead::Blocked,
        Err(ReadError::Reset(c)) => StreamRead::Reset(code(c)),
    };
    // Whether credit must be sent is picked up by the connection's next poll_transmit.
    let _ = chunks.finalize();
    result
}
