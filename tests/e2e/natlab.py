"""Middleboxes for the e2e test bed: router namespaces with NATs and stateful firewalls.

Builds on lab.py (plain stdlib, root, nftables). The lab's switch is the *public internet*:
every public node (lab.node(...): relays, bootstrap peers) keeps fd6a:0:<lab>::<n>/64 and, once
natlab is in use in that lab, also gets 203.0.113.<n>/24 on the same bridge (``ns.addr4``;
``ns.addr6`` is its IPv6 address) and routes to every routed site prefix.

A *site* is a router namespace with an outside leg on the switch (a public node itself, role
``rt-<name>``: public IPv6 + IPv4) and an inside bridge ``lan0`` that its hosts hang off:

    site = natlab.Site(lab, "nat44", "home")   # kinds: see KINDS
    alice = site.host("alice")                 # a namespace behind the router (natlab.Host)

Per kind (k = the site's number in the lab, i = 2, 3, ... the host's number in the site):

  none          no filtering. Hosts get routed public addresses: fd6a:0:<lab>:<k>::<i>/64 and
                198.18.<k>.<i>/24; every public node has routes to both via the router.
  fw6           IPv6 stateful firewall (RFC 6092 style, as on a home router): hosts get routed
                fd6a:0:<lab>:<k>::<i>/64 and no IPv4; the forward chain lets in only
                established/related flows (whatever the inside opened), drops the rest.
  nat44         IPv4 NAT that keeps the source port when it can (nftables ``masquerade``) and
                passes inbound packets only for flows the inside opened. Hosts get 10.<k>.0.<i>/24,
                default route via 10.<k>.0.1 and NO IPv6 route: IPv4-only behind NAT, the usual case.
  nat44-random  the same, but ``masquerade random,fully-random``: a random external port for
                every new flow, so a different one per destination (a *symmetric* NAT).
  fw6-nat44     a dual-stack home router: fw6 for IPv6 plus nat44 for IPv4; hosts get both.

Filtering is by netfilter conntrack, i.e. per 5-tuple: a packet from outside reaches an inside
host only if that host sent to exactly that address and port first ("address and port dependent
filtering"). The routers also drop unsolicited packets to themselves (input chain), as real
routers do -- which matters for hole punching (Site's drop_unsolicited, test_natlab.py).

vx6 behind a site: ``lab.start_node(host, home, transport=...)`` listens on the host's ``addr``
(its IPv6 address if it has one, else its private IPv4, e.g. ``10.1.0.2:4433``); give it
``--bootstrap <public node addr4>:<port>`` (IPv4-only hosts) or ``[<addr6>]:<port>``. A public
bootstrap that both kinds reach listens on ``[::]:<port>`` (dual-stack; publishes no record of
itself) -- a concrete ``--listen`` is one family only. Public nodes that should be reachable
over IPv4 by name listen on ``<addr4>:<port>``.

UDP helpers (``udp``, ``send``, ``recv``, ``expect_nothing``, ``mapped``, ``punch``) work with
plain sockets that are made inside a namespace and then used from any thread.
"""

from __future__ import annotations

import errno
import socket
import time

import lab as labmod

KINDS = ("none", "fw6", "nat44", "nat44-random", "fw6-nat44")
PUBLIC_V4 = "203.0.113"  # public IPv4 of node n on the lab switch: 203.0.113.<n>/24
ROUTED_V4 = "198.18"  # routed IPv4 of a "none" site k: 198.18.<k>.0/24
WAN = "eth0"  # the router's outside interface, on the lab switch
LAN = "lan0"  # the router's inside bridge


# --------------------------------------------------------------------------------------------
# nftables rule sets, per kind (loaded into the router namespace with one `nft -f`)

# The router itself: only what it needs (neighbour discovery, ICMP, its own flows, the inside).
# Dropping unsolicited packets here (instead of letting the kernel answer "port unreachable")
# also keeps them from leaving a conntrack entry behind, which would make a later outbound
# flow to the same peer get another external port (see the notes on hole punching).
_INPUT = f"""
table inet router {{
    chain input {{
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "lo" accept
        iifname "{LAN}" accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
    }}
}}
"""

# Forwarding: inside -> outside always; outside -> inside only for flows the inside opened.
_FORWARD_STATEFUL = f"""
table inet router {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "{LAN}" oifname "{WAN}" accept
    }}
}}
"""

_MASQ = f"""
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{WAN}" masquerade{{flags}}
    }}
}}
"""

RULESETS = {
    "none": "",
    "fw6": _INPUT + _FORWARD_STATEFUL,
    "nat44": _INPUT + _FORWARD_STATEFUL + _MASQ.replace("{flags}", ""),
    "nat44-random": _INPUT + _FORWARD_STATEFUL + _MASQ.replace("{flags}", " random,fully-random"),
    "fw6-nat44": _INPUT + _FORWARD_STATEFUL + _MASQ.replace("{flags}", ""),
}


def ruleset(kind, drop_unsolicited=True):
    """The nft script a router of `kind` loads (empty for "none"). drop_unsolicited=False leaves
    out the input chain (see Site)."""
    rules = RULESETS[kind]
    if rules and not drop_unsolicited:
        rules = rules.replace(_INPUT, "")
    return rules


# Link-local addresses skip DAD. A router forwards a packet onto a link only after neighbour
# discovery, and the kernel sends a neighbour solicitation for a *forwarded* packet only from a
# usable link-local address of the outgoing interface: while that address is still tentative
# (1-2 s after the interface comes up) the packets wait in the neighbour queue (or are lost).
# Set before the namespace's interfaces exist, so they inherit it ("default").
_NO_DAD = dict(net__ipv6__conf__all__accept_dad=0, net__ipv6__conf__default__accept_dad=0)
_ROUTER_SYSCTLS = dict(
    _NO_DAD,
    net__ipv4__ip_forward=1,
    net__ipv6__conf__all__forwarding=1,
    net__ipv6__conf__default__forwarding=1,
)


def _sysctl(ns, **values):
    """Sets sysctls in ns (keys with dots replaced by '__', e.g. net__ipv4__ip_forward=1)."""
    args = [f"{k.replace('__', '.')}={v}" for k, v in values.items()]
    ns.run(["sysctl", "-q", "-w", *args])


# --------------------------------------------------------------------------------------------
# the public internet (per lab)


class Internet:
    """natlab's state in one lab: its sites, and the public nodes' IPv4 addresses and routes.
    Made on first use by ``internet(lab)``; it hooks lab.node() so later public nodes get the
    same treatment."""

    def __init__(self, lab):
        self.lab = lab
        self.sites = []
        self.public = []  # every namespace on the switch: public nodes and site routers
        lab.node_hooks.append(self._on_node)
        for ns in list(lab.nodes.values()):
            n = int(ns.addr.rsplit(":", 1)[1])  # lab.node's address is fd6a:0:<lab>::<n>
            self._on_node(ns, n)

    def _on_node(self, ns, n):
        assert 1 <= n <= 254, f"public node number {n} does not fit {PUBLIC_V4}.0/24"
        ns.addr6 = ns.addr
        ns.addr4 = f"{PUBLIC_V4}.{n}"
        ns.site = None
        ns.run(["ip", "addr", "add", f"{ns.addr4}/24", "dev", "eth0"])
        for site in self.sites:
            site._route_from(ns)
        self.public.append(ns)


def internet(lab):
    """The lab's Internet (made and hooked into the lab on first call)."""
    inet = getattr(lab, "natlab", None)
    if inet is None:
        inet = Internet(lab)
        lab.natlab = inet
    return inet


def public_node(lab, role):
    """lab.node(role) with natlab active: IPv6 fd6a:0:<lab>::<n> (ns.addr, ns.addr6) and IPv4
    203.0.113.<n> (ns.addr4), with routes to every site. Same as internet(lab); lab.node(role)."""
    internet(lab)
    return lab.node(role)


# --------------------------------------------------------------------------------------------
# sites


class Host(labmod.Netns):
    """A namespace behind a site's router. ``addr`` is what a daemon listens on by default (the
    IPv6 address if the host has one, else its IPv4 one); ``addr4``/``addr6`` may be None."""

    def __init__(self, name, site, addr4, addr6):
        super().__init__(name, addr6 or addr4)
        self.site = site
        self.addr4 = addr4
        self.addr6 = addr6

    def __repr__(self):
        return f"Host({self.name}, {self.site.kind}, v4={self.addr4}, v6={self.addr6})"


class Site:
    """A router namespace of one kind (see KINDS) between the lab switch and its own hosts.

    Attributes: ``router`` (the router's namespace; ``router.addr4``/``addr6`` are the site's
    public addresses, which NAT kinds show to the outside), ``k`` (site number), ``prefix6``
    (the routed /64 or None), ``prefix4`` (the inside IPv4 /24 or None), ``nat`` (True when
    IPv4 is translated), ``hosts``."""

    def __init__(self, lab, kind, name, *, drop_unsolicited=True):
        """drop_unsolicited=False: the router does not filter packets addressed to itself, so an
        unsolicited packet reaches its own stack (answered with ICMP port unreachable) and leaves
        a conntrack entry behind; a later outbound flow to that same peer then clashes with it
        and gets another external port. Some real NATs behave so; it breaks hole punching."""
        assert kind in KINDS, f"unknown site kind {kind!r} (one of {KINDS})"
        self.lab = lab
        self.kind = kind
        self.name = name
        self.inet = internet(lab)
        self.k = len(self.inet.sites) + 1
        assert self.k <= 255
        self.hosts = []
        lab6 = f"fd6a:0:{lab.idx:x}"
        self.v6 = kind in ("none", "fw6", "fw6-nat44")
        self.v4 = kind != "fw6"
        self.nat = kind in ("nat44", "nat44-random", "fw6-nat44")
        self.prefix6 = f"{lab6}:{self.k:x}::/64" if self.v6 else None
        self.gw6 = f"{lab6}:{self.k:x}::1" if self.v6 else None
        if self.nat:
            self.prefix4, self.gw4 = f"10.{self.k}.0.0/24", f"10.{self.k}.0.1"
        elif self.v4:
            self.prefix4, self.gw4 = f"{ROUTED_V4}.{self.k}.0/24", f"{ROUTED_V4}.{self.k}.1"
        else:
            self.prefix4 = self.gw4 = None

        # outside leg: a public node like lab.node() makes (fd6a:0:<lab>::<n>, and by the hook
        # 203.0.113.<n> and routes to earlier sites), but with the sysctls set before any
        # interface exists: forwarding on, and no DAD (see _ROUTER_SYSCTLS).
        n = len(lab.nodes) + 1
        self.router = r = lab._add_ns(f"rt-{name}", f"fd6a:0:{lab.idx:x}::{n}")
        _sysctl(r, **_ROUTER_SYSCTLS)
        port = f"p{n}"
        r.run(["ip", "link", "add", WAN, "type", "veth", "peer", "name", port, "netns", lab.sw.name])
        lab.sw.run(["ip", "link", "set", port, "master", "br0", "up"])
        r.run(["ip", "addr", "add", f"{r.addr}/64", "dev", WAN, "nodad"])
        r.run(["ip", "link", "set", WAN, "up"])
        lab.nodes[f"rt-{name}"] = r
        for hook in lab.node_hooks:
            hook(r, n)
        # inside leg: a bridge that every host's veth joins
        r.run(["ip", "link", "add", LAN, "type", "bridge"])
        r.run(["ip", "link", "set", LAN, "type", "bridge", "mcast_snooping", "0"])
        if self.v6:
            r.run(["ip", "addr", "add", f"{self.gw6}/64", "dev", LAN, "nodad"])
        if self.v4:
            r.run(["ip", "addr", "add", f"{self.gw4}/24", "dev", LAN])
        r.run(["ip", "link", "set", LAN, "up"])
        self.drop_unsolicited = drop_unsolicited
        rules = ruleset(kind, drop_unsolicited)
        if rules:
            r.run(["nft", "-f", "-"], input=rules)
        # every other node on the switch learns the routed prefixes
        for ns in self.inet.public:
            if ns is not r:
                self._route_from(ns)
        self.inet.sites.append(self)

    def __repr__(self):
        return f"Site({self.name}, {self.kind}, router v4={self.router.addr4} v6={self.router.addr6})"

    @property
    def public_addr4(self):
        """The IPv4 address the outside sees for this site's NATed hosts (the router's)."""
        return self.router.addr4

    def _route_from(self, ns):
        """Routes from a public node (or another site's router) to this site's routed prefixes."""
        if ns is self.router:
            return
        if self.v6:
            ns.run(["ip", "-6", "route", "add", self.prefix6, "via", self.router.addr6, "dev", "eth0"])
        if self.v4 and not self.nat:
            ns.run(["ip", "route", "add", self.prefix4, "via", self.router.addr4, "dev", "eth0"])

    def host(self, role):
        """A new namespace behind this router (lab prefix + '<site>-<role>'), with eth0 on the
        site's bridge, its addresses and default route(s) via the router."""
        i = len(self.hosts) + 2
        assert i <= 254
        addr6 = f"{self.gw6.rsplit('::', 1)[0]}::{i:x}" if self.v6 else None
        addr4 = f"{self.gw4.rsplit('.', 1)[0]}.{i}" if self.v4 else None
        h = Host(f"{self.lab.prefix}-{self.name}-{role}", self, addr4, addr6)
        labmod.run(["ip", "netns", "add", h.name])
        self.lab.namespaces.append(h)
        h.run(["ip", "link", "set", "lo", "up"])
        _sysctl(h, **_NO_DAD)
        port = f"h{i}"
        h.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.router.name])
        self.router.run(["ip", "link", "set", port, "master", LAN, "up"])
        if addr6:
            h.run(["ip", "addr", "add", f"{addr6}/64", "dev", "eth0", "nodad"])
        if addr4:
            h.run(["ip", "addr", "add", f"{addr4}/24", "dev", "eth0"])
        h.run(["ip", "link", "set", "eth0", "up"])
        if addr6:
            h.run(["ip", "-6", "route", "add", "default", "via", self.gw6, "dev", "eth0"])
        if addr4:
            h.run(["ip", "route", "add", "default", "via", self.gw4, "dev", "eth0"])
        self.hosts.append(h)
        return h

    def udp_timeouts(self, unreplied=None, stream=None):
        """Sets the router's conntrack UDP timeouts in seconds (per namespace; kernel defaults
        30 for a flow that saw no reply yet, 120 for one that saw traffic both ways): a NAT
        mapping or firewall pinhole closes after that long without packets. Returns the values
        in force as (unreplied, stream)."""
        vals = {}
        if unreplied is not None:
            vals["net__netfilter__nf_conntrack_udp_timeout"] = int(unreplied)
        if stream is not None:
            vals["net__netfilter__nf_conntrack_udp_timeout_stream"] = int(stream)
        if vals:
            _sysctl(self.router, **vals)
        cp = self.router.run(["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout",
                              "net.netfilter.nf_conntrack_udp_timeout_stream"])
        u, st = cp.stdout.split()
        return int(u), int(st)

    def conntrack(self):
        """The router's conntrack table (text of /proc/net/nf_conntrack), for debugging."""
        cp = self.router.run(["cat", "/proc/net/nf_conntrack"], check=False)
        return cp.stdout

    def flows(self, proto="udp"):
        """The router's conntrack entries for proto as dicts: 'orig' and 'reply' (each a dict
        with src, dst, sport, dport; ports as int) and 'flags' (e.g. {'UNREPLIED', 'ASSURED'}).
        For a NATed flow, reply['dst'], reply['dport'] is the external (mapped) endpoint."""
        out = []
        for line in self.conntrack().splitlines():
            f = line.split()
            if len(f) < 3 or f[2] != proto:
                continue
            tuples, flags = [], set()
            for tok in f:
                if tok.startswith("[") and tok.endswith("]"):
                    flags.add(tok[1:-1])
                elif "=" in tok:
                    k, v = tok.split("=", 1)
                    if k == "src":
                        tuples.append({})
                    if tuples and k in ("src", "dst", "sport", "dport") and k not in tuples[-1]:
                        tuples[-1][k] = int(v) if k.endswith("port") else v
            if len(tuples) >= 2:
                out.append(dict(orig=tuples[0], reply=tuples[1], flags=flags))
        return out


# --------------------------------------------------------------------------------------------
# UDP helpers (plain sockets; made inside a namespace, usable from any thread)


def udp(ns, family=4, port=0):
    """A UDP socket bound to the wildcard address (0.0.0.0 or ::, IPv6-only) and `port` in ns."""

    def mk():
        if family == 6:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::", port))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))
        return s

    return ns.call(mk, timeout=10)


def send(sock, addr, port, data=b"x"):
    sock.sendto(data, (addr, port))


def recv(sock, timeout=1.0):
    """(data, (addr, port)) of the next datagram, or None after timeout seconds."""
    sock.settimeout(timeout)
    try:
        data, src = sock.recvfrom(65536)
    except socket.timeout:
        return None
    return data, (src[0], src[1])


def expect_nothing(sock, wait=0.3):
    """Asserts no datagram arrives on sock within `wait` seconds."""
    got = recv(sock, wait)
    assert got is None, f"expected the packet to be dropped, but {got[1]} sent {got[0][:40]!r}"


def mapped(sock, server_sock, server_addr, timeout=2.0):
    """Where `server_sock` (on a public node, at server_addr) sees datagrams from `sock`: the
    (addr, port) the middlebox mapped it to -- what STUN would tell. Also replies, so the
    mapping is confirmed both ways."""
    send(sock, server_addr, server_sock.getsockname()[1], b"what is my address")
    got = recv(server_sock, timeout)
    assert got is not None, f"nothing arrived at {server_addr} from {sock.getsockname()}"
    server_sock.sendto(b"seen", got[1])
    back = recv(sock, timeout)
    assert back is not None and back[0] == b"seen", "the reflector's answer did not come back"
    return got[1]


def punch(sock_a, to_b, sock_b, to_a, *, duration=1.5, interval=0.05):
    """UDP hole punching: a sends to b's public endpoint `to_b` and b to `to_a`, both every
    `interval` seconds (a first each round), until both heard from the other or `duration` ran
    out. Returns dict(ok, a_got, b_got, rounds, seconds, a_from, b_from) where a_got counts the
    datagrams a received from b and a_from is the source they came from."""
    res = dict(ok=False, a_got=0, b_got=0, rounds=0, a_from=None, b_from=None)
    t0 = time.monotonic()
    for s in (sock_a, sock_b):
        s.setblocking(False)
    try:
        while time.monotonic() - t0 < duration:
            res["rounds"] += 1
            n = res["rounds"]
            for s, to, tag in ((sock_a, to_b, b"a"), (sock_b, to_a, b"b")):
                try:
                    s.sendto(tag + str(n).encode(), to)
                except OSError as e:  # a queued ICMP error; unconnected sockets rarely see one
                    if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                        raise
            time.sleep(interval)
            for s, key, src in ((sock_a, "a_got", "a_from"), (sock_b, "b_got", "b_from")):
                while True:
                    try:
                        data, frm = s.recvfrom(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    if data[:1] in (b"a", b"b"):
                        res[key] += 1
                        res[src] = (frm[0], frm[1])
            if res["a_got"] and res["b_got"]:
                res["ok"] = True
                break
    finally:
        for s in (sock_a, sock_b):
            s.setblocking(True)
    res["seconds"] = round(time.monotonic() - t0, 3)
    return res
