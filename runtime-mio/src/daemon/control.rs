//! The control socket in the home directory: one request line in, one reply out.
//!
//! Requests: `status` (text) and `status json`. Unix only; elsewhere the daemon runs without it.

use serde::Serialize;
use vx6_core::node::NodeStatus;
use vx6_core::service::{Access, ServiceTable};

use crate::spec::ForwardSpec;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 256;

#[derive(Serialize)]
struct StatusJson {
    node_id: String,
    sessions: Vec<SessionJson>,
    services: Vec<ServiceJson>,
    forwards: Vec<ForwardJson>,
    streams: usize,
    counters: CountersJson,
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
}

#[derive(Serialize)]
struct CountersJson {
    refused_access: u64,
    refused_target: u64,
    bad_requests: u64,
    sessions_failed: u64,
    sessions_refused: u64,
    streams_opened: u64,
}

/// What the daemon knows besides the node's own status.
pub struct Context<'a> {
    pub status: NodeStatus,
    pub services: &'a ServiceTable,
    pub forwards: Vec<ForwardSpec>,
    pub forward_connections: Vec<usize>,
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
    let c = s.counters;
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
            .map(|(f, n)| ForwardJson {
                target: forward_target(f),
                local: f.local.to_string(),
                connections: *n,
            })
            .collect(),
        streams: s.streams,
        counters: CountersJson {
            refused_access: c.refused_access,
            refused_target: c.refused_target,
            bad_requests: c.bad_requests,
            sessions_failed: c.sessions_failed,
            sessions_refused: c.sessions_refused,
            streams_opened: c.streams_opened,
        },
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
    for (f, n) in ctx.forwards.iter().zip(&ctx.forward_connections) {
        let _ = writeln!(
            out,
            "  {} -> {} ({n} connections)",
            f.local,
            forward_target(f)
        );
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
