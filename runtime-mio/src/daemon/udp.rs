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
            for (m, buf) in meta.iter().zip(&self.bufs).take(n) {
                let ecn = m
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                for datagram in buf[..m.len].chunks(m.stride.max(1)) {
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
