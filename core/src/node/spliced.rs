//! TCP-mode circuits (DESIGN.md §6): relays splice the streams of their two sessions, and the
//! client's TLS/TCP session with the owner runs inside, as a virtual session whose bytes travel
//! on the circuit stream instead of a socket. Such a circuit has no standby: the bytes of a
//! stream cannot be replayed on another, so its end ends the session inside.
//!
//! Moving bytes is deferred to [`Node::poll_event`]: inputs only mark a circuit dirty, so no
//! handler re-enters another while a stream or a session is half updated.

use std::time::Instant;

use bytes::Bytes;

use super::circuits::{Circuit, Pipe, STREAM_LABEL};
use super::stream::Phase;
use super::{Dial, Node, SessionId, StreamHandle};
use crate::failure::{Cause, Failure};
use crate::identity::NodeId;
use crate::record::Transport;
use crate::relay::control::{Create, Refusal, Reply};
use crate::session::StreamRead;

/// Bytes read from a stream at a time; also the most a pipe holds (a relay at its 4096
/// circuits, every pipe full both ways, holds 128 MiB; each is read only once emptied).
const CHUNK: usize = 16 * 1024;

/// Which way bytes move through a splice.
#[derive(Clone, Copy)]
enum Dir {
    UpDown,
    DownUp,
}

impl Node {
    /// A client's spliced circuit is up: the virtual session behind its link starts its TLS
    /// handshake through it.
    pub(super) fn stream_circuit_ready(&mut self, now: Instant, link: u64, ckey: u64) {
        let Some(vaddr) = self.link_vaddr(link) else {
            return;
        };
        let Some(&vsid) = self.dials.get(&(Transport::Tcp, vaddr)) else {
            self.teardown(now, ckey);
            return;
        };
        if let Some(Circuit::ClientStream { vsid: v, .. }) = self.circuits.circuits.get_mut(&ckey) {
            *v = Some(vsid);
        }
        self.set_link_active(link, ckey);
        self.circuit_up_event(link, ckey, true);
        self.circuits.stream_sessions.insert(vsid, ckey);
        self.handle_tcp_connected(now, vsid);
        self.circuits.dirty.insert(ckey);
    }

    /// The circuit ends here, over TCP: a virtual incoming TLS/TCP session runs inside it.
    pub(super) fn owner_stream_circuit(
        &mut self,
        now: Instant,
        handle: StreamHandle,
        peer: NodeId,
    ) {
        let vaddr = self.new_vaddr();
        let Some(vsid) = self.accept_tcp(now, vaddr) else {
            self.counters.circuits_refused += 1;
            let reply = Reply::refused(Refusal::LimitReached, "at the session limit");
            self.send_reply(now, handle, reply, false);
            return;
        };
        let ckey = self.new_circuit(Circuit::OwnerStream {
            stream: handle,
            peer,
            vsid,
            pipe: Pipe::default(),
        });
        self.circuits.by_stream.insert(handle, ckey);
        self.circuits.stream_sessions.insert(vsid, ckey);
        self.count_peer(peer, true);
        self.counters.circuits_ended_here += 1;
        let reply = Reply::Created {
            label: STREAM_LABEL,
            limits: Vec::new(),
        };
        self.send_reply(now, handle, reply, true);
        self.circuits.dirty.insert(ckey);
    }

    /// Relays a TCP-mode circuit: a stream to the next hop, spliced to `up` once it answers.
    pub(super) fn splice_circuit(
        &mut self,
        now: Instant,
        up: StreamHandle,
        prev: NodeId,
        (next, addr): (NodeId, std::net::SocketAddr),
        inner: Vec<u8>,
    ) {
        let request = Create {
            back: STREAM_LABEL,
            onion: inner,
        }
        .encode();
        let down = match self.new_circuit_stream(request) {
            Some(h) => h,
            None => {
                self.counters.circuits_refused += 1;
                let reply = Reply::refused(Refusal::LimitReached, "at the node's stream limit");
                self.send_reply(now, up, reply, false);
                return;
            }
        };
        let ckey = self.new_circuit(Circuit::Splice {
            up,
            down,
            prev,
            next,
            ready: false,
            limits: Vec::new(),
            up_down: Pipe::default(),
            down_up: Pipe::default(),
            last_used: now,
        });
        self.circuits.by_stream.insert(up, ckey);
        self.circuits.by_stream.insert(down, ckey);
        self.count_peer(prev, true);
        if let Some(st) = self.streams.get_mut(&up) {
            st.phase = Phase::Connecting;
        }
        // A session the next node keeps to this one (a home relay's, over QUIC) is the way to
        // it: the address the circuit names may lead nowhere from here.
        match self.quic_session_with(next) {
            Some((sid, _)) => self.attach_to(now, down, sid),
            None => {
                let dial = Dial {
                    addr,
                    transport: Transport::Tcp,
                    expected: Some(next),
                };
                self.attach(now, down, &dial);
            }
        }
        self.next_sweep_from(now);
    }

    /// A virtual session is closed from inside, or its circuit went: forget the pairing and
    /// end the session (its streams fail with the cause).
    pub(super) fn close_virtual(&mut self, now: Instant, vsid: SessionId) {
        if self.circuits.stream_sessions.remove(&vsid).is_some() {
            let failure = Failure::new(Cause::ConnectionLost, "the circuit carrying it closed");
            self.handle_tcp_closed(now, vsid, failure);
        }
    }

    /// Moves what can move on every circuit marked dirty.
    pub(super) fn pump_dirty(&mut self, now: Instant) {
        while let Some(ckey) = self.circuits.dirty.pop_first() {
            match self.circuits.circuits.get(&ckey) {
                Some(Circuit::Splice { ready: true, .. }) => {
                    self.splice(now, ckey, Dir::UpDown);
                    self.splice(now, ckey, Dir::DownUp);
                }
                Some(
                    Circuit::ClientStream {
                        stream,
                        vsid: Some(vsid),
                        ..
                    }
                    | Circuit::OwnerStream { stream, vsid, .. },
                ) => {
                    let (stream, vsid) = (*stream, *vsid);
                    self.pump_virtual(now, ckey, stream, vsid);
                }
                _ => {}
            }
        }
    }

    fn pipe(&mut self, ckey: u64, dir: Dir) -> Option<(&mut Pipe, StreamHandle, StreamHandle)> {
        match (self.circuits.circuits.get_mut(&ckey)?, dir) {
            (
                Circuit::Splice {
                    up, down, up_down, ..
                },
                Dir::UpDown,
            ) => Some((up_down, *up, *down)),
            (
                Circuit::Splice {
                    up, down, down_up, ..
                },
                Dir::DownUp,
            ) => Some((down_up, *down, *up)),
            _ => None,
        }
    }

    /// Copies from one stream of a splice to the other, as far as the writer takes.
    fn splice(&mut self, now: Instant, ckey: u64, dir: Dir) {
        // Bounded: every round moves bytes, reads the end, or stops.
        loop {
            let Some((pipe, from, to)) = self.pipe(ckey, dir) else {
                return;
            };
            if !pipe.pending.is_empty() {
                let mut pending = std::mem::take(&mut pipe.pending);
                match self.stream_write_bytes(now, to, &mut pending) {
                    Ok(n) => {
                        let Some((pipe, ..)) = self.pipe(ckey, dir) else {
                            return;
                        };
                        pipe.pending = pending;
                        if n == 0 {
                            return;
                        }
                    }
                    Err(_) => return self.teardown(now, ckey),
                }
                continue;
            }
            if pipe.eof {
                if !pipe.closed {
                    pipe.closed = true;
                    self.stream_finish(now, to);
                }
                let done = matches!(
                    self.circuits.circuits.get(&ckey),
                    Some(Circuit::Splice { up_down, down_up, .. }) if up_down.closed && down_up.closed
                );
                if done {
                    self.forget_circuit(now, ckey);
                }
                return;
            }
            match self.stream_read(now, from, CHUNK) {
                StreamRead::Data(b) => {
                    if let Some(Circuit::Splice { last_used, .. }) =
                        self.circuits.circuits.get_mut(&ckey)
                    {
                        *last_used = now;
                    }
                    if let Some((pipe, ..)) = self.pipe(ckey, dir) {
                        pipe.bytes += b.len() as u64;
                        pipe.pending = b;
                    }
                }
                StreamRead::Blocked => return,
                StreamRead::Finished => {
                    if let Some((pipe, ..)) = self.pipe(ckey, dir) {
                        pipe.eof = true;
                    }
                }
                StreamRead::Reset(_) => return self.teardown(now, ckey),
            }
        }
    }

    fn virtual_pipe(&mut self, ckey: u64) -> Option<&mut Pipe> {
        match self.circuits.circuits.get_mut(&ckey)? {
            Circuit::ClientStream { pipe, .. } | Circuit::OwnerStream { pipe, .. } => Some(pipe),
            _ => None,
        }
    }

    /// Between a virtual session and the circuit stream it runs in.
    fn pump_virtual(&mut self, now: Instant, ckey: u64, stream: StreamHandle, vsid: SessionId) {
        // Out: what the session has to send, as far as the stream takes it.
        loop {
            let Some(pipe) = self.virtual_pipe(ckey) else {
                return;
            };
            let mut pending = std::mem::take(&mut pipe.pending);
            if pending.is_empty() {
                let mut out = Vec::new();
                if !self.poll_tcp_transmit(vsid, &mut out) {
                    break;
                }
                pending = Bytes::from(out);
            }
            match self.stream_write_bytes(now, stream, &mut pending) {
                Ok(n) => {
                    let Some(pipe) = self.virtual_pipe(ckey) else {
                        return;
                    };
                    pipe.bytes += n as u64;
                    pipe.pending = pending;
                    if n == 0 {
                        break;
                    }
                }
                Err(_) => return self.teardown(now, ckey),
            }
        }
        // In: what arrived on the stream, into the session.
        loop {
            match self.stream_read(now, stream, CHUNK) {
                StreamRead::Data(b) => self.handle_tcp_data(now, vsid, &b),
                StreamRead::Blocked => return,
                StreamRead::Finished | StreamRead::Reset(_) => {
                    return self.teardown(now, ckey);
                }
            }
        }
    }
}
