"""Relay paths across eight daemons in their own namespaces: OpenSSH to `alice.ssh` over two
relays; `auto` when every direct route between client and owner is blackholed; packet captures
on every relay that never contain what the client sends; a relay that drops a datagram carrying
a valid label from the wrong address; and the relay on the active circuit killed during a
100 MB transfer, which completes with the same hash (the longest stall is reported).

Relays carry QUIC (the end-to-end session runs inside the circuit); the relayed forward uses it
whatever the daemons' session transport, so these tests run once."""

import json
import re
import os
import socket
import struct
import threading
import time

import pytest

import lab as labmod
from lab import VX6_BIN, read_pcap_udp, retry

RELAYS = 6
PLAIN_PORT = 7000


def until(cond, timeout, what):
    """Waits until cond() is true; fails naming what it waited for."""

    def check():
        assert cond(), what()

    return retry(check, timeout=timeout)


def at(ns):
    return f"[{ns.addr}]:4433"


class RelayNet:
    """Owner (alice: ssh and a plain TCP service), six relays (or `relays`), and a client (bob)
    whose forwards are given per test. Everyone enters through the first relay."""

    def __init__(self, lab, client_forwards, *, client_extra=(), sshd=True, transport="quic",
                 relays=RELAYS, owner_extra=()):
        self.lab = lab
        self.owner_ns = lab.node("owner")
        self.client_ns = lab.node("client")
        self.relay_ns = [lab.node(f"r{i}") for i in range(relays)]
        self.owner_home = lab.home("alice")
        self.client_home = lab.home("bob")
        self.relay_homes = [lab.home(f"relay{i}") for i in range(relays)]
        lab.check_link(self.client_ns, self.owner_ns)
        self.sshd = labmod.Sshd(lab, self.owner_ns, port=22) if sshd else None
        self.plain = lab.server(self.owner_ns, PLAIN_PORT)
        self.relays = []
        for i, (ns, home) in enumerate(zip(self.relay_ns, self.relay_homes)):
            extra = ["--relay"] + ([] if i == 0 else ["--bootstrap", at(self.relay_ns[0])])
            self.relays.append(lab.start_node(ns, home, transport=transport, extra=extra))
        for d in self.relays:
            d.wait_log("published", timeout=30)
        self.owner = lab.start_node(
            self.owner_ns, self.owner_home, transport=transport,
            serve=["ssh=127.0.0.1:22", f"plain=127.0.0.1:{PLAIN_PORT}"],
            allow=[self.client_home.id],
            extra=["--bootstrap", at(self.relay_ns[0])] + list(owner_extra),
        )
        self.owner.wait_log("published", timeout=30)
        argv = ["--bootstrap", at(self.relay_ns[0])]
        for f in client_forwards:
            argv += ["--forward", f[0]] + list(f[1:])
        self.client = lab.start_node(
            self.client_ns, self.client_home, transport=transport, extra=argv + list(client_extra),
        )

    def relay_by_id(self, node_id):
        for d, h in zip(self.relays, self.relay_homes):
            if h.id == node_id:
                return d
        raise KeyError(node_id)

    def client_circuits(self):
        return [c for c in self.client.status()["circuits"] if c["role"] == "client"]

    def active_circuit(self):
        active = [c for c in self.client_circuits() if c["active"] and c["ready"]]
        assert active, f"no active circuit: {self.client_circuits()}"
        return active[0]

    def ssh(self, port, command):
        cp = self.client_ns.run(self.sshd.ssh_argv(port, command), timeout=40, check=False)
        assert cp.returncode == 0 and cp.stdout.strip() == command.split(" ", 1)[1], (
            f"ssh printed {cp.stdout!r}, stderr {cp.stderr!r}"
        )


@pytest.mark.timeout_s(240)
def test_ssh_over_two_relays(lab, transport, figure):
    net = RelayNet(lab, [("alice.ssh=127.0.0.1:2222", "--via", "relay", "--hops", "2")], transport=transport)
    _, attempts = retry(lambda: net.ssh(2222, "echo relayed"), timeout=60)
    figure(f"ssh over a 2-relay path ({transport})", f"worked after {attempts} attempt(s)")

    circuits = net.client_circuits()
    active = net.active_circuit()
    assert len(active["path"]) == 2
    assert net.owner_home.id not in active["path"] and net.client_home.id not in active["path"]
    assert len(active["limits"]) == 2, "each relay states its limits in its reply"
    if transport == "tcp":
        # Spliced streams: one circuit (the session inside cannot move to a standby).
        assert len(circuits) == 1, json.dumps(circuits, indent=1)
        for hop in active["path"]:
            st = net.relay_by_id(hop).status()
            assert any(c["bytes"] > 0 for c in st["circuits"]), st["circuits"]
            for c in st["circuits"]:
                assert not {net.client_home.id, net.owner_home.id} <= set(c["path"]), c
        return
    until(lambda: len([c for c in net.client_circuits() if c["ready"]]) == 2,
          20, lambda: f"no standby: {net.client_circuits()}")
    circuits = net.client_circuits()
    standby = [c for c in circuits if not c["active"]][0]
    assert not set(standby["path"]) & set(active["path"]), "the standby runs over other relays"

    # The client and the owner never hold a session with each other's real address.
    status = net.client.status()
    for s in status["sessions"]:
        if s["peer"] == net.owner_home.id:
            assert s["remote"].startswith("[fd76:7836:7669:7274:"), s
    # Each relay on the path relayed; its circuit knows only its neighbours.
    for hop in active["path"]:
        st = net.relay_by_id(hop).status()
        assert st["counters"]["relay_forwarded"] > 0, st["counters"]
        for c in st["circuits"]:
            assert not {net.client_home.id, net.owner_home.id} <= set(c["path"]), c

    cp = net.client_ns.run(
        [VX6_BIN, "path", "--home", net.client_home.path, "alice.ssh"], timeout=30, check=False
    )
    assert cp.returncode == 0, cp.stderr
    assert "chosen now" in cp.stdout, cp.stdout
    # The path in use and the standby, each with its relays, then a fresh choice and why.
    assert re.search(r"^active: relay \S+ > \S+", cp.stdout, re.M), cp.stdout
    assert re.search(r"^standby: relay \S+ > \S+", cp.stdout, re.M), cp.stdout
    assert "hop 2" in cp.stdout, cp.stdout
    text = net.client_ns.run([VX6_BIN, "status", "--home", net.client_home.path], timeout=30).stdout
    assert "active" in text and "standby" in text, text


@pytest.mark.timeout_s(240)
def test_auto_connects_when_direct_routes_are_blackholed(lab, figure):
    net = RelayNet(lab, [("alice.ssh=127.0.0.1:2222",)])  # no --via: auto
    # Every direct route between client and owner goes nowhere, both ways.
    net.client_ns.run(["ip", "-6", "route", "add", "blackhole", f"{net.owner_ns.addr}/128"])
    net.owner_ns.run(["ip", "-6", "route", "add", "blackhole", f"{net.client_ns.addr}/128"])
    start = time.monotonic()
    retry(lambda: net.ssh(2222, "echo auto"), timeout=90)
    figure("auto: ssh with direct routes blackholed", f"connected after {time.monotonic() - start:.1f}s")
    c = net.client.status()["counters"]
    assert c["auto_fallbacks"] >= 1, c
    assert c["circuits_built"] >= 1, c


def capture(lab, ns, iface, path):
    p = lab.spawn(f"tcpdump-{ns.name.rsplit('-', 1)[-1]}-{iface}", ns,
                  ["tcpdump", "-i", iface, "-U", "-s", "0", "-w", str(path)])
    time.sleep(1.0)  # tcpdump attaches before traffic starts
    return p


@pytest.mark.timeout_s(300)
def test_relays_see_only_ciphertext_and_drop_spoofed_labels(lab, figure):
    net = RelayNet(lab, [(f"alice.plain=127.0.0.1:2300", "--via", "relay")], sshd=False)
    # Up and carrying before the captures start.
    retry(lambda: labmod.echo_roundtrip(net.client_ns, 2300, b"warm-up"), timeout=60)
    caps = {}
    for i, ns in enumerate(net.relay_ns):
        caps[i] = lab.dir / f"relay{i}.pcap"
        capture(lab, ns, "eth0", caps[i])
    owner_lo = lab.dir / "owner-lo.pcap"
    capture(lab, net.owner_ns, "lo", owner_lo)
    marker = b"VX6-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    labmod.echo_roundtrip(net.client_ns, 2300, marker * 50)
    time.sleep(1.0)
    for p in list(lab.procs):
        if p.name.startswith("tcpdump"):
            p.stop(timeout=5)
    relayed = 0
    for i, path in caps.items():
        raw = open(path, "rb").read()
        assert marker not in raw, f"relay {i} saw the plaintext marker"
        relayed += sum(1 for _, _, _, payload in read_pcap_udp(path) if payload[:1] and payload[0] & 0xF0 == 0x10)
    assert relayed > 0, "the captures saw relay datagrams (the test looked at the traffic)"
    assert marker in open(owner_lo, "rb").read(), "the owner's loopback capture shows the marker"
    figure("relay datagrams captured on relays, none with plaintext", relayed)

    # A label from the client's datagrams to the first relay, replayed from another address.
    active = net.active_circuit()
    first_i = [h.id for h in net.relay_homes].index(active["path"][0])
    first = net.relays[first_i]
    sample = None
    for src, _, _, payload in read_pcap_udp(caps[first_i]):
        if src == net.client_ns.addr and len(payload) > 5 and payload[0] == 0x10:
            sample = payload
    assert sample is not None, "a data datagram from the client to its first relay was captured"
    mallory = lab.node("mallory")
    before = first.status()["counters"]["relay_wrong_source"]

    def spoof():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        for _ in range(20):
            s.sendto(sample[:5] + os.urandom(200), (net.relay_ns[first_i].addr, 4433))
        s.close()

    mallory.call(spoof)

    def counted():
        after = first.status()["counters"]["relay_wrong_source"]
        assert after - before == 20, f"wrong-source drops went from {before} to {after}"

    retry(counted, timeout=10)
    labmod.echo_roundtrip(net.client_ns, 2300, b"still fine")


@pytest.mark.timeout_s(300)
def test_killing_the_active_relay_mid_transfer_keeps_the_stream(lab, figure):
    net = RelayNet(lab, [(f"alice.plain=127.0.0.1:2300", "--via", "relay")], sshd=False)
    retry(lambda: labmod.echo_roundtrip(net.client_ns, 2300, b"warm-up"), timeout=60)
    until(lambda: len([c for c in net.client_circuits() if c["ready"]]) == 2,
          30, lambda: f"no standby: {net.client_circuits()}")
    total = 100 * 1024 * 1024
    result = {}

    def transfer():
        labmod.timed_download(net.client_ns, 2300, total, result)

    errors = []

    def runner():
        try:
            net.client_ns.call(transfer, timeout=240)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    until(lambda: result.get("received", 0) > 10 * 1024 * 1024 or errors,
          60, lambda: "the transfer did not start")
    victim = net.relay_by_id(net.active_circuit()["path"][0])
    victim.kill9()
    killed_at = result.get("received", 0)
    t.join(240)
    assert not errors, errors
    assert result.get("hash_ok"), result
    c = net.client.status()["counters"]
    assert c["circuit_failovers"] >= 1, c
    figure("relay killed during a 100 MB transfer", f"completed, same hash; killed at {killed_at >> 20} MiB")
    figure("longest stall of the transfer (relay killed)", f"{result['longest'] * 1000:.0f} ms")
