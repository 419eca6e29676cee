//! What `vx6 status` shows: the replies to the control requests `status` (text) and
//! `status json`.

use serde::Serialize;
use std::collections::BTreeMap;

use vx6_core::Failure;
use vx6_core::NodeId;
use vx6_core::node::{CircuitRole, CircuitStatus, Counters, NodeStatus, PolicyStatus, Route};
use vx6_core::reach::{Mapping, Verdict};
use vx6_core::relay::{SelectError, Selection};
use vx6_core::service::{Access, ServiceTable};

use crate::spec::ForwardSpec;

#[derive(Serialize)]
struct StatusJson {
    node_id: String,
    sessions: Vec<SessionJson>,
    services: Vec<ServiceJson>,
    forwards: Vec<ForwardJson>,
    streams: usize,
    circuits: Vec<CircuitJson>,
    relays_known: usize,
    handshakes_in_flight: usize,
    dht: DhtJson,
    reachability: ReachabilityJson,
    /// Links plain `auto` forwards fell back to, one per owner: managed, so each moves to the
    /// direct path once that works.
    auto_links: Vec<AutoLinkJson>,
    counters: Counters,
    /// Path switches of managed forwards, by reason.
    path_switches: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct DhtJson {
    peers: usize,
    records_held: usize,
    requests: u64,
    stored: u64,
    rejected: u64,
    bad_answers: u64,
    rpc_failures: u64,
    lookups_found: u64,
    lookups_not_found: u64,
    lookups_nodes: u64,
    stores_done: u64,
    stores_failed: u64,
}

#[derive(Serialize)]
struct PathJson {
    kind: &'static str,
    relays: Vec<String>,
    rtt_ms: Option<f64>,
    loss_percent: f64,
    jitter_ms: Option<f64>,
    samples: u16,
    sla: &'static str,
}

#[derive(Serialize)]
struct CircuitJson {
    role: &'static str,
    owner: Option<String>,
    path: Vec<String>,
    ready: bool,
    /// Client: carries the link's datagrams (else standby). Owner: replies go out on it.
    active: bool,
    rtt_ms: Option<f64>,
    probes_sent: u64,
    probes_answered: u64,
    packets: u64,
    bytes: u64,
    limits: Vec<LimitsJson>,
}

#[derive(Serialize)]
struct LimitsJson {
    max_circuits: u32,
    max_per_peer: u32,
    idle_expiry_secs: u32,
    setups_per_second: u32,
}

fn role_name(r: CircuitRole) -> &'static str {
    match r {
        CircuitRole::Client => "client",
        CircuitRole::Relay => "relay",
        CircuitRole::Owner => "owner",
    }
}

fn circuit_json(c: &CircuitStatus) -> CircuitJson {
    CircuitJson {
        role: role_name(c.role),
        owner: c.owner.map(|o| o.to_string()),
        path: c.path.iter().map(ToString::to_string).collect(),
        ready: c.ready,
        active: c.active,
        rtt_ms: c.rtt.map(|r| r.as_secs_f64() * 1000.0),
        probes_sent: c.probes_sent,
        probes_answered: c.probes_answered,
        packets: c.packets,
        bytes: c.bytes,
        limits: c
            .limits
            .iter()
            .map(|l| LimitsJson {
                max_circuits: l.max_circuits,
                max_per_peer: l.max_per_peer,
                idle_expiry_secs: l.idle_expiry_secs,
                setups_per_second: l.setups_per_second,
            })
            .collect(),
    }
}

fn route_text(r: Route) -> String {
    match r {
        Route::Direct => "direct".into(),
        Route::Relay { hops } => format!("relay, {hops} hops"),
        Route::Auto { hops } => format!("auto, {hops} hops if relayed"),
        Route::Policy(_) => "policy".into(),
    }
}

/// `vx6 path NAME`: the path of the link to `owner` if one is up, and what selection chooses
/// now, with the reason for every relay passed over.
pub fn path(
    name: &str,
    owner: NodeId,
    circuits: &[CircuitStatus],
    current: Option<Selection>,
    fresh: Result<Selection, SelectError>,
) -> String {
    use std::fmt::Write;
    let mut out = format!("{name} is node {owner}\n");
    for c in circuits
        .iter()
        .filter(|c| c.role == CircuitRole::Client && c.owner == Some(owner))
    {
        let role = match (c.ready, c.active) {
            (false, _) => "building",
            (true, true) => "active",
            (true, false) => "standby",
        };
        let hops = if c.path.is_empty() {
            "direct (a circuit of no relays)".to_owned()
        } else {
            let p: Vec<String> = c.path.iter().map(ToString::to_string).collect();
            format!("relay {}", p.join(" > "))
        };
        let rtt = c
            .rtt
            .map_or(String::new(), |r| format!(", rtt {:.2} ms", ms(r)));
        let _ = writeln!(out, "{role}: {hops}{rtt}");
    }
    let show = |out: &mut String, what: &str, s: &Selection| {
        let _ = writeln!(out, "{what} ({:?} diversity):", s.diversity);
        for (i, n) in s.path.iter().enumerate() {
            let _ = writeln!(out, "  hop {} {n}", i + 1);
        }
        for (n, why) in &s.passed_over {
            let _ = writeln!(out, "  passed over {n}: {why:?}");
        }
    };
    if let Some(s) = &current {
        show(&mut out, "last built", s);
    }
    match fresh {
        Ok(s) => show(&mut out, "chosen now", &s),
        Err(e) => {
            let _ = writeln!(out, "no path now: {e}");
        }
    }
    out
}

#[derive(Serialize)]
struct SessionJson {
    id: u64,
    peer: Option<String>,
    transport: &'static str,
    remote: String,
    outgoing: bool,
    established: bool,
    rtt_ms: Option<f64>,
    mtu: Option<u16>,
    streams: usize,
    bytes_sent: u64,
    bytes_received: u64,
}

#[derive(Serialize)]
struct ServiceJson {
    name: String,
    target: String,
    access: String,
}

#[derive(Serialize)]
struct ForwardJson {
    target: String,
    local: String,
    /// direct, relay or auto.
    via: &'static str,
    hops: Option<u8>,
    connections: usize,
    /// Connections that failed, in total and by cause.
    failed: u64,
    failed_by_cause: BTreeMap<&'static str, u64>,
    last_failure: Option<String>,
    last_failure_cause: Option<&'static str>,
    /// Managed forwards: the policy, in the form `--sla` takes.
    policy: Option<String>,
    /// Managed forwards: the path carrying the link now (direct or relay).
    path: Option<&'static str>,
    /// Managed forwards: that path against the SLA (met, violated, unknown).
    sla: Option<&'static str>,
    /// Managed forwards: path switches so far, and why the last one happened.
    switches: u64,
    last_switch: Option<String>,
    /// Managed forwards: every path kept, with what its probes measure.
    paths: Vec<PathJson>,
}

#[derive(Serialize)]
struct AutoLinkJson {
    owner: String,
    /// The path carrying the link now (direct or relay).
    path: Option<&'static str>,
    switches: u64,
    last_switch: Option<String>,
    paths: Vec<PathJson>,
}

/// Connections of one forward that failed, and why.
#[derive(Debug, Clone, Default)]
pub struct ForwardFailures {
    failed: u64,
    by_cause: BTreeMap<&'static str, u64>,
    last: Option<Failure>,
}

impl ForwardFailures {
    /// Counts one failed connection.
    pub fn record(&mut self, failure: Failure) {
        self.failed += 1;
        *self.by_cause.entry(failure.cause.as_str()).or_default() += 1;
        self.last = Some(failure);
    }
}

/// What the daemon knows besides the node's own status.
pub struct Context<'a> {
    pub status: NodeStatus,
    pub services: &'a ServiceTable,
    pub forwards: Vec<ForwardSpec>,
    pub forward_connections: Vec<usize>,
    pub forward_failures: &'a [ForwardFailures],
    /// Per forward, the state of its managed link (if it is managed and has one).
    pub policies: Vec<Option<PolicyStatus>>,
    /// The links `auto` streams fell back to.
    pub auto_links: Vec<PolicyStatus>,
    pub dht: vx6_core::dht::DhtStats,
    pub dht_peers: usize,
    pub records_held: usize,
    pub path_switches: BTreeMap<&'static str, u64>,
    /// Addresses in the node record.
    pub published: Vec<std::net::SocketAddr>,
    /// Addresses enough peers agree they see this node at.
    pub observed: Vec<std::net::SocketAddr>,
    /// The mapping per family (`true`: IPv4), and how many peers answered.
    pub reachability: (Vec<(bool, Mapping)>, usize),
    /// Whether peers can dial the node, per family (`true`: IPv4).
    pub dial_backs: Vec<(bool, Verdict)>,
    /// The relays the node record names as the way in.
    pub home_relays: &'a [NodeId],
}

#[derive(Serialize)]
struct ReachabilityJson {
    published: Vec<String>,
    observed: Vec<String>,
    reporters: usize,
    families: Vec<FamilyJson>,
    via: Vec<String>,
}

#[derive(Serialize, PartialEq, Eq)]
struct FamilyJson {
    family: &'static str,
    /// `public`, `firewalled`, `behind_nat`, `nat_forwarded` or `unknown`.
    state: &'static str,
    mapping: &'static str,
    dialable: &'static str,
}

/// What the mapping and the dial-backs of one family say together.
fn family_state(mapping: Option<Mapping>, verdict: Verdict) -> &'static str {
    match (mapping, verdict) {
        (_, Verdict::Unknown) => "unknown",
        (Some(Mapping::None) | None, Verdict::Reachable) => "public",
        (Some(Mapping::None) | None, Verdict::Unreachable) => "firewalled",
        (Some(_), Verdict::Reachable) => "nat_forwarded",
        (Some(_), Verdict::Unreachable) => "behind_nat",
    }
}

fn reachability_json(ctx: &Context<'_>) -> ReachabilityJson {
    let mut families: Vec<bool> = ctx
        .reachability
        .0
        .iter()
        .map(|(v4, _)| *v4)
        .chain(ctx.dial_backs.iter().map(|(v4, _)| *v4))
        .collect();
    families.sort_unstable_by_key(|v4| !*v4);
    families.dedup();
    ReachabilityJson {
        published: ctx.published.iter().map(ToString::to_string).collect(),
        observed: ctx.observed.iter().map(ToString::to_string).collect(),
        reporters: ctx.reachability.1,
        families: families
            .into_iter()
            .map(|v4| {
                let mapping = ctx
                    .reachability
                    .0
                    .iter()
                    .find(|(f, _)| *f == v4)
                    .map(|m| m.1);
                let verdict = ctx
                    .dial_backs
                    .iter()
                    .find(|(f, _)| *f == v4)
                    .map_or(Verdict::Unknown, |d| d.1);
                FamilyJson {
                    family: if v4 { "ipv4" } else { "ipv6" },
                    state: family_state(mapping, verdict),
                    mapping: mapping.map_or("unknown", Mapping::as_str),
                    dialable: verdict.as_str(),
                }
            })
            .collect(),
        via: ctx.home_relays.iter().map(ToString::to_string).collect(),
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn paths_json(p: &PolicyStatus) -> Vec<PathJson> {
    p.paths
        .iter()
        .map(|(kind, relays, stats, sla)| PathJson {
            kind: kind.as_str(),
            relays: relays.iter().map(ToString::to_string).collect(),
            rtt_ms: stats.rtt.map(ms),
            loss_percent: f64::from(stats.loss_permille) / 10.0,
            jitter_ms: stats.jitter.map(ms),
            samples: stats.samples,
            sla: sla.as_str(),
        })
        .collect()
}

/// The via of a forward: its policy's preference if it is managed.
fn via_of(f: &ForwardSpec) -> (&'static str, Option<u8>) {
    use vx6_core::policy::Prefer;
    if let Some(p) = f.policy {
        let via = match p.prefer {
            Prefer::Direct => "direct",
            Prefer::Relay => "relay",
            Prefer::Auto => "auto",
        };
        return (via, Some(p.hops));
    }
    match f.route() {
        Route::Direct => ("direct", None),
        Route::Relay { hops } => ("relay", Some(hops)),
        Route::Auto { hops } => ("auto", Some(hops)),
        Route::Policy(_) => ("auto", None),
    }
}

/// The first 12 characters of a node id, for one-line output.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn transport_name(t: vx6_core::record::Transport) -> &'static str {
    match t {
        vx6_core::record::Transport::Quic => "quic",
        vx6_core::record::Transport::Tcp => "tcp",
    }
}

fn forward_target(f: &ForwardSpec) -> String {
    f.target.to_string()
}

fn access_text(a: &Access) -> String {
    match a {
        Access::Public => "public".into(),
        Access::Allow(set) => format!(
            "allow {}",
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// `vx6 status`: the daemon's state as text, or as JSON.
pub fn answer(as_json: bool, ctx: &Context<'_>) -> String {
    match as_json {
        true => json(ctx),
        false => text(ctx),
    }
}

fn json(ctx: &Context<'_>) -> String {
    let s = &ctx.status;
    let doc = StatusJson {
        node_id: s.node_id.to_string(),
        sessions: s
            .sessions
            .iter()
            .map(|x| SessionJson {
                id: x.id,
                peer: x.peer.map(|p| p.to_string()),
                transport: transport_name(x.transport),
                remote: x.remote.to_string(),
                outgoing: x.outgoing,
                established: x.established,
                rtt_ms: x.rtt.map(|r| r.as_secs_f64() * 1000.0),
                mtu: x.mtu,
                streams: x.streams,
                bytes_sent: x.bytes_sent,
                bytes_received: x.bytes_received,
            })
            .collect(),
        services: ctx
            .services
            .iter()
            .map(|(name, svc)| ServiceJson {
                name: name.to_string(),
                target: svc.target.to_string(),
                access: access_text(&svc.access),
            })
            .collect(),
        forwards: ctx
            .forwards
            .iter()
            .zip(&ctx.forward_connections)
            .zip(ctx.forward_failures)
            .zip(&ctx.policies)
            .map(|(((f, n), failed), managed)| ForwardJson {
                target: forward_target(f),
                local: f.local.to_string(),
                via: via_of(f).0,
                hops: via_of(f).1,
                connections: *n,
                failed: failed.failed,
                failed_by_cause: failed.by_cause.clone(),
                last_failure: failed.last.as_ref().map(ToString::to_string),
                last_failure_cause: failed.last.as_ref().map(|l| l.cause.as_str()),
                policy: f.policy.map(|p| p.to_string()),
                path: managed.as_ref().and_then(|m| m.path).map(|k| k.as_str()),
                sla: f
                    .policy
                    .map(|_| managed.as_ref().map_or("unknown", |m| m.sla.as_str())),
                switches: managed.as_ref().map_or(0, |m| m.switches),
                last_switch: managed
                    .as_ref()
                    .and_then(|m| m.last_reason)
                    .map(|r| r.to_string()),
                paths: managed.as_ref().map_or_else(Vec::new, paths_json),
            })
            .collect(),
        auto_links: ctx
            .auto_links
            .iter()
            .map(|l| AutoLinkJson {
                owner: l.owner.to_string(),
                path: l.path.map(|k| k.as_str()),
                switches: l.switches,
                last_switch: l.last_reason.map(|r| r.to_string()),
                paths: paths_json(l),
            })
            .collect(),
        streams: s.streams,
        circuits: s.circuits.iter().map(circuit_json).collect(),
        relays_known: s.relays_known,
        handshakes_in_flight: s.handshakes_in_flight,
        dht: DhtJson {
            peers: ctx.dht_peers,
            records_held: ctx.records_held,
            requests: ctx.dht.requests,
            stored: ctx.dht.stored,
            rejected: ctx.dht.rejected,
            bad_answers: ctx.dht.bad_answers,
            rpc_failures: ctx.dht.rpc_failures,
            lookups_found: ctx.dht.lookups_found,
            lookups_not_found: ctx.dht.lookups_not_found,
            lookups_nodes: ctx.dht.lookups_nodes,
            stores_done: ctx.dht.stores_done,
            stores_failed: ctx.dht.stores_failed,
        },
        reachability: reachability_json(ctx),
        counters: s.counters,
        path_switches: ctx.path_switches.clone(),
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("error: {e}"));
    out.push('\n');
    out
}

/// A managed link's path, switches and paths, under its forward's line.
fn managed_text(out: &mut String, m: &PolicyStatus) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "     path {} (sla {}), {} switches{}",
        m.path.map_or("none", |k| k.as_str()),
        m.sla.as_str(),
        m.switches,
        m.last_reason
            .map_or(String::new(), |r| format!(", last: {r}"))
    );
    for (kind, relays, stats, sla) in &m.paths {
        let _ = writeln!(
            out,
            "       {kind:<6} {} hops rtt {} loss {:.1}% jitter {} ({} probes) sla {}",
            relays.len(),
            stats
                .rtt
                .map_or("-".to_owned(), |r| format!("{:.2}ms", ms(r))),
            f64::from(stats.loss_permille) / 10.0,
            stats
                .jitter
                .map_or("-".to_owned(), |r| format!("{:.2}ms", ms(r))),
            stats.samples,
            sla.as_str()
        );
    }
}

fn text(ctx: &Context<'_>) -> String {
    use std::fmt::Write;
    let s = &ctx.status;
    let mut out = String::new();
    let _ = writeln!(out, "node {}", s.node_id);
    let r = reachability_json(ctx);
    let families: Vec<String> = r
        .families
        .iter()
        .map(|f| {
            format!(
                "{} {} (mapping {}, dial-backs: {})",
                f.family, f.state, f.mapping, f.dialable
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "published at: {}\nseen at: {} ({} peers answered)\nreachability: {}",
        if r.published.is_empty() {
            "(nothing)".to_owned()
        } else {
            r.published.join(", ")
        },
        if r.observed.is_empty() {
            "(no agreement yet)".to_owned()
        } else {
            r.observed.join(", ")
        },
        r.reporters,
        if families.is_empty() {
            "unknown".to_owned()
        } else {
            families.join(", ")
        }
    );
    if !r.via.is_empty() {
        let _ = writeln!(out, "way in: through relay(s) {}", r.via.join(", "));
    }
    let _ = writeln!(out, "\nsessions ({}):", s.sessions.len());
    for x in &s.sessions {
        let _ = writeln!(
            out,
            "  {} {:<4} {:<40} peer {} {} rtt {}{} streams {} sent {} recv {}",
            if x.outgoing { "->" } else { "<-" },
            transport_name(x.transport),
            x.remote.to_string(),
            x.peer.map_or("(handshaking)".to_owned(), |p| p.to_string()),
            if x.established { "up" } else { "pending" },
            x.rtt.map_or("-".to_owned(), |r| format!(
                "{:.2}ms",
                r.as_secs_f64() * 1000.0
            )),
            x.mtu.map_or(String::new(), |m| format!(" mtu {m}")),
            x.streams,
            x.bytes_sent,
            x.bytes_received
        );
    }
    let _ = writeln!(out, "\nservices:");
    for (name, svc) in ctx.services.iter() {
        let _ = writeln!(
            out,
            "  {name} -> {} ({})",
            svc.target,
            access_text(&svc.access)
        );
    }
    let _ = writeln!(out, "\nforwards:");
    for (((f, n), failed), managed) in ctx
        .forwards
        .iter()
        .zip(&ctx.forward_connections)
        .zip(ctx.forward_failures)
        .zip(&ctx.policies)
    {
        let via = match f.policy {
            Some(p) => format!("policy {p}"),
            None => route_text(f.route()),
        };
        let _ = writeln!(
            out,
            "  {} -> {} via {via} ({n} connections, {} failed)",
            f.local,
            forward_target(f),
            failed.failed
        );
        if let Some(m) = managed {
            managed_text(&mut out, m);
        }
        if let Some(last) = &failed.last {
            let _ = writeln!(out, "     last failure: {last} ({})", last.cause.as_str());
        }
    }
    if !ctx.auto_links.is_empty() {
        let _ = writeln!(
            out,
            "\nauto links (auto forwards that fell back to relays):"
        );
        for l in &ctx.auto_links {
            let _ = writeln!(out, "  to node {}", l.owner);
            managed_text(&mut out, l);
        }
    }
    let _ = writeln!(
        out,
        "\ncircuits ({}; {} relays known):",
        s.circuits.len(),
        s.relays_known
    );
    for c in &s.circuits {
        let state = match (c.role, c.ready, c.active) {
            (_, false, _) => "building",
            (CircuitRole::Client, true, true) => "active",
            (CircuitRole::Client, true, false) => "standby",
            (CircuitRole::Owner, true, true) => "replying",
            _ => "up",
        };
        let path: Vec<String> = c.path.iter().map(|n| short(&n.to_string())).collect();
        let _ = writeln!(
            out,
            "  {:<6} {:<8} {}{} hops [{}] rtt {} probes {}/{} packets {} bytes {}",
            role_name(c.role),
            state,
            c.owner
                .map_or(String::new(), |o| format!("to {} ", short(&o.to_string()))),
            c.path.len(),
            path.join(" > "),
            c.rtt.map_or("-".to_owned(), |r| format!(
                "{:.2}ms",
                r.as_secs_f64() * 1000.0
            )),
            c.probes_answered,
            c.probes_sent,
            c.packets,
            c.bytes
        );
    }
    let c = s.counters;
    let _ = writeln!(
        out,
        "relay: forwarded {}, dropped {} unknown label, {} wrong source, {} malformed; \
         circuits built {}, failed {}, refused {}, relayed {}, failovers {}, auto fallbacks {}",
        c.relay_forwarded,
        c.relay_unknown_label,
        c.relay_wrong_source,
        c.relay_malformed,
        c.circuits_built,
        c.circuits_failed,
        c.circuits_refused,
        c.circuits_relayed,
        c.circuit_failovers,
        c.auto_fallbacks
    );
    let d = &ctx.dht;
    let _ = writeln!(
        out,
        "dht: {} peers, {} records held; requests {}; records stored {}, rejected {}; \
         lookups found {}, not found {}, node {}; stores {} ok, {} failed; rpc failures {}, bad answers {}",
        ctx.dht_peers,
        ctx.records_held,
        d.requests,
        d.stored,
        d.rejected,
        d.lookups_found,
        d.lookups_not_found,
        d.lookups_nodes,
        d.stores_done,
        d.stores_failed,
        d.rpc_failures,
        d.bad_answers
    );
    let _ = writeln!(
        out,
        "drops: handshakes timed out {}, evicted {}, unvalidated {}; dht rate-limited {}; \
         datagrams unknown or queue full {}",
        c.handshakes_timed_out,
        c.handshakes_evicted,
        c.handshakes_refused,
        c.dht_rate_limited,
        c.datagrams_dropped
    );
    let _ = writeln!(
        out,
        "\nstreams open {}; opened {}; refused: access {}, target {}, bad requests {}; sessions failed {}, refused {}",
        s.streams,
        c.streams_opened,
        c.refused_access,
        c.refused_target,
        c.bad_requests,
        c.sessions_failed,
        c.sessions_refused
    );
    out
}
