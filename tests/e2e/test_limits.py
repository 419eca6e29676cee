"""Limits under hostile peers and at scale (DESIGN.md §8b, "Hold under hostile peers and at scale").

- A flood of silent TCP connections (TLS never started) from thousands of sockets on many source
  addresses must not lock an allowed client out, must not grow the owner without bound, must be
  counted in `vx6 status --json` and must not be logged once per connection.
- A flood of real QUIC client Initials (each one makes the server do handshake work) likewise.
- One session carries 10 000 concurrent forwarded connections, each with its own 64 KiB echoed
  and checked, at a bounded memory cost per connection on both daemons.

Figures are printed as `METRIC name: value` lines (shown with `pytest -s`, and in the summary).
The only time limits are generous liveness deadlines; every wait has one, so a daemon that hangs
makes a test fail with what it saw, never hang the suite.

The QUIC flood needs the `aioquic` package (pip); without it that test is skipped.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import random
import re
import resource
import select
import selectors
import socket
import sys
import threading
import time

import pytest

from lab import _setns, echo_roundtrip, retry

KIB = 1024
MIB = 1 << 20

RSS_BOUND_MIB = 200  # a flood may cost the owner this much at most (generous)
LOGIN_DEADLINE_S = 20  # the allowed client's echo must get through a flood within this
FLOOD_LOG_LINES_MAX = 100  # owner log lines naming a flood address, for the whole flood
FLOOD_LOG_GROWTH_MAX = 500  # owner log lines of any kind written during the flood

TCP_FLOOD_CONNS = 5000  # silent connections held open at once
TCP_FLOOD_ATTEMPTS = 4 * TCP_FLOOD_CONNS  # connections opened at most (closed ones are reopened)
TCP_FLOOD_REOPEN_RATE = 500  # closed flood connections are opened again at most this fast (/s)
TCP_FLOOD_HOLD_S = 15  # how long the flood is held (a handshake deadline should fire within)

QUIC_FLOOD_INITIALS = 4000  # client Initials sent, each a new connection attempt
QUIC_FLOOD_RATE = 500  # Initials per second
QUIC_FLOOD_SOCKETS_PER_ADDR = 8  # source ports per source address

FLOOD_ADDRS = 64  # extra source addresses on the flood node

STREAMS = 10_000  # concurrent forwarded connections over one session
STREAM_BYTES = 64 * KIB  # echoed per connection
TRANSFER_WINDOW = 1000  # connections moving data at once (all STREAMS stay open throughout)
STREAM_RSS_BOUND_KIB = 64  # per connection per daemon, held idle (target 16 KiB: printed only)
STALL_S = 30  # no byte moved for this long: the daemons are stuck, fail


# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def metric(figure):
    """metric(name, value): prints `METRIC name: value` and lists it in the figures summary."""

    def rec(name, value):
        print(f"METRIC {name}: {value}", flush=True)
        figure(name, value)

    return rec


def rss_kib(pid):
    """VmRSS of a process in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every interval seconds in a thread; keeps the peak."""

    def __init__(self, pid, interval=0.25):
        self.pid = pid
        self.peak = rss_kib(pid) or 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True, name=f"rss-{pid}")
        self._t.start()

    def _run(self, interval):
        while not self._stop.wait(interval):
            r = rss_kib(self.pid)
            if r is not None:
                self.peak = max(self.peak, r)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.peak


def need_fds(n):
    """Raises this process's RLIMIT_NOFILE to at least n (daemons started later inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    want = max(n, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= n, (
        f"this test needs {n} open files in the test process and the daemons, but RLIMIT_NOFILE "
        f"is {soft} (hard {hard}) and cannot be raised: run with `ulimit -n {n}` or more"
    )


def add_flood_addresses(lab, flood_ns, owner_ns, n=FLOOD_ADDRS):
    """Gives the flood node n more IPv6 addresses (nodad) and returns them.

    They are spread over 8 /64 prefixes: one eighth in the lab's own /64 (the one the allowed
    client lives in, as an attacker on the client's LAN would be), the rest in 7 other /64s
    (fd6a:0:<lab>:f00k::/64) that the owner reaches on-link through one added route. So neither a
    per-address nor a per-/64 cap alone can tell the flood from the client."""
    idx = f"{lab.idx:x}"
    addrs = []
    for i in range(n):
        k = i % 8
        j = i // 8 + 1
        if k == 0:
            addrs.append(f"fd6a:0:{idx}::{0x1000 + j:x}")
        else:
            addrs.append(f"fd6a:0:{idx}:{0xf000 + k:x}::{j:x}")
    batch = "".join(f"address add {a}/128 dev eth0 nodad\n" for a in addrs)
    flood_ns.run(["ip", "-6", "-batch", "-"], input=batch)
    owner_ns.run(["ip", "-6", "route", "add", f"fd6a:0:{idx}:f000::/52", "dev", "eth0"])
    # prove one address of each kind works before relying on them (fails fast if the bed is broken)
    for src in (addrs[0], addrs[1]):
        _check_source(flood_ns, src, owner_ns.addr)
    return addrs


def _check_source(ns, src, dst, port=9):
    """Proves ns can open TCP from src to dst's namespace (dst must be a lab node address)."""

    def dial():
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.bind((src, 0))
            err = s.connect_ex((dst, port))
            # nothing listens on port 9: a reset proves the round trip works
            assert err in (0, errno.ECONNREFUSED), (
                f"from {src} to [{dst}]:{port}: {os.strerror(err)} (the flood's source addresses "
                "are not reachable from the owner)"
            )
        finally:
            s.close()

    ns.call(dial, timeout=15)


_V6_TOKEN = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}")


def log_lines_naming(text, addrs):
    """Lines of text that name any of addrs (IPv6, compared as addresses, not substrings)."""
    wanted = {ipaddress.ip_address(a) for a in addrs}
    hits = []
    for line in text.splitlines():
        for tok in _V6_TOKEN.findall(line):
            try:
                if ipaddress.ip_address(tok) in wanted:
                    hits.append(line)
                    break
            except ValueError:
                continue
    return hits


def assert_handshakes_in_flight(status):
    assert isinstance(status.get("handshakes_in_flight"), int), (
        f"`vx6 status --json` has no integer handshakes_in_flight: {status.get('handshakes_in_flight')!r}"
    )


def assert_flood_counted_not_logged(naming, log):
    """The owner's log during a flood: no line per flood connection (log once, count always)."""
    assert len(naming) < FLOOD_LOG_LINES_MAX, (
        f"the owner logged {len(naming)} lines naming flood addresses (at most {FLOOD_LOG_LINES_MAX}: "
        f"log once, count always), e.g.\n" + "\n".join(naming[:5])
    )
    assert len(log) < FLOOD_LOG_GROWTH_MAX, (
        f"the owner wrote {len(log)} log lines during the flood (at most {FLOOD_LOG_GROWTH_MAX}), "
        f"e.g.\n" + "\n".join(log[-5:])
    )


def handshake_counters(status, keys):
    """The named counters from `vx6 status --json`; fails naming what is missing."""
    counters = status.get("counters")
    assert isinstance(counters, dict), f"status has no counters object: {json.dumps(status)[:1500]}"
    missing = [k for k in keys if k not in counters]
    assert not missing, (
        f"`vx6 status --json` counters lack {missing} (the flood must show there); "
        f"counters are {counters}"
    )
    bad = {k: counters[k] for k in keys if not isinstance(counters[k], int)}
    assert not bad, f"counters that are not integers: {bad}"
    return {k: counters[k] for k in keys}


def status_summary(status):
    """A short text of a status document for messages (the session list can be thousands long)."""
    sessions = status.get("sessions", [])
    pending = sum(1 for s in sessions if not s.get("established"))
    return (
        f"{len(sessions)} session(s) ({pending} not established), counters {status.get('counters')}, "
        f"handshakes_in_flight {status.get('handshakes_in_flight')!r}"
    )


# --------------------------------------------------------------------------------------------
# the silent TCP flood


class TcpFlood:
    """Holds up to `conns` TCP connections from the flood namespace to dst; never sends a byte.

    Connections the owner closes (or fails) are opened again, up to `attempts` in all and at most
    `rate` new ones a second, so a daemon that merely times handshakes out still sees the flood go
    on. Runs in its own thread (inside the namespace) until stop()."""

    def __init__(self, ns, sources, dst, conns, attempts, rate=TCP_FLOOD_REOPEN_RATE):
        self.ns = ns
        self.sources = sources
        self.dst = dst
        self.conns = conns
        self.attempts_max = attempts
        self.rate = rate
        self.attempts = 0
        self.established = 0  # connects that completed
        self.closed_by_peer = 0  # established, then closed (EOF/reset) by the owner
        self.failed = 0  # connects that failed (refused, reset, timed out)
        self.open_now = 0
        self.peak_open = 0
        self.errors = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._exc = []
        self._t = threading.Thread(target=self._run, daemon=True, name="tcp-flood")

    def start(self):
        self._t.start()
        return self

    def _open(self, ep, socks, pending):
        src = self.sources[self.attempts % len(self.sources)]
        self.attempts += 1
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
            err = s.connect_ex(self.dst)
        except OSError as e:
            err = e.errno
        if err not in (0, errno.EINPROGRESS):
            self.failed += 1
            self.errors[os.strerror(err)] = self.errors.get(os.strerror(err), 0) + 1
            s.close()
            return
        socks[s.fileno()] = s
        pending.add(s.fileno())
        ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN | select.EPOLLRDHUP)

    def _run(self):
        try:
            _setns(self.ns.name)
            ep = select.epoll()
            socks, pending = {}, set()
            try:
                last_tick = time.monotonic()
                budget = float(self.conns)  # the first wave goes out at once
                while not self._stop.is_set():
                    now = time.monotonic()
                    # the first wave goes out at once; later ones at the reopen rate
                    cap = self.conns if self.attempts < self.conns else max(1.0, self.rate / 4)
                    budget = min(max(budget, 0.0) + (now - last_tick) * self.rate, max(cap, budget))
                    last_tick = now
                    while len(socks) < self.conns and self.attempts < self.attempts_max and budget >= 1:
                        self._open(ep, socks, pending)
                        budget -= 1
                    if self.attempts >= self.conns:
                        self._ready.set()
                    for fd, ev in ep.poll(0.05):
                        s = socks.get(fd)
                        if s is None:
                            continue
                        if fd in pending:
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err == 0 and not ev & (select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP):
                                pending.discard(fd)
                                self.established += 1
                                ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                                continue
                            if err == 0 and ev & select.EPOLLOUT:
                                # connected and already closed by the owner
                                self.established += 1
                                self.closed_by_peer += 1
                            else:
                                self.failed += 1
                                name = os.strerror(err) if err else "closed while connecting"
                                self.errors[name] = self.errors.get(name, 0) + 1
                        else:
                            self.closed_by_peer += 1
                        pending.discard(fd)
                        ep.unregister(fd)
                        del socks[fd]
                        s.close()
                    self.open_now = len(socks) - len(pending)
                    self.peak_open = max(self.peak_open, self.open_now)
            finally:
                for s in socks.values():
                    s.close()
                ep.close()
                self.open_now = 0
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._exc.append(e)
            self._ready.set()

    def wait_held(self, timeout, settle=3.0):
        """Waits until the first wave went out and then until most of it is held or the number
        held has stopped growing for settle seconds (a daemon that caps handshakes), at most
        timeout seconds in all."""
        deadline = time.monotonic() + timeout
        self._ready.wait(timeout)
        best, best_at = -1, time.monotonic()
        while time.monotonic() < deadline and not self._exc:
            now, held = time.monotonic(), self.open_now
            if held >= 0.9 * self.conns or now - best_at > settle:
                break
            if held > best:
                best, best_at = held, now
            time.sleep(0.1)
        if self._exc:
            raise self._exc[0]

    def stop(self):
        self._stop.set()
        self._t.join(30)
        if self._exc:
            raise self._exc[0]

    def summary(self):
        return (
            f"{self.attempts} opened, {self.established} connected, peak {self.peak_open} held at "
            f"once, {self.closed_by_peer} closed by the owner, {self.failed} failed {self.errors or ''}"
        )


@pytest.mark.timeout_s(240)
def test_silent_tcp_flood(lab, nodes, metric):
    need_fds(TCP_FLOOD_CONNS + 2000)
    o, c = nodes.owner_ns, nodes.client_ns
    flood_ns = lab.node("flood")
    lab.check_link(flood_ns, o)
    sources = add_flood_addresses(lab, flood_ns, o)

    lab.server(o, 7000)
    owner = lab.start_node(
        o, nodes.owner_home, transport="tcp", serve=["echo=127.0.0.1:7000"], allow=[nodes.client_home.id]
    )
    time.sleep(1)
    rss_before = rss_kib(owner.pid)
    log_before = len(owner.log().splitlines())
    sampler = RssSampler(owner.pid)

    port = int(owner.listen.rsplit(":", 1)[1])
    flood = TcpFlood(flood_ns, sources, (o.addr, port), TCP_FLOOD_CONNS, TCP_FLOOD_ATTEMPTS)
    lab.on_close(lambda: flood.stop())
    t_flood = time.monotonic()
    flood.start()
    flood.wait_held(timeout=15)
    held_at_login = flood.open_now
    print(f"flood before the client starts: {flood.summary()}", flush=True)

    # the allowed client arrives while the flood is held
    login_error = None
    login_s = None
    try:
        t0 = time.monotonic()
        lab.start_node(
            c,
            nodes.client_home,
            transport="tcp",
            forward=[f"{lab.target(owner, 'echo')}=127.0.0.1:7001"],
        )
        retry(lambda: echo_roundtrip(c, 7001, timeout=5), timeout=LOGIN_DEADLINE_S)
        login_s = time.monotonic() - t0
    except AssertionError as e:
        login_error = str(e)

    # keep the flood on long enough for a handshake deadline to fire at least once
    while time.monotonic() - t_flood < TCP_FLOOD_HOLD_S and owner.alive():
        time.sleep(0.2)
    owner_alive = owner.alive()
    status = owner.status(timeout=60) if owner_alive else {}
    summary = flood.summary()
    flood.stop()  # closes every flood connection: the owner sees thousands of EOFs at once
    time.sleep(2)
    rss_peak = sampler.stop()
    rss_after = rss_kib(owner.pid)
    log = owner.log().splitlines()[log_before:]
    naming = log_lines_naming("\n".join(log), sources)

    metric("tcp flood: connections", summary)
    metric("tcp flood: held when the client started", held_at_login)
    metric(
        "tcp flood: owner RSS before / peak / after",
        f"{rss_before / KIB:.1f} / {rss_peak / KIB:.1f} / "
        f"{(rss_after or 0) / KIB:.1f} MiB",
    )
    metric("tcp flood: client's first echo", f"{login_s:.2f} s" if login_s is not None else "never")
    metric("tcp flood: owner log lines written / naming a flood address", f"{len(log)} / {len(naming)}")
    if status:
        metric("tcp flood: owner status", status_summary(status))

    assert owner_alive, f"the owner daemon died under the flood\n{owner.tail()}"
    assert login_error is None, (
        f"the allowed client could not echo through the forward within {LOGIN_DEADLINE_S}s while "
        f"{held_at_login} silent connections were held ({summary}): {login_error}"
    )
    assert rss_peak < RSS_BOUND_MIB * KIB, (
        f"owner RSS reached {rss_peak / KIB:.1f} MiB under the flood (bound {RSS_BOUND_MIB} MiB; "
        f"{rss_before / KIB:.1f} MiB before)"
    )
    keys = ["handshakes_timed_out", "handshakes_evicted", "handshakes_refused"]
    got = handshake_counters(status, keys)
    assert_handshakes_in_flight(status)
    assert sum(got.values()) > 0, (
        f"{TCP_FLOOD_CONNS} silent connections were held for {TCP_FLOOD_HOLD_S}s, yet no handshake "
        f"was timed out, evicted or refused: {got} ({summary})"
    )
    assert_flood_counted_not_logged(naming, log)


# --------------------------------------------------------------------------------------------
# the QUIC Initial flood


def long_header_type(first_byte):
    """QUIC v1 long header packet type of a datagram's first byte (None for a short header)."""
    if not first_byte & 0x80:
        return None
    return ("initial", "0rtt", "handshake", "retry")[(first_byte & 0x30) >> 4]


class QuicFlood:
    """Sends pre-made client Initials from many UDP sockets (source address/port pairs) at a
    bounded rate; counts what comes back by packet type; never answers."""

    def __init__(self, socks, dst, initials, rate):
        self.socks = socks
        self.dst = dst
        self.initials = initials
        self.rate = rate
        self.sent = 0
        self.replies = {}
        self.reply_bytes = 0
        self.send_errors = 0
        self._stop = threading.Event()
        self._exc = []
        self._t = threading.Thread(target=self._run, daemon=True, name="quic-flood")

    def start(self):
        self._t.start()
        return self

    def _drain(self):
        for s in self.socks:
            while True:
                try:
                    d = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self.reply_bytes += len(d)
                kind = long_header_type(d[0]) if d else None
                self.replies[kind or "short"] = self.replies.get(kind or "short", 0) + 1

    def _run(self):
        try:
            t0 = time.monotonic()
            n = len(self.initials)
            while self.sent < n and not self._stop.is_set():
                due = min(n, int((time.monotonic() - t0) * self.rate) + 1)
                while self.sent < due:
                    s = self.socks[self.sent % len(self.socks)]
                    for d in self.initials[self.sent]:
                        try:
                            s.sendto(d, self.dst)
                        except OSError:
                            self.send_errors += 1
                    self.sent += 1
                self._drain()
                time.sleep(0.01)
            end = time.monotonic() + 2
            while time.monotonic() < end and not self._stop.is_set():
                self._drain()
                time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self._exc.append(e)

    def join(self, timeout):
        self._t.join(timeout)
        if self._t.is_alive():
            self._stop.set()
            self._t.join(10)
        if self._exc:
            raise self._exc[0]

    def stop(self):
        self._stop.set()
        self._t.join(10)
        for s in self.socks:
            s.close()

    def summary(self):
        return (
            f"{self.sent} Initials sent ({self.send_errors} send errors), replies "
            f"{dict(sorted(self.replies.items()))} ({self.reply_bytes} bytes)"
        )


def make_initials(dst, n):
    """n real client Initials (aioquic), each from a new connection: the datagrams to send."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    cfg = QuicConfiguration(is_client=True, alpn_protocols=["vx6/1"])
    out = []
    for _ in range(n):
        conn = QuicConnection(configuration=cfg)
        now = time.monotonic()
        conn.connect(dst, now)
        out.append([d for d, _ in conn.datagrams_to_send(now)])
    return out


@pytest.mark.timeout_s(240)
def test_quic_initial_flood(lab, nodes, metric):
    pytest.importorskip(
        "aioquic",
        reason="the QUIC Initial flood makes its Initials with aioquic: `pip install aioquic`",
    )
    o, c = nodes.owner_ns, nodes.client_ns
    flood_ns = lab.node("flood")
    lab.check_link(flood_ns, o)
    sources = add_flood_addresses(lab, flood_ns, o)
    need_fds(len(sources) * QUIC_FLOOD_SOCKETS_PER_ADDR + 2000)

    t0 = time.monotonic()
    dst = (o.addr, 4433)
    initials = make_initials(dst, QUIC_FLOOD_INITIALS)
    assert all(len(d) >= 1 and all(len(x) >= 1200 for x in d) for d in initials[:10]), (
        "aioquic made no padded Initial datagram"
    )
    print(f"made {len(initials)} Initials in {time.monotonic() - t0:.1f} s", flush=True)

    def mk_socks():
        socks = []
        for a in sources:
            for _ in range(QUIC_FLOOD_SOCKETS_PER_ADDR):
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s.bind((a, 0))
                s.setblocking(False)
                socks.append(s)
        return socks

    socks = flood_ns.call(mk_socks, timeout=30)
    random.shuffle(socks)

    lab.server(o, 7000)
    owner = lab.start_node(
        o, nodes.owner_home, transport="quic", serve=["echo=127.0.0.1:7000"], allow=[nodes.client_home.id]
    )
    time.sleep(1)
    rss_before = rss_kib(owner.pid)
    log_before = len(owner.log().splitlines())
    sampler = RssSampler(owner.pid)

    flood = QuicFlood(socks, dst, initials, QUIC_FLOOD_RATE)
    lab.on_close(flood.stop)
    flood.start()
    # the allowed client arrives when half of the flood is out, and it keeps coming
    deadline = time.monotonic() + 30
    while flood.sent < QUIC_FLOOD_INITIALS // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent_at_login = flood.sent

    login_error = None
    login_s = None
    try:
        t0 = time.monotonic()
        client = lab.start_node(
            c,
            nodes.client_home,
            transport="quic",
            forward=[f"{lab.target(owner, 'echo')}=127.0.0.1:7001"],
        )
        retry(lambda: echo_roundtrip(c, 7001, timeout=5), timeout=LOGIN_DEADLINE_S)
        login_s = time.monotonic() - t0
    except AssertionError as e:
        login_error = str(e)
    sent_at_echo = flood.sent

    flood.join(timeout=QUIC_FLOOD_INITIALS / QUIC_FLOOD_RATE + 30)
    owner_alive = owner.alive()
    status = owner.status(timeout=60) if owner_alive else {}
    # a new handshake right after the whole flood (the most handshakes are in flight now): the
    # client daemon restarts, so its session is new
    after_error = None
    after_s = None
    if owner_alive and login_error is None:
        client.stop(timeout=10)
        try:
            t0 = time.monotonic()
            lab.start_node(
                c,
                nodes.client_home,
                transport="quic",
                forward=[f"{lab.target(owner, 'echo')}=127.0.0.1:7001"],
            )
            retry(lambda: echo_roundtrip(c, 7001, timeout=5), timeout=LOGIN_DEADLINE_S)
            after_s = time.monotonic() - t0
        except AssertionError as e:
            after_error = str(e)
    rss_peak = sampler.stop()
    rss_after = rss_kib(owner.pid)
    log = owner.log().splitlines()[log_before:]
    naming = log_lines_naming("\n".join(log), sources)

    metric("quic flood", flood.summary())
    metric("quic flood: Initials sent when the client started / echoed", f"{sent_at_login} / {sent_at_echo}")
    metric(
        "quic flood: owner RSS before / peak / after",
        f"{rss_before / KIB:.1f} / {rss_peak / KIB:.1f} / {(rss_after or 0) / KIB:.1f} MiB",
    )
    metric("quic flood: client's first echo", f"{login_s:.2f} s" if login_s is not None else "never")
    metric("quic flood: restarted client's first echo after the flood", f"{after_s:.2f} s" if after_s is not None else "never")
    metric("quic flood: owner log lines written / naming a flood address", f"{len(log)} / {len(naming)}")
    if status:
        metric("quic flood: owner status", status_summary(status))

    assert owner_alive, f"the owner daemon died under the flood\n{owner.tail()}"
    assert flood.replies, (
        f"the owner answered none of {flood.sent} Initials: the flood did not reach it, the test is "
        "broken"
    )
    assert login_error is None, (
        f"the allowed client could not echo through the forward within {LOGIN_DEADLINE_S}s during "
        f"a flood of QUIC Initials ({flood.summary()}): {login_error}"
    )
    assert after_error is None, (
        f"right after the flood ({flood.summary()}), the restarted client could not echo through "
        f"the forward within {LOGIN_DEADLINE_S}s: {after_error}"
    )
    assert rss_peak < RSS_BOUND_MIB * KIB, (
        f"owner RSS reached {rss_peak / KIB:.1f} MiB under the flood (bound {RSS_BOUND_MIB} MiB; "
        f"{rss_before / KIB:.1f} MiB before)"
    )
    counters = status.get("counters") or {}
    keys = ["quic_retries", "handshakes_evicted", "handshakes_refused", "handshakes_timed_out"]
    present = {k: counters[k] for k in keys if k in counters}
    assert present, (
        f"`vx6 status --json` counters have none of {keys} (the flood must show there); counters "
        f"are {counters}"
    )
    assert_handshakes_in_flight(status)
    assert sum(present.values()) > 0, (
        f"{flood.sent} QUIC Initials arrived, yet no Retry was sent and no handshake was evicted, "
        f"refused or timed out: {present} ({flood.summary()})"
    )
    assert_flood_counted_not_logged(naming, log)


# --------------------------------------------------------------------------------------------
# 10 000 concurrent streams over one session

# An echo server for many connections: one thread, selectors; run as its own process in the
# owner's namespace (the test process holds the other 10 000 sockets).
ECHO_SERVER = r"""
import selectors, socket, sys
port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(4096)
ls.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(ls, selectors.EVENT_READ)
pending = {}
accepted = 0

def close(s):
    pending.pop(s, None)
    try:
        sel.unregister(s)
    except (KeyError, ValueError):
        pass
    s.close()

while True:
    for key, ev in sel.select():
        s = key.fileobj
        if s is ls:
            for _ in range(512):
                try:
                    c, _ = ls.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    print(f"accept: {e}", file=sys.stderr, flush=True)
                    break
                accepted += 1
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
            continue
        if s in pending:
            buf = pending[s]
            try:
                n = s.send(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                close(s)
                continue
            del buf[:n]
            if not buf:
                del pending[s]
                sel.modify(s, selectors.EVENT_READ)
            continue
        try:
            d = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            close(s)
            continue
        if not d:
            close(s)
            continue
        try:
            n = s.send(d)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            close(s)
            continue
        if n < len(d):
            pending[s] = bytearray(d[n:])
            sel.modify(s, selectors.EVENT_WRITE)  # read no more until this is out
"""


def open_connections(ns, port, n, batch=500, timeout=60):
    """n TCP connections to 127.0.0.1:port made inside ns, opened batch by batch (non-blocking
    connects, each batch waited for). Returns the sockets; fails with a count if some never
    connect within timeout."""
    socks = []

    def mk(k):
        out = []
        for _ in range(k):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                raise OSError(err, f"connect to 127.0.0.1:{port}: {os.strerror(err)}")
            out.append(s)
        return out

    deadline = time.monotonic() + timeout
    try:
        while len(socks) < n:
            new = ns.call(mk, min(batch, n - len(socks)), timeout=60)
            socks += new
            waiting = set(new)
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"only {len(socks) - len(waiting)} of {n} connections to the forward port "
                        f"127.0.0.1:{port} were established within {timeout}s"
                    )
                poller = select.poll()
                byfd = {s.fileno(): s for s in waiting}
                for fd in byfd:
                    poller.register(fd, select.POLLOUT)
                w = [byfd[fd] for fd, _ in poller.poll(min(left, 1.0) * 1000)]
                for s in w:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise AssertionError(
                            f"while opening {n} connections to the forward port 127.0.0.1:{port}, "
                            f"one of the batch after the first {len(socks) - len(waiting)} failed: "
                            f"{os.strerror(err)}"
                        )
                    waiting.discard(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


class EchoCheck:
    """One connection's state: sends its slice of the pool, hashes what comes back."""

    __slots__ = ("sock", "data", "sent", "got", "h", "want", "done", "error")

    def __init__(self, sock, data):
        self.sock = sock
        self.data = data
        self.sent = 0
        self.got = 0
        self.h = hashlib.sha256()
        self.want = hashlib.sha256(data).digest()
        self.done = False
        self.error = None


def echo_all(conns, pids, window=TRANSFER_WINDOW, stall_s=STALL_S, deadline_s=240):
    """Runs every EchoCheck, at most window at once, in one selectors loop. Returns the RSS peaks
    {pid: KiB}; fails (without hanging) if bytes stop moving for stall_s seconds."""
    sel = selectors.DefaultSelector()
    todo = list(conns)
    todo.reverse()
    active = 0
    done = 0
    moved = 0
    peaks = {p: rss_kib(p) or 0 for p in pids}
    t0 = last_progress = last_rss = time.monotonic()

    def finish(ck):
        nonlocal active, done
        sel.unregister(ck.sock)
        active -= 1
        done += 1
        ck.done = True

    try:
        while done < len(conns):
            while active < window and todo:
                ck = todo.pop()
                sel.register(ck.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ck)
                active += 1
            now = time.monotonic()
            if now - last_rss >= 1.0:
                for p in pids:
                    peaks[p] = max(peaks[p], rss_kib(p) or 0)
                last_rss = now
            if now - last_progress > stall_s or now - t0 > deadline_s:
                started = [c for c in conns if c.sent or c.got]
                echoed = sorted(c.got for c in started if not c.done)
                first_stuck = next((i for i, c in enumerate(conns) if not c.done), None)
                why = "no byte moved for" if now - last_progress > stall_s else "still running after"
                raise AssertionError(
                    f"{why} {stall_s if now - last_progress > stall_s else deadline_s}s: "
                    f"{done} of {len(conns)} connections got their {STREAM_BYTES // KIB} KiB echo "
                    f"back; {len(started) - done} started but incomplete (echoed bytes min "
                    f"{echoed[0] if echoed else '-'} max {echoed[-1] if echoed else '-'}); "
                    f"{len(conns) - len(started)} not started; first incomplete is connection "
                    f"#{first_stuck} (0-based, in opening order)"
                )
            for key, ev in sel.select(timeout=0.5):
                ck = key.data
                s = ck.sock
                if ev & selectors.EVENT_WRITE and ck.sent < len(ck.data):
                    try:
                        n = s.send(ck.data[ck.sent : ck.sent + 65536])
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError as e:
                        ck.error = f"send: {e}"
                        finish(ck)
                        continue
                    ck.sent += n
                    moved += n
                    if n:
                        last_progress = time.monotonic()
                    if ck.sent == len(ck.data):
                        sel.modify(s, selectors.EVENT_READ, ck)
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        ck.error = f"recv after {ck.got} bytes: {e}"
                        finish(ck)
                        continue
                    if not d:
                        ck.error = f"closed after {ck.got} of {len(ck.data)} echoed bytes"
                        finish(ck)
                        continue
                    ck.h.update(d)
                    ck.got += len(d)
                    moved += len(d)
                    last_progress = time.monotonic()
                    if ck.got >= len(ck.data):
                        if ck.got > len(ck.data):
                            ck.error = f"{ck.got} bytes echoed for {len(ck.data)} sent"
                        elif ck.h.digest() != ck.want:
                            ck.error = "the echo differs from what was sent (sha256)"
                        finish(ck)
    finally:
        sel.close()
    return peaks


@pytest.mark.timeout_s(420)
def test_ten_thousand_streams(lab, nodes, transport, metric):
    n = STREAMS
    # the test process holds n sockets; each daemon holds n (it inherits this limit)
    need_fds(n + 1000)
    o, c = nodes.owner_ns, nodes.client_ns

    srv = lab.spawn("echo-server", o, [sys.executable, "-c", ECHO_SERVER, "7000"])
    o.wait_listening(7000, what="echo server")
    owner = lab.start_node(
        o, nodes.owner_home, transport=transport, serve=["echo=127.0.0.1:7000"], allow=[nodes.client_home.id]
    )
    client = lab.start_node(
        c, nodes.client_home, transport=transport, forward=[f"{lab.target(owner, 'echo')}=127.0.0.1:7001"]
    )
    # the session is up and has carried a stream before the baseline is taken
    s = c.connect(7001)
    try:
        s.settimeout(10)
        s.sendall(b"hello")
        assert s.recv(5) == b"hello", "no echo through the forward"
    finally:
        s.close()
    time.sleep(1)
    pids = {"client": client.pid, "owner": owner.pid}
    before = {k: rss_kib(p) for k, p in pids.items()}

    pool = os.urandom(4 * MIB)
    view = memoryview(pool)
    offsets = random.sample(range(len(pool) - STREAM_BYTES), n)  # distinct: no two streams alike

    socks = []
    lab.on_close(lambda: [x.close() for x in socks])
    try:
        t0 = time.monotonic()
        socks += open_connections(c, 7001, n)
        t_open = time.monotonic() - t0
        conns = [EchoCheck(sk, view[off : off + STREAM_BYTES]) for sk, off in zip(socks, offsets)]
        t0 = time.monotonic()
        peaks = echo_all(conns, list(pids.values()))
    except AssertionError as e:
        st = client.status(timeout=60) if client.alive() else {}
        sess = [x for x in st.get("sessions", []) if x.get("peer") == nodes.owner_home.id]
        raise AssertionError(
            f"{e}\nclient status: sessions to the owner {[(x.get('streams'), x.get('established')) for x in sess]}, "
            f"streams {st.get('streams')!r}, counters {st.get('counters')}; "
            f"client alive {client.alive()}, owner alive {owner.alive()}, echo server alive {srv.alive()}"
        ) from None
    t_echo = time.monotonic() - t0
    bad = [(i, ck.error) for i, ck in enumerate(conns) if ck.error]
    causes = [l for l in client.log().splitlines() if " closed: " in l][:5]
    assert not bad, f"{len(bad)} of {n} connections failed, e.g. {bad[:5]}; client log: {causes}"
    assert all(ck.done and ck.got == STREAM_BYTES for ck in conns)

    # all n stay open; measure both daemons held idle
    time.sleep(3)
    held = {}
    for k, p in pids.items():
        samples = []
        for _ in range(3):
            samples.append(rss_kib(p) or 0)
            time.sleep(0.5)
        held[k] = min(samples)
        peaks[p] = max([peaks[p], *samples])
    st = client.status(timeout=60)
    ost = owner.status(timeout=60)
    sess = [x for x in st.get("sessions", []) if x.get("peer") == nodes.owner_home.id]
    osess = [x for x in ost.get("sessions", []) if x.get("peer") == nodes.client_home.id]

    metric(f"{n} streams {transport}: open all", f"{t_open:.1f} s")
    metric(f"{n} streams {transport}: {STREAM_BYTES // KIB} KiB echo each", f"{t_echo:.1f} s")
    per = {}
    for k in pids:
        per[k] = (held[k] - before[k]) / n
        metric(
            f"{n} streams {transport}: {k} RSS before / peak / held idle",
            f"{before[k] / KIB:.1f} / {peaks[pids[k]] / KIB:.1f} / {held[k] / KIB:.1f} MiB",
        )
        metric(f"{n} streams {transport}: {k} RSS per held connection", f"{per[k]:.1f} KiB (target 16 KiB)")
    metric(
        f"{n} streams {transport}: status streams client / owner",
        f"{[x.get('streams') for x in sess]} / {[x.get('streams') for x in osess]}",
    )

    assert len(sess) == 1, (
        f"the client lists {len(sess)} sessions with the owner (expected one carrying all): "
        f"{[(x.get('id'), x.get('streams'), x.get('remote')) for x in sess]}"
    )
    assert isinstance(sess[0].get("streams"), int) and sess[0]["streams"] >= n, (
        f"{n} forwarded connections are open, but the client's session shows "
        f"streams = {sess[0].get('streams')!r}"
    )
    for k in pids:
        assert per[k] < STREAM_RSS_BOUND_KIB, (
            f"the {k} daemon holds {per[k]:.1f} KiB per idle connection ({before[k] / KIB:.1f} -> "
            f"{held[k] / KIB:.1f} MiB for {n}); bound {STREAM_RSS_BOUND_KIB} KiB"
        )
    assert srv.alive(), f"the echo server died\n{srv.tail()}"
