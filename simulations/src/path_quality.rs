//! Relay path quality (DESIGN.md §6): how fast are the two-hop paths that
//! `vx6_core::relay::select` chooses, next to the fastest path the same candidates allow and
//! next to a uniform random choice among them?
//!
//! The model is static (no events): it has no use for the event loop of [`crate::net`].
//! - Geography: nodes sit in seven regions on a plane whose unit is one millisecond of round
//!   trip; the x axis wraps around (the world is a cylinder, so that East Asia is as near the
//!   American west coast as it is in fact). Each node also has an access delay (its last mile:
//!   a few ms, tens of ms for one in seven), and each pair a fixed jitter of up to 3 ms.
//!   RTT(a, b) = 1 ms + distance + access(a) + access(b) + jitter(a, b).
//! - Addresses: nodes live in prefixes (IPv6 /48s and IPv4 /16s, seven in ten IPv6), each
//!   prefix in one region, with sizes following Zipf's law within the region, so that a few big
//!   hosting prefixes hold many nodes; a prefix's nodes sit within a few ms of each other.
//! - Relays: a fraction of the nodes. Half of them declare an operator; operators own several
//!   relays, often in the same prefix. Health comes from probes drawn from each relay's true
//!   reliability: most are healthy, some unhealthy (reliability 20–60%), some new (no history).
//! - A trial: a random client and owner; the client knows a random sample of the relays (the
//!   candidates) with the RTT it measured to each (true RTT, ±10% probe noise). Path RTT is
//!   client→r1 + r1→r2 + r2→owner, from true RTTs. `select` sees only the client's RTTs: it
//!   knows nothing of the owner's position nor of relay-to-relay RTTs.
//!
//! Strategies compared on the same trials (see [`Strategy`]): the selection, uniform random
//! choices (among the paths `select` would accept, and among all paths that merely avoid the
//! endpoints and repeats), and the fastest paths under the same two sets of rules.
//!
//! Every rule of `select` that can be checked from outside is checked on every trial, and any
//! breach is reported as a [`Violation`]. Same seed, same report: the report carries a hash of
//! every chosen path.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use vx6_core::relay::{Candidate, Constraints, Diversity, SelectError, Selection, select};
use vx6_core::{NodeId, OperatorName};

/// Region centres (x, y in ms of RTT) and their share of the nodes.
const REGIONS: [(f64, f64, f64); 7] = [
    (0.0, 0.0, 0.28),     // Europe
    (380.0, 0.0, 0.22),   // North America, east
    (315.0, -10.0, 0.12), // North America, west
    (380.0, 90.0, 0.07),  // South America
    (120.0, 40.0, 0.10),  // South Asia
    (210.0, 0.0, 0.16),   // East Asia
    (250.0, 90.0, 0.05),  // Oceania
];

/// Where the x axis wraps around, in ms.
const CIRCUMFERENCE: f64 = 460.0;

/// Spread (standard deviation, ms) of prefixes around their region's centre.
const PREFIX_SPREAD: f64 = 15.0;

/// Spread (standard deviation, ms) of nodes around their prefix's centre.
const NODE_SPREAD: f64 = 2.0;

/// Nodes per prefix, on average.
const NODES_PER_PREFIX: usize = 6;

/// Relays per declared operator, on average.
const RELAYS_PER_OPERATOR: usize = 4;

/// Tries of rejection sampling before a uniform draw enumerates the admissible paths instead.
const REJECTION_TRIES: usize = 10_000;

/// What a path-quality run is asked to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathParams {
    /// Nodes in the network.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// (client, owner) pairs measured.
    pub trials: usize,
    /// Relays the client knows (a random sample per trial); `usize::MAX` for all of them.
    pub candidates: usize,
    /// Fraction of the nodes that are relays.
    pub relays: f64,
    /// Fraction of the relays that are unhealthy (true reliability 20–60%).
    pub unhealthy: f64,
    /// Fraction of the relays too new to have a history (no probes yet).
    pub fresh: f64,
    /// Fraction of the relays that declare an operator.
    pub declared: f64,
}

impl PathParams {
    /// Defaults for `nodes` nodes.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            trials: 1000,
            candidates: 256,
            relays: 0.1,
            unhealthy: 0.1,
            fresh: 0.05,
            declared: 0.5,
        }
    }
}

/// A way of choosing the two relays of a path, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    /// `vx6_core::relay::select` with default constraints.
    Selected,
    /// Uniformly among the paths `select` would accept: healthy relays, no endpoint, no node
    /// twice, and the strictest diversity the candidates allow. What `select` would do without
    /// its weighting.
    UniformAdmissible,
    /// Uniformly among all candidate paths with no endpoint and no node twice (health and
    /// diversity ignored).
    UniformAny,
    /// The fastest path `select` would accept (same rules as `UniformAdmissible`).
    BestAdmissible,
    /// The fastest path with no endpoint and no node twice: a lower bound.
    BestAny,
}

impl Strategy {
    /// All strategies, in report order.
    pub const ALL: [Strategy; 5] = [
        Strategy::Selected,
        Strategy::UniformAdmissible,
        Strategy::UniformAny,
        Strategy::BestAdmissible,
        Strategy::BestAny,
    ];

    /// A short description for reports.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Selected => "select (weighted)",
            Strategy::UniformAdmissible => "uniform, select's rules",
            Strategy::UniformAny => "uniform, any candidates",
            Strategy::BestAdmissible => "fastest, select's rules",
            Strategy::BestAny => "fastest, any candidates",
        }
    }
}

/// Distribution summary, in the samples' unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

/// Nearest-rank quantiles of `v`.
pub fn quantiles(v: &[f64]) -> Quantiles {
    if v.is_empty() {
        return Quantiles::default();
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Quantiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

/// How one strategy did over all trials.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyStats {
    /// The strategy.
    pub strategy: Strategy,
    /// Path RTT, ms.
    pub rtt: Quantiles,
    /// Path RTT over the fastest path with no endpoint and no node twice, per trial.
    pub stretch: Quantiles,
    /// Mean of each leg (client→r1, r1→r2, r2→owner), ms.
    pub legs: [f64; 3],
    /// Share of paths whose relays have distinct prefixes and distinct declared operators.
    pub full_diversity: f64,
    /// Share of paths through a relay whose success ratio is below the constraint.
    pub unhealthy: f64,
    /// Path RTT per trial, ms, in trial order (for plots).
    pub samples: Vec<f64>,
}

/// A rule of `select` broken on some trial (any of these is a bug, in `select` or here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `select` failed although at least two candidates were usable.
    Failed(SelectError),
    /// The path does not have two relays.
    Length(usize),
    /// The path holds a node that is not a candidate.
    Unknown(NodeId),
    /// The path holds the client or the owner.
    Endpoint(NodeId),
    /// The path holds one node twice.
    Twice(NodeId),
    /// The path holds a relay whose success ratio is below the constraint.
    Unhealthy(NodeId),
    /// The diversity reported is not the path's.
    Misreported {
        /// What `select` said.
        claimed: Diversity,
        /// What the path has.
        actual: Diversity,
    },
    /// The path is less diverse than the candidates allowed.
    NotStrictest {
        /// What the path has.
        actual: Diversity,
        /// What the candidates allowed.
        possible: Diversity,
    },
    /// The selected path is faster than the fastest admissible one (the optimum is wrong).
    FasterThanOptimum,
}

/// Everything a path-quality run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PathReport {
    /// What was asked.
    pub params: PathParams,
    /// Relays in the network.
    pub relays: usize,
    /// Distinct prefixes among the relays.
    pub relay_prefixes: usize,
    /// Declared operators with at least one relay.
    pub operators: usize,
    /// Relays below the success-ratio constraint.
    pub unhealthy_relays: usize,
    /// Relays without a history.
    pub fresh_relays: usize,
    /// Candidates per trial.
    pub candidates: usize,
    /// Trials measured (those where `select` found a path).
    pub trials: usize,
    /// Trials where `select` found no path.
    pub failed: usize,
    /// Trials where a fully diverse path was possible.
    pub full_possible: usize,
    /// Mean RTT between two random nodes, ms.
    pub mean_rtt_ms: f64,
    /// One entry per strategy, in [`Strategy::ALL`] order.
    pub strategies: Vec<StrategyStats>,
    /// Rules broken, with the trial (empty when all is well).
    pub violations: Vec<(usize, Violation)>,
    /// Hash of every trial's client, owner and chosen path (hex).
    pub trace: String,
}

impl PathReport {
    /// The figures of one strategy.
    pub fn get(&self, s: Strategy) -> &StrategyStats {
        self.strategies
            .iter()
            .find(|x| x.strategy == s)
            .expect("every strategy is reported")
    }
}

struct Relay {
    node: u32,
    operator: Option<u32>,
    successes: u32,
    failures: u32,
    uptime: Duration,
}

struct World {
    ids: Vec<NodeId>,
    addrs: Vec<SocketAddr>,
    prefix: Vec<u32>,
    pos: Vec<(f64, f64)>,
    access: Vec<f64>,
    jitter_key: u64,
    relays: Vec<Relay>,
    operator_names: Vec<OperatorName>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform float in [0, 1).
fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform index below `n` (> 0).
fn below(rng: &mut impl RngCore, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut impl RngCore) -> f64 {
    let u = 1.0 - unit(rng);
    let v = unit(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// An index drawn with the given cumulative weights.
fn weighted(rng: &mut impl RngCore, cumulative: &[f64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let x = unit(rng) * total;
    cumulative
        .partition_point(|c| *c <= x)
        .min(cumulative.len() - 1)
}

fn zipf_cumulative(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    (0..n)
        .map(|i| {
            acc += 1.0 / (i + 1) as f64;
            acc
        })
        .collect()
}

impl World {
    fn build(p: &PathParams) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let n = p.nodes;
        // Prefixes: a region, a centre, a kind.
        let prefixes = n.div_ceil(NODES_PER_PREFIX).max(1);
        let region_cumulative: Vec<f64> = REGIONS
            .iter()
            .scan(0.0, |acc, r| {
                *acc += r.2;
                Some(*acc)
            })
            .collect();
        let mut by_region: Vec<Vec<u32>> = vec![Vec::new(); REGIONS.len()];
        let mut prefix_centre = Vec::with_capacity(prefixes);
        let mut prefix_net: Vec<(bool, u32)> = Vec::with_capacity(prefixes);
        let (mut v4, mut v6) = (0u32, 0u32);
        for i in 0..prefixes {
            // Every region gets at least one prefix, then they go by share.
            let r = if i < REGIONS.len() {
                i
            } else {
                weighted(&mut rng, &region_cumulative)
            };
            by_region[r].push(i as u32);
            let (cx, cy, _) = REGIONS[r];
            prefix_centre.push((
                (cx + PREFIX_SPREAD * normal(&mut rng)).rem_euclid(CIRCUMFERENCE),
                cy + PREFIX_SPREAD * normal(&mut rng),
            ));
            if unit(&mut rng) < 0.3 {
                prefix_net.push((true, v4));
                v4 += 1;
            } else {
                prefix_net.push((false, v6));
                v6 += 1;
            }
        }
        let zipf: Vec<Vec<f64>> = by_region.iter().map(|v| zipf_cumulative(v.len())).collect();
        let mut ids = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        let mut prefix = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut access = Vec::with_capacity(n);
        for i in 0..n {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            ids.push(NodeId::from_bytes(b));
            let r = weighted(&mut rng, &region_cumulative);
            let pf = by_region[r][weighted(&mut rng, &zipf[r])];
            prefix.push(pf);
            let (px, py) = prefix_centre[pf as usize];
            pos.push((
                (px + NODE_SPREAD * normal(&mut rng)).rem_euclid(CIRCUMFERENCE),
                py + NODE_SPREAD * normal(&mut rng),
            ));
            // Last mile: 0.5–4.5 ms, and 10–50 ms more for one node in seven.
            let mut a = 0.5 + 4.0 * unit(&mut rng);
            if unit(&mut rng) < 1.0 / 7.0 {
                a += 10.0 + 40.0 * unit(&mut rng);
            }
            access.push(a);
            let host = i as u32;
            addrs.push(match prefix_net[pf as usize] {
                (true, k) => SocketAddr::from((
                    Ipv4Addr::new(
                        11 + (k / 256 % 200) as u8,
                        (k % 256) as u8,
                        (host >> 8) as u8,
                        host as u8,
                    ),
                    4433,
                )),
                (false, k) => SocketAddr::from((
                    Ipv6Addr::new(
                        0x2a00 | (k >> 24) as u16,
                        (k >> 16) as u16 & 0xff,
                        k as u16,
                        0,
                        0,
                        0,
                        (host >> 16) as u16,
                        host as u16,
                    ),
                    4433,
                )),
            });
        }
        // Relays, their operators and their health.
        let relay_nodes: Vec<u32> = (0..n as u32)
            .filter(|_| unit(&mut rng) < p.relays)
            .collect();
        let operators = (relay_nodes.len() / RELAYS_PER_OPERATOR).max(1);
        let operator_names: Vec<OperatorName> = (0..operators)
            .map(|o| format!("op{o}").parse().expect("a valid operator name"))
            .collect();
        let operator_zipf = zipf_cumulative(operators);
        let mut relays = Vec::with_capacity(relay_nodes.len());
        for node in relay_nodes {
            let operator = (unit(&mut rng) < p.declared).then(|| {
                // Half the time the prefix's own operator (a hosting company with many relays
                // in one network), otherwise one spread over several networks.
                if unit(&mut rng) < 0.5 {
                    prefix[node as usize] % operators as u32
                } else {
                    weighted(&mut rng, &operator_zipf) as u32
                }
            });
            let kind = unit(&mut rng);
            let (successes, failures, uptime_s) = if kind < p.fresh {
                (0, 0, unit(&mut rng) * 3600.0)
            } else {
                let reliability = if kind < p.fresh + p.unhealthy {
                    0.2 + 0.4 * unit(&mut rng)
                } else {
                    0.9 + 0.1 * unit(&mut rng)
                };
                let probes = 5 + below(&mut rng, 196) as u32;
                let ok = (0..probes).filter(|_| unit(&mut rng) < reliability).count() as u32;
                let mean_up = if reliability < 0.9 {
                    3.0 * 3600.0
                } else {
                    2.0 * 86_400.0
                };
                let up = (-mean_up * (1.0 - unit(&mut rng)).ln()).min(30.0 * 86_400.0);
                (ok, probes - ok, up)
            };
            relays.push(Relay {
                node,
                operator,
                successes,
                failures,
                uptime: Duration::from_secs_f64(uptime_s),
            });
        }
        Self {
            ids,
            addrs,
            prefix,
            pos,
            access,
            jitter_key: splitmix(p.seed ^ 0x5eed_0f71_77e4),
            relays,
            operator_names,
        }
    }

    /// True RTT between two nodes, ms.
    fn rtt(&self, a: u32, b: u32) -> f64 {
        if a == b {
            return 0.0;
        }
        let (pa, pb) = (self.pos[a as usize], self.pos[b as usize]);
        let dx = (pa.0 - pb.0).abs();
        let dx = dx.min(CIRCUMFERENCE - dx);
        let dy = pa.1 - pb.1;
        let (lo, hi) = (a.min(b), a.max(b));
        let h = splitmix(self.jitter_key ^ (u64::from(lo) << 32 | u64::from(hi)));
        let jitter = (h >> 11) as f64 / (1u64 << 53) as f64 * 3.0;
        1.0 + (dx * dx + dy * dy).sqrt()
            + self.access[a as usize]
            + self.access[b as usize]
            + jitter
    }

    fn healthy(&self, r: &Relay, min_permille: u32) -> bool {
        let total = r.successes + r.failures;
        total == 0 || u64::from(r.successes) * 1000 / u64::from(total) >= u64::from(min_permille)
    }

    /// The diversity of a path through relays `a` and `b`, computed independently of `select`.
    fn diversity(&self, a: &Relay, b: &Relay) -> Diversity {
        if self.prefix[a.node as usize] == self.prefix[b.node as usize] {
            Diversity::None
        } else if a.operator.is_some() && a.operator == b.operator {
            Diversity::PrefixOnly
        } else {
            Diversity::Full
        }
    }
}

/// One trial's outcome for one strategy: candidate indices of r1 and r2.
type Pick = (usize, usize);

#[derive(Default)]
struct Acc {
    rtt: Vec<f64>,
    stretch: Vec<f64>,
    legs: [f64; 3],
    full: usize,
    unhealthy: usize,
}

/// Runs the scenario.
pub fn run(p: &PathParams) -> PathReport {
    assert!(p.nodes >= 2, "a path needs a client and an owner");
    let world = World::build(p);
    let constraints_base = Constraints::default();
    let min_permille = constraints_base.min_success_permille;
    let mut trial_rng = ChaCha8Rng::seed_from_u64(p.seed);
    trial_rng.set_stream(1);
    let mut select_rng = ChaCha8Rng::seed_from_u64(p.seed);
    select_rng.set_stream(2);
    let mut uniform_rng = ChaCha8Rng::seed_from_u64(p.seed);
    uniform_rng.set_stream(3);

    let n = p.nodes;
    let mut order: Vec<usize> = (0..world.relays.len()).collect();
    let k = p.candidates.min(order.len());
    let mut acc: Vec<Acc> = Strategy::ALL.iter().map(|_| Acc::default()).collect();
    let mut violations = Vec::new();
    let mut failed = 0;
    let mut full_possible = 0;
    let mut trace = blake3::Hasher::new();

    for t in 0..p.trials {
        let client = below(&mut trial_rng, n) as u32;
        let owner = loop {
            let o = below(&mut trial_rng, n) as u32;
            if o != client {
                break o;
            }
        };
        for i in 0..k {
            let j = i + below(&mut trial_rng, order.len() - i);
            order.swap(i, j);
        }
        let known: Vec<&Relay> = order[..k].iter().map(|&r| &world.relays[r]).collect();
        let candidates: Vec<Candidate> = known
            .iter()
            .map(|r| {
                let noise = 0.9 + 0.2 * unit(&mut trial_rng);
                let rtt = world.rtt(client, r.node) * noise;
                Candidate {
                    node: world.ids[r.node as usize],
                    addr: world.addrs[r.node as usize],
                    operator: r.operator.map(|o| world.operator_names[o as usize].clone()),
                    successes: r.successes,
                    failures: r.failures,
                    uptime: r.uptime,
                    rtt: Duration::from_micros((rtt * 1000.0).round() as u64),
                    rtt_measured: true,
                }
            })
            .collect();
        let constraints = Constraints {
            endpoints: vec![world.ids[client as usize], world.ids[owner as usize]],
            ..constraints_base.clone()
        };
        trace.update(&(t as u64).to_le_bytes());
        trace.update(&client.to_le_bytes());
        trace.update(&owner.to_le_bytes());

        // Legs seen from each candidate, and which candidates each set of rules allows.
        let first: Vec<f64> = known.iter().map(|r| world.rtt(client, r.node)).collect();
        let last: Vec<f64> = known.iter().map(|r| world.rtt(r.node, owner)).collect();
        let hard: Vec<usize> = (0..k)
            .filter(|&i| known[i].node != client && known[i].node != owner)
            .collect();
        let usable: Vec<bool> = (0..k)
            .map(|i| {
                known[i].node != client
                    && known[i].node != owner
                    && world.healthy(known[i], min_permille)
            })
            .collect();
        let path_rtt = |(a, b): Pick| first[a] + world.rtt(known[a].node, known[b].node) + last[b];

        // Fastest paths: over any two distinct candidates, and over usable ones at each
        // diversity level (levels nest: a fully diverse path is also prefix-diverse).
        let mut best_any: Option<(f64, Pick)> = None;
        let mut best_level: [Option<(f64, Pick)>; 3] = [None; 3];
        for &a in &hard {
            for &b in &hard {
                if a == b {
                    continue;
                }
                let total = path_rtt((a, b));
                if best_any.is_none_or(|(x, _)| total < x) {
                    best_any = Some((total, (a, b)));
                }
                if usable[a] && usable[b] {
                    let level = level_index(world.diversity(known[a], known[b]));
                    for slot in &mut best_level[level..] {
                        if slot.is_none_or(|(x, _)| total < x) {
                            *slot = Some((total, (a, b)));
                        }
                    }
                }
            }
        }
        let possible = best_level.iter().position(Option::is_some).map(level_of);

        let selection = match select(&candidates, &constraints, &mut select_rng) {
            Ok(s) => s,
            Err(e) => {
                if possible.is_some() {
                    violations.push((t, Violation::Failed(e)));
                }
                failed += 1;
                trace.update(b"failed");
                continue;
            }
        };
        for id in &selection.path {
            trace.update(id.as_bytes());
        }
        let trial = Trial {
            world: &world,
            known: &known,
            candidates: &candidates,
            usable: &usable,
        };
        let (chosen, broken) = trial.check(&selection, possible);
        violations.extend(broken.into_iter().map(|v| (t, v)));
        // Without a possible path, a selection broke a rule (the checks name it): nothing to
        // measure.
        let (Some(possible), Some(chosen)) = (possible, chosen) else {
            failed += 1;
            continue;
        };
        if possible == Diversity::Full {
            full_possible += 1;
        }
        let best_admissible = best_level[level_index(possible)].expect("the level is possible");
        if path_rtt(chosen) + 1e-9 < best_admissible.0 {
            violations.push((t, Violation::FasterThanOptimum));
        }
        let best_any = best_any.expect("admissible paths are paths");

        // Uniform choices.
        let uniform_any = {
            let a = hard[below(&mut uniform_rng, hard.len())];
            let mut b = hard[below(&mut uniform_rng, hard.len() - 1)];
            if b == a {
                b = hard[hard.len() - 1];
            }
            (a, b)
        };
        let usable_list: Vec<usize> = (0..k).filter(|&i| usable[i]).collect();
        let admissible = |(a, b): Pick| a != b && world.diversity(known[a], known[b]) <= possible;
        let uniform_admissible = (0..REJECTION_TRIES)
            .map(|_| {
                (
                    usable_list[below(&mut uniform_rng, usable_list.len())],
                    usable_list[below(&mut uniform_rng, usable_list.len())],
                )
            })
            .find(|&pick| admissible(pick))
            .unwrap_or_else(|| {
                let all: Vec<Pick> = usable_list
                    .iter()
                    .flat_map(|&a| usable_list.iter().map(move |&b| (a, b)))
                    .filter(|&pick| admissible(pick))
                    .collect();
                all[below(&mut uniform_rng, all.len())]
            });

        for (s, pick) in [
            (Strategy::Selected, chosen),
            (Strategy::UniformAdmissible, uniform_admissible),
            (Strategy::UniformAny, uniform_any),
            (Strategy::BestAdmissible, best_admissible.1),
            (Strategy::BestAny, best_any.1),
        ] {
            let acc = &mut acc[Strategy::ALL.iter().position(|x| *x == s).expect("listed")];
            let (a, b) = pick;
            let legs = [first[a], world.rtt(known[a].node, known[b].node), last[b]];
            let total: f64 = legs.iter().sum();
            acc.rtt.push(total);
            acc.stretch.push(total / best_any.0);
            for (sum, leg) in acc.legs.iter_mut().zip(legs) {
                *sum += leg;
            }
            if world.diversity(known[a], known[b]) == Diversity::Full {
                acc.full += 1;
            }
            if !usable[a] || !usable[b] {
                acc.unhealthy += 1;
            }
        }
    }

    let trials = acc[0].rtt.len();
    let share = |x: usize| x as f64 / trials.max(1) as f64;
    let strategies = Strategy::ALL
        .iter()
        .zip(acc)
        .map(|(&strategy, a)| StrategyStats {
            strategy,
            rtt: quantiles(&a.rtt),
            stretch: quantiles(&a.stretch),
            legs: a.legs.map(|l| l / trials.max(1) as f64),
            full_diversity: share(a.full),
            unhealthy: share(a.unhealthy),
            samples: a.rtt,
        })
        .collect();
    let mut relay_prefixes: Vec<u32> = world
        .relays
        .iter()
        .map(|r| world.prefix[r.node as usize])
        .collect();
    relay_prefixes.sort_unstable();
    relay_prefixes.dedup();
    let mut operators: Vec<u32> = world.relays.iter().filter_map(|r| r.operator).collect();
    operators.sort_unstable();
    operators.dedup();
    // Mean RTT of the model, from fixed pairs of a stream of its own.
    let mut mean_rng = ChaCha8Rng::seed_from_u64(p.seed);
    mean_rng.set_stream(4);
    let pairs = 10_000;
    let mean_rtt_ms = (0..pairs)
        .map(|_| {
            world.rtt(
                below(&mut mean_rng, n) as u32,
                below(&mut mean_rng, n) as u32,
            )
        })
        .sum::<f64>()
        / pairs as f64;
    PathReport {
        params: *p,
        relays: world.relays.len(),
        relay_prefixes: relay_prefixes.len(),
        operators: operators.len(),
        unhealthy_relays: world
            .relays
            .iter()
            .filter(|r| !world.healthy(r, min_permille))
            .count(),
        fresh_relays: world
            .relays
            .iter()
            .filter(|r| r.successes + r.failures == 0)
            .count(),
        candidates: k,
        trials,
        failed,
        full_possible,
        mean_rtt_ms,
        strategies,
        violations,
        trace: trace.finalize().to_hex().to_string(),
    }
}

fn level_index(d: Diversity) -> usize {
    match d {
        Diversity::Full => 0,
        Diversity::PrefixOnly => 1,
        Diversity::None => 2,
    }
}

fn level_of(i: usize) -> Diversity {
    [Diversity::Full, Diversity::PrefixOnly, Diversity::None][i]
}

/// What one trial knows, to check a selection against.
struct Trial<'a> {
    world: &'a World,
    known: &'a [&'a Relay],
    candidates: &'a [Candidate],
    usable: &'a [bool],
}

impl Trial<'_> {
    /// The rules `selection` broke, and its two relays (as candidate indices) if it has two
    /// distinct known ones. `possible` is the strictest diversity the candidates allowed, if
    /// they allowed any path.
    fn check(
        &self,
        selection: &Selection,
        possible: Option<Diversity>,
    ) -> (Option<Pick>, Vec<Violation>) {
        let mut broken = Vec::new();
        let mut picks = Vec::new();
        for id in &selection.path {
            let Some(i) = self.candidates.iter().position(|c| c.node == *id) else {
                broken.push(Violation::Unknown(*id));
                continue;
            };
            if picks.contains(&i) {
                broken.push(Violation::Twice(*id));
            } else if !self.usable[i] {
                let min = Constraints::default().min_success_permille;
                broken.push(if self.world.healthy(self.known[i], min) {
                    Violation::Endpoint(*id)
                } else {
                    Violation::Unhealthy(*id)
                });
            }
            picks.push(i);
        }
        if selection.path.len() != 2 {
            broken.push(Violation::Length(selection.path.len()));
        }
        let [a, b] = picks[..] else {
            return (None, broken);
        };
        let actual = self.world.diversity(self.known[a], self.known[b]);
        if actual != selection.diversity {
            broken.push(Violation::Misreported {
                claimed: selection.diversity,
                actual,
            });
        }
        if let Some(possible) = possible
            && actual > possible
        {
            broken.push(Violation::NotStrictest { actual, possible });
        }
        ((a != b).then_some((a, b)), broken)
    }
}
