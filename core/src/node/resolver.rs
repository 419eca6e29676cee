//! Resolution of `username.service` as its own state machine: two DHT lookups (the claims to
//! the name, then the chosen node's record), the pin rules of `crate::resolve`, and the streams
//! that wait for the answer. The node feeds it finished lookups and drains what it has to say
//! with [`Resolver::poll`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::StreamHandle;
use crate::dht::{Dht, LookupId, LookupResult, Purpose};
use crate::failure::{Cause, Failure};
use crate::identity::NodeId;
use crate::names::Username;
use crate::pins::Pins;
use crate::record::{NodeAddress, Record, Transport, name_key};
use crate::resolve::{Resolved, Target, choose};

/// A stream waiting for a resolution: how it then dials.
pub(super) type Waiter = (StreamHandle, Transport, super::Route);

/// What a resolution gives: the node and where it accepts sessions.
pub(super) type Answer = Result<(NodeId, Vec<NodeAddress>), Failure>;

enum Step {
    /// Looking up the claims to the name.
    Claims,
    /// The claims chose this node (on first use if `true`); looking up its node record.
    Node(NodeId, bool),
}

struct Resolution {
    id: u64,
    target: Target,
    step: Step,
}

/// What the resolver tells the node.
pub(super) enum Output {
    /// A resolution finished; `waiting` are the streams that were waiting for it.
    Resolved {
        id: u64,
        target: Target,
        answer: Answer,
        waiting: Vec<Waiter>,
    },
    /// A name resolved for the first time was pinned (persist it).
    Pinned { username: Username, node: NodeId },
}

/// Resolutions in progress. Each holds one DHT lookup at a time, and the DHT bounds the
/// lookups that run at once (a resolution it refuses ends at once with `limit_reached`).
#[derive(Default)]
pub(super) struct Resolver {
    resolutions: BTreeMap<LookupId, Resolution>,
    next_id: u64,
    /// Streams waiting for a resolution, with their transport.
    waiting: BTreeMap<u64, Vec<Waiter>>,
    out: VecDeque<Output>,
    /// Recent answers, by name, for the streams that follow: a forward resolves its name for
    /// every connection, and two DHT lookups each time would cost every connection milliseconds.
    cache: HashMap<String, (Instant, (NodeId, Vec<NodeAddress>))>,
}

/// How long an answer serves new streams to the same name.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Names whose answers are kept at most.
const CACHE_MAX: usize = 1024;

impl Resolver {
    /// Starts resolving `target`, for `waiter` if a stream waits for it; the answer comes out of
    /// [`Resolver::poll`] with the returned id.
    pub fn start(
        &mut self,
        now: Instant,
        target: Target,
        waiter: Option<Waiter>,
        dht: &mut Dht,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let cached = waiter
            .is_some()
            .then(|| self.cache.get(&target.to_string()))
            .flatten();
        if let Some((at, answer)) = cached
            && now.saturating_duration_since(*at) < CACHE_TTL
        {
            let answer = answer.clone();
            self.waiting.insert(id, waiter.into_iter().collect());
            self.finish(id, target, Ok(answer));
            return id;
        }
        if let Some(waiter) = waiter {
            self.waiting.insert(id, vec![waiter]);
        }
        let key = name_key(&target.name.username);
        self.lookup(now, id, target, Step::Claims, key, dht);
        id
    }

    fn lookup(
        &mut self,
        now: Instant,
        id: u64,
        target: Target,
        step: Step,
        key: NodeId,
        dht: &mut Dht,
    ) {
        match dht.start(now, key, Purpose::FindValue) {
            Ok(lookup) => {
                self.resolutions
                    .insert(lookup, Resolution { id, target, step });
            }
            Err(e) => self.finish(id, target, Err(e.into())),
        }
    }

    fn finish(&mut self, id: u64, target: Target, answer: Answer) {
        let waiting = self.waiting.remove(&id).unwrap_or_default();
        self.out.push_back(Output::Resolved {
            id,
            target,
            answer,
            waiting,
        });
    }

    /// A DHT lookup finished; returns whether it was one of the resolver's.
    pub fn handle_lookup(
        &mut self,
        now: Instant,
        result: &LookupResult,
        dht: &mut Dht,
        pins: &mut Pins,
    ) -> bool {
        let Some(res) = self.resolutions.remove(&result.id) else {
            return false;
        };
        match res.step {
            Step::Claims => {
                let pinned = pins.get_name(&res.target.name.username);
                match choose(&res.target, &result.records, pinned) {
                    Ok(resolved) => {
                        let first_use = matches!(resolved, Resolved::FirstUse(_));
                        let node = resolved.node();
                        let step = Step::Node(node, first_use);
                        self.lookup(now, res.id, res.target, step, node, dht);
                    }
                    Err(e) => self.finish(res.id, res.target, Err(e.into())),
                }
            }
            Step::Node(node, first_use) => {
                let addrs: Vec<NodeAddress> = result
                    .records
                    .iter()
                    .filter(|r| r.owner() == node)
                    .filter_map(|r| match r.record() {
                        Record::Node(n) => Some(n.addresses.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if addrs.is_empty() {
                    let failure = Failure::new(
                        Cause::NameNotFound,
                        format!(
                            "{} resolved to node {node}, but its address was not found",
                            res.target
                        ),
                    );
                    self.finish(res.id, res.target, Err(failure));
                    return true;
                }
                let username = res.target.name.username.clone();
                if first_use && pins.insert_name(username.clone(), node) {
                    self.out.push_back(Output::Pinned { username, node });
                }
                if self.cache.len() >= CACHE_MAX {
                    self.cache
                        .retain(|_, (at, _)| now.saturating_duration_since(*at) < CACHE_TTL);
                    if self.cache.len() >= CACHE_MAX {
                        self.cache.clear();
                    }
                }
                self.cache
                    .insert(res.target.to_string(), (now, (node, addrs.clone())));
                self.finish(res.id, res.target, Ok((node, addrs)));
            }
        }
        true
    }

    /// Next thing the node must act on.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}
