"""Operations (DESIGN §8): per-forward SLA policy that moves a forward between the direct path
and a relay path while a live OpenSSH session keeps running, hold-down against flapping, `vx6
policy` at runtime, `vx6 ping`, Prometheus metrics scraped by a real Prometheus, and JSON logs.

Packet loss without netem: an nftables rule with `numgen random` on the netdev *egress* hook of
the client's eth0 drops a share of the UDP datagrams to the owner's address. (On the inet
output hook the same rule also works, but sendmsg(2) then fails with EPERM for every dropped
datagram: the application sees the drop. At egress it is a silent loss on the wire.)

The end-to-end session runs over QUIC on every path (the SLA moves only the carrier), so these
tests run once, over QUIC."""

import hashlib
import json
import math
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

import lab as labmod
from lab import VX6_BIN, echo_roundtrip, recv_exact, retry
from test_relays import PLAIN_PORT, RelayNet, at, until

METRICS_PORT = 9464
PROM_PORT = 9090
MB = 1 << 20


# --------------------------------------------------------------------------------------------
# helpers


def need(*tools):
    """Skips without `tools`, except in CI, which installs them (scripts/test.sh): there a
    missing tool fails rather than hides the test."""
    missing = [t for t in tools if not (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin"))]
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must install {', '.join(missing)} (scripts/test.sh)")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: prometheus, openssh-client, nftables)")


class OpsNet(RelayNet):
    """test_relays.RelayNet with four relays: owner alice (OpenSSH and the plain target
    server), the relays, and client bob whose forwards are given per test; with the status of
    a forward, its path, and the client's `path switched` log lines."""

    def __init__(self, lab, client_forwards, *, relays=4, sshd=True, client_extra=(), owner_extra=()):
        super().__init__(lab, client_forwards, client_extra=client_extra, sshd=sshd,
                         relays=relays, owner_extra=owner_extra)

    def forward(self, local):
        """The client's `vx6 status --json` entry of the forward listening on `local`."""
        fw = self.client.status().get("forwards", [])
        for f in fw:
            if f.get("local") == local:
                return f
        raise AssertionError(f"no forward on {local} in the client's status: {fw!r}")

    def path_of(self, local):
        return self.forward(local).get("path")

    def switch_lines(self):
        return [l for l in self.client.log().splitlines() if "path switched" in l.lower()]


class Loss:
    """Random loss of the UDP datagrams `ns` sends to `peer_addr`, set and cleared atomically
    (one `nft -f` transaction each). Uses the netdev egress hook of `dev` (a silent drop, as on
    a lossy link); falls back to the inet output hook where the kernel has no egress hook."""

    def __init__(self, lab, ns, peer_addr, dev="eth0"):
        self.ns = ns
        self.peer = peer_addr
        try:
            ns.run(["nft", "-f", "-"], input=(
                "table netdev vx6loss {\n"
                f'  chain lossy {{ type filter hook egress device "{dev}" priority 0; }}\n'
                "}\n"
            ))
            self.family = "netdev"
        except AssertionError:
            ns.run(["nft", "-f", "-"], input=(
                "table inet vx6loss {\n"
                "  chain lossy { type filter hook output priority 0; }\n"
                "}\n"
            ))
            self.family = "inet"
        self.percent = 0
        lab.on_close(lambda: ns.run(["nft", "delete", "table", self.family, "vx6loss"], check=False))

    def set(self, percent):
        script = f"flush chain {self.family} vx6loss lossy\n"
        if percent > 0:
            script += (
                f"add rule {self.family} vx6loss lossy ip6 daddr {self.peer} meta l4proto udp "
                f"numgen random mod 100 < {int(percent)} drop\n"
            )
        self.ns.run(["nft", "-f", "-"], input=script)
        self.percent = percent

    def clear(self):
        self.set(0)


class SshSession:
    """A long-lived `ssh ... cat` through a forward: echo() sends a line and expects it back."""

    def __init__(self, lab, ns, sshd, port, name="ssh-session"):
        self.argv = ns.cmd(sshd.ssh_argv(port, "cat"))
        self.err_path = lab.logdir / f"{name}.stderr"
        self._err = open(self.err_path, "ab")
        self.p = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            start_new_session=True,
        )
        self.n = 0
        lab.on_close(self.close)

    def stderr(self):
        try:
            return self.err_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""

    def echo(self, timeout=20.0):
        self.n += 1
        line = f"line {self.n} {os.urandom(8).hex()}\n".encode()
        try:
            self.p.stdin.write(line)
            self.p.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise AssertionError(
                f"ssh session is gone (exit {self.p.poll()}): {e}; ssh stderr: {self.stderr()!r}"
            ) from None
        buf = b""
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"ssh session: no echo of line {self.n} within {timeout}s (got {buf!r})")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            d = os.read(fd, 4096)
            if not d:
                raise AssertionError(
                    f"ssh session ended (exit {self.p.wait(5)}); ssh stderr: {self.stderr()!r}"
                )
            buf += d
        assert buf == line, f"ssh session echoed {buf!r}, sent {line!r}"

    def alive(self):
        return self.p.poll() is None

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        if not self._err.closed:
            self._err.close()


def open_ssh_session(lab, ns, sshd, port, timeout=60):
    """An SshSession that has echoed once (retries while the forward comes up)."""
    box = {}

    def attempt():
        s = SshSession(lab, ns, sshd, port)
        try:
            s.echo(timeout=20)
        except AssertionError:
            s.close()
            raise
        box["s"] = s

    retry(attempt, timeout=timeout, interval=1.0)
    return box["s"]


# ---- metrics


def fetch_metrics(ns, port=METRICS_PORT):
    """(Content-Type, body) of http://127.0.0.1:port/metrics, fetched inside ns."""

    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200, f"/metrics answered {r.status}"
            return r.headers.get("Content-Type", ""), r.read().decode()

    return ns.call(get, timeout=15)


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text):
    """[(name, {label: value}, float)] of every sample line of an exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def sample_sum(text, name, **labels):
    return sum(v for n, l, v in samples(text)
               if n == name and all(l.get(k) == w for k, w in labels.items()))


def forward_sla_met(text, forward):
    """1 if `vx6_forward_sla` says the forward meets its SLA, else 0. Either one gauge per
    forward (1 met, 0 violated) or one per forward and state (label state=met|violated|unknown,
    1 on the current state)."""
    rows = [(l, v) for n, l, v in samples(text) if n == "vx6_forward_sla" and l.get("forward") == forward]
    assert rows, f"no vx6_forward_sla series for forward={forward!r}:\n{text}"
    if any("state" in l for l, _ in rows):
        return sum(v for l, v in rows if l.get("state") == "met")
    return sum(v for _, v in rows)


def promtool_problems(text):
    """What `promtool check metrics` (stdin) objects to; [] when it exits 0. The scrape is the
    classic text format (no OpenMetrics Accept header), which is what promtool lints."""
    cp = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                        text=True, timeout=30)
    if cp.returncode == 0:
        return []
    out = [l for l in (cp.stdout + cp.stderr).splitlines() if l.strip()]
    return out or [f"promtool exited {cp.returncode}"]


def check_exposition(ns, daemon, lab_ids, lab_addrs):
    """Scrapes a daemon; checks the content type, promtool, and bounded labels (§8: never a
    peer id or an address). Returns the body."""
    ctype, text = fetch_metrics(ns)
    if ctype.startswith("application/openmetrics-text"):
        assert text.endswith("# EOF\n"), f"OpenMetrics without the final `# EOF`: {text[-200:]!r}"
    else:
        assert ctype.startswith("text/plain"), f"/metrics Content-Type is {ctype!r}"
    problems = promtool_problems(text)
    assert not problems, f"promtool check metrics on {daemon.name}'s scrape: {problems}\n{text}"
    for n, labels, _ in samples(text):
        assert n.startswith("vx6_"), f"metric without the vx6_ prefix: {n}"
        for k, v in labels.items():
            for x in list(lab_ids) + list(lab_addrs):
                assert x not in v, f"label {k}={v!r} of {n} holds a node id or an address"
    return text


class Prometheus:
    """A real Prometheus in `ns` (127.0.0.1:PROM_PORT), scraping `jobs` {job: "127.0.0.1:port"}
    every second; query() runs PromQL through the HTTP API from inside the namespace."""

    def __init__(self, lab, ns, jobs, port=PROM_PORT):
        self.ns = ns
        self.port = port
        d = lab.dir / f"prometheus-{ns.name.rsplit('-', 1)[-1]}"
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "prometheus.yml"
        lines = [
            "global:",
            "  scrape_interval: 1s",
            "  scrape_timeout: 1s",  # must not exceed scrape_interval (the default is 10s)
            "  evaluation_interval: 1s",
            "scrape_configs:",
        ]
        for job, target in jobs.items():
            lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{target}']"]
        cfg.write_text("\n".join(lines) + "\n")
        labmod.run(["promtool", "check", "config", cfg])
        self.proc = lab.spawn(f"prometheus-{ns.name.rsplit('-', 1)[-1]}", ns, [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ])

        def ready():
            assert self.proc.alive(), f"prometheus exited: {self.proc.tail()}"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                assert r.status == 200

        retry(lambda: ns.call(ready, timeout=10), timeout=30, interval=0.5)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"

        def get():
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)

        reply = self.ns.call(get, timeout=20)
        assert reply.get("status") == "success", f"{path} {params}: {reply}"
        return reply["data"]

    def query(self, expr, at_time=None):
        """[(labels, value)] of an instant query (evaluated now or at the unix time at_time)."""
        params = {"query": expr}
        if at_time is not None:
            params["time"] = f"{at_time:.3f}"
        data = self.api("/api/v1/query", **params)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr, at_time=None):
        """The single value of a query (fails if it has none or several)."""
        res = self.query(expr, at_time)
        assert len(res) == 1, f"{expr}: {res}"
        return res[0][1]

    def wait_up(self, job, timeout=30):
        def check():
            res = self.query(f'up{{job="{job}"}}')
            assert res and res[0][1] == 1, (
                f"job {job} not up: {res}; targets: "
                f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in self.api('/api/v1/targets')['activeTargets']]}"
            )

        retry(check, timeout=timeout, interval=0.5)


def tcp_proxy(lab, from_ns, port, to_ns, to_port):
    """127.0.0.1:port in from_ns relayed (by the pytest process) to 127.0.0.1:to_port in to_ns:
    one Prometheus can scrape a daemon's loopback-only metrics port in another namespace."""
    ls = from_ns.listen(port)
    ls.settimeout(0.2)
    stop = threading.Event()

    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def conn(c):
        try:
            u = to_ns.connect(to_port, timeout=5)
        except OSError:
            c.close()
            return
        c.settimeout(30)
        u.settimeout(30)
        ts = [threading.Thread(target=pipe, args=x, daemon=True) for x in ((c, u), (u, c))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        c.close()
        u.close()

    def loop():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True, name=f"proxy-{port}").start()

    def close():
        stop.set()
        ls.close()

    lab.on_close(close)


def paced_upload(ns, port, total, rate, result):
    """Sends `total` bytes through 127.0.0.1:port in ns at about `rate` bytes/s with the 'X'
    exchange (nothing downloaded); checks the server's hash. Records wall-clock 't0'/'t1' and
    'sent' (every byte the forward read from this connection: mode, header, payload)."""
    block = os.urandom(MB)
    s = ns.connect(port, timeout=10)
    s.settimeout(60)
    result["t0"] = time.time()
    start = time.monotonic()
    s.sendall(b"X" + total.to_bytes(8, "big") + (0).to_bytes(8, "big"))
    h = hashlib.sha256()
    sent = 0
    view = memoryview(block)
    while sent < total:
        off = sent % MB
        n = min(64 * 1024, total - sent, MB - off)
        chunk = view[off:off + n]
        s.sendall(chunk)
        h.update(chunk)
        sent += n
        result["progress"] = sent
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    digests = recv_exact(s, 64)
    result["t1"] = time.time()
    s.close()
    assert digests[:32] == h.digest(), "the server's hash of the upload differs"
    result["sent"] = 1 + 16 + total
    result["received"] = 64


def vx6_policy(net, local, *args):
    return net.client_ns.run([VX6_BIN, "policy", "--home", net.client_home.path, local, *args],
                             timeout=30, check=False)


# --------------------------------------------------------------------------------------------
# SLA policy


SSH_LOCAL = "127.0.0.1:2222"


@pytest.mark.timeout_s(300)
def test_sla_moves_forward_and_ssh_survives(lab, figure):
    need("ssh", "sshd", "nft")
    hold_down = 8
    net = OpsNet(
        lab,
        [("alice.ssh=127.0.0.1:2222", "--via", "direct", "--sla", f"max-loss=5%,hold-down={hold_down}s")],
        client_extra=["--metrics", f"127.0.0.1:{METRICS_PORT}"],
    )
    loss = Loss(lab, net.client_ns, net.owner_ns.addr)
    ssh = open_ssh_session(lab, net.client_ns, net.sshd, 2222)

    until(lambda: net.path_of(SSH_LOCAL) == "direct", 20,
          lambda: f"before any loss the forward runs direct: {net.forward(SSH_LOCAL)}")
    f = net.forward(SSH_LOCAL)
    assert isinstance(f.get("policy"), (dict, str)) and f["policy"], f"forward has no policy: {f}"
    until(lambda: net.forward(SSH_LOCAL).get("sla") == "met", 20,
          lambda: f"the SLA is never met on a clean direct path: {net.forward(SSH_LOCAL)}")
    assert isinstance(f.get("switches"), int), f
    switches0 = net.forward(SSH_LOCAL)["switches"]
    lines0 = len(net.switch_lines())
    ssh.echo()

    # 30% loss on bob -> alice, direct only (relays are other addresses).
    loss.set(30)
    t_loss = time.monotonic()
    seen = []  # (path, sla) as status showed them while the loss was on

    def on_relay():
        fw = net.forward(SSH_LOCAL)
        if not seen or seen[-1] != (fw.get("path"), fw.get("sla")):
            seen.append((fw.get("path"), fw.get("sla")))
        return fw.get("path") == "relay"

    until(on_relay, 15,
          lambda: f"still not on a relay path 15s after 30% loss: {net.forward(SSH_LOCAL)}")
    t_relay = time.monotonic()
    until(lambda: len(net.switch_lines()) > lines0, 5,
          lambda: f"no `path switched` log line:\n{net.client.tail()}")
    first = net.switch_lines()[lines0]
    assert "from direct to relay" in first and "alice.ssh" in first, first
    f = net.forward(SSH_LOCAL)
    # Whether "sla" then describes the direct path (violated) or the forward on its new path
    # (met) is not pinned here; it is measured, not unknown.
    assert f.get("sla") in ("met", "violated"), f
    assert f["switches"] == switches0 + 1, f
    _, metrics = fetch_metrics(net.client_ns)
    print("(path, sla) while the loss was on:", seen, "; on relay:", f.get("sla"),
          "; vx6_forward_sla met:", forward_sla_met(metrics, "alice.ssh"))
    ssh.echo()
    for _ in range(3):  # and keeps working over the relay path, lossy direct path or not
        time.sleep(0.5)
        ssh.echo()

    # Loss gone: no failback before the direct path was clean for the hold-down.
    loss.clear()
    t_clear = time.monotonic()
    time.sleep(3)
    assert net.path_of(SSH_LOCAL) == "relay", (
        f"back on direct 3s after the loss ended (hold-down {hold_down}s): {net.forward(SSH_LOCAL)}"
    )
    ssh.echo()
    until(lambda: net.path_of(SSH_LOCAL) == "direct", hold_down + 10,
          lambda: f"not back on direct {hold_down + 13}s after the loss ended: {net.forward(SSH_LOCAL)}")
    t_direct = time.monotonic()
    lines = net.switch_lines()[lines0:]
    assert len(lines) == 2 and "from relay to direct" in lines[-1], lines
    f = net.forward(SSH_LOCAL)
    assert f["switches"] == switches0 + 2 and f.get("sla") == "met", f
    ssh.echo()
    assert ssh.alive()

    _, metrics = fetch_metrics(net.client_ns)
    assert sample_sum(metrics, "vx6_path_switches_total") >= 2, metrics
    assert forward_sla_met(metrics, "alice.ssh") == 1, metrics
    # Informational: how the bytes of a connection that moved are attributed is not pinned.
    print("forwarded bytes by path:",
          {p: sample_sum(metrics, "vx6_forwarded_bytes_total", path=p) for p in ("direct", "relay")})

    figure("SLA: 30% loss to direct -> relay path", f"{t_relay - t_loss:.1f}s")
    figure("SLA: loss ended -> back on direct", f"{t_direct - t_clear:.1f}s (hold-down {hold_down}s)")
    print("path switch log lines:", *lines, sep="\n  ")


@pytest.mark.timeout_s(300)
def test_oscillating_path_switches_at_most_once_per_hold_down(lab, figure):
    need("nft")
    hold_down = 10
    local = "127.0.0.1:2300"
    net = OpsNet(
        lab,
        [(f"alice.plain={local}", "--via", "direct", "--sla", f"max-loss=5%,hold-down={hold_down}s")],
        sshd=False,
    )
    loss = Loss(lab, net.client_ns, net.owner_ns.addr)
    retry(lambda: echo_roundtrip(net.client_ns, 2300, b"warm-up"), timeout=60)
    until(lambda: net.path_of(local) == "direct", 20, lambda: f"not on direct: {net.forward(local)}")
    switches0 = net.forward(local)["switches"]
    lines0 = len(net.switch_lines())

    timeline = []
    start = time.monotonic()
    on = False
    while time.monotonic() - start < 24:
        on = not on
        loss.set(30 if on else 0)
        timeline.append((round(time.monotonic() - start, 1), "loss" if on else "clean",
                         net.path_of(local)))
        time.sleep(2)
    loss.clear()
    f = net.forward(local)
    elapsed = time.monotonic() - start
    switches = f["switches"] - switches0
    print("timeline (s, link, path):", timeline)
    figure("SLA: switches while loss toggled every 2s for 24s", f"{switches} (hold-down {hold_down}s)")
    assert switches <= 1 + elapsed / hold_down, (
        f"{switches} switches in {elapsed:.0f}s with a {hold_down}s hold-down: {net.switch_lines()}"
    )
    logged = len(net.switch_lines()) - lines0
    after = net.forward(local)["switches"] - switches0  # a failback may land in between
    assert switches <= logged <= after, (
        f"status counted {switches}..{after} switches, the log has {logged}: {net.switch_lines()}"
    )
    retry(lambda: echo_roundtrip(net.client_ns, 2300, b"still forwarding"), timeout=30)


@pytest.mark.timeout_s(300)
def test_policy_change_at_runtime(lab, figure):
    local = "127.0.0.1:2300"
    # --sla makes it a managed forward (one that can move its connections between paths).
    net = OpsNet(lab, [(f"alice.plain={local}", "--via", "direct", "--sla", "hold-down=3s")], sshd=False)
    retry(lambda: echo_roundtrip(net.client_ns, 2300, b"warm-up"), timeout=60)
    until(lambda: net.path_of(local) == "direct", 20, lambda: f"not on direct: {net.forward(local)}")

    # `vx6 ping` names the path that answered.
    cp = net.client_ns.run([VX6_BIN, "ping", "--home", net.client_home.path, "alice.plain",
                            "--count", "3"], timeout=30, check=False)
    assert cp.returncode == 0, f"vx6 ping failed ({cp.returncode}): {cp.stderr}"
    replies = re.findall(
        r"^reply from alice\.plain via (direct|relay)(?: \[[^\]]*\])?: rtt (\d+(?:\.\d+)?) ms$",
        cp.stdout, re.M)
    # A managed forward keeps a relay path beside the direct one: both answer, and say so.
    assert {kind for kind, _ in replies} == {"direct", "relay"}, cp.stdout
    print("vx6 ping:", cp.stdout, sep="\n")

    # A connection open across the policy changes (the carrier changes under it).
    s = net.client_ns.connect(2300)
    s.settimeout(20)
    s.sendall(b"E")

    def echo_live(tag):
        payload = f"{tag} {os.urandom(8).hex()}".encode()
        s.sendall(payload)
        assert recv_exact(s, len(payload)) == payload

    try:
        echo_live("before")
        cp = vx6_policy(net, local, "--via", "relay")
        assert cp.returncode == 0, f"vx6 policy --via relay failed ({cp.returncode}): {cp.stderr}"
        assert "relay" in cp.stdout, f"vx6 policy did not print the new policy: {cp.stdout!r}"
        t0 = time.monotonic()
        until(lambda: net.path_of(local) == "relay", 30,
              lambda: f"policy is relay, the path is not: {net.forward(local)}")
        figure("vx6 policy --via relay -> path relay", f"{time.monotonic() - t0:.1f}s")
        f = net.forward(local)
        assert f.get("via", "relay") == "relay", f
        assert "relay" in json.dumps(f.get("policy")), f
        echo_live("on relay")
        retry(lambda: echo_roundtrip(net.client_ns, 2300, b"new connection on relay"), timeout=30)

        cp = vx6_policy(net, local, "--via", "direct")
        assert cp.returncode == 0, f"vx6 policy --via direct failed ({cp.returncode}): {cp.stderr}"
        assert "direct" in cp.stdout, cp.stdout
        until(lambda: net.path_of(local) == "direct", 30,
              lambda: f"policy is direct, the path is not: {net.forward(local)}")
        f = net.forward(local)
        assert f.get("via", "direct") == "direct", f
        assert f["switches"] >= 2, f
        echo_live("back on direct")
    finally:
        s.close()

    # Bad requests are refused with a one-line reason.
    for args in (("127.0.0.1:1", "--via", "relay"), (local, "--via", "sideways")):
        cp = vx6_policy(net, *args)
        assert cp.returncode != 0 and len(cp.stderr.strip().splitlines()) == 1, (args, cp)


# --------------------------------------------------------------------------------------------
# Prometheus


@pytest.mark.timeout_s(300)
def test_prometheus_scrapes_two_daemons(lab, nodes, figure):
    need("prometheus", "promtool")
    metrics = ["--metrics", f"127.0.0.1:{METRICS_PORT}"]
    lab.server(nodes.owner_ns, PLAIN_PORT)
    owner = lab.start_node(nodes.owner_ns, nodes.owner_home, transport="quic",
                           serve=[f"plain=127.0.0.1:{PLAIN_PORT}"], allow=[nodes.client_home.id],
                           extra=metrics)
    client = lab.start_node(nodes.client_ns, nodes.client_home, transport="quic",
                            forward=[f"{lab.target(owner, 'plain')}=127.0.0.1:2300"], extra=metrics)
    c = nodes.client_ns
    retry(lambda: echo_roundtrip(c, 2300, b"warm-up"), timeout=30)  # makes the byte series exist

    # One Prometheus in bob's namespace; alice's loopback-only port reaches it through a proxy.
    tcp_proxy(lab, c, METRICS_PORT + 1, nodes.owner_ns, METRICS_PORT)
    prom = Prometheus(lab, c, {"bob": f"127.0.0.1:{METRICS_PORT}", "alice": f"127.0.0.1:{METRICS_PORT + 1}"})
    prom.wait_up("bob")
    prom.wait_up("alice")

    ids = [nodes.owner_home.id, nodes.client_home.id]
    addrs = [nodes.owner_ns.addr, nodes.client_ns.addr]
    text = check_exposition(c, client, ids, addrs)
    # The classic text format names a counter family by its `_total` series.
    for fam in ("vx6_forwarded_bytes_total", "vx6_sessions", "vx6_connect_seconds"):
        assert re.search(rf"^# TYPE {fam} ", text, re.M), f"no {fam} family:\n{text}"
    assert re.search(r"^# TYPE vx6_connect_seconds histogram$", text, re.M), text
    assert sample_sum(text, "vx6_connect_seconds_count") >= 1, text
    check_exposition(nodes.owner_ns, owner, ids, addrs)

    # increase() extrapolates to the window's ends (by up to about one scrape interval over
    # the window): a window well past both ends of the transfer, flat before and after.
    time.sleep(11)  # flat samples before the window starts
    total, rate = 200 * MB, 16 * MB
    result = {}
    c.call(paced_upload, c, 2300, total, rate, result, timeout=120)
    duration = result["t1"] - result["t0"]
    time.sleep(7)  # the last scrapes land

    at_time = result["t1"] + 5
    window = math.ceil(at_time - (result["t0"] - 10))
    sel = 'vx6_forwarded_bytes_total{job="bob",direction="out"}'
    increase = prom.value(f"sum(increase({sel}[{window}s]))", at_time)
    exact = prom.value(f"sum(max_over_time({sel}[{window}s]) - min_over_time({sel}[{window}s]))", at_time)
    mid_rate = prom.value(f"sum(rate({sel}[5s]))", (result["t0"] + result["t1"]) / 2)
    figure("prometheus: bytes sent vs increase() of vx6_forwarded_bytes_total (out)",
           f"{result['sent']} vs {increase:.0f} (max-min {exact:.0f})")
    figure("prometheus: rate() mid-transfer vs paced rate",
           f"{mid_rate / MB:.1f} MiB/s vs {rate / MB:.1f} MiB/s ({total / duration / MB:.1f} MiB/s achieved)")
    assert abs(increase - result["sent"]) <= 0.1 * result["sent"], (increase, result)
    assert abs(exact - result["sent"]) <= 0.1 * result["sent"], (exact, result)
    direct_in = prom.value('sum(vx6_forwarded_bytes_total{job="bob",direction="in"})')
    assert direct_in >= result["received"], direct_in

    owner_in = prom.value(
        f'sum(increase(vx6_forwarded_bytes_total{{job="alice",direction="in"}}[{window}s]))', at_time)
    print(f"alice (owner) counted {owner_in:.0f} bytes in over the window (informational)")
    assert prom.value('sum(vx6_sessions{job="alice"})') >= 1
    assert prom.value('sum(vx6_sessions{job="bob"})') >= 1
    check_exposition(c, client, ids, addrs)
    check_exposition(nodes.owner_ns, owner, ids, addrs)


# --------------------------------------------------------------------------------------------
# structured logs


@pytest.mark.timeout_s(120)
def test_json_logs(lab, nodes, monkeypatch):
    lab.server(nodes.owner_ns, PLAIN_PORT)
    monkeypatch.setenv("VX6_LOG_FORMAT", "json")  # inherited by the daemons (ip netns exec keeps it)
    owner = lab.start_node(nodes.owner_ns, nodes.owner_home, transport="quic",
                           serve=[f"plain=127.0.0.1:{PLAIN_PORT}"], allow=[nodes.client_home.id])
    monkeypatch.setenv("VX6_LOG", "debug")
    client = lab.start_node(
        nodes.client_ns, nodes.client_home, transport="quic",
        forward=[f"{lab.target(owner, 'plain')}=127.0.0.1:2300",
                 f"{lab.target(owner, 'nosuch')}=127.0.0.1:2301"],
    )
    monkeypatch.delenv("VX6_LOG_FORMAT")
    monkeypatch.delenv("VX6_LOG")
    retry(lambda: echo_roundtrip(nodes.client_ns, 2300, b"logged"), timeout=30)
    labmod.expect_closed(nodes.client_ns, 2301)  # an unknown service: a warning or two
    client.status()
    for d in (client, owner):
        assert d.stop(timeout=10) == 0, d.tail()

    for d in (client, owner):
        lines = [l for l in d.log().splitlines() if l.strip() and not l.startswith("---- start ")]
        assert lines, f"{d.name} logged nothing"
        for l in lines:
            try:
                obj = json.loads(l)
            except json.JSONDecodeError as e:
                raise AssertionError(f"{d.name}: log line is not JSON ({e}): {l!r}") from None
            assert isinstance(obj, dict) and "level" in obj, f"{d.name}: {l!r}"
            assert "fields" in obj or "message" in obj, f"{d.name}: {l!r}"
        print(f"{d.name}: {len(lines)} JSON log lines")

    # Any other format is refused with a one-line reason.
    home = lab.home("carol")
    cp = nodes.client_ns.run(
        [VX6_BIN, "node", "--home", home.path, "--listen", f"[{nodes.client_ns.addr}]:4500"],
        timeout=15, check=False, env=dict(os.environ, VX6_LOG_FORMAT="xml"),
    )
    assert cp.returncode != 0 and len(cp.stderr.strip().splitlines()) == 1, cp
