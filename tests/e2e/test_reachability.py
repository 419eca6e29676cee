"""Reachability: a node that listens on the wildcard address (the README's main command)
publishes the addresses peers can use (its global and unique-local interface addresses, not
loopback or link-local), learns the address peers see it at from several of them, and is
reached by name from another node with no extra flags. `--announce` replaces what is
published."""

import os
import re
import time

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
    # translation on this network; and their dial-backs from fresh ports arrive: it is public.
    until(lambda: owner.status().get("reachability", {}).get("observed"), 60,
          lambda: f"no agreed observed address: {owner.status().get('reachability')}")
    until(lambda: family(owner, "ipv6").get("dialable") == "reachable", 60,
          lambda: f"no dial-back verdict: {owner.status().get('reachability')}")
    r = owner.status()["reachability"]
    assert r["observed"] == [f"[{owner_ns.addr}]:4433"], r
    assert family(owner, "ipv6")["mapping"] == "none", r
    assert family(owner, "ipv6")["state"] == "public", r
    assert r["via"] == [], r
    assert r["reporters"] >= 3, r
    print("owner reachability:", r)


def family(daemon, name):
    """The status's reachability entry for address family `name` ({} if none yet)."""
    fams = daemon.status().get("reachability", {}).get("families", [])
    return next((f for f in fams if f["family"] == name), {})


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
# Dial-backs from the peers' fresh ports never get through the NAT: behind_nat.
def test_a_node_behind_a_nat_learns_how_it_maps(lab, kind, mapping, agreed):
    import natlab

    # The lab's public nodes share one /24, of which the DHT routing table keeps 2 per bucket
    # (against eclipses): as relays, known from their records, they fill the places the table
    # leaves, as peers of many prefixes would on the internet.
    peers = [natlab.public_node(lab, f"p{i}") for i in range(4)]
    for i, ns in enumerate(peers):
        extra = ["--relay"] + ([] if i == 0 else ["--bootstrap", f"{peers[0].addr4}:4433"])
        lab.start_node(ns, lab.home(f"peer{i}"), transport="quic", listen_host=ns.addr4,
                       extra=extra)
    site = natlab.Site(lab, kind, "home")
    alice_ns = site.host("alice")
    alice = lab.start_node(alice_ns, lab.home("alice"), transport="quic",
                           extra=["--bootstrap", f"{peers[0].addr4}:4433"])

    def mapped():
        r = alice.status()["reachability"]
        fam = {f["family"]: f for f in r["families"]}
        v4 = fam.get("ipv4", {})
        assert v4.get("mapping") == mapping and r["reporters"] >= 3, r
        assert v4.get("state") == "behind_nat", r
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


def _nat_cell(lab, owner_kind, client_kind, *, hold_down=3, sshd=False, v6=False,
              agreed=True, managed=True, transport="quic"):
    """Four public relays, the owner (`plain`, and OpenSSH if `sshd`) behind an `owner_kind`
    site and the client behind a `client_kind` one (IPv4: every node listens on its IPv4
    address), the client's forward managed (`auto` with a policy). Returns (client namespace,
    client daemon, owner daemon, the owner's sshd)."""
    import natlab

    relays = [natlab.public_node(lab, f"r{i}") for i in range(4)]

    def six(kind):
        # fw6 sites have only IPv6, NAT sites only IPv4; open sites use the cell's family.
        return {"fw6": True, "nat44": False, "nat44-random": False}.get(kind, v6)

    o6, c6 = six(owner_kind), six(client_kind)
    # Across families the relays listen on both (dual-stack, both addresses published).
    mixed = o6 != c6
    at_ = lambda ns, v6: f"[{ns.addr6}]:4433" if v6 else f"{ns.addr4}:4433"  # noqa: E731
    listen = lambda ns, v6: ns.addr6 if v6 else ns.addr4  # noqa: E731
    for i, ns in enumerate(relays):
        extra = ["--relay"] + ([] if i == 0 else ["--bootstrap", at_(relays[0], v6 or mixed)])
        lab.start_node(ns, lab.home(f"relay{i}"), transport=transport,
                       listen_host="::" if mixed else listen(ns, v6), extra=extra)
    owner_ns = natlab.Site(lab, owner_kind, "own").host("alice")
    client_ns = natlab.Site(lab, client_kind, "cli").host("bob")
    lab.server(owner_ns, PLAIN_PORT)
    ssh = labmod.Sshd(lab, owner_ns, port=22) if sshd else None
    client_home = lab.home("bob")
    serve = [f"plain=127.0.0.1:{PLAIN_PORT}"] + (["ssh=127.0.0.1:22"] if sshd else [])
    t_owner = time.monotonic()
    owner = lab.start_node(owner_ns, lab.home("alice"), transport=transport,
                           listen_host=listen(owner_ns, o6), serve=serve, allow=[client_home.id],
                           extra=["--bootstrap", at_(relays[0], o6)])
    owner.way_in_after = None
    if owner_kind != "none":
        # Its record names its home relays once dial-backs show nobody can dial it (and its
        # mapped address once peers agree on it); a client that resolved before then would
        # keep the old answer for the resolver's 30 s.
        owner.wait_log("this node cannot be dialed", timeout=60)
        owner.way_in_after = time.monotonic() - t_owner
    if owner_kind in ("nat44", "fw6") and agreed:
        # A direct path is dialed at the published (agreed) address.
        try:
            owner.wait_log("peers agree they see this node", timeout=90)
        except AssertionError as e:
            st = owner.status()
            raise AssertionError(f"{e}\nowner reachability {st['reachability']}, "
                                 f"dht {st['dht']}") from None
    forward = ["alice.plain=127.0.0.1:2300"] + (["alice.ssh=127.0.0.1:2222"] if sshd else [])
    client = lab.start_node(client_ns, client_home, transport=transport,
                            listen_host=listen(client_ns, c6), forward=forward,
                            extra=["--bootstrap", at_(relays[0], c6)]
                            + (["--sla", f"hold-down={hold_down}s"] if managed else []))
    return client_ns, client, owner, ssh


@pytest.mark.timeout_s(240)
def test_hole_punching_moves_a_forward_from_relays_to_direct(lab, figure):
    """Both ends behind NATs that keep ports: neither can be dialed, so the forward starts on
    a relay path; the client asks the owner through it to open its side, dials again, and the
    live connection moves to the direct path."""
    client_ns, client, owner, _ = _nat_cell(lab, "nat44", "nat44")
    t0 = time.monotonic()
    s, echo = _open_echo(client_ns)

    def forward():
        return client.status()["forwards"][0]

    until(lambda: forward().get("path") == "direct", 60,
          lambda: f"never direct: {forward()}\n{client.tail()}\n{owner.tail()}")
    figure("hole punch nat44 <-> nat44: direct after", f"{time.monotonic() - t0:.1f}s")
    echo("after the move")
    st = client.status()
    assert st["counters"]["punch_requests"] >= 1, st["counters"]
    assert owner.status()["counters"]["punches_answered"] >= 1
    s.close()


@pytest.mark.timeout_s(240)
def test_a_plain_auto_forward_moves_to_direct_once_punching_works(lab, figure):
    """The default forward (`auto`, no policy), both ends behind port-keeping NATs: the
    direct dial fails, so the connection falls back to a relay path, on a link that keeps
    trying the direct path (with hole punching) and moves the open connection there."""
    client_ns, client, owner, _ = _nat_cell(lab, "nat44", "nat44", managed=False)
    t0 = time.monotonic()
    s, echo = _open_echo(client_ns)

    def link():
        links = client.status()["auto_links"]
        return links[0] if links else {}

    until(lambda: link().get("path") == "direct", 90,
          lambda: f"never direct: {client.status()['auto_links']}\n{client.tail()}")
    figure("plain auto forward nat44 <-> nat44: direct after", f"{time.monotonic() - t0:.1f}s")
    echo("after the move")
    assert "auto link to node" in client.log() and "to direct" in client.log(), client.tail()
    s.close()


def _open_echo(client_ns):
    """Once the forward on 127.0.0.1:2300 answers, a connection through it held open in the
    target server's echo mode, and a function that checks one round trip on it."""
    retry(lambda: echo_roundtrip(client_ns, 2300, b"first, over whatever works"), timeout=60)
    s = client_ns.connect(2300)
    s.settimeout(20)
    s.sendall(b"E")  # the target server's echo mode

    def echo(tag):
        data = f"{tag} {os.urandom(6).hex()}".encode()
        s.sendall(data)
        assert labmod.recv_exact(s, len(data)) == data

    echo("open")
    return s, echo


KINDS4 = ("none", "nat44", "nat44-random")


def ssh_echo(ns, sshd, word):
    """`ssh … echo WORD` from `ns` through the forward on local port 2222 prints WORD."""
    cp = ns.run(sshd.ssh_argv(2222, f"echo {word}"), timeout=40, check=False)
    assert cp.returncode == 0 and cp.stdout.strip() == word, (cp.stdout, cp.stderr)


def _cell(lab, figure, owner_kind, client_kind, *, expected, v6=False):
    """One cell of a matrix: ssh through the client's managed forward works, and the forward
    ends on the `expected` path (waited for up to 25 s); the outcome is reported."""
    client_ns, client, owner, sshd = _nat_cell(lab, owner_kind, client_kind, sshd=True, v6=v6,
                                               agreed=expected == "direct")
    t0 = time.monotonic()

    def ssh():
        ssh_echo(client_ns, sshd, "cell")

    retry(ssh, timeout=90)
    t_ssh = time.monotonic() - t0
    deadline = time.monotonic() + (25 if expected == "direct" else 15)
    fw, path = {}, None
    while time.monotonic() < deadline:
        fw = [f for f in client.status()["forwards"] if f["local"] == "127.0.0.1:2222"][0]
        path = fw.get("path")
        if path == "direct":
            break
        time.sleep(0.5)
    kind = "IPv6" if v6 else "NAT"
    if "fw6" in (owner_kind, client_kind) and "nat44" in owner_kind + client_kind:
        kind = "mixed-family"
    way_in = "" if owner.way_in_after is None else (
        f" (owner named its home relays {owner.way_in_after:.1f}s after it started)")
    figure(f"{kind} cell owner={owner_kind} client={client_kind}",
           f"ssh after {t_ssh:.1f}s; {path} after {time.monotonic() - t0:.1f}s{way_in}")
    ssh()
    fam = "ipv6" if owner_kind == "fw6" or (v6 and owner_kind == "none") else "ipv4"
    state = {"none": "public", "fw6": "firewalled"}.get(owner_kind, "behind_nat")
    until(lambda: family(owner, fam).get("state") == state, 30,
          lambda: f"owner state, want {state}: {owner.status()['reachability']}")
    if owner_kind != "none":
        assert len(owner.status()["reachability"]["via"]) >= 2, owner.status()["reachability"]
    assert path == expected, (
        f"{owner_kind}/{client_kind}: {fw}\nclient reachability "
        f"{client.status()['reachability']}, owner {owner.status()['reachability']}\n{client.tail()}"
    )


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("owner_kind", KINDS4)
@pytest.mark.parametrize("client_kind", KINDS4)
def test_nat_matrix(lab, figure, owner_kind, client_kind):
    """Owner and client each with no NAT, behind a NAT that keeps ports, or behind one with a
    random port per destination: ssh works in every cell. The owner status says `public` or
    `behind_nat`; one behind a NAT names its home relays, which reach it over the sessions it
    keeps. The forward ends direct unless both NATs give every peer another port: against a
    port-keeping NAT the random-port side sends from 256 ports while the other probes 1024
    random ports of its address (birthday hole punching). Reported per cell."""
    relayed = owner_kind == client_kind == "nat44-random"
    _cell(lab, figure, owner_kind, client_kind, expected="relay" if relayed else "direct")


@pytest.mark.timeout_s(240)
def test_tcp_mode_owner_behind_a_nat_is_reached_through_its_home_relays(lab, figure):
    """TLS/TCP mode (`--transport tcp` everywhere): an owner behind a NAT that picks a port per
    peer cannot be dialed over TCP either. It keeps QUIC sessions to its home relays; the
    client's spliced circuit ends at one of them, which splices it onto the session the owner
    keeps (the setup says it is a stream circuit), and ssh works."""
    client_ns, client, owner, sshd = _nat_cell(lab, "nat44-random", "nat44", sshd=True,
                                               transport="tcp", managed=False)
    t0 = time.monotonic()

    def ssh():
        ssh_echo(client_ns, sshd, "tcp")

    retry(ssh, timeout=90)
    figure("TCP mode, owner behind nat44-random, client behind nat44",
           f"ssh after {time.monotonic() - t0:.1f}s (owner named its home relays "
           f"{owner.way_in_after:.1f}s after it started)")
    st = owner.status()
    # The client's TLS/TCP session arrived through a circuit (at a virtual address), whose
    # stream rides a QUIC session the owner keeps to one of its home relays.
    assert any(c["role"] == "owner" for c in st["circuits"]), st["circuits"]
    assert any(s["transport"] == "tcp" and s["remote"].startswith("[fd76:")
               for s in st["sessions"]), st["sessions"]
    via = st["reachability"]["via"]
    assert any(s["transport"] == "quic" and s["peer"] in via and s["streams"] >= 1
               for s in st["sessions"]), (via, st["sessions"])


@pytest.mark.timeout_s(240)
def test_embedded_owner_behind_a_random_port_nat_is_reached_directly(lab, figure):
    """The embedding's side sockets: an embedded owner (runtime-smol's `expose` example)
    behind a NAT that picks a port per peer, a daemon client behind one that keeps ports. The
    owner learns it cannot be dialed and names home relays; ssh works through them, and the
    forward then goes direct, which here only the owner's side sockets can do (birthday hole
    punching in the async runtime layer)."""
    import natlab
    from test_embedded import start_example

    relays = [natlab.public_node(lab, f"r{i}") for i in range(4)]
    first = f"{relays[0].addr4}:4433"
    for i, ns in enumerate(relays):
        lab.start_node(ns, lab.home(f"relay{i}"), transport="quic", listen_host=ns.addr4,
                       extra=["--relay"] + ([] if i == 0 else ["--bootstrap", first]))
    owner_ns = natlab.Site(lab, "nat44-random", "own").host("alice")
    client_ns = natlab.Site(lab, "nat44", "cli").host("bob")
    sshd = labmod.Sshd(lab, owner_ns, port=22)
    client_home = lab.home("bob")
    t0 = time.monotonic()
    owner = start_example(lab, owner_ns, "expose-alice", "expose", [
        "--name", "alice", "--listen", f"{owner_ns.addr4}:4433", "--bootstrap", first,
        "--service", "ssh=127.0.0.1:22", "--allow", client_home.id,
    ])
    owner.wait_log("home relays: ", timeout=60)
    home_after = time.monotonic() - t0
    client = lab.start_node(client_ns, client_home, transport="quic",
                            listen_host=client_ns.addr4, forward=["alice.ssh=127.0.0.1:2222"],
                            extra=["--bootstrap", first, "--sla", "hold-down=3s"])
    t1 = time.monotonic()

    def ssh():
        ssh_echo(client_ns, sshd, "embedded")

    retry(ssh, timeout=90)
    t_ssh = time.monotonic() - t1

    def forward():
        return [f for f in client.status()["forwards"] if f["local"] == "127.0.0.1:2222"][0]

    until(lambda: forward().get("path") == "direct", 30,
          lambda: f"not direct: {forward()}\n{client.tail()}")
    figure("embedded owner behind nat44-random, daemon client behind nat44",
           f"home relays {home_after:.1f}s after start; ssh after {t_ssh:.1f}s; "
           f"direct after {time.monotonic() - t1:.1f}s")
    ssh()


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("owner_kind", ("none", "fw6"))
@pytest.mark.parametrize("client_kind", ("none", "fw6"))
def test_ipv6_firewall_matrix(lab, figure, owner_kind, client_kind):
    """IPv6 with no filtering, or behind a home router's stateful firewall (inbound only for
    flows the inside opened), on either side: ssh works, and the forward ends direct (the
    owner's firewall is opened by its own probes towards the client)."""
    _cell(lab, figure, owner_kind, client_kind, expected="direct", v6=True)


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("owner_kind,client_kind", [
    ("fw6", "nat44"), ("fw6", "nat44-random"), ("nat44", "fw6"), ("nat44-random", "fw6"),
])
def test_mixed_family_cells(lab, figure, owner_kind, client_kind):
    """One end with IPv6 only behind a stateful firewall, the other with IPv4 only behind a
    NAT: no direct path can exist, so the forward ends relayed, through dual-stack relays (each
    reached at an address of a family the dialer has), and ssh works."""
    _cell(lab, figure, owner_kind, client_kind, expected="relay")
