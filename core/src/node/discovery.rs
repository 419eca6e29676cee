//! The node's side of discovery: DHT datagrams on the shared UDP port, bootstrap, publishing
//! its own records, resolving `username.service`, and streams that wait for a name.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_proto::Transmit;

use super::stream::{Phase, ServiceStream};
use super::{Dial, Event, Node, Route, SessionId, StreamHandle, resolver};
use crate::dht::datagram::{self, ANYONE};
use crate::dht::message::{Body, DHT_VERSION, MAX_DIGEST, Message, Request, Response};
use crate::dht::{Contact, LookupId, LookupResult, Purpose};
use crate::failure::{Cause, Failure};
use crate::identity::NodeId;
use crate::names::ServiceName;
use crate::names::Username;
use crate::record::{NodeAddress, OwnRecords, SignedRecord, Transport};
use crate::resolve::Target;

/// Records per `Store` datagram, so a store fits one datagram.
const STORE_BATCH: usize = 4;

/// How often a node signs and stores its own records again (see [`Node::publish_self`]).
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// How long the records a node publishes about itself live: four republish intervals, so a
/// node that misses a few republications stays reachable.
pub const OWN_RECORD_LIFETIME_SECS: u64 = 2 * 3600;

/// What a node says about itself, and when it says it again.
struct Publication {
    username: Username,
    addresses: Vec<NodeAddress>,
    next: Instant,
    /// The `seq` of the last signing.
    seq: u64,
}

/// How often a node looks up its own id (so new neighbours learn of it and it of them),
/// refreshes one far region of its table, and syncs records with one of its neighbours.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// Discovery state of a node.
#[derive(Default)]
pub(super) struct State {
    /// Bootstrap pings sent to bare addresses, by transaction id.
    pings: HashMap<u64, SocketAddr>,
    next_ping: u64,
    /// When the next maintenance round is due (set once the node has a first contact).
    next_maintenance: Option<Instant>,
    /// This node's records as last published. A node publishes as it starts, often before any
    /// bootstrap peer has answered, and such a publish reaches no one: they are stored again
    /// when the first peer answers.
    own: Vec<SignedRecord>,
    /// Whether a bootstrap peer has answered yet.
    bootstrapped: bool,
    /// Set by `publish_self`.
    publication: Option<Publication>,
    /// Publishing lookups running, with how many records each stores.
    publishing: BTreeMap<LookupId, usize>,
    maintenance_rounds: u64,
    /// DHT datagrams dropped as invalid.
    pub dropped: u64,
    /// Wall clock, unix seconds (record validity).
    pub unix: u64,
}

impl Node {
    /// Sets the wall clock (unix seconds) used for record validity; call it as time passes.
    pub fn set_unix_time(&mut self, unix_now: u64) {
        self.discovery.unix = unix_now;
    }

    /// The DHT, for status and tests.
    pub fn dht(&self) -> &crate::dht::Dht {
        &self.dht
    }

    fn send_dht(&mut self, to: Contact, txid: u64, body: Body) -> bool {
        let message = Message {
            version: DHT_VERSION,
            txid,
            listen: None,
            body,
        };
        let Ok(bytes) = datagram::encode(&self.identity, &to.id, &message) else {
            return false;
        };
        let transmit = Transmit {
            destination: to.addr,
            ecn: None,
            size: bytes.len(),
            segment_size: None,
            src_ip: None,
        };
        self.queue_datagram(transmit, bytes)
    }

    /// Whether a bootstrap ping `txid` to `from` is unanswered.
    pub(super) fn discovery_awaits(&self, txid: u64, from: SocketAddr) -> bool {
        self.discovery.pings.get(&txid) == Some(&from)
    }

    pub(super) fn handle_dht_datagram(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) {
        let Ok((sender, message)) = datagram::decode(data, &self.node_id) else {
            self.discovery.dropped += 1;
            return;
        };
        let contact = Contact {
            id: sender,
            addr: remote,
        };
        let unix = self.discovery.unix;
        match message.body {
            Body::Request(request) => {
                let response = self.dht.handle_request(now, unix, contact, request);
                self.send_dht(contact, message.txid, Body::Response(response));
            }
            Body::Response(response) => {
                if let Some(addr) = self.discovery.pings.remove(&message.txid) {
                    if addr == remote && matches!(response, Response::Pong) {
                        self.dht.add_contact(contact, now);
                        let local = self.node_id;
                        let _ = self.dht.start(now, local, Purpose::FindNode);
                        // First contact: exchange digests, so records it holds that this node
                        // lacks (and the reverse) move without waiting for a lookup.
                        self.dht.start_sync(now, contact, 0);
                        self.arm_maintenance(now);
                        if !std::mem::replace(&mut self.discovery.bootstrapped, true) {
                            let own = std::mem::take(&mut self.discovery.own);
                            self.publish(now, &own);
                        }
                    }
                } else {
                    self.dht
                        .handle_response(now, unix, contact, message.txid, response);
                }
            }
        }
        self.drain_dht(now);
    }

    /// Sends what the DHT wants sent and acts on finished lookups.
    pub(super) fn drain_dht(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.dht.poll_outgoing() {
                progressed = true;
                if !self.send_dht(out.to, out.txid, Body::Request(out.request)) {
                    self.dht.handle_failure(now, out.txid);
                }
            }
            while let Some(result) = self.dht.poll_result() {
                progressed = true;
                self.on_lookup(now, result);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Enters the network through peers known only by address: each is pinged, and whoever
    /// answers becomes the first contact of a lookup for this node's own id.
    pub fn bootstrap(&mut self, peers: &[SocketAddr]) {
        for addr in peers {
            self.discovery.next_ping += 1;
            // High transaction ids for pings, so they never collide with the DHT's own.
            let txid = u64::MAX - self.discovery.next_ping;
            self.discovery.pings.insert(txid, *addr);
            self.send_dht(
                Contact {
                    id: ANYONE,
                    addr: *addr,
                },
                txid,
                Body::Request(Request::Ping),
            );
        }
    }

    /// Enters the network through peers known with their ids (from the registry).
    pub fn bootstrap_contacts(&mut self, now: Instant, peers: &[Contact]) {
        for c in peers {
            self.dht.add_contact(*c, now);
        }
        let local = self.node_id;
        let _ = self.dht.start(now, local, Purpose::FindNode);
        self.arm_maintenance(now);
        self.drain_dht(now);
    }

    fn arm_maintenance(&mut self, now: Instant) {
        let after = self.maintenance_every();
        self.discovery.next_maintenance.get_or_insert(now + after);
    }

    /// The wait before the next maintenance round: short while the node is new (5 s, doubling
    /// to [`MAINTENANCE_INTERVAL`]), because its first lookups ran when its bootstrap peer knew
    /// only who had joined before it. A node behind a NAT meets others only by its own lookups
    /// (nobody can add it first), and it needs contacts to learn its address from.
    fn maintenance_every(&self) -> Duration {
        match self.discovery.maintenance_rounds {
            r @ 0..7 => Duration::from_secs(5 << r),
            _ => MAINTENANCE_INTERVAL,
        }
    }

    /// When the next maintenance round is due.
    pub(super) fn maintenance_timeout(&self) -> Option<Instant> {
        self.discovery.next_maintenance
    }

    /// One maintenance round, if due: a lookup for our own id, one for an id in a region that
    /// rotates round by round (bucket refresh without a random source), and a digest sync with
    /// the next of our closest neighbours, over a window of our records that rotates too.
    pub(super) fn maintain(&mut self, now: Instant) {
        if self.discovery.next_maintenance.is_none_or(|t| t > now) {
            return;
        }
        self.refresh_directory(now);
        let round = self.discovery.maintenance_rounds;
        self.discovery.maintenance_rounds += 1;
        self.discovery.next_maintenance = Some(now + self.maintenance_every());
        let local = self.node_id;
        let _ = self.dht.start(now, local, Purpose::FindNode);
        let mut h = blake3::Hasher::new();
        h.update(b"vx6/refresh\0");
        h.update(local.as_bytes());
        h.update(&round.to_le_bytes());
        let far = NodeId::from_bytes(*h.finalize().as_bytes());
        let _ = self.dht.start(now, far, Purpose::FindNode);
        let neighbours = self.dht.table().closest(&local, self.dht.config().lookup.k);
        if !neighbours.is_empty() {
            let peer = neighbours[round as usize % neighbours.len()];
            let cursor = (round as usize).wrapping_mul(MAX_DIGEST);
            self.dht.start_sync(now, peer, cursor);
        }
        self.drain_dht(now);
    }

    /// A session came up with `peer`: if its DHT address is known from the session (QUIC
    /// shares the UDP port; a TCP session this node dialed went to the node's listen port),
    /// exchange record digests with it.
    pub(super) fn sync_on_session(&mut self, now: Instant, peer: NodeId, addr: Option<SocketAddr>) {
        let Some(addr) = addr else {
            return;
        };
        self.dht.start_sync(now, Contact { id: peer, addr }, 0);
        self.drain_dht(now);
    }

    /// Publishes this node's records (its addresses, its services by name, its claim to
    /// `username`) now, and again every [`REPUBLISH_INTERVAL`] with a new `seq`. With no
    /// addresses there is no node record, and nobody can reach the node by name. Call it again
    /// when the addresses change, and [`Node::republish`] when the services do.
    pub fn publish_self(&mut self, now: Instant, username: Username, addresses: Vec<NodeAddress>) {
        let seq = self.discovery.publication.as_ref().map_or(0, |p| p.seq);
        self.discovery.publication = Some(Publication {
            username,
            addresses,
            next: now,
            seq,
        });
        self.republish(now);
    }

    /// Signs and stores this node's records again now (after its services changed); a no-op
    /// before [`Node::publish_self`].
    pub fn republish(&mut self, now: Instant) {
        let Some(p) = &mut self.discovery.publication else {
            return;
        };
        p.next = now + REPUBLISH_INTERVAL;
        // The unix second, unless this second already signed (addresses and home relays can
        // change within one): a second record under one seq would be refused as equivocation.
        p.seq = self.discovery.unix.max(p.seq + 1);
        let signed = OwnRecords {
            identity: &self.identity,
            username: &p.username,
            addresses: p.addresses.clone(),
            services: self.services.iter().map(|(s, _)| s.clone()).collect(),
            relay: self
                .circuits
                .config
                .enabled
                .then(|| crate::record::RelayCapability {
                    max_circuits: self.circuits.config.limits.max_circuits,
                    operator: self.circuits.config.operator.clone(),
                }),
            via: self.home.published.clone(),
        }
        .sign(p.seq, self.discovery.unix, OWN_RECORD_LIFETIME_SECS);
        self.publish(now, &signed);
    }

    /// When this node's records are due to be published again.
    pub(super) fn republish_timeout(&self) -> Option<Instant> {
        self.discovery.publication.as_ref().map(|p| p.next)
    }

    /// Stores signed records (this node's own) at the nodes closest to their keys.
    pub fn publish(&mut self, now: Instant, records: &[SignedRecord]) {
        self.discovery.own = records.to_vec();
        let mut by_key: BTreeMap<NodeId, Vec<SignedRecord>> = BTreeMap::new();
        for r in records {
            by_key.entry(r.dht_key()).or_default().push(r.clone());
        }
        let unix = self.discovery.unix;
        for batch in by_key.values().flat_map(|v| v.chunks(STORE_BATCH)) {
            if let Ok(Some(lookup)) = self.dht.publish(now, unix, batch) {
                self.discovery.publishing.insert(lookup, batch.len());
            }
        }
        self.drain_dht(now);
    }

    /// Resolves `target`; the answer arrives as [`Event::Resolved`] with the returned id.
    pub fn resolve(&mut self, now: Instant, target: Target) -> u64 {
        let id = self.resolver.start(now, target, None, &mut self.dht);
        self.drain_resolver(now);
        self.drain_dht(now);
        id
    }

    /// Opens a stream to `target`'s service once its name resolves.
    pub fn open_stream_by_name(
        &mut self,
        now: Instant,
        target: Target,
        transport: Transport,
    ) -> StreamHandle {
        self.open_stream_by_name_routed(now, target, transport, Route::Direct)
    }

    /// As [`Node::open_stream_by_name`], reaching the owner by `route`.
    pub fn open_stream_by_name_routed(
        &mut self,
        now: Instant,
        target: Target,
        transport: Transport,
        route: Route,
    ) -> StreamHandle {
        let service: ServiceName = target.name.service.clone();
        let mut st = ServiceStream::client(SessionId(0), service, now);
        st.phase = Phase::AwaitResolve;
        let handle = match self.new_client_stream(st) {
            Ok(handle) => handle,
            Err(refused) => return refused,
        };
        let waiter = Some((handle, transport, route));
        self.resolver.start(now, target, waiter, &mut self.dht);
        self.drain_resolver(now);
        self.drain_dht(now);
        handle
    }

    /// Acts on what the resolver has to say: answers, pins, and the streams that waited.
    fn drain_resolver(&mut self, now: Instant) {
        while let Some(output) = self.resolver.poll() {
            match output {
                resolver::Output::Pinned { username, node } => {
                    self.events.push_back(Event::NamePinned {
                        username: username.to_string(),
                        node,
                    });
                }
                resolver::Output::Resolved {
                    id,
                    target,
                    answer,
                    waiting,
                } => {
                    self.events.push_back(Event::Resolved {
                        id,
                        name: target.to_string(),
                        result: answer.clone(),
                    });
                    for (handle, transport, route) in waiting {
                        self.resolved_stream(now, handle, transport, route, &target, &answer);
                    }
                }
            }
        }
    }

    /// A stream's name resolved (or did not): it dials, or fails.
    fn resolved_stream(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        transport: Transport,
        route: Route,
        target: &Target,
        answer: &resolver::Answer,
    ) {
        let found = match answer {
            Ok((node, addrs)) => addrs
                .iter()
                .find(|a| a.transport == transport)
                .map(|a| (*node, a.addr))
                .ok_or_else(|| {
                    Failure::new(
                        Cause::NameNotFound,
                        format!("{target} has no {transport:?} address"),
                    )
                }),
            Err(failure) => Err(failure.clone()),
        };
        match found {
            Ok((node, addr)) => {
                let dial = Dial {
                    addr,
                    transport,
                    expected: Some(node),
                };
                self.route_stream(now, handle, &dial, route);
            }
            Err(failure) => {
                self.forget(handle);
                self.events.push_back(Event::StreamFailed {
                    stream: handle,
                    failure,
                });
            }
        }
    }

    fn on_lookup(&mut self, now: Instant, result: LookupResult) {
        // Verified records name keys (to seal circuit layers to) and relays.
        self.learn_records(now, &result.records);
        if self.aliases_on_lookup(&result) {
            return;
        }
        if let Some(records) = self.discovery.publishing.remove(&result.id) {
            self.events.push_back(Event::Published {
                key: result.target,
                records,
                stored_at: result.stored_at,
            });
            return;
        }
        if self
            .resolver
            .handle_lookup(now, &result, &mut self.dht, &mut self.pins)
        {
            self.drain_resolver(now);
        }
    }
}
