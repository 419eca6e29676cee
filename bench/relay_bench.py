#!/usr/bin/env python3
"""Relay benchmarks for VX6 (not a test): real `vx6` daemons in network namespaces, as root.

  python3 bench/relay_bench.py [--quick] [--only loopback,veth,pps,failover] [--runs N]
                               [--failovers N] [--perf] [--wait-quiet S] [--out FILE.json] [--keep]

Parts (each in its own namespaces, torn down afterwards):
  loopback  every daemon on ::1 in one namespace: one client daemon forwards to three owners,
            --via direct, --via relay --hops 1 and --via relay --hops 2 (four relays; all in
            one /48, so path selection falls back on diversity). The yardstick
            (../shared/bench/tunnel_bench.py) measures the three forwards and plain loopback TCP
            interleaved in one run: bulk upload (MB/s, shown as Gbit/s), request/response,
            connect time; --runs runs on the same daemons. Then request/response latency on
            its own, interleaved in blocks over plain TCP, socat, and the three forwards: once
            with free scheduling and once with every process pinned to one core.
  veth      the same with every daemon in its own namespace, on a bridge with 1500-byte veth
            links (tests/e2e/lab.py's test bed); the yardstick runs in the client's namespace,
            a sink server in each owner's.
  pps       the userspace relay's datagrams per second on one core: a 1-relay path on
            loopback carries a little data, tcpdump captures one data datagram from the client to
            its relay (header 0x10 + the 4-byte label), then the client and the owner are killed
            (the relay keeps the circuit until its session with the client times out, 30 s),
            bench/udp_blast.c binds the client's address and port and sends small datagrams with
            that header at the relay (pinned with taskset to core 0; the sender runs on core 1).
            Forwarded datagrams are counted by the relay (`relay_forwarded` in `vx6 status
            --json`) and by an nftables counter on their way out to the owner's old port; the
            relay's socket drops (/proc/net/udp6), its CPU time and core 0's split are read
            around each interval. Modes: 64 B sent to an egress drop (nftables, so the
            receiver's stack is not charged to the relay's core), 64 B delivered to a bound
            socket, 1200 B, and GSO trains of 64 datagrams (the relay receives them as one GRO
            batch). --perf profiles the relay during the first mode.
  failover  tests/e2e/test_relays.py's mid-transfer kill: eight daemons in their own
            namespaces (owner, client, six relays), a 100 MB download through a 2-relay
            forward, the first relay of the active circuit killed (SIGKILL) after 10 MiB; the
            longest gap between two reads of the download is the stall; the client's status is
            polled for the moment it moved to its standby. A fresh network each time.

The machine is shared: before each measurement the script waits (up to --wait-quiet seconds)
until it is under 30% busy, and reports how busy it was. Prints markdown tables (with the
commands) on stdout, progress on stderr; --out keeps every raw figure as JSON. Needs: ip,
tcpdump, nft (nftables), taskset, cc, socat (optional), perf (for --perf), python3; VX6_BIN
(default <repo>/target/release/vx6), TUNNEL_BENCH (default <repo>/../shared/bench/tunnel_bench.py),
VX6_BENCH_COMMIT (a label for the report when VX6_BIN is not this tree's build).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import lab as labmod  # noqa: E402  (the e2e suite's namespaces and daemons)
from lab import VX6_BIN, read_pcap_udp, retry  # noqa: E402

YARD = Path(os.environ.get("TUNNEL_BENCH", REPO.parent / "shared" / "bench" / "tunnel_bench.py")).resolve()
SINK_PORT = 5301  # the yardstick's sink/echo server behind every owner
SOCAT_PORT = 6401  # socat in front of the sink (loopback request/response reference)
RELAYS = 4
PARTS = ["loopback", "veth", "pps", "failover"]


def say(*a):
    print("relay_bench:", *a, file=sys.stderr, flush=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine_busy(interval=1.0):
    """Fraction of all cores busy over interval (from /proc/stat)."""

    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)

    b0, t0 = snap()
    time.sleep(interval)
    b1, t1 = snap()
    return (b1 - b0) / max(1, t1 - t0)


QUIET = {"max_busy": 0.3, "wait_s": 0}


def wait_quiet(what):
    """Waits (up to QUIET['wait_s']) until the machine is mostly idle before a measurement; returns
    the busy fraction seen last (the machine is shared: builds of other sessions run on it)."""
    deadline = time.monotonic() + QUIET["wait_s"]
    while True:
        busy = machine_busy()
        if busy <= QUIET["max_busy"] or time.monotonic() >= deadline:
            if busy > QUIET["max_busy"]:
                say(f"{what}: machine still {busy:.0%} busy, measuring anyway")
            return busy
        say(f"{what}: machine {busy:.0%} busy (other processes), waiting")
        time.sleep(4)


def until(cond, timeout, what):
    def check():
        assert cond(), what()

    return retry(check, timeout=timeout)


# --------------------------------------------------------------------------------------------
# a relay network: relays, owners serving the sink, one client with forwards


class Net:
    """Relays, owners and one client, placed either all on ::1 in one namespace (loopback) or
    each in its own namespace on the lab's bridge (veth). Forwards: list of
    (owner index, local port, via args)."""

    def __init__(self, lab, mode, owners, forwards, *, relays=RELAYS, port_base=4500, service="bench"):
        self.lab = lab
        self.mode = mode
        if mode == "loopback":
            ns = lab.node("lo")
            ports = iter(range(port_base + 1, port_base + 100))

            def place(role):
                return ns, "::1", next(ports)
        else:

            def place(role):
                return lab.node(role), None, 4433

        self.relay_place = [place(f"r{i}") for i in range(relays)]
        self.owner_place = [place(f"o{i}") for i in range(len(owners))]
        self.client_place = place("client")
        self.client_ns = self.client_place[0]
        self.relay_homes = [lab.home(f"relay{i}") for i in range(relays)]
        self.owner_homes = [lab.home(name) for name in owners]
        self.client_home = lab.home("client")

        def addr(p):
            return f"[{p[1] or p[0].addr}]:{p[2]}"

        self.addr = addr
        boot = addr(self.relay_place[0])
        # the sink/echo server behind every owner (one per namespace)
        self.sinks = {}
        for ns, _, _ in self.owner_place:
            if ns.name not in self.sinks:
                p = lab.spawn(f"sink-{ns.name.rsplit('-', 1)[-1]}", ns,
                              ["python3", YARD, "--serve-only", "--server-port", SINK_PORT])
                ns.wait_listening(SINK_PORT, what="sink server")
                self.sinks[ns.name] = p
        say(f"{mode}: starting {relays} relays")
        self.relays = []
        for i, ((ns, host, port), home) in enumerate(zip(self.relay_place, self.relay_homes)):
            extra = ["--relay"] + ([] if i == 0 else ["--bootstrap", boot])
            self.relays.append(lab.start_node(ns, home, transport="quic", port=port, listen_host=host, extra=extra))
        for d in self.relays:
            d.wait_log("published", timeout=60)
        self.owners = []
        for (ns, host, port), home in zip(self.owner_place, self.owner_homes):
            d = lab.start_node(ns, home, transport="quic", port=port, listen_host=host,
                               serve=[f"{service}=127.0.0.1:{SINK_PORT}"], public=True,
                               extra=["--bootstrap", boot])
            self.owners.append(d)
        for d in self.owners:
            d.wait_log("published", timeout=60)
        argv = ["--bootstrap", boot]
        for oi, lport, via in forwards:
            argv += ["--forward", f"{owners[oi]}.{service}=127.0.0.1:{lport}", *via]
        ns, host, port = self.client_place
        self.client = lab.start_node(ns, self.client_home, transport="quic", port=port, listen_host=host, extra=argv)
        self.client_argv = self.client.argv

    def relay_by_id(self, node_id):
        for d, h in zip(self.relays, self.relay_homes):
            if h.id == node_id:
                return d
        raise KeyError(node_id)

    def circuits(self, owner_index):
        oid = self.owner_homes[owner_index].id
        return [c for c in self.client.status()["circuits"] if c["role"] == "client" and c["owner"] == oid]

    def active(self, owner_index):
        a = [c for c in self.circuits(owner_index) if c["active"] and c["ready"]]
        return a[0] if a else None

    def commands(self):
        return [" ".join(shlex.quote(a) for a in d.argv) for d in [*self.relays, *self.owners, self.client]]


def warm(net, forwards):
    for oi, lport, via in forwards:
        retry(lambda: labmod.echo_roundtrip(net.client_ns, lport, os.urandom(64)), timeout=90)
        if "relay" in via:
            hops = int(via[via.index("--hops") + 1]) if "--hops" in via else 2
            until(lambda: net.active(oi) is not None and len(net.active(oi)["path"]) == hops, 60,
                  lambda: f"no active {hops}-hop circuit to owner {oi}: {net.circuits(oi)}")


def relay_counters(net):
    return {h.id: d.status()["counters"]["relay_forwarded"] for d, h in zip(net.relays, net.relay_homes)}


# --------------------------------------------------------------------------------------------
# parts 1 and 2: throughput and request/response through forwards


FORWARDS = [
    (0, 7301, ["--via", "direct"]),
    (1, 7302, ["--via", "relay", "--hops", "1"]),
    (2, 7303, ["--via", "relay", "--hops", "2"]),
]
ENTRY_NAMES = {7301: "vx6 direct", 7302: "vx6 via 1 relay", 7303: "vx6 via 2 relays"}


def throughput_part(mode, a, workdir):
    lab = labmod.Lab(workdir / mode)
    try:
        net = Net(lab, mode, ["sinkd", "sinka", "sinkb"], FORWARDS)
        say(f"{mode}: warming up the forwards and waiting for the circuits")
        warm(net, FORWARDS)
        paths = {lp: (net.active(oi)["path"] if "relay" in via else []) for oi, lp, via in FORWARDS}
        # the direct forward really is direct: the client's session to owner 0 has its address
        sess = [s for s in net.client.status()["sessions"] if s["peer"] == net.owner_homes[0].id]
        assert sess and not sess[0]["remote"].startswith("[fd76:7836:7669:7274:"), sess
        runs = []
        for r in range(a.runs):
            idle_busy = wait_quiet(f"{mode} run {r + 1}")
            before = relay_counters(net)
            js = workdir / f"{mode}-yard-{r}.json"
            cmd = ["python3", str(YARD), "--server-port", "5302"]
            if mode == "loopback":
                cmd.append("--direct")
            for _, lp, _ in FORWARDS:
                cmd += ["--entry", f"{ENTRY_NAMES[lp]}={lp}"]
            cmd += ["--mb", str(a.mb), "--rounds", str(a.rounds), "--rr", str(a.rr),
                    "--connects", str(a.connects), "--json", str(js)]
            say(f"{mode}: run {r + 1}/{a.runs}: {' '.join(cmd)}")
            cp = subprocess.run(net.client_ns.cmd(cmd), capture_output=True, text=True, timeout=1800)
            if cp.returncode != 0:
                raise RuntimeError(f"yardstick failed: {cp.stderr[-3000:]}")
            sys.stderr.write(cp.stdout)
            res = json.load(open(js))
            after = relay_counters(net)
            res["_relay_forwarded"] = {k[:8]: after[k] - before[k] for k in after}
            res["_busy_before"] = idle_busy
            # the relayed circuits are still the ones seen before (no failover during the run)
            res["_paths_after"] = {lp: (net.active(oi)["path"] if net.active(oi) else None)
                                   for oi, lp, via in FORWARDS if "relay" in via}
            runs.append(res)
        # request/response, interleaved in blocks: free scheduling, then everything on one core;
        # on loopback also plain TCP and socat (one userspace TCP relay process, no crypto)
        rr_ports = [lp for _, lp, _ in FORWARDS]
        pids = [d.pid for d in [*net.relays, *net.owners, net.client]] + [p.pid for p in net.sinks.values()]
        if mode == "loopback" and shutil.which("socat"):
            socat = lab.spawn("socat", net.client_ns, ["socat", f"TCP-LISTEN:{SOCAT_PORT},bind=127.0.0.1,fork,reuseaddr",
                                                       f"TCP:127.0.0.1:{SINK_PORT}"])
            net.client_ns.wait_listening(SOCAT_PORT, what="socat")
            rr_ports = [SINK_PORT, SOCAT_PORT] + rr_ports
            pids.append(socat.pid)
        elif mode == "loopback":
            rr_ports = [SINK_PORT] + rr_ports
        rr = {}
        for placement in ("free", "one core"):
            rr[placement] = []
            for r in range(a.runs):
                busy = wait_quiet(f"{mode} request/response ({placement}) {r + 1}")
                if placement == "one core":
                    pin(pids, "1")
                try:
                    res = run_rr(net.client_ns, rr_ports, a, pin_core=1 if placement == "one core" else None)
                finally:
                    if placement == "one core":
                        pin(pids, "0-1")
                res["_busy_before"] = busy
                rr[placement].append(res)
                say(f"{mode}: rr {placement} {r + 1}: " + ", ".join(
                    f"{p} p50 {v['p50']:.0f} p99 {v['p99']:.0f}" for p, v in res.items() if not p.startswith("_")))
        for d in [*net.relays, *net.owners, net.client]:
            assert d.alive(), f"{d.name} died: {d.tail()}"
        return {"mode": mode, "runs": runs, "rr": rr, "rr_ports": rr_ports, "paths": {str(k): [p[:8] for p in v] for k, v in paths.items()},
                "yard_cmd": " ".join(shlex.quote(c) for c in cmd), "daemons": net.commands()}
    finally:
        if a.keep:
            say(f"{mode}: logs kept in {lab.logdir}")
        lab.close()


def rr_worker(ports, blocks, per_block):
    """Interleaved request/response: one open connection per port ('E' echo), 64-byte messages,
    `blocks` rounds of `per_block` round trips on each port in turn. Prints JSON on stdout."""
    conns = {}
    for p in ports:
        c = socket.create_connection(("127.0.0.1", p), timeout=30)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b"E")
        conns[p] = c
    msg = os.urandom(64)
    lat = {p: [] for p in ports}
    block_p50 = {p: [] for p in ports}
    for _ in range(blocks):
        for p in ports:
            c, mine = conns[p], []
            for _ in range(per_block):
                t0 = time.perf_counter()
                c.sendall(msg)
                got = b""
                while len(got) < 64:
                    d = c.recv(64 - len(got))
                    if not d:
                        raise ConnectionError(f"port {p} closed")
                    got += d
                mine.append((time.perf_counter() - t0) * 1e6)
            lat[p] += mine
            block_p50[p].append(statistics.median(mine))
    out = {}
    for p in ports:
        xs = sorted(lat[p])
        out[str(p)] = {"p50": xs[len(xs) // 2], "p99": xs[int(len(xs) * 0.99) - 1], "n": len(xs),
                       "block_p50": block_p50[p]}
    print(json.dumps(out))


def run_rr(ns, ports, a, pin_core=None):
    cmd = ["python3", str(Path(__file__).resolve()), "--rr-worker", ",".join(map(str, ports)),
           "--rr-blocks", str(a.rr_blocks), "--rr-per-block", str(a.rr_per_block)]
    if pin_core is not None:
        cmd = ["taskset", "-c", str(pin_core)] + cmd
    cp = subprocess.run(ns.cmd(cmd), capture_output=True, text=True, timeout=900)
    if cp.returncode != 0:
        raise RuntimeError(f"rr worker failed: {cp.stderr[-2000:]}")
    return json.loads(cp.stdout)


def pin(pids, cores):
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cores, str(pid)], check=True, capture_output=True)


def report_throughput(res):
    mode = res["mode"]
    runs = res["runs"]
    names = [n for n in runs[0] if not n.startswith("_")]
    base = "vx6 direct"
    out = []
    title = {"loopback": "all daemons on ::1 in one namespace",
             "veth": "each daemon in its own namespace, 1500-byte veth links on a bridge"}[mode]
    out.append(f"#### {mode}: {title}\n")
    out.append(f"Per run (each row of one run is one interleaved yardstick run; {len(runs)} runs):\n")
    hdr = ("| run | " + " | ".join(f"{n} Gbit/s" for n in names)
           + " | 1 relay / direct | 2 relays / direct | rr p50 µs (" + " / ".join(names) + ") | machine busy before |")
    out.append(hdr)
    out.append("| --- |" + " ---: |" * (len(names) + 4))
    for i, r in enumerate(runs):
        g = {n: r[n]["throughput"] * 8 / 1000 for n in names}
        out.append(f"| {i + 1} | " + " | ".join(f"{g[n]:.2f}" for n in names)
                   + f" | {g['vx6 via 1 relay'] / g[base]:.2f} | {g['vx6 via 2 relays'] / g[base]:.2f} | "
                   + " / ".join(f"{r[n]['rr_p50']:.0f}" for n in names) + f" | {r.get('_busy_before', 0):.0%} |")
    out.append("")
    out.append("Medians over the runs:\n")
    out.append("| entry | Gbit/s | x vx6 direct | rr p50 µs | rr p99 µs | connect ms |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        label = "plain TCP on loopback (no tunnel)" if n == "direct" else n
        gb = med([r[n]["throughput"] * 8 / 1000 for r in runs])
        ratio = med([r[n]["throughput"] / r[base]["throughput"] for r in runs])
        out.append(f"| {label} | {gb:.2f} | {ratio:.2f} | {med([r[n]['rr_p50'] for r in runs]):.0f} | "
                   f"{med([r[n]['rr_p99'] for r in runs]):.0f} | {med([r[n]['connect_ms'] for r in runs]):.2f} |")
    out.append("")
    p50 = {n: [r[n]["rr_p50"] for r in runs] for n in names}
    hop1 = [b - a for a, b in zip(p50[base], p50["vx6 via 1 relay"])]
    hop2 = [(c - a) / 2 for a, c in zip(p50[base], p50["vx6 via 2 relays"])]
    second = [c - b for b, c in zip(p50["vx6 via 1 relay"], p50["vx6 via 2 relays"])]
    out.append(f"Request/response p50 added per relay hop (per run; median): 1 relay - direct "
               f"{', '.join(f'{x:.0f}' for x in hop1)} µs (median {med(hop1):.0f}); "
               f"(2 relays - direct) / 2 {', '.join(f'{x:.0f}' for x in hop2)} µs (median {med(hop2):.0f}); "
               f"2 relays - 1 relay {', '.join(f'{x:.0f}' for x in second)} µs (median {med(second):.0f}).\n")
    out.append("The yardstick's request/response runs entry after entry (noisy between entries); the "
               "interleaved measurement below is the one for latency.\n")
    pname = {str(SINK_PORT): "plain TCP (sink server, no tunnel)", str(SOCAT_PORT): "socat in front of the sink (one userspace TCP relay, no crypto)",
             "7301": "vx6 direct",
             "7302": "vx6 via 1 relay", "7303": "vx6 via 2 relays"}
    per_hop = {}
    for placement, rruns in res.get("rr", {}).items():
        ports = [str(p) for p in res["rr_ports"]]
        n = rruns[0][ports[-1]]["n"]
        out.append(f"Request/response, 64 bytes, {n} round trips per entry and run in interleaved blocks, "
                   f"{len(rruns)} runs, scheduling: {placement}"
                   + (" (every daemon, the sink server and the client pinned to core 1)" if placement == "one core" else "")
                   + ":\n")
        out.append("| entry | p50 µs per run | p99 µs per run | p50 µs (median of runs) | p99 µs (median of runs) |")
        out.append("| --- | --- | --- | ---: | ---: |")
        for p in ports:
            p50s = [r[p]["p50"] for r in rruns]
            p99s = [r[p]["p99"] for r in rruns]
            out.append(f"| {pname[p]} | {', '.join(f'{x:.0f}' for x in p50s)} | {', '.join(f'{x:.0f}' for x in p99s)} | "
                       f"{med(p50s):.0f} | {med(p99s):.0f} |")
        # per hop: paired per block (same moment), then the median over blocks and runs
        d1 = [b - a_ for r in rruns for a_, b in zip(r["7301"]["block_p50"], r["7302"]["block_p50"])]
        d2 = [(c - a_) / 2 for r in rruns for a_, c in zip(r["7301"]["block_p50"], r["7303"]["block_p50"])]
        d21 = [c - b for r in rruns for b, c in zip(r["7302"]["block_p50"], r["7303"]["block_p50"])]
        per_hop[placement] = (med(d1), med(d2), med(d21))
        out.append("")
        socat = ""
        if str(SOCAT_PORT) in ports:
            ds = [b - a_ for r in rruns for a_, b in zip(r[str(SINK_PORT)]["block_p50"], r[str(SOCAT_PORT)]["block_p50"])]
            socat = f" For comparison, socat adds {med(ds):.0f} µs to plain TCP."
        out.append(f"Added per relay hop ({placement}; median over blocks of the paired block medians): "
                   f"1 relay − direct **{med(d1):.0f} µs**, (2 relays − direct) / 2 **{med(d2):.0f} µs**, "
                   f"2 relays − 1 relay {med(d21):.0f} µs.{socat}\n")
    fw = [r["_relay_forwarded"] for r in runs]
    out.append(f"Paths (relay id prefixes): 1 relay {res['paths']['7302']}, 2 relays {res['paths']['7303']}; "
               f"relay_forwarded per relay and run: {fw}\n")
    out.append(f"Yardstick (in the client's namespace): `{res['yard_cmd']}`\n")
    return "\n".join(out), per_hop


# --------------------------------------------------------------------------------------------
# part 3: the relay's datagrams per second on one core


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def core_busy(core):
    """(busy, total, [user, nice, system, idle, iowait, irq, softirq, steal]) ticks of one core."""
    for line in open("/proc/stat"):
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:9]]
            idle = v[3] + v[4]
            return sum(v) - idle, sum(v), v
    raise KeyError(core)


def core_split(b0, b1):
    tot = max(1, b1[1] - b0[1])
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: round((y - x) / tot, 3) for n, x, y in zip(names, b0[2], b1[2])}


def udp6_drops(ns, port):
    cp = ns.run(["cat", "/proc/net/udp6"])
    for line in cp.stdout.splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == port:
            return int(f[-1])
    return None


def nft(ns, script):
    cp = subprocess.run(ns.cmd(["nft", "-f", "-"]), input=script, capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError(f"nft failed: {cp.stderr}\n{script}")


def nft_counter(ns):
    cp = ns.run(["nft", "-j", "list", "counter", "inet", "vx6bench", "relayed"])
    for o in json.loads(cp.stdout)["nftables"]:
        if "counter" in o:
            return o["counter"]["packets"]
    raise RuntimeError(cp.stdout)


PPS_MODES = [  # name, drop at egress?, size, gso segments, seconds (full / quick)
    ("64 B, to an egress drop", True, 64, 1, 4),
    ("64 B, delivered to a socket", False, 64, 1, 4),
    ("1200 B, to an egress drop", True, 1200, 1, 3),
    ("64 B GSO trains of 64, to an egress drop", True, 64, 64, 3),
]


def pps_part(a, workdir, blaster, run_i):
    busy = wait_quiet(f"pps run {run_i + 1}")
    lab = labmod.Lab(workdir / f"pps-{run_i}")
    try:
        fwd = [(0, 7310, ["--via", "relay", "--hops", "1"])]
        net = Net(lab, "loopback", ["sinkp"], fwd, relays=2, port_base=4600, service="echo")
        ns = net.client_ns
        for d in net.relays:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(d.pid)], check=True, capture_output=True)
        # the sender alone, into a socket nobody reads (its ceiling on core 1)
        alone_sink = ns.call(lambda: _bound_udp("::1", 4690))
        cp = subprocess.run(ns.cmd(["taskset", "-c", "1", blaster, "::1", 4691, "::1", 4690, "1000000001", 64,
                                    2, 64, 1]), capture_output=True, text=True, timeout=60)
        alone_sink.close()
        sender_alone = json.loads(cp.stdout)["pps"]
        say(f"pps run {run_i + 1}: the sender alone into an unread socket: {sender_alone / 1e3:.0f} k/s")
        warm(net, fwd)
        active = net.active(0)
        relay = net.relay_by_id(active["path"][0])
        rport = int(relay.listen.rsplit(":", 1)[1])
        cport = int(net.client.listen.rsplit(":", 1)[1])
        oport = int(net.owners[0].listen.rsplit(":", 1)[1])
        cap = lab.dir / "client-to-relay.pcap"
        tcpd = lab.spawn("tcpdump", ns, ["tcpdump", "--immediate-mode", "-i", "lo", "-U", "-s", "200", "-c", "500", "-w", str(cap),
                                          f"udp and src port {cport} and dst port {rport}"])
        time.sleep(1.0)
        for _ in range(20):
            labmod.echo_roundtrip(ns, 7310, os.urandom(256))
        time.sleep(0.5)
        tcpd.stop(timeout=3)
        samples = [p for src, sp, dp, p in read_pcap_udp(cap) if sp == cport and dp == rport and p[:1] == b"\x10"]
        assert samples, "captured no data datagram from the client to its relay"
        header = samples[0][:5]
        say(f"pps run {run_i + 1}: relay {relay.name} on [::1]:{rport}, label {header[1:].hex()}, next hop [::1]:{oport}")
        # the client's address is free once it is gone; the relay keeps the circuit until its
        # session with the client times out (30 s)
        net.client.kill9()
        net.owners[0].kill9()
        killed = time.monotonic()
        sink = ns.call(lambda: _bound_udp("::1", oport))
        nft(ns, "table inet vx6bench {\n counter relayed { }\n chain out { type filter hook output priority 0; policy accept; }\n}\n")
        lab.on_close(lambda: subprocess.run(ns.cmd(["nft", "delete", "table", "inet", "vx6bench"]), capture_output=True))
        rows, profile = [], None
        for name, drop, size, gso, secs in PPS_MODES:
            if a.quick:
                secs = 2
            nft(ns, f"flush chain inet vx6bench out\nadd rule inet vx6bench out udp sport {rport} udp dport {oport} "
                    f"counter name relayed{' drop' if drop else ''}\n")
            c0 = relay.status()["counters"]
            n0, t0, b0, d0 = nft_counter(ns), cpu_ticks(relay.pid), core_busy(0), udp6_drops(ns, rport)
            perf = None
            if a.perf and not rows:
                pdata = lab.dir / "relay.perf.data"
                perf = subprocess.Popen(["perf", "record", "-F", "2999", "-g", "-p", str(relay.pid), "-o", str(pdata),
                                         "--", "sleep", str(max(1, secs - 1))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cp = subprocess.run(ns.cmd(["taskset", "-c", "1", blaster, "::1", cport, "::1", rport, header.hex(),
                                        size, secs, 64, gso]), capture_output=True, text=True, timeout=secs + 30)
            if perf is not None:
                perf.wait(30)
                rep = subprocess.run(["perf", "report", "-i", str(pdata), "--stdio", "--children",
                                      "--sort", "symbol", "--percent-limit", "0.2", "-g", "none"],
                                     capture_output=True, text=True)
                keep = ("__sys_sendmsg", "__x64_sys_recvmmsg", "__x64_sys_epoll_wait", "vx6")
                profile = "\n".join(" ".join(l.split()[:2] + l.split()[3:4]) for l in rep.stdout.splitlines()
                                     if any(k in l for k in keep) and not l.startswith("#"))
                say(f"pps run {run_i + 1}: relay profile during '{name}':\n{profile}")
            if cp.returncode != 0:
                raise RuntimeError(f"udp_blast failed: {cp.stderr}")
            b = json.loads(cp.stdout)
            time.sleep(0.05)  # the relay drains its socket
            c1 = relay.status()["counters"]
            n1, t1, b1, d1 = nft_counter(ns), cpu_ticks(relay.pid), core_busy(0), udp6_drops(ns, rport)
            hz = os.sysconf("SC_CLK_TCK")
            fwd_n = c1["relay_forwarded"] - c0["relay_forwarded"]
            rows.append({
                "mode": name, "size": size, "gso": gso, "seconds": b["seconds"],
                "sent_pps": b["pps"], "forwarded_pps": fwd_n / b["seconds"],
                "nft_pps": (n1 - n0) / b["seconds"] if gso == 1 else None,
                "relay_cpu": (t1 - t0) / hz / b["seconds"],
                "core0_busy": (b1[0] - b0[0]) / max(1, b1[1] - b0[1]),
                "core0": core_split(b0, b1),
                "socket_drops_pps": (d1 - d0) / b["seconds"] if d0 is not None and d1 is not None else None,
                "unknown_label": c1["relay_unknown_label"] - c0["relay_unknown_label"],
                "wrong_source": c1["relay_wrong_source"] - c0["relay_wrong_source"],
            })
            say(f"pps run {run_i + 1}: {name}: sent {b['pps'] / 1e3:.0f} k/s, forwarded {fwd_n / b['seconds'] / 1e3:.0f} k/s, "
                f"relay cpu {rows[-1]['relay_cpu']:.2f}, core 0 {rows[-1]['core0']}, socket drops {rows[-1]['socket_drops_pps'] or 0:.0f}/s, "
                f"unknown label {rows[-1]['unknown_label']}")
        window = time.monotonic() - killed
        sink.close()
        assert relay.alive(), f"the relay died: {relay.tail()}"
        return {"rows": rows, "window_s": window, "busy_before": busy, "sender_alone_pps": sender_alone, "profile": profile if a.perf else None, "relay_cmd": " ".join(shlex.quote(x) for x in relay.argv),
                "label": header[1:].hex()}
    finally:
        if a.keep:
            say(f"pps: logs kept in {lab.logdir}")
        lab.close()


def _bound_udp(host, port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((host, port))
    return s


def report_pps(runs, blaster_cmd):
    out = ["| mode | sender k/s | forwarded k/s (relay_forwarded) | nft count k/s | relay socket drops k/s | relay CPU (core 0 busy) | forwarded per relay CPU-second, k | forwarded k/s per run |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, *_ in PPS_MODES:
        rows = [r for run in runs for r in run["rows"] if r["mode"] == name and r["unknown_label"] == 0]
        if not rows:
            continue
        k = lambda key: med([r[key] for r in rows])  # noqa: E731
        nf = k("nft_pps")
        per = ", ".join(f"{r['forwarded_pps'] / 1e3:.0f}" for r in rows)
        out.append(f"| {name} | {k('sent_pps') / 1e3:.0f} | **{k('forwarded_pps') / 1e3:.0f}** | "
                   f"{'—' if nf is None else f'{nf / 1e3:.0f}'} | {(k('socket_drops_pps') or 0) / 1e3:.0f} | "
                   f"{k('relay_cpu'):.2f} ({k('core0_busy'):.2f}) | {med([r['forwarded_pps'] / max(r['relay_cpu'], 1e-3) for r in rows]) / 1e3:.0f} | {per} |")
    out.append("")
    out.append("The sender alone (64 B into a bound socket nobody reads, same core, same run): "
               + ", ".join(f"{r['sender_alone_pps'] / 1e3:.0f} k/s" for r in runs) + ".")
    out.append("")
    for i, r in enumerate(runs):
        if r.get("profile"):
            out.append(f"Where the relay's time went (perf record -g on the relay, run {i + 1}, mode "
                       f"'{PPS_MODES[0][0]}'; children %, self %, symbol):\n")
            out.append("```text\n" + r["profile"] + "\n```\n")
            break
    out.append("Machine busy before each pps run (other processes): "
               + ", ".join(f"{r['busy_before']:.0%}" for r in runs) + ".")
    out.append("")
    out.append(f"Sender: `{blaster_cmd}` (pinned to core 1 with taskset, in the relay's namespace). "
               f"Relay: `{runs[0]['relay_cmd']}`, then `taskset -a -p -c 0 PID`.")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# part 4: failover stall (tests/e2e/test_relays.py's mid-transfer kill)


def failover_once(workdir, i):
    busy = wait_quiet(f"failover {i + 1}")
    lab = labmod.Lab(workdir / f"failover-{i}")
    try:
        owner_ns = lab.node("owner")
        client_ns = lab.node("client")
        relay_ns = [lab.node(f"r{k}") for k in range(6)]
        owner_home, client_home = lab.home("alice"), lab.home("bob")
        relay_homes = [lab.home(f"relay{k}") for k in range(6)]
        lab.server(owner_ns, 7000)
        at = lambda ns: f"[{ns.addr}]:4433"  # noqa: E731
        relays = []
        for k, (ns, home) in enumerate(zip(relay_ns, relay_homes)):
            extra = ["--relay"] + ([] if k == 0 else ["--bootstrap", at(relay_ns[0])])
            relays.append(lab.start_node(ns, home, transport="quic", extra=extra))
        for d in relays:
            d.wait_log("published", timeout=60)
        owner = lab.start_node(owner_ns, owner_home, transport="quic", serve=["plain=127.0.0.1:7000"],
                               allow=[client_home.id], extra=["--bootstrap", at(relay_ns[0])])
        owner.wait_log("published", timeout=60)
        client = lab.start_node(client_ns, client_home, transport="quic",
                                extra=["--bootstrap", at(relay_ns[0]), "--forward", "alice.plain=127.0.0.1:2300",
                                       "--via", "relay"])
        retry(lambda: labmod.echo_roundtrip(client_ns, 2300, b"warm-up"), timeout=90)

        def circuits():
            return [c for c in client.status()["circuits"] if c["role"] == "client"]

        until(lambda: len([c for c in circuits() if c["ready"]]) == 2, 60, lambda: f"no standby: {circuits()}")
        total = 100 * 1024 * 1024
        result, errors = {}, []

        def transfer():
            labmod.timed_download(client_ns, 2300, total, result)

        def runner():
            try:
                client_ns.call(transfer, timeout=240)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        result["t0"] = time.monotonic()
        t = threading.Thread(target=runner, daemon=True)
        t.start()
        until(lambda: result.get("received", 0) > 10 * 1024 * 1024 or errors, 60, lambda: "the transfer did not start")
        active = [c for c in circuits() if c["active"] and c["ready"]][0]
        victim = relays[[h.id for h in relay_homes].index(active["path"][0])]
        fo0 = client.status()["counters"]["circuit_failovers"]
        victim.kill9()
        killed = time.monotonic()
        killed_at_t = killed - result["t0"]
        killed_at = result.get("received", 0)
        # when the client moved to its standby (polling its status; ~10 ms resolution)
        switched_ms = None
        while time.monotonic() - killed < 10:
            if client.status()["counters"]["circuit_failovers"] > fo0:
                switched_ms = (time.monotonic() - killed) * 1000
                break
        t.join(240)
        c = client.status()["counters"]
        after = [c2 for c2 in circuits() if c2["active"]]
        out = {"ok": not errors and bool(result.get("hash_ok")), "errors": errors,
               "longest_ms": result.get("longest", 0) * 1000, "longest_at_mib": result.get("longest_at", 0) / 2**20,
               "killed_at_mib": killed_at / 2**20, "killed_at_s": round(killed_at_t, 3),
               "failover_seen_ms": switched_ms,
               "resumed_after_kill_ms": next(((t_ - killed_at_t) * 1000 for t_, g in result.get("gaps") or []
                                              if t_ > killed_at_t), None),
               "gaps_over_50ms": result.get("gaps"), "failovers": c["circuit_failovers"],
               "duration_s": (result.get("end", time.monotonic()) - result["t0"]),
               "rtt_ms_after": [x.get("rtt_ms") for x in after], "busy_before": busy}
        if not out["ok"]:
            out["logs"] = {p.name: p.tail(30) for p in lab.procs if p.name.startswith("vx6")}
        return out
    finally:
        lab.close()


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short run of each part (about 3 minutes)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"parts to run (default {','.join(PARTS)})")
    ap.add_argument("--runs", type=int, help="yardstick runs per network and pps runs (default 3; quick 1)")
    ap.add_argument("--failovers", type=int, help="failover repetitions (default 5; quick 2)")
    ap.add_argument("--mb", type=int, help="MB per bulk upload (default 512; quick 128)")
    ap.add_argument("--rounds", type=int, help="upload rounds per yardstick run, best kept (default 3; quick 2)")
    ap.add_argument("--rr", type=int, help="request/responses per entry (default 5000; quick 2000)")
    ap.add_argument("--connects", type=int, default=20)
    ap.add_argument("--rr-blocks", type=int, help="interleaved request/response: blocks (default 40; quick 10)")
    ap.add_argument("--rr-per-block", type=int, default=250, help="round trips per entry and block (default 250)")
    ap.add_argument("--rr-worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help="write every raw figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (daemon logs)")
    ap.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                    help="before each measurement wait up to S seconds for the machine to be under "
                         "30%% busy (other sessions' builds); 0: do not wait (default 120)")
    ap.add_argument("--perf", action="store_true", help="pps: profile the relay (perf record) in the first mode")
    a = ap.parse_args()
    if a.rr_worker:
        rr_worker([int(p) for p in a.rr_worker.split(",")], a.rr_blocks, a.rr_per_block)
        return
    q = a.quick
    a.rr_blocks = a.rr_blocks or (10 if q else 40)
    a.runs = a.runs or (1 if q else 3)
    a.failovers = a.failovers or (2 if q else 5)
    a.mb = a.mb or (128 if q else 512)
    a.rounds = a.rounds or (2 if q else 3)
    a.rr = a.rr or (2000 if q else 5000)
    QUIET["wait_s"] = a.wait_quiet
    parts = [p for p in a.only.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p!r} (known: {', '.join(PARTS)})")
    if os.geteuid() != 0:
        sys.exit("relay_bench: needs root (network namespaces, nftables, taskset)")
    for tool in ["ip", "tcpdump", "nft", "taskset", "cc"]:
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            sys.exit(f"relay_bench: {tool} is missing (apt-get install iproute2 tcpdump nftables util-linux gcc)")
    if not os.access(VX6_BIN, os.X_OK):
        sys.exit(f"relay_bench: no vx6 binary at {VX6_BIN}: cargo build --release -p vx6-runtime-mio")
    if not YARD.is_file():
        sys.exit(f"relay_bench: no yardstick at {YARD} (set TUNNEL_BENCH)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    labmod.sweep_stale_namespaces()
    work = Path(tempfile.mkdtemp(prefix="vx6-relay-bench."))
    invocation = "python3 bench/relay_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    raw = {"invocation": invocation, "started": time.strftime("%Y-%m-%d %H:%M"),
           "vx6": subprocess.run([VX6_BIN, "--version"], capture_output=True, text=True).stdout.strip(),
           "binary": VX6_BIN,
           "commit": os.environ.get("VX6_BENCH_COMMIT") or (
               subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()
               if Path(VX6_BIN).resolve().is_relative_to(REPO) else f"unknown (binary {VX6_BIN})")}
    md = [f"## Relay benchmark, {raw['started']} ({os.cpu_count()} cores, Linux {platform.release()}, "
          f"vx6 {raw['commit']})\n", f"Command: `{invocation}` (vx6 binary: `{VX6_BIN}`)\n"]
    try:
        for mode in ("loopback", "veth"):
            if mode in parts:
                t0 = time.monotonic()
                res = throughput_part(mode, a, work)
                raw[mode] = res
                text, _ = report_throughput(res)
                md.append(text)
                md.append(f"({mode} part: {time.monotonic() - t0:.0f} s)\n")
                say(text)
        if "pps" in parts:
            blaster = str(work / "udp_blast")
            subprocess.run(["cc", "-O2", "-o", blaster, str(HERE / "udp_blast.c")], check=True)
            runs = []
            for r in range(a.runs):
                runs.append(pps_part(a, work, blaster, r))
            raw["pps"] = runs
            secs = 2 if q else "SECONDS"
            text = report_pps(runs, f"udp_blast ::1 CLIENT_PORT ::1 RELAY_PORT 10<label> SIZE {secs} 64 GSO")
            md.append("#### pps: the userspace relay on one core, small datagrams\n")
            md.append(text + "\n")
            say(text)
        if "failover" in parts:
            outs = []
            for i in range(a.failovers):
                say(f"failover {i + 1}/{a.failovers}")
                o = failover_once(work, i)
                say(f"failover {i + 1}: {json.dumps({k: v for k, v in o.items() if k != 'logs'})}")
                outs.append(o)
            raw["failover"] = outs
            ok = [o["longest_ms"] for o in outs if o["ok"]]
            md.append("#### failover: first relay of the active circuit killed during a 100 MB download\n")
            md.append("| repetition | completed, same hash | longest stall ms | killed at MiB | client on its standby, ms after the kill | data again, ms after the kill | gaps > 50 ms (s since start, ms) | whole transfer s | machine busy before |")
            md.append("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
            fmt = lambda x: "—" if x is None else f"{x:.0f}"  # noqa: E731
            for i, o in enumerate(outs):
                md.append(f"| {i + 1} | {'yes' if o['ok'] else 'NO: ' + str(o['errors'])} | {o['longest_ms']:.0f} | "
                          f"{o['killed_at_mib']:.0f} | {fmt(o['failover_seen_ms'])} | {fmt(o['resumed_after_kill_ms'])} | "
                          f"{o['gaps_over_50ms']} | {o['duration_s']:.2f} | {o['busy_before']:.0%} |")
            if ok:
                md.append(f"\nLongest stall over {len(ok)} completed transfers: min {min(ok):.0f} ms, "
                          f"median {statistics.median(ok):.0f} ms, max {max(ok):.0f} ms.\n")
    finally:
        if a.out:
            with open(a.out, "w") as f:
                json.dump(raw, f, indent=1, default=str)
        if a.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(md))


if __name__ == "__main__":
    main()
