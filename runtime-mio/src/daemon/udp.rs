//! The node's one UDP socket, through quinn-udp (GSO on send, GRO and batched receive).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use vx6_core::node::Node;

/// Socket buffers asked for; loopback and fast links drop packets with the default 208 KiB.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Room for one GRO batch per receive slot.
const SLOT: usize = 64 * 1024;

pub struct Udp {
    pub socket: mio::net::UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Vec<u8>>,
    /// A transmit the socket refused with WouldBlock, sent again once writable.
    stalled: Option<(quinn_proto::Transmit, Vec<u8>)>,
    out: Vec<u8>,
}

impl Udp {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
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
        Ok(Self {
            socket,
            state,
            bufs: vec![vec![0; SLOT]; BATCH],
            stalled: None,
            out: Vec::with_capacity(SLOT),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
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
            for (m, buf) in meta.iter().zip(&mut self.bufs).take(n) {
                let ecn = m
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                let stride = m.stride.max(1);
                if m.len > 0 && vx6_core::relay::header::is_relay(buf[0]) {
                    relay_batch(
                        node,
                        &self.state,
                        &self.socket,
                        now,
                        m,
                        &mut buf[..m.len],
                        max_gso,
                    );
                    continue;
                }
                for datagram in buf[..m.len].chunks(stride) {
                    node.handle_datagram(now, m.addr, m.dst_ip, ecn, BytesMut::from(datagram));
                }
            }
        }
    }

    /// Sends what the node has; stops (and remembers) at WouldBlock.
    pub fn flush(&mut self, node: &mut Node, now: Instant) {
        match self.stalled.take() {
            Some((t, buf)) if !send(&self.state, &self.socket, &t, &buf) => {
                self.stalled = Some((t, buf));
                return;
            }
            _ => {}
        }
        let max_segments = self.state.max_gso_segments();
        while let Some(t) = node.poll_transmit(now, max_segments, &mut self.out) {
            if !send(&self.state, &self.socket, &t, &self.out) {
                self.stalled = Some((t, std::mem::take(&mut self.out)));
                return;
            }
        }
    }
}

/// The userspace relay: the label of each datagram of a received batch is swapped in place,
/// and runs of datagrams for one next hop leave in one GSO send, straight from the receive
/// buffer (no copy, no allocation). Datagrams for this node go to it as usual.
fn relay_batch(
    node: &mut Node,
    state: &UdpSocketState,
    socket: &mio::net::UdpSocket,
    now: Instant,
    m: &RecvMeta,
    batch: &mut [u8],
    max_gso: usize,
) {
    let stride = m.stride.max(1);
    let ecn = m.ecn;
    let mut run: Option<(SocketAddr, usize, usize)> = None;
    let flush = |run: &mut Option<(SocketAddr, usize, usize)>, batch: &[u8]| {
        if let Some((to, start, end)) = run.take() {
            for chunk in batch[start..end].chunks(stride * max_gso) {
                let t = Transmit {
                    destination: to,
                    ecn,
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
    };
    let mut start = 0;
    while start < batch.len() {
        let end = (start + stride).min(batch.len());
        match node.relay_switch(now, m.addr, &mut batch[start..end]) {
            Some(to) => match &mut run {
                Some((dest, _, run_end)) if *dest == to && *run_end == start => *run_end = end,
                _ => {
                    flush(&mut run, batch);
                    run = Some((to, start, end));
                }
            },
            None => {
                flush(&mut run, batch);
                let ecn = ecn.and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                let d = BytesMut::from(&batch[start..end]);
                node.handle_datagram(now, m.addr, m.dst_ip, ecn, d);
            }
        }
        start = end;
    }
    flush(&mut run, batch);
}

/// Sends one transmit; false means the socket is full (WouldBlock). Other errors are logged and
/// the datagram counts as lost: QUIC recovers from loss.
fn send(
    state: &UdpSocketState,
    socket: &mio::net::UdpSocket,
    t: &quinn_proto::Transmit,
    contents: &[u8],
) -> bool {
    let transmit = Transmit {
        destination: t.destination,
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
