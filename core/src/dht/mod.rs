//! The Kademlia DHT (k = 20, α = 3) and peer sync, as one sans-IO state machine.
//!
//! [`Dht`] knows nothing of sessions or sockets: the node (or the simulator) hands it requests
//! from authenticated peers ([`Dht::handle_request`]), delivers answers and failures of the RPCs
//! it asked for ([`Dht::poll_outgoing`] → [`Dht::handle_response`] / [`Dht::handle_failure`]),
//! and drives its RPC timeouts. Records are the ordinary signed records; storage is a
//! [`Registry`] (merge rules, per-owner, per-name and per-kind bounds, no eviction), and every
//! record is verified, checked for freshness and for sitting under the right key before it is
//! kept or returned. Alias records (hidden aliases) are held beside them in an [`AliasStore`],
//! told apart by their kind byte.

pub mod alias_store;
pub mod contact;
pub mod datagram;
pub mod distance;
pub mod lookup;
pub mod message;
pub mod routing_table;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use alias_store::{AliasSource, AliasStore, AliasStoreError};
pub use contact::Contact;
pub use distance::Distance;
pub use lookup::{Lookup, LookupConfig};
pub use message::{DigestEntry, Message, Request, Response};
pub use routing_table::{RoutingConfig, RoutingTable};

use self::message::{MAX_CONTACTS, MAX_DIGEST, MAX_RECORDS};

/// Digest entries a sync sends at once: the most that fit one datagram even with the longest
/// sequence numbers (the wire allows up to [`MAX_DIGEST`]).
pub const SYNC_DIGEST: usize = 48;

/// Records per `Store` that answers a sync's wants, so that one fits a datagram.
const SYNC_STORE_BATCH: usize = 4;
use crate::alias::AliasRecord;
use crate::alias::record::ALIAS_RECORD_KIND;
use crate::identity::NodeId;
use crate::names::Username;
use crate::record::{Record, SignedRecord};
use crate::registry::{Registry, RegistryLimits};

/// Settings of a DHT node.
#[derive(Debug, Clone, Copy)]
pub struct DhtConfig {
    /// Routing table bounds.
    pub routing: RoutingConfig,
    /// Lookup parameters of ordinary lookups.
    pub lookup: LookupConfig,
    /// Disjoint paths of the lookups an adversary gains most by capturing: for the node's own
    /// id (joining and refreshing its neighbourhood, which decides whom its neighbours know),
    /// for publishing, and for a value lookup tried again after one path found nothing.
    pub disjoint_paths: usize,
    /// The longest an RPC may take before it counts as failed; the actual timeout adapts to
    /// the round trips observed (`srtt + 4 × rttvar`, at least 250 ms).
    pub rpc_timeout: Duration,
    /// A value lookup ends early once this many nodes returned valid records.
    pub value_quorum: usize,
    /// Storage bounds.
    pub store: RegistryLimits,
    /// Lookups running at once; more are refused.
    pub max_lookups: usize,
    /// Alias records held for others (each at most 1280 bytes).
    pub max_alias_records: usize,
    /// Of those, from one peer network (a /64 or /24) or one peer without one.
    pub max_alias_records_per_source: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            routing: RoutingConfig::default(),
            lookup: LookupConfig::default(),
            disjoint_paths: 3,
            rpc_timeout: Duration::from_secs(2),
            value_quorum: 2,
            store: RegistryLimits::default(),
            max_lookups: 256,
            max_alias_records: 4096,
            max_alias_records_per_source: 256,
        }
    }
}

/// A running or finished lookup, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// What a lookup was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The k closest nodes to a target.
    FindNode,
    /// Records under a key.
    FindValue,
    /// Store these records at the k closest nodes to their key.
    Store(Vec<Vec<u8>>),
}

/// Whether stored or returned bytes are an alias record rather than a signed record: the kind
/// byte, second in both, says so.
fn is_alias(bytes: &[u8]) -> bool {
    bytes.get(1) == Some(&ALIAS_RECORD_KIND)
}

/// A finished lookup.
#[derive(Debug, Clone)]
pub struct LookupResult {
    /// Which lookup.
    pub id: LookupId,
    /// Its target or key.
    pub target: NodeId,
    /// The closest nodes that answered.
    pub closest: Vec<Contact>,
    /// Valid records found (value lookups), deduplicated.
    pub records: Vec<SignedRecord>,
    /// The alias record found under the key, the highest seq any node returned.
    pub alias: Option<AliasRecord>,
    /// Nodes that accepted a store (store lookups).
    pub stored_at: u32,
    /// Queries sent.
    pub queries: u32,
    /// Deepest hop (rounds).
    pub hops: u32,
    /// When it started, and when it ended.
    pub started: Instant,
    /// See `started`.
    pub finished: Instant,
}

/// An RPC the DHT wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// To whom.
    pub to: Contact,
    /// Transaction id to answer with.
    pub txid: u64,
    /// The request.
    pub request: Request,
}

/// Counters for reports and `vx6 status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Requests handled.
    pub requests: u64,
    /// Records accepted into storage from peers.
    pub stored: u64,
    /// Records refused from peers (invalid, stale, wrong key, over a bound).
    pub rejected: u64,
    /// Answers dropped (unknown transaction, wrong sender, invalid content).
    pub bad_answers: u64,
    /// RPCs that failed or timed out.
    pub rpc_failures: u64,
    /// Value lookups that found records.
    pub lookups_found: u64,
    /// Value lookups that found none.
    pub lookups_not_found: u64,
    /// Node lookups finished.
    pub lookups_nodes: u64,
    /// Stores that some node accepted.
    pub stores_done: u64,
    /// Stores no node accepted.
    pub stores_failed: u64,
}

struct Active {
    lookup: Lookup,
    purpose: Purpose,
    records: Vec<SignedRecord>,
    alias: Option<AliasRecord>,
    with_value: usize,
    stores_pending: usize,
    stored_at: u32,
    storing: bool,
    started: Instant,
    /// Queries and rounds of an earlier attempt (a value lookup tried again).
    earlier: Option<(u32, u32)>,
}

struct Pending {
    lookup: Option<LookupId>,
    to: Contact,
    sent: Instant,
    deadline: Instant,
}

/// Smoothed RPC round trip (RFC 6298's estimator), for timeouts that follow the network: a
/// fixed 2 s would make every dead node on a lookup's path cost 2 s.
#[derive(Debug, Clone, Copy)]
struct RpcTimer {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RpcTimer {
    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// `srtt + 4 × rttvar`, at least 250 ms, at most `max` (and `max` before any sample).
    fn timeout(&self, max: Duration) -> Duration {
        self.srtt.map_or(max, |s| {
            (s + self.rttvar * 4).clamp(Duration::from_millis(250), max)
        })
    }
}

/// One node's DHT.
pub struct Dht {
    local: NodeId,
    config: DhtConfig,
    table: RoutingTable,
    store: Registry,
    aliases: AliasStore,
    /// DHT name key → username, for the claims held.
    names: HashMap<NodeId, Username>,
    lookups: BTreeMap<LookupId, Active>,
    next_lookup: u64,
    pending: BTreeMap<u64, Pending>,
    next_txid: u64,
    out: VecDeque<Outgoing>,
    done: VecDeque<LookupResult>,
    stats: DhtStats,
    timer: RpcTimer,
}

/// Why a lookup could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Too many lookups are running.
    #[error("too many lookups running")]
    Busy,
}

impl Dht {
    /// A DHT node with id `local`.
    pub fn new(local: NodeId, config: DhtConfig) -> Self {
        Self {
            local,
            config,
            table: RoutingTable::new(local, config.routing),
            store: Registry::new(config.store),
            aliases: AliasStore::new(
                config.max_alias_records,
                config.max_alias_records_per_source,
            ),
            names: HashMap::new(),
            lookups: BTreeMap::new(),
            next_lookup: 1,
            pending: BTreeMap::new(),
            next_txid: 1,
            out: VecDeque::new(),
            done: VecDeque::new(),
            stats: DhtStats::default(),
            timer: RpcTimer {
                srtt: None,
                rttvar: Duration::ZERO,
            },
        }
    }

    fn rpc(&self, lookup: Option<LookupId>, to: Contact, now: Instant) -> Pending {
        Pending {
            lookup,
            to,
            sent: now,
            deadline: now + self.timer.timeout(self.config.rpc_timeout),
        }
    }

    /// The local id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Stored records.
    pub fn store(&self) -> &Registry {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    /// Changes the parameters of lookups started from now on.
    pub fn set_lookup_config(&mut self, lookup: LookupConfig) {
        self.config.lookup = lookup;
    }

    /// The configuration.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Lookups running.
    pub fn running(&self) -> usize {
        self.lookups.len()
    }

    /// Adds a contact known from elsewhere (bootstrap list, registry) without having talked to
    /// it; a failed RPC later removes it as usual.
    pub fn add_contact(&mut self, contact: Contact, now: Instant) {
        self.table.insert(contact, now);
    }

    /// Records that a peer is unreachable (its session failed).
    pub fn peer_failed(&mut self, id: &NodeId) {
        self.table.record_failure(id);
    }

    /// Starts a lookup.
    pub fn start(
        &mut self,
        now: Instant,
        target: NodeId,
        purpose: Purpose,
    ) -> Result<LookupId, LookupError> {
        if self.lookups.len() >= self.config.max_lookups {
            return Err(LookupError::Busy);
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let secure = target == self.local || matches!(purpose, Purpose::Store(_));
        let lookup = self.new_lookup(target, secure);
        self.lookups.insert(
            id,
            Active {
                lookup,
                purpose,
                records: Vec::new(),
                alias: None,
                with_value: 0,
                stores_pending: 0,
                stored_at: 0,
                storing: false,
                started: now,
                earlier: None,
            },
        );
        self.advance(now, id);
        Ok(id)
    }

    fn new_lookup(&self, target: NodeId, secure: bool) -> Lookup {
        let mut config = self.config.lookup;
        if secure {
            config.paths = config.paths.max(self.config.disjoint_paths);
        }
        let seeds = self.table.closest(&target, config.k);
        Lookup::new(self.local, target, &seeds, config)
    }

    /// Stores `records` (all under the same key) at the k closest nodes to their key.
    pub fn publish(
        &mut self,
        now: Instant,
        unix_now: u64,
        records: &[SignedRecord],
    ) -> Result<Option<LookupId>, LookupError> {
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let key = first.dht_key();
        for r in records.iter().filter(|r| r.dht_key() == key) {
            self.keep(r.clone(), unix_now);
        }
        let bytes = records
            .iter()
            .filter(|r| r.dht_key() == key)
            .take(MAX_RECORDS)
            .map(|r| r.as_bytes().to_vec())
            .collect();
        self.start(now, key, Purpose::Store(bytes)).map(Some)
    }

    /// Stores an alias record at the k closest nodes to its key (its blinded key's id), and
    /// keeps it here too.
    pub fn publish_alias(
        &mut self,
        now: Instant,
        unix_now: u64,
        record: &AliasRecord,
    ) -> Result<LookupId, LookupError> {
        let _ = self
            .aliases
            .insert(record.clone(), unix_now, AliasSource::Local);
        let bytes = vec![record.as_bytes().to_vec()];
        self.start(now, record.dht_key(), Purpose::Store(bytes))
    }

    /// The alias records held for others.
    pub fn aliases(&self) -> &AliasStore {
        &self.aliases
    }

    fn txid(&mut self) -> u64 {
        let t = self.next_txid;
        self.next_txid += 1;
        t
    }

    /// Sends queries the lookup wants and finishes it when it is done.
    fn advance(&mut self, now: Instant, id: LookupId) {
        let Some(active) = self.lookups.get_mut(&id) else {
            return;
        };
        if !active.storing {
            let request = match &active.purpose {
                Purpose::FindValue => Request::FindValue {
                    key: active.lookup.target(),
                },
                _ => Request::FindNode {
                    target: active.lookup.target(),
                },
            };
            let mut queries = Vec::new();
            while let Some(to) = active.lookup.next_query() {
                queries.push(to);
            }
            let early = active.purpose == Purpose::FindValue
                && active.with_value >= self.config.value_quorum;
            let finished = early || active.lookup.is_done();
            for to in queries {
                let txid = self.txid();
                self.pending.insert(txid, self.rpc(Some(id), to, now));
                self.out.push_back(Outgoing {
                    to,
                    txid,
                    request: request.clone(),
                });
            }
            if !finished {
                return;
            }
            let active = self.lookups.get(&id).expect("checked above");
            let retry = active.purpose == Purpose::FindValue
                && active.records.is_empty()
                && active.alias.is_none()
                && active.earlier.is_none()
                && self.config.disjoint_paths > self.config.lookup.paths;
            if retry {
                // Nothing found on one path may mean the path was led astray: ask again over
                // disjoint paths, which an adversary must all sit on to hide a record.
                let lookup = self.new_lookup(active.lookup.target(), true);
                let active = self.lookups.get_mut(&id).expect("checked above");
                active.earlier = Some((active.lookup.queries(), active.lookup.hops()));
                active.lookup = lookup;
                return self.advance(now, id);
            }
            let active = self.lookups.get_mut(&id).expect("checked above");
            if let Purpose::Store(records) = &active.purpose {
                active.storing = true;
                let targets = active.lookup.closest();
                let records = records.clone();
                active.stores_pending = targets.len();
                for to in targets {
                    let txid = self.txid();
                    self.pending.insert(txid, self.rpc(Some(id), to, now));
                    self.out.push_back(Outgoing {
                        to,
                        txid,
                        request: Request::Store {
                            records: records.clone(),
                        },
                    });
                }
                let active = self.lookups.get(&id).expect("checked above");
                if active.stores_pending > 0 {
                    return;
                }
            }
        } else if active.stores_pending > 0 {
            return;
        }
        self.finish(now, id);
    }

    fn finish(&mut self, now: Instant, id: LookupId) {
        let Some(active) = self.lookups.remove(&id) else {
            return;
        };
        let (earlier_queries, earlier_hops) = active.earlier.unwrap_or_default();
        let nothing = active.records.is_empty() && active.alias.is_none();
        let outcome = match (&active.purpose, nothing) {
            (Purpose::FindValue, false) => &mut self.stats.lookups_found,
            (Purpose::FindValue, true) => &mut self.stats.lookups_not_found,
            (Purpose::Store(_), _) if active.stored_at > 0 => &mut self.stats.stores_done,
            (Purpose::Store(_), _) => &mut self.stats.stores_failed,
            _ => &mut self.stats.lookups_nodes,
        };
        *outcome += 1;
        // Answers still in flight for this lookup are dropped when they arrive.
        self.done.push_back(LookupResult {
            id,
            target: active.lookup.target(),
            closest: active.lookup.closest(),
            records: active.records,
            alias: active.alias,
            stored_at: active.stored_at,
            queries: earlier_queries + active.lookup.queries(),
            hops: earlier_hops + active.lookup.hops(),
            started: active.started,
            finished: now,
        });
    }

    /// Keeps a record locally (our own, or one a lookup found valid).
    fn keep(&mut self, record: SignedRecord, unix_now: u64) -> bool {
        if let Record::NameClaim(c) = record.record() {
            self.names.insert(record.dht_key(), c.username.clone());
        }
        self.store.insert(record, unix_now).is_ok()
    }

    /// Answers a request from `from` (authenticated by the caller's session) at wall-clock
    /// `unix_now`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: Contact,
        request: Request,
    ) -> Response {
        self.stats.requests += 1;
        self.table.insert(from, now);
        match request {
            Request::Ping => Response::Pong,
            Request::FindNode { target } => Response::Nodes {
                closer: self.closest_excluding(&target, &from.id),
            },
            Request::FindValue { key } => {
                let username = self.names.get(&key);
                let records = self
                    .aliases
                    .get(&key, unix_now)
                    .map(|a| a.as_bytes().to_vec())
                    .into_iter()
                    .chain(
                        self.store
                            .records_for_key(&key, username)
                            .map(|r| r.as_bytes().to_vec()),
                    )
                    .take(MAX_RECORDS)
                    .collect();
                Response::Value {
                    records,
                    closer: self.closest_excluding(&key, &from.id),
                }
            }
            Request::Store { records } => {
                let (mut accepted, mut rejected) = (0u16, 0u16);
                for bytes in records.iter().take(MAX_RECORDS) {
                    let kept = if is_alias(bytes) {
                        let source = contact::subnet(&from.addr)
                            .map_or(AliasSource::Node(from.id), AliasSource::Net);
                        AliasRecord::decode(bytes)
                            .is_ok_and(|r| self.aliases.insert(r, unix_now, source).is_ok())
                    } else {
                        SignedRecord::decode(bytes).is_ok_and(|r| self.keep(r, unix_now))
                    };
                    if kept {
                        accepted += 1;
                    } else {
                        rejected += 1;
                    }
                }
                self.stats.stored += u64::from(accepted);
                self.stats.rejected += u64::from(rejected);
                Response::Stored { accepted, rejected }
            }
            Request::Sync { digest } => self.answer_sync(&digest, unix_now),
        }
    }

    fn closest_excluding(&self, target: &NodeId, exclude: &NodeId) -> Vec<Contact> {
        let mut c = self.table.closest(target, MAX_CONTACTS + 1);
        c.retain(|x| x.id != *exclude);
        c.truncate(MAX_CONTACTS);
        c
    }

    /// Whether an answer from `from` to transaction `txid` is awaited: such answers are the
    /// node's own lookups coming back, not load a peer imposes.
    pub fn awaits(&self, txid: u64, from: std::net::SocketAddr) -> bool {
        self.pending.get(&txid).is_some_and(|p| p.to.addr == from)
    }

    /// An answer arrived from `from` for transaction `txid`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: Contact,
        txid: u64,
        response: Response,
    ) {
        let Some(p) = self.pending.remove(&txid) else {
            self.stats.bad_answers += 1;
            return;
        };
        if p.to.id != from.id {
            // Someone else answered: ignore it and let the real RPC time out.
            self.pending.insert(txid, p);
            self.stats.bad_answers += 1;
            return;
        }
        self.table.insert(p.to, now);
        self.timer.sample(now.saturating_duration_since(p.sent));
        let Some(id) = p.lookup else {
            if let Response::Synced { records, want } = response {
                let theirs = self.finish_sync(unix_now, &records, &want);
                for batch in theirs.chunks(SYNC_STORE_BATCH) {
                    let txid = self.txid();
                    self.pending.insert(txid, self.rpc(None, p.to, now));
                    self.out.push_back(Outgoing {
                        to: p.to,
                        txid,
                        request: Request::Store {
                            records: batch.to_vec(),
                        },
                    });
                }
            }
            return;
        };
        let Some(active) = self.lookups.get_mut(&id) else {
            return;
        };
        let target = active.lookup.target();
        match response {
            Response::Nodes { closer } if !active.storing => {
                active.lookup.on_answer(&from.id, &closer);
            }
            Response::Value { records, closer } if !active.storing => {
                let mut valid = Vec::new();
                let mut alias: Option<AliasRecord> = None;
                let mut lied = false;
                for bytes in &records {
                    if is_alias(bytes) {
                        match AliasRecord::decode(bytes) {
                            // One this node's clock finds out of date is not a lie (clocks
                            // differ), only not an answer.
                            Ok(r) if r.dht_key() == target => {
                                if r.check_time(unix_now).is_ok() && alias.is_none() {
                                    alias = Some(r);
                                }
                            }
                            _ => lied = true,
                        }
                        continue;
                    }
                    match SignedRecord::decode(bytes) {
                        Ok(r)
                            if r.dht_key() == target
                                && self.config.store.freshness.check(&r, unix_now).is_ok() =>
                        {
                            valid.push(r)
                        }
                        _ => lied = true,
                    }
                }
                let active = self.lookups.get_mut(&id).expect("checked above");
                if lied {
                    // Forged, stale or misfiled records: this peer's answers are not used, and
                    // it is not handed to anyone else as a contact.
                    self.stats.bad_answers += 1;
                    active.lookup.blame(&from.id);
                    self.table.remove(&from.id);
                } else {
                    if !valid.is_empty() || alias.is_some() {
                        active.with_value += 1;
                    }
                    if let Some(found) = alias {
                        let newer = active.alias.as_ref().is_none_or(|a| found.seq() > a.seq());
                        if newer {
                            active.alias = Some(found.clone());
                        }
                        // Kept as records found are: this node can answer for it too.
                        let _ = self.aliases.insert(found, unix_now, AliasSource::Local);
                    }
                    // Found records are kept too (Kademlia's caching): the node can answer for
                    // them, and remembers the peers they describe across restarts.
                    let found = valid.clone();
                    for r in found {
                        self.keep(r, unix_now);
                    }
                    let active = self.lookups.get_mut(&id).expect("checked above");
                    for r in valid {
                        if !active.records.iter().any(|x| x.as_bytes() == r.as_bytes()) {
                            active.records.push(r);
                        }
                    }
                    active.lookup.on_answer(&from.id, &closer);
                }
            }
            Response::Stored { accepted, .. } if active.storing => {
                active.stores_pending = active.stores_pending.saturating_sub(1);
                if accepted > 0 {
                    active.stored_at += 1;
                }
            }
            _ => {
                self.stats.bad_answers += 1;
                if active.storing {
                    active.stores_pending = active.stores_pending.saturating_sub(1);
                } else {
                    active.lookup.blame(&from.id);
                }
            }
        }
        self.advance(now, id);
    }

    /// The RPC `txid` failed (no session, or the session died).
    pub fn handle_failure(&mut self, now: Instant, txid: u64) {
        let Some(p) = self.pending.remove(&txid) else {
            return;
        };
        self.stats.rpc_failures += 1;
        self.table.record_failure(&p.to.id);
        let Some(id) = p.lookup else {
            return;
        };
        if let Some(active) = self.lookups.get_mut(&id) {
            if active.storing {
                active.stores_pending = active.stores_pending.saturating_sub(1);
            } else {
                active.lookup.on_failure(&p.to.id);
            }
        }
        self.advance(now, id);
    }

    /// RPC timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for txid in expired {
            self.handle_failure(now, txid);
        }
    }

    /// The earliest RPC deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Next RPC to send.
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// Next finished lookup.
    pub fn poll_result(&mut self) -> Option<LookupResult> {
        self.done.pop_front()
    }

    // ---- peer sync ---------------------------------------------------------------------------

    /// A digest of up to [`SYNC_DIGEST`] held records, starting after `cursor` (rotate it to
    /// cover a large registry over several rounds).
    pub fn sync_digest(&self, cursor: usize) -> Vec<DigestEntry> {
        let n = self.store.len();
        if n == 0 {
            return Vec::new();
        }
        let start = cursor % n;
        self.store
            .iter()
            .skip(start)
            .chain(self.store.iter().take(start))
            .take(SYNC_DIGEST)
            .map(|r| DigestEntry {
                slot: r.slot(),
                seq: r.record().seq(),
            })
            .collect()
    }

    /// Starts a sync with `peer`: sends our digest.
    pub fn start_sync(&mut self, now: Instant, peer: Contact, cursor: usize) -> u64 {
        let txid = self.txid();
        self.pending.insert(txid, self.rpc(None, peer, now));
        self.out.push_back(Outgoing {
            to: peer,
            txid,
            request: Request::Sync {
                digest: self.sync_digest(cursor),
            },
        });
        txid
    }

    fn answer_sync(&mut self, digest: &[DigestEntry], _unix_now: u64) -> Response {
        let theirs: HashMap<[u8; 16], u64> = digest
            .iter()
            .take(MAX_DIGEST)
            .map(|e| (e.slot, e.seq))
            .collect();
        let mut records = Vec::new();
        let mut want = Vec::new();
        let mut ours = HashMap::new();
        for r in self.store.iter() {
            let slot = r.slot();
            let seq = r.record().seq();
            ours.insert(slot, seq);
            if theirs.get(&slot).is_none_or(|s| *s < seq) && records.len() < MAX_RECORDS {
                records.push(r.as_bytes().to_vec());
            }
        }
        for e in digest.iter().take(MAX_DIGEST) {
            if ours.get(&e.slot).is_none_or(|s| *s < e.seq) && want.len() < MAX_DIGEST {
                want.push(e.slot);
            }
        }
        Response::Synced { records, want }
    }

    /// Takes records a sync answer brought, and returns the records the peer wants from us (sent
    /// to it in a `Store`).
    fn finish_sync(
        &mut self,
        unix_now: u64,
        records: &[Vec<u8>],
        want: &[[u8; 16]],
    ) -> Vec<Vec<u8>> {
        for bytes in records.iter().take(MAX_RECORDS) {
            if SignedRecord::decode(bytes).is_ok_and(|r| self.keep(r, unix_now)) {
                self.stats.stored += 1;
            } else {
                self.stats.rejected += 1;
            }
        }
        let want: std::collections::HashSet<_> = want.iter().collect();
        self.store
            .iter()
            .filter(|r| want.contains(&r.slot()))
            .take(MAX_RECORDS)
            .map(|r| r.as_bytes().to_vec())
            .collect()
    }
}
