"""Tests of the test bed's middleboxes (natlab.py) with plain UDP sockets -- no vx6 involved.

What each site kind must do (see natlab.py): hosts reach public nodes; the outside sees the
router's address for NATed hosts (the same port for nat44, a different one per destination for
nat44-random); a packet from outside reaches a host behind nat44/nat44-random/fw6 only after
that host sent to exactly that peer (address and port); "none" filters nothing. Hole punching:
two hosts behind nat44 (or fw6) that send to each other's mapped endpoint at the same time get
through; a nat44-random side makes it fail.

Needs root and nft; not the vx6 binary (its own `lab` fixture).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

import lab as labmod
import natlab


@pytest.fixture
def lab(request, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin"):
        if not os.environ.get("VX6_E2E_NO_INSTALL") and shutil.which("apt-get"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "install", "-y", "-qq", "nftables"], env=env, timeout=600,
                           check=False, capture_output=True)
        if not shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin"):
            pytest.skip("needs nft (Debian: nftables)")
    labmod.sweep_stale_namespaces()
    the_lab = labmod.Lab(tmp_path)
    request.node.vx6_lab = the_lab
    try:
        yield the_lab
    finally:
        the_lab.close()


PORT = 5000  # every host's socket
SRV = 7000  # the public node's sockets (SRV, SRV + 1)


def _reply_path(pub_sock, seen, host_sock):
    """pub answers the source it saw; the host must get it."""
    pub_sock.sendto(b"reply", seen)
    got = natlab.recv(host_sock, 1.0)
    assert got is not None and got[0] == b"reply", f"reply to {seen} did not come back"


@pytest.mark.timeout_s(60)
def test_sites_filter_and_translate(lab, figure):
    pub = lab.node("pub")  # public node made before natlab: gets IPv4 when the first site comes
    sites = {k: natlab.Site(lab, k, k.replace("-", "")) for k in natlab.KINDS}
    pub2 = lab.node("pub2")  # made after: gets IPv4 and routes by the hook
    for p in (pub, pub2):
        assert p.addr4.startswith("203.0.113.") and p.addr6 == p.addr
        out = p.run(["ip", "-4", "addr", "show", "dev", "eth0"]).stdout
        assert p.addr4 in out
    hosts = {k: s.host("h") for k, s in sites.items()}
    for k, s in sites.items():
        fwd = s.router.run(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]).stdout
        assert fwd.split() == ["1", "1"], f"{k}: forwarding is off"

    p4, p4b = natlab.udp(pub, 4, SRV), natlab.udp(pub, 4, SRV + 1)
    p6, p6b = natlab.udp(pub, 6, SRV), natlab.udp(pub, 6, SRV + 1)
    q4, q6 = natlab.udp(pub2, 4, SRV), natlab.udp(pub2, 6, SRV)
    try:
        for kind in natlab.KINDS:
            s, h = sites[kind], hosts[kind]
            for fam in (4, 6):
                addr = h.addr4 if fam == 4 else h.addr6
                srv, srv_b, other = (p4, p4b, q4) if fam == 4 else (p6, p6b, q6)
                pub_addr, pub2_addr = (pub.addr4, pub2.addr4) if fam == 4 else (pub.addr6, pub2.addr6)
                if addr is None:
                    # an IPv4-only host behind NAT has no IPv6 route (and fw6 hosts no IPv4)
                    hs = natlab.udp(h, fam, PORT)
                    with pytest.raises(OSError):
                        natlab.send(hs, pub_addr, SRV)
                    hs.close()
                    continue
                hs = natlab.udp(h, fam, PORT)
                translated = s.nat and fam == 4
                outside = s.public_addr4 if translated else addr  # where the outside reaches it
                filtered = kind != "none"
                try:
                    # 1. unsolicited, before the host sent anything
                    srv.sendto(b"unsolicited", (outside, PORT))
                    if filtered:
                        natlab.expect_nothing(hs)
                    else:
                        got = natlab.recv(hs, 1.0)
                        assert got and got[1] == (pub_addr, SRV), f"{kind}/v{fam}: open site dropped it"
                    # 2. the host opens a flow to pub:SRV; pub sees the mapped source and replies
                    seen = natlab.mapped(hs, srv, pub_addr)
                    assert seen[0] == outside, f"{kind}/v{fam}: pub saw {seen}, expected {outside}"
                    if kind == "nat44" or not translated:
                        assert seen[1] == PORT, f"{kind}/v{fam}: source port changed to {seen[1]}"
                    _reply_path(srv, seen, hs)
                    # 3. same peer address, other port; other peer, same port: dropped if filtered
                    for sock, label in ((srv_b, "other port"), (other, "other peer")):
                        sock.sendto(b"stranger", seen)
                        if filtered:
                            natlab.expect_nothing(hs, 0.2)
                        else:
                            assert natlab.recv(hs, 1.0) is not None, f"{kind}: {label} dropped"
                    # 4. mapping per destination
                    seen2 = natlab.mapped(hs, other, pub2_addr)
                    seen3 = natlab.mapped(hs, srv_b, pub_addr)  # same address, other port
                    if kind == "nat44-random":
                        assert len({seen[1], seen2[1], seen3[1]}) == 3, (
                            f"nat44-random: ports per destination {seen[1]}, {seen2[1]}, {seen3[1]}"
                        )
                        figure("natlab nat44-random ports (internal 5000) to 3 destinations",
                               f"{seen[1]}, {seen2[1]}, {seen3[1]}")
                        # and it stays stable for an existing flow
                        assert natlab.mapped(hs, srv, pub_addr) == seen
                    else:
                        assert seen2 == seen3 == seen, f"{kind}: mapping changed: {seen} {seen2} {seen3}"
                finally:
                    hs.close()
    finally:
        for x in (p4, p4b, p6, p6b, q4, q6):
            x.close()


@pytest.mark.timeout_s(60)
def test_between_sites(lab):
    """Host to host across two sites: reaching a host behind "none" works; the answer comes back
    through a NAT/firewall; the reverse unsolicited direction is dropped."""
    open_site = natlab.Site(lab, "none", "open")
    nat = natlab.Site(lab, "nat44", "nat")
    fw = natlab.Site(lab, "fw6", "fw")
    o, n, f = open_site.host("o"), nat.host("n"), fw.host("f")
    o4, o6, n4, f6 = (natlab.udp(o, 4, PORT), natlab.udp(o, 6, PORT), natlab.udp(n, 4, PORT),
                      natlab.udp(f, 6, PORT))
    try:
        # nat -> open: seen as the NAT router, same port; reply gets back
        seen = natlab.mapped(n4, o4, o.addr4)
        assert seen == (nat.public_addr4, PORT)
        # fw -> open over IPv6: seen as itself
        seen6 = natlab.mapped(f6, o6, o.addr6)
        assert seen6 == (f.addr6, PORT)
        # open -> nat / fw from a port they never talked to: dropped
        o4b, o6b = natlab.udp(o, 4, PORT + 1), natlab.udp(o, 6, PORT + 1)
        try:
            o4b.sendto(b"x", seen)
            o6b.sendto(b"x", seen6)
            natlab.expect_nothing(n4, 0.3)
            natlab.expect_nothing(f6, 0.05)
        finally:
            o4b.close()
            o6b.close()
    finally:
        for x in (o4, o6, n4, f6):
            x.close()


def _punch(pub, a_host, b_host, fam):
    """Learns both mapped endpoints through a reflector on pub, then punches; returns the result
    of natlab.punch plus the mapped endpoints."""
    srv = natlab.udp(pub, fam, SRV)
    a, b = natlab.udp(a_host, fam, PORT), natlab.udp(b_host, fam, PORT)
    try:
        pub_addr = pub.addr4 if fam == 4 else pub.addr6
        ma = natlab.mapped(a, srv, pub_addr)
        mb = natlab.mapped(b, srv, pub_addr)
        res = natlab.punch(a, mb, b, ma)
        res.update(a_mapped=ma, b_mapped=mb)
        return res
    finally:
        for x in (srv, a, b):
            x.close()


@pytest.mark.timeout_s(60)
def test_hole_punching(lab, figure):
    pub = lab.node("pub")
    s = {n: natlab.Site(lab, k, n) for n, k in
         (("na", "nat44"), ("nb", "nat44"), ("ra", "nat44-random"), ("rb", "nat44-random"),
          ("fa", "fw6"), ("fb", "fw6"))}
    h = {n: site.host("h") for n, site in s.items()}
    cases = [
        ("nat44<->nat44", "na", "nb", 4, True),
        ("fw6<->fw6", "fa", "fb", 6, True),
        ("nat44-random<->nat44", "ra", "nb", 4, False),
        ("nat44-random<->nat44-random", "ra", "rb", 4, False),
    ]
    for label, a, b, fam, expect in cases:
        res = _punch(pub, h[a], h[b], fam)
        figure(f"natlab punch {label}", (
            f"ok={res['ok']} after {res['seconds']}s, {res['rounds']} rounds, "
            f"a got {res['a_got']} b got {res['b_got']}; mapped a={res['a_mapped']} b={res['b_mapped']}; "
            f"a heard from {res['a_from']}, b from {res['b_from']}"
        ))
        assert res["ok"] == expect, f"{label}: punching {'failed' if expect else 'succeeded'}: {res}"
        if expect:
            # they talk directly, from the mapped endpoints the reflector saw
            assert res["a_from"] == res["b_mapped"] and res["b_from"] == res["a_mapped"], res


@pytest.mark.timeout_s(60)
def test_nat_quirks(lab, figure):
    """Two facts about Linux NAT that vx6 meets: (1) two hosts behind one nat44 with the same
    internal port talking to the same peer: the second gets another external port (so two vx6
    nodes on :4433 behind one NAT are not both seen on 4433); (2) a router that lets unsolicited
    packets reach its own stack (no input filter) records them in conntrack, and the inside's
    later flow to that peer gets another port: simultaneous-open hole punching fails."""
    pub = lab.node("pub")
    nat = natlab.Site(lab, "nat44", "nat")
    h1, h2 = nat.host("h1"), nat.host("h2")
    srv = natlab.udp(pub, 4, SRV)
    s1, s2 = natlab.udp(h1, 4, PORT), natlab.udp(h2, 4, PORT)
    try:
        m1 = natlab.mapped(s1, srv, pub.addr4)
        m2 = natlab.mapped(s2, srv, pub.addr4)
        figure("natlab nat44 two hosts on port 5000 to one peer", f"{m1[1]}, {m2[1]}")
        assert m1 == (nat.public_addr4, PORT) and m2[0] == nat.public_addr4 and m2[1] != PORT
    finally:
        for x in (srv, s1, s2):
            x.close()

    # a mapping lives as long as conntrack keeps the flow: settable per router
    assert nat.udp_timeouts() == (30, 120)
    assert nat.udp_timeouts(unreplied=1, stream=2) == (1, 2)
    s3, srv2 = natlab.udp(h1, 4, PORT + 1), natlab.udp(pub, 4, SRV + 1)
    try:
        m3 = natlab.mapped(s3, srv2, pub.addr4)
        assert any(f["reply"]["dport"] == m3[1] for f in nat.flows())
        time.sleep(2.5)  # > stream timeout: the mapping is gone, and with it the pinhole
        assert not any(f["reply"]["dport"] == m3[1] for f in nat.flows()), nat.conntrack()
        srv2.sendto(b"late", m3)
        natlab.expect_nothing(s3, 0.2)
    finally:
        s3.close()
        srv2.close()

    a_site = natlab.Site(lab, "nat44", "la", drop_unsolicited=False)
    b_site = natlab.Site(lab, "nat44", "lb", drop_unsolicited=False)
    assert "hook input" not in a_site.router.run(["nft", "list", "ruleset"]).stdout
    res = _punch(pub, a_site.host("h"), b_site.host("h"), 4)
    figure("natlab punch nat44<->nat44, routers without input filter", (
        f"ok={res['ok']} after {res['seconds']}s, {res['rounds']} rounds; "
        f"mapped a={res['a_mapped']} b={res['b_mapped']}"
    ))
    assert not res["ok"], f"expected the conntrack clash to break punching: {res}"
    # the trace of it: b's flow to a got another external port than the mapped one
    b_host = b_site.hosts[0]
    out = [f for f in b_site.flows() if f["orig"]["src"] == b_host.addr4
           and f["orig"]["dst"] == a_site.public_addr4]
    inbound = [f for f in b_site.flows() if f["orig"]["src"] == a_site.public_addr4
               and f["orig"]["dst"] == b_site.public_addr4]
    assert out and out[0]["reply"]["dport"] != PORT, f"b's flow to a kept its port:\n{b_site.conntrack()}"
    assert inbound and inbound[0]["orig"]["dport"] == PORT, b_site.conntrack()
    figure("natlab clash: b's flow to a re-mapped", f"{PORT} -> {out[0]['reply']['dport']}")
