//! The node's one UDP socket, through quinn-udp (GSO on send, GRO and batched receive).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use vx6_core::node::Node;

use super::side::SideSockets;

/// Socket buffers asked for; loopback and fast links drop packets with the default 208 KiB.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Room for one GRO batch per receive slot.
const SLOT: usize = 64 * 1024;

pub struct Udp {
    pub socket: mio::net::UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Vec<u8>>,
    /// Datagrams of the current receive batch the relay forwards, sent together after it.
    forwards: Forwards,
    /// A transmit the socket refused with WouldBlock, sent again once writable.
    stalled: Option<(quinn_proto::Transmit, Vec<u8>)>,
    out: Vec<u8>,
    /// An IPv6 socket (IPv4 peers are sent to at their mapped addresses).
    v6: bool,
    /// Where the socket is bound (asked once: it was a system call per flush).
    local: Option<SocketAddr>,
    /// The sockets beside this one that the node asks for (hole punching).
    pub side: SideSockets,
}

impl Udp {
    pub fn bind(addr: SocketAddr, registry: mio::Registry) -> std::io::Result<Self> {
        let socket = mio::net::UdpSocket::bind(addr)?;
        let state = UdpSocketState::new((&socket).into())?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
        let got = state.recv_buffer_size((&socket).into()).unwrap_or(0);
        if got < SOCKET_BUFFER {
            tracing::debug!(
                "UDP receive buffer is {got} bytes (asked {SOCKET_BUFFER}); raise \
                 net.core.rmem_max for full QUIC throughput"
            );
        }
        let local = socket.local_addr().ok();
        Ok(Self {
            socket,
            state,
            bufs: vec![vec![0; SLOT]; BATCH],
            forwards: Forwards::default(),
            stalled: None,
            out: Vec::with_capacity(SLOT),
            v6: addr.is_ipv6(),
            local,
            side: SideSockets::new(registry),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| std::io::Error::other("UDP socket has no local address"))
    }

    /// Whether an IPv6 socket also takes IPv4 (a wildcard `[::]` listener's IPv4 addresses
    /// are reachable only then).
    pub fn dual_stack(&self) -> bool {
        self.socket.local_addr().is_ok_and(|a| a.is_ipv6())
            && socket2::SockRef::from(&self.socket)
                .only_v6()
                .is_ok_and(|only| !only)
    }

    /// Reads every waiting datagram into the node.
    pub fn receive(&mut self, node: &mut Node, now: Instant) {
        let mut meta = [RecvMeta::default(); BATCH];
        loop {
            let mut slices: Vec<IoSliceMut<'_>> =
                self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = match self
                .state
                .recv((&self.socket).into(), &mut slices, &mut meta)
            {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (e.g. port unreachable); they are not fatal.
                    tracing::debug!("UDP receive: {e}");
                    continue;
                }
            };
            let max_gso = self.state.max_gso_segments().max(1);
            for m in meta.iter_mut().take(n) {
                m.addr = canonical(m.addr);
            }
            for (slot, (m, buf)) in meta.iter().zip(&mut self.bufs).enumerate().take(n) {
                let ecn = m
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                let stride = m.stride.max(1);
                if m.len > 0 && vx6_core::relay::header::is_relay(buf[0]) {
                    let batch = &mut buf[..m.len];
                    let out = (&self.state, &self.socket, max_gso, self.v6);
                    relay_slot(node, now, m, slot, batch, out, &mut self.forwards);
                    continue;
                }
                for datagram in buf[..m.len].chunks(stride) {
                    node.handle_datagram(now, m.addr, m.dst_ip, ecn, BytesMut::from(datagram));
                }
            }
            self.forwards
                .send((&self.state, &self.socket, self.v6), &self.bufs);
        }
    }

    /// Sends what the node has; stops (and remembers) at WouldBlock.
    pub fn flush(&mut self, node: &mut Node, now: Instant) {
        // Side sockets first: a full main socket must not hold back their opening and probes.
        let local = self.local;
        self.side.apply(node, local);
        match self.stalled.take() {
            Some((t, buf)) if !send((&self.state, &self.socket, self.v6), &t, &buf) => {
                self.stalled = Some((t, buf));
                return;
            }
            _ => {}
        }
        while let Some((to, datagram)) = node.poll_dial_back() {
            send_from_fresh_port(local, to, &datagram);
        }
        let max_segments = self.state.max_gso_segments();
        while let Some(t) = node.poll_transmit(now, max_segments, &mut self.out) {
            if let Some(socket) = node.side_socket_for(t.destination) {
                let segment = t.segment_size.unwrap_or(t.size).max(1);
                for d in self.out[..t.size].chunks(segment) {
                    self.side.send(socket, t.destination, d);
                }
                continue;
            }
            if !send((&self.state, &self.socket, self.v6), &t, &self.out) {
                self.stalled = Some((t, std::mem::take(&mut self.out)));
                return;
            }
        }
    }
}

/// The userspace relay, for one receive slot (one datagram, or a GRO batch from one sender):
/// each datagram's label is swapped in place. A batch wholly for one next hop leaves at once in
/// one GSO send, straight from the receive buffer; other forwarded datagrams join `forwards`,
/// sent together once the whole receive batch is read (one `sendmmsg` on Linux). Datagrams for
/// this node go to it as usual. No copy and no allocation per datagram.
fn relay_slot(
    node: &mut Node,
    now: Instant,
    m: &RecvMeta,
    slot: usize,
    batch: &mut [u8],
    (state, socket, max_gso, v6): (&UdpSocketState, &mio::net::UdpSocket, usize, bool),
    forwards: &mut Forwards,
) {
    let stride = m.stride.max(1);
    let mark = forwards.len();
    let mut one_hop: Option<SocketAddr> = None;
    let mut all_forwarded = true;
    let mut start = 0;
    while start < batch.len() {
        let end = (start + stride).min(batch.len());
        match node.relay_switch(now, m.addr, &mut batch[start..end]) {
            Some(to) => {
                if one_hop.is_some_and(|h| h != to) {
                    all_forwarded = false;
                }
                one_hop.get_or_insert(to);
                forwards.push(slot, start, end, to);
            }
            None => {
                all_forwarded = false;
                let ecn = m
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                let d = BytesMut::from(&batch[start..end]);
                node.handle_datagram(now, m.addr, m.dst_ip, ecn, d);
            }
        }
        start = end;
    }
    // A GRO batch wholly for one next hop: GSO keeps it one send, segmented by the kernel.
    if let (true, Some(to)) = (
        all_forwarded && batch.len() > stride && max_gso > 1,
        one_hop,
    ) {
        forwards.truncate(mark);
        for chunk in batch.chunks(stride * max_gso) {
            let t = Transmit {
                destination: on_wire(to, v6),
                ecn: m.ecn,
                contents: chunk,
                segment_size: (chunk.len() > stride).then_some(stride),
                src_ip: None,
            };
            // A full socket drops the datagrams, as a congested link would.
            if let Err(e) = state.send(socket.into(), &t) {
                tracing::trace!("relay send to {to}: {e}");
            }
        }
    }
}

/// Forwarded datagrams waiting to leave: where each lies in the receive buffers, and where it
/// goes. The vectors keep their capacity from batch to batch.
#[derive(Default)]
struct Forwards {
    entries: Vec<(usize, usize, usize, SocketAddr)>,
    #[cfg(target_os = "linux")]
    scratch: mmsg::Scratch,
}

impl Forwards {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    fn push(&mut self, slot: usize, start: usize, end: usize, to: SocketAddr) {
        self.entries.push((slot, start, end, to));
    }

    /// Sends them all; a full socket drops the rest, as a congested link would.
    fn send(
        &mut self,
        (state, socket, v6): (&UdpSocketState, &mio::net::UdpSocket, bool),
        bufs: &[Vec<u8>],
    ) {
        if self.entries.is_empty() {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let _ = state;
            self.scratch
                .send(socket.as_raw_fd(), v6, bufs, &self.entries);
        }
        #[cfg(not(target_os = "linux"))]
        for &(slot, start, end, to) in &self.entries {
            let t = Transmit {
                destination: on_wire(to, v6),
                ecn: None,
                contents: &bufs[slot][start..end],
                segment_size: None,
                src_ip: None,
            };
            if let Err(e) = state.send(socket.into(), &t) {
                tracing::trace!("relay send to {to}: {e}");
            }
        }
        self.entries.clear();
    }
}

/// `sendmmsg(2)`: one system call for a batch of datagrams to different next hops (quinn-udp
/// sends to one destination per call). The workspace denies `unsafe`; this module is one of three
/// exceptions (the others are `local::read_spare` and `heap::trim`): the relay spent half its
/// time in per-datagram `sendmsg` calls (BENCHMARKS.md), and
/// the two unsafe calls below are a zeroed plain-data header and the system call itself.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mmsg {
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    /// The arrays a call needs, kept between calls.
    #[derive(Default)]
    pub struct Scratch {
        addrs: Vec<socket2::SockAddr>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl Scratch {
        pub fn send(
            &mut self,
            fd: RawFd,
            v6_socket: bool,
            bufs: &[Vec<u8>],
            entries: &[(usize, usize, usize, SocketAddr)],
        ) {
            self.addrs.clear();
            self.iovs.clear();
            self.hdrs.clear();
            for &(slot, start, end, to) in entries {
                let to = match (v6_socket, to) {
                    (true, SocketAddr::V4(v4)) => {
                        SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
                    }
                    _ => to,
                };
                self.addrs.push(socket2::SockAddr::from(to));
                let data = &bufs[slot][start..end];
                self.iovs.push(libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                });
            }
            for (addr, iov) in self.addrs.iter().zip(self.iovs.iter_mut()) {
                // SAFETY: mmsghdr is plain data, for which all zeroes is an empty header.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = addr.len();
                h.msg_hdr.msg_iov = iov as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            let mut sent = 0;
            while sent < self.hdrs.len() {
                let rest = &mut self.hdrs[sent..];
                // SAFETY: every header points into `addrs`, `iovs` and `bufs`, which are alive
                // and unmoved for the whole call.
                let n =
                    unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
                if n > 0 {
                    sent += n as usize;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    // Full: the rest is dropped, as a congested link would.
                    std::io::ErrorKind::WouldBlock => return,
                    // This datagram cannot go (say, a next hop now unreachable): skip it.
                    _ => {
                        tracing::trace!("relay sendmmsg: {e}");
                        sent += 1;
                    }
                }
            }
        }
    }
}

/// An IPv4 peer as a dual-stack socket reports it (`::ffff:a.b.c.d`), as the IPv4 address it
/// is: the node then hands other peers an address an IPv4-only node can use.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Where a socket (`v6`: an IPv6 one) sends to `addr`: an IPv4 peer at its mapped address
/// from an IPv6 socket.
fn on_wire(addr: SocketAddr, v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v6 => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        _ => addr,
    }
}

/// Sends one transmit; false means the socket is full (WouldBlock). Other errors are logged and
/// the datagram counts as lost: QUIC recovers from loss.
fn send(
    (state, socket, v6): (&UdpSocketState, &mio::net::UdpSocket, bool),
    t: &quinn_proto::Transmit,
    contents: &[u8],
) -> bool {
    let transmit = Transmit {
        destination: on_wire(t.destination, v6),
        ecn: t
            .ecn
            .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
        contents: &contents[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    };
    match state.send(socket.into(), &transmit) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => {
            tracing::debug!("UDP send to {}: {e}", t.destination);
            true
        }
    }
}

/// Sends one datagram from a new socket on an ephemeral port (a dial-back must not come from
/// the port the peer's NAT expects), bound as [`vx6_core::reach::dial_back_source`] says. A
/// failure only means the peer hears nothing, which is what it then concludes.
fn send_from_fresh_port(local: Option<SocketAddr>, to: SocketAddr, datagram: &[u8]) {
    let any = vx6_core::reach::dial_back_source(local, to);
    let sent = std::net::UdpSocket::bind(any)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(|s| s.send_to(datagram, to));
    if let Err(e) = sent {
        tracing::debug!("dial-back to {to}: {e}");
    }
}
