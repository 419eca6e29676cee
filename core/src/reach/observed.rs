//! Observed addresses and the rule for trusting them.
//!
//! A peer the node chose (a DHT contact it probed, at the address it probed) says which
//! address the probe came from. Peers can lie, so an address is *agreed*, and published, only
//! when at least [`MIN_AGREE`] reporters name it and they are more than half of the reporters
//! of its address family: a minority of liars cannot make the node publish an address they
//! chose, however many times they answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Reporters that must name an address before it is agreed.
pub const MIN_AGREE: usize = 3;
/// Reporters remembered (the oldest report goes first).
pub const MAX_REPORTERS: usize = 32;
/// How long a report counts.
pub const OBSERVATION_TTL: Duration = Duration::from_secs(600);

/// How the node's traffic of one address family leaves its network, as observations show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Peers see one of the node's own addresses and its port: no translation.
    None,
    /// Peers see another address but the node's own port, the same for every peer (a NAT
    /// that keeps source ports: hole punching works).
    PortPreserving,
    /// Peers see another address and one port, not the node's (endpoint-independent mapping:
    /// hole punching works once the port is known).
    EndpointIndependent,
    /// Different peers see different ports or addresses (endpoint-dependent, "symmetric"
    /// mapping: hole punching from this side rarely works).
    EndpointDependent,
}

impl Mapping {
    /// The name status and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::None => "none",
            Mapping::PortPreserving => "nat_port_preserving",
            Mapping::EndpointIndependent => "nat_endpoint_independent",
            Mapping::EndpointDependent => "nat_endpoint_dependent",
        }
    }
}

/// What peers reported, one report per reporter address.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    by_reporter: BTreeMap<IpAddr, (SocketAddr, Instant)>,
}

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl Observations {
    /// `reporter` saw this node at `observed`, at `now` (a later report replaces its earlier
    /// one).
    pub fn record(&mut self, reporter: IpAddr, observed: SocketAddr, now: Instant) {
        if !self.by_reporter.contains_key(&reporter) && self.by_reporter.len() >= MAX_REPORTERS {
            let oldest = self
                .by_reporter
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(r, _)| *r);
            if let Some(r) = oldest {
                self.by_reporter.remove(&r);
            }
        }
        self.by_reporter.insert(reporter, (observed, now));
    }

    /// Forgets reports older than [`OBSERVATION_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.by_reporter
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < OBSERVATION_TTL);
    }

    /// Reports held.
    pub fn len(&self) -> usize {
        self.by_reporter.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.by_reporter.is_empty()
    }

    /// The addresses enough reporters agree on (at most one per address family), in order.
    pub fn agreed(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for v4 in [false, true] {
            let reports: Vec<SocketAddr> = self
                .by_reporter
                .values()
                .map(|(a, _)| *a)
                .filter(|a| a.is_ipv4() == v4)
                .collect();
            let mut counts: BTreeMap<SocketAddr, usize> = BTreeMap::new();
            for a in &reports {
                *counts.entry(*a).or_default() += 1;
            }
            if let Some((addr, n)) = counts.into_iter().max_by_key(|(a, n)| (*n, *a))
                && n >= MIN_AGREE
                && n * 2 > reports.len()
            {
                out.push(addr);
            }
        }
        out
    }

    /// The IP address (of the family, `v4`: IPv4) enough reporters agree on, whatever the
    /// ports they saw: a NAT that picks a port per destination still has one address.
    pub fn agreed_ip(&self, v4: bool) -> Option<IpAddr> {
        let reports: Vec<IpAddr> = self
            .by_reporter
            .values()
            .map(|(a, _)| a.ip())
            .filter(|a| a.is_ipv4() == v4)
            .collect();
        let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for a in &reports {
            *counts.entry(*a).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(a, n)| (*n, *a))
            .filter(|(_, n)| *n >= MIN_AGREE && n * 2 > reports.len())
            .map(|(a, _)| a)
    }

    /// The mapping each address family shows, given the node's own addresses (with the port
    /// it listens on); families no reporter used are left out.
    pub fn mapping(&self, local: &[SocketAddr]) -> Vec<(bool, Mapping)> {
        let mut out = Vec::new();
        for v4 in [false, true] {
            let seen: Vec<SocketAddr> = self
                .by_reporter
                .values()
                .map(|(a, _)| *a)
                .filter(|a| a.is_ipv4() == v4)
                .collect();
            let Some(first) = seen.first() else {
                continue;
            };
            let own = |a: &SocketAddr| local.iter().any(|l| l == a);
            let mapping = if seen.iter().all(own) {
                Mapping::None
            } else if seen.iter().any(|a| a != first) {
                Mapping::EndpointDependent
            } else if local
                .iter()
                .any(|l| same_family(&l.ip(), &first.ip()) && l.port() == first.port())
            {
                Mapping::PortPreserving
            } else {
                Mapping::EndpointIndependent
            };
            out.push((v4, mapping));
        }
        out
    }
}
