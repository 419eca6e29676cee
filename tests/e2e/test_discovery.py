"""Named direct mode across six daemons: the owner and the client enter the network through
different peers, never meet before, and the client reaches `alice.ssh` with OpenSSH through the
forward. Killing the client's bootstrap peer afterwards does not stop resolution."""

import re

import pytest

import lab as labmod
from lab import VX6_BIN, retry


@pytest.mark.timeout_s(240)
def test_six_daemons_resolve_and_ssh_by_name(lab, transport, figure):
    ns = [lab.node(f"n{i}") for i in range(6)]
    homes = [lab.home(n) for n in ("alice", "bob", "carol", "dave", "erin", "frank")]
    sshd = labmod.Sshd(lab, ns[0], port=22)

    def at(i):
        return f"[{ns[i].addr}]:4433"

    # A chain of relays-to-be: 1 first, then 2..4 each entering through the previous one.
    daemons = {1: lab.start_node(ns[1], homes[1], transport=transport)}
    for i in (2, 3, 4):
        daemons[i] = lab.start_node(ns[i], homes[i], transport=transport, extra=["--bootstrap", at(i - 1)])
    # The owner enters through node 2, the client through node 4.
    lab.start_node(
        ns[0], homes[0], transport=transport, serve=["ssh=127.0.0.1:22"], allow=[homes[5].id],
        extra=["--bootstrap", at(2)],
    )
    client = lab.start_node(
        ns[5], homes[5], transport=transport, forward=["alice.ssh=127.0.0.1:2222"],
        extra=["--bootstrap", at(4)],
    )

    def resolves():
        cp = ns[5].run([VX6_BIN, "resolve", "--home", homes[5].path, "alice.ssh"], timeout=30, check=False)
        assert cp.returncode == 0, f"resolve failed: {cp.stderr.strip()}"
        lines = cp.stdout.split()
        assert lines[0] == homes[0].id, f"resolved to {lines[0]}, expected {homes[0].id}"
        assert at(0) in cp.stdout, cp.stdout

    _, attempts = retry(resolves, timeout=30)
    figure(f"name resolution across 6 daemons ({transport})", f"succeeded after {attempts} attempt(s)")

    def ssh_works():
        cp = ns[5].run(sshd.ssh_argv(2222, "echo hello"), timeout=30, check=False)
        assert cp.stdout.strip() == "hello", f"ssh printed {cp.stdout!r}, stderr {cp.stderr!r}"

    retry(ssh_works, timeout=30)
    client.wait_log("pinned node")

    # The client's entry point goes away; the client knows other peers by now.
    daemons[4].stop(timeout=10)
    retry(resolves, timeout=30)
    retry(ssh_works, timeout=30)

    # Restarted with no --bootstrap, the client re-enters through peers its registry remembers.
    client.stop(timeout=10)
    client = lab.start_node(ns[5], homes[5], transport=transport, forward=["alice.ssh=127.0.0.1:2222"])
    client.wait_log("re-entering through")
    retry(resolves, timeout=30)
    retry(ssh_works, timeout=30)

    # The client's pin of `alice` survived the restart: once a second key claims `alice`, a
    # node without a pin sees two candidates, the client still goes to the key it met first.
    known = (homes[5].path / "known_peers").read_text()
    assert f"alice {homes[0].id}" in known, known
    impostor_home = lab.home("alice")
    impostor = lab.start_node(
        ns[4], impostor_home, transport=transport, serve=["ssh=127.0.0.1:22"], public=True,
        extra=["--bootstrap", at(3)], name="vx6-impostor",
    )

    # Resolving before the second claim is stored would pin `alice` to the first key on node 1
    # too (trust on first use), and a pinned name resolves without complaint: wait until the
    # impostor's claim sits at some node.
    def claim_stored():
        assert re.search(r"published the claim to the name alice at [1-9]", impostor.log()), impostor.tail()

    retry(claim_stored, timeout=30)

    def contested():
        cp = ns[1].run([VX6_BIN, "resolve", "--home", homes[1].path, "alice.ssh"], timeout=30, check=False)
        assert cp.returncode != 0 and "claimed by 2 nodes" in cp.stderr, (cp.stdout, cp.stderr)

    retry(contested, timeout=60)
    retry(resolves, timeout=30)
