"""An embedded node (runtime-smol's examples, real processes) and the `vx6` mio daemon talk to
each other both ways, each serving and each connecting, with OpenSSH through the result."""

import pytest

import lab as labmod
from lab import REPO, retry

EXAMPLES = REPO / "target" / "release" / "examples"


def start_example(lab, ns, name, example, args):
    p = labmod.Proc(name, ns, [EXAMPLES / example, *args], lab.logdir)
    lab.procs.append(p)
    p.wait_log("listening on", timeout=30)
    return p


def ssh_works(ns, sshd):
    cp = ns.run(sshd.ssh_argv(2222, "echo hello"), timeout=30, check=False)
    assert cp.stdout.strip() == "hello", f"ssh printed {cp.stdout!r}, stderr {cp.stderr!r}"


@pytest.mark.timeout_s(120)
def test_embedded_owner_mio_client(lab, transport):
    owner_ns, client_ns = lab.node("owner"), lab.node("client")
    sshd = labmod.Sshd(lab, owner_ns, port=22)
    client_home = lab.home("bob")
    start_example(lab, owner_ns, "expose-alice", "expose", [
        "--name", "alice", "--listen", f"[{owner_ns.addr}]:4433", "--transport", transport,
        "--service", "ssh=127.0.0.1:22", "--allow", client_home.id,
    ])
    lab.start_node(
        client_ns, client_home, transport=transport, forward=["alice.ssh=127.0.0.1:2222"],
        extra=["--bootstrap", f"[{owner_ns.addr}]:4433"],
    )
    retry(lambda: ssh_works(client_ns, sshd), timeout=40)


@pytest.mark.timeout_s(120)
def test_mio_owner_embedded_client(lab, transport):
    owner_ns, client_ns = lab.node("owner"), lab.node("client")
    sshd = labmod.Sshd(lab, owner_ns, port=22)
    owner_home = lab.home("alice")
    lab.start_node(owner_ns, owner_home, transport=transport, serve=["ssh=127.0.0.1:22"], public=True)
    start_example(lab, client_ns, "connect-bob", "connect", [
        "--name", "bob", "--listen", f"[{client_ns.addr}]:4433", "--transport", transport,
        "--bootstrap", f"[{owner_ns.addr}]:4433", "--forward", "alice.ssh=127.0.0.1:2222",
    ])
    retry(lambda: ssh_works(client_ns, sshd), timeout=40)
