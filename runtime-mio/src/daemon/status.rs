//! What `vx6 status` shows: the replies to the control requests `status` (text) and
//! `status json`.

use serde::Serialize;
use std::collections::BTreeMap;

use vx6_core::Failure;
use vx6_core::node::{Counters, NodeStatus};
use vx6_core::service::{Access, ServiceTable};

use crate::spec::ForwardSpec;

#[derive(Serialize)]
struct StatusJson {
    node_id: String,
    sessions: Vec<SessionJson>,
    services: Vec<ServiceJson>,
    forwards: Vec<ForwardJson>,
    streams: usize,
    handshakes_in_flight: usize,
    counters: Counters,
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
    connections: usize,
    /// Connections that failed, in total and by cause.
    failed: u64,
    failed_by_cause: BTreeMap<&'static str, u64>,
    last_failure: Option<String>,
    last_failure_cause: Option<&'static str>,
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

/// Answers one request line.
pub fn answer(request: &str, ctx: &Context<'_>) -> String {
    match request.trim() {
        "status" => text(ctx),
        "status json" => json(ctx),
        other => format!("error: unknown request {other:?}\n"),
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
            .map(|((f, n), failed)| ForwardJson {
                target: forward_target(f),
                local: f.local.to_string(),
                connections: *n,
                failed: failed.failed,
                failed_by_cause: failed.by_cause.clone(),
                last_failure: failed.last.as_ref().map(ToString::to_string),
                last_failure_cause: failed.last.as_ref().map(|l| l.cause.as_str()),
            })
            .collect(),
        streams: s.streams,
        handshakes_in_flight: s.handshakes_in_flight,
        counters: s.counters,
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("error: {e}"));
    out.push('\n');
    out
}

fn text(ctx: &Context<'_>) -> String {
    use std::fmt::Write;
    let s = &ctx.status;
    let mut out = String::new();
    let _ = writeln!(out, "node {}", s.node_id);
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
    for ((f, n), failed) in ctx
        .forwards
        .iter()
        .zip(&ctx.forward_connections)
        .zip(ctx.forward_failures)
    {
        let _ = writeln!(
            out,
            "  {} -> {} ({n} connections, {} failed)",
            f.local,
            forward_target(f),
            failed.failed
        );
        if let Some(last) = &failed.last {
            let _ = writeln!(out, "     last failure: {last} ({})", last.cause.as_str());
        }
    }
    let c = s.counters;
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
