//! Whether the node can be dialed from outside: it asks the peers it probes to dial it back
//! from a port it never sent to ([`crate::relay::header::PROBE_DIAL_BACK`]). A NAT or a
//! stateful firewall lets in only answers to what went out, so such a dial-back arrives only
//! at a node nothing stands in front of (or one whose NAT forwards the port).
//!
//! A peer counts once its answer to the question arrived: then it surely got the question,
//! and a dial-back that never came says something. As with observed addresses, peers can lie
//! (a dial-back can be sent from anywhere, and one can be withheld), so a verdict needs
//! [`MIN_VERDICT`] peers and more than half of those of the address family.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Peers whose outcome must agree before a verdict.
pub const MIN_VERDICT: usize = 3;
/// Outcomes remembered (the oldest goes first).
pub const MAX_OUTCOMES: usize = 32;
/// How long an outcome counts.
pub const OUTCOME_TTL: Duration = Duration::from_secs(600);

/// Where a socket sending a dial-back to `to` binds: the node's own address (`local`, the
/// address of its socket) when it listens on a specific one of `to`'s family, for the asker
/// takes a dial-back only from the address it asked; else the unspecified address, and the
/// kernel picks as it does for the node's own socket. The port is always a fresh one.
pub fn dial_back_source(local: Option<SocketAddr>, to: SocketAddr) -> SocketAddr {
    match local {
        Some(l) if !l.ip().is_unspecified() && l.is_ipv4() == to.is_ipv4() => (l.ip(), 0).into(),
        _ if to.is_ipv4() => (Ipv4Addr::UNSPECIFIED, 0).into(),
        _ => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Whether peers can open a session to the node, for one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Too few peers have answered yet, or they disagree.
    Unknown,
    /// Peers' dial-backs arrive.
    Reachable,
    /// Peers answer, but their dial-backs never arrive: a NAT or firewall is in front.
    Unreachable,
}

impl Verdict {
    /// The name status and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Reachable => "reachable",
            Verdict::Unreachable => "unreachable",
        }
    }
}

/// One outcome per peer address: whether its dial-back arrived.
#[derive(Debug, Default, Clone)]
pub struct DialBacks {
    by_peer: BTreeMap<IpAddr, (bool, Instant)>,
}

impl DialBacks {
    /// The peer at `peer` answered a question, and its dial-back `arrived` or not (a later
    /// outcome replaces its earlier one).
    pub fn record(&mut self, peer: IpAddr, arrived: bool, now: Instant) {
        if !self.by_peer.contains_key(&peer) && self.by_peer.len() >= MAX_OUTCOMES {
            let oldest = self
                .by_peer
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.by_peer.remove(&p);
            }
        }
        self.by_peer.insert(peer, (arrived, now));
    }

    /// Forgets outcomes older than [`OUTCOME_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.by_peer
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < OUTCOME_TTL);
    }

    /// The verdict for IPv4 (`true`) or IPv6.
    pub fn verdict(&self, v4: bool) -> Verdict {
        let outcomes: Vec<bool> = self
            .by_peer
            .iter()
            .filter(|(p, _)| p.is_ipv4() == v4)
            .map(|(_, (arrived, _))| *arrived)
            .collect();
        let arrived = outcomes.iter().filter(|a| **a).count();
        let missed = outcomes.len() - arrived;
        if arrived >= MIN_VERDICT && arrived * 2 > outcomes.len() {
            Verdict::Reachable
        } else if missed >= MIN_VERDICT && missed * 2 > outcomes.len() {
            Verdict::Unreachable
        } else {
            Verdict::Unknown
        }
    }

    /// The verdicts of the families peers answered in (`true`: IPv4).
    pub fn verdicts(&self) -> Vec<(bool, Verdict)> {
        let mut families: Vec<bool> = self.by_peer.keys().map(IpAddr::is_ipv4).collect();
        families.sort_unstable();
        families.dedup();
        families
            .into_iter()
            .map(|v4| (v4, self.verdict(v4)))
            .collect()
    }

    /// Outcomes held.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}
