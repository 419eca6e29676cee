//! The relays a node knows: learned from signed node records (the DHT's store, the registry),
//! with the health and RTT its probes measured. Path selection draws its candidates from here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::path_select::Candidate;
use crate::identity::{NodeId, PublicKey};
use crate::names::OperatorName;
use crate::record::{Record, SignedRecord, Transport};

/// Relays remembered at most; a record past it is ignored until one is forgotten.
pub const MAX_RELAYS: usize = 1024;
/// How often each relay is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// A probe unanswered for this long failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// RTT assumed for a relay never measured (it never disqualifies one).
const RTT_ESTIMATE: Duration = Duration::from_millis(100);

/// What the node knows about one relay.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// Its key (circuit setup seals a layer to it).
    pub key: PublicKey,
    /// Where it accepts QUIC sessions and relay datagrams.
    pub addr: SocketAddr,
    /// Where it accepts TLS/TCP sessions, if it does (TCP-mode circuits).
    pub tcp_addr: Option<SocketAddr>,
    /// Who runs it, as it declares.
    pub operator: Option<OperatorName>,
    /// Probes and circuits through it that worked.
    pub successes: u32,
    /// Probes and circuits through it that failed.
    pub failures: u32,
    /// Answering probes without a break since.
    pub up_since: Option<Instant>,
    /// Smoothed probe RTT.
    pub rtt: Option<Duration>,
    /// The probe in flight: nonce and when it left.
    probe: Option<(u64, Instant)>,
    /// When the next probe is due.
    next_probe: Instant,
}

/// The relays a node knows, by node id.
#[derive(Debug, Default)]
pub struct Directory {
    relays: BTreeMap<NodeId, RelayInfo>,
    /// The address families this node has (`true`: IPv4); empty: not known, any will do.
    families: Vec<bool>,
}

impl Directory {
    /// Tells the directory which address families this node can use, so it reaches each
    /// relay at an address of one of them (a relay publishes one per family it has). Takes
    /// effect as records are learned again.
    pub fn set_families(&mut self, families: Vec<bool>) {
        self.families = families;
    }

    /// The first of a record's addresses for `transport` in one of this node's families, or
    /// else the first at all.
    fn usable(
        &self,
        addresses: &[crate::record::NodeAddress],
        transport: Transport,
    ) -> Option<SocketAddr> {
        let of = || {
            addresses
                .iter()
                .filter(|a| a.transport == transport)
                .map(|a| a.addr)
        };
        of().find(|a| self.families.is_empty() || self.families.contains(&a.is_ipv4()))
            .or_else(|| of().next())
    }

    /// Learns (or updates) a relay from a verified node record that offers relaying on QUIC.
    /// Returns whether the record was a usable relay record.
    pub fn learn(&mut self, now: Instant, record: &SignedRecord) -> bool {
        let Record::Node(n) = record.record() else {
            return false;
        };
        let Some(cap) = &n.relay else {
            return false;
        };
        let Some(addr) = self.usable(&n.addresses, Transport::Quic) else {
            return false;
        };
        let tcp_addr = self.usable(&n.addresses, Transport::Tcp);
        let node = record.owner();
        if let Some(r) = self.relays.get_mut(&node) {
            r.addr = addr;
            r.tcp_addr = tcp_addr;
            r.operator = cap.operator.clone();
            return true;
        }
        if self.relays.len() >= MAX_RELAYS {
            return false;
        }
        self.relays.insert(
            node,
            RelayInfo {
                key: *record.signer(),
                addr,
                tcp_addr,
                operator: cap.operator.clone(),
                successes: 0,
                failures: 0,
                up_since: None,
                rtt: None,
                probe: None,
                next_probe: now,
            },
        );
        true
    }

    /// The relay `node`, if known.
    pub fn get(&self, node: &NodeId) -> Option<&RelayInfo> {
        self.relays.get(node)
    }

    /// Every known relay.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &RelayInfo)> {
        self.relays.iter()
    }

    /// Relays known.
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// The candidates for path selection over `transport`, as of `now` (TCP: the relays that
    /// accept TLS/TCP sessions, at that address).
    pub fn candidates(&self, now: Instant, transport: Transport) -> Vec<Candidate> {
        self.relays
            .iter()
            .filter_map(|(node, r)| {
                let addr = match transport {
                    Transport::Quic => r.addr,
                    Transport::Tcp => r.tcp_addr?,
                };
                Some((node, r, addr))
            })
            .map(|(node, r, addr)| Candidate {
                node: *node,
                addr,
                operator: r.operator.clone(),
                successes: r.successes,
                failures: r.failures,
                uptime: r
                    .up_since
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                rtt: r.rtt.unwrap_or(RTT_ESTIMATE),
                rtt_measured: r.rtt.is_some(),
            })
            .collect()
    }

    /// Probes due now (at most `max`): their addresses and nonces, from `nonce` onward. A probe
    /// still unanswered after [`PROBE_TIMEOUT`] counts as a failure.
    pub fn due_probes(
        &mut self,
        now: Instant,
        max: usize,
        nonce: &mut u64,
    ) -> Vec<(SocketAddr, u64)> {
        let mut out = Vec::new();
        for r in self.relays.values_mut() {
            if let Some((_, sent)) = r.probe
                && now.saturating_duration_since(sent) >= PROBE_TIMEOUT
            {
                r.probe = None;
                r.failures = r.failures.saturating_add(1);
                r.up_since = None;
            }
            if out.len() < max && r.probe.is_none() && r.next_probe <= now {
                *nonce = nonce.wrapping_add(1);
                r.probe = Some((*nonce, now));
                r.next_probe = now + PROBE_EVERY;
                out.push((r.addr, *nonce));
            }
        }
        out
    }

    /// When [`Directory::due_probes`] next has work.
    pub fn next_probe(&self) -> Option<Instant> {
        self.relays
            .values()
            .map(|r| match r.probe {
                Some((_, sent)) => sent + PROBE_TIMEOUT,
                None => r.next_probe,
            })
            .min()
    }

    /// A probe reply arrived from `from`; returns whether it answered a probe in flight.
    pub fn probe_reply(&mut self, now: Instant, from: SocketAddr, nonce: u64) -> bool {
        let Some(r) = self
            .relays
            .values_mut()
            .find(|r| r.addr == from && r.probe.is_some_and(|(n, _)| n == nonce))
        else {
            return false;
        };
        let (_, sent) = r.probe.take().expect("matched above");
        let sample = now.saturating_duration_since(sent);
        r.rtt = Some(match r.rtt {
            Some(old) => (old * 7 + sample) / 8,
            None => sample,
        });
        r.successes = r.successes.saturating_add(1);
        r.up_since.get_or_insert(now);
        true
    }

    /// A circuit through `node` was set up (`true`) or failed there.
    pub fn circuit_result(&mut self, node: &NodeId, ok: bool) {
        if let Some(r) = self.relays.get_mut(node) {
            if ok {
                r.successes = r.successes.saturating_add(1);
            } else {
                r.failures = r.failures.saturating_add(1);
            }
        }
    }
}
