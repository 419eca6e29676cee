//! State-machine tests of whole nodes against a reference model, in virtual time (tests/harness):
//! three hosts, each offering the in-memory echo service, and random sequences of streams over
//! QUIC and TCP between them, held open or released, aborted by the application, with time
//! passing and hosts restarting or shutting their sessions down.
//!
//! Reference model: an echo stream that did not fail gets exactly its payload back and a clean
//! end; a stream to a service whose target is down fails with `TargetUnavailable`, to a service
//! that does not exist with `AccessDenied`; a stream fails for any other reason only if a
//! disruption (restart, shutdown) touched one of its two hosts while it was open or just before
//! it opened, or a configured limit refused it, and then with a cause from a fixed set. Memory
//! oracle: at any time a node holds no more streams than there are applications, and at most
//! two sessions per peer, transport and direction (one on its way out) besides those a peer's
//! restart left stale; once every application is done no node holds a service stream
//! (`status().streams` is 0), and once things settle no handshake lingers and one session per
//! peer, transport and direction is the most that remains.
//!
//! The directed tests at the end reproduce, on their own, what the model found.

mod harness;

use std::time::Duration;

use harness::{App, Net, echo_services, identity, payload};
use proptest::prelude::*;
use vx6_core::node::NodeConfig;
use vx6_core::pins::Pins;
use vx6_core::record::Transport;
use vx6_core::service::Access;
use vx6_core::{Cause, Failure};

const HOSTS: usize = 3;

/// Causes a stream may end with when a disruption touched one of its hosts.
const DISRUPTED: [Cause; 6] = [
    Cause::ConnectionLost,
    Cause::ResetByPeer,
    Cause::Timeout,
    Cause::Closed,
    Cause::Unreachable,
    Cause::HandshakeTimeout,
];

/// How long after a disruption of one of its hosts a newly opened stream may still meet its
/// effects (closes and resets in flight). Sessions a restart left stale are tracked apart.
const AFTERMATH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Pick(u64);

impl Pick {
    fn index(self, len: usize) -> usize {
        ((len as u128 * u128::from(self.0)) >> 64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Svc {
    Echo,
    /// The target refuses connections.
    Down,
    /// No such service.
    Missing,
}

impl Svc {
    fn name(self) -> &'static str {
        match self {
            Svc::Echo => "echo",
            Svc::Down => "down",
            Svc::Missing => "nosuch",
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        from: usize,
        /// Added to `from` (modulo the host count) so a host never dials itself.
        to: usize,
        tcp: bool,
        len: usize,
        hold: bool,
        svc: Svc,
    },
    /// A held application sends its FIN.
    Release { app: Pick },
    /// An application gives up on its stream (its local connection failed).
    Abort { app: Pick },
    /// Time passes with the network running.
    Advance { ms: u64 },
    /// The network runs until every application is done, or `ms` pass.
    Run { ms: u64 },
    /// A host's process restarts (same key, same address): its sessions die with it.
    Restart { host: usize },
    /// A host closes all its sessions cleanly.
    CloseAll { host: usize },
}

/// Limits the case runs under (`Net::configure` takes a plain `fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limits {
    Default,
    /// Few streams per node and per session: refusals with `LimitReached` are expected.
    Tight,
}

fn tight(c: &mut NodeConfig) {
    c.limits.max_streams = 4;
    c.quic.max_streams = 2;
    c.mux.max_peer_streams = 2;
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    /// Bytes a TCP connection may have in flight each way.
    tcp_buffer: usize,
    limits: Limits,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4 => 0..2_000usize, 3 => 0..100_000usize, 1 => 100_000..600_000usize];
    let svc = prop_oneof![8 => Just(Svc::Echo), 1 => Just(Svc::Down), 1 => Just(Svc::Missing)];
    prop_oneof![
        10 => (0..HOSTS, 1..HOSTS, any::<bool>(), len, prop::bool::weighted(0.4), svc)
            .prop_map(|(from, to, tcp, len, hold, svc)| Op::Open { from, to, tcp, len, hold, svc }),
        3 => any::<u64>().prop_map(|p| Op::Release { app: Pick(p) }),
        1 => any::<u64>().prop_map(|p| Op::Abort { app: Pick(p) }),
        3 => prop_oneof![0..100u64, 0..40_000u64].prop_map(|ms| Op::Advance { ms }),
        3 => (0..2_000u64).prop_map(|ms| Op::Run { ms }),
        1 => (0..HOSTS).prop_map(|host| Op::Restart { host }),
        1 => (0..HOSTS).prop_map(|host| Op::CloseAll { host }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        1024..=256 * 1024usize,
        prop_oneof![3 => Just(Limits::Default), 1 => Just(Limits::Tight)],
        proptest::collection::vec(op(), 1..32),
    )
        .prop_map(|(seed, tcp_buffer, limits, ops)| Case {
            seed,
            tcp_buffer,
            limits,
            ops,
        })
}

/// What the model knows of one application stream.
#[derive(Debug)]
struct Rec {
    host: usize,
    /// The host's process generation the stream belongs to.
    generation: usize,
    handle: vx6_core::node::StreamHandle,
    to: usize,
    transport: Transport,
    svc: Svc,
    len: usize,
    /// A disruption touched one of its hosts while it was open (or just before it opened).
    exposed: bool,
    /// The application itself gave up.
    aborted: bool,
    /// Its process was restarted under it: nothing is expected of it.
    orphaned: bool,
    /// Closed (done or failed), as last seen.
    done: bool,
}

struct Model {
    net: Net,
    recs: Vec<Rec>,
    generation: [usize; HOSTS],
    /// When each host was last disrupted (virtual time since the start).
    disrupted: [Option<Duration>; HOSTS],
    /// (host, restarted peer, session id): sessions the host had with a peer whose process then
    /// restarted. Until the host notices (a QUIC peer's successor answers only the next packet
    /// with a stateless reset), streams it opens to that peer may land on the dead session, and
    /// one that sent more than the replay buffer before that cannot be retried.
    stale: Vec<(usize, usize, u64)>,
    start: std::time::Instant,
    limits: Limits,
}

impl Model {
    fn new(case: &Case) -> Self {
        let mut net = Net::new(case.seed);
        if case.limits == Limits::Tight {
            net.configure = tight;
        }
        net.tcp_buffer = case.tcp_buffer;
        for i in 0..HOSTS {
            net.add_host(
                identity(i as u8 + 1),
                echo_services(Access::Public),
                Pins::default(),
            );
        }
        let start = net.now;
        Self {
            net,
            recs: Vec::new(),
            generation: [0; HOSTS],
            disrupted: [None; HOSTS],
            stale: Vec::new(),
            start,
            limits: case.limits,
        }
    }

    fn elapsed(&self) -> Duration {
        self.net.now - self.start
    }

    fn app(&self, r: &Rec) -> Option<&App> {
        if r.orphaned || self.generation[r.host] != r.generation {
            return None;
        }
        self.net.hosts[r.host].apps.get(&r.handle)
    }

    fn app_mut(&mut self, i: usize) -> Option<&mut App> {
        let r = &self.recs[i];
        if r.orphaned || self.generation[r.host] != r.generation {
            return None;
        }
        self.net.hosts[r.host].apps.get_mut(&r.handle)
    }

    /// Marks streams done as the harness sees them.
    fn refresh(&mut self) {
        for i in 0..self.recs.len() {
            let done = self
                .app(&self.recs[i])
                .is_none_or(|a| a.failed.is_some() || (a.eof && a.finished));
            self.recs[i].done = done;
        }
    }

    fn disrupt(&mut self, host: usize) {
        let now = self.elapsed();
        self.refresh();
        for r in &mut self.recs {
            if !r.done && (r.host == host || r.to == host) {
                r.exposed = true;
            }
        }
        self.disrupted[host] = Some(now);
    }

    fn open(&mut self, from: usize, to: usize, tcp: bool, len: usize, hold: bool, svc: Svc) {
        let to = (from + to) % HOSTS;
        let transport = if tcp { Transport::Tcp } else { Transport::Quic };
        let owner = self.net.node_id(to);
        let data = payload(len, self.recs.len() as u8);
        let handle = self
            .net
            .open(from, to, transport, Some(owner), svc.name(), data);
        self.net.hosts[from]
            .apps
            .get_mut(&handle)
            .expect("just opened")
            .hold = hold;
        let now = self.elapsed();
        let sessions = self.net.hosts[from].node.status().sessions;
        let exposed = [from, to]
            .iter()
            .any(|h| self.disrupted[*h].is_some_and(|at| now.saturating_sub(at) <= AFTERMATH))
            || self.stale.iter().any(|&(h, peer, id)| {
                h == from && peer == to && sessions.iter().any(|s| s.id == id)
            });
        self.recs.push(Rec {
            host: from,
            generation: self.generation[from],
            handle,
            to,
            transport,
            svc,
            len,
            exposed,
            aborted: false,
            orphaned: false,
            done: false,
        });
    }

    /// Open applications, for release and abort.
    fn live(&mut self) -> Vec<usize> {
        self.refresh();
        (0..self.recs.len())
            .filter(|i| !self.recs[*i].done)
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Open {
                from,
                to,
                tcp,
                len,
                hold,
                svc,
            } => self.open(from, to, tcp, len, hold, svc),
            Op::Release { app } => {
                let live = self.live();
                if !live.is_empty() {
                    let i = live[app.index(live.len())];
                    if let Some(a) = self.app_mut(i) {
                        a.hold = false;
                    }
                }
            }
            Op::Abort { app } => {
                let live = self.live();
                if !live.is_empty() {
                    let i = live[app.index(live.len())];
                    let (host, handle) = (self.recs[i].host, self.recs[i].handle);
                    let now = self.net.now;
                    self.net.hosts[host].node.stream_reset(now, handle);
                    if let Some(a) = self.app_mut(i) {
                        a.failed = Some(Failure::new(Cause::Closed, "aborted by the application"));
                    }
                    self.recs[i].aborted = true;
                }
            }
            Op::Advance { ms } => self.net.advance(Duration::from_millis(ms)),
            Op::Run { ms } => {
                self.net.run_until(Duration::from_millis(ms), |n| {
                    (0..HOSTS).all(|h| n.apps_done(h))
                });
            }
            Op::Restart { host } => {
                self.disrupt(host);
                let addr = self.net.hosts[host].addr;
                for h in 0..HOSTS {
                    for s in self.net.hosts[h].node.status().sessions {
                        if s.remote == addr {
                            self.stale.push((h, host, s.id));
                        }
                    }
                }
                for r in &mut self.recs {
                    if r.host == host && r.generation == self.generation[host] {
                        r.orphaned = true;
                    }
                }
                self.generation[host] += 1;
                // The old process's applications die with it.
                self.net.hosts[host].apps.clear();
                self.net.restart_host(
                    host,
                    identity(host as u8 + 1),
                    echo_services(Access::Public),
                );
            }
            Op::CloseAll { host } => {
                self.disrupt(host);
                let now = self.net.now;
                self.net.hosts[host].node.close_all(now);
            }
        }
    }

    /// Sessions of host `i` that a peer's restart did not leave stale.
    fn live_sessions(&self, i: usize) -> Vec<vx6_core::node::SessionStatus> {
        let mut sessions = self.net.hosts[i].node.status().sessions;
        sessions.retain(|s| !self.stale.iter().any(|&(h, _, id)| h == i && id == s.id));
        sessions
    }

    /// Bounds that hold at any time.
    fn check(&self) {
        let apps: usize = self.recs.len();
        for (i, h) in self.net.hosts.iter().enumerate() {
            let status = h.node.status();
            // Each stream is one of this host's applications or one for a peer's application.
            assert!(
                status.streams <= apps,
                "host {i}: {} streams open for {apps} applications in all",
                status.streams
            );
            // Per peer, transport and direction: one session, and one on its way out.
            let live = self.live_sessions(i);
            assert!(
                live.len() <= 2 * 2 * 2 * (HOSTS - 1),
                "host {i}: {} sessions: {live:#?}",
                live.len(),
            );
        }
    }

    fn finish(&mut self) {
        // Every held application lets go, then everything runs to completion.
        for h in &mut self.net.hosts {
            for a in h.apps.values_mut() {
                a.hold = false;
            }
        }
        let done = self.net.run_until(Duration::from_secs(300), |n| {
            (0..HOSTS).all(|h| n.apps_done(h))
        });
        self.refresh();
        let stuck: Vec<_> = self
            .recs
            .iter()
            .filter(|r| !r.done)
            .map(|r| (r, self.app(r).map(summary)))
            .collect();
        assert!(done, "applications never finished: {stuck:#?}");
        for r in &self.recs {
            if r.aborted || r.orphaned {
                continue;
            }
            let app = self.app(r).expect("not orphaned");
            let expected: &[Cause] = match r.svc {
                Svc::Echo => &[],
                Svc::Down => &[Cause::TargetUnavailable],
                Svc::Missing => &[Cause::AccessDenied],
            };
            match &app.failed {
                None => {
                    assert!(
                        r.svc == Svc::Echo,
                        "{r:?}: a stream to {:?} succeeded",
                        r.svc
                    );
                    assert!(app.eof && app.finished, "{r:?}: done without ending");
                    assert_eq!(app.received.len(), r.len, "{r:?}: echo length");
                    assert!(app.received == app.to_send, "{r:?}: echo corrupted");
                }
                Some(f) => {
                    let allowed = expected.contains(&f.cause)
                        || (r.exposed && DISRUPTED.contains(&f.cause))
                        || (self.limits == Limits::Tight && f.cause == Cause::LimitReached);
                    assert!(
                        allowed,
                        "{r:?} over {:?} failed with {:?} ({}); expected {expected:?}{}{}",
                        r.transport,
                        f.cause,
                        f.detail,
                        if r.exposed { " or a disruption" } else { "" },
                        if self.limits == Limits::Tight {
                            " or a limit"
                        } else {
                            ""
                        },
                    );
                    // A refusal arrives before any echoed byte.
                    if r.svc != Svc::Echo && expected.contains(&f.cause) {
                        assert!(app.received.is_empty(), "{r:?}: refused after echoing");
                    }
                }
            }
        }
        // Owners finish their side a moment later, or, when the client's process is gone, once
        // a keep-alive meets its successor (QUIC stateless reset) or the session times out.
        self.net.run_until(Duration::from_secs(40), |n| {
            n.hosts.iter().all(|h| h.node.status().streams == 0)
        });
        for (i, h) in self.net.hosts.iter().enumerate() {
            let status = h.node.status();
            assert_eq!(
                status.streams, 0,
                "host {i}: streams left open after every application finished: {:#?}",
                status.sessions
            );
        }
        self.check();
        // Once the dust settles, sessions that died are gone (one a restart left stale at the
        // latest when its idle timeout passes; one that was still in its handshake may have
        // completed it with the successor), no handshake lingers, and at most one session per
        // peer, transport and direction remains.
        self.net.advance(Duration::from_secs(40));
        for i in 0..HOSTS {
            let all = self.net.hosts[i].node.status().sessions;
            assert!(
                all.iter().all(|s| s.established) && all.len() <= 2 * 2 * (HOSTS - 1),
                "host {i}: {} sessions after everything settled: {all:#?}",
                all.len()
            );
            assert_eq!(self.net.hosts[i].node.status().streams, 0);
        }
    }
}

fn summary(a: &App) -> String {
    format!(
        "sent {}/{} finished {} hold {} received {} eof {} failed {:?}",
        a.sent,
        a.to_send.len(),
        a.finished,
        a.hold,
        a.received.len(),
        a.eof,
        a.failed
    )
}

fn run(case: &Case) {
    let mut m = Model::new(case);
    for op in &case.ops {
        m.apply(op);
        m.check();
    }
    m.finish();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nodes_match_the_reference_model(case in case()) {
        run(&case);
    }
}

/// A node that shuts down while its TCP session is still in the TLS handshake: a clean close
/// on this side, a lost connection on the other, not a protocol violation on either (found by
/// the model above).
#[test]
fn a_shutdown_during_a_tcp_handshake_is_not_a_protocol_violation() {
    let mut m = Model::new(&Case {
        seed: 0,
        tcp_buffer: 64 * 1024,
        limits: Limits::Default,
        ops: Vec::new(),
    });
    m.apply(&Op::Open {
        from: 0,
        to: 1,
        tcp: true,
        len: 10,
        hold: false,
        svc: Svc::Echo,
    });
    m.apply(&Op::CloseAll { host: 0 });
    m.net.run_until(Duration::from_secs(5), |_| false);
    let app = m.app(&m.recs[0]).expect("open");
    let cause = app.failed.as_ref().map(|f| f.cause);
    assert!(
        matches!(cause, Some(Cause::Closed | Cause::ConnectionLost)),
        "the closing node's stream failed with {:?}",
        app.failed
    );
    for (i, h) in m.net.hosts.iter().enumerate() {
        for e in &h.log {
            if let vx6_core::node::Event::SessionDown { failure, .. }
            | vx6_core::node::Event::StreamFailed { failure, .. } = e
            {
                assert_ne!(failure.cause, Cause::ProtocolViolation, "host {i}: {e:?}");
            }
        }
    }
}

/// More TCP streams than a session may carry, opened while its handshake runs: the ones over
/// the limit fail with `LimitReached` (or wait), not with a reset from the owner's multiplexer
/// reported as `ResetByPeer` (found by the model above).
#[test]
fn streams_queued_during_a_tcp_handshake_respect_the_session_limit() {
    let open = Op::Open {
        from: 0,
        to: 1,
        tcp: true,
        len: 100,
        hold: false,
        svc: Svc::Echo,
    };
    let mut m = Model::new(&Case {
        seed: 0,
        tcp_buffer: 64 * 1024,
        limits: Limits::Tight,
        ops: Vec::new(),
    });
    for _ in 0..3 {
        m.apply(&open);
    }
    assert!(m.net.run_until(Duration::from_secs(10), |n| n.apps_done(0)));
    for r in &m.recs {
        let app = m.app(r).expect("open");
        assert!(
            app.failed
                .as_ref()
                .is_none_or(|f| f.cause == Cause::LimitReached),
            "{:?}",
            app.failed
        );
    }
}

/// At its stream limit an owner makes room by refusing a stream of the session holding the
/// most. A stream it already accepted and is echoing must then fail (reset), not carry the
/// refusal's bytes as data and end cleanly (found by the model above).
#[test]
fn a_stream_evicted_at_the_owner_limit_is_not_corrupted() {
    for transport in [Transport::Quic, Transport::Tcp] {
        let mut net = Net::new(31);
        net.configure = |c| c.limits.max_streams = 2;
        for i in 0..HOSTS {
            net.add_host(
                identity(i as u8 + 1),
                echo_services(Access::Public),
                Pins::default(),
            );
        }
        let owner = net.node_id(1);
        let held: Vec<_> = (0..2)
            .map(|i| net.open(0, 1, transport, Some(owner), "echo", payload(100, i)))
            .collect();
        for h in &held {
            net.hosts[0].apps.get_mut(h).expect("opened").hold = true;
        }
        assert!(net.run_until(Duration::from_secs(5), |n| {
            held.iter()
                .all(|h| n.hosts[0].apps[h].received.len() == 100)
        }));
        let other = net.open(2, 1, transport, Some(owner), "echo", payload(10, 9));
        net.run_until(Duration::from_secs(2), |_| false);
        for h in &held {
            net.hosts[0].apps.get_mut(h).expect("opened").hold = false;
        }
        assert!(net.run_until(Duration::from_secs(10), |n| n.apps_done(0)
            && n.apps_done(2)));
        for (i, h) in held.iter().enumerate() {
            let app = &net.hosts[0].apps[h];
            if app.failed.is_none() {
                assert!(
                    app.received == payload(100, i as u8),
                    "{transport:?}: held stream {i} ended cleanly with {} bytes: {:?}",
                    app.received.len(),
                    String::from_utf8_lossy(&app.received[100.min(app.received.len())..])
                );
            }
        }
        let app = &net.hosts[2].apps[&other];
        assert!(
            app.failed.is_some() || app.received == payload(10, 9),
            "{transport:?}: {:?}",
            app.failed
        );
    }
}

/// Found by the model with another seed: TCP bytes on their way to a host that restarted were
/// handed to the new process's session of the same number, which answered with a fatal TLS
/// alert. A restarted process never sees its predecessor's connections.
#[test]
fn a_restart_with_tcp_bytes_in_flight_is_a_disruption() {
    let open = |from, to, len| Op::Open {
        from,
        to,
        tcp: true,
        len,
        hold: false,
        svc: Svc::Echo,
    };
    run(&Case {
        seed: 0,
        tcp_buffer: 1024,
        limits: Limits::Default,
        ops: vec![
            open(1, 1, 0),
            Op::Release { app: Pick(0) },
            Op::Run { ms: 21 },
            open(0, 2, 31_386),
            Op::Restart { host: 2 },
            Op::Advance { ms: 92 },
        ],
    });
}
