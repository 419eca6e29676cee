//! State-machine tests of the TCP stream multiplexer against a reference model (in the style of
//! firezone's `tunnel_test`): two real [`Mux`]es, a client (odd ids) and a server, joined by two
//! bounded in-memory byte pipes, driven by random operation sequences.
//!
//! The reference model is simple: every byte a side's `write` accepted on a stream arrives,
//! exactly once and in order, at the other side's `read`, followed by `Finished` if the writer
//! finished; a reset stream ends with `Reset` (with the resetter's code) on the other side or
//! vanishes, and never delivers a byte that was not written. Oracles checked after every
//! operation:
//!
//! - memory: per stream, bytes accepted by the writer and not yet read by the reader never exceed
//!   [`MAX_STREAM_WINDOW`] (credit comes back only as the reader reads); per direction of the
//!   session, over streams nothing was discarded on, never [`SESSION_WINDOW`]; every chunk of
//!   output a side hands to its runtime stays within the output high-water mark plus
//!   [`CONTROL_BACKLOG`] plus the local control frames queued since the last drain
//!   (mux/mod.rs). The runtime here takes output only once the last lot has gone into the pipe,
//!   as runtime-mio does, so what it holds is bounded by the same figure;
//! - the session ends only as the test ended it (GOAWAY, or silence past [`IDLE_TIMEOUT`]);
//!   honest peers never trip `Protocol`, `FlowControl` or `NotReading`;
//! - `poll_timeout` is never in the past after `handle_timeout` (DESIGN.md §2).
//!
//! At the end of a case everything is drained by an event-driven application (it writes only
//! after `Writable`, reads only after `Readable`, as the contract says it may), and then every
//! clean stream must have delivered all its bytes (a lost wake-up shows up as a stuck backlog),
//! and each side's stream table must hold exactly the streams the model still considers open.
//!
//! Directed cases below drive the two flow-control bounds to their limits, which random
//! sequences rarely reach.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use vx6_core::session::mux::{
    CONTROL_BACKLOG, IDLE_TIMEOUT, INITIAL_STREAM_WINDOW, MAX_STREAM_WINDOW, Mux, MuxClosed,
    MuxConfig, RESET_REFUSED, SESSION_WINDOW,
};
use vx6_core::session::{StreamError, StreamEvent, StreamRead};

/// The multiplexer's private `OUT_HIGH_WATER` ("encoded output held before writers are told to
/// wait"); the memory oracle is written against the documented 1 MiB.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Beyond the high-water mark and the control backlog: the frame that crossed the bound, the
/// GOAWAY after it, DATA headers.
const OUT_SLACK: usize = 4096;
/// Control frames one local call may queue regardless of the bound: a read's stream WINDOW,
/// BDP PING and session WINDOW (43 bytes), a FIN, a RESET, a PING.
const PER_CALL_SLACK: usize = 64;
/// `max_peer_streams` when the case does not exercise the limit.
const NO_LIMIT: usize = 16_384;

// ---------------------------------------------------------------------------------------------
// Stream contents: byte `i` of stream `id` is a function of (id, i), so neither side stores what
// it wrote, and a byte delivered to the wrong stream or offset is caught.

const TABLE_LEN: usize = (1 << 20) + 4099;

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u8; TABLE_LEN];
        ChaCha8Rng::seed_from_u64(0x5eed).fill_bytes(&mut t);
        t
    })
}

/// Up to `max` bytes of stream `id` from `offset` (fewer where the table wraps).
fn pattern(id: u64, offset: u64, max: u64) -> &'static [u8] {
    let start = ((offset + id.wrapping_mul(7919)) % TABLE_LEN as u64) as usize;
    let n = (max.min(usize::MAX as u64) as usize).min(TABLE_LEN - start);
    &table()[start..start + n]
}

fn matches_pattern(id: u64, mut offset: u64, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let want = pattern(id, offset, data.len() as u64);
        if data[..want.len()] != *want {
            return false;
        }
        data = &data[want.len()..];
        offset += want.len() as u64;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Byte queues (zero-copy chunks).

#[derive(Default, Debug)]
struct ByteQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl ByteQueue {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    fn pop(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 {
            return None;
        }
        let front = self.chunks.front_mut()?;
        let b = if front.len() <= max {
            self.chunks.pop_front().expect("front exists")
        } else {
            front.split_to(max)
        };
        self.len -= b.len();
        Some(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing among the streams that exist when an operation runs (shrinks towards the first).

#[derive(Debug, Clone, Copy)]
struct Pick(u64);

impl Pick {
    fn index(self, len: usize) -> usize {
        ((len as u128 * u128::from(self.0)) >> 64) as usize
    }

    /// The pick that chooses element `i` of `n`.
    fn nth(i: usize, n: usize) -> Self {
        Self((((i as u128 * 2 + 1) << 63) / n as u128) as u64)
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    any::<u64>().prop_map(Pick)
}

// ---------------------------------------------------------------------------------------------
// Operations.

#[derive(Debug, Clone)]
enum Op {
    Open {
        side: usize,
    },
    /// The application wants `len` more bytes written; it writes what the mux takes now, the
    /// rest when told `Writable` (or at its next write).
    Write {
        side: usize,
        stream: Pick,
        len: usize,
    },
    /// Finish once everything wanted is written.
    Finish {
        side: usize,
        stream: Pick,
    },
    Reset {
        side: usize,
        stream: Pick,
        code: u32,
    },
    Stop {
        side: usize,
        stream: Pick,
    },
    Read {
        side: usize,
        stream: Pick,
        total: usize,
        per_call: usize,
    },
    Accept {
        side: usize,
    },
    /// The event-driven application on `side` acts on what it was told.
    React {
        side: usize,
    },
    /// Moves up to `budget` bytes from `from`'s output, through its pipe, into the peer's input
    /// in pieces of `chunk`. `poll`: take output with `poll_output` rather than `drain_output`,
    /// and give input through `input_buffer` and `process_input` rather than `handle_input`.
    Transfer {
        from: usize,
        budget: usize,
        chunk: usize,
        poll: bool,
    },
    /// Virtual time passes, never so much that a side goes silent for [`IDLE_TIMEOUT`].
    Advance {
        ms: u64,
    },
    Ping {
        side: usize,
    },
}

/// How a case may end its session early.
#[derive(Debug, Clone)]
enum Ending {
    GoAway {
        side: usize,
        code: u32,
    },
    /// Nothing is delivered for longer than [`IDLE_TIMEOUT`].
    Idle,
}

#[derive(Debug, Clone)]
struct Case {
    /// Capacity of each pipe (bytes in flight on the "network").
    caps: [usize; 2],
    /// Each side's `max_peer_streams`.
    limits: [usize; 2],
    /// Piece size for the final drain.
    drain_chunk: usize,
    ending: Option<(Pick, Ending)>,
    ops: Vec<Op>,
}

fn side() -> impl Strategy<Value = usize> {
    0..2usize
}

fn size(small: usize, medium: usize, large: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1..=small,
        5 => 1..=medium,
        2 => medium..=large,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => side().prop_map(|side| Op::Open { side }),
        12 => (side(), pick(), size(64, 64 * 1024, 2 << 20))
            .prop_map(|(side, stream, len)| Op::Write { side, stream, len }),
        4 => (side(), pick()).prop_map(|(side, stream)| Op::Finish { side, stream }),
        2 => (side(), pick(), 0..1000u32)
            .prop_map(|(side, stream, code)| Op::Reset { side, stream, code }),
        1 => (side(), pick()).prop_map(|(side, stream)| Op::Stop { side, stream }),
        10 => (side(), pick(), size(64, 256 * 1024, 4 << 20), size(16, 64 * 1024, 256 * 1024))
            .prop_map(|(side, stream, total, per_call)| Op::Read { side, stream, total, per_call }),
        4 => side().prop_map(|side| Op::Accept { side }),
        6 => side().prop_map(|side| Op::React { side }),
        14 => (side(), size(64, 256 * 1024, 4 << 20), size(16, 16 * 1024, 256 * 1024), any::<bool>())
            .prop_map(|(from, budget, chunk, poll)| Op::Transfer { from, budget, chunk, poll }),
        3 => prop_oneof![0..50u64, 0..20_000u64].prop_map(|ms| Op::Advance { ms }),
        1 => side().prop_map(|side| Op::Ping { side }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let cap = 1..=256 * 1024usize;
    let limit = prop_oneof![3 => Just(NO_LIMIT), 1 => 1..=6usize];
    let ending = prop_oneof![
        (side(), 0..1000u32).prop_map(|(side, code)| Ending::GoAway { side, code }),
        Just(Ending::Idle),
    ];
    (
        [cap.clone(), cap],
        [limit.clone(), limit],
        size(16, 64 * 1024, 256 * 1024),
        proptest::option::weighted(0.1, (pick(), ending)),
        proptest::collection::vec(op(), 1..120),
    )
        .prop_map(|(caps, limits, drain_chunk, ending, ops)| Case {
            caps,
            limits,
            drain_chunk,
            ending,
            ops,
        })
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finished,
    Reset(u32),
}

/// One direction of a stream, named by the side that writes it.
#[derive(Debug, Default, Clone)]
struct Dir {
    /// Bytes the writer's `write` accepted.
    written: u64,
    /// Bytes the writing application still wants written.
    backlog: u64,
    /// Finish once the backlog is written.
    want_finish: bool,
    finished: bool,
    /// A write was short; the application waits for `Writable`.
    write_blocked: bool,
    /// The writer was told the peer reset the stream, with this code.
    write_err: Option<u32>,
    /// Bytes the reader has read.
    read: u64,
    /// A read returned `Blocked`; the application waits for `Readable`.
    read_blocked: bool,
    /// How reading ended.
    end: Option<End>,
    /// The reader stopped receiving.
    stopped: bool,
}

#[derive(Debug, Clone)]
struct StreamModel {
    opener: usize,
    /// By writing side.
    dir: [Dir; 2],
    /// The application on each side holds the stream (opened it, or accepted it).
    known: [bool; 2],
    /// The stream is gone from that side's multiplexer (reset there, reset read there, or both
    /// directions done).
    gone: [bool; 2],
    /// The side reset it, with this code.
    reset_by: [Option<u32>; 2],
}

impl StreamModel {
    /// Bytes of this direction were discarded rather than read (reset, stop, refusal), so their
    /// session credit came back without a read.
    fn discarded(&self, writer: usize) -> bool {
        let d = &self.dir[writer];
        self.reset_by.iter().any(Option::is_some)
            || d.stopped
            || d.write_err.is_some()
            || matches!(d.end, Some(End::Reset(_)))
    }
}

struct Side {
    mux: Mux,
    /// Output taken from the multiplexer that the pipe had no room for yet.
    pending: ByteQueue,
    last_input: Instant,
    /// Local calls since output was last taken (each may queue a control frame).
    calls: usize,
    limit: usize,
}

struct World {
    now: Instant,
    sides: [Side; 2],
    /// `pipes[s]` carries side `s`'s output to the other side.
    pipes: [ByteQueue; 2],
    caps: [usize; 2],
    streams: BTreeMap<u64, StreamModel>,
    /// Streams each side's application holds, in the order it got them.
    order: [Vec<u64>; 2],
    /// GOAWAY codes sent.
    goaways: BTreeSet<u32>,
    idled: bool,
    /// Most bytes outstanding (written, not read) on one stream, and in one session direction.
    peak_stream: u64,
    peak_session: u64,
    peak_output: usize,
}

fn name(s: usize) -> &'static str {
    if s == 0 { "client" } else { "server" }
}

impl World {
    fn new(now: Instant, case: &Case) -> Self {
        let side = |s: usize| Side {
            mux: Mux::new(
                now,
                s == 0,
                MuxConfig {
                    max_peer_streams: case.limits[s],
                },
            ),
            pending: ByteQueue::default(),
            last_input: now,
            calls: 0,
            limit: case.limits[s],
        };
        Self {
            now,
            sides: [side(0), side(1)],
            pipes: [ByteQueue::default(), ByteQueue::default()],
            caps: case.caps,
            streams: BTreeMap::new(),
            order: [Vec::new(), Vec::new()],
            goaways: BTreeSet::new(),
            idled: false,
            peak_stream: 0,
            peak_session: 0,
            peak_output: 0,
        }
    }

    fn any_closed(&self) -> bool {
        self.sides.iter().any(|s| s.mux.closed().is_some())
    }

    /// Takes the multiplexer's events into the application's flags.
    fn events(&mut self, s: usize) {
        while let Some(ev) = self.sides[s].mux.poll_event() {
            let (id, writer) = match ev {
                StreamEvent::Opened => continue,
                StreamEvent::Readable(id) => (id, 1 - s),
                StreamEvent::Writable(id) => (id, s),
            };
            let st = self
                .streams
                .get_mut(&id)
                .unwrap_or_else(|| panic!("{}: {ev:?} for a stream nobody opened", name(s)));
            if writer == s {
                st.dir[writer].write_blocked = false;
            } else {
                st.dir[writer].read_blocked = false;
            }
        }
    }

    /// Streams side `s`'s application holds and that satisfy `pred`.
    fn candidates(&self, s: usize, pred: impl Fn(&StreamModel) -> bool) -> Vec<u64> {
        self.order[s]
            .iter()
            .copied()
            .filter(|id| {
                let st = &self.streams[id];
                st.known[s] && !st.gone[s] && pred(st)
            })
            .collect()
    }

    fn pick(&self, s: usize, at: &Pick, pred: impl Fn(&StreamModel) -> bool) -> Option<u64> {
        let c = self.candidates(s, pred);
        (!c.is_empty()).then(|| c[at.index(c.len())])
    }

    /// The multiplexer forgets a stream once it finished sending and reading ended (FIN read,
    /// or stopped).
    fn maybe_reaped(&mut self, s: usize, id: u64) {
        let st = self.streams.get_mut(&id).expect("known stream");
        let inn = &st.dir[1 - s];
        if st.dir[s].finished && (inn.end == Some(End::Finished) || inn.stopped) {
            st.gone[s] = true;
        }
    }

    /// A reset code side `s` may legitimately be told for stream `id`.
    fn check_reset_code(&self, s: usize, id: u64, code: u32, what: &str) {
        let st = &self.streams[&id];
        let peer = 1 - s;
        let by_peer = st.reset_by[peer] == Some(code);
        let refused = code == RESET_REFUSED
            && st.opener == s
            && self.sides[peer].limit != NO_LIMIT
            && !st.known[peer];
        assert!(
            by_peer || refused,
            "{}: {what} on stream {id} reported Reset({code:#x}), but the {} reset it with {:?} \
             (limit {}): {st:?}",
            name(s),
            name(peer),
            st.reset_by[peer],
            self.sides[peer].limit,
        );
    }

    fn open(&mut self, s: usize) {
        self.sides[s].calls += 1;
        let Some(id) = self.sides[s].mux.open_stream(self.now) else {
            assert!(
                self.sides[s].mux.closed().is_some(),
                "{}: open_stream refused on a live session",
                name(s)
            );
            return;
        };
        assert_eq!(
            id % 2 == 1,
            s == 0,
            "{}: stream id {id} of the wrong parity",
            name(s)
        );
        let mut st = StreamModel {
            opener: s,
            dir: [Dir::default(), Dir::default()],
            known: [false; 2],
            gone: [false; 2],
            reset_by: [None; 2],
        };
        st.known[s] = true;
        assert!(
            self.streams.insert(id, st).is_none(),
            "{}: stream id {id} reused",
            name(s)
        );
        self.order[s].push(id);
    }

    fn accept(&mut self, s: usize) -> bool {
        let mut any = false;
        while let Some(id) = self.sides[s].mux.accept_stream() {
            any = true;
            let st = self
                .streams
                .get_mut(&id)
                .unwrap_or_else(|| panic!("{}: accepted stream {id} nobody opened", name(s)));
            assert_eq!(
                st.opener,
                1 - s,
                "{}: accepted its own stream {id}",
                name(s)
            );
            assert!(!st.known[s], "{}: accepted stream {id} twice", name(s));
            st.known[s] = true;
            self.order[s].push(id);
        }
        any
    }

    /// Writes as much of the backlog as the multiplexer takes; returns bytes written.
    fn try_write(&mut self, s: usize, id: u64) -> u64 {
        let mut total = 0;
        loop {
            let d = &self.streams[&id].dir[s];
            if d.backlog == 0 || d.write_err.is_some() {
                break;
            }
            let data = pattern(id, d.written, d.backlog);
            self.sides[s].calls += 1;
            let r = self.sides[s].mux.write(id, data);
            match r {
                Ok(n) => {
                    assert!(
                        n <= data.len(),
                        "{}: write took {n} of {}",
                        name(s),
                        data.len()
                    );
                    let d = &mut self.streams.get_mut(&id).expect("known").dir[s];
                    d.written += n as u64;
                    d.backlog -= n as u64;
                    total += n as u64;
                    if n < data.len() {
                        d.write_blocked = true;
                        break;
                    }
                    d.write_blocked = false;
                }
                Err(StreamError::Reset(code)) => {
                    self.check_reset_code(s, id, code, "write");
                    let d = &mut self.streams.get_mut(&id).expect("known").dir[s];
                    d.write_err = Some(code);
                    d.backlog = 0;
                    d.want_finish = false;
                }
                Err(e) => panic!(
                    "{}: write on stream {id} failed with {e:?}: {:?}",
                    name(s),
                    self.streams[&id]
                ),
            }
        }
        let d = &self.streams[&id].dir[s];
        if d.backlog == 0 && d.want_finish && !d.finished && d.write_err.is_none() {
            self.do_finish(s, id);
        }
        total
    }

    fn do_finish(&mut self, s: usize, id: u64) {
        self.sides[s].calls += 1;
        match self.sides[s].mux.finish(id) {
            Ok(()) => {
                self.streams.get_mut(&id).expect("known").dir[s].finished = true;
                self.maybe_reaped(s, id);
            }
            Err(StreamError::Reset(code)) => {
                self.check_reset_code(s, id, code, "finish");
                let d = &mut self.streams.get_mut(&id).expect("known").dir[s];
                d.write_err = Some(code);
                d.want_finish = false;
            }
            Err(e) => panic!(
                "{}: finish on stream {id} failed with {e:?}: {:?}",
                name(s),
                self.streams[&id]
            ),
        }
    }

    /// Reads up to `total` bytes in calls of up to `per_call`; returns whether anything
    /// happened (bytes or an end).
    fn read(&mut self, s: usize, id: u64, total: usize, per_call: usize) -> bool {
        let w = 1 - s;
        let mut got = 0;
        let mut progress = false;
        while got < total {
            let want = per_call.min(total - got);
            self.sides[s].calls += 1;
            let r = self.sides[s].mux.read(self.now, id, want);
            let st = self.streams.get_mut(&id).expect("known");
            let d = &mut st.dir[w];
            match r {
                StreamRead::Data(b) => {
                    assert!(
                        !b.is_empty() && b.len() <= want,
                        "{}: read of {want} on stream {id} returned {} bytes",
                        name(s),
                        b.len()
                    );
                    assert!(
                        d.read + b.len() as u64 <= d.written,
                        "{}: stream {id} delivered bytes {}..{} but only {} were written",
                        name(s),
                        d.read,
                        d.read + b.len() as u64,
                        d.written
                    );
                    assert!(
                        matches_pattern(id, d.read, &b),
                        "{}: stream {id} delivered wrong bytes at offset {}",
                        name(s),
                        d.read
                    );
                    d.read += b.len() as u64;
                    d.read_blocked = false;
                    got += b.len();
                    progress = true;
                }
                StreamRead::Blocked => {
                    d.read_blocked = true;
                    break;
                }
                StreamRead::Finished => {
                    assert!(
                        d.finished && d.read == d.written,
                        "{}: stream {id} reported Finished after {} of {} bytes (writer \
                         finished: {})",
                        name(s),
                        d.read,
                        d.written,
                        d.finished
                    );
                    d.end = Some(End::Finished);
                    progress = true;
                    self.maybe_reaped(s, id);
                    break;
                }
                StreamRead::Reset(code) => {
                    self.check_reset_code(s, id, code, "read");
                    let st = self.streams.get_mut(&id).expect("known");
                    st.dir[w].end = Some(End::Reset(code));
                    st.gone[s] = true;
                    progress = true;
                    break;
                }
            }
        }
        progress
    }

    fn reset(&mut self, s: usize, id: u64, code: u32) {
        self.sides[s].calls += 1;
        self.sides[s].mux.reset(id, code);
        let st = self.streams.get_mut(&id).expect("known");
        // Once told of the peer's reset, the multiplexer sends none of its own.
        if st.dir[s].write_err.is_none() && st.reset_by[1 - s].is_none() {
            st.reset_by[s] = Some(code);
        }
        st.gone[s] = true;
        st.dir[s].backlog = 0;
        st.dir[s].want_finish = false;
    }

    fn stop(&mut self, s: usize, id: u64) {
        self.sides[s].calls += 1;
        self.sides[s].mux.stop(id);
        self.streams.get_mut(&id).expect("known").dir[1 - s].stopped = true;
        self.maybe_reaped(s, id);
    }

    /// The event-driven application: accept, write where not waiting for `Writable`, read where
    /// not waiting for `Readable`. Returns whether anything happened.
    fn react(&mut self, s: usize) -> bool {
        self.events(s);
        let mut progress = self.accept(s);
        for id in self.candidates(s, |_| true) {
            let d = &self.streams[&id].dir[s];
            if !d.write_blocked && (d.backlog > 0 || (d.want_finish && !d.finished)) {
                let finished = d.finished;
                progress |= self.try_write(s, id) > 0;
                progress |= self.streams[&id].dir[s].finished != finished;
            }
            let st = &self.streams[&id];
            let inn = &st.dir[1 - s];
            if !st.gone[s] && !inn.read_blocked && inn.end.is_none() && !inn.stopped {
                progress |= self.read(s, id, 8 << 20, 64 * 1024);
            }
            self.events(s);
        }
        progress
    }

    /// Output of side `s` into its pending buffer (only once the last lot has left), then as much
    /// of that as fits into the pipe.
    fn fill(&mut self, s: usize, poll: bool) {
        let side = &mut self.sides[s];
        if side.pending.len == 0 {
            let has = side.mux.has_output();
            let out = if poll {
                side.mux.poll_output().map(|b| b.freeze())
            } else {
                let mut out = None;
                side.mux
                    .drain_output(|b| out = Some(Bytes::copy_from_slice(b)));
                out
            };
            assert_eq!(has, out.is_some(), "{}: has_output disagrees", name(s));
            if let Some(out) = out {
                let bound =
                    OUT_HIGH_WATER + CONTROL_BACKLOG + OUT_SLACK + PER_CALL_SLACK * side.calls;
                assert!(
                    out.len() <= bound,
                    "{}: {} bytes of output held (bound {bound})",
                    name(s),
                    out.len()
                );
                self.peak_output = self.peak_output.max(out.len());
                side.calls = 0;
                side.pending.push(out);
            }
            self.events(s);
        }
        let side = &mut self.sides[s];
        let pipe = &mut self.pipes[s];
        while pipe.len < self.caps[s] {
            let Some(b) = side.pending.pop(self.caps[s] - pipe.len) else {
                break;
            };
            pipe.push(b);
        }
    }

    /// Moves up to `budget` bytes from side `from` to the other side; returns how many.
    fn transfer(&mut self, from: usize, budget: usize, chunk: usize, poll: bool) -> usize {
        let to = 1 - from;
        let mut moved = 0;
        while moved < budget {
            self.fill(from, poll);
            let Some(piece) = self.pipes[from].pop(chunk.min(budget - moved)) else {
                break;
            };
            moved += piece.len();
            let mux = &mut self.sides[to].mux;
            if poll {
                // The zero-copy path TcpSession takes.
                mux.input_buffer().extend_from_slice(&piece);
                mux.process_input(self.now);
            } else {
                mux.handle_input(self.now, &piece);
            }
            self.sides[to].last_input = self.now;
            self.events(to);
        }
        moved
    }

    fn advance(&mut self, d: Duration) {
        // Keep every live side within the idle timeout.
        let oldest = self
            .sides
            .iter()
            .filter(|s| s.mux.closed().is_none())
            .map(|s| s.last_input)
            .min()
            .unwrap_or(self.now);
        let room = (oldest + IDLE_TIMEOUT)
            .saturating_duration_since(self.now)
            .saturating_sub(Duration::from_millis(1));
        self.now += d.min(room);
        self.timers();
    }

    fn timers(&mut self) {
        for s in 0..2 {
            self.sides[s].calls += 1;
            self.sides[s].mux.handle_timeout(self.now);
            if let Some(t) = self.sides[s].mux.poll_timeout() {
                assert!(
                    t > self.now,
                    "{}: poll_timeout {:?} in the past after handle_timeout",
                    name(s),
                    self.now - t
                );
            }
            self.events(s);
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Open { side } => self.open(side),
            Op::Write {
                side,
                ref stream,
                len,
            } => {
                if let Some(id) = self.pick(side, stream, |st| {
                    let d = &st.dir[side];
                    !d.want_finish && !d.finished && d.write_err.is_none()
                }) {
                    self.streams.get_mut(&id).expect("known").dir[side].backlog += len as u64;
                    self.try_write(side, id);
                }
            }
            Op::Finish { side, ref stream } => {
                if let Some(id) = self.pick(side, stream, |st| {
                    let d = &st.dir[side];
                    !d.want_finish && !d.finished && d.write_err.is_none()
                }) {
                    self.streams.get_mut(&id).expect("known").dir[side].want_finish = true;
                    self.try_write(side, id);
                }
            }
            Op::Reset {
                side,
                ref stream,
                code,
            } => {
                if let Some(id) = self.pick(side, stream, |_| true) {
                    self.reset(side, id, code);
                }
            }
            Op::Stop { side, ref stream } => {
                if let Some(id) = self.pick(side, stream, |st| {
                    let d = &st.dir[1 - side];
                    !d.stopped && d.end.is_none()
                }) {
                    self.stop(side, id);
                }
            }
            Op::Read {
                side,
                ref stream,
                total,
                per_call,
            } => {
                if let Some(id) = self.pick(side, stream, |st| {
                    let d = &st.dir[1 - side];
                    !d.stopped && d.end.is_none()
                }) {
                    self.read(side, id, total, per_call);
                }
            }
            Op::Accept { side } => {
                self.accept(side);
            }
            Op::React { side } => {
                self.react(side);
            }
            Op::Transfer {
                from,
                budget,
                chunk,
                poll,
            } => {
                self.transfer(from, budget, chunk, poll);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(ms)),
            Op::Ping { side } => {
                self.sides[side].calls += 1;
                self.sides[side].mux.send_ping(self.now);
            }
        }
        for s in 0..2 {
            self.events(s);
        }
    }

    fn end(&mut self, ending: &Ending) {
        match *ending {
            Ending::GoAway { side, code } => {
                self.goaways.insert(code);
                self.sides[side].calls += 1;
                self.sides[side].mux.go_away(code);
            }
            Ending::Idle => {
                self.idled = true;
                self.now += IDLE_TIMEOUT + Duration::from_secs(1);
                self.timers();
                for s in 0..2 {
                    assert!(
                        self.sides[s].mux.closed().is_some(),
                        "{}: still open after {IDLE_TIMEOUT:?} of silence",
                        name(s)
                    );
                }
            }
        }
    }

    /// Oracles that hold after every operation.
    fn check(&mut self) {
        for s in 0..2 {
            match self.sides[s].mux.closed() {
                None => {}
                Some(MuxClosed::GoAway(code)) if self.goaways.contains(code) => {}
                Some(MuxClosed::Timeout) if self.idled => {}
                Some(other) => panic!("{}: session closed between honest peers: {other}", name(s)),
            }
        }
        let mut session = [0u64; 2];
        for (id, st) in &self.streams {
            for (w, d) in st.dir.iter().enumerate() {
                assert!(d.read <= d.written, "stream {id}: read past written");
                let outstanding = d.written - d.read;
                self.peak_stream = self.peak_stream.max(outstanding);
                assert!(
                    outstanding <= u64::from(MAX_STREAM_WINDOW),
                    "stream {id} ({} → {}): {outstanding} bytes written and not read, over the \
                     stream window bound {MAX_STREAM_WINDOW}",
                    name(w),
                    name(1 - w)
                );
                if !st.discarded(w) {
                    session[w] += outstanding;
                }
            }
        }
        for (w, &unread) in session.iter().enumerate() {
            // A refused stream's bytes are discarded before anyone can tell: only checked when
            // the receiver refuses none.
            if self.sides[1 - w].limit == NO_LIMIT {
                self.peak_session = self.peak_session.max(unread);
                assert!(
                    unread <= u64::from(SESSION_WINDOW),
                    "{} → {}: {unread} bytes written and not read, over the session window \
                     {SESSION_WINDOW}",
                    name(w),
                    name(1 - w),
                );
            }
        }
    }

    /// Delivers everything both ways with the event-driven application until nothing moves.
    fn drain(&mut self, chunk: usize) {
        for round in 0.. {
            assert!(round < 100_000, "final drain does not settle");
            let mut progress = false;
            for s in 0..2 {
                progress |= self.react(s);
            }
            for s in 0..2 {
                progress |= self.transfer(s, usize::MAX, chunk, round % 2 == 0) > 0;
            }
            self.check();
            if !progress {
                break;
            }
        }
    }

    /// After the drain of a session that stayed up: every byte arrived, every stream ended the
    /// way the model says, and the stream tables hold exactly the streams still open.
    fn check_complete(&mut self) {
        for (id, st) in &self.streams.clone() {
            let w = st.opener;
            let r = 1 - w;
            let d = &st.dir[w];
            // Anything sent reached the peer: it accepted the stream, or refused it (the opener
            // holds it reset: an empty write shows that without side effects).
            if (d.written > 0 || d.finished) && !st.known[r] {
                let refused = self.sides[r].limit != NO_LIMIT
                    && (st.gone[w]
                        || self.sides[w].mux.write(*id, &[])
                            == Err(StreamError::Reset(RESET_REFUSED)));
                assert!(
                    refused,
                    "stream {id}: the {} sent {} bytes (finished: {}) but the {} never saw \
                     the stream: {st:?}",
                    name(w),
                    d.written,
                    d.finished,
                    name(r)
                );
            }
            for w in 0..2 {
                let r = 1 - w;
                let d = &st.dir[w];
                if let Some(code) = st.reset_by[w]
                    && st.reset_by[r].is_none()
                    && st.known[r]
                {
                    assert!(
                        st.gone[r] || d.end.is_some() || d.stopped,
                        "stream {id}: the {} reset it ({code}) but the {} was never told: \
                         {st:?}",
                        name(w),
                        name(r)
                    );
                }
                if st.discarded(w) || st.gone[w] && d.backlog > 0 {
                    continue;
                }
                assert!(
                    d.backlog == 0,
                    "stream {id} ({} → {}): {} bytes never written (waiting for Writable: {}): \
                     {st:?}",
                    name(w),
                    name(r),
                    d.backlog,
                    d.write_blocked
                );
                assert!(
                    d.finished || !d.want_finish,
                    "stream {id}: finish never happened: {st:?}"
                );
                if st.known[r] {
                    assert_eq!(
                        d.read,
                        d.written,
                        "stream {id} ({} → {}): bytes written but never read (reader waiting \
                         for Readable: {}): {st:?}",
                        name(w),
                        name(r),
                        d.read_blocked
                    );
                    let want = d.finished.then_some(End::Finished);
                    assert_eq!(
                        d.end,
                        want,
                        "stream {id} ({} → {}): ended {:?}, expected {want:?}: {st:?}",
                        name(w),
                        name(r),
                        d.end
                    );
                }
            }
        }
        for s in 0..2 {
            let open = self
                .streams
                .values()
                .filter(|st| st.known[s] && !st.gone[s])
                .count();
            assert_eq!(
                self.sides[s].mux.stream_count(),
                open,
                "{}: stream table holds {} streams, the model {open}",
                name(s),
                self.sides[s].mux.stream_count()
            );
        }
    }
}

fn run(case: &Case) -> World {
    #[allow(clippy::disallowed_methods)]
    let epoch = Instant::now();
    let mut world = World::new(epoch, case);
    let end_at = case
        .ending
        .as_ref()
        .map(|(at, e)| (at.index(case.ops.len() + 1), e));
    for (i, op) in case.ops.iter().enumerate() {
        if let Some((at, e)) = end_at
            && at == i
        {
            world.end(e);
        }
        world.apply(op);
        world.check();
    }
    if let Some((at, e)) = end_at
        && at == case.ops.len()
    {
        world.end(e);
    }
    world.drain(case.drain_chunk);
    if let Some((_, Ending::GoAway { side, code })) = &case.ending
        && !world.idled
    {
        // The GOAWAY reached the peer.
        let peer = world.sides[1 - side].mux.closed();
        assert!(
            matches!(peer, Some(MuxClosed::GoAway(c)) if c == code),
            "{}: GOAWAY({code}) sent, peer closed with {peer:?}",
            name(*side)
        );
    }
    if !world.any_closed() {
        world.check_complete();
    }
    world
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mux_pair_matches_the_reference_model(case in case()) {
        run(&case);
    }
}

// ---------------------------------------------------------------------------------------------
// Directed cases.

fn quiet_case(ops: Vec<Op>) -> Case {
    Case {
        caps: [64 * 1024, 64 * 1024],
        limits: [NO_LIMIT, NO_LIMIT],
        drain_chunk: 16 * 1024,
        ending: None,
        ops,
    }
}

/// Two streams opened, the later one written first: both must arrive. (Found by the model: the
/// peer took the earlier id for a closed stream and dropped its bytes, until streams were
/// announced at open.)
#[test]
fn streams_first_written_out_of_order_both_arrive() {
    run(&quiet_case(vec![
        Op::Open { side: 0 },
        Op::Open { side: 0 },
        Op::Write {
            side: 0,
            stream: Pick::nth(1, 2),
            len: 10,
        },
        Op::Write {
            side: 0,
            stream: Pick::nth(0, 2),
            len: 10,
        },
    ]));
}

/// Streams nobody reads: the session window caps what the writer may queue across them all.
#[test]
fn the_session_window_bounds_unread_bytes_across_streams() {
    let mut ops = Vec::new();
    let streams = 2 * (SESSION_WINDOW / INITIAL_STREAM_WINDOW) as usize;
    for _ in 0..streams {
        ops.push(Op::Open { side: 0 });
    }
    for i in 0..streams {
        ops.push(Op::Write {
            side: 0,
            stream: Pick::nth(i, streams),
            len: 300_000,
        });
        ops.push(Op::Transfer {
            from: 0,
            budget: usize::MAX,
            chunk: 64 * 1024,
            poll: true,
        });
        ops.push(Op::Transfer {
            from: 1,
            budget: usize::MAX,
            chunk: 64 * 1024,
            poll: true,
        });
    }
    let case = quiet_case(ops.clone());
    #[allow(clippy::disallowed_methods)]
    let mut world = World::new(Instant::now(), &case);
    for op in &ops {
        world.apply(op);
        world.check();
    }
    // Every stream got its initial window until the session window ran out.
    let written: u64 = world.streams.values().map(|s| s.dir[0].written).sum();
    assert_eq!(written, u64::from(SESSION_WINDOW));
    // Then everything drains.
    world.drain(case.drain_chunk);
    world.check_complete();
}

/// A stream whose reader keeps up earns a grown window; when the reader then stalls, what the
/// writer may queue stops at that window, never past [`MAX_STREAM_WINDOW`].
#[test]
fn a_grown_stream_window_still_bounds_unread_bytes() {
    let case = quiet_case(Vec::new());
    #[allow(clippy::disallowed_methods)]
    let mut world = World::new(Instant::now(), &case);
    world.open(0);
    let id = world.order[0][0];
    world.streams.get_mut(&id).expect("opened").dir[0].backlog = 40 << 20;
    // A fast link (up to 32 MiB per millisecond) with a millisecond of latency back: the
    // window doubles towards its maximum. (With no latency at all the measured RTT is zero, the
    // bandwidth-delay product too, and the window rightly stays small.)
    while world.streams[&id].dir[0].read < 20 << 20 {
        for _ in 0..32 {
            world.react(0);
            world.transfer(0, usize::MAX, 64 * 1024, true);
            world.react(1);
        }
        world.advance(Duration::from_millis(1));
        world.transfer(1, usize::MAX, 64 * 1024, true);
        world.check();
    }
    // The reader stalls: the writer fills the window, then waits.
    for _ in 0..64 {
        world.react(0);
        world.transfer(0, usize::MAX, 64 * 1024, true);
        world.transfer(1, usize::MAX, 64 * 1024, true);
        world.check();
    }
    let d = &world.streams[&id].dir[0];
    let unread = d.written - d.read;
    assert!(
        unread > u64::from(MAX_STREAM_WINDOW / 2) && d.backlog > 0,
        "the window did not grow: {unread} bytes unread, {} still to write",
        d.backlog
    );
    world.drain(64 * 1024);
    world.check_complete();
}
