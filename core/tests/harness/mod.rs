//! A virtual-time network for driving real `Node`s with no sockets, in the style of
//! quinn-proto's `Pair`: datagrams and TCP bytes move between nodes after a latency, UDP with
//! seeded loss and an MTU. Local targets and client applications are simulated in memory.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use vx6_core::node::{Dial, Event, Node, NodeConfig, SessionId, SideOp, SideSocket, StreamHandle};
use vx6_core::pins::Pins;
use vx6_core::record::Transport;
use vx6_core::service::{Access, Backend, Service, ServiceTable};
use vx6_core::session::StreamRead;
use vx6_core::{Cause, Failure};
use vx6_core::{Identity, NodeId, ServiceName};

/// Unix time at the harness's epoch.
pub const UNIX_START: u64 = 1_800_000_000;

/// Port of the in-memory echo target on every host.
pub const ECHO_PORT: u16 = 7;
/// A port where no target listens.
pub const DOWN_PORT: u16 = 9;

/// What a client application did with its stream.
#[derive(Debug, Default)]
pub struct App {
    pub to_send: Vec<u8>,
    pub sent: usize,
    pub finished: bool,
    pub received: Vec<u8>,
    pub eof: bool,
    pub failed: Option<Failure>,
    /// Keep the stream open after sending (no FIN).
    pub hold: bool,
}

#[derive(Default)]
struct Echo {
    pending: VecDeque<u8>,
    peer_eof: bool,
    finished: bool,
}

pub struct Host {
    pub node: Node,
    pub addr: SocketAddr,
    pub apps: BTreeMap<StreamHandle, App>,
    echoes: BTreeMap<StreamHandle, Echo>,
    pub log: Vec<Event>,
    pub target_connects: usize,
    /// Side sockets the node opened, and their ports.
    pub side: BTreeMap<SideSocket, u16>,
    /// Most side sockets it held open at once.
    pub side_peak: usize,
    next_side_port: u16,
}

/// A NAT in front of a host (`Net::nat`), whose filtering admits only answers (a datagram
/// from the very address a flow went to), as Linux conntrack does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Keeps the source port (nftables `masquerade`).
    KeepsPort,
    /// A random port for every (source port, destination) (`masquerade random`).
    RandomPort,
}

struct Packet {
    at: Instant,
    seq: u64,
    to: usize,
    kind: PacketKind,
}

enum PacketKind {
    Udp {
        from: SocketAddr,
        /// The receiving host's port (its node's socket, or a side socket).
        port: u16,
        data: Vec<u8>,
    },
    /// `from`: the sending (host, session), whose in-flight count drops on delivery.
    Tcp {
        session: SessionId,
        data: Vec<u8>,
        from: Option<(usize, SessionId)>,
    },
    TcpClosed {
        session: SessionId,
    },
}

pub struct Net {
    pub now: Instant,
    start: Instant,
    pub hosts: Vec<Host>,
    packets: Vec<Packet>,
    seq: u64,
    rng: ChaCha8Rng,
    pub latency: Duration,
    pub loss: f64,
    pub mtu: usize,
    /// (host, session) ↔ (host, session) for TCP sessions.
    tcp_links: BTreeMap<(usize, SessionId), (usize, SessionId)>,
    pub udp_dropped: u64,
    /// Hosts whose datagrams vanish both ways (a dead or unplugged machine).
    pub down: std::collections::BTreeSet<usize>,
    /// Host pairs between which datagrams vanish (a blackholed route), either way.
    pub cut: std::collections::BTreeSet<(usize, usize)>,
    /// Host pairs between which this fraction of datagrams vanishes, either way.
    pub lossy: BTreeMap<(usize, usize), f64>,
    /// Hosts behind a stateful firewall: a datagram reaches one only from an address it sent
    /// to before (as a NAT or an IPv6 home router lets in only answers).
    pub firewalled: std::collections::BTreeSet<usize>,
    /// (firewalled host, remote address) it has sent to: the firewall's open flows.
    opened: std::collections::BTreeSet<(usize, SocketAddr)>,
    /// Hosts behind a NAT: they reach others from their public address ([`Net::public_ip`]),
    /// and their own address cannot be reached from outside.
    pub nat: BTreeMap<usize, Nat>,
    /// (host, its port, destination) → the NAT's port; (host, NAT port, remote) → its port.
    nat_out: BTreeMap<(usize, u16, SocketAddr), u16>,
    nat_in: BTreeMap<(usize, u16, SocketAddr), u16>,
    /// Dial-backs sent so far (each from a port of its own, as a runtime does).
    dial_backs: u16,
    /// Applied to every node's configuration before it starts.
    pub configure: fn(&mut NodeConfig),
    /// Bytes one TCP connection may have in flight in each direction (the socket's send
    /// buffer): output beyond it waits in the runtime's buffer, and the node is asked for more
    /// only once that buffer has left, as runtime-mio does. Unbounded by default.
    pub tcp_buffer: usize,
    /// The transport `open_routed` dials (and relays are reached) over.
    pub routed_transport: Transport,
    /// Per (host, session): output the socket has not taken yet, and bytes in flight.
    tcp_out: BTreeMap<(usize, SessionId), (Vec<u8>, usize)>,
}

// The in-memory echo target as service `echo`, and `down` where nothing listens.
pub fn echo_services(access: Access) -> ServiceTable {
    let mut t = ServiceTable::new(false);
    t.add(
        "echo".parse().unwrap(),
        Service {
            target: Backend::Tcp(format!("127.0.0.1:{ECHO_PORT}").parse().unwrap()),
            access: access.clone(),
        },
    )
    .unwrap();
    t.add(
        "down".parse().unwrap(),
        Service {
            target: Backend::Tcp(format!("127.0.0.1:{DOWN_PORT}").parse().unwrap()),
            access,
        },
    )
    .unwrap();
    t
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

impl Net {
    pub fn new(seed: u64) -> Self {
        // The harness's epoch; everything after it is virtual.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            now,
            start: now,
            hosts: Vec::new(),
            packets: Vec::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            latency: Duration::from_millis(10),
            loss: 0.0,
            mtu: 1500,
            tcp_links: BTreeMap::new(),
            udp_dropped: 0,
            down: Default::default(),
            cut: Default::default(),
            lossy: Default::default(),
            firewalled: Default::default(),
            opened: Default::default(),
            nat: BTreeMap::new(),
            nat_out: BTreeMap::new(),
            nat_in: BTreeMap::new(),
            dial_backs: 0,
            configure: |_| {},
            tcp_buffer: usize::MAX,
            routed_transport: Transport::Quic,
            tcp_out: BTreeMap::new(),
        }
    }

    /// A node with a fresh seed from the harness RNG, on the harness's wall clock.
    fn make_node(&mut self, identity: Identity, services: ServiceTable, pins: Pins) -> Node {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let mut config = NodeConfig::new(
            identity,
            Arc::new(rustls::crypto::ring::default_provider()),
            seed,
        );
        config.services = services;
        config.pins = pins;
        config.limits.max_sessions = 64;
        (self.configure)(&mut config);
        let mut node = Node::new(self.now, config).unwrap();
        node.set_unix_time(UNIX_START + (self.now - self.start).as_secs());
        node
    }

    /// One datagram from host `i` (at `from`) onto the network, or lost on the way.
    fn send_udp(&mut self, i: usize, from: SocketAddr, destination: SocketAddr, chunk: &[u8]) {
        let lost = self.loss > 0.0 && (self.rng.next_u32() as f64 / u32::MAX as f64) < self.loss;
        if lost || chunk.len() > self.mtu {
            self.udp_dropped += 1;
            return;
        }
        if self.firewalled.contains(&i) {
            self.opened.insert((i, destination));
        }
        let from = self.translate_out(i, from, destination);
        let Some((to, port)) = self.route_in(from, destination) else {
            self.udp_dropped += 1;
            return;
        };
        if self.down.contains(&i)
            || self.down.contains(&to)
            || self.cut.contains(&(i, to))
            || self.cut.contains(&(to, i))
            || (self.firewalled.contains(&to) && !self.opened.contains(&(to, from)))
        {
            self.udp_dropped += 1;
            return;
        }
        if let Some(p) = self.lossy.get(&(i, to)).or(self.lossy.get(&(to, i)))
            && (self.rng.next_u32() as f64 / u32::MAX as f64) < *p
        {
            self.udp_dropped += 1;
            return;
        }
        self.push(
            to,
            PacketKind::Udp {
                from,
                port,
                data: chunk.to_vec(),
            },
        );
    }

    /// Publishes host `i`'s node record, under the name `n<i>`, naming `addr` (QUIC) as its
    /// address, as a runtime does at start.
    pub fn publish_at(&mut self, i: usize, addr: SocketAddr) {
        let addresses = vec![vx6_core::record::NodeAddress {
            transport: Transport::Quic,
            addr,
        }];
        let name = format!("n{i}").parse().unwrap();
        let now = self.now;
        self.hosts[i].node.publish_self(now, name, addresses);
    }

    /// Host `i`'s NAT forgets every mapping (a router restarted): flows get new ports, and
    /// answers to the old ones are dropped.
    pub fn nat_reset(&mut self, i: usize) {
        self.nat_out.retain(|(h, _, _), _| *h != i);
        self.nat_in.retain(|(h, _, _), _| *h != i);
    }

    /// The public address of host `i` if it is behind a NAT.
    pub fn public_ip(&self, i: usize) -> std::net::IpAddr {
        format!("fd6b::{}", i + 1).parse().unwrap()
    }

    /// Where a datagram from host `i` at `from` to `destination` appears to come from: its NAT
    /// maps it (a new mapping per flow, kept for the run).
    fn translate_out(&mut self, i: usize, from: SocketAddr, destination: SocketAddr) -> SocketAddr {
        let Some(nat) = self.nat.get(&i).copied() else {
            return from;
        };
        let key = (i, from.port(), destination);
        let port = match self.nat_out.get(&key) {
            Some(p) => *p,
            None => {
                let p = match nat {
                    Nat::KeepsPort => from.port(),
                    Nat::RandomPort => loop {
                        let p = 1024 + (self.rng.next_u32() % 64_512) as u16;
                        if !self.nat_in.keys().any(|(h, e, _)| *h == i && *e == p) {
                            break p;
                        }
                    },
                };
                self.nat_out.insert(key, p);
                self.nat_in.insert((i, p, destination), from.port());
                p
            }
        };
        SocketAddr::new(self.public_ip(i), port)
    }

    /// The host and port a datagram from `from` to `destination` reaches, if any: a NAT
    /// passes only answers to flows its host opened, and a host behind one cannot be reached
    /// at its own address.
    fn route_in(&self, from: SocketAddr, destination: SocketAddr) -> Option<(usize, u16)> {
        if let Some(&i) = self
            .nat
            .keys()
            .find(|i| self.public_ip(**i) == destination.ip())
        {
            let port = self.nat_in.get(&(i, destination.port(), from))?;
            return Some((i, *port));
        }
        let i = self.host_by_addr_ip(destination.ip())?;
        (!self.nat.contains_key(&i)).then_some((i, destination.port()))
    }

    fn host_by_addr_ip(&self, ip: std::net::IpAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr.ip() == ip)
    }

    /// Adds a host at `[fd6a::<n>]:4433` running `identity` with `services`; returns its index.
    pub fn add_host(&mut self, identity: Identity, services: ServiceTable, pins: Pins) -> usize {
        let n = self.hosts.len() + 1;
        let addr: SocketAddr = format!("[fd6a::{n}]:4433").parse().unwrap();
        let node = self.make_node(identity, services, pins);
        self.hosts.push(Host {
            node,
            addr,
            apps: BTreeMap::new(),
            echoes: BTreeMap::new(),
            log: Vec::new(),
            target_connects: 0,
            side: BTreeMap::new(),
            side_peak: 0,
            next_side_port: 20_000,
        });
        self.hosts.len() - 1
    }

    /// Replaces host `i`'s node (a restart, possibly with another key), keeping its address.
    pub fn restart_host(&mut self, i: usize, identity: Identity, services: ServiceTable) {
        self.hosts[i].node = self.make_node(identity, services, Pins::default());
        self.hosts[i].echoes.clear();
        self.hosts[i].target_connects = 0;
        self.hosts[i].log.clear();
        // The old process's TCP connections die with it: their peers see the close.
        let dead: Vec<_> = self
            .tcp_links
            .iter()
            .filter(|((h, _), _)| *h == i)
            .map(|(_, peer)| *peer)
            .collect();
        self.tcp_links.retain(|(h, _), (p, _)| *h != i && *p != i);
        self.tcp_out.retain(|(h, _), _| *h != i);
        // Bytes the old process had in flight still arrive, but no longer count for anyone (the
        // new process numbers its sessions afresh).
        for p in &mut self.packets {
            if let PacketKind::Tcp { from, .. } = &mut p.kind
                && from.is_some_and(|(h, _)| h == i)
            {
                *from = None;
            }
        }
        // Bytes on their way to the old process's connections meet a kernel that resets them;
        // they never reach the new process (whose sessions reuse the old numbers).
        self.packets.retain(|p| {
            p.to != i
                || !matches!(
                    p.kind,
                    PacketKind::Tcp { .. } | PacketKind::TcpClosed { .. }
                )
        });
        for (peer, session) in dead {
            self.push(peer, PacketKind::TcpClosed { session });
        }
    }

    pub fn node_id(&self, i: usize) -> NodeId {
        self.hosts[i].node.node_id()
    }

    /// Client app on host `from` opens `service` on host `to` and will send `data` then FIN.
    pub fn open(
        &mut self,
        from: usize,
        to: usize,
        transport: Transport,
        expected: Option<NodeId>,
        service: &str,
        data: Vec<u8>,
    ) -> StreamHandle {
        let dial = Dial {
            addr: self.hosts[to].addr,
            transport,
            expected,
        };
        let now = self.now;
        let host = &mut self.hosts[from];
        let h = host
            .node
            .open_stream(now, &dial, service.parse::<ServiceName>().unwrap());
        host.apps.insert(
            h,
            App {
                to_send: data,
                ..App::default()
            },
        );
        h
    }

    /// As [`Net::open`], by `route`.
    #[allow(clippy::too_many_arguments)]
    pub fn open_routed(
        &mut self,
        from: usize,
        to: usize,
        expected: Option<NodeId>,
        service: &str,
        data: Vec<u8>,
        route: vx6_core::node::Route,
    ) -> StreamHandle {
        let addr = self.hosts[to].addr;
        self.open_routed_at(from, addr, expected, service, data, route)
    }

    /// As [`Net::open_routed`], to the owner at `addr` (an address it may not be at).
    pub fn open_routed_at(
        &mut self,
        from: usize,
        addr: SocketAddr,
        expected: Option<NodeId>,
        service: &str,
        data: Vec<u8>,
        route: vx6_core::node::Route,
    ) -> StreamHandle {
        let transport = self.routed_transport;
        let dial = Dial {
            addr,
            transport,
            expected,
        };
        let now = self.now;
        let host = &mut self.hosts[from];
        let h = host.node.open_stream_routed(
            now,
            &dial,
            service.parse::<ServiceName>().unwrap(),
            route,
        );
        host.apps.insert(
            h,
            App {
                to_send: data,
                ..App::default()
            },
        );
        h
    }

    fn host_by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr == addr)
    }

    fn push(&mut self, to: usize, kind: PacketKind) {
        self.seq += 1;
        self.packets.push(Packet {
            at: self.now + self.latency,
            seq: self.seq,
            to,
            kind,
        });
    }

    /// Processes everything that can happen at the current instant.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            for i in 0..self.hosts.len() {
                progress |= self.step_host(i);
            }
            if !progress {
                return;
            }
        }
        panic!("harness did not settle: livelock");
    }

    fn step_host(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut progress = false;
        // Events.
        while let Some(ev) = self.hosts[i].node.poll_event() {
            progress = true;
            self.on_event(i, ev.clone());
            self.hosts[i].log.push(ev);
        }
        // Applications and echo targets.
        let host = &mut self.hosts[i];
        for (h, app) in host.apps.iter_mut() {
            if app.failed.is_some() {
                continue;
            }
            // Applications write owned chunks (`stream_write_bytes`, as the daemon does) and
            // echo targets borrowed slices (`stream_write`), so every test runs both.
            while app.sent < app.to_send.len() {
                let end = app.to_send.len().min(app.sent + 64 * 1024);
                let mut chunk = Bytes::copy_from_slice(&app.to_send[app.sent..end]);
                let offered = chunk.len();
                match host.node.stream_write_bytes(now, *h, &mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        assert_eq!(n + chunk.len(), offered, "what was taken left the chunk");
                        app.sent += n;
                        progress = true;
                    }
                }
            }
            if app.sent == app.to_send.len() && !app.finished && !app.hold {
                host.node.stream_finish(now, *h);
                app.finished = true;
                progress = true;
            }
            while !app.eof {
                match host.node.stream_read(now, *h, 64 * 1024) {
                    StreamRead::Data(b) => {
                        app.received.extend_from_slice(&b);
                        progress = true;
                    }
                    StreamRead::Finished => {
                        app.eof = true;
                        progress = true;
                    }
                    StreamRead::Reset(code) => {
                        app.failed = Some(vx6_core::node::reset_failure(code));
                        progress = true;
                        break;
                    }
                    StreamRead::Blocked => break,
                }
            }
        }
        for (h, echo) in host.echoes.iter_mut() {
            while !echo.peer_eof && echo.pending.len() < 1 << 20 {
                match host.node.stream_read(now, *h, 64 * 1024) {
                    StreamRead::Data(b) => {
                        echo.pending.extend(b.iter());
                        progress = true;
                    }
                    StreamRead::Finished | StreamRead::Reset(_) => {
                        echo.peer_eof = true;
                        progress = true;
                    }
                    StreamRead::Blocked => break,
                }
            }
            while !echo.pending.is_empty() {
                let (a, _) = echo.pending.as_slices();
                match host.node.stream_write(now, *h, a) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        echo.pending.drain(..n);
                        progress = true;
                    }
                }
            }
            if echo.peer_eof && echo.pending.is_empty() && !echo.finished {
                host.node.stream_finish(now, *h);
                echo.finished = true;
                progress = true;
            }
        }
        // Network output.
        while let Some(op) = self.hosts[i].node.poll_side_op() {
            progress = true;
            let host = &mut self.hosts[i];
            match op {
                SideOp::Open { socket, .. } => {
                    host.next_side_port += 1;
                    host.side.insert(socket, host.next_side_port);
                    host.side_peak = host.side_peak.max(host.side.len());
                }
                SideOp::Send {
                    socket,
                    to,
                    datagram,
                } => {
                    if let Some(port) = host.side.get(&socket) {
                        let from = SocketAddr::new(host.addr.ip(), *port);
                        self.send_udp(i, from, to, &datagram);
                    }
                }
                SideOp::Close(socket) => {
                    host.side.remove(&socket);
                }
            }
        }
        let mut buf = Vec::new();
        while let Some(t) = self.hosts[i].node.poll_transmit(now, 10, &mut buf) {
            progress = true;
            let seg = t.segment_size.unwrap_or(t.size);
            let host = &self.hosts[i];
            let from = match host.node.side_socket_for(t.destination) {
                Some(s) => SocketAddr::new(host.addr.ip(), host.side[&s]),
                None => host.addr,
            };
            for chunk in buf[..t.size].chunks(seg) {
                self.send_udp(i, from, t.destination, chunk);
            }
        }
        while let Some((to, datagram)) = self.hosts[i].node.poll_dial_back() {
            progress = true;
            self.dial_backs += 1;
            let from = SocketAddr::new(self.hosts[i].addr.ip(), 50_000 + self.dial_backs % 10_000);
            self.send_udp(i, from, to, &datagram);
        }
        let links: Vec<_> = self
            .tcp_links
            .iter()
            .filter(|((h, _), _)| *h == i)
            .map(|((_, s), (p, ps))| (*s, *p, *ps))
            .collect();
        for (sid, peer, peer_sid) in links {
            let (mut pending, in_flight) = self.tcp_out.remove(&(i, sid)).unwrap_or_default();
            if pending.is_empty() && self.hosts[i].node.poll_tcp_transmit(sid, &mut pending) {
                progress = true;
            }
            let n = self.tcp_buffer.saturating_sub(in_flight).min(pending.len());
            if n > 0 {
                progress = true;
                let rest = pending.split_off(n);
                let data = std::mem::replace(&mut pending, rest);
                self.push(
                    peer,
                    PacketKind::Tcp {
                        session: peer_sid,
                        data,
                        from: Some((i, sid)),
                    },
                );
            }
            self.tcp_out.insert((i, sid), (pending, in_flight + n));
        }
        progress
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        let now = self.now;
        match ev {
            Event::ConnectTarget { stream, target, .. } => {
                self.hosts[i].target_connects += 1;
                if matches!(target, Backend::Tcp(addr) if addr.port() == ECHO_PORT) {
                    self.hosts[i].echoes.insert(stream, Echo::default());
                    self.hosts[i].node.target_connected(now, stream);
                } else {
                    self.hosts[i]
                        .node
                        .target_failed(now, stream, "connection refused");
                }
            }
            Event::StreamFailed { stream, failure } => {
                if let Some(app) = self.hosts[i].apps.get_mut(&stream) {
                    app.failed = Some(failure);
                }
            }
            Event::TcpConnect { session, addr } => match self.host_by_addr(addr) {
                Some(peer) => {
                    let from = self.hosts[i].addr;
                    let Some(peer_sid) = self.hosts[peer].node.accept_tcp(now, from) else {
                        self.hosts[i].node.handle_tcp_closed(
                            now,
                            session,
                            Cause::LimitReached.into(),
                        );
                        return;
                    };
                    self.tcp_links.insert((i, session), (peer, peer_sid));
                    self.tcp_links.insert((peer, peer_sid), (i, session));
                    self.hosts[i].node.handle_tcp_connected(now, session);
                }
                None => {
                    self.hosts[i]
                        .node
                        .handle_tcp_closed(now, session, Cause::Unreachable.into())
                }
            },
            Event::TcpClose { session, flush } => {
                if let Some((peer, peer_sid)) = self.tcp_links.remove(&(i, session)) {
                    self.tcp_links.remove(&(peer, peer_sid));
                    // What the runtime still held goes out first, then the last words.
                    let (mut data, _) = self.tcp_out.remove(&(i, session)).unwrap_or_default();
                    self.tcp_out.remove(&(peer, peer_sid));
                    data.extend_from_slice(&flush);
                    if !data.is_empty() {
                        self.push(
                            peer,
                            PacketKind::Tcp {
                                session: peer_sid,
                                data,
                                from: None,
                            },
                        );
                    }
                    self.push(peer, PacketKind::TcpClosed { session: peer_sid });
                }
            }
            _ => {}
        }
    }

    /// Runs until `done` holds or `limit` of virtual time passes; returns whether `done` held.
    /// Runs for `d` of virtual time, ending exactly `d` later even if nothing happened.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(d, |_| false);
        self.now = self.now.max(end);
    }

    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            let next_packet = self.packets.iter().map(|p| p.at).min();
            let next_timer = self
                .hosts
                .iter_mut()
                .filter_map(|h| h.node.poll_timeout())
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                return false;
            };
            if next > end {
                return false;
            }
            self.now = self.now.max(next);
            let now = self.now;
            // Deliver due packets in send order.
            self.packets.sort_by_key(|p| (p.at, p.seq));
            let due: Vec<Packet> = {
                let split = self.packets.iter().take_while(|p| p.at <= now).count();
                self.packets.drain(..split).collect()
            };
            for p in due {
                let h = &mut self.hosts[p.to];
                let host = &mut h.node;
                match p.kind {
                    PacketKind::Udp { from, port, data } => {
                        let data = BytesMut::from(&data[..]);
                        match h.side.iter().find(|(_, q)| **q == port).map(|(s, _)| *s) {
                            Some(s) => host.handle_side_datagram(now, s, from, data),
                            None if port == h.addr.port() => {
                                host.handle_datagram(now, from, None, None, data)
                            }
                            None => self.udp_dropped += 1,
                        }
                    }
                    PacketKind::Tcp {
                        session,
                        data,
                        from,
                    } => {
                        if let Some(from) = from
                            && let Some((_, in_flight)) = self.tcp_out.get_mut(&from)
                        {
                            *in_flight -= data.len();
                        }
                        host.handle_tcp_data(now, session, &data)
                    }
                    PacketKind::TcpClosed { session } => {
                        host.handle_tcp_closed(now, session, Cause::ConnectionLost.into())
                    }
                }
            }
            let unix = UNIX_START + (now - self.start).as_secs();
            for h in &mut self.hosts {
                h.node.set_unix_time(unix);
                if h.node.poll_timeout().is_some_and(|t| t <= now) {
                    h.node.handle_timeout(now);
                }
            }
        }
    }

    /// Whether every app on host `i` finished or failed.
    pub fn apps_done(&self, i: usize) -> bool {
        self.hosts[i]
            .apps
            .values()
            .all(|a| a.failed.is_some() || (a.eof && a.finished))
    }
}

/// Deterministic test payload.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
