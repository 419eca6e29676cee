//! An iterative Kademlia lookup as a state machine, over one or several disjoint paths
//! (S/Kademlia): each path keeps its own candidates, and a node is queried by one path only, so
//! an adversary must sit on every path to fool the lookup. Disjointness is claimed when a node
//! is queried, not when it is first heard of: otherwise a path whose candidates were flooded by
//! colluding nodes would also capture, and never query, the honest nodes other paths need.
//!
//! The caller asks [`Lookup::next_query`] whom to query, and reports each answer or failure.
//! A path is done when its `k` closest known candidates that have not failed have all answered,
//! or when it has sent [`LookupConfig::max_queries`] queries: ids cost an attacker nothing, so
//! answers full of ever-closer made-up contacts could otherwise keep a lookup going for ever.
//! A path at its budget sends nothing more and ends with what has answered.

use std::collections::{BTreeMap, HashSet};

use super::contact::Contact;
use super::distance::Distance;
use crate::identity::NodeId;

/// Parameters of a lookup.
#[derive(Debug, Clone, Copy)]
pub struct LookupConfig {
    /// Queries in flight per path (Kademlia's α).
    pub alpha: usize,
    /// Result size (Kademlia's k).
    pub k: usize,
    /// Disjoint paths.
    pub paths: usize,
    /// Queries one path may send. An ordinary lookup in a network of 100 000 nodes sends about
    /// 30 (p99; 45 with a fifth of the nodes dead), but a path of a disjoint lookup for the
    /// node's own id must go round the neighbours the other paths took: 80 cut some of those
    /// short in the simulator, the default of `8 × k` none.
    pub max_queries: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            alpha: 3,
            k: 20,
            paths: 1,
            max_queries: 160,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    state: State,
    /// Hop at which this candidate would be queried (seeds: 1).
    hop: u32,
}

#[derive(Debug, Clone, Default)]
struct Path {
    candidates: BTreeMap<Distance, Candidate>,
    in_flight: usize,
    sent: usize,
}

/// One lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: NodeId,
    local: NodeId,
    config: LookupConfig,
    paths: Vec<Path>,
    /// Every id some path has queried (for disjointness), and that path.
    owner: BTreeMap<NodeId, usize>,
    queried: u32,
    /// Deepest hop answered.
    max_hop: u32,
    bad: HashSet<NodeId>,
}

impl Lookup {
    /// Starts a lookup for `target` from `seeds` (the local table's closest), which are dealt
    /// out to the paths in turn. `local` is never queried.
    pub fn new(local: NodeId, target: NodeId, seeds: &[Contact], config: LookupConfig) -> Self {
        let paths = config.paths.max(1);
        let mut lookup = Self {
            target,
            local,
            config,
            paths: vec![Path::default(); paths],
            owner: BTreeMap::new(),
            queried: 0,
            max_hop: 0,
            bad: HashSet::new(),
        };
        for (i, seed) in seeds.iter().enumerate() {
            lookup.offer(i % paths, *seed, 1);
        }
        lookup
    }

    /// The target.
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn offer(&mut self, path: usize, contact: Contact, hop: u32) {
        if contact.id == self.local || self.bad.contains(&contact.id) {
            return;
        }
        // Another path already asked it: this path must not (disjointness).
        if self.owner.get(&contact.id).is_some_and(|p| *p != path) {
            return;
        }
        self.paths[path]
            .candidates
            .entry(Distance::between(&contact.id, &self.target))
            .or_insert(Candidate {
                contact,
                state: State::Waiting,
                hop,
            });
    }

    /// The next node to query, with its path, or `None` if every path has enough in flight or
    /// nothing useful is left to ask.
    pub fn next_query(&mut self) -> Option<Contact> {
        let (alpha, k, budget) = (self.config.alpha, self.config.k, self.config.max_queries);
        for (index, path) in self.paths.iter_mut().enumerate() {
            if path.sent >= budget {
                continue;
            }
            // Once the α closest candidates have answered, the search has converged: the rest
            // of the k closest are asked all at once instead of α at a time (Kademlia's final
            // round), which saves round trips without sending more queries.
            let converged = path
                .candidates
                .values()
                .filter(|c| c.state != State::Failed)
                .take(alpha)
                .all(|c| c.state == State::Answered);
            let parallel = if converged { k } else { alpha };
            if path.in_flight >= parallel {
                continue;
            }
            // Only the k closest candidates that have not failed are worth asking; one that
            // another path has asked in the meantime is out of this path.
            loop {
                let pick = path
                    .candidates
                    .values_mut()
                    .filter(|c| c.state != State::Failed)
                    .take(k)
                    .find(|c| c.state == State::Waiting);
                let Some(c) = pick else {
                    break;
                };
                if self.owner.contains_key(&c.contact.id) {
                    c.state = State::Failed;
                    continue;
                }
                self.owner.insert(c.contact.id, index);
                c.state = State::InFlight;
                path.in_flight += 1;
                path.sent += 1;
                self.queried += 1;
                return Some(c.contact);
            }
        }
        None
    }

    fn find(&mut self, id: &NodeId) -> Option<(usize, &mut Candidate)> {
        let path = *self.owner.get(id)?;
        let d = Distance::between(id, &self.target);
        self.paths[path].candidates.get_mut(&d).map(|c| (path, c))
    }

    /// `from` answered with `closer` contacts.
    pub fn on_answer(&mut self, from: &NodeId, closer: &[Contact]) {
        let Some((path, c)) = self.find(from) else {
            return;
        };
        if c.state != State::InFlight {
            return;
        }
        c.state = State::Answered;
        let answered = c.hop;
        let hop = answered + 1;
        self.max_hop = self.max_hop.max(answered);
        self.paths[path].in_flight -= 1;
        // Paths that got no seed (a joining node knows one peer) take their share of the
        // first answer, so that they are disjoint from the start rather than never used.
        let idle: Vec<usize> = (0..self.paths.len())
            .filter(|p| *p != path && self.paths[*p].candidates.is_empty())
            .collect();
        for (i, contact) in closer.iter().enumerate() {
            let to = match i % (idle.len() + 1) {
                0 => path,
                n => idle[n - 1],
            };
            self.offer(to, *contact, hop);
        }
    }

    /// The query to `from` failed (timeout, no session) or its answer was invalid.
    pub fn on_failure(&mut self, from: &NodeId) {
        let Some((path, c)) = self.find(from) else {
            return;
        };
        let was_in_flight = c.state == State::InFlight;
        c.state = State::Failed;
        if was_in_flight {
            self.paths[path].in_flight -= 1;
        }
    }

    /// Marks `id` as misbehaving: never queried, never returned.
    pub fn blame(&mut self, id: &NodeId) {
        self.bad.insert(*id);
        self.on_failure(id);
    }

    /// Whether every path has finished.
    pub fn is_done(&self) -> bool {
        let (k, budget) = (self.config.k, self.config.max_queries);
        self.paths.iter().all(|p| {
            p.in_flight == 0
                && (p.sent >= budget
                    || p.candidates
                        .values()
                        .filter(|c| c.state != State::Failed)
                        .take(k)
                        .all(|c| c.state == State::Answered))
        })
    }

    /// The `k` closest nodes that answered, over all paths, closest first.
    pub fn closest(&self) -> Vec<Contact> {
        let mut all: Vec<(Distance, Contact)> = self
            .paths
            .iter()
            .flat_map(|p| p.candidates.iter())
            .filter(|(_, c)| c.state == State::Answered)
            .map(|(d, c)| (*d, c.contact))
            .collect();
        all.sort_by_key(|(d, _)| *d);
        all.truncate(self.config.k);
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// Queries sent so far.
    pub fn queries(&self) -> u32 {
        self.queried
    }

    /// Deepest hop that answered so far: the rounds the lookup waited for (queries still in
    /// flight when it ends cost no time).
    pub fn hops(&self) -> u32 {
        self.max_hop
    }
}
