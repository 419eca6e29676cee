//! The node: every session, every service stream, the services it offers and the keys it has
//! pinned, as one sans-IO state machine.
//!
//! Inputs: `handle_datagram` (UDP, QUIC), `accept_tcp` / `handle_tcp_*` (TCP sessions),
//! `handle_timeout`, and the stream calls of the runtime (`open_stream`, `stream_read`,
//! `stream_write`, `stream_finish`, `stream_reset`, `target_connected`, `target_failed`).
//! Outputs, drained after every input in this order: `poll_event` (what the runtime must do),
//! `poll_transmit` (UDP datagrams), `poll_tcp_transmit` per TCP session (bytes for its socket),
//! then `poll_timeout` (when to call `handle_timeout`).

mod aliases;
mod circuits;
mod demux;
mod discovery;
mod event;
mod home;
mod limits;
mod metrics;
mod observe;
mod rate;
mod resolver;
mod session;
mod session_table;
mod side;
mod spliced;
mod status;
mod stream;
mod stream_table;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, EcnCodepoint, Endpoint, Transmit};
use rustls::crypto::CryptoProvider;

pub use aliases::{HostAliasError, MAX_HOSTED_ALIASES};
pub use circuits::{
    ACTIVE_PROBE_EVERY, AUTO_DEADLINE, CircuitRole, CircuitStatus, DEAD_AFTER, DEFAULT_HOPS,
    PING_TIMEOUT, PolicyStatus, RelayConfig, Route, is_virtual,
};
pub use discovery::{MAINTENANCE_INTERVAL, OWN_RECORD_LIFETIME_SECS, REPUBLISH_INTERVAL};
pub use event::{CircuitEvent, Event, SessionId, StreamHandle};
pub use limits::NodeLimits;
pub use metrics::{Labels as MetricLabels, SWITCH_REASONS, counter, gauge};
pub use rate::RateLimit;
pub use side::{BIRTHDAY_GAP, MAX_PINNED, SideOp, SideSocket};
pub use status::{Counters, NodeStatus, SessionStatus};

use self::demux::DatagramClass;
use self::limits::{Admission, Handshakes, Prefix};
use self::rate::PrefixBuckets;
use self::session::{Kind, Session};
use self::session_table::SessionTable;
use self::stream::{Phase, ServiceStream};
use self::stream_table::StreamTable;
use crate::failure::{Cause, Failure};
use crate::identity::{Identity, NodeId};
use crate::names::ServiceName;
use crate::pins::Pins;
use crate::policy::PathKind;
use crate::record::Transport;
use crate::service::{Authorization, OpenRequest, OpenResponse, RefusalCode, ServiceTable};
use crate::session::mux::MuxConfig;
use crate::session::quic::{QuicConfigs, QuicSecrets, QuicTuning};
use crate::session::tcp::TcpSession;
use crate::session::tls::{PeerMismatch, TlsFactory, TlsSetupError, peer_key};
use crate::session::{Outgoing, StreamError, StreamEvent, StreamRead, quic};

/// Stream reset code: the local side gave up on the stream (its local connection failed).
pub const RESET_ABORTED: u32 = 1;
/// Stream reset code: the stream was refused (see the response for why).
pub const RESET_REFUSED: u32 = 2;
/// Stream reset code: the owner dropped the stream at its stream limit (the session holding the
/// most streams gives way, see [`NodeLimits::max_streams`]).
pub const RESET_LIMIT: u32 = 3;

/// What a stream reset by the peer with `code` means, for runtimes and applications.
pub fn reset_failure(code: u32) -> Failure {
    match code {
        RESET_LIMIT | crate::session::mux::RESET_REFUSED => Failure::new(
            Cause::LimitReached,
            "the owner dropped the stream at a limit",
        ),
        _ => Failure::new(Cause::ResetByPeer, format!("code {code}")),
    }
}
/// Datagrams coalesced into one GSO batch at most.
const MAX_GSO_SEGMENTS: usize = 10;
/// Largest read buffered while parsing an opening exchange.
const HEADER_READ: usize = 4096;
/// Bytes a client stream keeps for a replay until the owner accepts it.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Where and whom to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dial {
    /// Peer address.
    pub addr: SocketAddr,
    /// Over what.
    pub transport: Transport,
    /// The node that must answer; `None` pins whoever answers first.
    pub expected: Option<NodeId>,
}

/// Everything a node starts from.
pub struct NodeConfig {
    /// The node's key.
    pub identity: Identity,
    /// Cryptography (and handshake randomness) for TLS.
    pub crypto: Arc<CryptoProvider>,
    /// Seed for every random choice the node makes itself (QUIC connection ids and the like).
    pub seed: [u8; 32],
    /// Offered services.
    pub services: ServiceTable,
    /// Keys pinned in earlier runs.
    pub pins: Pins,
    /// QUIC settings.
    pub quic: QuicTuning,
    /// TCP multiplexer settings.
    pub mux: MuxConfig,
    /// Bounds against hostile or numerous peers.
    pub limits: NodeLimits,
    /// DHT settings.
    pub dht: crate::dht::DhtConfig,
    /// Whether (and within which limits) the node relays circuits for others.
    pub relay: RelayConfig,
}

impl NodeConfig {
    /// A node with `identity`, `crypto` and `seed`, offering nothing, with no pins, and with
    /// the default tuning and limits; change fields as needed.
    pub fn new(identity: Identity, crypto: Arc<CryptoProvider>, seed: [u8; 32]) -> Self {
        Self {
            identity,
            crypto,
            seed,
            services: ServiceTable::new(false),
            pins: Pins::default(),
            quic: QuicTuning::default(),
            mux: MuxConfig::default(),
            limits: NodeLimits::default(),
            dht: crate::dht::DhtConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// TLS or QUIC configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// The VX6 node state machine. See the module docs for the input/output contract.
pub struct Node {
    node_id: NodeId,
    tls: TlsFactory,
    tls_server: Arc<rustls::ServerConfig>,
    quic: QuicConfigs,
    endpoint: Endpoint,
    services: ServiceTable,
    pins: Pins,
    mux: MuxConfig,
    limits: NodeLimits,
    /// Streams one session may carry (the peer's limit, when it uses the same defaults).
    max_session_streams: usize,
    /// The most streams a QUIC peer is ever allowed.
    quic_stream_ceiling: u32,
    /// Incoming sessions in their handshake.
    handshakes: Handshakes,
    /// Sessions this node dialed that are still in their handshake (deadlines only).
    dialing: Handshakes,
    /// Sessions whose handshake completed and that are not down.
    established: usize,
    /// Of those, the incoming ones by source prefix.
    established_from: HashMap<Prefix, usize>,
    /// DHT requests served, per source prefix.
    dht_rate: PrefixBuckets,
    resolver: resolver::Resolver,
    next_session: u64,
    sessions: SessionTable,
    quic_handles: HashMap<ConnectionHandle, SessionId>,
    dials: HashMap<(Transport, SocketAddr), SessionId>,
    streams: StreamTable,
    events: VecDeque<Event>,
    /// A session's stream events while they are handled, kept between drives: a QUIC session
    /// reports one per packet, and a fresh vector each time was an allocation per packet.
    stream_events: Vec<StreamEvent>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    transmit_cursor: u64,
    counters: Counters,
    identity: Identity,
    dht: crate::dht::Dht,
    discovery: discovery::State,
    circuits: circuits::Circuits,
    aliases: aliases::Aliases,
    traffic: metrics::Traffic,
    recorded: metrics::Recorded,
    observe: observe::State,
    home: home::State,
    side: side::State,
}

impl Node {
    /// Builds a node. `now` is the runtime's clock reading.
    pub fn new(now: Instant, config: NodeConfig) -> Result<Self, NodeError> {
        let secrets = QuicSecrets::derive(&config.identity.secret_bytes());
        let tls = TlsFactory::new(&config.identity, config.crypto)?;
        let quic = QuicConfigs::new(&tls, &config.quic, &secrets, config.seed)?;
        let endpoint = Endpoint::new(
            quic.endpoint.clone(),
            Some(quic.server.clone()),
            true,
            Some(config.seed),
        );
        Ok(Self {
            node_id: config.identity.node_id(),
            tls_server: Arc::new(tls.server()?),
            tls,
            quic,
            endpoint,
            services: config.services,
            pins: config.pins,
            mux: config.mux,
            limits: config.limits,
            max_session_streams: (config.quic.max_streams as usize)
                .min(config.mux.max_peer_streams),
            quic_stream_ceiling: config.quic.max_streams,
            handshakes: Handshakes::default(),
            dialing: Handshakes::default(),
            established: 0,
            established_from: HashMap::new(),
            dht_rate: PrefixBuckets::new(config.limits.dht_requests, now),
            resolver: resolver::Resolver::default(),
            next_session: 1,
            sessions: SessionTable::default(),
            quic_handles: HashMap::new(),
            dials: HashMap::new(),
            streams: StreamTable::default(),
            events: VecDeque::new(),
            stream_events: Vec::new(),
            responses: VecDeque::new(),
            transmit_cursor: 0,
            counters: Counters::default(),
            dht: crate::dht::Dht::new(config.identity.node_id(), config.dht),
            identity: config.identity,
            discovery: discovery::State::default(),
            circuits: circuits::Circuits::new(now, config.seed, config.relay),
            aliases: aliases::Aliases::default(),
            traffic: metrics::Traffic::default(),
            recorded: metrics::Recorded::default(),
            observe: observe::State::default(),
            home: home::State::default(),
            side: side::State::default(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The offered services.
    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    /// The offered services, to change at run time.
    pub fn services_mut(&mut self) -> &mut ServiceTable {
        &mut self.services
    }

    /// The node's counters (cheaper than a whole [`Node::status`]).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Pinned keys (persist after [`Event::PinLearned`]).
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Next event for the runtime.
    pub fn poll_event(&mut self) -> Option<Event> {
        // Circuit streams and virtual sessions are the node's own: their events are acted on
        // here, never shown, and spliced circuits move their bytes here, after the input.
        loop {
            let now = self.circuits.clock;
            if !self.circuits.dirty.is_empty() {
                self.pump_dirty(now);
            }
            let ev = self.events.pop_front()?;
            match &ev {
                Event::TcpConnect { addr, .. } if circuits::is_virtual(addr) => continue,
                Event::TcpClose { session, .. }
                    if self.circuits.stream_sessions.contains_key(session) =>
                {
                    let ckey = self.circuits.stream_sessions.remove(session);
                    if let Some(ckey) = ckey {
                        self.teardown(now, ckey);
                    }
                    continue;
                }
                _ => {}
            }
            match ev.stream() {
                Some(h) if self.circuits.owns(h) => match ev {
                    Event::StreamFailed { failure, .. } => {
                        self.circuit_stream_failed(now, h, failure)
                    }
                    Event::StreamWritable(_) | Event::StreamReadable(_) => {
                        if let Some(&ckey) = self.circuits.by_stream.get(&h) {
                            self.circuits.dirty.insert(ckey);
                        }
                    }
                    _ => {}
                },
                _ => return Some(ev),
            }
        }
    }

    fn new_session_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    // ---- streams, runtime side -------------------------------------------------------------

    /// Opens a stream to `service` on the node at `dial`, dialing a session if none is up.
    /// Always returns a handle; failures arrive as [`Event::StreamFailed`].
    pub fn open_stream(&mut self, now: Instant, dial: &Dial, service: ServiceName) -> StreamHandle {
        match self.new_client_stream(ServiceStream::client(SessionId(0), service, now)) {
            Ok(handle) => {
                self.attach(now, handle, dial);
                handle
            }
            Err(handle) => handle,
        }
    }

    /// Registers a client stream. At the node's stream limit it is refused at once: `Err` with
    /// a handle that already has its [`Event::StreamFailed`].
    fn new_client_stream(&mut self, st: ServiceStream) -> Result<StreamHandle, StreamHandle> {
        let handle = self.streams.new_handle();
        self.counters.streams_opened += 1;
        if self.streams.len() >= self.limits.max_streams {
            let detail = format!(
                "this node carries {} streams, its limit",
                self.streams.len()
            );
            self.refuse_at_limit(handle, detail);
            return Err(handle);
        }
        self.streams.insert(handle, st);
        Ok(handle)
    }

    fn refuse_at_limit(&mut self, handle: StreamHandle, detail: String) {
        self.counters.streams_refused_limit += 1;
        self.events.push_back(Event::StreamFailed {
            stream: handle,
            failure: Failure::new(Cause::LimitReached, detail),
        });
    }

    /// Puts a client stream on a session to `dial` (dialing one if needed); on failure the
    /// stream is forgotten and reported failed, so the runtime sees one uniform path.
    fn attach(&mut self, now: Instant, handle: StreamHandle, dial: &Dial) {
        match self.session_for(now, dial) {
            Ok(sid) => self.attach_to(now, handle, sid),
            Err(failure) => {
                self.forget(handle);
                self.events.push_back(Event::StreamFailed {
                    stream: handle,
                    failure,
                });
            }
        }
    }

    /// An established QUIC session with `peer`, whichever side opened it (a relay reaches a
    /// node that keeps a session to it this way, wherever its NAT put it).
    /// The newest one (ids only grow), at the address it runs at now (its NAT may have moved
    /// it since).
    fn quic_session_with(&self, peer: NodeId) -> Option<(SessionId, SocketAddr)> {
        self.sessions
            .iter()
            .filter(|(_, s)| {
                s.peer == Some(peer) && s.established && !s.down && !circuits::is_virtual(&s.remote)
            })
            .filter_map(|(sid, s)| match &s.kind {
                Kind::Quic { conn, .. } => Some((*sid, conn.remote_address())),
                Kind::Tcp { .. } => None,
            })
            .last()
    }

    /// Puts a stream on session `session`.
    fn attach_to(&mut self, now: Instant, handle: StreamHandle, session: SessionId) {
        let s = &self.sessions[&session];
        let open = s.streams.len() - s.pending.len();
        let full = if open >= self.max_session_streams {
            Some(format!(
                "the session to {} carries {open} streams, its limit",
                s.remote
            ))
        } else if s.pending.len() >= self.limits.max_waiting_streams {
            Some(format!(
                "{} streams wait for stream credit from {}",
                s.pending.len(),
                s.remote
            ))
        } else {
            None
        };
        if let Some(detail) = full {
            self.forget(handle);
            self.refuse_at_limit(handle, detail);
            return;
        }
        if let Some(st) = self.streams.get_mut(&handle) {
            st.session = session;
            st.phase = Phase::AwaitSession;
        }
        let s = self
            .sessions
            .get_mut(&session)
            .expect("session_for returns live ids");
        s.streams.insert(handle);
        s.pending.push(handle);
        if s.established {
            self.open_pending(now, session);
        }
        self.drive(now, session);
    }

    /// An up (or handshaking) session to `dial`, or a new one.
    fn session_for(&mut self, now: Instant, dial: &Dial) -> Result<SessionId, Failure> {
        if let Some(&sid) = self.dials.get(&(dial.transport, dial.addr))
            && let Some(s) = self.sessions.get(&sid)
            && !s.down
        {
            let compatible = match (dial.expected, s.peer, s.dial.and_then(|d| d.expected)) {
                (None, _, _) => true,
                (Some(want), Some(peer), _) => want == peer,
                (Some(want), None, Some(dialed)) => want == dialed,
                (Some(_), None, None) => false,
            };
            if compatible {
                return Ok(sid);
            }
            if let (Some(want), Some(peer)) = (dial.expected, s.peer) {
                return Err(Failure::new(
                    Cause::PeerKeyMismatch,
                    format!("peer at {} is node {peer}, expected {want}", dial.addr),
                ));
            }
        }
        let pinned = self.pins.get(&dial.addr);
        let expected = dial.expected.or(pinned);
        let expected_from_pin = dial.expected.is_none() && pinned.is_some();
        let sid = self.new_session_id();
        let mismatch = PeerMismatch::default();
        let cannot_dial = |e: &dyn std::fmt::Display| {
            Failure::new(
                Cause::Unreachable,
                format!("cannot dial {}: {e}", dial.addr),
            )
        };
        let kind = match dial.transport {
            Transport::Quic => {
                let config = self
                    .quic
                    .client(&self.tls, expected, &mismatch)
                    .map_err(|e| cannot_dial(&e))?;
                let (handle, conn) = self
                    .endpoint
                    .connect(now, config, dial.addr, "vx6")
                    .map_err(|e| cannot_dial(&e))?;
                self.quic_handles.insert(handle, sid);
                Kind::Quic {
                    handle,
                    conn: Box::new(conn),
                }
            }
            Transport::Tcp => {
                let config = self
                    .tls
                    .client(expected, &mismatch)
                    .map_err(|e| cannot_dial(&e))?;
                let conn = TcpSession::client(now, Arc::new(config), self.mux)
                    .map_err(|e| cannot_dial(&e))?;
                self.events.push_back(Event::TcpConnect {
                    session: sid,
                    addr: dial.addr,
                });
                Kind::Tcp {
                    conn: Box::new(conn),
                    connected: false,
                    bytes_sent: 0,
                    bytes_received: 0,
                }
            }
        };
        self.sessions.insert(
            sid,
            Session {
                kind,
                remote: dial.addr,
                dial: Some(Dial { expected, ..*dial }),
                mismatch,
                expected_from_pin,
                peer: None,
                established: false,
                down: false,
                streams: Default::default(),
                pending: Vec::new(),
            },
        );
        self.dials.insert((dial.transport, dial.addr), sid);
        self.dialing.insert(now, sid, dial.addr);
        Ok(sid)
    }

    /// Reads up to `max` bytes of the peer's data.
    pub fn stream_read(&mut self, now: Instant, handle: StreamHandle, max: usize) -> StreamRead {
        let Some(st) = self.streams.get_mut(&handle) else {
            return StreamRead::Finished;
        };
        if st.phase != Phase::Open {
            return StreamRead::Blocked;
        }
        let sid = st.session;
        let counted = !self.circuits.owns(handle);
        if !st.inbuf.is_empty() {
            let n = st.inbuf.len().min(max);
            if counted {
                let path = self.session_path(sid);
                self.traffic.stream(path, false, n);
            }
            let st = self.streams.get_mut(&handle).expect("checked above");
            return StreamRead::Data(st.inbuf.split_to(n).freeze());
        }
        let id = st.id.expect("open streams have a transport id");
        let Some(session) = self.sessions.get_mut(&sid) else {
            return StreamRead::Finished;
        };
        let result = session.read(now, id, max);
        match result {
            StreamRead::Finished => {
                st.read_done = true;
                self.maybe_forget(handle);
            }
            StreamRead::Reset(_) => self.forget(handle),
            StreamRead::Data(_) | StreamRead::Blocked => {}
        }
        if let (StreamRead::Data(d), true) = (&result, counted) {
            let path = self.session_path(sid);
            self.traffic.stream(path, false, d.len());
        }
        self.drive(now, sid);
        result
    }

    /// Writes what flow control allows. A short write may be retried at once; `Ok(0)` means
    /// wait for [`Event::StreamWritable`], which only a write that took nothing arms.
    pub fn stream_write(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        self.write_outgoing(now, handle, Outgoing::Slice(data))
    }

    /// [`Node::stream_write`] without a copy: what the stream takes is split off the front of
    /// `data` (a QUIC session keeps those bytes, as they are, until they are acknowledged).
    pub fn stream_write_bytes(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        data: &mut Bytes,
    ) -> Result<usize, StreamError> {
        self.write_outgoing(now, handle, Outgoing::Bytes(data))
    }

    fn write_outgoing(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        data: Outgoing<'_>,
    ) -> Result<usize, StreamError> {
        let st = self.streams.get_mut(&handle).ok_or(StreamError::Unknown)?;
        if st.write_done {
            return Err(StreamError::Finished);
        }
        // Owners write nothing before the target is connected; clients may pipeline data
        // right behind their request.
        let ready = match st.phase {
            Phase::Open | Phase::AwaitResponse => st.id.is_some(),
            _ => false,
        };
        if !ready {
            st.want_writable = true;
            return Ok(0);
        }
        let (sid, id) = (
            st.session,
            st.id.expect("ready streams have a transport id"),
        );
        if !self.flush_header(handle)? {
            self.streams
                .get_mut(&handle)
                .expect("flush_header keeps the stream")
                .want_writable = true;
            return Ok(0);
        }
        // The replay copy needs the bytes after an owned write has split them off.
        let offered = match &data {
            Outgoing::Bytes(b)
                if self
                    .streams
                    .get(&handle)
                    .is_some_and(|s| s.replay.is_some()) =>
            {
                Some((*b).clone())
            }
            _ => None,
        };
        let slice = match &data {
            Outgoing::Slice(s) => Some(*s),
            Outgoing::Bytes(_) => None,
        };
        let session = self.sessions.get_mut(&sid).ok_or(StreamError::Unknown)?;
        let result = session.write(id, data);
        if let Ok(n) = &result
            && !self.circuits.owns(handle)
        {
            let path = self.session_path(sid);
            self.traffic.stream(path, true, *n);
        }
        if let (Ok(n), Some(st)) = (&result, self.streams.get_mut(&handle))
            && st.phase == Phase::AwaitResponse
            && let Some(replay) = &mut st.replay
        {
            match slice.or(offered.as_deref()) {
                Some(written) if replay.len() + n <= REPLAY_LIMIT => {
                    replay.extend_from_slice(&written[..*n]);
                }
                _ => st.replay = None,
            }
        }
        self.drive(now, sid);
        result
    }

    /// Writes pending opening bytes; `Ok(true)` once none are left.
    fn flush_header(&mut self, handle: StreamHandle) -> Result<bool, StreamError> {
        let st = self.streams.get_mut(&handle).ok_or(StreamError::Unknown)?;
        let Some(id) = st.id else {
            return Ok(false);
        };
        if !st.header_out.is_empty() {
            let session = self
                .sessions
                .get_mut(&st.session)
                .ok_or(StreamError::Unknown)?;
            // Write until done or refused outright: only a write that takes nothing registers
            // the stream for a writable event.
            loop {
                let n = session.write(id, Outgoing::Slice(&st.header_out))?;
                st.header_out.drain(..n);
                if st.header_out.is_empty() {
                    break;
                }
                if n == 0 {
                    return Ok(false);
                }
            }
        }
        if st.finish_pending {
            st.finish_pending = false;
            let session = self
                .sessions
                .get_mut(&st.session)
                .ok_or(StreamError::Unknown)?;
            let _ = session.finish(id);
        }
        Ok(true)
    }

    /// Ends the local direction (the local connection reached EOF).
    pub fn stream_finish(&mut self, now: Instant, handle: StreamHandle) {
        let Some(st) = self.streams.get_mut(&handle) else {
            return;
        };
        if st.write_done {
            return;
        }
        st.write_done = true;
        st.finish_pending = true;
        let sid = st.session;
        if st.phase == Phase::Open || st.phase == Phase::AwaitResponse {
            let _ = self.flush_header(handle);
        }
        self.maybe_forget(handle);
        self.drive(now, sid);
    }

    /// Aborts the stream (the local connection failed).
    pub fn stream_reset(&mut self, now: Instant, handle: StreamHandle) {
        let Some(st) = self.streams.get(&handle) else {
            return;
        };
        let (sid, id) = (st.session, st.id);
        if let (Some(id), Some(session)) = (id, self.sessions.get_mut(&sid)) {
            session.reset(id, RESET_ABORTED);
        }
        self.forget(handle);
        self.drive(now, sid);
    }

    /// The runtime connected the local target of an authorized stream.
    pub fn target_connected(&mut self, now: Instant, handle: StreamHandle) {
        let Some(st) = self.streams.get_mut(&handle) else {
            return;
        };
        if st.phase != Phase::Connecting {
            return;
        }
        st.phase = Phase::Open;
        st.header_out = OpenResponse::Accepted.encode();
        let sid = st.session;
        let _ = self.flush_header(handle);
        self.events.push_back(Event::StreamReadable(handle));
        self.events.push_back(Event::StreamWritable(handle));
        self.drive(now, sid);
    }

    /// The runtime could not connect the local target.
    pub fn target_failed(&mut self, now: Instant, handle: StreamHandle, reason: &str) {
        let Some(st) = self.streams.get(&handle) else {
            return;
        };
        if st.phase != Phase::Connecting {
            return;
        }
        self.counters.refused_target += 1;
        let service = st
            .service
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let sid = st.session;
        let peer = self.sessions.get(&sid).and_then(|s| s.peer);
        let failure = Failure::new(
            Cause::TargetUnavailable,
            format!("service {service}: {reason}"),
        );
        self.refuse(now, handle, RefusalCode::TargetUnavailable, &failure.detail);
        if let Some(peer) = peer {
            self.events.push_back(Event::Refused {
                peer,
                service,
                failure,
            });
        }
    }

    /// Sends a refusal, closes the stream and forgets it.
    fn refuse(&mut self, now: Instant, handle: StreamHandle, code: RefusalCode, reason: &str) {
        let Some(st) = self.streams.get(&handle) else {
            return;
        };
        let (sid, id) = (st.session, st.id);
        if let (Some(id), Some(session)) = (id, self.sessions.get_mut(&sid)) {
            let response = OpenResponse::Refused {
                code,
                reason: reason.to_owned(),
            }
            .encode();
            // A fresh stream always has credit for these few bytes.
            let _ = session.write(id, Outgoing::Slice(&response));
            let _ = session.finish(id);
            session.stop(id, RESET_REFUSED);
        }
        self.forget(handle);
        self.drive(now, sid);
    }

    fn maybe_forget(&mut self, handle: StreamHandle) {
        if self
            .streams
            .get(&handle)
            .is_some_and(|st| st.read_done && st.write_done && !st.finish_pending)
        {
            self.forget(handle);
        }
    }

    fn forget(&mut self, handle: StreamHandle) {
        if let Some(st) = self.streams.remove(handle)
            && let Some(s) = self.sessions.get_mut(&st.session)
        {
            s.streams.remove(&handle);
            s.pending.retain(|h| *h != handle);
        }
    }

    /// Opens transport streams for client streams waiting on an established session.
    fn open_pending(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut waiting = std::mem::take(&mut s.pending).into_iter();
        let mut open = s.streams.len() - waiting.len();
        let mut opened = Vec::new();
        let mut over = Vec::new();
        for handle in waiting.by_ref() {
            // Streams queued while the handshake ran were not counted against the session's
            // limit yet; those past it are refused now, as they would have been then.
            if open >= self.max_session_streams {
                over.push(handle);
                continue;
            }
            let Some(id) = s.open(now) else {
                // Out of the peer's stream credit: wait for it.
                s.pending.push(handle);
                break;
            };
            open += 1;
            opened.push((handle, id));
        }
        s.pending.extend(waiting);
        let remote = s.remote;
        for handle in over {
            let detail = format!("the session to {remote} carries {open} streams, its limit");
            self.forget(handle);
            self.refuse_at_limit(handle, detail);
        }
        for (handle, id) in opened {
            self.streams.bind(handle, sid, id);
            let Some(st) = self.streams.get_mut(&handle) else {
                continue;
            };
            st.phase = Phase::AwaitResponse;
            st.header_out = match st.circuit_request.take() {
                Some(request) => request,
                None => OpenRequest {
                    service: st.service.clone().expect("client streams name a service"),
                }
                .encode(),
            };
            if st.retried
                && let Some(replay) = &st.replay
            {
                st.header_out.extend_from_slice(replay);
                if st.write_done {
                    st.finish_pending = true;
                }
            }
            let want = std::mem::take(&mut st.want_writable);
            let _ = self.flush_header(handle);
            if want {
                self.events.push_back(Event::StreamWritable(handle));
            }
        }
    }

    // ---- sessions, network side ------------------------------------------------------------

    /// A UDP datagram arrived on the node's socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.circuits.clock = now;
        match demux::classify(&data) {
            DatagramClass::Quic => {}
            DatagramClass::Relay => {
                self.handle_relay_datagram(now, remote, ecn, data);
                return;
            }
            DatagramClass::Dht => {
                // Before the signature check: that check is what a flood would make us pay.
                // Answers to this node's own requests, from where they went, are not a flood:
                // limiting them would fail its lookups when its peers share a prefix.
                let awaited = crate::dht::datagram::peek_response(&data).is_some_and(|txid| {
                    self.dht.awaits(txid, remote) || self.discovery_awaits(txid, remote)
                });
                if awaited || self.dht_rate.allow(now, remote) {
                    self.handle_dht_datagram(now, remote, &data);
                } else {
                    self.counters.dht_rate_limited += 1;
                }
                return;
            }
            DatagramClass::Unknown => {
                self.counters.datagrams_dropped += 1;
                return;
            }
        }
        self.traffic
            .datagrams(PathKind::Direct, false, 1, data.len());
        self.handle_quic_datagram(now, remote, local_ip, ecn, data);
    }

    /// A QUIC packet, from a real address or (unwrapped from a circuit) a virtual one.
    fn handle_quic_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                let Some(&sid) = self.quic_handles.get(&ch) else {
                    return;
                };
                if let Some(Session {
                    kind: Kind::Quic { conn, .. },
                    ..
                }) = self.sessions.get_mut(&sid)
                {
                    conn.handle_event(event);
                }
                self.drive(now, sid);
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if !self.session_room(remote) {
                    self.counters.sessions_refused += 1;
                    let t = self.endpoint.refuse(incoming, &mut buf);
                    self.queue_datagram(t, buf);
                    return;
                }
                if self.handshakes.len() >= self.limits.retry_threshold
                    && !incoming.remote_address_validated()
                {
                    match self.endpoint.retry(incoming, &mut buf) {
                        Ok(t) => {
                            self.counters.quic_retries += 1;
                            self.queue_datagram(t, buf);
                        }
                        // A client that already answered a Retry and still has no valid
                        // token: its address is not proven, so no state for it.
                        Err(e) => {
                            self.counters.handshakes_refused += 1;
                            self.endpoint.ignore(e.into_incoming());
                        }
                    }
                    return;
                }
                self.admit_handshake(now, remote);
                match self
                    .endpoint
                    .accept(incoming, now, &mut buf, Some(self.quic.server.clone()))
                {
                    Ok((handle, conn)) => {
                        let sid = self.new_session_id();
                        self.handshakes.insert(now, sid, remote);
                        self.quic_handles.insert(handle, sid);
                        self.sessions.insert(
                            sid,
                            Self::incoming_session(
                                Kind::Quic {
                                    handle,
                                    conn: Box::new(conn),
                                },
                                remote,
                            ),
                        );
                        self.drive(now, sid);
                    }
                    Err(e) => {
                        self.counters.sessions_failed += 1;
                        if let Some(t) = e.response {
                            self.queue_datagram(t, buf);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.queue_datagram(t, buf);
            }
            None => {}
        }
    }

    fn incoming_session(kind: Kind, remote: SocketAddr) -> Session {
        Session {
            kind,
            remote,
            dial: None,
            mismatch: PeerMismatch::default(),
            expected_from_pin: false,
            peer: None,
            established: false,
            down: false,
            streams: Default::default(),
            pending: Vec::new(),
        }
    }

    /// Queues a datagram for `poll_transmit`; past [`NodeLimits::max_queued_datagrams`] it is
    /// dropped and counted (UDP may lose it anyway; the queue must not grow while the socket
    /// cannot keep up). Returns whether it was queued.
    fn queue_datagram(&mut self, transmit: Transmit, bytes: Vec<u8>) -> bool {
        if self.responses.len() >= self.limits.max_queued_datagrams {
            self.counters.datagrams_dropped += 1;
            return false;
        }
        self.responses.push_back((transmit, bytes));
        true
    }

    /// Whether an incoming session from `remote` may start: the table of authenticated sessions,
    /// and its prefix's share of it, have room.
    fn session_room(&self, remote: SocketAddr) -> bool {
        let from_prefix = self
            .established_from
            .get(&Prefix::of(remote))
            .copied()
            .unwrap_or(0);
        self.established < self.limits.max_sessions
            && from_prefix < self.limits.max_sessions_per_prefix
    }

    /// At the node's stream limit, makes room for a stream the peer of session `sid` opened by
    /// refusing one of the session holding the most streams, if that holds more than `sid`
    /// does (max-min fairness: a few sessions holding everything cannot lock others out). A
    /// stream still waiting for its request goes first. Returns whether room was made.
    fn make_room(&mut self, now: Instant, sid: SessionId) -> bool {
        let mine = self.sessions.get(&sid).map_or(0, |s| s.streams.len());
        let Some((_, biggest)) = self
            .sessions
            .iter()
            .filter(|(id, _)| **id != sid)
            .max_by_key(|(_, s)| s.streams.len())
        else {
            return false;
        };
        if biggest.streams.len() <= mine {
            return false;
        }
        let incoming = |h: &&StreamHandle| self.streams.get(h).is_some_and(|st| st.incoming);
        let waiting = |h: &&StreamHandle| {
            self.streams
                .get(h)
                .is_some_and(|st| st.phase == Phase::ReadRequest)
        };
        let victim = biggest
            .streams
            .iter()
            .find(waiting)
            .or_else(|| biggest.streams.iter().find(incoming))
            .copied();
        let Some(victim) = victim else {
            return false;
        };
        self.counters.streams_refused_limit += 1;
        let reason = "the owner is at its stream limit and this peer holds the most streams";
        if self.streams.get(&victim).map(|st| st.phase) == Some(Phase::ReadRequest) {
            self.refuse(now, victim, RefusalCode::Overloaded, reason);
        } else {
            // Answered already: it can only be reset, and the runtime told to let go of its
            // target.
            self.fail_stream_with(
                now,
                victim,
                RESET_LIMIT,
                Failure::new(Cause::LimitReached, reason),
            );
        }
        true
    }

    /// Makes room for a new incoming handshake from `remote`: at a limit, the oldest handshake
    /// of its prefix (or of all) is dropped and counted.
    fn admit_handshake(&mut self, now: Instant, remote: SocketAddr) {
        if let Admission::AdmitEvicting(oldest) = self.handshakes.admit(&self.limits, remote) {
            self.counters.handshakes_evicted += 1;
            let failure = Failure::new(
                Cause::LimitReached,
                "handshake dropped to make room for a newer one",
            );
            self.abort_session(now, oldest, failure);
        }
    }

    /// Ends a session from this side at once (QUIC: CONNECTION_CLOSE; TCP: the socket closes).
    fn abort_session(&mut self, now: Instant, sid: SessionId, failure: Failure) {
        // Out of the tables first, so that a caller making room sees the room at once.
        self.handshakes.remove(sid);
        self.dialing.remove(sid);
        if let Some(Session {
            kind: Kind::Quic { conn, .. },
            ..
        }) = self.sessions.get_mut(&sid)
        {
            conn.close(now, 0u32.into(), bytes::Bytes::new());
        }
        self.fail_session(now, sid, failure);
        self.drive(now, sid);
    }

    /// Next UDP datagram (or GSO batch of at most `max_segments`) to send; its payload is
    /// written to `buf`.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        loop {
            let t = self.next_transmit(now, max_segments, buf)?;
            if !circuits::is_virtual(&t.destination) {
                return Some(t);
            }
            // For a link: out on its circuit, or held (or lost) until one is up.
            if let Some(t) = self.wrap_virtual(t, buf) {
                return Some(t);
            }
        }
    }

    fn next_transmit(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        // Round-robin over QUIC sessions so one busy session cannot starve the others.
        let ids: Vec<SessionId> = self
            .sessions
            .range(SessionId(self.transmit_cursor)..)
            .chain(self.sessions.range(..SessionId(self.transmit_cursor)))
            .filter(|(_, s)| matches!(s.kind, Kind::Quic { .. }))
            .map(|(id, _)| *id)
            .collect();
        for sid in ids {
            let Some(Session {
                kind: Kind::Quic { conn, .. },
                ..
            }) = self.sessions.get_mut(&sid)
            else {
                continue;
            };
            buf.clear();
            // A GSO batch must fit one 64 KiB send.
            let fit = usize::from(u16::MAX) / usize::from(conn.current_mtu().max(1200));
            let segments = max_segments.min(fit).clamp(1, MAX_GSO_SEGMENTS);
            let sent = conn.poll_transmit(now, segments, buf);
            // Sending arms loss detection and pacing timers.
            self.sessions.refresh(sid);
            if let Some(t) = sent {
                self.transmit_cursor = sid.0;
                if !circuits::is_virtual(&t.destination) {
                    let segments = t.size.div_ceil(t.segment_size.unwrap_or(t.size).max(1));
                    self.traffic
                        .datagrams(PathKind::Direct, true, segments, t.size);
                }
                return Some(t);
            }
            self.transmit_cursor = sid.0 + 1;
        }
        None
    }

    /// The runtime accepted a TCP connection from `remote`; `None` means refuse it (at the
    /// session limit): close the socket.
    pub fn accept_tcp(&mut self, now: Instant, remote: SocketAddr) -> Option<SessionId> {
        if !self.session_room(remote) {
            self.counters.sessions_refused += 1;
            return None;
        }
        self.admit_handshake(now, remote);
        let conn = TcpSession::server(now, self.tls_server.clone(), self.mux).ok()?;
        let sid = self.new_session_id();
        self.handshakes.insert(now, sid, remote);
        self.sessions.insert(
            sid,
            Self::incoming_session(
                Kind::Tcp {
                    conn: Box::new(conn),
                    connected: true,
                    bytes_sent: 0,
                    bytes_received: 0,
                },
                remote,
            ),
        );
        Some(sid)
    }

    /// The TCP connection the node asked for with [`Event::TcpConnect`] is established.
    pub fn handle_tcp_connected(&mut self, now: Instant, sid: SessionId) {
        if let Some(Session {
            kind: Kind::Tcp { connected, .. },
            ..
        }) = self.sessions.get_mut(&sid)
        {
            *connected = true;
        }
        self.drive(now, sid);
    }

    /// Bytes arrived on a TCP session's socket.
    pub fn handle_tcp_data(&mut self, now: Instant, sid: SessionId, data: &[u8]) {
        if let Some(Session {
            kind:
                Kind::Tcp {
                    conn,
                    bytes_received,
                    ..
                },
            ..
        }) = self.sessions.get_mut(&sid)
        {
            *bytes_received += data.len() as u64;
            conn.handle_input(now, data);
        }
        self.drive(now, sid);
    }

    /// A TCP session's socket closed or failed (or could not connect). A connection that ends
    /// without TLS close_notify or GOAWAY means the peer process is gone, as a QUIC stateless
    /// reset does; unanswered streams are retried once.
    pub fn handle_tcp_closed(&mut self, now: Instant, sid: SessionId, failure: Failure) {
        let mut established = false;
        if let Some(Session {
            kind: Kind::Tcp { conn, .. },
            established: up,
            ..
        }) = self.sessions.get_mut(&sid)
        {
            conn.handle_eof();
            established = *up;
        }
        if established {
            self.retry_unanswered(now, sid);
        }
        self.fail_session(now, sid, failure);
    }

    /// Bytes to write to a TCP session's socket; returns whether any were appended.
    pub fn poll_tcp_transmit(&mut self, sid: SessionId, out: &mut Vec<u8>) -> bool {
        match self.sessions.get_mut(&sid) {
            Some(Session {
                kind:
                    Kind::Tcp {
                        conn,
                        connected: true,
                        bytes_sent,
                        ..
                    },
                down: false,
                ..
            }) => {
                let before = out.len();
                let wrote = conn.poll_transmit(out);
                *bytes_sent += (out.len() - before) as u64;
                // Output drained may have unblocked writers.
                self.collect_tcp_events(sid);
                wrote
            }
            _ => false,
        }
    }

    fn collect_tcp_events(&mut self, sid: SessionId) {
        let mut evs = Vec::new();
        if let Some(Session {
            kind: Kind::Tcp { conn, .. },
            ..
        }) = self.sessions.get_mut(&sid)
        {
            while let Some(e) = conn.mux().poll_event() {
                evs.push(e);
            }
        }
        for e in evs {
            if let StreamEvent::Writable(id) = e
                && let Some(h) = self.streams.by_transport(sid, id)
            {
                self.events.push_back(Event::StreamWritable(h));
            }
        }
    }

    /// Timers fired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.circuits_timeout(now);
        self.observe_timeout(now);
        self.home_timeout(now);
        self.side_timeout(now);
        self.aliases_timeout(now);
        let timeout = self.limits.handshake_timeout;
        for sid in self.handshakes.expired(now, timeout) {
            self.counters.handshakes_timed_out += 1;
            let failure = Failure::new(Cause::HandshakeTimeout, format!("after {timeout:?}"));
            self.abort_session(now, sid, failure);
        }
        for handle in self.streams.late_requests(now) {
            let reason = format!(
                "no service request within {:?}",
                self.limits.request_timeout
            );
            self.refuse(now, handle, RefusalCode::BadRequest, &reason);
        }
        for sid in self.dialing.expired(now, timeout) {
            let failure = Failure::new(Cause::HandshakeTimeout, format!("after {timeout:?}"));
            // A relayed link's session waits on its circuits: their failure is the reason.
            let failure = self
                .sessions
                .get(&sid)
                .and_then(|s| self.link_failure(s.remote))
                .unwrap_or(failure);
            self.abort_session(now, sid, failure);
        }
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
            self.drain_dht(now);
        }
        self.maintain(now);
        if self.republish_timeout().is_some_and(|t| t <= now) {
            self.republish(now);
        }
        for sid in self.sessions.due(now) {
            match self.sessions.get_mut(&sid).map(|s| &mut s.kind) {
                Some(Kind::Quic { conn, .. }) => conn.handle_timeout(now),
                Some(Kind::Tcp { conn, .. }) => conn.handle_timeout(now),
                None => continue,
            }
            self.drive(now, sid);
        }
    }

    /// When [`Node::handle_timeout`] must next be called: as soon as this instant has passed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let maintenance = self.maintenance_timeout();
        let timeout = self.limits.handshake_timeout;
        #[cfg(debug_assertions)]
        self.sessions.assert_consistent();
        [
            self.sessions.next_timeout(),
            self.dht.poll_timeout(),
            maintenance,
            self.republish_timeout(),
            self.streams.next_request_deadline(),
            self.handshakes.next_deadline(timeout),
            self.dialing.next_deadline(timeout),
            self.circuits_next_timeout(),
            self.observe_next_timeout(),
            self.home_next_timeout(),
            self.side_next_timeout(),
            self.aliases_next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Closes every session (clean shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for sid in ids {
            if let Some(s) = self.sessions.get_mut(&sid) {
                match &mut s.kind {
                    Kind::Quic { conn, .. } => {
                        conn.close(now, 0u32.into(), bytes::Bytes::from_static(b"shutdown"))
                    }
                    Kind::Tcp { conn, .. } => conn.close(0),
                }
            }
            self.drive(now, sid);
        }
    }

    // ---- driving sessions --------------------------------------------------------------------

    /// Processes everything a session has to say after an input touched it.
    fn drive(&mut self, now: Instant, sid: SessionId) {
        self.circuits.clock = now;
        if let Some(&ckey) = self.circuits.stream_sessions.get(&sid) {
            self.circuits.dirty.insert(ckey);
        }
        self.drive_events(now, sid);
        // Whatever the session did may have moved its timer.
        self.sessions.refresh(sid);
    }

    fn drive_events(&mut self, now: Instant, sid: SessionId) {
        // Bounded: each round either consumes events or stops.
        for _ in 0..64 {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            let mut stream_events = std::mem::take(&mut self.stream_events);
            let mut connected = false;
            let mut lost = None;
            let mut drained = false;
            let mut available = false;
            let mut owner_restarted = false;
            match &mut s.kind {
                Kind::Quic { handle, conn } => {
                    while let Some(ev) = conn.poll_endpoint_events() {
                        if let Some(back) = self.endpoint.handle_event(*handle, ev) {
                            conn.handle_event(back);
                        }
                    }
                    while let Some(ev) = conn.poll() {
                        use quinn_proto::{Dir, Event as Q, StreamEvent as QS};
                        match ev {
                            Q::Connected => connected = true,
                            Q::ConnectionLost { reason } => {
                                owner_restarted =
                                    matches!(reason, quinn_proto::ConnectionError::Reset);
                                lost = Some(quic::failure(&reason, s.established));
                            }
                            Q::Stream(QS::Opened { dir: Dir::Bi }) => {
                                stream_events.push(StreamEvent::Opened)
                            }
                            Q::Stream(QS::Readable { id }) => {
                                stream_events.push(StreamEvent::Readable(id.into()))
                            }
                            Q::Stream(QS::Writable { id }) | Q::Stream(QS::Stopped { id, .. }) => {
                                stream_events.push(StreamEvent::Writable(id.into()))
                            }
                            Q::Stream(QS::Available { dir: Dir::Bi }) => available = true,
                            _ => {}
                        }
                    }
                    drained = conn.is_drained();
                }
                Kind::Tcp { conn, .. } => {
                    if !s.established && conn.peer().is_some() {
                        connected = true;
                    }
                    while let Some(ev) = conn.mux().poll_event() {
                        stream_events.push(ev);
                    }
                    if let Some(e) = conn.error() {
                        lost = Some(e.failure(s.established));
                    }
                }
            }
            let idle = stream_events.is_empty() && !connected && lost.is_none() && !available;
            if connected {
                self.on_established(now, sid);
            }
            if available {
                self.open_pending(now, sid);
            }
            for ev in stream_events.drain(..) {
                self.on_stream_event(now, sid, ev);
            }
            // Nested drives may have put their own (empty) vector back; keep the larger one.
            if stream_events.capacity() > self.stream_events.capacity() {
                self.stream_events = stream_events;
            }
            if let Some(failure) = lost {
                if owner_restarted {
                    self.retry_unanswered(now, sid);
                }
                self.fail_session(now, sid, failure);
            }
            if drained {
                if self.sessions.get(&sid).is_some_and(|s| !s.down) {
                    let failure = Failure::new(Cause::ConnectionLost, "connection drained");
                    self.fail_session(now, sid, failure);
                }
                if let Some(Session {
                    kind: Kind::Quic { handle, .. },
                    ..
                }) = self.sessions.remove(&sid)
                    // quinn frees a drained connection's handle at once and may already have
                    // given it to a new connection (a retry dialed from this very drive).
                    && self.quic_handles.get(&handle) == Some(&sid)
                {
                    self.quic_handles.remove(&handle);
                }
                return;
            }
            if idle {
                return;
            }
        }
    }

    fn on_established(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.established || s.down {
            return;
        }
        let key = match &mut s.kind {
            Kind::Quic { conn, .. } => conn
                .crypto_session()
                .peer_identity()
                .and_then(|any| {
                    any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|certs| certs.first().and_then(|c| peer_key(c).ok())),
            Kind::Tcp { conn, .. } => conn.peer().copied(),
        };
        let Some(key) = key else {
            let failure = Failure::new(Cause::ProtocolViolation, "peer presented no usable key");
            self.fail_session(now, sid, failure);
            return;
        };
        let peer = key.node_id();
        self.circuits.learn_key(key);
        if let Some(Dial {
            expected: Some(want),
            ..
        }) = s.dial
            && want != peer
        {
            // The verifier already enforces this; a mismatch here is a broken invariant
            // handled as a failure rather than trusted.
            let failure = Failure::new(
                Cause::PeerKeyMismatch,
                format!("peer is node {peer}, expected {want}"),
            );
            self.fail_session(now, sid, failure);
            return;
        }
        s.peer = Some(peer);
        s.established = true;
        self.established += 1;
        self.counters.sessions_opened += 1;
        if s.dial.is_none() {
            *self
                .established_from
                .entry(Prefix::of(s.remote))
                .or_default() += 1;
        }
        self.handshakes.remove(sid);
        self.dialing.remove(sid);
        let (transport, remote) = (s.transport(), s.remote);
        let dht_addr = (transport == Transport::Quic || s.dial.is_some()).then_some(remote);
        if let Some(Dial {
            expected: None,
            addr,
            ..
        }) = s.dial
            && self.pins.insert(addr, peer)
        {
            self.events
                .push_back(Event::PinLearned { addr, node: peer });
        }
        self.events.push_back(Event::SessionUp {
            session: sid,
            peer,
            transport,
            remote,
        });
        self.open_pending(now, sid);
        self.sync_on_session(now, peer, dht_addr);
    }

    fn on_stream_event(&mut self, now: Instant, sid: SessionId, ev: StreamEvent) {
        match ev {
            StreamEvent::Opened => loop {
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return;
                };
                let Some(id) = s.accept() else {
                    return;
                };
                s.grow_stream_limit(self.quic_stream_ceiling);
                let handle = self.streams.new_handle();
                self.counters.streams_opened += 1;
                s.streams.insert(handle);
                let due = now + self.limits.request_timeout;
                self.streams
                    .insert(handle, ServiceStream::owner(sid, id, due));
                if self.streams.len() > self.limits.max_streams && !self.make_room(now, sid) {
                    self.counters.streams_refused_limit += 1;
                    let reason = "the owner is at its stream limit";
                    self.refuse(now, handle, RefusalCode::Overloaded, reason);
                    continue;
                }
                self.read_request(now, handle);
            },
            StreamEvent::Readable(id) => {
                let Some(handle) = self.streams.by_transport(sid, id) else {
                    return;
                };
                let circuit = self.circuits.owns(handle);
                match self.streams.get(&handle).map(|s| s.phase) {
                    Some(Phase::ReadRequest) => self.read_request(now, handle),
                    Some(Phase::AwaitResponse) if circuit => self.read_circuit_reply(now, handle),
                    Some(Phase::AwaitResponse) => self.read_response(now, handle),
                    Some(Phase::Open) if circuit => self.drain_circuit_stream(now, handle),
                    Some(Phase::Open) => self.events.push_back(Event::StreamReadable(handle)),
                    _ => {}
                }
            }
            StreamEvent::Writable(id) => {
                let Some(handle) = self.streams.by_transport(sid, id) else {
                    return;
                };
                let _ = self.flush_header(handle);
                if let Some(st) = self.streams.get(&handle)
                    && matches!(st.phase, Phase::Open | Phase::AwaitResponse)
                {
                    self.events.push_back(Event::StreamWritable(handle));
                }
            }
        }
    }

    /// Reads from the transport into the stream's parse buffer; returns false at the stream's
    /// end (the stream is then forgotten).
    fn fill(&mut self, now: Instant, handle: StreamHandle) -> bool {
        let Some(st) = self.streams.get_mut(&handle) else {
            return false;
        };
        let (Some(id), Some(session)) = (st.id, self.sessions.get_mut(&st.session)) else {
            return false;
        };
        match session.read(now, id, HEADER_READ) {
            StreamRead::Data(b) => {
                st.inbuf.extend_from_slice(&b);
                true
            }
            StreamRead::Blocked => true,
            StreamRead::Reset(code) => {
                st.reset_code = Some(code);
                false
            }
            StreamRead::Finished => false,
        }
    }

    fn read_request(&mut self, now: Instant, handle: StreamHandle) {
        loop {
            let before = self.streams.get(&handle).map_or(0, |s| s.inbuf.len());
            let alive = self.fill(now, handle);
            let Some(st) = self.streams.get_mut(&handle) else {
                return;
            };
            let sid = st.session;
            let peer = self.sessions.get(&sid).and_then(|s| s.peer);
            if st.inbuf.first() == Some(&crate::relay::control::CIRCUIT_STREAM_VERSION) {
                self.read_circuit_create(now, handle);
                if !alive
                    && self
                        .streams
                        .get(&handle)
                        .is_some_and(|s| s.phase == Phase::ReadRequest)
                {
                    self.forget(handle);
                }
                if alive
                    && self
                        .streams
                        .get(&handle)
                        .is_some_and(|s| s.phase == Phase::ReadRequest && s.inbuf.len() > before)
                {
                    continue;
                }
                return;
            }
            match OpenRequest::decode(&st.inbuf) {
                Ok(Some((req, used))) => {
                    st.inbuf.advance(used);
                    st.service = Some(req.service.clone());
                    self.streams.request_read(handle);
                    let Some(peer) = peer else {
                        self.refuse(now, handle, RefusalCode::BadRequest, "session not up");
                        return;
                    };
                    let known = self.services.iter().any(|(name, _)| *name == req.service);
                    match self.services.authorize(&peer, &req.service) {
                        Authorization::Granted(target) => {
                            if let Some(st) = self.streams.get_mut(&handle) {
                                st.phase = Phase::Connecting;
                            }
                            self.events.push_back(Event::ConnectTarget {
                                stream: handle,
                                service: req.service.clone(),
                                target,
                            });
                        }
                        Authorization::Refused(code) => {
                            self.counters.refused_access += 1;
                            let cause = if known {
                                Cause::AccessDenied
                            } else {
                                Cause::UnknownService
                            };
                            self.events.push_back(Event::Refused {
                                peer,
                                service: req.service.to_string(),
                                failure: cause.into(),
                            });
                            self.refuse(now, handle, code, code.describe());
                        }
                    }
                    return;
                }
                Ok(None) if alive && st.inbuf.len() > before => continue,
                Ok(None) if alive => return,
                Ok(None) => {
                    self.forget(handle);
                    return;
                }
                Err(e) => {
                    self.counters.bad_requests += 1;
                    if let Some(peer) = peer {
                        self.events.push_back(Event::Refused {
                            peer,
                            service: String::new(),
                            failure: Failure::new(Cause::BadRequest, e.to_string()),
                        });
                    }
                    self.refuse(now, handle, RefusalCode::BadRequest, &e.to_string());
                    return;
                }
            }
        }
    }

    fn read_response(&mut self, now: Instant, handle: StreamHandle) {
        loop {
            let before = self.streams.get(&handle).map_or(0, |s| s.inbuf.len());
            let alive = self.fill(now, handle);
            let Some(st) = self.streams.get_mut(&handle) else {
                return;
            };
            match OpenResponse::decode(&st.inbuf) {
                Ok(Some((OpenResponse::Accepted, used))) => {
                    st.inbuf.advance(used);
                    st.phase = Phase::Open;
                    st.replay = None;
                    let (sid, opened) = (st.session, st.opened);
                    if let Some(opened) = opened {
                        let path = self.session_path(sid);
                        self.recorded
                            .connect(path, now.saturating_duration_since(opened));
                    }
                    self.events.push_back(Event::StreamReadable(handle));
                    return;
                }
                Ok(Some((OpenResponse::Refused { code, reason }, _))) => {
                    self.fail_stream(now, handle, Failure::new(code.into(), reason));
                    return;
                }
                Ok(None) if alive && st.inbuf.len() > before => continue,
                Ok(None) if alive => return,
                Ok(None) => {
                    let failure = match st.reset_code {
                        Some(code) => reset_failure(code),
                        None => Failure::new(
                            Cause::ResetByPeer,
                            "owner closed the stream without answering",
                        ),
                    };
                    self.fail_stream(now, handle, failure);
                    return;
                }
                Err(e) => {
                    let failure = Failure::new(
                        Cause::ProtocolViolation,
                        format!("bad answer from owner: {e}"),
                    );
                    self.fail_stream(now, handle, failure);
                    return;
                }
            }
        }
    }

    fn fail_stream(&mut self, now: Instant, handle: StreamHandle, failure: Failure) {
        self.fail_stream_with(now, handle, RESET_REFUSED, failure);
    }

    /// Resets the stream towards the peer with `code` and reports it failed here.
    fn fail_stream_with(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        code: u32,
        failure: Failure,
    ) {
        if let Some(st) = self.streams.get(&handle)
            && let (Some(id), Some(session)) = (st.id, self.sessions.get_mut(&st.session))
        {
            session.reset(id, code);
        }
        let sid = self.streams.get(&handle).map(|s| s.session);
        self.forget(handle);
        self.events.push_back(Event::StreamFailed {
            stream: handle,
            failure,
        });
        if let Some(sid) = sid {
            self.drive(now, sid);
        }
    }

    /// The peer is gone (a QUIC stateless reset, or a TCP connection that ended abruptly): it
    /// kept nothing of this session, so client streams it never answered cannot be live at any
    /// target. Each is moved, once, to a new session and its bytes so far are replayed there.
    /// Timeouts are not retried: the peer may still be working on the stream.
    fn retry_unanswered(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let Some(dial) = s.dial else {
            return;
        };
        let movable: Vec<StreamHandle> = s
            .streams
            .iter()
            .copied()
            .filter(|h| {
                self.streams.get(h).is_some_and(|st| {
                    matches!(st.phase, Phase::AwaitSession | Phase::AwaitResponse)
                        && st.replay.is_some()
                        && !st.retried
                })
            })
            .collect();
        if movable.is_empty() {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            // Out of the old session before it fails, and out of the dial table so that
            // `session_for` dials afresh.
            for h in &movable {
                s.streams.remove(h);
                s.pending.retain(|p| p != h);
            }
        }
        self.dials.remove(&(dial.transport, dial.addr));
        let new_sid = match self.session_for(now, &dial) {
            Ok(new_sid) => new_sid,
            Err(failure) => {
                for h in movable {
                    self.forget(h);
                    self.events.push_back(Event::StreamFailed {
                        stream: h,
                        failure: failure.clone(),
                    });
                }
                return;
            }
        };
        for h in movable {
            self.streams.unbind(h);
            let Some(st) = self.streams.get_mut(&h) else {
                continue;
            };
            st.session = new_sid;
            st.phase = Phase::AwaitSession;
            st.retried = true;
            st.header_out.clear();
            st.inbuf.clear();
            if let Some(s) = self.sessions.get_mut(&new_sid) {
                s.streams.insert(h);
                s.pending.push(h);
            }
        }
        self.drive(now, new_sid);
    }

    fn fail_session(&mut self, _now: Instant, sid: SessionId, failure: Failure) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.down {
            return;
        }
        s.down = true;
        if s.established {
            self.established -= 1;
            if s.dial.is_none() {
                let prefix = Prefix::of(s.remote);
                if let Some(n) = self.established_from.get_mut(&prefix) {
                    *n -= 1;
                    if *n == 0 {
                        self.established_from.remove(&prefix);
                    }
                }
            }
        }
        // A session that ends any way but a clean close (or this node's own) failed.
        if !s.established || !matches!(failure.cause, Cause::ConnectionLost | Cause::Closed) {
            self.counters.sessions_failed += 1;
        }
        self.handshakes.remove(sid);
        self.dialing.remove(sid);
        let failure = match (s.dial, s.mismatch.seen()) {
            (
                Some(Dial {
                    addr,
                    expected: Some(want),
                    ..
                }),
                Some(seen),
            ) if !s.established => {
                let detail = if s.expected_from_pin {
                    format!(
                        "the node at {addr} is not the one pinned for it ({want}): it is node \
                         {seen}; if its key really changed, remove {addr} from known_peers"
                    )
                } else {
                    format!("peer at {addr} is node {seen}, expected {want}")
                };
                Failure::new(Cause::PeerKeyMismatch, detail)
            }
            _ => failure,
        };
        let mut handles: Vec<StreamHandle> = s.streams.iter().copied().collect();
        let (peer, remote, is_tcp) = (s.peer, s.remote, matches!(s.kind, Kind::Tcp { .. }));
        // `auto` streams still waiting for this direct session try a relay path instead.
        let fallback: Vec<StreamHandle> = handles
            .iter()
            .copied()
            .filter(|h| self.circuits.is_auto(h))
            .collect();
        handles.retain(|h| !fallback.contains(h));
        let outgoing = s.dial.is_some();
        if let Some(Dial {
            transport, addr, ..
        }) = s.dial
            && self.dials.get(&(transport, addr)) == Some(&sid)
        {
            self.dials.remove(&(transport, addr));
        }
        for handle in handles {
            self.forget(handle);
            self.events.push_back(Event::StreamFailed {
                stream: handle,
                failure: failure.clone().context(format!("session to {remote}")),
            });
        }
        if is_tcp {
            let mut flush = Vec::new();
            if let Some(Session {
                kind: Kind::Tcp { conn, .. },
                ..
            }) = self.sessions.remove(&sid)
            {
                let mut conn = conn;
                conn.poll_transmit(&mut flush);
            }
            self.events.push_back(Event::TcpClose {
                session: sid,
                flush,
            });
        }
        self.events.push_back(Event::SessionDown {
            session: sid,
            peer,
            remote,
            outgoing,
            failure: failure.clone(),
        });
        if !fallback.is_empty() {
            self.auto_fallback(_now, &fallback, Some(&failure));
        }
        if circuits::is_virtual(&remote) {
            self.virtual_session_down(_now, remote);
        }
    }

    /// A snapshot for status output.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: self.node_id,
            sessions: self
                .sessions
                .iter()
                // Incoming handshakes are anyone's: counted in `handshakes_in_flight`.
                .filter(|(_, s)| !s.down && (s.established || s.dial.is_some()))
                .map(|(id, s)| {
                    let mtu = match &s.kind {
                        Kind::Quic { conn, .. } => Some(conn.current_mtu()),
                        Kind::Tcp { .. } => None,
                    };
                    let (rtt, sent, received) = match &s.kind {
                        Kind::Quic { conn, .. } => {
                            let stats = conn.stats();
                            (Some(conn.rtt()), stats.udp_tx.bytes, stats.udp_rx.bytes)
                        }
                        Kind::Tcp {
                            conn,
                            bytes_sent,
                            bytes_received,
                            ..
                        } => (conn.mux_ref().rtt(), *bytes_sent, *bytes_received),
                    };
                    SessionStatus {
                        id: id.0,
                        peer: s.peer,
                        transport: s.transport(),
                        remote: s.remote,
                        outgoing: s.dial.is_some(),
                        established: s.established,
                        rtt,
                        mtu,
                        streams: s.streams.len(),
                        bytes_sent: sent,
                        bytes_received: received,
                    }
                })
                .collect(),
            streams: self.streams.len(),
            circuits: self.circuit_status(),
            relays_known: self.circuits.directory.len(),
            handshakes_in_flight: self.handshakes.len(),
            counters: self.counters,
        }
    }
}
