//! Circuits as the node runs them (DESIGN.md §6): the client's links (one end-to-end QUIC
//! connection carried by an active and a standby circuit behind one stable virtual address),
//! the hops this node relays, and the circuit ends it owns.
//!
//! A hop's setup runs on a stream of the session between neighbours and lives as long as that
//! stream; the node itself reads and writes those streams (the runtime never sees them: their
//! events are taken out in [`Node::poll_event`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::Transmit;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::observe;
use super::side::Role;
use super::stream::{Phase, ServiceStream};
use super::{CircuitEvent, Dial, Event, Node, SessionId, StreamHandle};
use crate::failure::{Cause, Failure};
use crate::identity::{NodeId, PublicKey};
use crate::policy::{
    self as policy, Decision, PathKind, PathStats, PathView, Policy, PolicyId, ProbeWindow,
    SlaState, SwitchReason,
};
use crate::reach::Mapping;
use crate::reach::birthday::LOWEST_PORT;
use crate::record::Transport;
use crate::relay::control::{Create, FlowId, Instruction, Refusal, RelayLimits, Reply};
use crate::relay::directory::Directory;
use crate::relay::header::{
    self, HEADER_LEN, Kind as Datagram, Label, PROBE_ACTIVE, PROBE_DIAL_BACK,
    PROBE_DIAL_BACK_COMING, PROBE_PUNCH, PUNCH_OPEN, PUNCH_SPRAY_ME,
};
use crate::relay::onion::{self, PathHop};
use crate::relay::table::{DropReason, LabelTable, Target, Verdict};
use crate::relay::{Constraints, SelectError, Selection, select};
use crate::session::StreamRead;

mod managed;

pub use managed::PING_TIMEOUT;

/// How a client stream reaches its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A session straight to the owner.
    Direct,
    /// Through a circuit of `hops` relays.
    Relay {
        /// Relays on the circuit.
        hops: u8,
    },
    /// Direct when a direct session comes up within [`AUTO_DEADLINE`], else through a
    /// circuit of `hops` relays; direct is preferred whenever it works.
    Auto {
        /// Relays on the circuit, if one is needed.
        hops: u8,
    },
    /// A managed link under the policy the node holds for this id (see [`Node::set_policy`]):
    /// the end-to-end connection runs over circuits, the direct path being one of zero
    /// relays, so the policy can move it between paths without losing streams (QUIC only; a
    /// TCP-mode forward takes the policy's preference as a plain route).
    Policy(PolicyId),
}

impl Default for Route {
    fn default() -> Self {
        Route::Auto { hops: DEFAULT_HOPS }
    }
}

/// Relays on a circuit unless told otherwise.
pub const DEFAULT_HOPS: u8 = 2;
/// How long `auto` waits for a direct session before it moves a stream to a relay path.
pub const AUTO_DEADLINE: Duration = Duration::from_secs(3);
/// Probe interval on a link's active circuit.
pub const ACTIVE_PROBE_EVERY: Duration = Duration::from_millis(100);
/// Probe interval on a standby circuit.
pub const STANDBY_PROBE_EVERY: Duration = Duration::from_secs(1);
/// An active circuit that has answered nothing for this long (at least; twice its RTT plus two
/// probe intervals when that is longer, and a second before its RTT is known) has failed:
/// datagrams move to the standby.
pub const DEAD_AFTER: Duration = Duration::from_millis(300);
/// The datagrams a link's end last sent, sent again on the circuit it moves to: the far end's
/// acknowledgements of them restart QUIC's loss recovery at once, instead of at a probe timeout
/// backed off during the outage.
const REPLAY: usize = 4;
/// A standby that has answered nothing for this long is replaced.
const STANDBY_DEAD_AFTER: Duration = Duration::from_secs(4);
/// Datagrams a link holds while its first circuit is being built.
const MAX_QUEUED: usize = 64;
/// Circuit builds one link may start per [`BUILD_WINDOW`], so a broken network does not make
/// a link spin.
const MAX_BUILDS: u32 = 6;
const BUILD_WINDOW: Duration = Duration::from_secs(10);
/// The first wait before building again after a circuit failed to come up (doubling, to 4 s).
const BUILD_BACKOFF: Duration = Duration::from_millis(250);
/// How often a link without a standby looks for one.
const STANDBY_RETRY: Duration = Duration::from_secs(5);
/// How long a link avoids the relays of a circuit that failed.
const AVOID_FOR: Duration = Duration::from_secs(60);
/// How often relays look for idle circuits.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Directory probes sent per timer tick at most.
const PROBES_PER_TICK: usize = 8;
/// Hole-punching attempts per managed link.
const PUNCH_ATTEMPTS: u32 = 3;
/// Punch requests an owner carries out towards one target prefix: one a second, bursts of 3.
/// A request is a few bytes through a circuit and costs [`PUNCH_PROBES`] datagrams of 14
/// bytes, so this bounds what a client can make an owner send at a victim (the table of
/// prefixes is bounded too: past it, every target shares one bucket).
/// Dial-backs per asking prefix (each costs the runtime a socket): peers ask each contact
/// once per round (every 5 s, later 60 s), so a prefix of busy nodes stays well inside it.
const DIAL_BACK_RATE: super::rate::RateLimit = super::rate::RateLimit {
    per_second: 4,
    burst: 16,
    max_prefixes: 4096,
};
/// Dial-backs in all (sources of many prefixes each get their own share above; this bounds
/// the sockets they can make the runtime open together).
const DIAL_BACK_TOTAL: super::rate::RateLimit = super::rate::RateLimit {
    per_second: 50,
    burst: 100,
    max_prefixes: 0,
};
const PUNCH_RATE: super::rate::RateLimit = super::rate::RateLimit {
    per_second: 1,
    burst: 3,
    max_prefixes: 4096,
};
/// Probes an owner sends per punch request, and how far apart (3 s of them: the client dials
/// again as soon as it asks, and its QUIC handshake retransmits within that window).
const PUNCH_PROBES: u32 = 30;
const PUNCH_EVERY: Duration = Duration::from_millis(100);
/// The /64 virtual addresses come from: a ULA prefix no VX6 node listens on.
const VIRTUAL_PREFIX: [u16; 4] = [0xfd76, 0x7836, 0x7669, 0x7274];

/// Whether `addr` is one of the virtual addresses behind which links hide their circuits.
pub fn is_virtual(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..4] == VIRTUAL_PREFIX,
        IpAddr::V4(_) => false,
    }
}

/// Where a circuit is in its life, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitRole {
    /// This node built it, to reach an owner.
    Client,
    /// This node relays it.
    Relay,
    /// It ends at this node (this node owns the service).
    Owner,
}

/// One circuit, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitStatus {
    /// This node's part in it.
    pub role: CircuitRole,
    /// Client: the owner it leads to.
    pub owner: Option<NodeId>,
    /// Client: its relays, nearest first. Relay: the previous and next node.
    pub path: Vec<NodeId>,
    /// Client: set up and carrying or ready to carry datagrams.
    pub ready: bool,
    /// Client: carries the link's datagrams now (else it is the standby). Owner: replies go
    /// out on it.
    pub active: bool,
    /// Client: smoothed probe RTT through the whole circuit.
    pub rtt: Option<Duration>,
    /// Client: probes sent and answered.
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// Datagrams and bytes switched or received on it.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Relays' limits as their replies stated them.
    pub limits: Vec<RelayLimits>,
}

/// A relay's share of the node, as its configuration sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayConfig {
    /// Whether this node relays for others (and says so in its node record).
    pub enabled: bool,
    /// Its limits (stated in every reply).
    pub limits: RelayLimits,
    /// Who runs it, declared in its node record so paths avoid two relays of one operator.
    pub operator: Option<crate::names::OperatorName>,
}

pub(super) struct Probe {
    next_at: Instant,
    outstanding: Option<(u64, Instant)>,
    last_heard: Instant,
    rtt: Option<Duration>,
    sent: u64,
    answered: u64,
    /// The last probes, for the loss and jitter a policy judges.
    window: ProbeWindow,
    /// Since when the circuit has met its link's SLA without a break.
    met_since: Option<Instant>,
}

impl Probe {
    fn new(now: Instant) -> Self {
        Probe {
            next_at: now,
            outstanding: None,
            last_heard: now,
            rtt: None,
            sent: 0,
            answered: 0,
            window: ProbeWindow::default(),
            met_since: None,
        }
    }
}

pub(super) enum Circuit {
    Client {
        link: u64,
        stream: StreamHandle,
        first: SocketAddr,
        path: Vec<NodeId>,
        back_in: Label,
        out: Option<Label>,
        limits: Vec<RelayLimits>,
        probe: Probe,
    },
    Relay {
        up: StreamHandle,
        down: StreamHandle,
        prev: (NodeId, SocketAddr),
        next: (NodeId, SocketAddr),
        back_in: Label,
        fwd_in: Option<Label>,
        limits: Vec<RelayLimits>,
    },
    Owner {
        link: u64,
        stream: StreamHandle,
        peer: NodeId,
        prev: SocketAddr,
        out: Label,
        fwd_in: Label,
    },
    /// TCP mode, at the client: the link's TLS/TCP session runs inside `stream`.
    ClientStream {
        link: u64,
        stream: StreamHandle,
        path: Vec<NodeId>,
        limits: Vec<RelayLimits>,
        /// The virtual session, once the circuit is up.
        vsid: Option<SessionId>,
        pipe: Pipe,
    },
    /// TCP mode, at a relay: bytes spliced between the two streams.
    Splice {
        up: StreamHandle,
        down: StreamHandle,
        prev: NodeId,
        next: NodeId,
        ready: bool,
        limits: Vec<RelayLimits>,
        up_down: Pipe,
        down_up: Pipe,
        last_used: Instant,
    },
    /// TCP mode, at the owner: a virtual incoming TLS/TCP session runs inside `stream`.
    OwnerStream {
        stream: StreamHandle,
        peer: NodeId,
        vsid: SessionId,
        pipe: Pipe,
    },
}

/// Bytes on their way through a spliced stream: what the next writer has not taken yet.
#[derive(Default)]
pub(super) struct Pipe {
    /// Read from the source, not yet taken by the destination (a slice of what was read).
    pub pending: Bytes,
    /// The source finished: finish the destination once `pending` is out.
    pub eof: bool,
    /// The destination was finished.
    pub closed: bool,
    pub bytes: u64,
}

impl Probe {
    /// Silence after which the circuit counts as failed.
    fn dead_after(&self, active: bool) -> Duration {
        match (active, self.rtt) {
            (false, _) => STANDBY_DEAD_AFTER,
            (true, None) => Duration::from_secs(1),
            (true, Some(rtt)) => (rtt * 2 + ACTIVE_PROBE_EVERY * 2).max(DEAD_AFTER),
        }
    }
}

impl Circuit {
    /// Whether it carries a byte stream (TCP mode) rather than datagrams.
    fn carries_bytes(&self) -> bool {
        matches!(
            self,
            Circuit::ClientStream { .. } | Circuit::Splice { .. } | Circuit::OwnerStream { .. }
        )
    }

    fn streams(&self) -> Vec<StreamHandle> {
        match self {
            Circuit::Client { stream, .. }
            | Circuit::Owner { stream, .. }
            | Circuit::ClientStream { stream, .. }
            | Circuit::OwnerStream { stream, .. } => vec![*stream],
            Circuit::Relay { up, down, .. } | Circuit::Splice { up, down, .. } => {
                vec![*up, *down]
            }
        }
    }

    fn labels(&self) -> Vec<Label> {
        match self {
            Circuit::Client { back_in, .. } => vec![*back_in],
            Circuit::Relay {
                back_in, fwd_in, ..
            } => std::iter::once(*back_in).chain(*fwd_in).collect(),
            Circuit::Owner { fwd_in, .. } => vec![*fwd_in],
            Circuit::ClientStream { .. } | Circuit::Splice { .. } | Circuit::OwnerStream { .. } => {
                Vec::new()
            }
        }
    }
}

/// A client's end-to-end connection to one owner over circuits.
struct ClientLink {
    /// QUIC: datagram circuits with failover; TCP: one spliced circuit.
    transport: Transport,
    owner: NodeId,
    owner_key: PublicKey,
    owner_addr: SocketAddr,
    hops: usize,
    flow: FlowId,
    vaddr: SocketAddr,
    circuits: Vec<u64>,
    active: Option<u64>,
    queued: VecDeque<Vec<u8>>,
    builds: VecDeque<Instant>,
    /// Why the last build attempt failed, for the streams that fail if none succeeds.
    last_failure: Option<Failure>,
    last_selection: Option<Selection>,
    /// The last datagrams sent, for [`REPLAY`].
    recent: Recent,
    /// When to try building again after a failed build (backing off), or a missing standby.
    retry_at: Option<Instant>,
    /// Builds that failed in a row.
    failed_builds: u32,
    /// Relays of circuits that failed lately, avoided while others will do.
    avoid: BTreeMap<NodeId, Instant>,
    /// The policy that manages it (a direct circuit among its paths), if any.
    policy: Option<PolicyId>,
    /// When the policy last moved it from one path to another.
    last_switch: Option<Instant>,
    /// How often it did.
    switches: u64,
    /// Why, the last time.
    last_reason: Option<SwitchReason>,
    /// The active path's standing against the SLA.
    sla: SlaState,
    /// The active path's kind (kept for the switch that follows its loss).
    active_kind: Option<PathKind>,
    /// Managed links: when to try the direct path again after it failed to come up (its own
    /// backoff, so a direct path that never works neither delays relay builds nor uses up
    /// their budget), and how often it failed in a row.
    direct_retry_at: Option<Instant>,
    direct_failures: u32,
    /// Hole-punching attempts left (the owner is asked through a relay path to open its side
    /// while the direct path is dialed), and the nonce of the last request.
    punches_left: u32,
    punch_nonce: Option<u64>,
    /// Whether it was said that punching failed.
    punch_given_up: bool,
    /// Birthday attempts and sprays it may still cause (whatever owners answer).
    birthdays_left: u32,
}

/// A managed link's state, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The owner it leads to.
    pub owner: NodeId,
    /// The path carrying its datagrams, if any.
    pub path: Option<PathKind>,
    /// How that path stands against the SLA.
    pub sla: SlaState,
    /// Path changes so far.
    pub switches: u64,
    /// Why the last one happened.
    pub last_reason: Option<SwitchReason>,
    /// Every path the link keeps: kind, relays, what its probes measured, its standing.
    pub paths: Vec<(PathKind, Vec<NodeId>, PathStats, SlaState)>,
}

/// An owner's side of a client's end-to-end connection.
struct OwnerLink {
    flow: FlowId,
    vaddr: SocketAddr,
    /// The client, once its session behind `vaddr` authenticated (for telling its direct
    /// circuit from relayed ones).
    client: Option<NodeId>,
    /// Probes to send straight to the client's address to open this side (hole punching):
    /// where, how many more, when the next, and the request's nonce (the probes carry it, so
    /// a client that can receive them learns where this side's NAT maps it).
    punch: Option<(SocketAddr, u32, Instant, u64)>,
    /// Birthday attempts and sprays its client may still cause.
    birthdays_left: u32,
    circuits: BTreeSet<u64>,
    send: Option<u64>,
    recent: Recent,
}

/// The last [`REPLAY`] datagrams a link's end sent (their buffers reused, so no allocation per
/// datagram once it is full).
#[derive(Default)]
struct Recent(VecDeque<Vec<u8>>);

impl Recent {
    fn push(&mut self, datagram: &[u8]) {
        let mut buf = if self.0.len() >= REPLAY {
            self.0.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        buf.clear();
        buf.extend_from_slice(datagram);
        self.0.push_back(buf);
    }

    fn all(&self) -> Vec<Vec<u8>> {
        self.0.iter().cloned().collect()
    }
}

#[derive(Clone, Copy)]
enum VirtualEnd {
    Client(u64),
    Owner(u64),
}

/// Counters of the circuit layer (also in [`super::Counters`]).
pub(super) struct Circuits {
    pub config: RelayConfig,
    pub labels: LabelTable,
    pub directory: Directory,
    pub(super) rng: ChaCha20Rng,
    next_key: u64,
    pub(super) circuits: BTreeMap<u64, Circuit>,
    pub(super) by_stream: HashMap<StreamHandle, u64>,
    client_links: BTreeMap<u64, ClientLink>,
    by_owner: HashMap<LinkKey, u64>,
    /// Policies of managed links, set by the runtime.
    policies: BTreeMap<PolicyId, Policy>,
    /// Path switches, by reason (its metric label).
    pub(super) switches: BTreeMap<&'static str, u64>,
    /// Virtual TLS/TCP sessions (TCP mode) and the circuit each runs in.
    pub(super) stream_sessions: HashMap<SessionId, u64>,
    /// TCP-mode circuits with bytes to move, pumped after the input that caused it.
    pub(super) dirty: BTreeSet<u64>,
    owner_links: BTreeMap<u64, OwnerLink>,
    by_flow: HashMap<FlowId, u64>,
    by_vaddr: HashMap<SocketAddr, VirtualEnd>,
    next_vaddr: u64,
    relayed_by_peer: HashMap<NodeId, u32>,
    relayed: u32,
    setup_rate: super::rate::PrefixBuckets,
    probe_rate: super::rate::PrefixBuckets,
    /// Punch requests carried out, by target prefix.
    punch_rate: super::rate::PrefixBuckets,
    /// Dial-backs sent, by asking prefix, and in all.
    dial_back_rate: super::rate::PrefixBuckets,
    dial_back_total: super::rate::PrefixBuckets,
    probe_nonce: u64,
    next_sweep: Option<Instant>,
    /// Streams whose `auto` route moves them to a relay path at the instant, if still waiting.
    auto: BTreeMap<StreamHandle, (Instant, Owner, u8)>,
    /// Keys of nodes met (sessions, records), for sealing onion layers to owners.
    keys: HashMap<NodeId, PublicKey>,
    /// The relays owners that cannot be dialed name as their way in (their records' `via`),
    /// with the `seq` of the record that said so.
    via: HashMap<NodeId, (u64, Vec<NodeId>)>,
    /// Pings in flight, by probe nonce: the ping, the path (`None` for a plain datagram, else
    /// the circuit's relays), when sent.
    pings: BTreeMap<u64, Ping>,
    /// Circuits being torn down on purpose (a policy change), not failing.
    quiet: BTreeSet<u64>,
    next_ping: u64,
    /// The last input's clock reading, for work done while events are drained.
    pub clock: Instant,
}

pub(super) use crate::relay::header::STREAM_LABEL;

/// An owner as a relayed link reaches it: its node, its address, and the transport.
type Owner = (NodeId, SocketAddr, Transport);
/// A ping's probe in flight: the ping, where it went (a circuit's relays, or straight to an
/// address), and when.
type Ping = (u64, Result<Vec<NodeId>, SocketAddr>, Instant);

/// Links are kept per owner, transport and managing policy.
type LinkKey = (NodeId, Transport, Option<PolicyId>);

/// Most node keys remembered for circuit setup.
const MAX_KEYS: usize = 4096;

impl Circuits {
    pub fn new(now: Instant, seed: [u8; 32], config: RelayConfig) -> Self {
        let mut seed = blake3::derive_key("vx6 circuits rng v1", &seed);
        let rng = ChaCha20Rng::from_seed(seed);
        seed.fill(0);
        let per_second = config.limits.setups_per_second.max(1);
        Self {
            config,
            labels: LabelTable::default(),
            directory: Directory::default(),
            rng,
            next_key: 1,
            circuits: BTreeMap::new(),
            by_stream: HashMap::new(),
            stream_sessions: HashMap::new(),
            dirty: BTreeSet::new(),
            client_links: BTreeMap::new(),
            by_owner: HashMap::new(),
            policies: BTreeMap::new(),
            switches: BTreeMap::new(),
            owner_links: BTreeMap::new(),
            by_flow: HashMap::new(),
            by_vaddr: HashMap::new(),
            next_vaddr: 1,
            relayed_by_peer: HashMap::new(),
            relayed: 0,
            setup_rate: super::rate::PrefixBuckets::new(
                super::rate::RateLimit {
                    per_second,
                    burst: per_second * 2,
                    max_prefixes: 4096,
                },
                now,
            ),
            probe_rate: super::rate::PrefixBuckets::new(
                super::rate::RateLimit {
                    per_second: 20,
                    burst: 40,
                    max_prefixes: 4096,
                },
                now,
            ),
            punch_rate: super::rate::PrefixBuckets::new(PUNCH_RATE, now),
            dial_back_rate: super::rate::PrefixBuckets::new(DIAL_BACK_RATE, now),
            dial_back_total: super::rate::PrefixBuckets::new(DIAL_BACK_TOTAL, now),
            probe_nonce: 0,
            next_sweep: None,
            auto: BTreeMap::new(),
            keys: HashMap::new(),
            via: HashMap::new(),
            pings: BTreeMap::new(),
            quiet: BTreeSet::new(),
            next_ping: 1,
            clock: now,
        }
    }

    /// An unpredictable number (nonces others must not guess).
    pub(super) fn random_u64(&mut self) -> u64 {
        rand_core::RngCore::next_u64(&mut self.rng)
    }

    fn key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    fn vaddr(&mut self) -> SocketAddr {
        let n = self.next_vaddr;
        self.next_vaddr += 1;
        let [a, b, c, d] = VIRTUAL_PREFIX;
        let ip = Ipv6Addr::new(
            a,
            b,
            c,
            d,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        SocketAddr::new(ip.into(), 1)
    }

    pub fn learn_key(&mut self, key: PublicKey) {
        if self.keys.len() >= MAX_KEYS {
            self.keys.clear();
        }
        self.keys.insert(key.node_id(), key);
    }

    /// Learns what a verified record says about reaching its owner: its key, whether it
    /// relays, and the relays it names as its way in.
    fn learn_record(&mut self, now: Instant, record: &crate::SignedRecord) {
        self.learn_key(*record.signer());
        self.directory.learn(now, record);
        if let crate::record::Record::Node(n) = record.record() {
            let owner = record.owner();
            // Only a newer record changes it: an older one replayed from a lookup must not
            // take the owner's way in away.
            if self.via.get(&owner).is_some_and(|(seq, _)| *seq > n.seq) {
                return;
            }
            if n.via.is_empty() {
                self.via.remove(&owner);
            } else {
                if !self.via.contains_key(&owner) && self.via.len() >= MAX_KEYS {
                    let any = self.via.keys().next().copied();
                    if let Some(k) = any {
                        self.via.remove(&k);
                    }
                }
                self.via.insert(owner, (n.seq, n.via.clone()));
            }
        }
    }

    /// Whether `handle` is a circuit stream (the node's own, never the runtime's).
    pub fn owns(&self, handle: StreamHandle) -> bool {
        self.by_stream.contains_key(&handle)
    }

    pub fn is_auto(&self, handle: &StreamHandle) -> bool {
        self.auto.contains_key(handle)
    }
}

impl Node {
    // ---- client: links ----------------------------------------------------------------------

    /// Opens a client stream to `service` on the owner `dial` names, by `route`. Relay paths
    /// need the owner's node id, its QUIC address and its key (from a session or a record).
    pub fn open_stream_routed(
        &mut self,
        now: Instant,
        dial: &Dial,
        service: crate::names::ServiceName,
        route: Route,
    ) -> StreamHandle {
        self.circuits.clock = now;
        match self.new_client_stream(ServiceStream::client(SessionId(0), service, now)) {
            Ok(handle) => {
                self.route_stream(now, handle, dial, route);
                handle
            }
            Err(handle) => handle,
        }
    }

    /// Puts a registered client stream on its way by `route`.
    pub(super) fn route_stream(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        dial: &Dial,
        route: Route,
    ) {
        // A relay path runs over the forward's transport: QUIC circuits carry datagrams (with
        // failover); TCP circuits splice streams, and the TLS/TCP session runs inside.
        let transport = dial.transport;
        let route = match route {
            Route::Policy(id) => {
                let policy = self.circuits.policies.get(&id).copied().unwrap_or_default();
                match (transport, dial.expected) {
                    // A managed link seals its setup to the owner's key: until a record or a
                    // session has shown it, streams take the policy's plain route (whose
                    // direct session then teaches the key).
                    (Transport::Quic, Some(owner)) if self.circuits.keys.contains_key(&owner) => {
                        let to = (owner, dial.addr, transport);
                        return self.attach_relayed(now, handle, to, policy.hops, Some(id));
                    }
                    _ => match policy.prefer {
                        policy::Prefer::Direct => Route::Direct,
                        policy::Prefer::Relay => Route::Relay { hops: policy.hops },
                        policy::Prefer::Auto => Route::Auto { hops: policy.hops },
                    },
                }
            }
            other => other,
        };
        match (route, dial.expected) {
            (Route::Direct, _) => self.attach(now, handle, dial),
            (Route::Auto { .. }, None) => self.attach(now, handle, dial),
            (_, None) => {
                let failure = Failure::new(
                    Cause::Unreachable,
                    "a relay path needs the owner's node id (NODEID@ or a name)",
                );
                self.forget(handle);
                self.events.push_back(Event::StreamFailed {
                    stream: handle,
                    failure,
                });
            }
            (Route::Relay { hops }, Some(owner)) => {
                self.attach_relayed(now, handle, (owner, dial.addr, transport), hops, None)
            }
            (Route::Auto { hops }, Some(owner)) => {
                let direct_up = self
                    .dials
                    .get(&(dial.transport, dial.addr))
                    .and_then(|sid| self.sessions.get(sid))
                    .is_some_and(|s| s.established && !s.down);
                let relayed_up = self
                    .circuits
                    .by_owner
                    .get(&(owner, transport, auto_link_policy(transport)))
                    .and_then(|l| self.circuits.client_links.get(l))
                    .and_then(|l| self.dials.get(&(transport, l.vaddr)))
                    .and_then(|sid| self.sessions.get(sid))
                    .is_some_and(|s| s.established && !s.down);
                if relayed_up && !direct_up {
                    // Direct has not worked lately: this stream goes on the fallback link (over
                    // QUIC, a managed link that moves to the direct path once it works), and a
                    // direct session is tried again beside it (one attempt at a time), so later
                    // streams go direct once it works.
                    let policy = auto_link_policy(transport);
                    self.attach_relayed(now, handle, (owner, dial.addr, transport), hops, policy);
                    if let Ok(sid) = self.session_for(now, dial) {
                        self.drive(now, sid);
                    }
                    return;
                }
                if !direct_up {
                    self.circuits.auto.insert(
                        handle,
                        (now + AUTO_DEADLINE, (owner, dial.addr, transport), hops),
                    );
                }
                self.attach(now, handle, dial);
            }
            (Route::Policy(_), _) => unreachable!("resolved above"),
        }
    }

    /// Puts a client stream on the link to `owner`, creating the link (and its first circuit)
    /// if there is none.
    fn attach_relayed(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        to: Owner,
        hops: u8,
        policy: Option<PolicyId>,
    ) {
        self.circuits.auto.remove(&handle);
        let (owner, _, transport) = to;
        let vaddr = match self.client_link(now, to, hops, policy) {
            Ok(vaddr) => vaddr,
            Err(failure) => {
                self.forget(handle);
                self.events.push_back(Event::StreamFailed {
                    stream: handle,
                    failure,
                });
                return;
            }
        };
        let dial = Dial {
            addr: vaddr,
            transport,
            expected: Some(owner),
        };
        self.attach(now, handle, &dial);
    }

    /// The virtual address of the link to an owner over a transport, building it if needed.
    fn client_link(
        &mut self,
        now: Instant,
        to: Owner,
        hops: u8,
        policy: Option<PolicyId>,
    ) -> Result<SocketAddr, Failure> {
        let (owner, owner_addr, transport) = to;
        if let Some(link) = self
            .circuits
            .by_owner
            .get(&(owner, transport, policy))
            .and_then(|l| self.circuits.client_links.get(l))
        {
            return Ok(link.vaddr);
        }
        if !self.circuits.keys.contains_key(&owner) {
            // The DHT may hold its record, learned since the directory was last read.
            self.refresh_directory(now);
        }
        let Some(owner_key) = self.circuits.keys.get(&owner).copied() else {
            return Err(Failure::new(
                Cause::Unreachable,
                format!("the key of node {owner} is unknown (no record or session seen)"),
            ));
        };
        let hops = usize::from(hops.clamp(1, crate::relay::control::MAX_HOPS as u8));
        let mut flow = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut self.circuits.rng, &mut flow);
        let vaddr = self.circuits.vaddr();
        let key = self.circuits.key();
        self.circuits.client_links.insert(
            key,
            ClientLink {
                transport,
                owner,
                owner_key,
                owner_addr,
                hops,
                flow: FlowId(flow),
                vaddr,
                circuits: Vec::new(),
                active: None,
                queued: VecDeque::new(),
                builds: VecDeque::new(),
                last_failure: None,
                last_selection: None,
                recent: Recent::default(),
                retry_at: None,
                failed_builds: 0,
                avoid: BTreeMap::new(),
                policy,
                last_switch: None,
                switches: 0,
                last_reason: None,
                sla: SlaState::Unknown,
                active_kind: None,
                direct_retry_at: None,
                direct_failures: 0,
                punches_left: PUNCH_ATTEMPTS,
                punch_nonce: None,
                punch_given_up: false,
                birthdays_left: super::side::PER_LINK,
            },
        );
        self.circuits
            .by_owner
            .insert((owner, transport, policy), key);
        self.circuits
            .by_vaddr
            .insert(vaddr, VirtualEnd::Client(key));
        // A managed link builds its paths side by side: the first up carries the traffic.
        let first = self.build_circuit(now, key, PathKind::Relay);
        let managed = policy.map(|id| self.circuits.policies.get(&id).copied().unwrap_or_default());
        let second = match managed {
            Some(p) if p.allows_direct() => self.build_circuit(now, key, PathKind::Direct),
            Some(_) => self.build_circuit(now, key, PathKind::Relay),
            None => Err(Failure::new(Cause::Unreachable, "not built")),
        };
        if let (Err(failure), Err(_)) = (first, second) {
            self.drop_client_link(now, key);
            return Err(failure);
        }
        Ok(vaddr)
    }

    /// Refreshes the relay directory from the records the DHT holds.
    pub(super) fn refresh_directory(&mut self, now: Instant) {
        let records: Vec<_> = self.dht.store().iter().cloned().collect();
        for r in &records {
            self.circuits.learn_record(now, r);
        }
    }

    /// Learns relays (and keys) from verified records the runtime holds, such as its registry.
    pub fn learn_records<'a>(
        &mut self,
        now: Instant,
        records: impl IntoIterator<Item = &'a crate::SignedRecord>,
    ) {
        for r in records {
            self.circuits.learn_record(now, r);
        }
    }

    /// What path selection chooses for a circuit to `owner` now, and why (`vx6 path`).
    pub fn explain_path(
        &mut self,
        now: Instant,
        owner: NodeId,
        hops: u8,
    ) -> Result<Selection, SelectError> {
        self.refresh_directory(now);
        let constraints = Constraints {
            hops: usize::from(hops.max(1)),
            endpoints: vec![self.node_id, owner],
            exit_among: self
                .circuits
                .via
                .get(&owner)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            ..Constraints::default()
        };
        let candidates = self.circuits.directory.candidates(now, Transport::Quic);
        let mut rng = self.circuits.rng.clone();
        select(&candidates, &constraints, &mut rng)
    }

    /// The path selection behind the link to `owner`, if one is up.
    pub fn link_selection(&self, owner: &NodeId) -> Option<&Selection> {
        self.circuits
            .client_links
            .values()
            .filter(|l| l.owner == *owner)
            .find_map(|l| l.last_selection.as_ref())
    }

    /// Starts one more circuit for link `key`, over relays none of its other circuits use.
    fn build_circuit(&mut self, now: Instant, key: u64, kind: PathKind) -> Result<(), Failure> {
        if kind == PathKind::Direct {
            return match self.circuits.client_links.contains_key(&key) {
                true => self.build_direct_circuit(now, key),
                false => Ok(()),
            };
        }
        self.refresh_directory(now);
        let Some(link) = self.circuits.client_links.get_mut(&key) else {
            return Ok(());
        };
        while link
            .builds
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= BUILD_WINDOW)
        {
            link.builds.pop_front();
        }
        if link.builds.len() as u32 >= MAX_BUILDS {
            return Err(link.last_failure.clone().unwrap_or_else(|| {
                Failure::new(Cause::Unreachable, "circuit builds keep failing")
            }));
        }
        link.builds.push_back(now);
        let mut exclude = BTreeSet::new();
        for c in &link.circuits {
            if let Some(Circuit::Client { path, .. }) = self.circuits.circuits.get(c) {
                exclude.extend(path.iter().copied());
            }
        }
        link.avoid
            .retain(|_, t| now.saturating_duration_since(*t) < AVOID_FOR);
        let mut constraints = Constraints {
            hops: link.hops,
            endpoints: vec![self.node_id, link.owner],
            exclude: exclude.clone(),
            exit_among: self
                .circuits
                .via
                .get(&link.owner)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            ..Constraints::default()
        };
        constraints.exclude.extend(link.avoid.keys().copied());
        let transport = link.transport;
        let candidates = self.circuits.directory.candidates(now, transport);
        let selection = match select(&candidates, &constraints, &mut self.circuits.rng) {
            Ok(s) => Ok(s),
            Err(SelectError::TooFew { .. } | SelectError::NoExit(_))
                if constraints.exclude != exclude =>
            {
                constraints.exclude = exclude;
                select(&candidates, &constraints, &mut self.circuits.rng)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| match &link.last_failure {
            // The refusal that used up the relays says more than the empty choice it left.
            Some(last) => Failure::new(
                last.cause,
                format!("{}; no other relay path: {e}", last.detail),
            ),
            None => Failure::new(Cause::Unreachable, format!("no relay path: {e}")),
        })?;
        let relays: Vec<PathHop> = selection
            .path
            .iter()
            .filter_map(|n| {
                let r = self.circuits.directory.get(n)?;
                Some(PathHop {
                    node: *n,
                    key: r.key,
                    addr: match transport {
                        Transport::Quic => r.addr,
                        Transport::Tcp => r.tcp_addr?,
                    },
                })
            })
            .collect();
        let link = self
            .circuits
            .client_links
            .get_mut(&key)
            .expect("checked above");
        let end = PathHop {
            node: link.owner,
            key: link.owner_key,
            addr: link.owner_addr,
        };
        let onion = onion::wrap(&mut self.circuits.rng, &relays, &end, link.flow);
        let path = selection.path.clone();
        link.last_selection = Some(selection);
        let first = relays[0].clone();
        self.start_circuit(now, key, first, path, onion)
    }

    /// Starts link `key`'s circuit of zero relays: the direct path, as the policy's other
    /// paths are built, so the link's connection can move onto it and off it.
    fn build_direct_circuit(&mut self, now: Instant, key: u64) -> Result<(), Failure> {
        let link = self
            .circuits
            .client_links
            .get(&key)
            .expect("the caller holds it");
        let end = PathHop {
            node: link.owner,
            key: link.owner_key,
            addr: link.owner_addr,
        };
        let onion = onion::wrap(&mut self.circuits.rng, &[], &end, link.flow);
        self.start_circuit(now, key, end, Vec::new(), onion)
    }

    /// Sends a circuit's setup for link `key` to its first hop (a relay, or the owner itself
    /// for the direct path).
    fn start_circuit(
        &mut self,
        now: Instant,
        key: u64,
        first: PathHop,
        path: Vec<NodeId>,
        onion: Vec<u8>,
    ) -> Result<(), Failure> {
        let Some(transport) = self.circuits.client_links.get(&key).map(|l| l.transport) else {
            return Ok(());
        };
        let ckey = self.circuits.key();
        let back_in = match transport {
            Transport::Quic => self.circuits.labels.allocate(
                now,
                &mut self.circuits.rng,
                first.addr,
                Target::Local(ckey),
            ),
            // A spliced circuit switches no datagrams: its labels mean nothing.
            Transport::Tcp => STREAM_LABEL,
        };
        let request = Create {
            back: back_in,
            onion,
        }
        .encode();
        let handle = match self.new_circuit_stream(request) {
            Some(h) => h,
            None => {
                if transport == Transport::Quic {
                    self.circuits.labels.remove(back_in);
                }
                return Err(Failure::new(
                    Cause::LimitReached,
                    "at the node's stream limit",
                ));
            }
        };
        let circuit = match transport {
            Transport::Tcp => Circuit::ClientStream {
                link: key,
                stream: handle,
                path,
                limits: Vec::new(),
                vsid: None,
                pipe: Pipe::default(),
            },
            Transport::Quic => Circuit::Client {
                link: key,
                stream: handle,
                first: first.addr,
                path,
                back_in,
                out: None,
                limits: Vec::new(),
                probe: Probe::new(now),
            },
        };
        self.circuits.circuits.insert(ckey, circuit);
        self.circuits.by_stream.insert(handle, ckey);
        if let Some(link) = self.circuits.client_links.get_mut(&key) {
            link.circuits.push(ckey);
        }
        let dial = Dial {
            addr: first.addr,
            transport,
            expected: Some(first.node),
        };
        self.attach(now, handle, &dial);
        Ok(())
    }

    fn drop_client_link(&mut self, now: Instant, key: u64) {
        let Some(link) = self.circuits.client_links.remove(&key) else {
            return;
        };
        self.circuits
            .by_owner
            .remove(&(link.owner, link.transport, link.policy));
        self.circuits.by_vaddr.remove(&link.vaddr);
        for c in link.circuits {
            self.teardown(now, c);
        }
    }

    // ---- circuit streams ---------------------------------------------------------------------

    /// The next hop answered a circuit stream this node opened.
    pub(super) fn read_circuit_reply(&mut self, now: Instant, handle: StreamHandle) {
        loop {
            let before = self.streams.get(&handle).map_or(0, |s| s.inbuf.len());
            let alive = self.fill(now, handle);
            let Some(st) = self.streams.get_mut(&handle) else {
                self.circuit_stream_ended(now, handle);
                return;
            };
            match Reply::decode(&st.inbuf) {
                Ok(Some((reply, used))) => {
                    st.inbuf.advance(used);
                    st.phase = Phase::Open;
                    self.on_reply(now, handle, reply);
                    return;
                }
                Ok(None) if alive && st.inbuf.len() > before => continue,
                Ok(None) if alive => return,
                Ok(None) | Err(_) => {
                    self.stream_reset(now, handle);
                    self.circuit_stream_ended(now, handle);
                    return;
                }
            }
        }
    }

    fn on_reply(&mut self, now: Instant, handle: StreamHandle, reply: Reply) {
        let Some(&ckey) = self.circuits.by_stream.get(&handle) else {
            return;
        };
        match (self.circuits.circuits.get_mut(&ckey), reply) {
            (
                Some(Circuit::Client {
                    link,
                    out,
                    limits: lim,
                    path,
                    probe,
                    ..
                }),
                Reply::Created { label, limits },
            ) => {
                *out = Some(label);
                *lim = limits;
                probe.last_heard = now;
                probe.next_at = now;
                let (link, direct) = (*link, path.is_empty());
                if let Some(l) = self.circuits.client_links.get_mut(&link) {
                    match direct {
                        // Punching is budgeted per breakage: a direct path that works earns
                        // the attempts back, for when it breaks again.
                        true => {
                            l.direct_failures = 0;
                            l.punches_left = PUNCH_ATTEMPTS;
                            l.punch_given_up = false;
                            l.birthdays_left = super::side::PER_LINK;
                        }
                        false => l.failed_builds = 0,
                    }
                }
                for n in path.clone() {
                    self.circuits.directory.circuit_result(&n, true);
                }
                self.counters.circuits_built += 1;
                self.circuit_ready(now, link, ckey);
            }
            (
                Some(Circuit::Client { link, path, .. } | Circuit::ClientStream { link, path, .. }),
                Reply::Refused {
                    refusal,
                    hop,
                    reason,
                },
            ) => {
                let (link, path) = (*link, path.clone());
                self.circuit_refused(now, handle, link, &path, (refusal, hop, reason));
            }
            (
                Some(Circuit::ClientStream {
                    link, limits: lim, ..
                }),
                Reply::Created { limits, .. },
            ) => {
                *lim = limits;
                let link = *link;
                if let Some(l) = self.circuits.client_links.get_mut(&link) {
                    l.failed_builds = 0;
                }
                self.counters.circuits_built += 1;
                self.stream_circuit_ready(now, link, ckey);
            }
            (
                Some(Circuit::Splice {
                    up,
                    ready,
                    limits: lim,
                    ..
                }),
                Reply::Created { limits, .. },
            ) => {
                *ready = true;
                let up = *up;
                let mut all = vec![self.circuits.config.limits];
                all.extend(limits.iter().take(crate::relay::control::MAX_HOPS - 1));
                *lim = all.clone();
                self.counters.circuits_relayed += 1;
                let reply = Reply::Created {
                    label: STREAM_LABEL,
                    limits: all,
                };
                self.send_reply(now, up, reply, true);
                self.circuits.dirty.insert(ckey);
            }
            (
                Some(Circuit::Relay {
                    up,
                    prev,
                    next,
                    fwd_in,
                    limits: lim,
                    ..
                }),
                Reply::Created { label, limits },
            ) => {
                let (up, prev, next) = (*up, *prev, *next);
                let mine = self.circuits.config.limits;
                let l = self.circuits.labels.allocate(
                    now,
                    &mut self.circuits.rng,
                    prev.1,
                    Target::Forward {
                        addr: next.1,
                        label,
                    },
                );
                *fwd_in = Some(l);
                let mut all = vec![mine];
                all.extend(limits.iter().take(crate::relay::control::MAX_HOPS - 1));
                *lim = all.clone();
                self.counters.circuits_relayed += 1;
                self.send_reply(
                    now,
                    up,
                    Reply::Created {
                        label: l,
                        limits: all,
                    },
                    true,
                );
            }
            (
                Some(Circuit::Relay { up, .. } | Circuit::Splice { up, .. }),
                Reply::Refused {
                    refusal,
                    hop,
                    reason,
                },
            ) => {
                let up = *up;
                let reply = Reply::Refused {
                    refusal,
                    hop: hop.saturating_add(1),
                    reason,
                };
                self.send_reply(now, up, reply, false);
                self.teardown(now, ckey);
            }
            _ => {}
        }
    }

    /// A hop refused the circuit this client stream was setting up: its relay is marked, the
    /// link remembers why, and the circuit goes.
    fn circuit_refused(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        link: u64,
        path: &[NodeId],
        (refusal, hop, reason): (Refusal, u8, String),
    ) {
        if let Some(n) = path.get(usize::from(hop)) {
            self.circuits.directory.circuit_result(n, false);
        }
        let failure = Failure::new(
            match refusal {
                Refusal::LimitReached | Refusal::RateLimited => Cause::LimitReached,
                _ => Cause::Unreachable,
            },
            format!(
                "circuit refused at hop {}: {refusal:?}: {reason}",
                usize::from(hop) + 1
            ),
        );
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.last_failure = Some(failure);
        }
        self.stream_reset(now, handle);
        self.circuit_stream_ended(now, handle);
    }

    /// A circuit of link `link` is up: the first becomes active and releases what waited.
    fn circuit_ready(&mut self, now: Instant, link: u64, ckey: u64) {
        let Some(l) = self.circuits.client_links.get_mut(&link) else {
            return;
        };
        if l.policy.is_some() {
            self.circuit_up_event(link, ckey, false);
            self.apply_policy(now, link, false, None);
            self.send_probe(now, ckey);
            // A relay path is up and the direct one is not: ask the owner to open its side,
            // and dial the direct path again at once.
            if self.wanted_direct_pending(link) && self.request_punch(link) {
                self.restart_direct(now, link);
            }
            self.replenish(now, link);
            return;
        }
        let active = l.active.is_none();
        self.circuit_up_event(link, ckey, active);
        let Some(l) = self.circuits.client_links.get_mut(&link) else {
            return;
        };
        if active {
            l.active = Some(ckey);
            let queued: Vec<Vec<u8>> = l.queued.drain(..).collect();
            for payload in queued {
                self.send_on_circuit(ckey, Datagram::Data, &payload);
            }
            self.send_probe(now, ckey);
        }
        // The standby, over other relays.
        self.replenish(now, link);
    }

    /// Writes a reply on a circuit stream; a refusal also ends the stream.
    pub(super) fn send_reply(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        reply: Reply,
        keep: bool,
    ) {
        let Some(st) = self.streams.get_mut(&handle) else {
            return;
        };
        st.header_out = reply.encode();
        st.phase = Phase::Open;
        let sid = st.session;
        let _ = self.flush_header(handle);
        if !keep {
            if let (Some(st), true) = (self.streams.get_mut(&handle), true) {
                st.finish_pending = true;
            }
            let _ = self.flush_header(handle);
            self.circuits.by_stream.remove(&handle);
            self.forget(handle);
        }
        self.drive(now, sid);
    }

    /// A new stream's first byte said circuit: reads its request and acts on it.
    pub(super) fn read_circuit_create(&mut self, now: Instant, handle: StreamHandle) {
        let Some(st) = self.streams.get_mut(&handle) else {
            return;
        };
        let create = match Create::decode(&st.inbuf) {
            Ok(Some((c, used))) => {
                st.inbuf.advance(used);
                c
            }
            Ok(None) => return,
            Err(_) => {
                self.counters.circuits_refused += 1;
                self.streams.request_read(handle);
                let reply = Reply::refused(Refusal::BadRequest, "malformed circuit request");
                self.send_reply(now, handle, reply, false);
                return;
            }
        };
        let sid = st.session;
        self.streams.request_read(handle);
        let (peer, remote, transport) = match self.sessions.get(&sid) {
            Some(s) if s.peer.is_some() && !is_virtual(&s.remote) => {
                (s.peer.expect("checked"), s.remote, s.transport())
            }
            _ => {
                let reply = Reply::refused(Refusal::BadRequest, "no circuits inside circuits");
                self.send_reply(now, handle, reply, false);
                return;
            }
        };
        let refuse = |this: &mut Self, refusal: Refusal, reason: &str| {
            this.counters.circuits_refused += 1;
            let reply = Reply::refused(refusal, reason);
            this.send_reply(now, handle, reply, false);
        };
        // Before the key agreement: that is the work a flood would make the node pay.
        if !self.circuits.setup_rate.allow(now, remote) {
            return refuse(self, Refusal::RateLimited, "circuit setups arrive too fast");
        }
        let limits = self.circuits.config.limits;
        let from_peer = self
            .circuits
            .relayed_by_peer
            .get(&peer)
            .copied()
            .unwrap_or(0);
        if self.circuits.relayed >= limits.max_circuits {
            return refuse(self, Refusal::LimitReached, "at the circuit limit");
        }
        if from_peer >= limits.max_per_peer {
            return refuse(
                self,
                Refusal::LimitReached,
                "at the circuit limit for this peer",
            );
        }
        let instruction = match onion::open(&self.identity, &create.onion)
            .ok()
            .and_then(|p| Instruction::decode(&p).ok())
        {
            Some(i) => i,
            None => return refuse(self, Refusal::BadRequest, "onion layer does not open"),
        };
        // A spliced circuit over TLS/TCP sessions, or over a session kept to a relay (whose
        // setup says so: a datagram circuit never has this back label).
        let spliced = transport == Transport::Tcp || create.back == STREAM_LABEL;
        match instruction {
            Instruction::Deliver { .. } if spliced => self.owner_stream_circuit(now, handle, peer),
            Instruction::Deliver { flow } => {
                self.owner_circuit(now, handle, peer, remote, create.back, flow)
            }
            Instruction::Extend { .. } if !self.circuits.config.enabled => {
                refuse(self, Refusal::NotRelay, "this node does not relay")
            }
            Instruction::Extend { next, .. } if next == peer || next == self.node_id => {
                refuse(self, Refusal::BadRequest, "a circuit may not loop")
            }
            Instruction::Extend { next, addr, inner } if spliced => {
                self.splice_circuit(now, handle, peer, (next, addr), inner)
            }
            Instruction::Extend { next, addr, inner } => self.relay_circuit(
                now,
                handle,
                (peer, remote),
                (next, addr),
                create.back,
                inner,
            ),
        }
    }

    pub(super) fn count_peer(&mut self, peer: NodeId, up: bool) {
        let n = self.circuits.relayed_by_peer.entry(peer).or_default();
        if up {
            *n += 1;
            self.circuits.relayed += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.circuits.relayed_by_peer.remove(&peer);
            }
            self.circuits.relayed = self.circuits.relayed.saturating_sub(1);
        }
    }

    fn owner_circuit(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        peer: NodeId,
        prev: SocketAddr,
        out: Label,
        flow: FlowId,
    ) {
        let link = match self.circuits.by_flow.get(&flow) {
            Some(l) => *l,
            None => {
                let key = self.circuits.key();
                let vaddr = self.circuits.vaddr();
                self.circuits.owner_links.insert(
                    key,
                    OwnerLink {
                        flow,
                        vaddr,
                        client: None,
                        punch: None,
                        birthdays_left: super::side::PER_LINK,
                        circuits: BTreeSet::new(),
                        send: None,
                        recent: Recent::default(),
                    },
                );
                self.circuits.by_flow.insert(flow, key);
                self.circuits.by_vaddr.insert(vaddr, VirtualEnd::Owner(key));
                key
            }
        };
        let ckey = self.circuits.key();
        let fwd_in =
            self.circuits
                .labels
                .allocate(now, &mut self.circuits.rng, prev, Target::Local(ckey));
        self.circuits.circuits.insert(
            ckey,
            Circuit::Owner {
                link,
                stream: handle,
                peer,
                prev,
                out,
                fwd_in,
            },
        );
        self.circuits.by_stream.insert(handle, ckey);
        self.count_peer(peer, true);
        // The client itself as the previous hop: the direct path came up, so the punching
        // budget is earned back, for when it breaks again.
        let direct = self.owner_link_client(link) == Some(peer);
        if let Some(l) = self.circuits.owner_links.get_mut(&link) {
            l.circuits.insert(ckey);
            l.send.get_or_insert(ckey);
            if direct {
                l.birthdays_left = super::side::PER_LINK;
            }
        }
        self.counters.circuits_ended_here += 1;
        let reply = Reply::Created {
            label: fwd_in,
            limits: Vec::new(),
        };
        self.send_reply(now, handle, reply, true);
    }

    fn relay_circuit(
        &mut self,
        now: Instant,
        up: StreamHandle,
        prev: (NodeId, SocketAddr),
        mut next: (NodeId, SocketAddr),
        back: Label,
        inner: Vec<u8>,
    ) {
        // A session the next node keeps to this one (a home relay's) is the way to it: the
        // address the circuit names may lead nowhere from here.
        let kept = self.quic_session_with(next.0);
        if let Some((_, remote)) = kept {
            next.1 = remote;
        }
        let ckey = self.circuits.key();
        let back_in = self.circuits.labels.allocate(
            now,
            &mut self.circuits.rng,
            next.1,
            Target::Forward {
                addr: prev.1,
                label: back,
            },
        );
        let request = Create {
            back: back_in,
            onion: inner,
        }
        .encode();
        let down = match self.new_circuit_stream(request) {
            Some(h) => h,
            None => {
                self.circuits.labels.remove(back_in);
                self.counters.circuits_refused += 1;
                let reply = Reply::refused(Refusal::LimitReached, "at the node's stream limit");
                self.send_reply(now, up, reply, false);
                return;
            }
        };
        self.circuits.circuits.insert(
            ckey,
            Circuit::Relay {
                up,
                down,
                prev,
                next,
                back_in,
                fwd_in: None,
                limits: Vec::new(),
            },
        );
        self.circuits.by_stream.insert(up, ckey);
        self.circuits.by_stream.insert(down, ckey);
        self.count_peer(prev.0, true);
        if let Some(st) = self.streams.get_mut(&up) {
            // Waiting on the next hop; nothing to read meanwhile.
            st.phase = Phase::Connecting;
        }
        match kept {
            Some((sid, _)) => self.attach_to(now, down, sid),
            None => {
                let dial = Dial {
                    addr: next.1,
                    transport: Transport::Quic,
                    expected: Some(next.0),
                };
                self.attach(now, down, &dial);
            }
        }
        self.next_sweep_from(now);
    }

    pub(super) fn next_sweep_from(&mut self, now: Instant) {
        self.circuits.next_sweep.get_or_insert(now + SWEEP_EVERY);
    }

    /// A circuit stream is readable after setup: nothing more is sent on it, so this only
    /// finds its end.
    pub(super) fn drain_circuit_stream(&mut self, now: Instant, handle: StreamHandle) {
        if let Some(&ckey) = self.circuits.by_stream.get(&handle)
            && self
                .circuits
                .circuits
                .get(&ckey)
                .is_some_and(Circuit::carries_bytes)
        {
            self.circuits.dirty.insert(ckey);
            return;
        }
        loop {
            match self.stream_read(now, handle, 4096) {
                StreamRead::Data(_) => continue,
                StreamRead::Blocked => return,
                StreamRead::Finished | StreamRead::Reset(_) => {
                    self.circuit_stream_ended(now, handle);
                    return;
                }
            }
        }
    }

    /// A circuit stream failed with `failure` (its session went, or the next hop reset it).
    pub(super) fn circuit_stream_failed(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        failure: Failure,
    ) {
        if let Some(&ckey) = self.circuits.by_stream.get(&handle)
            && let Some(
                Circuit::Client {
                    link, out: None, ..
                }
                | Circuit::ClientStream {
                    link, vsid: None, ..
                },
            ) = self.circuits.circuits.get(&ckey)
            && let Some(l) = self.circuits.client_links.get_mut(link)
        {
            l.last_failure = Some(failure.context("first relay"));
        }
        self.circuit_stream_ended(now, handle);
    }

    /// A circuit stream ended or failed: its circuit goes with it.
    pub(super) fn circuit_stream_ended(&mut self, now: Instant, handle: StreamHandle) {
        if let Some(ckey) = self.circuits.by_stream.remove(&handle) {
            if let Some(
                Circuit::Relay {
                    up, fwd_in: None, ..
                }
                | Circuit::Splice {
                    up, ready: false, ..
                },
            ) = self.circuits.circuits.get(&ckey)
                && *up != handle
            {
                // The next hop failed before answering: say so upstream.
                let up = *up;
                let reply = Reply::refused(Refusal::NextHopUnreachable, "next hop unreachable");
                self.counters.circuits_refused += 1;
                self.send_reply(now, up, reply, false);
            }
            self.teardown(now, ckey);
        }
    }

    /// Ends circuit `ckey` here: its labels, its streams, and its place in a link.
    pub(super) fn teardown(&mut self, now: Instant, ckey: u64) {
        let Some(c) = self.circuits.circuits.remove(&ckey) else {
            return;
        };
        for l in c.labels() {
            self.circuits.labels.remove(l);
        }
        for h in c.streams() {
            self.circuits.by_stream.remove(&h);
            self.stream_reset(now, h);
        }
        match c {
            Circuit::Relay { prev, .. } => self.count_peer(prev.0, false),
            Circuit::Splice { prev, .. } => self.count_peer(prev, false),
            Circuit::OwnerStream { peer, vsid, .. } => {
                self.count_peer(peer, false);
                self.close_virtual(now, vsid);
            }
            Circuit::ClientStream {
                link, vsid, path, ..
            } => {
                let path_of_failed = path.clone();
                if let Some(l) = self.circuits.client_links.get_mut(&link) {
                    l.circuits.retain(|c| *c != ckey);
                    l.active = None;
                    for n in path {
                        l.avoid.insert(n, now);
                    }
                }
                match vsid {
                    // The session inside is gone with its circuit (bytes cannot be replayed).
                    Some(vsid) => self.close_virtual(now, vsid),
                    None => {
                        self.counters.circuits_failed += 1;
                        self.circuit_failed_event(link, path_of_failed);
                        self.build_failed(now, link);
                        self.replenish(now, link);
                    }
                }
            }
            Circuit::Owner { link, peer, .. } => {
                self.count_peer(peer, false);
                let remove = match self.circuits.owner_links.get_mut(&link) {
                    Some(l) => {
                        l.circuits.remove(&ckey);
                        if l.send == Some(ckey) {
                            l.send = l.circuits.iter().next_back().copied();
                        }
                        l.circuits.is_empty()
                    }
                    None => false,
                };
                if remove {
                    self.drop_owner_link_if_idle(link);
                }
            }
            Circuit::Client {
                link, out, path, ..
            } => {
                let path_of_failed = path.clone();
                let Some(l) = self.circuits.client_links.get_mut(&link) else {
                    return;
                };
                l.circuits.retain(|c| *c != ckey);
                if out.is_none() || l.active == Some(ckey) {
                    for n in path {
                        l.avoid.insert(n, now);
                    }
                }
                if l.active == Some(ckey) {
                    l.active = None;
                    self.failover(now, link);
                }
                if out.is_none() && !self.circuits.quiet.remove(&ckey) {
                    self.counters.circuits_failed += 1;
                    let direct = path_of_failed.is_empty();
                    self.circuit_failed_event(link, path_of_failed);
                    match direct {
                        true => self.direct_failed(now, link),
                        false => self.build_failed(now, link),
                    }
                }
                self.replenish(now, link);
            }
        }
    }

    /// A circuit both of whose directions ended cleanly: forgotten without resetting anything.
    pub(super) fn forget_circuit(&mut self, _now: Instant, ckey: u64) {
        if let Some(c) = self.circuits.circuits.remove(&ckey) {
            for h in c.streams() {
                self.circuits.by_stream.remove(&h);
            }
            if let Circuit::Splice { prev, .. } = c {
                self.count_peer(prev, false);
            }
        }
    }

    pub(super) fn circuit_up_event(&mut self, link: u64, ckey: u64, active: bool) {
        let Some(owner) = self.circuits.client_links.get(&link).map(|l| l.owner) else {
            return;
        };
        let path = match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Client { path, .. } | Circuit::ClientStream { path, .. }) => path.clone(),
            _ => return,
        };
        self.events.push_back(Event::Circuit(CircuitEvent::Up {
            owner,
            path,
            active,
        }));
    }

    /// A circuit of `link` through `path` failed, for the reason the link last recorded.
    fn circuit_failed_event(&mut self, link: u64, path: Vec<NodeId>) {
        let Some(l) = self.circuits.client_links.get(&link) else {
            return;
        };
        let failure = l
            .last_failure
            .clone()
            .unwrap_or_else(|| Failure::new(Cause::Unreachable, "the first relay did not answer"));
        self.events.push_back(Event::Circuit(CircuitEvent::Failed {
            owner: l.owner,
            path,
            failure,
        }));
    }

    /// Why the link behind virtual address `vaddr` could not build a circuit, if it tried.
    pub(super) fn link_failure(&self, vaddr: SocketAddr) -> Option<Failure> {
        match self.circuits.by_vaddr.get(&vaddr)? {
            VirtualEnd::Client(link) => self.circuits.client_links.get(link)?.last_failure.clone(),
            VirtualEnd::Owner(_) => None,
        }
    }

    /// A stream to the next hop that opens with `request`, or `None` at the node's stream
    /// limit (the refusal is the caller's to report: it is no runtime's stream).
    pub(super) fn new_circuit_stream(&mut self, request: Vec<u8>) -> Option<StreamHandle> {
        match self.new_client_stream(ServiceStream::circuit(request)) {
            Ok(h) => Some(h),
            Err(h) => {
                self.events.retain(|e| e.stream() != Some(h));
                None
            }
        }
    }

    pub(super) fn new_circuit(&mut self, c: Circuit) -> u64 {
        let ckey = self.circuits.key();
        self.circuits.circuits.insert(ckey, c);
        ckey
    }

    pub(super) fn new_vaddr(&mut self) -> SocketAddr {
        self.circuits.vaddr()
    }

    pub(super) fn link_vaddr(&self, link: u64) -> Option<SocketAddr> {
        self.circuits.client_links.get(&link).map(|l| l.vaddr)
    }

    pub(super) fn set_link_active(&mut self, link: u64, ckey: u64) {
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.active = Some(ckey);
        }
    }

    fn drop_owner_link_if_idle(&mut self, link: u64) {
        let Some(l) = self.circuits.owner_links.get(&link) else {
            return;
        };
        if !l.circuits.is_empty() {
            return;
        }
        let vaddr = l.vaddr;
        let live = self
            .sessions
            .iter()
            .any(|(_, s)| s.remote == vaddr && !s.down);
        if !live {
            let l = self.circuits.owner_links.remove(&link).expect("checked");
            self.circuits.by_flow.remove(&l.flow);
            self.circuits.by_vaddr.remove(&l.vaddr);
        }
    }

    /// The active circuit of `link` failed: the standby takes over at once.
    fn failover(&mut self, now: Instant, link: u64) {
        let Some(l) = self.circuits.client_links.get_mut(&link) else {
            return;
        };
        if l.policy.is_some() {
            return self.apply_policy(now, link, true, None);
        }
        let ready = l.circuits.iter().copied().find(|c| {
            matches!(
                self.circuits.circuits.get(c),
                Some(Circuit::Client { out: Some(_), .. })
            )
        });
        if let Some(c) = ready {
            l.active = Some(c);
            self.counters.circuit_failovers += 1;
            let owner = l.owner;
            if let Some(Circuit::Client { path, .. }) = self.circuits.circuits.get(&c) {
                let path = path.clone();
                self.events
                    .push_back(Event::Circuit(CircuitEvent::FailedOver { owner, path }));
            }
            // Tells the owner at once to answer on this circuit too.
            self.send_probe(now, c);
            self.replay_recent(VirtualEnd::Client(link), c);
        }
    }

    /// Sends a link end's last datagrams again on the circuit it moved to (see [`REPLAY`]).
    fn replay_recent(&mut self, end: VirtualEnd, ckey: u64) {
        let recent = match end {
            VirtualEnd::Client(l) => self.circuits.client_links.get(&l).map(|l| l.recent.all()),
            VirtualEnd::Owner(l) => self.circuits.owner_links.get(&l).map(|l| l.recent.all()),
        };
        for d in recent.unwrap_or_default() {
            self.send_on_circuit(ckey, Datagram::Data, &d);
        }
    }

    /// Keeps a link at two circuits (active and standby) while its session lives; a link that
    /// can build none fails its session.
    pub(super) fn replenish(&mut self, now: Instant, link: u64) {
        let Some(kind) = self.wanted_path(now, link) else {
            return;
        };
        let Some(l) = self.circuits.client_links.get(&link) else {
            return;
        };
        let vaddr = l.vaddr;
        let session = self.dials.get(&(l.transport, vaddr)).copied();
        let live = session
            .and_then(|s| self.sessions.get(&s))
            .is_some_and(|s| !s.down);
        if !live {
            if l.circuits.is_empty() {
                self.drop_client_link(now, link);
            }
            return;
        }
        let Err(failure) = self.build_circuit(now, link, kind) else {
            return;
        };
        let Some(l) = self.circuits.client_links.get_mut(&link) else {
            return;
        };
        if l.circuits.is_empty() {
            if let Some(sid) = session {
                // No circuit and none can be built: the link's connection cannot continue.
                self.abort_session(now, sid, failure);
            }
        } else {
            // No standby for now (too few relays): look again later.
            l.retry_at = Some(now + STANDBY_RETRY);
        }
    }

    /// The kind of circuit link `link` should build next, if any, and if its backoff allows:
    /// a relay path first (a link with none has nothing to fall back on), then a managed
    /// link's direct path; a link keeps two circuits (a relay-only or legacy one: two relay
    /// paths; TCP mode: one, as a spliced circuit cannot move).
    fn wanted_path(&self, now: Instant, link: u64) -> Option<PathKind> {
        let l = self.circuits.client_links.get(&link)?;
        let (mut relays, mut direct, mut direct_up) = (0, false, false);
        for c in &l.circuits {
            match self.circuits.circuits.get(c) {
                Some(Circuit::Client { path, out, .. }) if path.is_empty() => {
                    direct = true;
                    direct_up = out.is_some();
                }
                Some(_) => relays += 1,
                None => {}
            }
        }
        let relay_ok = l.retry_at.is_none_or(|t| t <= now);
        let direct_ok = l.direct_retry_at.is_none_or(|t| t <= now);
        let allows_direct = l
            .policy
            .map(|id| self.circuits.policies.get(&id).copied().unwrap_or_default())
            .is_some_and(|p| p.allows_direct());
        // A relay path stands by for a direct one that is up; without one, two relay paths.
        let wanted_relays = match (l.transport, allows_direct && direct_up) {
            (Transport::Tcp, _) | (Transport::Quic, true) => 1,
            (Transport::Quic, false) => 2,
        };
        if relays == 0 && relay_ok {
            Some(PathKind::Relay)
        } else if allows_direct && !direct && direct_ok {
            Some(PathKind::Direct)
        } else if relays < wanted_relays && relay_ok {
            Some(PathKind::Relay)
        } else {
            None
        }
    }

    /// Whether managed link `link` has no direct path up (building or not).
    pub(super) fn wanted_direct_pending(&self, link: u64) -> bool {
        self.circuits.client_links.get(&link).is_some_and(|l| {
            !l.circuits.iter().any(|c| {
                matches!(self.circuits.circuits.get(c),
                    Some(Circuit::Client { path, out: Some(_), .. }) if path.is_empty())
            })
        })
    }

    /// Dials the direct path of `link` again now: a build under way is dropped (its QUIC
    /// handshake may have backed off for seconds) and a new one started.
    pub(super) fn restart_direct(&mut self, now: Instant, link: u64) {
        let building: Vec<u64> = self
            .circuits
            .client_links
            .get(&link)
            .map(|l| {
                l.circuits
                    .iter()
                    .copied()
                    .filter(|c| {
                        matches!(self.circuits.circuits.get(c),
                            Some(Circuit::Client { path, out: None, .. }) if path.is_empty())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(owner_addr) = self.circuits.client_links.get(&link).map(|l| l.owner_addr) else {
            return;
        };
        self.circuits.quiet.extend(building.iter().copied());
        // No direct build while the old dial is torn down: it would join the dying session.
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.direct_retry_at = Some(now + Duration::from_secs(3600));
        }
        match self.dials.get(&(Transport::Quic, owner_addr)).copied() {
            Some(sid) if self.sessions.get(&sid).is_some_and(|s| !s.established) => {
                let failure = Failure::new(Cause::Unreachable, "dialed again after a hole punch");
                self.abort_session(now, sid, failure);
            }
            _ => {
                for c in &building {
                    self.teardown(now, *c);
                }
            }
        }
        for c in building {
            self.circuits.quiet.remove(&c);
        }
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.direct_retry_at = None;
        }
    }

    /// A managed link's direct path failed to come up: it is tried again later, on its own
    /// backoff (doubling from 1 s to 32 s).
    fn direct_failed(&mut self, now: Instant, link: u64) {
        if self.request_punch(link) {
            // The owner opens its side now: dial again right behind its first probes.
            if let Some(l) = self.circuits.client_links.get_mut(&link) {
                l.direct_retry_at = Some(now + PUNCH_EVERY * 2);
            }
            return;
        }
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            let backoff = Duration::from_secs(1) * 2u32.saturating_pow(l.direct_failures.min(5));
            l.direct_failures += 1;
            l.direct_retry_at = Some(now + backoff);
            if l.punches_left == 0 && !l.punch_given_up {
                // Said once: the link stays relayed, and the direct path is still tried on
                // its backoff (a NAT's mapping may change).
                l.punch_given_up = true;
                self.counters.punches_failed += 1;
                tracing::info!(
                    "hole punching to {} failed {PUNCH_ATTEMPTS} times: the link stays relayed \
                     (the direct path is still tried, at least every 32 s)",
                    l.owner
                );
            }
        }
    }

    /// A circuit of `link` failed before it was up: the next build waits, longer each time.
    fn build_failed(&mut self, now: Instant, link: u64) {
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            let backoff = BUILD_BACKOFF * 2u32.saturating_pow(l.failed_builds.min(4));
            l.failed_builds += 1;
            l.retry_at = Some(now + backoff);
        }
    }

    /// The session `sid` behind a virtual address went down: its link goes too.
    pub(super) fn virtual_session_down(&mut self, now: Instant, remote: SocketAddr) {
        match self.circuits.by_vaddr.get(&remote).copied() {
            Some(VirtualEnd::Client(link)) => self.drop_client_link(now, link),
            Some(VirtualEnd::Owner(link)) => self.drop_owner_link_if_idle(link),
            None => {}
        }
    }

    /// Auto streams still waiting for their direct session past the deadline move to relays.
    /// `failed` streams (their direct session just failed, with `direct`) move at once. Where
    /// no relay path can be built, a stream stays on its direct session, or fails with both
    /// reasons if that session failed.
    pub(super) fn auto_fallback(
        &mut self,
        now: Instant,
        failed: &[StreamHandle],
        direct: Option<&Failure>,
    ) {
        let due: Vec<StreamHandle> = self
            .circuits
            .auto
            .iter()
            .filter(|(h, (t, ..))| *t <= now || failed.contains(h))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let Some((_, to, hops)) = self.circuits.auto.remove(&h) else {
                continue;
            };
            let Some(st) = self.streams.get(&h) else {
                continue;
            };
            if st.phase != Phase::AwaitSession {
                continue;
            }
            let sid = st.session;
            let vaddr = match self.client_link(now, to, hops, auto_link_policy(to.2)) {
                Ok(vaddr) => vaddr,
                Err(relay) => {
                    if let Some(direct) = direct.filter(|_| failed.contains(&h)) {
                        let failure = Failure::new(
                            direct.cause,
                            format!("{}; no relay path either: {}", direct.detail, relay.detail),
                        );
                        self.forget(h);
                        self.events
                            .push_back(Event::StreamFailed { stream: h, failure });
                    }
                    continue;
                }
            };
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.streams.remove(&h);
                s.pending.retain(|p| *p != h);
            }
            self.counters.auto_fallbacks += 1;
            let dial = Dial {
                addr: vaddr,
                transport: to.2,
                expected: Some(to.0),
            };
            self.attach(now, h, &dial);
        }
    }

    // ---- data plane --------------------------------------------------------------------------

    /// The relay fast path for runtimes: if `datagram` (from `from`) is a relay datagram this
    /// node forwards, its label is swapped in place and the next hop's address returned;
    /// otherwise `None`, and the datagram goes to [`Node::handle_datagram`] as usual.
    pub fn relay_switch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Option<SocketAddr> {
        if !datagram.first().is_some_and(|b| header::is_relay(*b)) {
            return None;
        }
        let h = header::parse(datagram).ok()?;
        let label = h.label?;
        match self.circuits.labels.get(label)?.target {
            Target::Forward { .. } => match self.circuits.labels.switch(now, from, datagram) {
                Verdict::Forward(to) => {
                    self.counters.relay_forwarded += 1;
                    Some(to)
                }
                _ => None,
            },
            Target::Local(_) => None,
        }
    }

    /// A relay datagram arrived (from [`Node::handle_datagram`]).
    pub(super) fn handle_relay_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<quinn_proto::EcnCodepoint>,
        mut data: BytesMut,
    ) {
        match self.circuits.labels.switch(now, from, &mut data) {
            Verdict::Forward(to) => {
                self.counters.relay_forwarded += 1;
                self.queue_datagram(plain_transmit(to, data.len()), data.to_vec());
            }
            Verdict::Drop(reason) => match reason {
                DropReason::Malformed => self.counters.relay_malformed += 1,
                DropReason::UnknownLabel => self.counters.relay_unknown_label += 1,
                DropReason::WrongSource => self.counters.relay_wrong_source += 1,
            },
            Verdict::Unlabelled(Datagram::Probe) => {
                self.punch_probe_seen(now, from, &data);
                // Every node answers (rate-limited; the answer is no larger than the probe):
                // relays for path selection, owners for `vx6 ping`.
                if self.circuits.probe_rate.allow(now, from) {
                    let mut reply = header::probe_answer(&data, from);
                    if header::wants_dial_back(&data) {
                        let (_, nonce) = header::probe_body(&data);
                        if self.observe.to_dial_back.len() < observe::MAX_DIAL_BACKS
                            && self.circuits.dial_back_rate.allow(now, from)
                            && self.circuits.dial_back_total.allow(now, from)
                        {
                            self.observe
                                .to_dial_back
                                .push_back((from, header::dial_back(nonce)));
                            self.counters.dial_backs_sent += 1;
                            // Only this promise makes a missing dial-back count.
                            reply[HEADER_LEN] |= PROBE_DIAL_BACK_COMING;
                        } else {
                            self.counters.dial_backs_declined += 1;
                        }
                    }
                    self.queue_datagram(plain_transmit(from, reply.len()), reply);
                } else {
                    self.counters.relay_unknown_label += 1;
                }
            }
            Verdict::Unlabelled(Datagram::ProbeReply) => {
                let (flags, nonce) = header::probe_body(&data);
                if flags == PROBE_DIAL_BACK {
                    self.dialed_back(from, nonce);
                } else if !self.ping_answered(now, nonce, Some(from))
                    && !self.observe_answered(now, from, &data)
                {
                    self.circuits.directory.probe_reply(now, from, nonce);
                }
            }
            Verdict::Unlabelled(Datagram::Data) => self.counters.relay_malformed += 1,
            Verdict::Local { key, kind } => self.local_datagram(now, key, kind, ecn, data),
        }
    }

    fn local_datagram(
        &mut self,
        now: Instant,
        ckey: u64,
        kind: Datagram,
        ecn: Option<quinn_proto::EcnCodepoint>,
        mut data: BytesMut,
    ) {
        let vaddr = match self.circuits.circuits.get_mut(&ckey) {
            Some(Circuit::Client { link, probe, .. }) => {
                probe.last_heard = now;
                if kind == Datagram::ProbeReply {
                    let (flags, nonce) = header::probe_body(&data);
                    if flags == PROBE_PUNCH {
                        self.punch_answered(now, &data);
                        return;
                    }
                    if self.ping_answered(now, nonce, None) {
                        return;
                    }
                    let Some(Circuit::Client { probe, path, .. }) =
                        self.circuits.circuits.get_mut(&ckey)
                    else {
                        return;
                    };
                    if let Some(sample) = probe.window.answered(nonce, now) {
                        self.recorded.rtt(managed::kind_of(path), sample);
                    }
                    if let Some((n, sent)) = probe.outstanding
                        && n == nonce
                    {
                        let sample = now.saturating_duration_since(sent);
                        probe.rtt = Some(probe.rtt.map_or(sample, |r| (r * 7 + sample) / 8));
                        probe.outstanding = None;
                        probe.answered += 1;
                    }
                    return;
                }
                let link = *link;
                match self.circuits.client_links.get(&link) {
                    Some(l) => l.vaddr,
                    None => return,
                }
            }
            Some(Circuit::Owner { link, .. }) => {
                let link = *link;
                let Some(l) = self.circuits.owner_links.get_mut(&link) else {
                    return;
                };
                match kind {
                    Datagram::Probe => {
                        let (flags, nonce) = header::probe_body(&data);
                        if flags & PROBE_PUNCH != 0
                            && let Some(to) = header::observed(&data)
                        {
                            if self.circuits.punch_rate.allow(now, to) {
                                let flags = header::punch_flags(&data);
                                self.punch_for_client(now, link, ckey, to, nonce, flags);
                            }
                            self.owner_punch(now);
                            return;
                        }
                        let Some(l) = self.circuits.owner_links.get_mut(&link) else {
                            return;
                        };
                        let moved = flags & PROBE_ACTIVE != 0 && l.send != Some(ckey);
                        if flags & PROBE_ACTIVE != 0 {
                            l.send = Some(ckey);
                        }
                        let reply = header::probe(Datagram::ProbeReply, None, flags, nonce);
                        self.send_on_circuit(ckey, Datagram::ProbeReply, &reply[HEADER_LEN..]);
                        if moved {
                            self.replay_recent(VirtualEnd::Owner(link), ckey);
                        }
                        return;
                    }
                    Datagram::ProbeReply => return,
                    Datagram::Data => {
                        let moved = l.send != Some(ckey);
                        l.send = Some(ckey);
                        let vaddr = l.vaddr;
                        if moved {
                            self.replay_recent(VirtualEnd::Owner(link), ckey);
                        }
                        vaddr
                    }
                }
            }
            _ => return,
        };
        if kind != Datagram::Data {
            return;
        }
        let path = match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Owner { link, .. }) => {
                let link = *link;
                let client = self.owner_link_client(link);
                self.circuit_kind(Some(ckey), client)
            }
            _ => self.circuit_kind(Some(ckey), None),
        };
        self.traffic
            .datagrams(path, false, 1, data.len() - HEADER_LEN);
        data.advance(HEADER_LEN);
        self.handle_quic_datagram(now, vaddr, None, ecn, data);
    }

    /// Sends `payload` on circuit `ckey` as a `kind` datagram (the header is added here).
    fn send_on_circuit(&mut self, ckey: u64, kind: Datagram, payload: &[u8]) -> bool {
        let (to, label) = match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Client {
                first,
                out: Some(out),
                ..
            }) => (*first, *out),
            Some(Circuit::Owner { prev, out, .. }) => (*prev, *out),
            _ => return false,
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&header::encode(kind, Some(label)));
        bytes.extend_from_slice(payload);
        self.queue_datagram(plain_transmit(to, bytes.len()), bytes)
    }

    fn send_probe(&mut self, now: Instant, ckey: u64) {
        let often = self.is_managed(ckey);
        let active = match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Client { link, .. }) => self
                .circuits
                .client_links
                .get(link)
                .is_some_and(|l| l.active == Some(ckey)),
            _ => return,
        };
        self.circuits.probe_nonce += 1;
        let nonce = self.circuits.probe_nonce;
        let flags = if active { PROBE_ACTIVE } else { 0 };
        let body = header::probe(Datagram::Probe, None, flags, nonce);
        if self.send_on_circuit(ckey, Datagram::Probe, &body[HEADER_LEN..])
            && let Some(Circuit::Client { probe, .. }) = self.circuits.circuits.get_mut(&ckey)
        {
            probe.outstanding.get_or_insert((nonce, now));
            if let Some((n, _)) = &mut probe.outstanding {
                // The newest nonce answers for all: a reply to an older one is as good.
                *n = nonce;
            }
            probe.sent += 1;
            probe.window.sent(nonce, now);
            probe.next_at = now
                + if active || often {
                    ACTIVE_PROBE_EVERY
                } else {
                    STANDBY_PROBE_EVERY
                };
        }
    }

    /// A QUIC transmit bound for a virtual address goes out on its link's circuit: each
    /// segment gets the relay header. `None`: no circuit is up (held until one is, on a new
    /// link; else lost, which QUIC recovers from).
    pub(super) fn wrap_virtual(&mut self, mut t: Transmit, buf: &mut Vec<u8>) -> Option<Transmit> {
        let end = self.circuits.by_vaddr.get(&t.destination).copied()?;
        let ckey = match end {
            VirtualEnd::Client(link) => {
                let l = self.circuits.client_links.get_mut(&link)?;
                match l.active {
                    Some(c) => c,
                    None => {
                        let seg = t.segment_size.unwrap_or(t.size).max(1);
                        for s in buf[..t.size].chunks(seg) {
                            if l.queued.len() < MAX_QUEUED {
                                l.queued.push_back(s.to_vec());
                            }
                        }
                        return None;
                    }
                }
            }
            VirtualEnd::Owner(link) => self.circuits.owner_links.get(&link)?.send?,
        };
        let (to, label) = match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Client {
                first,
                out: Some(out),
                ..
            }) => (*first, *out),
            Some(Circuit::Owner { prev, out, .. }) => (*prev, *out),
            _ => return None,
        };
        let head = header::encode(Datagram::Data, Some(label));
        let seg = t.segment_size.unwrap_or(t.size).max(1);
        let n = t.size.div_ceil(seg);
        let client = match end {
            VirtualEnd::Owner(link) => self.owner_link_client(link),
            VirtualEnd::Client(_) => None,
        };
        let path = self.circuit_kind(Some(ckey), client);
        self.traffic.datagrams(path, true, n, t.size);
        let recent = match end {
            VirtualEnd::Client(link) => self
                .circuits
                .client_links
                .get_mut(&link)
                .map(|l| &mut l.recent),
            VirtualEnd::Owner(link) => self
                .circuits
                .owner_links
                .get_mut(&link)
                .map(|l| &mut l.recent),
        };
        if let Some(recent) = recent {
            for s in buf[..t.size].chunks(seg).skip(n.saturating_sub(REPLAY)) {
                recent.push(s);
            }
        }
        let old = t.size;
        buf.resize(old + n * HEADER_LEN, 0);
        // From the back, so each segment moves into room no earlier one still needs.
        for i in (0..n).rev() {
            let start = i * seg;
            let end = (start + seg).min(old);
            let dst = start + (i + 1) * HEADER_LEN;
            buf.copy_within(start..end, dst);
            buf[dst - HEADER_LEN..dst].copy_from_slice(&head);
        }
        t.destination = to;
        t.size = old + n * HEADER_LEN;
        t.segment_size = t.segment_size.map(|s| s + HEADER_LEN);
        t.src_ip = None;
        Some(t)
    }

    // ---- timers ------------------------------------------------------------------------------

    pub(super) fn circuits_timeout(&mut self, now: Instant) {
        self.circuits.clock = now;
        let due: Vec<u64> = self
            .circuits
            .client_links
            .iter()
            .filter(|(_, l)| {
                l.retry_at.is_some_and(|t| t <= now) || l.direct_retry_at.is_some_and(|t| t <= now)
            })
            .map(|(k, _)| *k)
            .collect();
        for link in due {
            if let Some(l) = self.circuits.client_links.get_mut(&link) {
                l.retry_at = l.retry_at.filter(|t| *t > now);
                l.direct_retry_at = l.direct_retry_at.filter(|t| *t > now);
            }
            self.replenish(now, link);
        }
        if self.circuits.auto.values().any(|(t, ..)| *t <= now) {
            self.auto_fallback(now, &[], None);
        }
        let client: Vec<u64> = self
            .circuits
            .circuits
            .iter()
            .filter(|(_, c)| matches!(c, Circuit::Client { out: Some(_), .. }))
            .map(|(k, _)| *k)
            .collect();
        for ckey in client {
            let Some(Circuit::Client { link, probe, .. }) = self.circuits.circuits.get(&ckey)
            else {
                continue;
            };
            let active = self
                .circuits
                .client_links
                .get(link)
                .is_some_and(|l| l.active == Some(ckey));
            let silent = now.saturating_duration_since(probe.last_heard);
            if silent >= probe.dead_after(active) {
                self.counters.circuits_failed += 1;
                let link = *link;
                if let Some(Circuit::Client { path, .. }) = self.circuits.circuits.get(&ckey) {
                    let path = path.clone();
                    for n in &path {
                        self.circuits.directory.circuit_result(n, false);
                    }
                    if let Some(l) = self.circuits.client_links.get_mut(&link) {
                        l.last_failure = Some(Failure::new(
                            Cause::Timeout,
                            format!("circuit silent for {} ms", silent.as_millis()),
                        ));
                    }
                    self.circuit_failed_event(link, path);
                }
                self.teardown(now, ckey);
                continue;
            }
            if probe.next_at <= now {
                self.send_probe(now, ckey);
            }
        }
        self.apply_policies(now);
        self.owner_punch(now);
        if self.circuits.next_sweep.is_some_and(|t| t <= now) {
            self.circuits.next_sweep = None;
            let idle = Duration::from_secs(u64::from(self.circuits.config.limits.idle_expiry_secs));
            let expired: Vec<u64> = self
                .circuits
                .circuits
                .iter()
                .filter(|(_, c)| match c {
                    Circuit::Relay { .. } => c.labels().iter().all(|l| {
                        self.circuits
                            .labels
                            .get(*l)
                            .is_none_or(|e| now.saturating_duration_since(e.last_used) >= idle)
                    }),
                    Circuit::Splice { last_used, .. } => {
                        now.saturating_duration_since(*last_used) >= idle
                    }
                    _ => false,
                })
                .map(|(k, _)| *k)
                .collect();
            for ckey in expired {
                self.counters.circuits_expired += 1;
                self.teardown(now, ckey);
            }
            if self
                .circuits
                .circuits
                .values()
                .any(|c| matches!(c, Circuit::Relay { .. } | Circuit::Splice { .. }))
            {
                self.next_sweep_from(now);
            }
        }
        if self
            .circuits
            .directory
            .next_probe()
            .is_some_and(|t| t <= now)
        {
            let mut nonce = self.circuits.probe_nonce;
            let due = self
                .circuits
                .directory
                .due_probes(now, PROBES_PER_TICK, &mut nonce);
            self.circuits.probe_nonce = nonce;
            for (addr, nonce) in due {
                let p = header::probe(Datagram::Probe, None, 0, nonce);
                self.queue_datagram(plain_transmit(addr, p.len()), p);
            }
        }
    }

    pub(super) fn circuits_next_timeout(&self) -> Option<Instant> {
        let probes = self
            .circuits
            .circuits
            .iter()
            .filter_map(|(k, c)| match c {
                Circuit::Client {
                    link,
                    out: Some(_),
                    probe,
                    ..
                } => {
                    let active = self
                        .circuits
                        .client_links
                        .get(link)
                        .is_some_and(|l| l.active == Some(*k));
                    Some(
                        probe
                            .next_at
                            .min(probe.last_heard + probe.dead_after(active)),
                    )
                }
                _ => None,
            })
            .min();
        // Directory probes only while the node has links that may need relays.
        let directory = (!self.circuits.client_links.is_empty())
            .then(|| self.circuits.directory.next_probe())
            .flatten();
        let retries = self
            .circuits
            .client_links
            .values()
            .flat_map(|l| [l.retry_at, l.direct_retry_at])
            .flatten()
            .chain(
                self.circuits
                    .owner_links
                    .values()
                    .filter_map(|l| l.punch.map(|p| p.2)),
            )
            .min();
        [
            probes,
            retries,
            self.circuits.next_sweep,
            self.circuits.auto.values().map(|(t, ..)| *t).min(),
            directory,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- status ------------------------------------------------------------------------------

    pub(super) fn circuit_status(&self) -> Vec<CircuitStatus> {
        self.circuits
            .circuits
            .iter()
            .map(|(k, c)| {
                let traffic = |l: &Label| {
                    self.circuits
                        .labels
                        .get(*l)
                        .map_or((0, 0), |e| (e.packets, e.bytes))
                };
                match c {
                    Circuit::Client {
                        link,
                        path,
                        out,
                        limits,
                        probe,
                        back_in,
                        ..
                    } => {
                        let l = self.circuits.client_links.get(link);
                        let (packets, bytes) = traffic(back_in);
                        CircuitStatus {
                            role: CircuitRole::Client,
                            owner: l.map(|l| l.owner),
                            path: path.clone(),
                            ready: out.is_some(),
                            active: l.is_some_and(|l| l.active == Some(*k)),
                            rtt: probe.rtt,
                            probes_sent: probe.sent,
                            probes_answered: probe.answered,
                            packets,
                            bytes,
                            limits: limits.clone(),
                        }
                    }
                    Circuit::Relay {
                        prev,
                        next,
                        back_in,
                        fwd_in,
                        limits,
                        ..
                    } => {
                        let (p1, b1) = traffic(back_in);
                        let (p2, b2) = fwd_in.as_ref().map_or((0, 0), traffic);
                        CircuitStatus {
                            role: CircuitRole::Relay,
                            owner: None,
                            path: vec![prev.0, next.0],
                            ready: fwd_in.is_some(),
                            active: true,
                            rtt: None,
                            probes_sent: 0,
                            probes_answered: 0,
                            packets: p1 + p2,
                            bytes: b1 + b2,
                            limits: limits.clone(),
                        }
                    }
                    Circuit::ClientStream {
                        link,
                        path,
                        limits,
                        vsid,
                        pipe,
                        ..
                    } => CircuitStatus {
                        role: CircuitRole::Client,
                        owner: self.circuits.client_links.get(link).map(|l| l.owner),
                        path: path.clone(),
                        ready: vsid.is_some(),
                        active: vsid.is_some(),
                        rtt: vsid
                            .and_then(|v| self.sessions.get(&v))
                            .and_then(|s| match &s.kind {
                                super::session::Kind::Tcp { conn, .. } => conn.mux_ref().rtt(),
                                super::session::Kind::Quic { .. } => None,
                            }),
                        probes_sent: 0,
                        probes_answered: 0,
                        packets: 0,
                        bytes: pipe.bytes,
                        limits: limits.clone(),
                    },
                    Circuit::Splice {
                        prev,
                        next,
                        ready,
                        limits,
                        up_down,
                        down_up,
                        ..
                    } => CircuitStatus {
                        role: CircuitRole::Relay,
                        owner: None,
                        path: vec![*prev, *next],
                        ready: *ready,
                        active: true,
                        rtt: None,
                        probes_sent: 0,
                        probes_answered: 0,
                        packets: 0,
                        bytes: up_down.bytes + down_up.bytes,
                        limits: limits.clone(),
                    },
                    Circuit::OwnerStream { pipe, .. } => CircuitStatus {
                        role: CircuitRole::Owner,
                        owner: None,
                        path: Vec::new(),
                        ready: true,
                        active: true,
                        rtt: None,
                        probes_sent: 0,
                        probes_answered: 0,
                        packets: 0,
                        bytes: pipe.bytes,
                        limits: Vec::new(),
                    },
                    Circuit::Owner { link, fwd_in, .. } => {
                        let (packets, bytes) = traffic(fwd_in);
                        CircuitStatus {
                            role: CircuitRole::Owner,
                            owner: None,
                            path: Vec::new(),
                            ready: true,
                            active: self
                                .circuits
                                .owner_links
                                .get(link)
                                .is_some_and(|l| l.send == Some(*k)),
                            rtt: None,
                            probes_sent: 0,
                            probes_answered: 0,
                            packets,
                            bytes,
                            limits: Vec::new(),
                        }
                    }
                }
            })
            .collect()
    }
}

/// The policy of the link `auto` streams fall back to over `transport`: managed over QUIC (so
/// it moves to the direct path once that works), plain over TCP (a TLS/TCP session cannot
/// move).
fn auto_link_policy(transport: Transport) -> Option<PolicyId> {
    (transport == Transport::Quic).then_some(PolicyId::AUTO)
}

pub(super) fn plain_transmit(to: SocketAddr, size: usize) -> Transmit {
    Transmit {
        destination: to,
        ecn: None,
        size,
        segment_size: None,
        src_ip: None,
    }
}
