"""Test bed for the VX6 end-to-end suite: network namespaces, vx6 daemons, target servers.

Everything here is plain stdlib. It needs root (ip netns, veth, bridges).

Topology: every test gets its own *lab*: a switch namespace holding a bridge, and one namespace
per node, each joined to the bridge by a veth pair and given fd6a:0:<lab>::<n>/64 (nodad). Names
carry the pid of the pytest process, so concurrent or repeated runs never collide, and
namespaces left behind by a killed run are swept on the next start (see sweep_stale_namespaces).

Python code can work inside a namespace without a helper process: Netns.call() runs a function
in a fresh thread that first setns(2)s into the namespace; sockets made there stay in it, so the
pytest process can serve and dial on the nodes' own loopbacks (per-thread network namespace).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VX6_BIN = os.environ.get("VX6_BIN", str(REPO / "target" / "release" / "vx6"))
NODE_ID_RE = re.compile(r"^[a-z2-7]{52}$")
NS_PREFIX = "vx6e"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_lab_counter = itertools.count(1)


# --------------------------------------------------------------------------------------------
# processes


def run(argv, *, timeout=30, check=True, input=None, env=None):
    """Runs argv, captures output (text), fails with both streams on non-zero exit/timeout."""
    try:
        cp = subprocess.run(
            [str(a) for a in argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"command timed out after {timeout}s: {' '.join(map(str, argv))}\n"
            f"stdout: {_text(e.stdout)[-2000:]}\nstderr: {_text(e.stderr)[-2000:]}"
        ) from None
    if check and cp.returncode != 0:
        raise AssertionError(
            f"command failed (exit {cp.returncode}): {' '.join(map(str, argv))}\n"
            f"stdout: {cp.stdout[-2000:]}\nstderr: {cp.stderr[-2000:]}"
        )
    return cp


def run_io(argv, *, stdin=None, stdout=None, timeout=300):
    """Runs argv with stdin/stdout bound to open files; stderr captured; fails on non-zero exit."""
    try:
        cp = subprocess.run(
            [str(a) for a in argv],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"command timed out after {timeout}s: {' '.join(map(str, argv))}\n"
            f"stderr: {_text(e.stderr)[-2000:]}"
        ) from None
    if cp.returncode != 0:
        raise AssertionError(
            f"command failed (exit {cp.returncode}): {' '.join(map(str, argv))}\n"
            f"stderr: {_text(cp.stderr)[-2000:]}"
        )
    return cp


def _text(b):
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def tail(path, n=40):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(lines[-n:]) if lines else "(empty)"


class Proc:
    """A process started in a namespace, with stdout/stderr going to files (or stdout piped)."""

    def __init__(self, name, ns, argv, logdir, *, pipe_stdout=False):
        self.name = name
        self.ns = ns
        self.argv = [str(a) for a in argv]
        self.stderr_path = Path(logdir) / f"{name}.stderr"
        self.stdout_path = Path(logdir) / f"{name}.stdout"
        self._err = open(self.stderr_path, "ab")
        self._out = None if pipe_stdout else open(self.stdout_path, "ab")
        full = ns.cmd(self.argv) if ns is not None else self.argv
        # `ip netns exec` execs the program, so self.pid is the program's own pid.
        self.popen = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._out,
            stderr=self._err,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit code (None if unknown)."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        self._close_files()
        return self.popen.returncode

    def kill9(self):
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        for f in (self._err, self._out):
            if f is not None and not f.closed:
                f.close()
        if self.popen.stdout is not None and self.popen.poll() is not None:
            try:
                self.popen.stdout.close()
            except OSError:
                pass

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=40):
        return tail(self.stderr_path, n)

    def wait_log(self, needle, timeout=10.0):
        """Waits until stderr contains needle (case-insensitive); fails with the log tail."""
        deadline = time.monotonic() + timeout
        low = needle.lower()
        while True:
            if low in self.log().lower():
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: log never said {needle!r} within {timeout}s; "
                    f"stderr tail:\n{self.tail()}"
                )
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# namespaces


def _setns(name):
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Netns:
    def __init__(self, name, addr=None):
        self.name = name
        self.addr = addr  # IPv6 address on the lab's link, or None for the switch

    def __repr__(self):
        return f"Netns({self.name}, {self.addr})"

    def cmd(self, argv):
        return ["ip", "netns", "exec", self.name, *[str(a) for a in argv]]

    def run(self, argv, **kw):
        return run(self.cmd(argv), **kw)

    def call(self, fn, *args, timeout=60, **kwargs):
        """Runs fn(*args, **kwargs) in a new thread that lives in this namespace; returns its
        result or re-raises its exception; fails if it takes longer than timeout."""
        box = {}

        def body():
            try:
                _setns(self.name)
                box["ok"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["err"] = e

        t = threading.Thread(target=body, daemon=True, name=f"ns-{self.name}")
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"{getattr(fn, '__name__', fn)} in {self.name} still running after {timeout}s")
        if "err" in box:
            raise box["err"]
        return box.get("ok")

    def connect(self, port, host="127.0.0.1", timeout=10.0):
        """A TCP connection made from inside this namespace."""

        def dial():
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect((host, port))
            except BaseException:
                s.close()
                raise
            return s

        return self.call(dial, timeout=timeout + 5)

    def listen(self, port, host="127.0.0.1", backlog=1024):
        def mk():
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(backlog)
            return s

        return self.call(mk, timeout=10)

    def wait_listening(self, port, timeout=10.0, what="listener"):
        """Waits until something listens on TCP port in this namespace (via ss; connects nothing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cp = self.run(["ss", "-Hltn", f"sport = :{port}"], check=False)
            if cp.stdout.strip():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}: nothing listens on TCP port {port} in {self.name} after {timeout}s")

    def wait_port(self, port, host="127.0.0.1", timeout=10.0, what="port"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self.connect(port, host, timeout=1.0).close()
                return
            except OSError as e:
                last = e
                time.sleep(0.1)
        raise AssertionError(f"{what} {host}:{port} in {self.name} not reachable after {timeout}s: {last}")


def existing_namespaces():
    cp = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def delete_namespace(name):
    """Kills whatever still runs in the namespace (only our own test namespaces) and deletes it."""
    cp = run(["ip", "netns", "pids", name], check=False)
    for pid in cp.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "del", name], check=False)


def sweep_stale_namespaces():
    """Deletes namespaces of earlier runs of this suite whose pytest process is gone."""
    pat = re.compile(rf"^{NS_PREFIX}-(\d+)-")
    for name in existing_namespaces():
        m = pat.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            delete_namespace(name)


# --------------------------------------------------------------------------------------------
# vx6


class Home:
    """A vx6 home directory (identity) made by `vx6 init`."""

    def __init__(self, path, name):
        self.path = Path(path)
        self.name = name
        cp = run([VX6_BIN, "init", "--home", self.path, "--name", name], timeout=30)
        idc = run([VX6_BIN, "id", "--home", self.path], timeout=30)
        first = idc.stdout.splitlines()[0].strip() if idc.stdout.strip() else ""
        assert NODE_ID_RE.match(first), f"`vx6 id` first line is not a NodeId: {idc.stdout!r}"
        printed = cp.stdout.strip().splitlines()
        assert printed and printed[0].strip() == first, (
            f"`vx6 init` printed {cp.stdout!r}, `vx6 id` says {first}"
        )
        self.id = first

    def __repr__(self):
        return f"Home({self.name}, {self.id})"


class Daemon(Proc):
    """A running `vx6 node`."""

    def __init__(self, name, ns, home, argv, logdir, listen):
        self.home = home
        self.listen = listen
        self.stdout_lines = []
        self.ready_line = None
        self._ready = threading.Event()
        super().__init__(name, ns, argv, logdir, pipe_stdout=True)
        threading.Thread(target=self._read_stdout, daemon=True, name=f"stdout-{name}").start()

    def _read_stdout(self):
        out = self.popen.stdout
        with open(self.stdout_path, "ab") as copy:
            for raw in iter(out.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                self.stdout_lines.append(line)
                copy.write(raw)
                copy.flush()
                if self.ready_line is None and line.startswith("ready"):
                    self.ready_line = line
                    self._ready.set()
        self._ready.set()  # EOF: wake the waiter

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if time.monotonic() > deadline:
                self.kill9()
                raise AssertionError(
                    f"{self.name}: no `ready` line on stdout within {timeout}s\n"
                    f"command: {' '.join(self.argv)}\nstdout: {self.stdout_lines}\n"
                    f"stderr tail:\n{self.tail()}"
                )
        if self.ready_line is None:
            self.popen.wait(5)
            raise AssertionError(
                f"{self.name}: exited (code {self.popen.returncode}) before printing `ready`\n"
                f"command: {' '.join(self.argv)}\nstdout: {self.stdout_lines}\n"
                f"stderr tail:\n{self.tail()}"
            )
        want = f"ready {self.home.id}"
        assert self.ready_line == want, (
            f"{self.name}: ready line is {self.ready_line!r}, expected exactly {want!r}"
        )

    def status(self, as_json=True, timeout=15):
        argv = [VX6_BIN, "status", "--home", self.home.path] + (["--json"] if as_json else [])
        cp = self.ns.run(argv, timeout=timeout, check=False)
        assert cp.returncode == 0, (
            f"`vx6 status` for {self.name} failed (exit {cp.returncode}): {cp.stderr.strip()}"
        )
        if not as_json:
            return cp.stdout
        try:
            return json.loads(cp.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"`vx6 status --json` printed invalid JSON ({e}): {cp.stdout[:2000]!r}")


class Lab:
    """One test's namespaces and every process started in them; close() tears all down."""

    def __init__(self, tmpdir):
        self.idx = next(_lab_counter)
        self.prefix = f"{NS_PREFIX}-{os.getpid()}-{self.idx}"
        self.dir = Path(tmpdir)
        self.logdir = self.dir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.namespaces = []
        self.nodes = {}
        self.procs = []
        self.servers = []
        self._closers = []
        self._homes = 0
        # fn(ns, n) called after node() made a public node n (natlab adds IPv4 and site routes)
        self.node_hooks = []
        self.sw = self._add_ns("sw", None)
        self.sw.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.sw.run(["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
        self.sw.run(["ip", "link", "set", "br0", "up"])

    def _add_ns(self, role, addr):
        ns = Netns(f"{self.prefix}-{role}", addr)
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def node(self, role):
        """A new namespace on the lab's link with its own IPv6 address (fd6a:0:<lab>::<n>)."""
        n = len(self.nodes) + 1
        addr = f"fd6a:0:{self.idx:x}::{n}"
        ns = self._add_ns(role, addr)
        port = f"p{n}"
        ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.sw.name])
        self.sw.run(["ip", "link", "set", port, "master", "br0", "up"])
        ns.run(["ip", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad"])
        ns.run(["ip", "link", "set", "eth0", "up"])
        self.nodes[role] = ns
        for hook in self.node_hooks:
            hook(ns, n)
        return ns

    def check_link(self, a, b, port=9):
        """Proves a can open TCP to b's lab address (fails fast if the bed is broken)."""
        ls = b.listen(port, host=b.addr)
        try:
            a.connect(port, host=b.addr, timeout=5).close()
        finally:
            ls.close()

    # ---- vx6

    def home(self, name):
        """A fresh vx6 identity (new key) under the lab's directory."""
        self._homes += 1
        path = self.dir / "homes" / f"{self._homes}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return Home(path, name)

    def start_node(
        self,
        ns,
        home,
        *,
        transport,
        port=4433,
        listen_host=None,
        serve=(),
        allow=(),
        public=False,
        forward=(),
        extra=(),
        name=None,
        ready_timeout=30.0,
        binary=None,
    ):
        """`binary`: the command that runs vx6 (default [VX6_BIN]; e.g. qemu and a cross build)."""
        host = listen_host or ns.addr
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv4 behind a NAT
        argv = list(binary or [VX6_BIN]) + [
            "node", "--home", home.path, "--listen", listen, "--transport", transport,
        ]
        for s in serve:
            argv += ["--serve", s]
        for a in allow:
            argv += ["--allow", a]
        if public:
            argv.append("--public")
        for f in forward:
            argv += ["--forward", f]
        argv += list(extra)
        name = name or f"vx6-{home.name}"
        # a restarted node appends to the same log files; mark the restart
        with open(self.logdir / f"{name}.stderr", "ab") as f:
            f.write(f"---- start {time.strftime('%H:%M:%S')}: {' '.join(map(str, argv))}\n".encode())
        d = Daemon(name, ns, home, argv, self.logdir, listen)
        self.procs.append(d)
        d.wait_ready(ready_timeout)
        return d

    @staticmethod
    def target(owner, service, *, with_id=True, node_id=None):
        """`[NODEID@][addr]:port/service` for a running owner daemon."""
        ident = node_id or (owner.home.id if with_id else None)
        return f"{ident + '@' if ident else ''}{owner.listen}/{service}"

    # ---- other processes

    def spawn(self, name, ns, argv):
        p = Proc(name, ns, argv, self.logdir)
        self.procs.append(p)
        return p

    def server(self, ns, port, host="127.0.0.1"):
        s = TargetServer(ns, port, host)
        self.servers.append(s)
        return s

    def on_close(self, fn):
        self._closers.append(fn)

    def logs(self, n=40):
        """(name, tail) of every process, for failure reports."""
        return [(p.name, p.tail(n)) for p in self.procs]

    def close(self):
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        for s in self.servers:
            s.close()
        for ns in reversed(self.namespaces):
            delete_namespace(ns.name)


# --------------------------------------------------------------------------------------------
# target server (runs in the pytest process, listening inside a namespace)


def recv_exact(s, n):
    chunks = []
    while n:
        d = s.recv(min(n, 1 << 20))
        if not d:
            raise ConnectionError(f"closed with {n} bytes still expected")
        chunks.append(d)
        n -= len(d)
    return b"".join(chunks)


class TargetServer:
    """The service behind a forward. Counts accepted connections (accepts), open ones (active)
    and the most open at once (peak). The first byte of a connection picks the mode:
      'E'  echo everything back until EOF
      'X'  exchange: the client sends up_len (8 bytes, big endian), down_len (8), then up_len
           bytes; meanwhile the server sends down_len random bytes; then the server sends
           sha256(what it received) + sha256(what it sent) and waits for the client's EOF.
    """

    def __init__(self, ns, port, host="127.0.0.1"):
        self.ns = ns
        self.port = port
        self.accepts = 0
        self.active = 0
        self.peak = 0
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ls = ns.listen(port, host)
        self._ls.settimeout(0.2)
        self._conns = set()
        threading.Thread(target=self._accept_loop, daemon=True, name=f"srv-{port}").start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepts += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                self._conns.add(c)
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c):
        try:
            c.settimeout(120)
            mode = c.recv(1)
            if mode == b"E":
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    c.sendall(d)
            elif mode == b"X":
                hdr = recv_exact(c, 16)
                up, down = int.from_bytes(hdr[:8], "big"), int.from_bytes(hdr[8:], "big")
                sent = hashlib.sha256()
                send_err = []

                def sender():
                    try:
                        left = down
                        while left:
                            chunk = os.urandom(min(left, 65536))
                            sent.update(chunk)
                            c.sendall(chunk)
                            left -= len(chunk)
                    except OSError as e:
                        send_err.append(e)

                t = threading.Thread(target=sender, daemon=True)
                t.start()
                got = hashlib.sha256()
                left = up
                while left:
                    d = c.recv(min(left, 65536))
                    if not d:
                        raise ConnectionError(f"client closed with {left} upload bytes missing")
                    got.update(d)
                    left -= len(d)
                t.join(120)
                if send_err:
                    raise send_err[0]
                c.sendall(got.digest() + sent.digest())
                while c.recv(65536):
                    pass
        except OSError as e:
            with self._lock:
                self.errors.append(repr(e))
        finally:
            with self._lock:
                self.active -= 1
                self._conns.discard(c)
            c.close()

    def close(self):
        self._stop.set()
        try:
            self._ls.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# client-side checks (run from inside a namespace via Netns.call / connect)


def echo_roundtrip(ns, port, payload=None, timeout=10.0):
    """Connects to 127.0.0.1:port in ns, sends 'E'+payload, expects payload back."""
    payload = payload if payload is not None else os.urandom(4096)
    s = ns.connect(port, timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(b"E" + payload)
        got = recv_exact(s, len(payload))
        assert got == payload, "echo came back different"
    finally:
        s.close()


def exchange(s, up, down, timeout=60.0):
    """Runs the 'X' exchange on an open socket; returns nothing, raises on any mismatch."""
    s.settimeout(timeout)
    data = os.urandom(up)
    err = []

    def sender():
        try:
            s.sendall(b"X" + up.to_bytes(8, "big") + down.to_bytes(8, "big"))
            view = memoryview(data)
            for i in range(0, len(data), 65536):
                s.sendall(view[i : i + 65536])
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    recv_hash = hashlib.sha256()
    left = down
    while left:
        d = s.recv(min(left, 65536))
        if not d:
            raise ConnectionError(f"closed with {left} of {down} download bytes missing")
        recv_hash.update(d)
        left -= len(d)
    digests = recv_exact(s, 64)
    t.join(timeout)
    if err:
        raise err[0]
    assert digests[:32] == hashlib.sha256(data).digest(), "server's hash of the upload differs"
    assert digests[32:] == recv_hash.digest(), "download differs from what the server sent"


def expect_closed(ns, port, timeout=10.0):
    """Connects to a forward's local port and expects the daemon to close it without any data
    from the service (EOF or reset). Fails if nothing listens there, if the echo service answers,
    or if the connection stays open for timeout seconds."""
    try:
        s = ns.connect(port, timeout=5)
    except ConnectionRefusedError:
        raise AssertionError(
            f"nothing listens on the forward's local port 127.0.0.1:{port} in {ns.name}"
        ) from None
    except ConnectionResetError:
        # The daemon accepted and reset the connection before connect() returned: closed.
        return "reset"
    try:
        s.settimeout(timeout)
        try:
            s.sendall(b"E" + b"are you there?")
        except OSError:
            return "reset"
        while True:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            except socket.timeout:
                raise AssertionError(
                    f"forwarded connection on 127.0.0.1:{port} was neither refused nor closed "
                    f"within {timeout}s"
                ) from None
            if not d:
                return "eof"
            raise AssertionError(
                f"forwarded connection on 127.0.0.1:{port} was expected to be refused, but the "
                f"service answered {d[:40]!r}"
            )
    finally:
        s.close()


def retry(fn, timeout, interval=0.3):
    """Calls fn until it returns without raising; re-raises the last error after timeout."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn(), attempts
        except (AssertionError, OSError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"still failing after {timeout}s ({attempts} attempts): {e}") from e
            time.sleep(interval)


# --------------------------------------------------------------------------------------------
# OpenSSH


class Sshd:
    """OpenSSH's sshd on 127.0.0.1:port inside a namespace, with a generated host key and one
    authorized client key (for root). ssh_argv() gives the client command line."""

    def __init__(self, lab, ns, port=22):
        self.ns = ns
        self.port = port
        d = lab.dir / f"sshd-{ns.name.rsplit('-', 1)[-1]}"
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host_key"])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "client_key"])
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o600)
        cfg = d / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {d / 'host_key'}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "UseDNS no",
                    "MaxStartups 100:30:200",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        run([sshd, "-t", "-f", cfg])
        self.proc = lab.spawn(f"sshd-{ns.name.rsplit('-', 1)[-1]}", ns, [sshd, "-D", "-e", "-f", cfg])
        ns.wait_port(port, what="sshd")
        self.client_key = d / "client_key"

    def ssh_argv(self, port, command, host="127.0.0.1"):
        return [
            "ssh",
            "-F", "/dev/null",
            "-p", str(port),
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=6",
            "-o", "LogLevel=ERROR",
            f"root@{host}",
            command,
        ]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return sha256_file(path)


# --------------------------------------------------------------------------------------------
# packet captures


def read_pcap_udp(path):
    """(src addr, src port, dst port, UDP payload) of every IPv6/UDP packet in a pcap file."""
    out = []
    data = open(path, "rb").read()
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8: off + 12])[0]
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if linktype == 1:
            if len(pkt) < 14 or pkt[12:14] != b"\x86\xdd":
                continue
            ip = pkt[14:]
        elif linktype == 113:
            ip = pkt[16:]
        else:
            continue
        if len(ip) < 48 or ip[0] >> 4 != 6 or ip[6] != 17:
            continue
        src = socket.inet_ntop(socket.AF_INET6, ip[8:24])
        sport, dport = struct.unpack(">HH", ip[40:44])
        out.append((src, sport, dport, ip[48:]))
    return out


def timed_download(ns, port, total, result, gap_floor=0.05):
    """Downloads `total` bytes through 127.0.0.1:port in ns with the 'X' exchange, recording in
    `result` as it goes: 'received' (bytes so far), 'longest' (the longest gap between reads, in
    seconds) and 'longest_at' (bytes received when it ended), 'gaps' (every gap over gap_floor:
    (seconds since result['t0'], milliseconds)), 'end', and 'hash_ok' (the server's hash of what
    it sent matches what arrived). Run it in the namespace (ns.call)."""
    result.setdefault("t0", time.monotonic())
    s = ns.connect(port, timeout=10)
    s.settimeout(60)
    s.sendall(b"X" + (0).to_bytes(8, "big") + total.to_bytes(8, "big"))
    h = hashlib.sha256()
    left, last, longest, at_, gaps = total, time.monotonic(), 0.0, 0, []
    while left:
        d = s.recv(min(left, 1 << 16))
        if not d:
            raise ConnectionError(f"closed with {left} bytes missing")
        now = time.monotonic()
        gap = now - last
        if gap > longest:
            longest, at_ = gap, total - left
        if gap > gap_floor:
            gaps.append((round(now - result["t0"], 3), round(gap * 1000)))
        last = now
        h.update(d)
        left -= len(d)
        result["received"] = total - left
    digests = recv_exact(s, 64)
    s.close()
    result.update(hash_ok=digests[32:] == h.digest(), longest=longest, longest_at=at_, gaps=gaps,
                  end=time.monotonic())
