//! The single-threaded mio daemon: one event loop owns every socket and drives one
//! [`Node`]. Nothing here decides protocol behaviour; it moves bytes and time into the node and
//! carries out the node's events.

mod addresses;
mod connections;
mod control;
mod floods;
mod heap;
mod limits;
mod local;
mod metrics;
mod request;
mod side;
mod status;
mod udp;

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use vx6_core::node::{CircuitEvent, Event, Node, NodeConfig, SessionId, StreamHandle};
use vx6_core::pins::Pins;
use vx6_core::reach::Verdict;
use vx6_core::record::Transport;
use vx6_core::record::{NodeAddress, name_key};
use vx6_core::service::{Backend, ServiceTable};
use vx6_core::{Cause, Failure, Identity, NodeId, Record, Username};

use self::connections::Conn;
use self::control::ControlServer;
pub use self::control::{ANSWER_WITHIN, request};
use self::limits::{AcceptRetry, CLOSE_GRACE};
use self::local::Role;
use self::request::Request;
use self::udp::Udp;
use crate::spec::ForwardSpec;

const UDP: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const CONTROL: Token = Token(2);
const SIGNALS: Token = Token(3);
const METRICS: Token = Token(4);
const FORWARD_BASE: usize = 16;
const DYNAMIC_BASE: usize = 1 << 20;
/// Bytes read from a session socket per call, into the one buffer they share.
const READ_CHUNK: usize = 256 * 1024;

/// Everything the daemon runs with.
pub struct Options {
    pub identity: Identity,
    pub listen: SocketAddr,
    pub transport: Transport,
    pub services: ServiceTable,
    pub forwards: Vec<ForwardSpec>,
    pub pins: Pins,
    pub pins_path: PathBuf,
    pub control_path: Option<PathBuf>,
    /// Peers to enter the network through, by address.
    pub bootstrap: Vec<SocketAddr>,
    /// The username this node claims (published with its records).
    pub name: Username,
    /// The registry file: peers remembered from the last run, and where this run's go.
    pub registry_path: PathBuf,
    /// Whether and within which limits this node relays.
    pub relay: vx6_core::node::RelayConfig,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `--announce`: the addresses to publish, instead of those found.
    pub announce: Vec<SocketAddr>,
}

/// How often a wildcard listener looks at its interfaces again (a change republishes).
const ADDRESS_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A `vx6 ping` waiting for its rounds (kept by its control client): the name, the owner once
/// resolved, and the answers so far.
struct PingJob {
    name: String,
    target: Option<(NodeId, Option<SocketAddr>)>,
    rounds_left: u32,
    next_round: Instant,
    ids: Vec<u64>,
    sent: usize,
    lines: Vec<String>,
}

/// Time between the rounds of `vx6 ping`.
const PING_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

pub struct Daemon {
    poll: Poll,
    node: Node,
    transport: Transport,
    udp: Option<Udp>,
    tcp_listener: Option<TcpListener>,
    control: ControlServer,
    forwards: Vec<(ForwardSpec, TcpListener)>,
    /// Per forward, connections that failed and why (for status).
    forward_failures: Vec<status::ForwardFailures>,
    conns: HashMap<Token, Conn>,
    by_stream: HashMap<StreamHandle, Token>,
    by_session: HashMap<SessionId, Token>,
    next_token: usize,
    pins_path: PathBuf,
    /// Set by the signal handler (SIGINT, SIGTERM, SIGHUP; Ctrl-C or close on Windows), which
    /// then wakes the loop under `SIGNALS`.
    stop_requested: Arc<AtomicBool>,
    _waker: Arc<mio::Waker>,
    /// The read buffer of every session socket.
    scratch: Vec<u8>,
    /// The read buffer of every local socket (its spare capacity is read into; see
    /// `Local::pump_up`).
    local_scratch: Vec<u8>,
    /// Closing session sockets by deadline (soonest first); one may have finished already.
    closing: VecDeque<(Instant, Token)>,
    accept_retry: AcceptRetry,
    floods: floods::FloodLog,
    heap: heap::HeapTrim,
    name: Username,
    registry: vx6_core::Registry,
    registry_path: PathBuf,
    /// `vx6 path` requests waiting for their name to resolve: the hop count asked.
    path_requests: HashMap<u64, u8>,
    /// `vx6 ping` requests, by their control client.
    pings: HashMap<Token, PingJob>,
    /// `--announce`.
    announce: Vec<SocketAddr>,
    /// The addresses last published, and when the interfaces are looked at again.
    published: Option<Vec<SocketAddr>>,
    next_address_check: Instant,
    /// `vx6 ping` requests waiting for their name to resolve, by resolution.
    ping_resolving: HashMap<u64, Token>,
    metrics: Option<metrics::MetricsServer>,
}

impl Daemon {
    /// Binds every socket. Fails with a clear message if an address is taken.
    pub fn bind(opts: Options) -> Result<Self> {
        let poll = Poll::new().context("creating the event loop")?;
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let now = Instant::now();
        let mut config = NodeConfig::new(
            opts.identity,
            Arc::new(rustls::crypto::ring::default_provider()),
            seed,
        );
        config.services = opts.services;
        config.pins = opts.pins;
        config.relay = opts.relay;
        let mut node = Node::new(now, config).context("starting the node")?;
        let unix = crate::clock::unix_now();
        node.set_unix_time(unix);
        node.bootstrap(&opts.bootstrap);
        // Re-enter through the peers remembered in the registry from the last run.
        let registry = crate::registry_file::load(
            &opts.registry_path,
            vx6_core::registry::RegistryLimits::default(),
            unix,
        )?;
        let own = node.node_id();
        let remembered: Vec<vx6_core::dht::Contact> = registry
            .iter()
            .filter(|r| r.owner() != own)
            .filter_map(|r| match r.record() {
                Record::Node(n) => n.addresses.first().map(|a| vx6_core::dht::Contact {
                    id: r.owner(),
                    addr: a.addr,
                }),
                _ => None,
            })
            .collect();
        // Relays and keys from records remembered, so relayed paths work before the DHT syncs.
        node.learn_records(now, registry.iter().filter(|r| r.owner() != own));
        if !remembered.is_empty() {
            tracing::info!(
                "re-entering through {} peers remembered in the registry",
                remembered.len()
            );
            node.bootstrap_contacts(now, &remembered);
        }
        // The UDP socket exists in both modes: it carries QUIC, and the DHT's datagrams (so a
        // node in TCP mode is still discoverable). TCP mode adds a TCP listener on the same
        // address.
        let mut udp = Udp::bind(opts.listen, poll.registry().try_clone()?)
            .with_context(|| format!("binding UDP {}", opts.listen))?;
        poll.registry().register(
            &mut udp.socket,
            UDP,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let udp = Some(udp);
        let tcp_listener = match opts.transport {
            Transport::Quic => None,
            Transport::Tcp => {
                let mut l = listen_tcp(opts.listen)
                    .with_context(|| format!("binding TCP {}", opts.listen))?;
                poll.registry()
                    .register(&mut l, TCP_LISTENER, Interest::READABLE)?;
                Some(l)
            }
        };
        let mut forwards = Vec::new();
        for (i, f) in opts.forwards.into_iter().enumerate() {
            let mut l =
                listen_tcp(f.local).with_context(|| format!("binding forward port {}", f.local))?;
            poll.registry()
                .register(&mut l, Token(FORWARD_BASE + i), Interest::READABLE)?;
            forwards.push((f, l));
        }
        for (i, (f, _)) in forwards.iter().enumerate() {
            if let Some(policy) = f.policy {
                node.set_policy(now, vx6_core::policy::PolicyId(i as u32), policy);
            }
        }
        let metrics = match opts.metrics {
            Some(addr) => Some(metrics::MetricsServer::bind(
                poll.registry(),
                addr,
                METRICS,
            )?),
            None => None,
        };
        if let Some(addr) = metrics.as_ref().and_then(|m| m.local_addr()) {
            tracing::info!("serving metrics at http://{addr}/metrics");
        }
        let control = ControlServer::bind(poll.registry(), opts.control_path, CONTROL)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), SIGNALS)?);
        let stop_requested = Arc::new(AtomicBool::new(false));
        {
            let (waker, stop) = (waker.clone(), stop_requested.clone());
            ctrlc::set_handler(move || {
                stop.store(true, Ordering::SeqCst);
                let _ = waker.wake();
            })
            .context("installing signal handlers")?;
        }
        Ok(Self {
            poll,
            node,
            transport: opts.transport,
            udp,
            tcp_listener,
            control,
            forward_failures: vec![Default::default(); forwards.len()],
            forwards,
            conns: HashMap::new(),
            by_stream: HashMap::new(),
            by_session: HashMap::new(),
            next_token: DYNAMIC_BASE,
            pins_path: opts.pins_path,
            stop_requested,
            _waker: waker,
            scratch: vec![0; READ_CHUNK],
            local_scratch: Vec::new(),
            closing: VecDeque::new(),
            accept_retry: AcceptRetry::default(),
            floods: floods::FloodLog::new(now),
            heap: heap::HeapTrim::new(now),
            name: opts.name,
            registry,
            registry_path: opts.registry_path,
            path_requests: HashMap::new(),
            pings: HashMap::new(),
            ping_resolving: HashMap::new(),
            announce: opts.announce,
            published: None,
            next_address_check: now,
            metrics,
        })
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    /// Where the session listener is bound.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        match (&self.udp, &self.tcp_listener) {
            (Some(u), _) => u.local_addr().ok(),
            (_, Some(l)) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// Runs until SIGINT or SIGTERM.
    pub fn run(mut self) -> Result<()> {
        self.publish_self(Instant::now());
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .node
                .poll_timeout()
                .into_iter()
                .chain(self.closing.front().map(|c| c.0))
                .chain(self.accept_retry.deadline())
                .chain([self.floods.deadline(), self.next_address_check])
                .chain(self.heap.deadline())
                .chain(self.metrics.as_ref().and_then(|m| m.deadline()))
                .chain(
                    self.pings
                        .values()
                        .filter(|p| p.target.is_some())
                        .map(|p| p.next_round),
                )
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("waiting for events"),
            }
            let now = Instant::now();
            self.heap.handled(events.iter().count());
            let mut stop = false;
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => stop |= self.stop_requested.load(Ordering::SeqCst),
                    token => self.on_io(now, token, ev.is_readable(), ev.is_writable()),
                }
            }
            let now = Instant::now();
            self.node.set_unix_time(crate::clock::unix_now());
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            self.expire_closing(now);
            if let Some(m) = &mut self.metrics {
                m.expire(self.poll.registry(), now);
                if m.take_freed() {
                    self.accept_metrics(now);
                }
            }
            self.run_pings(now);
            if self.next_address_check <= now {
                self.next_address_check = now + ADDRESS_CHECK_EVERY;
                self.publish_self(now);
            }
            if self.accept_retry.due(now) {
                self.retry_accepts(now);
            }
            self.settle(now);
            self.heap.run(now);
            if let Some(line) = self.floods.summary(now, self.node.counters()) {
                tracing::warn!("{line}");
            }
            if stop {
                self.shutdown();
                return Ok(());
            }
        }
    }

    /// The node's own addresses: the listen address, or for a wildcard listener its
    /// interfaces' (see [`addresses`]).
    fn own_addresses(&self) -> Vec<SocketAddr> {
        match self.listen_addr() {
            Some(addr) if addr.ip().is_unspecified() => {
                let dual = self.udp.as_ref().is_some_and(|u| u.dual_stack());
                addresses::interface_addresses(addr, dual)
            }
            Some(addr) => vec![addr],
            None => Vec::new(),
        }
    }

    /// Has the node publish its records (addresses, services, name) now if the addresses
    /// changed since the last time (else the node republishes on its own timer).
    fn publish_self(&mut self, now: Instant) {
        let own = self.own_addresses();
        self.node.set_local_addresses(own.clone());
        let addrs = addresses::published(&self.announce, &own, self.node.observed_addresses());
        if self.published.as_ref() == Some(&addrs) {
            return;
        }
        if addrs.is_empty() {
            tracing::warn!(
                "no address to publish (no usable interface address): others cannot reach \
                 this node by name; listen on a concrete address or give --announce"
            );
        } else {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            tracing::info!("publishing addresses {}", list.join(", "));
        }
        // The UDP socket carries QUIC in both modes: relay paths and relayed owners use it.
        let mut records = Vec::new();
        for addr in &addrs {
            records.push(NodeAddress {
                transport: self.transport,
                addr: *addr,
            });
            if self.transport == Transport::Tcp {
                records.push(NodeAddress {
                    transport: Transport::Quic,
                    addr: *addr,
                });
            }
        }
        self.published = Some(addrs);
        self.node.publish_self(now, self.name.clone(), records);
    }

    /// Keeps the records the DHT holds (peers' node records among them) in the registry file,
    /// so the next run can re-enter through those peers without `--bootstrap`.
    fn save_registry(&mut self) {
        let unix = crate::clock::unix_now();
        self.registry.remove_expired(unix);
        for r in self.node.dht().store().iter() {
            let _ = self.registry.insert(r.clone(), unix);
        }
        if let Err(e) = crate::registry_file::save(&self.registry_path, &self.registry) {
            tracing::warn!("{e:#}");
        }
    }

    fn shutdown(&mut self) {
        tracing::info!("shutting down");
        self.save_registry();
        let now = Instant::now();
        self.node.close_all(now);
        self.settle(now);
        self.control.remove_socket();
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn on_io(&mut self, now: Instant, token: Token, readable: bool, writable: bool) {
        match token {
            UDP => {
                if let Some(udp) = &mut self.udp {
                    if readable {
                        udp.receive(&mut self.node, now);
                    }
                    if writable {
                        udp.flush(&mut self.node, now);
                    }
                }
            }
            TCP_LISTENER => self.accept_peers(now),
            METRICS => self.accept_metrics(now),
            CONTROL => {
                let next = &mut self.next_token;
                let accepted = self.control.accept(self.poll.registry(), || {
                    *next += 1;
                    Token(*next)
                });
                for token in accepted {
                    self.serve_control(token);
                }
            }
            Token(t) if (FORWARD_BASE..FORWARD_BASE + self.forwards.len()).contains(&t) => {
                self.accept_forward(now, t - FORWARD_BASE)
            }
            Token(t) if (side::BASE..side::BASE + side::SLOTS).contains(&t) => {
                if let (Some(udp), true) = (&mut self.udp, readable) {
                    udp.side.receive(token, &mut self.node, now);
                }
            }
            token => self.on_conn(now, token, readable, writable),
        }
    }

    /// Carries out node events and flushes output until nothing is left to do.
    fn settle(&mut self, now: Instant) {
        for _ in 0..1024 {
            let mut progressed = false;
            while let Some(ev) = self.node.poll_event() {
                progressed = true;
                self.on_event(now, ev);
            }
            if let Some(udp) = &mut self.udp {
                udp.flush(&mut self.node, now);
            }
            let peers: Vec<Token> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c, Conn::Peer(_)))
                .map(|(t, _)| *t)
                .collect();
            for t in peers {
                progressed |= self.flush_peer(now, t);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::SessionUp {
                session,
                peer,
                transport,
                remote,
            } => tracing::info!("session {session} up: node {peer} at {remote} over {transport:?}"),
            Event::SessionDown {
                session,
                peer,
                remote,
                outgoing,
                failure,
            } => match (peer, outgoing) {
                (Some(peer), _) => tracing::info!(
                    "session {session} with {peer} at {remote} ended: {failure} ({})",
                    failure.cause.as_str()
                ),
                (None, true) => tracing::warn!(
                    "session {session} to {remote} failed: {failure} ({})",
                    failure.cause.as_str()
                ),
                // Anyone's: a flood would write a line per connection. Counted instead, and
                // summarised by `log_floods`.
                (None, false) => tracing::debug!(
                    "incoming session {session} from {remote} failed: {failure} ({})",
                    failure.cause.as_str()
                ),
            },
            Event::PinLearned { addr, node } => {
                tracing::info!("pinned node {node} for {addr} (trust on first use)");
                self.save_pins();
            }
            Event::TcpConnect { session, addr } => self.connect_peer(now, session, addr),
            Event::TcpClose { session, flush } => {
                if let Some(token) = self.by_session.get(&session).copied() {
                    match self.conns.get_mut(&token) {
                        // The last records go after what the socket has not taken yet.
                        Some(Conn::Peer(p)) if !p.connecting => {
                            p.closing = true;
                            p.out.tail().extend_from_slice(&flush);
                            self.closing.push_back((now + CLOSE_GRACE, token));
                            self.flush_peer(now, token);
                        }
                        _ => self.drop_conn(token, false),
                    }
                }
            }
            Event::ConnectTarget { stream, target, .. } => match target {
                Backend::Tcp(addr) => self.connect_target(now, stream, addr),
                // The daemon offers only TCP targets; the core never grants anything else here.
                Backend::InProcess => self
                    .node
                    .target_failed(now, stream, "no in-process handler"),
            },
            Event::StreamReadable(stream) => {
                if let Some(&token) = self.by_stream.get(&stream) {
                    self.pump(now, token, false, true);
                }
            }
            Event::StreamWritable(stream) => {
                if let Some(&token) = self.by_stream.get(&stream) {
                    self.pump(now, token, true, false);
                }
            }
            Event::StreamFailed { stream, failure } => {
                if let Some(&token) = self.by_stream.get(&stream) {
                    if let Some(Conn::Local(l)) = self.conns.get(&token)
                        && let Role::Forward(i) = l.role
                    {
                        self.forward_failed(i, failure);
                    }
                    self.drop_conn(token, true);
                }
            }
            Event::Refused {
                peer,
                service,
                failure,
            } => tracing::warn!(
                "refused stream for {service:?} from node {peer}: {failure} ({})",
                failure.cause.as_str()
            ),
            Event::Circuit(c) => {
                let path = |p: &[vx6_core::NodeId]| {
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" > ")
                };
                match c {
                    CircuitEvent::Up {
                        owner,
                        path: p,
                        active,
                    } => tracing::info!(
                        "circuit to {owner} up via {} ({})",
                        path(&p),
                        if active { "active" } else { "standby" }
                    ),
                    CircuitEvent::FailedOver { owner, path: p } => tracing::warn!(
                        "link to {owner}: active circuit failed, moved to the standby via {}",
                        path(&p)
                    ),
                    CircuitEvent::Failed {
                        owner,
                        path: p,
                        failure,
                    } => tracing::warn!(
                        "circuit to {owner} via {} failed: {failure} ({})",
                        path(&p),
                        failure.cause.as_str()
                    ),
                    CircuitEvent::Switched {
                        owner,
                        policy,
                        from,
                        to,
                        path: p,
                        reason,
                    } => {
                        // A link `auto` streams fell back to serves every plain forward to
                        // its owner: it is named by the owner.
                        let (forward, target, what) = match self.forwards.get(policy.0 as usize) {
                            _ if policy == vx6_core::policy::PolicyId::AUTO => (
                                "auto".to_owned(),
                                owner.to_string(),
                                format!("auto link to node {owner}"),
                            ),
                            Some((f, _)) => (
                                f.local.to_string(),
                                f.target.to_string(),
                                format!("forward {} to {}", f.local, f.target),
                            ),
                            None => return,
                        };
                        let kind = |k: Option<vx6_core::policy::PathKind>| {
                            k.map_or("no path", |k| k.as_str())
                        };
                        let via = if p.is_empty() {
                            String::new()
                        } else {
                            format!(" via {}", path(&p))
                        };
                        match from {
                            None => tracing::info!(
                                forward = %forward,
                                target = %target,
                                to = kind(to),
                                reason = reason.as_str(),
                                "{what}: path {}{via} ({reason})",
                                kind(to)
                            ),
                            Some(_) => tracing::warn!(
                                forward = %forward,
                                target = %target,
                                from = kind(from),
                                to = kind(to),
                                reason = reason.as_str(),
                                "{what}: path switched from {} to {}{via} ({reason})",
                                kind(from),
                                kind(to)
                            ),
                        }
                    }
                }
            }
            Event::AddressesObserved { addresses } => {
                let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                tracing::info!("peers agree they see this node at {}", list.join(", "));
                self.publish_self(now);
            }
            Event::Reachability { verdicts } => {
                for (v4, verdict) in verdicts {
                    let family = if v4 { "IPv4" } else { "IPv6" };
                    match verdict {
                        Verdict::Reachable => {
                            tracing::info!("peers can dial this node over {family}")
                        }
                        Verdict::Unreachable => tracing::info!(
                            "peers cannot dial this node over {family} (their dial-backs never \
                             arrive): a NAT or firewall is in front of it"
                        ),
                        Verdict::Unknown => {}
                    }
                }
            }
            Event::HomeRelays { relays } if relays.is_empty() => {
                tracing::info!("this node's record names no relays as its way in")
            }
            Event::HomeRelays { relays } => {
                let list: Vec<String> = relays.iter().map(ToString::to_string).collect();
                tracing::info!(
                    "this node cannot be dialed: it keeps sessions to relay(s) {} and its \
                     record names them as its way in",
                    list.join(", ")
                );
            }
            Event::PingReply {
                id,
                path: kind,
                relays,
                circuit,
                rtt,
            } => {
                if let Some(job) = self.pings.values_mut().find(|j| j.ids.contains(&id)) {
                    let via = if relays.is_empty() {
                        if circuit { " [managed link]" } else { "" }.to_owned()
                    } else {
                        let short: Vec<String> = relays
                            .iter()
                            .map(|n| n.to_string().chars().take(12).collect())
                            .collect();
                        format!(" [{}]", short.join(" > "))
                    };
                    job.lines.push(format!(
                        "reply from {} via {kind}{via}: rtt {:.3} ms",
                        job.name,
                        rtt.as_secs_f64() * 1000.0
                    ));
                }
            }
            Event::Resolved { id, result, .. } if self.ping_resolving.contains_key(&id) => {
                let token = self.ping_resolving.remove(&id).expect("checked");
                match result {
                    Ok((node, addrs)) => {
                        if let Some(job) = self.pings.get_mut(&token) {
                            let quic = addrs
                                .iter()
                                .find(|a| a.transport == Transport::Quic)
                                .map(|a| a.addr);
                            job.target = Some((node, quic));
                            job.next_round = now;
                        }
                    }
                    Err(failure) => {
                        self.pings.remove(&token);
                        let reply = format!("error: {failure}\n");
                        self.control.reply(self.poll.registry(), token, reply);
                    }
                }
            }
            Event::Resolved { id, name, result } if self.path_requests.contains_key(&id) => {
                let hops = self.path_requests.remove(&id).unwrap_or(2);
                let reply = match &result {
                    Ok((node, _)) => status::path(
                        &name,
                        *node,
                        &self.node.status().circuits,
                        self.node.link_selection(node).cloned(),
                        self.node.explain_path(Instant::now(), *node, hops),
                    ),
                    Err(failure) => format!("error: {failure}\n"),
                };
                self.control.resolved(self.poll.registry(), id, reply);
            }
            Event::Resolved { id, name, result } => {
                let reply = match &result {
                    Ok((node, addrs)) => {
                        tracing::info!(
                            "resolved {name} to node {node} ({} addresses)",
                            addrs.len()
                        );
                        let mut text = format!("{node}\n");
                        for a in addrs {
                            text.push_str(
                                &format!("{} {:?}\n", a.addr, a.transport).to_lowercase(),
                            );
                        }
                        text
                    }
                    Err(failure) => {
                        tracing::warn!("resolving {name}: {failure} ({})", failure.cause.as_str());
                        format!("error: {failure}\n")
                    }
                };
                self.control.resolved(self.poll.registry(), id, reply);
            }
            Event::NamePinned { username, node } => {
                tracing::info!("pinned node {node} for name {username} (trust on first use)");
                self.save_pins();
            }
            Event::Published {
                key,
                records,
                stored_at,
            } => {
                let what = if key == name_key(&self.name) {
                    format!("the claim to the name {}", self.name)
                } else {
                    format!("{records} record(s) under {key}")
                };
                tracing::info!("published {what} at {stored_at} node(s)");
                // Once per republication: keep what the DHT holds for the next run.
                if key == self.node.node_id() {
                    self.save_registry();
                }
            }
            Event::AliasPublished {
                address,
                period,
                stored_at,
            } => tracing::debug!(
                "published the record of alias {address} for period {period} at {stored_at} node(s)"
            ),
            Event::AliasFound {
                address, result, ..
            } => match result {
                Ok(d) => {
                    tracing::debug!("alias {address}: {} introduction relay(s)", d.intro.len())
                }
                Err(failure) => tracing::warn!("alias {address}: {failure}"),
            },
        }
    }

    /// A connection on forward `i` failed: logged with its cause, and counted for status.
    fn forward_failed(&mut self, i: usize, failure: Failure) {
        let f = &self.forwards[i].0;
        tracing::warn!(
            "connection on {} to {} closed: {failure} ({})",
            f.local,
            f.target,
            failure.cause.as_str()
        );
        self.forward_failures[i].record(failure);
    }

    fn save_pins(&self) {
        if let Err(e) = crate::atomic::write(&self.pins_path, self.node.pins().to_text().as_bytes())
        {
            tracing::warn!("saving {}: {e}", self.pins_path.display());
        }
    }

    /// Answers a control client's request, once it has sent it.
    fn serve_control(&mut self, token: Token) {
        let Some(line) = self.control.read(self.poll.registry(), token) else {
            return;
        };
        let now = Instant::now();
        let reply = match request::parse(&line) {
            Err(e) => format!("error: {e}\n"),
            Ok(Request::Status { json }) => status::answer(json, &self.status_context()),
            Ok(Request::Policy { local, settings }) => self.change_policy(local, &settings),
            Ok(Request::Resolve(target)) => {
                let id = self.node.resolve(now, target);
                return self.control.wait_for(id, token);
            }
            Ok(Request::Path { hops, target }) => {
                let id = self.node.resolve(now, target);
                self.path_requests.insert(id, hops);
                return self.control.wait_for(id, token);
            }
            Ok(Request::Ping { count, target }) => {
                let name = target.to_string();
                let id = self.node.resolve(now, target);
                self.ping_resolving.insert(id, token);
                self.pings.insert(
                    token,
                    PingJob {
                        name,
                        target: None,
                        rounds_left: count,
                        next_round: now,
                        ids: Vec::new(),
                        sent: 0,
                        lines: Vec::new(),
                    },
                );
                return;
            }
        };
        self.control.reply(self.poll.registry(), token, reply);
    }

    /// `policy LOCALADDR SETTINGS`: the forward listening on LOCALADDR takes SETTINGS over
    /// its policy; its managed link, if up, follows at once.
    fn change_policy(&mut self, local: SocketAddr, settings: &str) -> String {
        let Some(i) = self.forwards.iter().position(|(f, _)| f.local == local) else {
            return format!("error: no forward listens on {local}\n");
        };
        if self.transport == Transport::Tcp {
            return "error: a path policy needs --transport quic: a TLS/TCP session cannot \
                    move between paths\n"
                .to_owned();
        }
        let f = &self.forwards[i].0;
        let was_managed = f.policy.is_some();
        let current = f.policy.unwrap_or_else(|| plain_policy(f));
        let policy = match current.with_settings(settings.trim()) {
            Ok(p) => p,
            Err(e) => return format!("error: {e}\n"),
        };
        self.forwards[i].0.policy = Some(policy);
        self.node
            .set_policy(Instant::now(), vx6_core::policy::PolicyId(i as u32), policy);
        let f = &self.forwards[i].0;
        tracing::info!(
            "forward {} to {}: policy set to {policy}",
            f.local,
            f.target
        );
        let note = if was_managed {
            ""
        } else {
            " (new connections; those open keep the path they have)"
        };
        format!(
            "forward {} to {}: policy {policy}{note}\n",
            f.local, f.target
        )
    }

    /// Sends the pings' rounds that are due, and answers those that are over.
    fn run_pings(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .pings
            .iter()
            .filter(|(_, j)| j.target.is_some() && j.next_round <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(job) = self.pings.get_mut(&key) else {
                continue;
            };
            let Some((owner, addr)) = job.target else {
                continue;
            };
            if job.rounds_left == 0 {
                let job = self.pings.remove(&key).expect("present");
                let mut text = job.lines.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                let answered = job.lines.len();
                text.push_str(&format!(
                    "{} probes sent, {answered} answered{}\n",
                    job.sent,
                    if self.node.link_selection(&owner).is_none()
                        && !job.lines.iter().any(|l| l.contains("via relay"))
                    {
                        " (no relay circuit to it is up: only a relayed or managed forward keeps one)"
                    } else {
                        ""
                    }
                ));
                if answered == 0 {
                    text = format!("error: no answer from {}: {text}", job.name);
                }
                self.control.reply(self.poll.registry(), key, text);
                continue;
            }
            let (id, sent) = self.node.ping(now, owner, addr);
            job.ids.push(id);
            job.sent += sent;
            job.rounds_left -= 1;
            job.next_round = now
                + if job.rounds_left == 0 {
                    vx6_core::node::PING_TIMEOUT.min(std::time::Duration::from_secs(2))
                } else {
                    PING_INTERVAL
                };
        }
    }

    /// Takes metrics clients from the listen queue while there is room (also after clients
    /// leave: readiness is edge-triggered, so those still queued raise no new event).
    fn accept_metrics(&mut self, now: Instant) {
        let next = &mut self.next_token;
        let accepted = match &mut self.metrics {
            Some(m) => m.accept(self.poll.registry(), now, || {
                *next += 1;
                Token(*next)
            }),
            None => Vec::new(),
        };
        for token in accepted {
            self.serve_metrics(token);
        }
    }

    /// Answers a metrics client with the node's registry and the forwards' own series.
    fn serve_metrics(&mut self, token: Token) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (node, forwards) = (&self.node, &self.forwards);
        m.serve(self.poll.registry(), token, || {
            let mut registry = node.metrics();
            metrics_of_forwards(node, forwards, &mut registry);
            let mut text = String::new();
            if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
                tracing::warn!("encoding metrics: {e}");
            }
            text
        });
    }

    fn status_context(&self) -> status::Context<'_> {
        let mut per_forward = vec![0; self.forwards.len()];
        for c in self.conns.values() {
            if let Conn::Local(l) = c
                && let Role::Forward(i) = l.role
            {
                per_forward[i] += 1;
            }
        }
        status::Context {
            status: self.node.status(),
            services: self.node.services(),
            forwards: self.forwards.iter().map(|(f, _)| f.clone()).collect(),
            forward_connections: per_forward,
            forward_failures: &self.forward_failures,
            policies: (0..self.forwards.len())
                .map(|i| {
                    self.node
                        .policy_status(vx6_core::policy::PolicyId(i as u32))
                })
                .collect(),
            auto_links: self.node.auto_links(),
            dht: self.node.dht().stats(),
            dht_peers: self.node.dht().table().len(),
            records_held: self.node.dht().store().len(),
            path_switches: self.node.path_switches().collect(),
            published: self.published.clone().unwrap_or_default(),
            observed: self.node.observed_addresses().to_vec(),
            reachability: self.node.reachability(),
            dial_backs: self.node.dial_back_verdicts(),
            home_relays: self.node.home_relays(),
        }
    }
}

/// The policy a forward without one follows in effect: its path and hops, no SLA.
fn plain_policy(f: &ForwardSpec) -> vx6_core::policy::Policy {
    use vx6_core::node::Route;
    use vx6_core::policy::{Policy, Prefer};
    let (prefer, hops) = match f.route() {
        Route::Direct => (Prefer::Direct, vx6_core::node::DEFAULT_HOPS),
        Route::Relay { hops } => (Prefer::Relay, hops),
        Route::Auto { hops } => (Prefer::Auto, hops),
        Route::Policy(_) => (Prefer::Auto, vx6_core::node::DEFAULT_HOPS),
    };
    Policy {
        prefer,
        hops,
        ..Policy::default()
    }
}

/// Adds the forwards' own series to `registry`: path and SLA state of managed forwards, and
/// connections, labelled by the forward's target as configured (bounded by the config).
fn metrics_of_forwards(
    node: &Node,
    forwards: &[(ForwardSpec, TcpListener)],
    registry: &mut prometheus_client::registry::Registry,
) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Labels = Vec<(&'static str, String)>;
    let mut names: Vec<String> = Vec::new();
    for (f, _) in forwards {
        // Never a node id or an address: a name as configured, or the service of a direct one.
        let base = match &f.target {
            crate::spec::ForwardTarget::Named(t) => t.to_string(),
            crate::spec::ForwardTarget::Direct { service, .. } => format!("direct/{service}"),
        };
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}#{n}");
        }
        names.push(name);
    }
    let paths = Family::<Labels, Gauge>::default();
    let slas = Family::<Labels, Gauge>::default();
    let switches = Family::<Labels, Gauge>::default();
    for (i, (f, _)) in forwards.iter().enumerate() {
        if f.policy.is_none() {
            continue;
        }
        let forward = &names[i];
        let st = node.policy_status(vx6_core::policy::PolicyId(i as u32));
        let path = st
            .as_ref()
            .and_then(|s| s.path)
            .map_or("none", |k| k.as_str());
        for p in ["direct", "relay", "none"] {
            let labels = vec![("forward", forward.clone()), ("path", p.to_owned())];
            paths.get_or_create(&labels).set(i64::from(p == path));
        }
        let sla = st.as_ref().map_or("unknown", |s| s.sla.as_str());
        for s in ["met", "violated", "unknown"] {
            let labels = vec![("forward", forward.clone()), ("state", s.to_owned())];
            slas.get_or_create(&labels).set(i64::from(s == sla));
        }
        switches
            .get_or_create(&vec![("forward", forward.clone())])
            .set(st.as_ref().map_or(0, |s| s.switches as i64));
    }
    registry.register(
        "vx6_forward_path",
        "Managed forwards: 1 for the kind of path carrying the forward now",
        paths,
    );
    registry.register(
        "vx6_forward_sla",
        "Managed forwards: 1 for the state of the path in use against the SLA",
        slas,
    );
    registry.register(
        "vx6_forward_switches",
        "Managed forwards: path switches since the link came up",
        switches,
    );
}

/// Connections the kernel queues for a listener before this daemon accepts them. mio (like std)
/// asks for 128, which a burst of connections to a forward port overflows: the kernel then
/// drops handshakes and later resets connections the client thought established. The kernel
/// caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`].
fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn unreachable(e: &std::io::Error) -> Failure {
    Failure::new(Cause::Unreachable, format!("cannot connect: {e}"))
}

/// Accept errors that concern one connection (gone before it was taken), not the listener.
fn accept_skips(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
    )
}
