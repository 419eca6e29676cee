//! Scenarios: build a network, disturb it, measure lookups.

use std::time::Instant;

use vx6_core::dht::{DhtConfig, LookupConfig, LookupId, LookupResult, Purpose};
use vx6_core::record::{NameClaim, name_key};
use vx6_core::{Identity, Record, SignedRecord};

use crate::net::{Behavior, Net, NetConfig, UNIX_EPOCH_AT_START};

/// What a scenario run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Nodes in the network.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Lookups measured.
    pub lookups: usize,
    /// Warm-session pool per node (see [`NetConfig::warm_pool`]).
    pub warm_pool: usize,
    /// Disjoint lookup paths.
    pub paths: usize,
    /// Queries in flight per path (Kademlia's α).
    pub alpha: usize,
    /// Fraction of honest nodes silently killed after bootstrap.
    pub dead: f64,
    /// Fraction of nodes that collude.
    pub adversaries: f64,
    /// Fraction of nodes that join, run their own lookups, and drop every request.
    pub droppers: f64,
    /// Message loss.
    pub loss: f64,
    /// Records published (value scenarios).
    pub publishers: usize,
    /// Fraction of nodes replaced per churn step (churn scenario).
    pub churn: f64,
    /// Random-id lookups per node after joining (bucket refresh).
    pub refreshes: usize,
}

impl Params {
    /// Defaults for `nodes` nodes.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            lookups: 1000,
            warm_pool: 64,
            paths: 1,
            alpha: 3,
            dead: 0.0,
            adversaries: 0.0,
            droppers: 0.0,
            loss: 0.0,
            publishers: 0,
            churn: 0.0,
            refreshes: 3,
        }
    }
}

/// Distribution summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

/// Summarises samples.
pub fn summarize(mut v: Vec<f64>) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Summary {
        p50: at(0.5),
        p99: at(0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        max: v[v.len() - 1],
    }
}

/// Measurements of one batch of lookups.
#[derive(Debug, Clone, Default)]
pub struct LookupStats {
    /// Lookups started.
    pub total: usize,
    /// Lookups that found what they sought.
    pub succeeded: usize,
    /// Rounds (deepest hop).
    pub hops: Summary,
    /// Messages sent.
    pub messages: Summary,
    /// Latency in mean RTTs, handshakes included.
    pub latency_rtt: Summary,
    /// Raw hop counts, for plots.
    pub hop_samples: Vec<u32>,
    /// Raw latencies in RTTs, for plots.
    pub latency_samples: Vec<f64>,
}

impl LookupStats {
    /// Success ratio.
    pub fn success(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.total as f64
        }
    }
}

/// Everything a scenario reports.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Parameters as text.
    pub params: String,
    /// Node lookups.
    pub node_lookups: Option<LookupStats>,
    /// Record resolutions.
    pub value_lookups: Option<LookupStats>,
    /// (minute, success ratio) over a churn run.
    pub timeline: Vec<(f64, f64)>,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Virtual seconds simulated.
    pub virtual_secs: f64,
    /// Mean RTT of the latency model, ms.
    pub mean_rtt_ms: f64,
    /// Hash of every delivered message.
    pub trace: String,
    /// Contacts in the routing tables of live nodes: mean, and the smallest.
    pub table_mean: f64,
    /// See `table_mean`.
    pub table_min: usize,
}

fn net_for(p: &Params) -> Net {
    Net::new(NetConfig {
        seed: p.seed,
        loss: p.loss,
        warm_pool: p.warm_pool,
        dht: DhtConfig {
            lookup: LookupConfig {
                paths: p.paths,
                alpha: p.alpha,
                ..LookupConfig::default()
            },
            ..DhtConfig::default()
        },
    })
}

/// Joins `p.nodes` nodes one after another (1 ms apart), each through a random earlier honest
/// node, each looking itself up, as a real node bootstraps; then every node refreshes its table
/// with `p.refreshes` lookups for random ids, as periodic bucket refresh does in a running
/// network. A fraction collude from the start.
pub fn bootstrap(p: &Params) -> Net {
    let mut net = net_for(p);
    for i in 0..p.nodes {
        // One draw per joining node: the first `adversaries` of the range collude, the next
        // `droppers` drop.
        let roll = if i > 0 {
            (net.random() % 1_000_000) as f64
        } else {
            f64::INFINITY
        };
        let behavior = if roll < p.adversaries * 1e6 {
            Behavior::Colluding
        } else if roll < (p.adversaries + p.droppers) * 1e6 {
            Behavior::Silent
        } else {
            Behavior::Honest
        };
        let me = net.add_node(behavior);
        if i > 0 {
            let via = loop {
                let c = (net.random() % i as u64) as u32;
                if net.behavior(c) == Behavior::Honest {
                    break c;
                }
            };
            let contact = net.contact(via);
            let now = net.now();
            let target = net.contact(me).id;
            net.dht(me).add_contact(contact, now);
            let _ = net.dht(me).start(now, target, Purpose::FindNode);
            net.poke(me);
        }
        let t = net.now_us() + 1_000;
        net.run_until(t);
    }
    net.run_to_idle();
    // Bucket refresh, as every node runs it periodically: one lookup for a random id each
    // fills the far buckets that joining alone leaves sparse.
    for i in (0..p.nodes as u32).cycle().take(p.nodes * p.refreshes) {
        let target = net.random_id();
        let now = net.now();
        let _ = net.dht(i).start(now, target, Purpose::FindNode);
        net.poke(i);
        let t = net.now_us() + 200;
        net.run_until(t);
    }
    net.run_to_idle();
    net.take_finished();
    net
}

fn random_honest_alive(net: &mut Net) -> u32 {
    let n = net.len() as u64;
    loop {
        let i = (net.random() % n) as u32;
        if net.alive(i) && net.behavior(i) == Behavior::Honest {
            return i;
        }
    }
}

/// Random node lookups from random live honest nodes; success means the live honest node
/// closest to the target is among the results.
pub fn node_lookups(net: &mut Net, count: usize, mean_rtt_us: f64) -> LookupStats {
    let mut started = Vec::new();
    for _ in 0..count {
        let from = random_honest_alive(net);
        let target = net.random_id();
        let now = net.now();
        if let Ok(id) = net.dht(from).start(now, target, Purpose::FindNode) {
            started.push((from, id, target));
        }
        net.poke(from);
        let t = net.now_us() + 5_000;
        net.run_until(t);
    }
    measure(net, started, mean_rtt_us, |net, from, r, target| {
        net.true_closest(target, from)
            .is_some_and(|t| r.closest.iter().any(|c| c.id == t))
    })
}

/// Waits for the lookups in `started` and summarises them; `success` judges each result.
fn measure<T>(
    net: &mut Net,
    started: Vec<(u32, LookupId, T)>,
    mean_rtt_us: f64,
    success: impl Fn(&Net, u32, &LookupResult, &T) -> bool,
) -> LookupStats {
    net.run_to_idle();
    let finished = net.take_finished();
    let mut stats = LookupStats {
        total: started.len(),
        ..LookupStats::default()
    };
    let (mut hops, mut msgs, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    for (from, id, wanted) in started {
        let Some(f) = finished
            .iter()
            .find(|f| f.node == from && f.result.id == id)
        else {
            continue;
        };
        let r = &f.result;
        if success(net, from, r, &wanted) {
            stats.succeeded += 1;
        }
        hops.push(f64::from(r.hops));
        stats.hop_samples.push(r.hops);
        msgs.push(f64::from(r.queries));
        let l = r.finished.duration_since(r.started).as_micros() as f64 / mean_rtt_us;
        lat.push(l);
        stats.latency_samples.push(l);
    }
    stats.hops = summarize(hops);
    stats.messages = summarize(msgs);
    stats.latency_rtt = summarize(lat);
    stats
}

/// Publishes a name claim from each of `count` random live honest nodes; returns the names.
pub fn publish_claims(net: &mut Net, count: usize, seed: u64) -> Vec<(String, SignedRecord)> {
    let mut out = Vec::new();
    for k in 0..count {
        let from = random_honest_alive(net);
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..16].copy_from_slice(&(k as u64).to_le_bytes());
        let identity = Identity::from_secret_bytes(&secret);
        let name = format!("user{k}");
        let unix = UNIX_EPOCH_AT_START + net.now_us() / 1_000_000;
        let record = SignedRecord::sign(
            &identity,
            Record::NameClaim(NameClaim {
                seq: unix,
                expires_at: unix + 24 * 3600,
                username: name.parse().expect("valid label"),
            }),
        )
        .expect("small record");
        let now = net.now();
        let _ = net
            .dht(from)
            .publish(now, unix, std::slice::from_ref(&record));
        net.poke(from);
        out.push((name, record));
        let t = net.now_us() + 2_000;
        net.run_until(t);
    }
    net.run_to_idle();
    net.take_finished();
    out
}

/// Resolves random published names from random live honest nodes; success means the claim
/// came back intact.
pub fn resolve_claims(
    net: &mut Net,
    published: &[(String, SignedRecord)],
    count: usize,
    mean_rtt_us: f64,
) -> LookupStats {
    let mut started = Vec::new();
    for _ in 0..count {
        let (name, record) = &published[(net.random() % published.len() as u64) as usize];
        let from = random_honest_alive(net);
        let key = name_key(&name.parse().expect("valid label"));
        let now = net.now();
        if let Ok(id) = net.dht(from).start(now, key, Purpose::FindValue) {
            started.push((from, id, record.clone()));
        }
        net.poke(from);
        let t = net.now_us() + 5_000;
        net.run_until(t);
    }
    measure(
        net,
        started,
        mean_rtt_us,
        |_, _, r, record: &SignedRecord| {
            r.records.iter().any(|x| x.as_bytes() == record.as_bytes())
        },
    )
}

/// Runs `steps` churn steps on `net`: nodes leave silently, as many return with fresh state, the
/// published records are spread again, and a share of the resolutions is measured per step.
fn churn_steps_on(
    net: &mut Net,
    published: &[(String, SignedRecord)],
    p: &Params,
    steps: usize,
    rtt: f64,
) -> (Vec<(f64, f64)>, LookupStats) {
    let mut timeline = Vec::new();
    let mut all = LookupStats::default();
    let per_step = (p.lookups / steps.max(1)).max(1);
    for step in 0..steps {
        // Churn: a fraction leaves silently, as many come back fresh through a random peer.
        let n = net.len() as u32;
        let mut left = vec![false; n as usize];
        for i in 0..n {
            if net.alive(i) && ((net.random() % 1_000_000) as f64) < p.churn * 1e6 {
                net.kill(i);
                left[i as usize] = true;
            }
        }
        for i in 0..n {
            if !net.alive(i) && !left[i as usize] {
                let via_index = random_honest_alive(net);
                let via = net.contact(via_index);
                net.revive(i, via);
                let now = net.now();
                let target = net.contact(i).id;
                let _ = net.dht(i).start(now, target, Purpose::FindNode);
                net.poke(i);
            }
        }
        net.run_to_idle();
        net.take_finished();
        // Records are spread again so they reach the nodes now closest to their keys (owners
        // republish on a timer; signed records may be republished by anyone).
        let records: Vec<_> = published.iter().map(|(_, r)| r.clone()).collect();
        for r in records {
            let from = random_honest_alive(net);
            let now = net.now();
            let unix = UNIX_EPOCH_AT_START + net.now_us() / 1_000_000;
            let _ = net.dht(from).publish(now, unix, std::slice::from_ref(&r));
            net.poke(from);
        }
        net.run_to_idle();
        net.take_finished();
        let s = resolve_claims(net, published, per_step, rtt);
        timeline.push(((step + 1) as f64, s.success()));
        all.total += s.total;
        all.succeeded += s.succeeded;
        all.hop_samples.extend(&s.hop_samples);
        all.latency_samples.extend(&s.latency_samples);
    }
    all.hops = summarize(all.hop_samples.iter().map(|h| f64::from(*h)).collect());
    all.latency_rtt = summarize(all.latency_samples.clone());
    all.messages = Summary::default();
    (timeline, all)
}

/// Kills a fraction of the live honest nodes, silently.
pub fn kill_fraction(net: &mut Net, fraction: f64) -> usize {
    let mut killed = 0;
    for i in 0..net.len() as u32 {
        if net.alive(i)
            && net.behavior(i) == Behavior::Honest
            && ((net.random() % 1_000_000) as f64) < fraction * 1e6
        {
            net.kill(i);
            killed += 1;
        }
    }
    killed
}

fn finish(
    name: &str,
    p: &Params,
    net: &mut Net,
    started: Instant,
    node_lookups: Option<LookupStats>,
    value_lookups: Option<LookupStats>,
    timeline: Vec<(f64, f64)>,
) -> Outcome {
    let sizes: Vec<usize> = (0..net.len() as u32)
        .filter(|i| net.alive(*i))
        .map(|i| net.dht_ref(i).table().len())
        .collect();
    Outcome {
        name: name.to_owned(),
        params: format!(
            "nodes {}, seed {}, lookups {}, refresh lookups per node {}, warm pool {}, paths of ordinary lookups {} (own-id lookups, stores and value retries: {}), α {}, dead {:.0}%, colluding {:.0}%, dropping {:.0}%, loss {:.1}%",
            p.nodes,
            p.seed,
            p.lookups,
            p.refreshes,
            p.warm_pool,
            p.paths,
            DhtConfig::default().disjoint_paths.max(p.paths),
            p.alpha,
            p.dead * 100.0,
            p.adversaries * 100.0,
            p.droppers * 100.0,
            p.loss * 100.0
        ),
        node_lookups,
        value_lookups,
        timeline,
        events: net.take_phase_events(),
        wall_secs: started.elapsed().as_secs_f64(),
        virtual_secs: net.now_us() as f64 / 1e6,
        mean_rtt_ms: 0.0,
        trace: net.trace_hash(),
        table_mean: sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
        table_min: sizes.iter().copied().min().unwrap_or(0),
    }
}

/// Bootstrap, then node lookups and record resolution in a stable (or damaged) network.
pub fn run_lookups(name: &str, p: &Params) -> Outcome {
    #[allow(clippy::disallowed_methods)] // wall-clock cost of the run, for the report only
    let started = Instant::now();
    let mut net = bootstrap(p);
    let rtt = net.mean_rtt_us(10_000);
    let published = if p.publishers > 0 {
        publish_claims(&mut net, p.publishers, p.seed)
    } else {
        Vec::new()
    };
    if p.dead > 0.0 {
        kill_fraction(&mut net, p.dead);
    }
    let nodes = node_lookups(&mut net, p.lookups, rtt);
    let values =
        (!published.is_empty()).then(|| resolve_claims(&mut net, &published, p.lookups, rtt));
    let mut o = finish(name, p, &mut net, started, Some(nodes), values, Vec::new());
    o.mean_rtt_ms = rtt / 1000.0;
    o
}

/// Publish, then resolve while nodes keep leaving and coming back (with empty state), with
/// owners republishing every step. Reports success per step.
pub fn run_churn(name: &str, p: &Params, steps: usize) -> Outcome {
    #[allow(clippy::disallowed_methods)] // wall-clock cost of the run, for the report only
    let started = Instant::now();
    let mut net = bootstrap(p);
    let rtt = net.mean_rtt_us(10_000);
    let published = publish_claims(&mut net, p.publishers.max(1), p.seed);
    let (timeline, all) = churn_steps_on(&mut net, &published, p, steps, rtt);
    let mut o = finish(name, p, &mut net, started, None, Some(all), timeline);
    o.mean_rtt_ms = rtt / 1000.0;
    o
}

/// The whole suite on as few bootstraps as possible (two: honest, and with colluding nodes):
/// steady state with a warm-session pool, with no warm sessions, and with no handshakes at all;
/// 20% dead; churn with publish/resolve, and 20% colluding
/// adversaries with three disjoint paths and with one. Each outcome's wall time covers its own
/// phase; bootstraps are reported as outcomes of their own.
pub fn run_suite(p: &Params, churn_steps: usize, adversaries: bool) -> Vec<Outcome> {
    let mut out = Vec::new();
    #[allow(clippy::disallowed_methods)] // wall-clock cost, for the report only
    let clock = Instant::now;
    let t = clock();
    let mut net = bootstrap(p);
    out.push(finish(
        "bootstrap (honest network)",
        p,
        &mut net,
        t,
        None,
        None,
        Vec::new(),
    ));
    let rtt = net.mean_rtt_us(10_000);
    let published = publish_claims(&mut net, p.publishers.max(1), p.seed);

    let t = clock();
    let nodes = node_lookups(&mut net, p.lookups, rtt);
    let values = resolve_claims(&mut net, &published, p.lookups, rtt);
    out.push(finish(
        "steady state",
        p,
        &mut net,
        t,
        Some(nodes),
        Some(values),
        Vec::new(),
    ));

    let t = clock();
    let pool = p.warm_pool;
    net.set_warm_pool(0);
    let nodes = node_lookups(&mut net, p.lookups, rtt);
    let values = resolve_claims(&mut net, &published, p.lookups, rtt);
    net.set_warm_pool(pool);
    let cold = Params { warm_pool: 0, ..*p };
    out.push(finish(
        "steady state, no warm sessions (every hop pays a handshake)",
        &cold,
        &mut net,
        t,
        Some(nodes),
        Some(values),
        Vec::new(),
    ));

    let t = clock();
    net.set_warm_pool(usize::MAX);
    let nodes = node_lookups(&mut net, p.lookups, rtt);
    let values = resolve_claims(&mut net, &published, p.lookups, rtt);
    net.set_warm_pool(pool);
    let datagrams = Params {
        warm_pool: usize::MAX,
        ..*p
    };
    out.push(finish(
        "steady state, no handshakes (DHT RPCs as signed datagrams)",
        &datagrams,
        &mut net,
        t,
        Some(nodes),
        Some(values),
        Vec::new(),
    ));

    let t = clock();
    kill_fraction(&mut net, 0.2);
    let nodes = node_lookups(&mut net, p.lookups, rtt);
    let values = resolve_claims(&mut net, &published, p.lookups, rtt);
    let dead = Params { dead: 0.2, ..*p };
    out.push(finish(
        "20% of nodes silently dead",
        &dead,
        &mut net,
        t,
        Some(nodes),
        Some(values),
        Vec::new(),
    ));

    let t = clock();
    let (timeline, all) = churn_steps_on(&mut net, &published, p, churn_steps, rtt);
    let churn = Params {
        churn: p.churn,
        ..*p
    };
    out.push(finish(
        &format!(
            "publish and resolve under churn ({:.0}% of nodes replaced per step, dead nodes return fresh)",
            p.churn * 100.0
        ),
        &churn,
        &mut net,
        t,
        None,
        Some(all),
        timeline,
    ));
    drop(net);
    if !adversaries {
        for o in &mut out {
            o.mean_rtt_ms = rtt / 1000.0;
        }
        return out;
    }

    // Joins and stores take the DHT's disjoint paths on their own; ordinary lookups are
    // measured over three disjoint paths and over one (whose value lookups fall back to three
    // when they find nothing).
    let adv = Params {
        adversaries: 0.2,
        paths: 1,
        ..*p
    };
    let t = clock();
    let mut net = bootstrap(&adv);
    out.push(finish(
        "bootstrap (20% colluding)",
        &adv,
        &mut net,
        t,
        None,
        None,
        Vec::new(),
    ));
    let published = publish_claims(&mut net, p.publishers.max(1), p.seed);
    for paths in [3, 1] {
        let t = clock();
        net.set_paths(paths);
        let nodes = node_lookups(&mut net, p.lookups, rtt);
        let values = resolve_claims(&mut net, &published, p.lookups, rtt);
        let q = Params { paths, ..adv };
        out.push(finish(
            &format!("20% colluding adversaries, {paths} disjoint path(s)"),
            &q,
            &mut net,
            t,
            Some(nodes),
            Some(values),
            Vec::new(),
        ));
    }
    for o in &mut out {
        o.mean_rtt_ms = rtt / 1000.0;
    }
    out
}
