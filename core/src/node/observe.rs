//! Which address this node is seen at: it asks DHT contacts now and then (a probe with the
//! observe flag, to the address the contact is known at, with an unpredictable nonce), keeps
//! one answer per contact, and publishes the address enough of them agree on
//! ([`crate::reach::Observations`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Event, Node};
use crate::reach::{Mapping, Observations};
use crate::relay::header;

/// How often contacts are asked once enough have agreed.
const EVERY: Duration = Duration::from_secs(60);
/// How often they are asked while no address is agreed (too few answers, or no majority).
const EVERY_AT_START: Duration = Duration::from_secs(5);
/// Contacts asked per round.
const PER_ROUND: usize = 8;
/// How long an answer is waited for.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct State {
    observations: Observations,
    /// Questions in flight: nonce → (where it went, when).
    outstanding: BTreeMap<u64, (SocketAddr, Instant)>,
    next_at: Option<Instant>,
    /// This node's own addresses, with the port it listens on (from the runtime).
    local: Vec<SocketAddr>,
    agreed: Vec<SocketAddr>,
}

impl Node {
    /// Tells the node its own addresses (interface addresses with the port it listens on), so
    /// it can tell a translated address from its own.
    pub fn set_local_addresses(&mut self, addresses: Vec<SocketAddr>) {
        self.observe.local = addresses;
    }

    /// The addresses enough peers agree they see this node at (at most one per family).
    pub fn observed_addresses(&self) -> &[SocketAddr] {
        &self.observe.agreed
    }

    /// What the observations say about the path out, per address family (`true`: IPv4), and
    /// how many peers answered.
    pub fn reachability(&self) -> (Vec<(bool, Mapping)>, usize) {
        let o = &self.observe;
        (o.observations.mapping(&o.local), o.observations.len())
    }

    pub(super) fn observe_next_timeout(&self) -> Option<Instant> {
        // The first round is armed as soon as the node has contacts (at the last input).
        self.observe
            .next_at
            .or_else(|| (!self.dht.table().is_empty()).then_some(self.circuits.clock))
    }

    /// Asks a round of contacts when one is due.
    pub(super) fn observe_timeout(&mut self, now: Instant) {
        let Some(at) = self.observe.next_at else {
            if !self.dht.table().is_empty() {
                self.observe.next_at = Some(now + Duration::from_secs(1));
            }
            return;
        };
        if at > now {
            return;
        }
        self.observe
            .outstanding
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < ANSWER_WITHIN);
        self.observe.observations.expire(now);
        let mut contacts: Vec<SocketAddr> = Vec::new();
        for c in self.dht.table().contacts() {
            if !contacts.iter().any(|a| a.ip() == c.addr.ip()) {
                contacts.push(c.addr);
            }
        }
        // A different draw each round, so one stale corner of the table is not all it hears.
        for i in (1..contacts.len()).rev() {
            let j = (self.circuits.random_u64() % (i as u64 + 1)) as usize;
            contacts.swap(i, j);
        }
        for addr in contacts.into_iter().take(PER_ROUND) {
            let nonce = self.circuits.random_u64();
            let probe = header::observe_probe(nonce);
            let t = quinn_proto::Transmit {
                destination: addr,
                ecn: None,
                size: probe.len(),
                segment_size: None,
                src_ip: None,
            };
            if self.queue_datagram(t, probe) {
                self.observe.outstanding.insert(nonce, (addr, now));
            }
        }
        let every = match self.observe.agreed.is_empty() {
            true => EVERY_AT_START,
            false => EVERY,
        };
        self.observe.next_at = Some(now + every);
    }

    /// Whether the probe answer `reply` (from `from`) answers one of this node's questions;
    /// if so it is recorded, and a change of the agreed addresses is reported.
    pub(super) fn observe_answered(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reply: &[u8],
    ) -> bool {
        let (_, nonce) = header::probe_body(reply);
        match self.observe.outstanding.get(&nonce) {
            Some((to, _)) if *to == from => {}
            _ => return false,
        }
        self.observe.outstanding.remove(&nonce);
        let Some(seen) = header::observed(reply) else {
            return true;
        };
        self.observe.observations.record(from.ip(), seen, now);
        let agreed = self.observe.observations.agreed();
        if agreed != self.observe.agreed {
            self.observe.agreed = agreed.clone();
            self.events
                .push_back(Event::AddressesObserved { addresses: agreed });
            // Managed links waiting for a direct path can now say where to punch to.
            self.punch_waiting_links(now);
        }
        true
    }
}
