//! VX6's stream multiplexer for sessions over a reliable byte stream (TLS over TCP).
//!
//! Many streams share one connection; each has credit-based flow control (a receiver grants
//! bytes with WINDOW frames as its reader consumes them) and the session as a whole has a window
//! too, so a slow reader bounds the memory of both sides. Stream windows start at
//! [`INITIAL_STREAM_WINDOW`] and double, up to [`MAX_STREAM_WINDOW`], whenever a reader consumes
//! a whole window within two round trips: a fast stream earns a window that covers its
//! bandwidth-delay product, as in HTTP/2 implementations and yamux. Wire format: `frame.rs` and
//! docs/PROTOCOL.md.

pub mod frame;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use frame::{Frame, FrameError};

use super::{StreamError, StreamEvent, StreamRead};

/// Credit every stream starts with, in each direction.
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// Largest window auto-tuning grows a stream to.
pub const MAX_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Credit the session as a whole starts with and keeps (it does not grow).
pub const SESSION_WINDOW: u32 = 32 * 1024 * 1024;
/// Largest DATA payload this side sends.
const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Encoded output held before writers are told to wait.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Output past [`OUT_HIGH_WATER`] that replies to the peer (PING acks, RESETs, WINDOWs) may
/// add. Only a peer that keeps sending while it does not read our output gets there; it is
/// closed ([`MuxClosed::NotReading`]) instead of growing this side's memory.
pub const CONTROL_BACKLOG: usize = 256 * 1024;
/// Idle time before a keep-alive PING.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Silence after which the session is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits of one multiplexer.
#[derive(Debug, Clone, Copy)]
pub struct MuxConfig {
    /// Streams the peer may have open at once; more are refused with a reset.
    pub max_peer_streams: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            max_peer_streams: 16_384,
        }
    }
}

/// Reset code the multiplexer itself uses when it refuses a stream over the limit.
pub const RESET_REFUSED: u32 = 0xffff_0001;

/// Why a multiplexed session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxClosed {
    /// The peer sent bytes that are not valid frames.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent more than its credit allowed.
    #[error("flow-control violation by peer")]
    FlowControl,
    /// The peer said goodbye.
    #[error("peer closed the session (code {0})")]
    GoAway(u32),
    /// Nothing arrived for [`IDLE_TIMEOUT`].
    #[error("peer went silent")]
    Timeout,
    /// The peer kept sending while our output to it stayed unread past [`CONTROL_BACKLOG`].
    #[error("peer does not read: {0} bytes of output pending")]
    NotReading(usize),
}

#[derive(Debug)]
struct Stream {
    /// Bytes the peer still allows us to send.
    send_credit: u64,
    send_finished: bool,
    recv: VecDeque<Bytes>,
    recv_fin: bool,
    fin_delivered: bool,
    reset_by_peer: Option<u32>,
    /// Bytes the peer may still send before it needs more credit.
    recv_allowed: u64,
    /// Consumed by the reader but not yet credited back.
    recv_unacked: u64,
    recv_window: u32,
    last_credit: Instant,
}

impl Stream {
    fn new(now: Instant) -> Self {
        Self {
            send_credit: u64::from(INITIAL_STREAM_WINDOW),
            send_finished: false,
            recv: VecDeque::new(),
            recv_fin: false,
            fin_delivered: false,
            reset_by_peer: None,
            recv_allowed: u64::from(INITIAL_STREAM_WINDOW),
            recv_unacked: 0,
            recv_window: INITIAL_STREAM_WINDOW,
            last_credit: now,
        }
    }
}

/// The multiplexer state machine for one session. Feed it decrypted bytes with
/// [`Mux::handle_input`], take bytes to encrypt with [`Mux::poll_output`].
#[derive(Debug)]
pub struct Mux {
    config: MuxConfig,
    /// Whether this side opens odd stream ids (the TLS client does).
    odd: bool,
    next_local: u32,
    highest_peer: u32,
    /// Streams the peer opened that are still in `streams`.
    peer_open: usize,
    streams: BTreeMap<u32, Stream>,
    accept_queue: VecDeque<u32>,
    events: VecDeque<StreamEvent>,
    blocked: BTreeSet<u32>,
    inbuf: BytesMut,
    out: BytesMut,
    session_send_credit: u64,
    session_recv_allowed: u64,
    session_recv_unacked: u64,
    rtt: Option<Duration>,
    ping_sent: Option<(u64, Instant)>,
    next_ping_id: u64,
    last_input: Instant,
    closed: Option<MuxClosed>,
    /// Frames dropped because they named streams that no longer exist.
    stale_frames: u64,
}

impl Mux {
    /// A multiplexer; `odd` for the side that opened the connection.
    pub fn new(now: Instant, odd: bool, config: MuxConfig) -> Self {
        Self {
            config,
            odd,
            next_local: if odd { 1 } else { 2 },
            highest_peer: 0,
            peer_open: 0,
            streams: BTreeMap::new(),
            accept_queue: VecDeque::new(),
            events: VecDeque::new(),
            blocked: BTreeSet::new(),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            session_send_credit: u64::from(SESSION_WINDOW),
            session_recv_allowed: u64::from(SESSION_WINDOW),
            session_recv_unacked: 0,
            rtt: None,
            ping_sent: None,
            next_ping_id: 1,
            last_input: now,
            closed: None,
            stale_frames: 0,
        }
    }

    /// Why the session ended, once it has.
    pub fn closed(&self) -> Option<&MuxClosed> {
        self.closed.as_ref()
    }

    /// Smoothed round-trip time from PINGs, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Streams currently open.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Frames dropped because their stream was gone (normal after a local reset).
    pub fn stale_frames(&self) -> u64 {
        self.stale_frames
    }

    /// Whether encoded output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Takes encoded frames to send. Writers blocked on output space are woken here.
    pub fn poll_output(&mut self) -> Option<BytesMut> {
        if self.out.is_empty() {
            return None;
        }
        let out = self.out.split();
        self.wake_blocked();
        Some(out)
    }

    /// Hands the encoded frames to `sink` and empties the output, keeping its allocation (the
    /// hot path: a fresh buffer per call costs page faults at high throughput).
    pub fn drain_output(&mut self, sink: impl FnOnce(&[u8])) {
        if self.out.is_empty() {
            return;
        }
        sink(&self.out);
        self.out.clear();
        self.wake_blocked();
    }

    /// Next stream event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Feeds decrypted bytes from the peer.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.inbuf.extend_from_slice(data);
        self.process_input(now);
    }

    /// The buffer undecoded input accumulates in: a caller that can write decrypted bytes here
    /// directly (then call [`Mux::process_input`]) saves a copy.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        &mut self.inbuf
    }

    /// Decodes and handles every whole frame in the input buffer.
    pub fn process_input(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.last_input = now;
        loop {
            match Frame::decode(&mut self.inbuf) {
                Ok(Some(frame)) => {
                    if let Err(reason) = self.handle_frame(now, frame) {
                        self.close(reason);
                        return;
                    }
                    // Writers stop at the high-water mark, so only replies to this peer's own
                    // frames can pile up past it.
                    if self.out.len() > OUT_HIGH_WATER + CONTROL_BACKLOG {
                        self.close(MuxClosed::NotReading(self.out.len()));
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.close(MuxClosed::Protocol(e.to_string()));
                    return;
                }
            }
        }
    }

    fn close(&mut self, reason: MuxClosed) {
        let code = match reason {
            MuxClosed::GoAway(_) | MuxClosed::Timeout => None,
            _ => Some(1),
        };
        if let Some(code) = code {
            Frame::GoAway { code }.encode(&mut self.out);
        }
        self.closed = Some(reason);
    }

    /// Closes the whole session, telling the peer.
    pub fn go_away(&mut self, code: u32) {
        if self.closed.is_none() {
            Frame::GoAway { code }.encode(&mut self.out);
            self.closed = Some(MuxClosed::GoAway(code));
        }
    }

    fn is_peer_id(&self, id: u32) -> bool {
        (id % 2 == 1) != self.odd
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), MuxClosed> {
        match frame {
            Frame::Data {
                stream,
                fin,
                payload,
            } => {
                let len = payload.len() as u64;
                if len > self.session_recv_allowed {
                    return Err(MuxClosed::FlowControl);
                }
                self.session_recv_allowed -= len;
                if !self.streams.contains_key(&stream) {
                    if !self.is_peer_id(stream) || stream <= self.highest_peer {
                        // A stream we already closed: its bytes are dropped but the session
                        // credit they used comes back.
                        self.stale_frames += 1;
                        self.credit_session(len);
                        return Ok(());
                    }
                    self.highest_peer = stream;
                    if self.peer_open >= self.config.max_peer_streams {
                        self.credit_session(len);
                        Frame::Reset {
                            stream,
                            code: RESET_REFUSED,
                        }
                        .encode(&mut self.out);
                        return Ok(());
                    }
                    self.streams.insert(stream, Stream::new(now));
                    self.peer_open += 1;
                    self.accept_queue.push_back(stream);
                    self.events.push_back(StreamEvent::Opened);
                }
                let s = self.streams.get_mut(&stream).expect("inserted above");
                if s.fin_delivered && !s.recv_fin {
                    // Receiving was stopped locally: discard, but return the session credit.
                    self.stale_frames += 1;
                    self.credit_session(len);
                    return Ok(());
                }
                if s.recv_fin || s.reset_by_peer.is_some() {
                    return Err(MuxClosed::Protocol("DATA after FIN".into()));
                }
                if len > s.recv_allowed {
                    return Err(MuxClosed::FlowControl);
                }
                s.recv_allowed -= len;
                if !payload.is_empty() {
                    s.recv.push_back(payload);
                }
                s.recv_fin = fin;
                self.events
                    .push_back(StreamEvent::Readable(u64::from(stream)));
            }
            Frame::Window {
                stream: 0,
                increment,
            } => {
                self.session_send_credit += u64::from(increment);
                self.wake_blocked();
            }
            Frame::Window { stream, increment } => match self.streams.get_mut(&stream) {
                Some(s) => {
                    s.send_credit += u64::from(increment);
                    if self.blocked.remove(&stream) {
                        self.events
                            .push_back(StreamEvent::Writable(u64::from(stream)));
                    }
                }
                None => self.stale_frames += 1,
            },
            Frame::Reset { stream, code } => match self.streams.get_mut(&stream) {
                Some(s) => {
                    s.reset_by_peer = Some(code);
                    let unread: u64 = s.recv.drain(..).map(|b| b.len() as u64).sum();
                    self.credit_session(unread);
                    self.blocked.remove(&stream);
                    self.events
                        .push_back(StreamEvent::Readable(u64::from(stream)));
                    self.events
                        .push_back(StreamEvent::Writable(u64::from(stream)));
                }
                None => self.stale_frames += 1,
            },
            Frame::Ping { ack: false, opaque } => {
                Frame::Ping { ack: true, opaque }.encode(&mut self.out);
            }
            Frame::Ping { ack: true, opaque } => {
                if let Some((id, sent)) = self.ping_sent
                    && id == opaque
                {
                    let sample = now.saturating_duration_since(sent);
                    self.rtt = Some(match self.rtt {
                        Some(rtt) => (rtt * 7 + sample) / 8,
                        None => sample,
                    });
                    self.ping_sent = None;
                }
            }
            Frame::GoAway { code } => return Err(MuxClosed::GoAway(code)),
        }
        Ok(())
    }

    fn credit_session(&mut self, consumed: u64) {
        self.session_recv_unacked += consumed;
        // Return session credit in large steps: one WINDOW per quarter window consumed.
        if self.session_recv_unacked >= u64::from(SESSION_WINDOW / 4) {
            let inc = self.session_recv_unacked;
            self.session_recv_unacked = 0;
            self.session_recv_allowed += inc;
            Frame::Window {
                stream: 0,
                increment: inc as u32,
            }
            .encode(&mut self.out);
        }
    }

    fn wake_blocked(&mut self) {
        if self.out.len() >= OUT_HIGH_WATER || self.session_send_credit == 0 {
            return;
        }
        let woken: Vec<u32> = self
            .blocked
            .iter()
            .copied()
            .filter(|id| self.streams.get(id).is_some_and(|s| s.send_credit > 0))
            .collect();
        for id in woken {
            self.blocked.remove(&id);
            self.events.push_back(StreamEvent::Writable(u64::from(id)));
        }
    }

    /// Opens a stream, announcing it at once with an empty DATA frame: the peer takes an id at
    /// or below the highest it has seen for a closed stream, so ids must reach it in order even
    /// when a later stream is written first (found by the reference-model test).
    pub fn open_stream(&mut self, now: Instant) -> Option<u64> {
        if self.closed.is_some() || self.next_local > u32::MAX - 2 {
            return None;
        }
        let id = self.next_local;
        self.next_local += 2;
        self.streams.insert(id, Stream::new(now));
        frame::encode_data(id, &[], &mut self.out);
        Some(u64::from(id))
    }

    /// Takes the next stream the peer opened.
    pub fn accept_stream(&mut self) -> Option<u64> {
        while let Some(id) = self.accept_queue.pop_front() {
            if self.streams.contains_key(&id) {
                return Some(u64::from(id));
            }
        }
        None
    }

    fn stream_mut(&mut self, id: u64) -> Result<(u32, &mut Stream), StreamError> {
        let id = u32::try_from(id).map_err(|_| StreamError::Unknown)?;
        self.streams
            .get_mut(&id)
            .map(|s| (id, s))
            .ok_or(StreamError::Unknown)
    }

    /// Queues as much of `data` as credit and buffer space allow; returns how much. A short
    /// write means a `Writable` event will follow.
    pub fn write(&mut self, id: u64, data: &[u8]) -> Result<usize, StreamError> {
        let out_room = OUT_HIGH_WATER.saturating_sub(self.out.len());
        let session_credit = self.session_send_credit;
        let (sid, s) = self.stream_mut(id)?;
        if let Some(code) = s.reset_by_peer {
            return Err(StreamError::Reset(code));
        }
        if s.send_finished {
            return Err(StreamError::Finished);
        }
        let n = (data.len() as u64)
            .min(s.send_credit)
            .min(session_credit)
            .min(out_room as u64) as usize;
        s.send_credit -= n as u64;
        self.session_send_credit -= n as u64;
        for chunk in data[..n].chunks(MAX_DATA_CHUNK) {
            frame::encode_data(sid, chunk, &mut self.out);
        }
        if n < data.len() {
            self.blocked.insert(sid);
        }
        Ok(n)
    }

    /// Ends this side's direction of the stream (half-close).
    pub fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        let (sid, s) = self.stream_mut(id)?;
        if let Some(code) = s.reset_by_peer {
            return Err(StreamError::Reset(code));
        }
        if s.send_finished {
            return Ok(());
        }
        s.send_finished = true;
        Frame::Data {
            stream: sid,
            fin: true,
            payload: Bytes::new(),
        }
        .encode(&mut self.out);
        self.reap(sid);
        Ok(())
    }

    /// Stops receiving: buffered and later data on the stream is discarded (its session credit
    /// returned). The sending direction stays open until finished or reset.
    pub fn stop(&mut self, id: u64) {
        let Ok((sid, s)) = self.stream_mut(id) else {
            return;
        };
        let unread: u64 = s.recv.drain(..).map(|b| b.len() as u64).sum();
        s.fin_delivered = true;
        self.credit_session(unread);
        self.reap(sid);
    }

    /// Aborts the stream in both directions and forgets it.
    pub fn reset(&mut self, id: u64, code: u32) {
        let Ok((sid, s)) = self.stream_mut(id) else {
            return;
        };
        let unread: u64 = s.recv.iter().map(|b| b.len() as u64).sum();
        let peer_reset = s.reset_by_peer.is_some();
        self.remove_stream(sid);
        self.blocked.remove(&sid);
        self.credit_session(unread);
        if !peer_reset {
            Frame::Reset { stream: sid, code }.encode(&mut self.out);
        }
    }

    /// Reads up to `max` bytes.
    pub fn read(&mut self, now: Instant, id: u64, max: usize) -> StreamRead {
        let rtt = self.rtt.unwrap_or(Duration::from_millis(100));
        let Ok((sid, s)) = self.stream_mut(id) else {
            return StreamRead::Finished;
        };
        if let Some(code) = s.reset_by_peer {
            self.remove_stream(sid);
            return StreamRead::Reset(code);
        }
        let Some(front) = s.recv.front_mut() else {
            if s.recv_fin {
                s.fin_delivered = true;
                self.reap(sid);
                return StreamRead::Finished;
            }
            return StreamRead::Blocked;
        };
        let chunk = if front.len() <= max {
            s.recv.pop_front().expect("front exists")
        } else {
            front.split_to(max)
        };
        let n = chunk.len() as u64;
        s.recv_unacked += n;
        let mut grant = None;
        if s.recv_unacked >= u64::from(s.recv_window / 2) && !s.recv_fin {
            let mut increment = s.recv_unacked;
            if now.saturating_duration_since(s.last_credit) < rtt * 2
                && s.recv_window < MAX_STREAM_WINDOW
            {
                let grown = (s.recv_window * 2).min(MAX_STREAM_WINDOW);
                increment += u64::from(grown - s.recv_window);
                s.recv_window = grown;
            }
            s.recv_unacked = 0;
            s.recv_allowed += increment;
            s.last_credit = now;
            grant = Some(increment as u32);
        }
        if let Some(increment) = grant {
            Frame::Window {
                stream: sid,
                increment,
            }
            .encode(&mut self.out);
            // Measure the round trip under load (gRPC's BDP ping): the idle keep-alive's sample
            // is far below what a busy connection sees, and window growth keys off it.
            if self.ping_sent.is_none() {
                self.send_ping(now);
            }
        }
        self.credit_session(n);
        StreamRead::Data(chunk)
    }

    fn remove_stream(&mut self, sid: u32) {
        if self.streams.remove(&sid).is_some() && self.is_peer_id(sid) {
            self.peer_open -= 1;
        }
    }

    /// Forgets a stream once both directions are done.
    fn reap(&mut self, sid: u32) {
        if self
            .streams
            .get(&sid)
            .is_some_and(|s| s.send_finished && s.fin_delivered)
        {
            self.remove_stream(sid);
            self.blocked.remove(&sid);
        }
    }

    /// Timers: keep-alive PING and idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if now.saturating_duration_since(self.last_input) >= IDLE_TIMEOUT {
            self.closed = Some(MuxClosed::Timeout);
            return;
        }
        if self.ping_sent.is_none() && now.saturating_duration_since(self.last_input) >= KEEPALIVE {
            self.send_ping(now);
        }
    }

    /// Sends a PING now (to measure RTT).
    pub fn send_ping(&mut self, now: Instant) {
        let opaque = self.next_ping_id;
        self.next_ping_id += 1;
        self.ping_sent = Some((opaque, now));
        Frame::Ping { ack: false, opaque }.encode(&mut self.out);
    }

    /// When [`Mux::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        Some(if self.ping_sent.is_none() {
            self.last_input + KEEPALIVE
        } else {
            self.last_input + IDLE_TIMEOUT
        })
    }
}
