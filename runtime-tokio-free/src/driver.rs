//! The task that drives the core: it feeds the node datagrams, TCP bytes and time, carries out
//! the node's events, and sends what the node wants sent. One per node; API handles wake it
//! whenever they change the node.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use vx6_core::{Cause, Failure};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use quinn_udp::RecvMeta;
use vx6_core::node::{Event, SessionId, SideOp, SideSocket, StreamHandle};
use vx6_core::service::Backend;

use crate::bridge::bridge;
use crate::events::NodeEvent;
use crate::runtime::{AsyncListener, AsyncStream, AsyncTimer, AsyncUdpSocket, BoxFuture};
use crate::shared::{ACCEPT_QUEUE, Shared, State};
use crate::stream::VxStream;

/// Receive batches (each up to one GRO batch).
const BATCH: usize = quinn_udp::BATCH_SIZE;
const SLOT: usize = 64 * 1024;
/// Bytes read from a TCP session socket per call.
const PEER_READ: usize = 256 * 1024;
/// Rounds of work per wake-up before the driver yields to other tasks.
const ROUNDS: usize = 64;
/// How long a shutdown waits for sessions to close cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A TCP connection being made for a session.
type Connecting = BoxFuture<io::Result<Box<dyn AsyncStream>>>;

/// A TLS-over-TCP session's socket.
struct Peer {
    io: Box<dyn AsyncStream>,
    out: Vec<u8>,
    off: usize,
}

impl Peer {
    fn new(io: Box<dyn AsyncStream>) -> Self {
        Self {
            io,
            out: Vec::new(),
            off: 0,
        }
    }
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    udp: Box<dyn AsyncUdpSocket>,
    listener: Option<Box<dyn AsyncListener>>,
    timer: Pin<Box<dyn AsyncTimer>>,
    /// Where the timer is set. Moved only when the core wants an earlier wake-up (or the timer
    /// has fired): resetting a reactor's timer on every poll costs a wake-up of the reactor.
    timer_at: Instant,
    bufs: Vec<Vec<u8>>,
    out: Vec<u8>,
    stalled: Option<quinn_proto::Transmit>,
    peers: HashMap<SessionId, Peer>,
    connecting: Vec<(SessionId, Connecting)>,
    scratch: Vec<u8>,
    closing: Option<Instant>,
    /// The sockets beside the node's own that it asks for (hole punching).
    side: HashMap<SideSocket, Box<dyn AsyncUdpSocket>>,
}

impl Driver {
    pub fn new(
        shared: Arc<Shared>,
        udp: Box<dyn AsyncUdpSocket>,
        listener: Option<Box<dyn AsyncListener>>,
    ) -> Self {
        let now = shared.runtime.now();
        let timer = shared.runtime.new_timer(now);
        Self {
            shared,
            udp,
            listener,
            timer,
            timer_at: now,
            bufs: vec![vec![0; SLOT]; BATCH],
            out: Vec::with_capacity(SLOT),
            stalled: None,
            peers: HashMap::new(),
            connecting: Vec::new(),
            scratch: vec![0; PEER_READ],
            closing: None,
            side: HashMap::new(),
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut st = shared.lock();
        st.driver = Some(cx.waker().clone());
        let now = shared.runtime.now();
        st.node.set_unix_time(shared.runtime.unix_time());
        if st.shutdown && this.closing.is_none() {
            st.node.close_all(now);
            this.closing = Some(now + CLOSE_GRACE);
        }
        let mut busy = false;
        for round in 0.. {
            if round == ROUNDS {
                busy = true;
                break;
            }
            let mut progress = this.receive(cx, &mut st, now);
            progress |= this.accept_sessions(cx, &mut st, now);
            progress |= this.poll_connecting(cx, &mut st, now);
            progress |= this.read_peers(cx, &mut st, now);
            if st.node.poll_timeout().is_some_and(|t| t <= now) {
                st.node.handle_timeout(now);
                progress = true;
            }
            while let Some(event) = st.node.poll_event() {
                progress = true;
                this.on_event(cx, &mut st, now, event);
            }
            progress |= this.send(cx, &mut st, now);
            progress |= this.write_peers(cx, &mut st);
            if !progress {
                break;
            }
        }
        if let Some(deadline) = this.closing
            && (now >= deadline || st.node.status().sessions.is_empty())
        {
            st.stopped = true;
            st.wake_all();
            return Poll::Ready(());
        }
        if busy {
            // Let other tasks run; come straight back.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = st.node.poll_timeout().into_iter().chain(this.closing).min();
        if let Some(next) = next
            && (next < this.timer_at || this.timer_at <= now)
        {
            this.timer_at = next;
            this.timer.as_mut().reset(next);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            // Fired (perhaps early, for a deadline the core has since moved): poll again.
            this.timer_at = now;
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Driver {
    fn receive(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = false;
        let mut meta = [RecvMeta::default(); BATCH];
        // A bounded number of batches, so a flood cannot keep the driver here forever.
        for _ in 0..16 {
            let mut slices: Vec<IoSliceMut<'_>> =
                self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match self.udp.poll_recv(cx, &mut slices, &mut meta) {
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    for (m, buf) in meta.iter().zip(&self.bufs).take(n) {
                        let ecn = m
                            .ecn
                            .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                        for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                            st.node.handle_datagram(
                                now,
                                m.addr,
                                m.dst_ip,
                                ecn,
                                BytesMut::from(datagram),
                            );
                        }
                    }
                }
                // ICMP errors (port unreachable, …) surface here; they are not fatal.
                Poll::Ready(Err(e)) => tracing::debug!("UDP receive: {e}"),
                Poll::Pending => break,
            }
        }
        progress | self.receive_side(cx, st, now)
    }

    /// What the side sockets received (a few datagrams each: they carry probes, and a pinned
    /// one a single direct session).
    fn receive_side(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = false;
        let mut meta = [RecvMeta::default(); 1];
        for (id, socket) in &self.side {
            for _ in 0..16 {
                let mut slices = [IoSliceMut::new(&mut self.bufs[0])];
                match socket.poll_recv(cx, &mut slices, &mut meta) {
                    Poll::Ready(Ok(n)) => {
                        progress = true;
                        for m in meta.iter().take(n) {
                            for datagram in self.bufs[0][..m.len].chunks(m.stride.max(1)) {
                                let d = BytesMut::from(datagram);
                                st.node.handle_side_datagram(now, *id, m.addr, d);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => tracing::trace!("{id}: {e}"),
                    Poll::Pending => break,
                }
            }
        }
        progress
    }

    /// Carries out what the node asks of its side sockets.
    fn apply_side_ops(&mut self, cx: &mut Context<'_>, st: &mut State) -> bool {
        let mut progress = false;
        while let Some(op) = st.node.poll_side_op() {
            progress = true;
            match op {
                SideOp::Open { socket, peer } => {
                    let local = self.udp.local_addr().ok();
                    let bind = vx6_core::reach::dial_back_source(local, peer);
                    match self.shared.runtime.bind_udp(bind) {
                        Ok(s) => {
                            self.side.insert(socket, s);
                        }
                        // One port fewer for the attempt: nothing else depends on it.
                        Err(e) => tracing::debug!("{socket} at {bind}: {e}"),
                    }
                }
                SideOp::Send {
                    socket,
                    to,
                    datagram,
                } => self.send_side(cx, socket, to, &datagram, None),
                SideOp::Close(socket) => {
                    self.side.remove(&socket);
                }
            }
        }
        progress
    }

    /// Sends from a side socket; a full one loses the datagram (QUIC recovers, probes repeat).
    fn send_side(
        &self,
        cx: &mut Context<'_>,
        socket: SideSocket,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) {
        let Some(s) = self.side.get(&socket) else {
            return;
        };
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        if let Poll::Ready(Err(e)) = s.poll_send(cx, &transmit) {
            tracing::trace!("{socket} to {to}: {e}");
        }
    }

    fn send(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = self.apply_side_ops(cx, st);
        while let Some((to, datagram)) = st.node.poll_dial_back() {
            progress = true;
            send_from_fresh_port(self.udp.local_addr().ok(), to, &datagram);
        }
        let max_segments = self.udp.max_transmit_segments();
        loop {
            let t = match self.stalled.take() {
                Some(t) => t,
                None => match st.node.poll_transmit(now, max_segments, &mut self.out) {
                    Some(t) => t,
                    None => return progress,
                },
            };
            if let Some(socket) = st.node.side_socket_for(t.destination) {
                progress = true;
                let contents = &self.out[..t.size];
                self.send_side(cx, socket, t.destination, contents, t.segment_size);
                continue;
            }
            let transmit = quinn_udp::Transmit {
                destination: t.destination,
                ecn: t
                    .ecn
                    .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
                contents: &self.out[..t.size],
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            };
            match self.udp.poll_send(cx, &transmit) {
                Poll::Ready(Ok(())) => progress = true,
                // Lost, as far as QUIC is concerned; it recovers.
                Poll::Ready(Err(e)) => tracing::debug!("UDP send to {}: {e}", t.destination),
                Poll::Pending => {
                    self.stalled = Some(t);
                    return progress;
                }
            }
        }
    }

    fn accept_sessions(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let Some(listener) = &self.listener else {
            return false;
        };
        let mut progress = false;
        while let Poll::Ready(r) = listener.poll_accept(cx) {
            progress = true;
            match r {
                Ok((io, addr)) => match st.node.accept_tcp(now, addr) {
                    Some(session) => {
                        self.peers.insert(session, Peer::new(io));
                    }
                    None => tracing::warn!("refusing session from {addr}: session limit reached"),
                },
                Err(e) => {
                    tracing::warn!("accepting a session connection: {e}");
                    break;
                }
            }
        }
        progress
    }

    fn poll_connecting(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.connecting.len() {
            let Poll::Ready(r) = self.connecting[i].1.as_mut().poll(cx) else {
                i += 1;
                continue;
            };
            progress = true;
            let (session, _) = self.connecting.swap_remove(i);
            match r {
                Ok(io) => {
                    self.peers.insert(session, Peer::new(io));
                    st.node.handle_tcp_connected(now, session);
                }
                Err(e) => st.node.handle_tcp_closed(
                    now,
                    session,
                    Failure::new(Cause::Unreachable, e.to_string()),
                ),
            }
        }
        progress
    }

    fn read_peers(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = false;
        let mut closed = Vec::new();
        for (session, peer) in &mut self.peers {
            loop {
                match Pin::new(&mut peer.io).poll_read(cx, &mut self.scratch) {
                    Poll::Ready(Ok(0)) => {
                        closed.push((
                            *session,
                            Failure::new(Cause::ConnectionLost, "closed by peer"),
                        ));
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        progress = true;
                        st.node.handle_tcp_data(now, *session, &self.scratch[..n]);
                    }
                    Poll::Ready(Err(e)) => {
                        closed.push((*session, Failure::new(Cause::ConnectionLost, e.to_string())));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        for (session, failure) in closed {
            progress = true;
            self.peers.remove(&session);
            st.node.handle_tcp_closed(now, session, failure);
        }
        progress
    }

    fn write_peers(&mut self, cx: &mut Context<'_>, st: &mut State) -> bool {
        let mut progress = false;
        for (session, peer) in &mut self.peers {
            loop {
                while peer.off < peer.out.len() {
                    match Pin::new(&mut peer.io).poll_write(cx, &peer.out[peer.off..]) {
                        Poll::Ready(Ok(n)) => {
                            progress = true;
                            peer.off += n;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!("session socket write: {e}");
                            peer.out.clear();
                            peer.off = 0;
                        }
                        Poll::Pending => break,
                    }
                }
                if peer.off < peer.out.len() {
                    break;
                }
                peer.out.clear();
                peer.off = 0;
                if !st.node.poll_tcp_transmit(*session, &mut peer.out) {
                    break;
                }
            }
        }
        progress
    }

    fn on_event(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant, event: Event) {
        match event {
            Event::StreamReadable(h) => {
                if let Some(slot) = st.streams.get_mut(&h) {
                    slot.open = true;
                    if let Some(w) = slot.reader.take() {
                        w.wake();
                    }
                }
            }
            Event::StreamWritable(h) => {
                if let Some(w) = st.streams.get_mut(&h).and_then(|s| s.writer.take()) {
                    w.wake();
                }
            }
            Event::StreamFailed { stream, failure } => {
                if let Some(slot) = st.streams.get_mut(&stream) {
                    slot.failed = Some(failure);
                    slot.wake();
                }
            }
            Event::ConnectTarget {
                stream,
                service,
                target,
            } => match target {
                Backend::Tcp(addr) => {
                    let shared = self.shared.clone();
                    self.shared
                        .runtime
                        .spawn(Box::pin(connect_target(shared, stream, addr)));
                }
                Backend::InProcess => match st.accept.get_mut(&service) {
                    Some(q) if q.waiting.len() < ACCEPT_QUEUE => {
                        q.waiting.push_back((stream, None));
                        if let Some(w) = q.waker.take() {
                            w.wake();
                        }
                    }
                    Some(_) => st.node.target_failed(now, stream, "service busy"),
                    None => st.node.target_failed(now, stream, "service not served"),
                },
            },
            Event::TcpConnect { session, addr } => {
                let connect = self.shared.runtime.tcp_connect(addr);
                self.connecting.push((session, connect));
            }
            Event::TcpClose { session, flush } => {
                if let Some(mut peer) = self.peers.remove(&session) {
                    // Best effort: what fits the socket now, then close.
                    let _ = Pin::new(&mut peer.io).poll_write(cx, &flush);
                    let _ = Pin::new(&mut peer.io).poll_close(cx);
                }
                self.connecting.retain(|(s, _)| *s != session);
            }
            Event::Resolved { id, result, .. } => {
                if let Some(slot) = st.resolutions.get_mut(&id) {
                    slot.result = Some(
                        result.map(|(node, addresses)| crate::node::Resolved { node, addresses }),
                    );
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                }
            }
            Event::SessionUp {
                peer,
                transport,
                remote,
                ..
            } => st.push_event(NodeEvent::SessionUp {
                peer,
                transport,
                remote,
            }),
            Event::SessionDown {
                peer,
                remote,
                failure,
                ..
            } => st.push_event(NodeEvent::SessionDown {
                peer,
                remote,
                failure,
            }),
            Event::PinLearned { addr, node } => st.push_event(NodeEvent::PinLearned { addr, node }),
            Event::NamePinned { username, node } => {
                st.push_event(NodeEvent::NamePinned { username, node })
            }
            Event::Published { key, stored_at, .. } => {
                st.push_event(NodeEvent::Published { key, stored_at })
            }
            Event::Refused {
                peer,
                service,
                failure,
            } => st.push_event(NodeEvent::Refused {
                peer,
                service,
                failure,
            }),
            Event::Circuit(c) => st.push_event(NodeEvent::Circuit(c)),
            Event::AliasPublished {
                address,
                period,
                stored_at,
            } => st.push_event(NodeEvent::AliasPublished {
                address,
                period,
                stored_at,
            }),
            // The embedding API starts no alias lookups, so none finish here.
            Event::AliasFound { .. } => {}
            Event::AddressesObserved { addresses } => {
                st.push_event(NodeEvent::AddressesObserved { addresses })
            }
            Event::Reachability { verdicts } => st.push_event(NodeEvent::Reachability { verdicts }),
            Event::HomeRelays { relays } => st.push_event(NodeEvent::HomeRelays { relays }),
            Event::PingReply {
                id,
                path,
                relays,
                circuit,
                rtt,
            } => st.push_event(NodeEvent::PingReply {
                id,
                path,
                relays,
                circuit,
                rtt,
            }),
        }
    }
}

/// Connects a granted stream's TCP target and carries bytes both ways.
async fn connect_target(shared: Arc<Shared>, stream: StreamHandle, addr: SocketAddr) {
    match shared.runtime.tcp_connect(addr).await {
        Ok(tcp) => {
            let vx = {
                let mut st = shared.lock();
                let now = shared.runtime.now();
                st.slot(stream).open = true;
                st.node.target_connected(now, stream);
                st.wake_driver();
                VxStream::new(shared.clone(), stream)
            };
            bridge(tcp, vx).await;
        }
        Err(e) => {
            let mut st = shared.lock();
            let now = shared.runtime.now();
            st.node.target_failed(now, stream, &format!("{addr}: {e}"));
            st.wake_driver();
        }
    }
}

/// Sends one datagram from a new socket on an ephemeral port (a dial-back must not come from
/// the port the peer's NAT expects), bound as [`vx6_core::reach::dial_back_source`] says. A
/// failure only means the peer hears nothing, which is what it then concludes.
fn send_from_fresh_port(
    local: Option<std::net::SocketAddr>,
    to: std::net::SocketAddr,
    datagram: &[u8],
) {
    let any = vx6_core::reach::dial_back_source(local, to);
    let sent = std::net::UdpSocket::bind(any)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(|s| s.send_to(datagram, to));
    if let Err(e) = sent {
        tracing::debug!("dial-back to {to}: {e}");
    }
}
