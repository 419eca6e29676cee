//! A hostile *authenticated* peer against a real `vx6` daemon (DESIGN.md §8b).
//!
//! Each test starts an owner daemon `alice` in TCP mode serving `echo` publicly, and an honest
//! daemon `bob` that forwards a local port to it. A hostile client written here (rustls with the
//! node's own TLS configuration, and raw multiplexer frames, so it can break every rule) then
//! attacks alice while a thread keeps echoing a few KiB through bob's forward, each echo with a
//! deadline. The owner must cut the hostile session (or refuse what is over a bound), keep its
//! memory bounded (its peak RSS, `VmHWM`, stays within [`RSS_BOUND`] of its RSS before the
//! attack), keep answering `vx6 status`, and the honest echoes must all succeed.
//!
//! The tests run one at a time (they measure memory and liveness; the machine may be small).
//! `cargo test -p vx6-runtime-mio --test hostile_peer -- --nocapture` shows the figures.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use vx6_core::dht::datagram;
use vx6_core::dht::message::{Body, DHT_VERSION, Message, Request, Response};
use vx6_core::session::mux::frame::MAX_PAYLOAD;
use vx6_core::session::mux::{Frame, INITIAL_STREAM_WINDOW, MuxConfig, RESET_REFUSED};
use vx6_core::session::tls::{PeerMismatch, TlsFactory};
use vx6_core::{Identity, NodeId};

/// How far the owner's peak RSS may rise over its RSS before an attack. The documented bounds
/// per session are the session receive window (32 MiB), the multiplexer's output high-water mark
/// plus control backlog (1.25 MiB), the daemon's socket outbox (4 MiB) and rustls' send buffer
/// (4 MiB); 64 MiB covers them with room for the allocator.
const RSS_BOUND: u64 = 64 * 1024 * 1024;
/// Bytes per honest echo.
const ECHO_BYTES: usize = 4 * 1024;
/// Deadline of one honest echo (a liveness bound, not a latency figure).
const ECHO_DEADLINE: Duration = Duration::from_secs(15);
/// Deadline for the owner to end a hostile session.
const CLOSE_DEADLINE: Duration = Duration::from_secs(20);

/// One test at a time: each measures one daemon's memory and the honest path's liveness.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Daemons

fn vx6() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vx6"));
    c.env_remove("VX6_HOME");
    c
}

fn run_ok(args: &[&str]) -> String {
    let out = vx6().args(args).output().expect("run vx6");
    assert!(out.status.success(), "vx6 {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn path_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A loopback port free for both TCP and UDP (the daemon binds both on its listen address).
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for TCP and UDP");
}

/// A running `vx6 node`, killed (by its own handle) when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
    home: PathBuf,
    id: NodeId,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(name: &'static str, home: PathBuf, args: &[String]) -> Daemon {
        let id_text = run_ok(&["init", "--home", path_arg(&home), "--name", name]);
        let id: NodeId = id_text.trim().parse().expect("init prints the node id");
        let mut child = vx6()
            .args(["node", "--home", path_arg(&home)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vx6 node");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            name,
            child,
            home,
            id,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("ready ") => {
                    assert_eq!(line, format!("ready {id}"), "{name}: ready line");
                    break;
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "{name} did not print `ready` in time (exit: {:?}); log:\n{}",
                    daemon.child.try_wait(),
                    daemon.log_text()
                ),
            }
        }
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Panics (with the log) if the daemon has exited.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}); log:\n{}", self.name, self.log_text());
        }
    }

    /// `vx6 status --json`, which must answer.
    fn status(&mut self) -> serde_json::Value {
        self.assert_alive();
        let out = vx6()
            .args(["status", "--home", path_arg(&self.home), "--json"])
            .output()
            .expect("run vx6 status");
        assert!(
            out.status.success(),
            "{}: vx6 status failed: {out:?}",
            self.name
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    fn counter(status: &serde_json::Value, name: &str) -> u64 {
        status["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {status}"))
    }

    fn mem(&self) -> Mem {
        Mem::of(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}

/// Resident memory of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
struct Mem {
    /// VmRSS.
    rss: u64,
    /// VmHWM: the peak RSS since the process started.
    peak: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let field = |name: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("a number of kB");
            kib * 1024
        };
        Mem {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The peak since `before` stays within [`RSS_BOUND`] of the RSS then.
fn assert_memory_bounded(what: &str, before: Mem, after: Mem) {
    println!(
        "{what}: owner RSS before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB (peak before {:.1} MiB)",
        mib(before.rss),
        mib(after.rss),
        mib(after.peak),
        mib(before.peak)
    );
    assert!(
        after.peak <= before.rss + RSS_BOUND,
        "{what}: owner peak RSS {:.1} MiB is more than {:.0} MiB over its {:.1} MiB before the attack",
        mib(after.peak),
        mib(RSS_BOUND),
        mib(before.rss)
    );
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = io::copy(&mut conn, &mut back);
            });
        }
    });
    addr
}

/// Alice (the owner, attacked) and Bob (honest, forwarding a local port to alice's echo).
struct Pair {
    alice: Daemon,
    bob: Daemon,
    /// Alice's listen address (TCP sessions and DHT datagrams).
    alice_addr: SocketAddr,
    /// Bob's forward to alice's echo.
    forward: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Pair {
    fn start() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let echo = echo_server();
        let alice_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let alice = Daemon::start(
            "alice",
            tmp.path().join("alice"),
            &[
                "--listen".into(),
                alice_addr.to_string(),
                "--transport".into(),
                "tcp".into(),
                "--serve".into(),
                format!("echo={echo}"),
                "--public".into(),
            ],
        );
        // `vx6 id` names the same node as `init` and the ready line.
        let id_out = run_ok(&["id", "--home", path_arg(&alice.home)]);
        assert_eq!(id_out.lines().next(), Some(alice.id.to_string().as_str()));

        let forward: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bob = Daemon::start(
            "bob",
            tmp.path().join("bob"),
            &[
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()),
                "--transport".into(),
                "tcp".into(),
                "--forward".into(),
                format!("{}@{alice_addr}/echo={forward}", alice.id),
            ],
        );
        let pair = Pair {
            alice,
            bob,
            alice_addr,
            forward,
            _tmp: tmp,
        };
        // The first echo also brings up bob's session to alice.
        let first = echo_once(pair.forward, 0, Duration::from_secs(20));
        assert!(first.is_ok(), "first honest echo: {first:?}");
        pair
    }
}

// ---------------------------------------------------------------------------------------------
// The honest path

fn echo_once(forward: SocketAddr, n: u64, deadline: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let end = start + deadline;
    let left = || {
        end.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("deadline of {deadline:?} passed"))
    };
    let mut s =
        TcpStream::connect_timeout(&forward, left()?).map_err(|e| format!("connect: {e}"))?;
    let payload: Vec<u8> = (0..ECHO_BYTES).map(|i| (i as u64 * 31 + n) as u8).collect();
    s.set_write_timeout(Some(left()?)).unwrap();
    s.write_all(&payload).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0; payload.len()];
    let mut got = 0;
    while got < back.len() {
        s.set_read_timeout(Some(left()?)).unwrap();
        match s.read(&mut back[got..]) {
            Ok(0) => return Err(format!("EOF after {got} of {} bytes", back.len())),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    if back != payload {
        return Err("echo differs from what was sent".into());
    }
    Ok(start.elapsed())
}

/// Echoes through bob's forward over and over until stopped.
struct Honest {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Result<Duration, String>>>,
}

impl Honest {
    fn start(forward: SocketAddr) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut results = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                results.push(echo_once(forward, n, ECHO_DEADLINE));
                thread::sleep(Duration::from_millis(100));
            }
            results
        });
        Honest { stop, thread }
    }

    /// Stops, and asserts that every echo succeeded and that there were some.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let results = self.thread.join().expect("honest thread");
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let slowest = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .max()
            .copied()
            .unwrap_or_default();
        println!(
            "{what}: honest echoes of {ECHO_BYTES} B during the attack: {} ok, {} failed, slowest {slowest:?}",
            results.len() - failed.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{what}: honest echoes failed during the attack: {failed:?}"
        );
        assert!(
            !results.is_empty(),
            "{what}: only {} honest echo(es) ran during the attack",
            results.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile client: TLS as a node, then raw multiplexer frames

struct Hostile {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    /// Decrypted bytes not yet decoded into frames.
    plain: BytesMut,
}

fn blocked(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl Hostile {
    /// Connects and authenticates as the node with `secret`; `rcvbuf` shrinks the socket's
    /// receive buffer (before connecting, so the window is small from the start).
    fn connect(addr: SocketAddr, server: NodeId, secret: [u8; 32], rcvbuf: Option<usize>) -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .expect("connect to the owner");
        let mut sock: TcpStream = socket.into();
        sock.set_nodelay(true).unwrap();

        let identity = Identity::from_secret_bytes(&secret);
        let factory = TlsFactory::new(
            &identity,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap();
        let config = factory
            .client(Some(server), &PeerMismatch::default())
            .unwrap();
        let mut tls =
            rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("vx6").unwrap())
                .unwrap();
        // Frames are queued in batches and flushed after each: no cap needed on rustls' side.
        tls.set_buffer_limit(None);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)
                .expect("TLS handshake with the owner");
        }
        let mut h = Hostile {
            sock,
            tls,
            plain: BytesMut::new(),
        };
        h.flush().expect("finish the handshake");
        h
    }

    /// Encrypts encoded frames into rustls' send queue.
    fn queue(&mut self, frames: &[u8]) {
        self.tls.writer().write_all(frames).unwrap();
    }

    /// Writes rustls' send queue to the socket (blocking up to the write timeout).
    fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf);
        }
        self.queue(&buf);
        self.flush()
    }

    /// One read from the socket (waiting up to `wait`); the frames it completed. `Err` with
    /// `UnexpectedEof` when the owner closed the connection.
    fn recv(&mut self, wait: Duration) -> io::Result<Vec<Frame>> {
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let n = self.tls.read_tls(&mut self.sock)?;
        let state = self.tls.process_new_packets().map_err(io::Error::other)?;
        let pending = state.plaintext_bytes_to_read();
        if pending > 0 {
            let start = self.plain.len();
            self.plain.resize(start + pending, 0);
            self.tls.reader().read_exact(&mut self.plain[start..])?;
        }
        let mut frames = Vec::new();
        while let Some(f) = Frame::decode(&mut self.plain).map_err(io::Error::other)? {
            frames.push(f);
        }
        if n == 0 && frames.is_empty() {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(frames)
    }

    /// Reads until the owner closes the connection or `deadline` passes; returns the frames read
    /// and how the connection ended (`None`: still open at the deadline).
    fn read_until_closed(&mut self, deadline: Duration) -> (Vec<Frame>, Option<io::Error>) {
        let end = Instant::now() + deadline;
        let mut frames = Vec::new();
        loop {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return (frames, None);
            };
            match self.recv(left) {
                Ok(f) => frames.extend(f),
                Err(e) if blocked(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    /// Sends a PING and waits for its ACK, collecting other frames on the way.
    fn ping(&mut self, opaque: u64, wait: Duration, seen: &mut Vec<Frame>) -> bool {
        if self.send(&[Frame::Ping { ack: false, opaque }]).is_err() {
            return false;
        }
        let end = Instant::now() + wait;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Ok(frames) => {
                    for f in frames {
                        if f == (Frame::Ping { ack: true, opaque }) {
                            return true;
                        }
                        seen.push(f);
                    }
                }
                Err(e) if blocked(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

fn summarize(frames: &[Frame]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in frames {
        let k = match f {
            Frame::Data { .. } => "DATA".to_owned(),
            Frame::Window { .. } => "WINDOW".to_owned(),
            Frame::Reset { code, .. } => format!("RESET {code:#x}"),
            Frame::Ping { ack, .. } => format!("PING ack={ack}"),
            Frame::GoAway { code } => format!("GOAWAY {code}"),
        };
        *m.entry(k).or_default() += 1;
    }
    m
}

fn print_counters(what: &str, status: &serde_json::Value) {
    println!(
        "{what}: status streams={} sessions={} counters={}",
        status["streams"],
        status["sessions"].as_array().map_or(0, Vec::len),
        status["counters"]
    );
}

// ---------------------------------------------------------------------------------------------
// The attacks

/// How a PING flood went.
struct Flood {
    pings: u64,
    took: Duration,
    /// Writes that waited 200 ms without progress: the owner was not reading.
    stalls: u64,
    /// How the connection ended; `None`: still open at the deadline.
    ended: Option<io::Error>,
}

impl Hostile {
    /// Writes PINGs, `per_write` at a time with `pause` after each write, never reading, until
    /// the owner drops the connection or `deadline` passes.
    fn flood_pings(&mut self, per_write: usize, pause: Duration, deadline: Duration) -> Flood {
        self.sock
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut batch = BytesMut::new();
        for i in 0..per_write {
            Frame::Ping {
                ack: false,
                opaque: i as u64,
            }
            .encode(&mut batch);
        }
        let start = Instant::now();
        let (mut pings, mut stalls) = (0, 0);
        let ended = loop {
            if start.elapsed() > deadline {
                break None;
            }
            if !self.tls.wants_write() {
                self.queue(&batch);
                pings += per_write as u64;
            }
            match self.flush() {
                Ok(()) if !pause.is_zero() => thread::sleep(pause),
                Ok(()) => {}
                Err(e) if blocked(&e) || e.kind() == ErrorKind::Interrupted => stalls += 1,
                Err(e) => break Some(e),
            }
        };
        Flood {
            pings,
            took: start.elapsed(),
            stalls,
            ended,
        }
    }

    /// Opens streams with empty DATA frames (no service request ever follows), taking the
    /// owner's answers as they come so that none of them backs up; returns those answers.
    fn open_streams(&mut self, ids: &[u32]) -> Vec<Frame> {
        let mut answers = Vec::new();
        for chunk in ids.chunks(1024) {
            let opens: Vec<Frame> = chunk
                .iter()
                .map(|&stream| Frame::Data {
                    stream,
                    fin: false,
                    payload: Bytes::new(),
                })
                .collect();
            self.send(&opens).expect("send stream openings");
            loop {
                match self.recv(Duration::from_millis(1)) {
                    Ok(f) => answers.extend(f),
                    Err(e) if blocked(&e) || e.kind() == ErrorKind::Interrupted => break,
                    Err(e) => panic!("the owner ended the session while streams were opened: {e}"),
                }
            }
        }
        answers
    }
}

/// Client stream ids `1, 3, 5, …`: `n` of them.
fn client_ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 2 * i + 1).collect()
}

fn refused_ids(frames: &[Frame]) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Reset {
                stream,
                code: RESET_REFUSED,
            } => Some(*stream),
            _ => None,
        })
        .collect()
}

/// Three honest echoes right now, each within [`ECHO_DEADLINE`].
fn honest_echoes_now(pair: &Pair, what: &str) -> Vec<Result<Duration, String>> {
    let results: Vec<_> = (0..3)
        .map(|n| echo_once(pair.forward, 1000 + n, ECHO_DEADLINE))
        .collect();
    println!("{what}: honest echoes now: {results:?}");
    results
}

/// (a) PINGs as fast as the socket takes them, never reading a reply, with a tiny receive
/// buffer, in one session after another for a few seconds; then one more session that floods
/// at a pace the owner keeps up with, so its replies back up in the owner's socket and outbox
/// rather than in one read. The owner must cut every such session, not queue its replies.
#[test]
fn ping_flood_without_reading_is_cut_off() {
    let _serial = serial();
    let mut pair = Pair::start();
    let before_status = pair.alice.status();
    let before = pair.alice.mem();
    let honest = Honest::start(pair.forward);

    let start = Instant::now();
    let mut rounds = 0u64;
    let (mut pings, mut slowest_cut) = (0, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(4) {
        let mut h = Hostile::connect(pair.alice_addr, pair.alice.id, [0xa1; 32], Some(4096));
        let flood = h.flood_pings(4096, Duration::ZERO, CLOSE_DEADLINE);
        let Some(ended) = flood.ended else {
            panic!(
                "round {rounds}: the owner kept a session that flooded {} PINGs without reading for {CLOSE_DEADLINE:?}",
                flood.pings
            );
        };
        assert!(
            matches!(
                ended.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ),
            "round {rounds}: unexpected end of the flood: {ended}"
        );
        rounds += 1;
        pings += flood.pings;
        slowest_cut = slowest_cut.max(flood.took);
    }
    println!(
        "ping flood: {rounds} sessions at full speed, {pings} PINGs ({:.1} MiB of frames) in {:?}; each cut within {slowest_cut:?}",
        mib(pings * 17),
        start.elapsed()
    );
    pair.alice.assert_alive();

    let mut h = Hostile::connect(pair.alice_addr, pair.alice.id, [0xa2; 32], Some(4096));
    let paced = h.flood_pings(128, Duration::from_millis(1), Duration::from_secs(25));
    println!(
        "ping flood: paced session: {} PINGs in {:?}, {} write stalls of 200 ms; ended: {:?}",
        paced.pings, paced.took, paced.stalls, paced.ended
    );
    drop(h);

    let after = pair.alice.mem();
    let status = pair.alice.status();
    print_counters("ping flood", &status);
    for line in pair.alice.log_lines("(limit_reached)").iter().take(2) {
        println!("ping flood: alice log: {line}");
    }
    assert_memory_bounded("ping flood", before, after);
    honest.finish("ping flood");
    let last = echo_once(pair.forward, 0, ECHO_DEADLINE);
    assert!(last.is_ok(), "honest echo after the flood: {last:?}");
    pair.bob.assert_alive();
    assert!(
        paced.ended.is_some(),
        "the owner kept a session that flooded {} PINGs without reading for {:?}",
        paced.pings,
        paced.took
    );
    // The log arrives through a pipe: give it a moment.
    let end = Instant::now() + Duration::from_secs(3);
    let cut = loop {
        let cut = pair.alice.log_lines("(limit_reached)").len() as u64;
        if cut > rounds || Instant::now() > end {
            break cut;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        cut,
        rounds + 1,
        "sessions logged as cut for not reading, of {} flooding sessions",
        rounds + 1
    );
    // Counted always (DESIGN.md §8b); `sessions_failed` counts failures "handshake or later".
    let failed = Daemon::counter(&status, "sessions_failed")
        - Daemon::counter(&before_status, "sessions_failed");
    assert!(
        failed > rounds,
        "{} sessions were cut for not reading, but sessions_failed rose by {failed}",
        rounds + 1
    );
}

/// (b) Streams opened past the per-session limit (empty DATA frames, no service request): each
/// one over it is refused with a RESET at once, the session and the daemon go on, honest
/// streams flow while the hostile ones are held, and those go away with their session.
#[test]
fn streams_past_the_session_limit_are_refused() {
    let _serial = serial();
    let mut pair = Pair::start();
    let limit = MuxConfig::default().max_peer_streams;
    let opened = 20_000;
    assert!(opened > limit);
    let before = pair.alice.mem();
    let honest = Honest::start(pair.forward);

    let mut h = Hostile::connect(pair.alice_addr, pair.alice.id, [0xb2; 32], None);
    let start = Instant::now();
    let ids = client_ids(opened);
    let mut frames = h.open_streams(&ids);
    let want = opened - limit;
    let end = Instant::now() + Duration::from_secs(15);
    while refused_ids(&frames).len() < want && Instant::now() < end {
        match h.recv(Duration::from_millis(200)) {
            Ok(f) => frames.extend(f),
            Err(e) if blocked(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("the owner ended the session after streams were opened: {e}"),
        }
    }
    let mut seen = Vec::new();
    let alive = h.ping(0x5eed, Duration::from_secs(10), &mut seen);
    frames.extend(seen);
    println!(
        "stream flood: opened {opened} streams in {:?}; answers: {:?}",
        start.elapsed(),
        summarize(&frames)
    );
    assert!(
        alive,
        "the session no longer answers PINGs after the stream flood"
    );
    let mut refused = refused_ids(&frames);
    refused.sort_unstable();
    assert_eq!(
        refused.len(),
        want,
        "{} streams over the limit of {limit} were refused, want {want}",
        refused.len()
    );
    assert_eq!(
        refused,
        ids[limit..],
        "the refused streams are not the ones over the limit"
    );

    let status = pair.alice.status();
    print_counters("stream flood", &status);
    let streams = status["streams"].as_u64().unwrap();
    assert!(
        streams as usize <= limit + 16,
        "the owner holds {streams} streams, over the per-session limit {limit}"
    );
    let during = pair.alice.mem();
    let now = honest_echoes_now(&pair, "stream flood");

    // The streams go when the session goes.
    drop(h);
    let end = Instant::now() + Duration::from_secs(15);
    let left = loop {
        let s = pair.alice.status()["streams"].as_u64().unwrap();
        if s < 16 || Instant::now() > end {
            break s;
        }
        thread::sleep(Duration::from_millis(200));
    };
    println!("stream flood: {left} stream(s) left after the hostile session closed");
    assert_memory_bounded("stream flood", before, during);
    assert!(
        now.iter().all(Result::is_ok),
        "honest echoes failed while the hostile streams were held: {now:?}"
    );
    assert!(
        left < 16,
        "{left} streams still open after the hostile session closed"
    );
    honest.finish("stream flood");
}

/// (b') The same, from several hostile sessions (keys cost nothing to make), each staying
/// within its per-session limit: together they hold as many idle streams (opened, never sent a
/// service request) as the owner carries in all, and honest peers must still get theirs.
#[test]
fn streams_held_by_several_sessions_leave_room_for_honest_peers() {
    let _serial = serial();
    let mut pair = Pair::start();
    let limit = MuxConfig::default().max_peer_streams;
    const SESSIONS: usize = 4;
    let before = pair.alice.mem();

    let start = Instant::now();
    let mut hostile = Vec::new();
    for k in 0..SESSIONS {
        let mut h = Hostile::connect(pair.alice_addr, pair.alice.id, [0xe0 + k as u8; 32], None);
        let mut frames = h.open_streams(&client_ids(limit));
        assert!(
            h.ping(1, Duration::from_secs(10), &mut frames),
            "hostile session {k} no longer answers PINGs"
        );
        println!(
            "held streams: session {k}: answers {:?}",
            summarize(&frames)
        );
        hostile.push(h);
    }
    let status = pair.alice.status();
    print_counters("held streams", &status);
    println!(
        "held streams: {SESSIONS} sessions opened {} streams in {:?}",
        SESSIONS * limit,
        start.elapsed()
    );
    let now = honest_echoes_now(&pair, "held streams");
    let after_status = pair.alice.status();
    print_counters("held streams", &after_status);
    for line in pair.bob.log_lines("limit").iter().take(3) {
        println!("held streams: bob log: {line}");
    }
    assert_memory_bounded("held streams", before, pair.alice.mem());
    drop(hostile);
    assert!(
        now.iter().all(Result::is_ok),
        "honest echoes failed while {SESSIONS} hostile sessions held {} idle streams: {now:?}",
        status["streams"]
    );
}

/// (c) DATA past the stream's credit: a request for `echo` and then a whole window more on the
/// same stream. The owner must end the session (GOAWAY code 1), not buffer the excess.
#[test]
fn data_past_credit_ends_the_session() {
    let _serial = serial();
    let mut pair = Pair::start();
    let before_status = pair.alice.status();
    let before = pair.alice.mem();
    let honest = Honest::start(pair.forward);

    let mut h = Hostile::connect(pair.alice_addr, pair.alice.id, [0xc3; 32], None);
    let mut request = vec![1u8, 4];
    request.extend_from_slice(b"echo");
    assert_eq!(INITIAL_STREAM_WINDOW as usize, MAX_PAYLOAD);
    // The request uses 6 bytes of the 256 KiB credit, and no WINDOW comes back before half of
    // it is consumed: the full-size frame after it is 6 bytes over the credit whatever the
    // owner has read by then.
    h.send(&[
        Frame::Data {
            stream: 1,
            fin: false,
            payload: request.into(),
        },
        Frame::Data {
            stream: 1,
            fin: false,
            payload: vec![0x55; MAX_PAYLOAD].into(),
        },
    ])
    .expect("send past the credit");
    let start = Instant::now();
    let (frames, ended) = h.read_until_closed(CLOSE_DEADLINE);
    println!(
        "data past credit: answers {:?}; connection ended after {:?}: {ended:?}",
        summarize(&frames),
        start.elapsed()
    );
    drop(h);
    let status = pair.alice.status();
    print_counters("data past credit", &status);
    for line in pair.alice.log_lines("ended") {
        println!("data past credit: alice log: {line}");
    }
    assert!(
        ended.is_some(),
        "the owner kept a session that sent past its credit for {CLOSE_DEADLINE:?}"
    );
    assert!(
        frames.contains(&Frame::GoAway { code: 1 }),
        "no GOAWAY code 1 before the close: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Window { stream: 1, .. })),
        "the owner granted credit on the offending stream"
    );
    assert_memory_bounded("data past credit", before, pair.alice.mem());
    honest.finish("data past credit");
    assert!(
        Daemon::counter(&status, "sessions_failed")
            > Daemon::counter(&before_status, "sessions_failed"),
        "a session ended for a flow-control violation, but sessions_failed did not count it"
    );
}

/// (d) Signed DHT `Ping`s at full speed from one source: the owner answers at most its rate
/// (100/s per source prefix, burst 200), counts the rest, and answers again once the source
/// is quiet.
#[test]
fn dht_request_flood_is_rate_limited() {
    let _serial = serial();
    let mut pair = Pair::start();
    let before_status = pair.alice.status();
    let before = pair.alice.mem();
    let honest = Honest::start(pair.forward);
    let (alice_addr, to) = (pair.alice_addr, pair.alice.id);

    let flooder = Identity::from_secret_bytes(&[0xd4; 32]);
    let me = flooder.node_id();
    let ping = |txid: u64| {
        datagram::encode(
            &flooder,
            &to,
            &Message {
                version: DHT_VERSION,
                txid,
                listen: None,
                body: Body::Request(Request::Ping),
            },
        )
        .unwrap()
    };
    // Signing is slow in an unoptimised build: a few hundred distinct requests, sent in turn.
    let datagrams: Vec<Vec<u8>> = (0..256).map(ping).collect();
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let socket: UdpSocket = socket.into();
    socket.set_nonblocking(true).unwrap();

    let start = Instant::now();
    let mut answers = 0u64;
    let mut other = 0u64;
    let mut last_answer = start;
    let mut buf = [0u8; 2048];
    let mut drain = |answers: &mut u64, other: &mut u64, last: &mut Instant| loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => match datagram::decode(&buf[..n], &me) {
                Ok((sender, m))
                    if sender == to
                        && from == alice_addr
                        && m.body == Body::Response(Response::Pong) =>
                {
                    *answers += 1;
                    *last = Instant::now();
                }
                _ => *other += 1,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // An ICMP error from an earlier send; nothing to count.
            Err(_) => {}
        }
    };
    // At least 50 000 requests, and for at least a few seconds, so the sustained rate shows.
    const FLOOD: usize = 50_000;
    let flood_for = Duration::from_secs(
        std::env::var("VX6_TEST_DHT_FLOOD_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    );
    let mut sent = 0usize;
    while sent < FLOOD || start.elapsed() < flood_for {
        match socket.send_to(&datagrams[sent % datagrams.len()], alice_addr) {
            Ok(_) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) if e.raw_os_error() == Some(105) => {} // ENOBUFS: the kernel's queue is full
            Err(e) => panic!("sending the DHT flood: {e}"),
        }
        if sent.is_multiple_of(256) {
            drain(&mut answers, &mut other, &mut last_answer);
        }
    }
    let flood_time = start.elapsed();
    // The owner checks a signature and signs an answer for each request it admits (tens of
    // milliseconds each in an unoptimised build): wait until the answers stop for 3 s.
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && (answers == 0 || last_answer.elapsed() < Duration::from_secs(3)) {
        drain(&mut answers, &mut other, &mut last_answer);
        thread::sleep(Duration::from_millis(10));
    }
    let window = last_answer.duration_since(start).as_secs_f64();

    let status = pair.alice.status();
    print_counters("dht flood", &status);
    let limited = Daemon::counter(&status, "dht_rate_limited")
        - Daemon::counter(&before_status, "dht_rate_limited");
    println!(
        "dht flood: sent {sent} signed Pings in {flood_time:?}; {answers} Pongs back ({other} other datagrams), the last {window:.2} s after the start; {limited} counted as rate limited"
    );
    assert!(answers > 0, "the owner answered none of the flood");
    // Every answered request was admitted before its answer arrived here.
    let allowed = 200 + (100.0 * (window + 1.0)) as u64;
    assert!(
        answers <= allowed,
        "the owner answered {answers} requests from one source within {window:.2} s (rate 100/s, burst 200)"
    );
    assert!(limited > 0, "no DHT request was counted as rate limited");

    // Once the source is quiet again, it is answered again.
    let end = Instant::now() + Duration::from_secs(10);
    let mut txid = 1_000_000;
    let recovered = loop {
        if Instant::now() > end {
            break false;
        }
        let _ = socket.send_to(&ping(txid), alice_addr);
        txid += 1;
        thread::sleep(Duration::from_millis(500));
        let was = answers;
        drain(&mut answers, &mut other, &mut last_answer);
        if answers > was {
            break true;
        }
    };
    println!(
        "dht flood: answered again after the flood: {recovered} ({:?} after the start)",
        start.elapsed()
    );
    assert!(recovered, "the owner did not answer a Ping after the flood");

    assert_memory_bounded("dht flood", before, pair.alice.mem());
    honest.finish("dht flood");
}
