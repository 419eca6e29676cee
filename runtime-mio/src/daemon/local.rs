//! Local TCP connections: applications on a forward's port, and connections to local targets.
//! Each is pumped to and from one node stream, with backpressure both ways: a socket is read
//! only while the stream takes bytes, and a stream is read only while the socket takes bytes.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use vx6_core::Failure;
use vx6_core::node::{Node, StreamHandle};
use vx6_core::session::{StreamError, StreamRead};

/// Bytes taken from a stream per call.
const STREAM_CHUNK: usize = 256 * 1024;
/// Most bytes one read from a local socket takes. Below glibc's mmap threshold (128 KiB), so
/// a fresh buffer per large read comes from the heap, not from page faults.
const READ_CHUNK: usize = 64 * 1024;
/// A read at least this long is handed to the stream as it is, in its own buffer; a shorter
/// one is copied out, so a small read never pins a large buffer.
const KEEP_READ: usize = 8 * 1024;

/// What a local connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepted on forward number `n`.
    Forward(usize),
    /// Dialed to a service's target.
    Target,
}

pub struct Local {
    pub socket: mio::net::TcpStream,
    pub stream: StreamHandle,
    pub role: Role,
    /// A target connection whose connect() has not completed.
    pub connecting: bool,
    readable: bool,
    /// Bytes read from the socket that the stream did not take yet. Empty, without an
    /// allocation, whenever the stream keeps up: reads go into the daemon's shared buffer, so
    /// an idle connection holds no read buffer of its own.
    up: Bytes,
    /// Chunks read from the stream, not yet written to the socket (front first); its
    /// allocation is dropped whenever it empties, for the same reason.
    down: VecDeque<Bytes>,
    down_len: usize,
    read_eof: bool,
    peer_finished: bool,
    /// Something failed: close at once, with a reset where possible.
    pub dead: bool,
    /// Why the peer reset the stream, if it did.
    pub reset: Option<Failure>,
}

/// What a pump did that the daemon must react to.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Keep going.
    Open,
    /// Both directions ended cleanly: deregister and drop.
    Done,
    /// Failed: deregister and drop with a reset.
    Failed,
}

impl Local {
    pub fn new(socket: mio::net::TcpStream, stream: StreamHandle, role: Role) -> Self {
        let _ = socket.set_nodelay(true);
        Self {
            socket,
            stream,
            role,
            connecting: role == Role::Target,
            readable: true,
            up: Bytes::new(),
            down: VecDeque::new(),
            down_len: 0,
            read_eof: false,
            peer_finished: false,
            dead: false,
            reset: None,
        }
    }

    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    fn status(&self) -> Pumped {
        if self.dead {
            Pumped::Failed
        } else if self.read_eof && self.peer_finished && self.down_len == 0 {
            Pumped::Done
        } else {
            Pumped::Open
        }
    }

    /// Socket → stream. `scratch` is the daemon's read buffer, shared by every connection: a
    /// long read leaves in it (the stream keeps those bytes without a copy) and a new buffer
    /// takes its place.
    pub fn pump_up(&mut self, node: &mut Node, now: Instant, scratch: &mut Vec<u8>) -> Pumped {
        if self.connecting || self.dead {
            return self.status();
        }
        loop {
            if !self.up.is_empty() {
                if let Err(e) = offer(node, now, self.stream, &mut self.up) {
                    tracing::debug!("stream {} write: {e}", self.stream);
                    self.fail(node, now);
                    return self.status();
                }
                if !self.up.is_empty() {
                    return self.status();
                }
                // An empty view can still hold the buffer it was cut from.
                self.up = Bytes::new();
            }
            if self.read_eof || !self.readable {
                return self.status();
            }
            scratch.clear();
            scratch.reserve(READ_CHUNK);
            match read_spare(&self.socket, scratch, READ_CHUNK) {
                Ok(0) => {
                    self.read_eof = true;
                    node.stream_finish(now, self.stream);
                    return self.status();
                }
                Ok(n) if n < KEEP_READ => self.up = Bytes::copy_from_slice(scratch),
                Ok(_) => {
                    let mut taken = std::mem::take(scratch);
                    taken.shrink_to_fit();
                    self.up = Bytes::from(taken);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return self.status();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("local read for {}: {e}", self.stream);
                    self.fail(node, now);
                    return self.status();
                }
            }
        }
    }

    /// Stream → socket. Chunks are gathered (QUIC hands over one packet's worth at a time) and
    /// written with one vectored call, so the socket sees few large writes.
    pub fn pump_down(&mut self, node: &mut Node, now: Instant) -> Pumped {
        if self.connecting || self.dead {
            return self.status();
        }
        loop {
            while self.down_len < STREAM_CHUNK && !self.peer_finished {
                match node.stream_read(now, self.stream, STREAM_CHUNK - self.down_len) {
                    StreamRead::Data(b) => {
                        self.down_len += b.len();
                        self.down.push_back(b);
                    }
                    StreamRead::Blocked => break,
                    StreamRead::Finished => self.peer_finished = true,
                    StreamRead::Reset(code) => {
                        tracing::debug!("stream {} reset by peer (code {code})", self.stream);
                        self.reset = Some(vx6_core::node::reset_failure(code));
                        self.dead = true;
                        return self.status();
                    }
                }
            }
            if self.down_len == 0 {
                self.down = VecDeque::new();
                if self.peer_finished {
                    // Half-close: the application sees EOF and may keep sending.
                    let _ = self.socket.shutdown(Shutdown::Write);
                }
                return self.status();
            }
            let slices: Vec<IoSlice<'_>> = self.down.iter().map(|b| IoSlice::new(b)).collect();
            match self.socket.write_vectored(&slices) {
                Ok(mut n) => {
                    self.down_len -= n;
                    while n > 0 {
                        let front = self.down.front_mut().expect("bytes written came from here");
                        if front.len() <= n {
                            n -= front.len();
                            self.down.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return self.status(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("local write for {}: {e}", self.stream);
                    self.fail(node, now);
                    return self.status();
                }
            }
        }
    }

    fn fail(&mut self, node: &mut Node, now: Instant) {
        node.stream_reset(now, self.stream);
        self.dead = true;
    }

    /// Closes with a TCP reset, so the application sees an error rather than a clean EOF.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.socket).set_linger(Some(Duration::ZERO));
    }
}

/// Writes as much of `data` to the stream as it takes now; what it did not take stays in
/// `data`. Only a write that takes nothing registers for a `StreamWritable` wake-up
/// (quinn-proto does not register on a short write), so it writes until one does or `data` is
/// gone.
fn offer(
    node: &mut Node,
    now: Instant,
    stream: StreamHandle,
    data: &mut Bytes,
) -> Result<(), StreamError> {
    while !data.is_empty() {
        if node.stream_write_bytes(now, stream, data)? == 0 {
            break;
        }
    }
    Ok(())
}

/// Reads at most `max` bytes into the spare capacity of `buf` (which must have that much),
/// without zeroing it first: a bulk transfer's every byte would otherwise be written twice.
#[allow(unsafe_code)]
fn read_spare(
    socket: &mio::net::TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let len = buf.len();
    let spare = &mut buf.spare_capacity_mut()[..max];
    let n = socket2::SockRef::from(socket).recv(spare)?;
    // SAFETY: recv(2) initialised the first `n` bytes of `spare`, which follow `len`.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}
