//! Which address this node is seen at: it asks DHT contacts now and then (a probe with the
//! observe flag, to the address the contact is known at, with an unpredictable nonce), keeps
//! one answer per contact, and publishes the address enough of them agree on
//! ([`crate::reach::Observations`]). The same probe asks the contact to dial the node back
//! from a fresh port, which tells whether anything stands in front of it
//! ([`crate::reach::DialBacks`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Event, Node};
use crate::reach::{DialBacks, Mapping, Observations, Verdict};
use crate::relay::header::{self, PROBE_DIAL_BACK_COMING};

/// How often contacts are asked once enough have agreed.
const EVERY: Duration = Duration::from_secs(60);
/// How often they are asked while no address is agreed (too few answers, or no majority).
const EVERY_AT_START: Duration = Duration::from_secs(5);
/// Contacts asked per round.
const PER_ROUND: usize = 8;
/// How long an answer, and a dial-back, are waited for.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Dial-backs this node has yet to send, at most (the runtime sends each from a new socket).
pub(super) const MAX_DIAL_BACKS: usize = 16;

/// A question in flight.
struct Question {
    /// Where it went.
    to: SocketAddr,
    sent: Instant,
    /// Answered, and whether the answer promised a dial-back.
    answered: Option<bool>,
    /// A dial-back arrived.
    dialed: bool,
}

#[derive(Default)]
pub(super) struct State {
    observations: Observations,
    dial_backs: DialBacks,
    /// Questions in flight, by nonce.
    outstanding: BTreeMap<u64, Question>,
    /// Dial-backs owed to others: (to, datagram).
    pub(super) to_dial_back: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    next_at: Option<Instant>,
    /// This node's own addresses, with the port it listens on (from the runtime).
    local: Vec<SocketAddr>,
    agreed: Vec<SocketAddr>,
}

impl Node {
    /// Tells the node its own addresses (interface addresses with the port it listens on), so
    /// it can tell a translated address from its own.
    pub fn set_local_addresses(&mut self, addresses: Vec<SocketAddr>) {
        let mut families: Vec<bool> = addresses.iter().map(SocketAddr::is_ipv4).collect();
        families.sort_unstable();
        families.dedup();
        self.circuits.directory.set_families(families);
        self.observe.local = addresses;
    }

    /// The addresses enough peers agree they see this node at (at most one per family).
    pub fn observed_addresses(&self) -> &[SocketAddr] {
        &self.observe.agreed
    }

    /// The public IP address enough peers agree they see this node at in a family (`true`:
    /// IPv4), whatever ports they saw.
    pub(super) fn public_ip(&self, v4: bool) -> Option<std::net::IpAddr> {
        self.observe.observations.agreed_ip(v4)
    }

    /// What the observations say about the path out, per address family (`true`: IPv4), and
    /// how many peers answered.
    pub fn reachability(&self) -> (Vec<(bool, Mapping)>, usize) {
        let o = &self.observe;
        (o.observations.mapping(&o.local), o.observations.len())
    }

    /// Whether peers can dial this node, per address family (`true`: IPv4), as their
    /// dial-backs say.
    pub fn dial_back_verdicts(&self) -> Vec<(bool, Verdict)> {
        self.observe.dial_backs.verdicts()
    }

    /// One of this node's own addresses in the family (`true`: IPv4), if peers' dial-backs
    /// show it can be dialed there: an address to give for hole punching before enough
    /// peers have agreed on an observed one.
    pub(super) fn own_dialable_address(&self, v4: bool) -> Option<SocketAddr> {
        let untranslated = self
            .observe
            .observations
            .mapping(&self.observe.local)
            .contains(&(v4, Mapping::None));
        // Reachable through a forwarded port is no reason to hand out a private address.
        if self.observe.dial_backs.verdict(v4) != Verdict::Reachable || !untranslated {
            return None;
        }
        self.observe
            .local
            .iter()
            .find(|a| a.is_ipv4() == v4)
            .copied()
    }

    /// A dial-back this node owes a peer: the runtime sends `datagram` to the address from a
    /// new UDP socket on an ephemeral port, then closes it. Sending it from the node's own
    /// socket would prove nothing (the peer's NAT expects that one).
    pub fn poll_dial_back(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.observe.to_dial_back.pop_front()
    }

    pub(super) fn observe_next_timeout(&self) -> Option<Instant> {
        // The first round is armed as soon as the node has contacts (at the last input).
        let round = self
            .observe
            .next_at
            .or_else(|| (!self.dht.table().is_empty()).then_some(self.circuits.clock));
        let settle = self
            .observe
            .outstanding
            .values()
            .map(|q| q.sent + ANSWER_WITHIN)
            .min();
        round.into_iter().chain(settle).min()
    }

    fn shuffle(&mut self, v: &mut [SocketAddr]) {
        for i in (1..v.len()).rev() {
            let j = (self.circuits.random_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    /// Closes the questions whose time is up: a peer that answered and promised a dial-back
    /// counts, whether its dial-back came or not.
    fn settle_questions(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .observe
            .outstanding
            .iter()
            .filter(|(_, q)| now.saturating_duration_since(q.sent) >= ANSWER_WITHIN)
            .map(|(n, _)| *n)
            .collect();
        let before = self.observe.dial_backs.verdicts();
        for nonce in due {
            let Some(q) = self.observe.outstanding.remove(&nonce) else {
                continue;
            };
            if q.answered == Some(true) {
                self.observe.dial_backs.record(q.to.ip(), q.dialed, now);
            }
        }
        self.observe.dial_backs.expire(now);
        if self.observe.dial_backs.verdicts() != before {
            self.events.push_back(Event::Reachability {
                verdicts: self.observe.dial_backs.verdicts(),
            });
            self.home_relays_wanted(now);
            // Managed links waiting for a direct path may now have an address to give.
            self.punch_waiting_links(now);
        }
    }

    /// A dial-back arrived from `from`: it counts if it answers a question this node asked
    /// that peer, and came from another port than the one asked (the one the node's NAT or
    /// firewall would let in).
    pub(super) fn dialed_back(&mut self, from: SocketAddr, nonce: u64) {
        if let Some(q) = self.observe.outstanding.get_mut(&nonce)
            && q.to.ip() == from.ip()
            && q.to.port() != from.port()
        {
            q.dialed = true;
        }
    }

    /// Asks a round of contacts when one is due.
    pub(super) fn observe_timeout(&mut self, now: Instant) {
        self.settle_questions(now);
        let Some(at) = self.observe.next_at else {
            if !self.dht.table().is_empty() {
                self.observe.next_at = Some(now + Duration::from_secs(1));
            }
            return;
        };
        if at > now {
            return;
        }
        self.observe.observations.expire(now);
        // DHT contacts, and the relays the node knows from signed records: the routing table
        // keeps few contacts per prefix (against eclipses), which on a small network can
        // leave fewer than the answers an agreement needs.
        // Anyone can publish a relay record, so relays only fill the places the table leaves,
        // and at most half of a round: they cannot outvote the table's contacts.
        let mut table: Vec<SocketAddr> = Vec::new();
        for c in self.dht.table().contacts() {
            if !table.iter().any(|a| a.ip() == c.addr.ip()) {
                table.push(c.addr);
            }
        }
        let me = self.node_id;
        let mut relays: Vec<SocketAddr> = Vec::new();
        for (_, r) in self.circuits.directory.iter().filter(|(n, _)| **n != me) {
            if !table.iter().chain(&relays).any(|a| a.ip() == r.addr.ip()) {
                relays.push(r.addr);
            }
        }
        // A different draw each round, so one stale corner of the table is not all it hears.
        self.shuffle(&mut table);
        self.shuffle(&mut relays);
        table.truncate(PER_ROUND);
        let room = (PER_ROUND - table.len()).min(PER_ROUND / 2);
        relays.truncate(room);
        for addr in table.into_iter().chain(relays) {
            let nonce = self.circuits.random_u64();
            let probe = header::dial_back_probe(nonce);
            let t = quinn_proto::Transmit {
                destination: addr,
                ecn: None,
                size: probe.len(),
                segment_size: None,
                src_ip: None,
            };
            if self.queue_datagram(t, probe) {
                let q = Question {
                    to: addr,
                    sent: now,
                    answered: None,
                    dialed: false,
                };
                self.observe.outstanding.insert(nonce, q);
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
        let (flags, nonce) = header::probe_body(reply);
        match self.observe.outstanding.get_mut(&nonce) {
            Some(q) if q.to == from && q.answered.is_none() => {
                q.answered = Some(flags & PROBE_DIAL_BACK_COMING != 0);
            }
            _ => return false,
        }
        let Some(seen) = header::observed(reply) else {
            return true;
        };
        let punchable = |n: &Self| [n.punch_address(false), n.punch_address(true)];
        let before = punchable(self);
        self.observe.observations.record(from.ip(), seen, now);
        let agreed = self.observe.observations.agreed();
        if agreed != self.observe.agreed {
            self.observe.agreed = agreed.clone();
            self.events
                .push_back(Event::AddressesObserved { addresses: agreed });
        }
        if punchable(self) != before {
            // Managed links waiting for a direct path can now say where to punch to (an
            // agreed address, or the address alone behind a NAT that picks ports per peer).
            self.punch_waiting_links(now);
        }
        true
    }
}
