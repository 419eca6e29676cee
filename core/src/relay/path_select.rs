//! Choosing the relays of a circuit (DESIGN.md §6): a pure function of the candidates, the
//! constraints and an RNG, that says why it passed over each candidate it did not take.
//!
//! Rules, in order:
//! - never an endpoint of the circuit, never an excluded node, never a node twice;
//! - never a relay whose health (success ratio) or measured RTT fails the constraints;
//! - at most one relay per /48 (IPv6) or /16 (IPv4) and per declared operator, as long as the
//!   candidates allow a full path that way; otherwise operators, then prefixes, may repeat
//!   (and the selection says so);
//! - among the rest, a weighted random draw hop by hop: the weight grows with health and uptime
//!   and falls with RTT, so good relays are preferred without all paths crowding onto the best.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_core::RngCore;

use crate::identity::NodeId;
use crate::names::OperatorName;

/// What the node knows about one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The relay.
    pub node: NodeId,
    /// Where it accepts sessions.
    pub addr: SocketAddr,
    /// The operator it declares, if any.
    pub operator: Option<OperatorName>,
    /// Probes or circuits that succeeded through it.
    pub successes: u32,
    /// Probes or circuits that failed through it.
    pub failures: u32,
    /// How long it has been seen up without a break.
    pub uptime: Duration,
    /// Round-trip time: measured by probes, or estimated from what the node knows.
    pub rtt: Duration,
    /// Whether `rtt` was measured (an estimate never disqualifies a relay).
    pub rtt_measured: bool,
}

/// What the path must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraints {
    /// Relays on the path.
    pub hops: usize,
    /// The circuit's ends (the client and the owner): never relays on their own path.
    pub endpoints: Vec<NodeId>,
    /// Nodes not to use (a failed circuit's relays, a policy's exclusions).
    pub exclude: BTreeSet<NodeId>,
    /// Lowest success ratio (in thousandths) a relay with a history may have.
    pub min_success_permille: u32,
    /// Highest measured RTT a relay may have.
    pub max_rtt: Option<Duration>,
    /// If not empty, the last relay must be one of these: the relays an owner that cannot be
    /// dialed keeps a session to (its record's `via`).
    pub exit_among: Vec<NodeId>,
}

impl Default for Constraints {
    fn default() -> Self {
        Self {
            hops: 2,
            endpoints: Vec::new(),
            exclude: BTreeSet::new(),
            min_success_permille: 500,
            max_rtt: None,
            exit_among: Vec::new(),
        }
    }
}

/// Why a candidate is not on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassedOver {
    /// It is an end of the circuit.
    Endpoint,
    /// The constraints exclude it.
    Excluded,
    /// It was listed more than once (only its first entry counts).
    Duplicate,
    /// Its success ratio (thousandths) is below the constraint.
    Unhealthy(u32),
    /// Its measured RTT is above the constraint.
    TooSlow(Duration),
    /// Another relay on the path shares its address prefix.
    SamePrefix(NodeId),
    /// Another relay on the path has its operator.
    SameOperator(NodeId),
    /// Usable, but the weighted draw chose others.
    NotDrawn,
}

/// How much diversity the chosen path has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Diversity {
    /// Every relay in its own prefix, under its own operator.
    Full,
    /// Every relay in its own prefix; operators repeat (the candidates allowed no better).
    PrefixOnly,
    /// Prefixes repeat too (the candidates allowed no better).
    None,
}

/// The chosen path, and why the others were not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Relays in order from the client.
    pub path: Vec<NodeId>,
    /// The diversity the path achieved.
    pub diversity: Diversity,
    /// Every other candidate, with the reason.
    pub passed_over: Vec<(NodeId, PassedOver)>,
}

/// Why no path could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// None of the relays the last hop must be one of is usable.
    #[error("none of the owner's {0} relay(s) is usable as the last hop")]
    NoExit(usize),
    /// Fewer usable candidates than hops.
    #[error("{usable} usable relay(s) for a {hops}-hop path ({candidates} candidates)")]
    TooFew {
        /// Hops asked for.
        hops: usize,
        /// Candidates that passed the rules on their own.
        usable: usize,
        /// Candidates given.
        candidates: usize,
    },
}

/// The /48 of an IPv6 address or the /16 of an IPv4 one: what one operator is assumed to hold.
fn diversity_prefix(addr: &SocketAddr) -> [u8; 6] {
    match addr.ip() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], 0, 0, 0]
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                let o = v4.octets();
                [4, o[0], o[1], 0, 0, 0]
            }
            None => v6.octets()[..6].try_into().expect("6 of 16 bytes"),
        },
    }
}

/// Weight of a usable candidate in the draw (larger is likelier): health (Laplace-smoothed
/// success ratio), a bonus for uptime up to a day, and the inverse of the RTT plus 10 ms (so a
/// 1 ms relay is not a hundred times likelier than a 100 ms one, only ten).
fn weight(c: &Candidate) -> u64 {
    let health = (u64::from(c.successes) + 1) * 1000 / (u64::from(c.successes + c.failures) + 2);
    let uptime = 1000 + c.uptime.as_secs().min(86_400) * 1000 / 86_400;
    let rtt_ms = c.rtt.as_millis().min(10_000) as u64 + 10;
    (health * uptime / rtt_ms).max(1)
}

/// Chooses `constraints.hops` relays among `candidates` (see the module docs for the rules).
pub fn select(
    candidates: &[Candidate],
    constraints: &Constraints,
    rng: &mut impl RngCore,
) -> Result<Selection, SelectError> {
    let mut passed_over = Vec::new();
    let mut seen = BTreeSet::new();
    let mut usable: Vec<&Candidate> = Vec::new();
    for c in candidates {
        let reason = if !seen.insert(c.node) {
            Some(PassedOver::Duplicate)
        } else if constraints.endpoints.contains(&c.node) {
            Some(PassedOver::Endpoint)
        } else if constraints.exclude.contains(&c.node) {
            Some(PassedOver::Excluded)
        } else if c.successes + c.failures > 0
            && u64::from(c.successes) * 1000 / u64::from(c.successes + c.failures)
                < u64::from(constraints.min_success_permille)
        {
            let ratio = u64::from(c.successes) * 1000 / u64::from(c.successes + c.failures);
            Some(PassedOver::Unhealthy(ratio as u32))
        } else if let Some(max) = constraints.max_rtt
            && c.rtt_measured
            && c.rtt > max
        {
            Some(PassedOver::TooSlow(c.rtt))
        } else {
            None
        };
        match reason {
            Some(r) => passed_over.push((c.node, r)),
            None => usable.push(c),
        }
    }
    if usable.len() < constraints.hops {
        return Err(SelectError::TooFew {
            hops: constraints.hops,
            usable: usable.len(),
            candidates: candidates.len(),
        });
    }
    // The strictest diversity the candidates can satisfy, decided before drawing, so that the
    // draw never paints itself into a corner.
    let mut path: Vec<&Candidate> = Vec::with_capacity(constraints.hops);
    let exit = !constraints.exit_among.is_empty() && constraints.hops > 0;
    let diversity = match !exit {
        true => [Diversity::Full, Diversity::PrefixOnly, Diversity::None]
            .into_iter()
            .find(|d| achievable(&usable, *d, constraints.hops))
            .expect("Diversity::None is achievable with enough usable candidates"),
        false => {
            // The exit is drawn first (among those a full path can be completed around, at
            // the best diversity any of them allows); the rest of the path is drawn as usual
            // and goes before it. Diversity is symmetric, so the order changes nothing.
            let exits: Vec<&Candidate> = usable
                .iter()
                .copied()
                .filter(|c| constraints.exit_among.contains(&c.node))
                .collect();
            if exits.is_empty() {
                return Err(SelectError::NoExit(constraints.exit_among.len()));
            }
            let around = |e: &Candidate, d: Diversity| {
                let rest: Vec<&Candidate> = usable
                    .iter()
                    .copied()
                    .filter(|r| r.node != e.node)
                    .collect();
                completable(&rest, &[e], d, constraints.hops - 1)
            };
            let diversity = [Diversity::Full, Diversity::PrefixOnly, Diversity::None]
                .into_iter()
                .find(|d| exits.iter().any(|e| around(e, *d)))
                .expect("Diversity::None is achievable with enough usable candidates");
            let pool: Vec<&Candidate> =
                exits.into_iter().filter(|e| around(e, diversity)).collect();
            path.push(pool[draw(&pool, rng)]);
            diversity
        }
    };
    while path.len() < constraints.hops {
        let mut pool: Vec<&Candidate> = usable
            .iter()
            .copied()
            .filter(|c| !path.iter().any(|p| p.node == c.node))
            .filter(|c| compatible(c, &path, diversity))
            .collect();
        loop {
            let i = draw(&pool, rng);
            let mut next = path.clone();
            next.push(pool[i]);
            let rest: Vec<&Candidate> = usable
                .iter()
                .copied()
                .filter(|r| !next.iter().any(|p| p.node == r.node))
                .collect();
            // A relay that would leave no full path behind it is put back, and another drawn:
            // `achievable` guarantees one exists.
            if completable(&rest, &next, diversity, constraints.hops - next.len()) {
                path = next;
                break;
            }
            pool.swap_remove(i);
        }
    }
    // The exit was drawn first; it goes last.
    if exit {
        path.rotate_left(1);
    }
    for c in usable {
        if path.iter().any(|p| p.node == c.node) {
            continue;
        }
        let reason = clash(c, &path, Diversity::Full).unwrap_or(PassedOver::NotDrawn);
        passed_over.push((c.node, reason));
    }
    Ok(Selection {
        path: path.iter().map(|c| c.node).collect(),
        diversity,
        passed_over,
    })
}

/// A weighted random index into `pool` (not empty).
fn draw(pool: &[&Candidate], rng: &mut impl RngCore) -> usize {
    let total: u64 = pool.iter().map(|c| weight(c)).sum();
    let mut pick = rng.next_u64() % total.max(1);
    for (i, c) in pool.iter().enumerate() {
        let w = weight(c);
        if pick < w {
            return i;
        }
        pick -= w;
    }
    pool.len() - 1
}

/// What on `path` a candidate would clash with under `diversity`.
fn clash(c: &Candidate, path: &[&Candidate], diversity: Diversity) -> Option<PassedOver> {
    if diversity == Diversity::None {
        return None;
    }
    let prefix = diversity_prefix(&c.addr);
    if let Some(p) = path.iter().find(|p| diversity_prefix(&p.addr) == prefix) {
        return Some(PassedOver::SamePrefix(p.node));
    }
    if diversity == Diversity::Full
        && let Some(op) = &c.operator
        && let Some(p) = path.iter().find(|p| p.operator.as_ref() == Some(op))
    {
        return Some(PassedOver::SameOperator(p.node));
    }
    None
}

fn compatible(c: &Candidate, path: &[&Candidate], diversity: Diversity) -> bool {
    clash(c, path, diversity).is_none()
}

/// Whether `hops` more relays can be added to `path` from `rest` under `diversity`. Relays on
/// a fully diverse path have distinct prefixes and distinct declared operators, so this is a
/// bipartite matching between prefixes and operators (a relay without one brings its own); it
/// is solved exactly, with augmenting paths, in polynomial time whatever the candidates.
fn completable(
    rest: &[&Candidate],
    path: &[&Candidate],
    diversity: Diversity,
    hops: usize,
) -> bool {
    let open: Vec<&Candidate> = rest
        .iter()
        .copied()
        .filter(|c| compatible(c, path, diversity))
        .collect();
    match diversity {
        Diversity::None => open.len() >= hops,
        Diversity::PrefixOnly => {
            let prefixes: BTreeSet<[u8; 6]> =
                open.iter().map(|c| diversity_prefix(&c.addr)).collect();
            prefixes.len() >= hops
        }
        Diversity::Full => matching(&open) >= hops,
    }
}

/// The largest set of candidates with pairwise distinct prefixes and operators.
fn matching(open: &[&Candidate]) -> usize {
    let mut prefixes: Vec<[u8; 6]> = open.iter().map(|c| diversity_prefix(&c.addr)).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    // Operator slots: declared operators by name, and one of its own per undeclared relay.
    let mut names: Vec<&OperatorName> = open.iter().filter_map(|c| c.operator.as_ref()).collect();
    names.sort_unstable();
    names.dedup();
    let mut own = names.len();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); prefixes.len()];
    for c in open {
        let p = prefixes
            .binary_search(&diversity_prefix(&c.addr))
            .expect("every prefix was collected");
        let o = match &c.operator {
            Some(name) => names
                .binary_search(&name)
                .expect("every name was collected"),
            None => {
                own += 1;
                own - 1
            }
        };
        edges[p].push(o);
    }
    let mut owner_of: Vec<Option<usize>> = vec![None; own];
    let mut matched = 0;
    for p in 0..prefixes.len() {
        let mut visited = vec![false; own];
        if augment(p, &edges, &mut visited, &mut owner_of) {
            matched += 1;
        }
    }
    matched
}

/// Kuhn's augmenting path from prefix `p`.
fn augment(
    p: usize,
    edges: &[Vec<usize>],
    visited: &mut [bool],
    owner_of: &mut [Option<usize>],
) -> bool {
    for &o in &edges[p] {
        if visited[o] {
            continue;
        }
        visited[o] = true;
        if owner_of[o].is_none_or(|q| augment(q, edges, visited, owner_of)) {
            owner_of[o] = Some(p);
            return true;
        }
    }
    false
}

fn achievable(usable: &[&Candidate], diversity: Diversity, hops: usize) -> bool {
    completable(usable, &[], diversity, hops)
}
