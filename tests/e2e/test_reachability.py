"""Reachability: a node that listens on the wildcard address (the README's main command)
publishes the addresses peers can use (its global and unique-local interface addresses, not
loopback or link-local), learns the address peers see it at from several of them, and is
reached by name from another node with no extra flags. `--announce` replaces what is
published."""

import re

import pytest

import lab as labmod
from lab import VX6_BIN, echo_roundtrip, retry
from test_relays import PLAIN_PORT, at, until


def resolve(ns, home, name):
    cp = ns.run([VX6_BIN, "resolve", "--home", home.path, name], timeout=30, check=False)
    return cp.returncode, cp.stdout, cp.stderr


@pytest.mark.timeout_s(180)
def test_wildcard_listener_is_reached_by_name_and_learns_what_peers_see(lab, figure):
    peers_ns = [lab.node(f"p{i}") for i in range(3)]
    peers_home = [lab.home(f"peer{i}") for i in range(3)]
    owner_ns, client_ns = lab.node("owner"), lab.node("client")
    owner_home, client_home = lab.home("alice"), lab.home("bob")
    peers = []
    for i, (ns, home) in enumerate(zip(peers_ns, peers_home)):
        extra = [] if i == 0 else ["--bootstrap", at(peers_ns[0])]
        peers.append(lab.start_node(ns, home, transport="quic", extra=extra))
    lab.server(owner_ns, PLAIN_PORT)
    # The README's main command: the wildcard address, no --announce.
    owner = lab.start_node(
        owner_ns, owner_home, transport="quic", listen_host="::",
        serve=[f"plain=127.0.0.1:{PLAIN_PORT}"], public=True,
        extra=["--bootstrap", at(peers_ns[0])],
    )
    owner.wait_log("published", timeout=30)
    assert "no node record is published" not in owner.log(), owner.tail()

    client = lab.start_node(
        client_ns, client_home, transport="quic",
        forward=["alice.plain=127.0.0.1:2300"], extra=["--bootstrap", at(peers_ns[0])],
    )
    (code, out, err), _ = retry(lambda: _resolved(client_ns, client_home), timeout=60)
    addrs = out.splitlines()[1:]
    assert any(f"[{owner_ns.addr}]:4433" in a for a in addrs), out
    assert not any(re.search(r"\[(::1|fe80:)", a) for a in addrs), f"loopback or link-local published: {out}"
    retry(lambda: echo_roundtrip(client_ns, 2300, b"by name, wildcard listener"), timeout=60)

    # Peers told the owner where they see it; three agree, so it is confirmed, with no
    # translation on this network.
    until(lambda: owner.status().get("reachability", {}).get("observed"), 60,
          lambda: f"no agreed observed address: {owner.status().get('reachability')}")
    r = owner.status()["reachability"]
    assert r["observed"] == [f"[{owner_ns.addr}]:4433"], r
    assert {"family": "ipv6", "mapping": "none"} in r["families"], r
    assert r["reporters"] >= 3, r
    print("owner reachability:", r)


def _resolved(ns, home):
    code, out, err = resolve(ns, home, "alice.plain")
    assert code == 0, err
    return code, out, err


@pytest.mark.timeout_s(120)
def test_announce_replaces_the_published_addresses(lab):
    a_ns, b_ns = lab.node("a"), lab.node("b")
    a_home, b_home = lab.home("alice"), lab.home("bob")
    lab.server(a_ns, PLAIN_PORT)
    a = lab.start_node(
        a_ns, a_home, transport="quic", listen_host="::",
        serve=[f"plain=127.0.0.1:{PLAIN_PORT}"], public=True,
        extra=["--announce", f"[{a_ns.addr}]:4433"],
    )
    b = lab.start_node(b_ns, b_home, transport="quic", extra=["--bootstrap", at(a_ns)])
    (code, out, _), _ = retry(lambda: _resolved(b_ns, b_home), timeout=60)
    assert out.splitlines()[1:] == [f"[{a_ns.addr}]:4433 quic"], out
    # A bad --announce names the problem.
    cp = a_ns.run([VX6_BIN, "node", "--home", lab.home("carol").path, "--listen", "[::]:0",
                   "--announce", "nowhere"], timeout=30, check=False)
    assert cp.returncode != 0 and "--announce" in cp.stderr, cp.stderr


@pytest.mark.timeout_s(180)
@pytest.mark.parametrize("kind,mapping,agreed", [
    ("nat44", "nat_port_preserving", True),
    ("nat44-random", "nat_endpoint_dependent", False),
])
def test_a_node_behind_a_nat_learns_how_it_maps(lab, kind, mapping, agreed):
    import natlab

    peers = [natlab.public_node(lab, f"p{i}") for i in range(4)]
    for i, ns in enumerate(peers):
        extra = [] if i == 0 else ["--bootstrap", f"{peers[0].addr4}:4433"]
        lab.start_node(ns, lab.home(f"peer{i}"), transport="quic", listen_host=ns.addr4,
                       extra=extra)
    site = natlab.Site(lab, kind, "home")
    alice_ns = site.host("alice")
    alice = lab.start_node(alice_ns, lab.home("alice"), transport="quic",
                           extra=["--bootstrap", f"{peers[0].addr4}:4433"])

    def mapped():
        r = alice.status()["reachability"]
        fam = {f["family"]: f["mapping"] for f in r["families"]}
        assert fam.get("ipv4") == mapping and r["reporters"] >= 3, r
        return r

    r, _ = retry(mapped, timeout=60)
    outside = f"{site.public_addr4}:4433"
    if agreed:
        assert r["observed"] == [outside], r
        assert r["published"][0] == outside, r
    else:
        # Every peer sees another port: nothing to agree on, nothing published for it.
        assert r["observed"] == [], r
        assert all(not p.startswith(site.public_addr4) for p in r["published"]), r
    print(f"{kind}: {r}")
