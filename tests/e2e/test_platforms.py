"""Other platforms' builds, run here (README "Platforms"):

- the static aarch64 and armv7 router builds (`--profile router`, musl), under qemu-user in a network
  namespace, forwards OpenSSH to and from an x86_64 daemon in another, over both transports;
  its memory idle and after a transfer is reported;
- the Windows build (x86_64-pc-windows-gnu) under wine runs init, id and records, and refuses
  bad input with a one-line reason and a non-zero exit.

The cross builds come from scripts/test.sh (`VX6_PLATFORMS=1`); without them these tests skip,
unless VX6_PLATFORMS=1 says they must run."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import lab as labmod
from lab import REPO, retry

ROUTERS = {
    "aarch64": (REPO / "target" / "aarch64-unknown-linux-musl" / "router" / "vx6", "qemu-aarch64"),
    "armv7": (REPO / "target" / "armv7-unknown-linux-musleabihf" / "router" / "vx6", "qemu-arm"),
}
WIN_BIN = Path(
    os.environ.get("VX6_WIN_BIN", REPO / "target" / "x86_64-pc-windows-gnu" / "release" / "vx6.exe")
)
REQUIRED = os.environ.get("VX6_PLATFORMS") == "1"
# armv7 is built only where its standard library can be had (scripts/platforms.sh says which).
ARMV7_REQUIRED = REQUIRED and os.environ.get("VX6_ARMV7") == "1"


def need(path, tool, required=None):
    required = REQUIRED if required is None else required
    missing = [str(p) for p in (path,) if not Path(p).exists()] + [t for t in (tool,) if not shutil.which(t) and not Path(t).exists()]
    if missing:
        if required:
            pytest.fail(f"VX6_PLATFORMS=1 but missing: {missing}")
        pytest.skip(f"missing {missing} (scripts/test.sh builds them with VX6_PLATFORMS=1)")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_router_build_forwards_ssh_both_ways(lab, transport, arch, figure):
    router_bin, emulator = ROUTERS[arch]
    need(router_bin, emulator, ARMV7_REQUIRED if arch == "armv7" else None)
    qemu = [shutil.which(emulator), str(router_bin)]
    router_ns, pc_ns = lab.node("router"), lab.node("pc")
    lab.check_link(pc_ns, router_ns)
    router_home, pc_home = lab.home("router"), lab.home("pc")
    router_sshd = labmod.Sshd(lab, router_ns, port=22)
    pc_sshd = labmod.Sshd(lab, pc_ns, port=22)
    router = lab.start_node(
        router_ns, router_home, transport=transport, binary=qemu, name="vx6-router",
        serve=["ssh=127.0.0.1:22"], allow=[pc_home.id],
        forward=[f"{pc_home.id}@[{pc_ns.addr}]:4433/ssh=127.0.0.1:2223"],
        ready_timeout=60,
    )
    pc = lab.start_node(
        pc_ns, pc_home, transport=transport,
        serve=["ssh=127.0.0.1:22"], allow=[router_home.id],
        forward=[f"{lab.target(router, 'ssh')}=127.0.0.1:2222"],
    )
    idle = rss_kib(router.pid)

    def ssh(ns, sshd, port, command, expect):
        cp = ns.run(sshd.ssh_argv(port, command), timeout=60, check=False)
        assert cp.returncode == 0 and cp.stdout.strip() == expect, (cp.stdout[-200:], cp.stderr[-500:])

    # x86_64 client → aarch64 owner (the router serves), and the reverse.
    retry(lambda: ssh(pc_ns, router_sshd, 2222, "echo to-router", "to-router"), timeout=60)
    retry(lambda: ssh(router_ns, pc_sshd, 2223, "echo from-router", "from-router"), timeout=60)
    # 20 MB each way through the router's daemon.
    ssh(pc_ns, router_sshd, 2222, "head -c 20000000 /dev/zero | wc -c", "20000000")
    ssh(router_ns, pc_sshd, 2223, "head -c 20000000 /dev/zero | wc -c", "20000000")
    after = rss_kib(router.pid)
    assert router.alive() and pc.alive()
    figure(
        f"{arch} router daemon under qemu-user ({transport})",
        f"RSS idle {idle / 1024:.1f} MiB, after 2 x 20 MB {after / 1024:.1f} MiB (qemu's own memory included); "
        f"binary {router_bin.stat().st_size / 1e6:.2f} MB",
    )


def wine():
    for w in ("/usr/lib/wine/wine64", shutil.which("wine64") or "", shutil.which("wine") or ""):
        if w and Path(w).exists():
            return w
    return "wine64"


@pytest.mark.timeout_s(300)
def test_windows_build_runs_the_cli_under_wine(tmp_path, figure):
    w = wine()
    need(WIN_BIN, w)
    prefix = tmp_path / "wineprefix"
    env = dict(os.environ, WINEPREFIX=str(prefix), WINEARCH="win64", WINEDEBUG="-all")
    # wine 8.0 lacks bcryptprimitives.dll (ProcessPrng), which Rust's std calls on Windows 10+;
    # a stand-in built from scripts/wine/prng.c sits beside the binary (Windows has the real one).
    shim = WIN_BIN.parent / "bcryptprimitives.dll"
    if not shim.exists():
        need(shim, w)

    def vx6(*args, timeout=120):
        return subprocess.run([w, str(WIN_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)

    home = "C:\\vx6-test"
    cp = vx6("init", "--home", home, "--name", "alice", timeout=240)
    assert cp.returncode == 0, cp.stderr
    node_id = cp.stdout.split()[0]
    assert len(node_id) == 52
    cp = vx6("id", "--home", home)
    assert cp.returncode == 0 and cp.stdout.splitlines()[0] == node_id, cp
    assert "username: alice" in cp.stdout
    cp = vx6("records", "--home", home)
    assert cp.returncode == 0 and "name-claim" in cp.stdout and "alice" in cp.stdout, cp
    # Bad input: one line naming the problem, non-zero exit, nothing lost.
    for args, code, needle in [
        (("init", "--home", home, "--name", "alice"), 1, "already exists"),
        (("node", "--home", home, "--listen", "nonsense"), 1, "--listen"),
        (("frobnicate",), 2, "unrecognized subcommand"),
        (("init", "--home", home + "2", "--name", "Alice"), 2, "--name"),
    ]:
        cp = vx6(*args)
        lines = [l for l in cp.stderr.splitlines() if l.strip()]
        assert cp.returncode == code and len(lines) == 1 and needle in lines[0], (args, cp.returncode, cp.stderr)
    cp = vx6("id", "--home", home)
    assert cp.returncode == 0 and cp.stdout.splitlines()[0] == node_id, "the identity survived"
    # The daemon: say what wine allows (wine 8.0 lacks socket options quinn-udp sets).
    p = subprocess.Popen([w, str(WIN_BIN), "node", "--home", home, "--listen", "127.0.0.1:47000"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=20)
        said = (err.strip().splitlines() or ["(no output)"])[-1][:200]
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        said = "started: " + (out.strip().splitlines() or ["(no ready line)"])[0]
    figure("Windows daemon under wine", said)
