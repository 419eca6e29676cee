//! The simulated network: nodes, latency, loss, handshakes, adversaries, and the event loop.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use vx6_core::NodeId;
use vx6_core::dht::message::MAX_CONTACTS;
use vx6_core::dht::{Contact, Dht, DhtConfig, Distance, LookupResult, Request, Response};

/// Unix time at virtual time zero (record validity is checked against it).
pub const UNIX_EPOCH_AT_START: u64 = 1_800_000_000;

/// How a simulated node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol.
    Honest,
    /// Never answers (a silently dead or dropping node).
    Silent,
    /// Answers every lookup with the adversaries closest to the target, and hides values.
    Colluding,
}

/// Network model parameters.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Seed for everything random.
    pub seed: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Peers a node keeps sessions with (LRU); talking to anyone else first costs a handshake
    /// round trip. `usize::MAX` means no handshakes at all (self-authenticated datagram RPCs).
    pub warm_pool: usize,
    /// DHT settings of every node.
    pub dht: DhtConfig,
}

struct Node {
    dht: Dht,
    contact: Contact,
    alive: bool,
    behavior: Behavior,
    /// Position in a 100 ms × 100 ms plane; RTT = 5 ms + distance.
    coord: (f32, f32),
    warm: VecDeque<u32>,
    timer_at: Option<u64>,
}

enum Event {
    Request {
        to: u32,
        from: u32,
        txid: u64,
        request: Request,
    },
    Response {
        to: u32,
        from: u32,
        txid: u64,
        response: Response,
    },
    Timer {
        node: u32,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A finished lookup with the node that ran it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The node that ran it.
    pub node: u32,
    /// The result.
    pub result: LookupResult,
}

/// The simulation.
pub struct Net {
    config: NetConfig,
    base: Instant,
    now_us: u64,
    nodes: Vec<Node>,
    index: HashMap<NodeId, u32>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    rng: ChaCha8Rng,
    trace: blake3::Hasher,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages sent (including lost and undeliverable ones).
    pub sent: u64,
    /// Events processed.
    pub events: u64,
    phase_start_events: u64,
    finished: Vec<Finished>,
    adversaries: Vec<u32>,
    /// Live honest nodes sorted by id (ground truth for success checks), rebuilt after any
    /// node joins, dies or returns.
    honest_index: RefCell<Option<Vec<(NodeId, u32)>>>,
}

impl Net {
    /// An empty network.
    pub fn new(config: NetConfig) -> Self {
        // Virtual time starts at an arbitrary real instant; only differences matter.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Self {
            config,
            base,
            now_us: 0,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            trace: blake3::Hasher::new(),
            delivered: 0,
            sent: 0,
            events: 0,
            phase_start_events: 0,
            finished: Vec::new(),
            adversaries: Vec::new(),
            honest_index: RefCell::new(None),
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    /// Current virtual time in microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    fn unix(&self) -> u64 {
        UNIX_EPOCH_AT_START + self.now_us / 1_000_000
    }

    /// A random number from the simulation's RNG.
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A random id.
    pub fn random_id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut b);
        NodeId::from_bytes(b)
    }

    /// Adds a node with a random id; returns its index.
    pub fn add_node(&mut self, behavior: Behavior) -> u32 {
        let id = self.random_id();
        let i = self.nodes.len() as u32;
        let ip = Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i) << 64 | 1);
        let contact = Contact {
            id,
            addr: SocketAddr::from((ip, 4433)),
        };
        let coord = (
            (self.rng.next_u32() % 100_000) as f32 / 1000.0,
            (self.rng.next_u32() % 100_000) as f32 / 1000.0,
        );
        self.nodes.push(Node {
            dht: Dht::new(id, self.config.dht),
            contact,
            alive: true,
            behavior,
            coord,
            warm: VecDeque::new(),
            timer_at: None,
        });
        self.index.insert(id, i);
        self.honest_index.replace(None);
        if behavior == Behavior::Colluding {
            let pos = self
                .adversaries
                .partition_point(|a| self.nodes[*a as usize].contact.id < id);
            self.adversaries.insert(pos, i);
        }
        i
    }

    /// Changes every node's warm-session pool (see [`NetConfig::warm_pool`]).
    pub fn set_warm_pool(&mut self, size: usize) {
        self.config.warm_pool = size;
        for n in &mut self.nodes {
            while n.warm.len() > size {
                n.warm.pop_front();
            }
        }
    }

    /// Changes the number of disjoint paths of every node's lookups.
    pub fn set_paths(&mut self, paths: usize) {
        self.config.dht.lookup.paths = paths;
        let lookup = self.config.dht.lookup;
        for n in &mut self.nodes {
            n.dht.set_lookup_config(lookup);
        }
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node's contact.
    pub fn contact(&self, i: u32) -> Contact {
        self.nodes[i as usize].contact
    }

    /// The node's behaviour.
    pub fn behavior(&self, i: u32) -> Behavior {
        self.nodes[i as usize].behavior
    }

    /// Whether the node is up.
    pub fn alive(&self, i: u32) -> bool {
        self.nodes[i as usize].alive
    }

    /// Takes a node down silently (no goodbye); its state is kept for a later revival.
    pub fn kill(&mut self, i: u32) {
        self.nodes[i as usize].alive = false;
        self.honest_index.replace(None);
    }

    /// Brings a node back with a fresh DHT state (a restart) that knows only `via`.
    pub fn revive(&mut self, i: u32, via: Contact) {
        let now = self.now();
        let n = &mut self.nodes[i as usize];
        n.alive = true;
        self.honest_index.replace(None);
        n.dht = Dht::new(n.contact.id, self.config.dht);
        n.warm.clear();
        n.dht.add_contact(via, now);
    }

    /// Direct access to a node's DHT (to start lookups, publish, inspect).
    pub fn dht(&mut self, i: u32) -> &mut Dht {
        &mut self.nodes[i as usize].dht
    }

    /// Read-only access to a node's DHT.
    pub fn dht_ref(&self, i: u32) -> &Dht {
        &self.nodes[i as usize].dht
    }

    /// Round-trip time between two nodes, in microseconds.
    pub fn rtt_us(&self, a: u32, b: u32) -> u64 {
        let (x, y) = (self.nodes[a as usize].coord, self.nodes[b as usize].coord);
        let d = ((x.0 - y.0).powi(2) + (x.1 - y.1).powi(2)).sqrt();
        5_000 + (d * 1000.0) as u64
    }

    /// Mean RTT over `samples` random pairs, in microseconds (to express latency in RTTs).
    pub fn mean_rtt_us(&mut self, samples: usize) -> f64 {
        let n = self.nodes.len() as u64;
        let mut total = 0u64;
        for _ in 0..samples {
            let a = (self.random() % n) as u32;
            let b = (self.random() % n) as u32;
            total += self.rtt_us(a, b);
        }
        total as f64 / samples.max(1) as f64
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Whether `from` has a warm session to `to`; makes one (both ways) if not.
    fn warm_up(&mut self, from: u32, to: u32) -> bool {
        let cap = self.config.warm_pool;
        if cap == usize::MAX {
            return true;
        }
        let warm = self.nodes[from as usize].warm.iter().any(|p| *p == to);
        if warm {
            return true;
        }
        if cap == 0 {
            return false;
        }
        for (a, b) in [(from, to), (to, from)] {
            let w = &mut self.nodes[a as usize].warm;
            w.retain(|p| *p != b);
            if w.len() >= cap {
                w.pop_front();
            }
            w.push_back(b);
        }
        false
    }

    fn lost(&mut self) -> bool {
        self.config.loss > 0.0 && (self.rng.next_u32() as f64 / u32::MAX as f64) < self.config.loss
    }

    /// Sends everything node `i` wants to send, and collects its finished lookups.
    fn flush(&mut self, i: u32) {
        let now = self.now();
        while let Some(out) = self.nodes[i as usize].dht.poll_outgoing() {
            self.sent += 1;
            let Some(&to) = self.index.get(&out.to.id) else {
                continue; // a made-up contact: nobody answers
            };
            let one_way = self.rtt_us(i, to) / 2;
            let handshake = if self.warm_up(i, to) {
                0
            } else {
                self.rtt_us(i, to)
            };
            if self.lost() {
                continue;
            }
            self.schedule(
                self.now_us + handshake + one_way,
                Event::Request {
                    to,
                    from: i,
                    txid: out.txid,
                    request: out.request,
                },
            );
        }
        while let Some(result) = self.nodes[i as usize].dht.poll_result() {
            self.finished.push(Finished { node: i, result });
        }
        let want = self.nodes[i as usize]
            .dht
            .poll_timeout()
            // Rounded up: a timer that fires a fraction of a microsecond early would find
            // nothing due and be scheduled again at the same instant, forever.
            .map(|t| {
                t.saturating_duration_since(self.base)
                    .as_nanos()
                    .div_ceil(1000) as u64
            });
        if let Some(at) = want {
            let at = at.max(self.now_us);
            let node = &mut self.nodes[i as usize];
            if node.timer_at.is_none_or(|t| at < t || t < self.now_us) {
                node.timer_at = Some(at);
                self.schedule(at, Event::Timer { node: i });
            }
        }
        let _ = now;
    }

    /// Lets node `i` act now (after the caller started something on its DHT).
    pub fn poke(&mut self, i: u32) {
        self.flush(i);
    }

    /// The adversaries closest to `target`. Ids are kept sorted; the XOR-closest ids share the
    /// longest prefix with the target and sit around its position in sorted order, so a window
    /// there, re-sorted by distance, gives them without scanning every adversary.
    fn colluding_answer(&self, target: &NodeId, asker: u32) -> Vec<Contact> {
        const WINDOW: usize = 4 * MAX_CONTACTS;
        let pos = self
            .adversaries
            .partition_point(|a| self.nodes[*a as usize].contact.id < *target);
        let lo = pos.saturating_sub(WINDOW);
        let hi = (pos + WINDOW).min(self.adversaries.len());
        let mut adv: Vec<(Distance, Contact)> = self.adversaries[lo..hi]
            .iter()
            .filter(|a| **a != asker)
            .map(|a| {
                let c = self.nodes[*a as usize].contact;
                (Distance::between(&c.id, target), c)
            })
            .collect();
        adv.sort_by_key(|(d, _)| *d);
        adv.truncate(MAX_CONTACTS);
        adv.into_iter().map(|(_, c)| c).collect()
    }

    fn trace(&mut self, kind: u8, from: u32, to: u32, txid: u64) {
        self.trace.update(&self.now_us.to_le_bytes());
        self.trace.update(&[kind]);
        self.trace.update(&from.to_le_bytes());
        self.trace.update(&to.to_le_bytes());
        self.trace.update(&txid.to_le_bytes());
    }

    /// Processes events until virtual time `until_us`, then sets the clock there.
    pub fn run_until(&mut self, until_us: u64) {
        self.process(until_us);
        self.now_us = self.now_us.max(until_us);
    }

    /// Processes every event with a time up to `until_us`; the clock stays at the last one.
    fn process(&mut self, until_us: u64) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until_us {
                break;
            }
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.now_us = s.at;
            self.events += 1;
            let now = self.now();
            let unix = self.unix();
            match s.event {
                Event::Timer { node } => {
                    let n = &mut self.nodes[node as usize];
                    if n.timer_at == Some(s.at) {
                        n.timer_at = None;
                    }
                    if n.alive {
                        n.dht.handle_timeout(now);
                        self.flush(node);
                    }
                }
                Event::Request {
                    to,
                    from,
                    txid,
                    request,
                } => {
                    self.delivered += 1;
                    self.trace(1, from, to, txid);
                    let node = &self.nodes[to as usize];
                    if !node.alive || node.behavior == Behavior::Silent {
                        continue;
                    }
                    let response = match (node.behavior, &request) {
                        (Behavior::Colluding, Request::FindNode { target })
                        | (Behavior::Colluding, Request::FindValue { key: target }) => {
                            let closer = self.colluding_answer(target, from);
                            if matches!(request, Request::FindNode { .. }) {
                                Response::Nodes { closer }
                            } else {
                                Response::Value {
                                    records: Vec::new(),
                                    closer,
                                }
                            }
                        }
                        _ => {
                            let from_contact = self.nodes[from as usize].contact;
                            self.nodes[to as usize].dht.handle_request(
                                now,
                                unix,
                                from_contact,
                                request,
                            )
                        }
                    };
                    if self.lost() {
                        continue;
                    }
                    let back = self.now_us + self.rtt_us(from, to) / 2;
                    self.schedule(
                        back,
                        Event::Response {
                            to: from,
                            from: to,
                            txid,
                            response,
                        },
                    );
                    self.flush(to);
                }
                Event::Response {
                    to,
                    from,
                    txid,
                    response,
                } => {
                    self.delivered += 1;
                    self.trace(2, from, to, txid);
                    if !self.nodes[to as usize].alive {
                        continue;
                    }
                    let from_contact = self.nodes[from as usize].contact;
                    self.nodes[to as usize].dht.handle_response(
                        now,
                        unix,
                        from_contact,
                        txid,
                        response,
                    );
                    self.flush(to);
                }
            }
        }
    }

    /// Runs until no event is left; the clock stops at the last event.
    pub fn run_to_idle(&mut self) {
        self.process(u64::MAX);
    }

    /// Events processed since the last call (per-phase figures).
    pub fn take_phase_events(&mut self) -> u64 {
        let n = self.events - self.phase_start_events;
        self.phase_start_events = self.events;
        n
    }

    /// Takes the lookups finished so far.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Hash of every message delivered so far, with its time: equal hashes mean equal runs.
    pub fn trace_hash(&self) -> String {
        self.trace.clone().finalize().to_hex().to_string()
    }

    /// Index of a node by id.
    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The live honest node closest to `target` other than `asker` (ground truth for success
    /// checks: a lookup never returns the node that runs it).
    pub fn true_closest(&self, target: &NodeId, asker: u32) -> Option<NodeId> {
        let mut index = self.honest_index.borrow_mut();
        let sorted = index.get_or_insert_with(|| {
            let mut v: Vec<(NodeId, u32)> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive && n.behavior == Behavior::Honest)
                .map(|(i, n)| (n.contact.id, i as u32))
                .collect();
            v.sort_unstable();
            v
        });
        // The XOR-closest ids share the longest prefix with the target: a run of sorted order
        // at the target's position. A window there holds that run unless its edges still share
        // as long a prefix, in which case the whole list is scanned.
        const WINDOW: usize = 64;
        let pos = sorted.partition_point(|(id, _)| id < target);
        let lo = pos.saturating_sub(WINDOW);
        let hi = (pos + WINDOW).min(sorted.len());
        let best = |range: &[(NodeId, u32)]| {
            range
                .iter()
                .filter(|(_, i)| *i != asker)
                .map(|(id, _)| (Distance::between(id, target), *id))
                .min()
        };
        let found = best(&sorted[lo..hi])?;
        let prefix = found.0.leading_zeros();
        let edge_shares =
            |k: usize| Distance::between(&sorted[k].0, target).leading_zeros() >= prefix;
        if (lo > 0 && edge_shares(lo)) || (hi < sorted.len() && edge_shares(hi - 1)) {
            return best(sorted).map(|(_, id)| id);
        }
        Some(found.1)
    }
}
