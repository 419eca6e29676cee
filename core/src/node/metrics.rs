//! The node's Prometheus metrics (DESIGN.md §8): a registry built from its state on demand,
//! for runtimes to serve and embedders to extend.
//!
//! Conventions: prefix `vx6_`, base units (seconds, bytes), counters end in `_total`, and
//! labels take only values from fixed lists (path kind, transport, reason, direction), so no
//! number of peers, streams or circuits adds a series: every series exists from the start.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::Node;
use super::circuits::CircuitRole;
use crate::policy::PathKind;
use crate::reach::Verdict;
use crate::record::Transport;

/// A series' labels: names and values from fixed lists.
pub type Labels = Vec<(&'static str, &'static str)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

const PATHS: [PathKind; 2] = [PathKind::Direct, PathKind::Relay];
const DIRECTIONS: [&str; 2] = ["in", "out"];
/// Reasons a managed link switches paths, as [`crate::policy::SwitchReason::as_str`] names them.
pub const SWITCH_REASONS: [&str; 8] = [
    "initial",
    "path_down",
    "sla_rtt",
    "sla_loss",
    "sla_jitter",
    "failback",
    "recovered",
    "policy_changed",
];

/// What a node counts per path kind and direction (`in` from the peer, `out` to it).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Traffic {
    /// Service-stream payload bytes.
    stream_bytes: [[u64; 2]; 2],
    /// QUIC datagrams of sessions and circuits this node ends, and their bytes.
    datagrams: [[u64; 2]; 2],
    datagram_bytes: [[u64; 2]; 2],
}

impl Traffic {
    pub(super) fn stream(&mut self, path: PathKind, out: bool, bytes: usize) {
        self.stream_bytes[path as usize][usize::from(out)] += bytes as u64;
    }

    pub(super) fn datagrams(&mut self, path: PathKind, out: bool, count: usize, bytes: usize) {
        self.datagrams[path as usize][usize::from(out)] += count as u64;
        self.datagram_bytes[path as usize][usize::from(out)] += bytes as u64;
    }
}

/// The distributions a node records as it runs.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    /// Client streams: from opening to the owner's acceptance, by path.
    connect: HistogramFamily,
    /// Probe round trips on circuits this node built, by path.
    rtt: HistogramFamily,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Recorded {
    fn default() -> Self {
        let family = || {
            let f: HistogramFamily = Family::new_with_constructor(seconds_histogram);
            for p in PATHS {
                drop(f.get_or_create(&vec![("path", p.as_str())]));
            }
            f
        };
        Self {
            connect: family(),
            rtt: family(),
        }
    }
}

impl Recorded {
    pub(super) fn connect(&self, path: PathKind, took: Duration) {
        self.connect
            .get_or_create(&vec![("path", path.as_str())])
            .observe(took.as_secs_f64());
    }

    pub(super) fn rtt(&self, path: PathKind, rtt: Duration) {
        self.rtt
            .get_or_create(&vec![("path", path.as_str())])
            .observe(rtt.as_secs_f64());
    }
}

/// Registers a counter family with one series per `(labels, value)`.
pub fn counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, value) in series {
        family.get_or_create(&labels).inc_by(value);
    }
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family),
        None => registry.register(name, help, family),
    }
}

/// Registers a gauge family with one series per `(labels, value)`.
pub fn gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, i64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, value) in series {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

fn one<T>(value: T) -> [(Labels, T); 1] {
    [(Vec::new(), value)]
}

fn by<T: Copy>(label: &'static str, values: &[(&'static str, T)]) -> Vec<(Labels, T)> {
    values
        .iter()
        .map(|(v, n)| (vec![(label, *v)], *n))
        .collect()
}

impl Node {
    /// A registry holding the node's metrics now (counters as they stand, gauges as they are,
    /// the histograms it records). Runtimes serve it (`prometheus_client::encoding::text`)
    /// and may register their own metrics in it first.
    pub fn metrics(&self) -> Registry {
        let mut r = Registry::default();
        let c = &self.counters;
        let t = &self.traffic;
        let per_path = |v: &[[u64; 2]; 2]| -> Vec<(Labels, u64)> {
            PATHS
                .iter()
                .flat_map(|p| {
                    DIRECTIONS.iter().enumerate().map(move |(d, dir)| {
                        (
                            vec![("path", p.as_str()), ("direction", *dir)],
                            v[*p as usize][d],
                        )
                    })
                })
                .collect()
        };
        counter(
            &mut r,
            "vx6_forwarded",
            "Service-stream payload carried, by path kind and direction (in: from the peer)",
            Some(Unit::Bytes),
            per_path(&t.stream_bytes),
        );
        counter(
            &mut r,
            "vx6_datagrams",
            "QUIC datagrams of sessions and circuits this node ends, by path kind and direction",
            None,
            per_path(&t.datagrams),
        );
        counter(
            &mut r,
            "vx6_datagram",
            "Bytes of those datagrams",
            Some(Unit::Bytes),
            per_path(&t.datagram_bytes),
        );

        let mut sessions = [0i64; 2];
        for (_, s) in self.sessions.iter() {
            if s.established && !s.down {
                sessions[usize::from(s.transport() == Transport::Tcp)] += 1;
            }
        }
        gauge(
            &mut r,
            "vx6_sessions",
            "Authenticated sessions open, by transport",
            by("transport", &[("quic", sessions[0]), ("tcp", sessions[1])]),
        );
        counter(
            &mut r,
            "vx6_sessions_opened",
            "Sessions that finished their handshake (both roles)",
            None,
            one(c.sessions_opened),
        );
        counter(
            &mut r,
            "vx6_sessions_failed",
            "Sessions that ended in a failure (in the handshake or later)",
            None,
            one(c.sessions_failed),
        );
        counter(
            &mut r,
            "vx6_sessions_refused",
            "Incoming sessions refused, by reason",
            None,
            by("reason", &[("limit", c.sessions_refused)]),
        );
        gauge(
            &mut r,
            "vx6_streams",
            "Service streams open",
            one(self.streams.len() as i64),
        );
        counter(
            &mut r,
            "vx6_streams_opened",
            "Service streams opened (both roles)",
            None,
            one(c.streams_opened),
        );
        counter(
            &mut r,
            "vx6_streams_refused",
            "Service streams refused, by reason",
            None,
            by(
                "reason",
                &[
                    ("access_denied", c.refused_access),
                    ("target_unavailable", c.refused_target),
                    ("bad_request", c.bad_requests),
                    ("limit", c.streams_refused_limit),
                ],
            ),
        );
        gauge(
            &mut r,
            "vx6_handshakes_in_flight",
            "Incoming handshakes not finished yet",
            one(self.handshakes.len() as i64),
        );
        counter(
            &mut r,
            "vx6_handshake_drops",
            "Incoming handshakes dropped, by reason",
            None,
            by(
                "reason",
                &[
                    ("timeout", c.handshakes_timed_out),
                    ("evicted", c.handshakes_evicted),
                    ("unvalidated", c.handshakes_refused),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_quic_retries",
            "QUIC Retry packets sent (address validation under load)",
            None,
            one(c.quic_retries),
        );
        counter(
            &mut r,
            "vx6_flood_drops",
            "Datagrams dropped unread, by reason",
            None,
            by(
                "reason",
                &[
                    ("dht_rate", c.dht_rate_limited),
                    ("unknown_or_queue_full", c.datagrams_dropped),
                ],
            ),
        );

        let dht = self.dht.stats();
        counter(
            &mut r,
            "vx6_dht_lookups",
            "DHT lookups this node finished, by outcome",
            None,
            by(
                "outcome",
                &[
                    ("found", dht.lookups_found),
                    ("not_found", dht.lookups_not_found),
                    ("nodes", dht.lookups_nodes),
                    ("stored", dht.stores_done),
                    ("not_stored", dht.stores_failed),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_dht_requests",
            "DHT requests answered",
            None,
            one(dht.requests),
        );
        counter(
            &mut r,
            "vx6_dht_rpc_failures",
            "DHT requests of this node that failed or timed out",
            None,
            one(dht.rpc_failures),
        );
        counter(
            &mut r,
            "vx6_dht_records",
            "Records peers offered for storage, by outcome",
            None,
            by(
                "outcome",
                &[("stored", dht.stored), ("rejected", dht.rejected)],
            ),
        );
        let verdicts = self.dial_back_verdicts();
        let dialable: Vec<(Labels, i64)> = [(true, "ipv4"), (false, "ipv6")]
            .into_iter()
            .flat_map(|(v4, family)| {
                let now = verdicts
                    .iter()
                    .find(|(f, _)| *f == v4)
                    .map_or(Verdict::Unknown, |(_, v)| *v);
                [Verdict::Reachable, Verdict::Unreachable, Verdict::Unknown]
                    .into_iter()
                    .map(move |v| {
                        let labels = vec![("family", family), ("verdict", v.as_str())];
                        (labels, i64::from(v == now))
                    })
            })
            .collect();
        gauge(
            &mut r,
            "vx6_dialable",
            "1 for what peers' dial-backs say about dialing this node, per address family",
            dialable,
        );
        gauge(
            &mut r,
            "vx6_home_relays",
            "Relays this node's record names as its way in (it cannot be dialed)",
            one(self.home_relays().len() as i64),
        );
        gauge(
            &mut r,
            "vx6_side_sockets",
            "UDP sockets open beside the node's own for hole punching (an attempt's, and those pinned to a peer)",
            one(self.side_sockets() as i64),
        );
        gauge(
            &mut r,
            "vx6_dht_peers",
            "Nodes in the DHT routing table",
            one(self.dht.table().len() as i64),
        );
        gauge(
            &mut r,
            "vx6_records_held",
            "Signed records the node's DHT store holds",
            one(self.dht.store().len() as i64),
        );

        let mut roles = [0i64; 3];
        for s in self.circuit_status() {
            roles[match s.role {
                CircuitRole::Client => 0,
                CircuitRole::Relay => 1,
                CircuitRole::Owner => 2,
            }] += 1;
        }
        gauge(
            &mut r,
            "vx6_circuits",
            "Circuits open, by this node's role in them",
            by(
                "role",
                &[
                    ("client", roles[0]),
                    ("relay", roles[1]),
                    ("owner", roles[2]),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_circuit_events",
            "Circuit events, by kind",
            None,
            by(
                "event",
                &[
                    ("built", c.circuits_built),
                    ("failed", c.circuits_failed),
                    ("refused", c.circuits_refused),
                    ("relayed", c.circuits_relayed),
                    ("ended_here", c.circuits_ended_here),
                    ("expired", c.circuits_expired),
                    ("failover", c.circuit_failovers),
                    ("auto_fallback", c.auto_fallbacks),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_relay_forwarded_packets",
            "Relay datagrams this node forwarded",
            None,
            one(c.relay_forwarded),
        );
        counter(
            &mut r,
            "vx6_relay_forwarded",
            "Bytes of relay datagrams this node forwarded",
            Some(Unit::Bytes),
            one(self.circuits.labels.forwarded_bytes()),
        );
        counter(
            &mut r,
            "vx6_relay_drops",
            "Relay datagrams dropped, by reason",
            None,
            by(
                "reason",
                &[
                    ("malformed", c.relay_malformed),
                    ("unknown_label", c.relay_unknown_label),
                    ("wrong_source", c.relay_wrong_source),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_hole_punches",
            "Hole punching: requests sent to owners through a relay path, carried out as an owner, birthday attempts (many ports), sprays (random ports) and wins, links where both NATs pick a port per peer, and links whose punching failed",
            None,
            by(
                "role",
                &[
                    ("requested", c.punch_requests),
                    ("answered", c.punches_answered),
                    ("birthday_attempt", c.birthday_attempts),
                    ("birthday_spray", c.birthday_sprays),
                    ("birthday_hit", c.birthday_hits),
                    ("impossible", c.punches_impossible),
                    ("failed", c.punches_failed),
                ],
            ),
        );
        counter(
            &mut r,
            "vx6_dial_backs",
            "Dial-backs asked of this node by peers learning whether they can be dialed",
            None,
            by(
                "outcome",
                &[
                    ("sent", c.dial_backs_sent),
                    ("declined", c.dial_backs_declined),
                ],
            ),
        );
        let switches: Vec<(&'static str, u64)> = SWITCH_REASONS
            .iter()
            .map(|reason| {
                let n = self
                    .circuits
                    .switches
                    .get(reason)
                    .copied()
                    .unwrap_or_default();
                (*reason, n)
            })
            .collect();
        counter(
            &mut r,
            "vx6_path_switches",
            "Times managed links moved their traffic to another path, by reason",
            None,
            by("reason", &switches),
        );
        r.register_with_unit(
            "vx6_connect",
            "Time from opening a client stream to the owner's acceptance, by path kind",
            Unit::Seconds,
            self.recorded.connect.clone(),
        );
        r.register_with_unit(
            "vx6_probe_rtt",
            "Round trips of probes on circuits this node built, by path kind",
            Unit::Seconds,
            self.recorded.rtt.clone(),
        );
        r
    }
}
