"""Fixtures for the VX6 end-to-end suite (see README.md; the test bed itself is in lab.py).

Run as root after `cargo build --release`:   pytest tests/e2e
Environment:
  VX6_BIN              the vx6 binary (default: <repo>/target/release/vx6)
  VX6_E2E_NO_INSTALL=1 do not apt-get install missing tools (openssh-server, openssh-client, iperf3)
  VX6_E2E_TIMEOUT=S    default per-test time limit in seconds (default 300)
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from types import SimpleNamespace

import pytest

import lab as labmod

TRANSPORTS = ["quic", "tcp"]
NEEDED_TOOLS = {  # command -> Debian package
    "ip": "iproute2",
    "ss": "iproute2",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "iperf3": "iperf3",
    "tcpdump": "tcpdump",
}
_FIGURES = []


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit (setup + call)")


# ---------------------------------------------------------------------------------------------
# per-test watchdog: no test may hang (stdlib only, so no pytest-timeout plugin)


class _Watchdog:
    def __init__(self, item, phase):
        m = item.get_closest_marker("timeout_s")
        self.seconds = int(m.args[0]) if m else int(os.environ.get("VX6_E2E_TIMEOUT", "300"))
        self.phase = phase
        self.item = item

    def __enter__(self):
        def fire(signum, frame):
            raise pytest.fail.Exception(
                f"{self.item.nodeid}: {self.phase} exceeded the time limit of {self.seconds}s"
            )

        self.old = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _Watchdog(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _Watchdog(item, "test"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    lab = getattr(item, "vx6_lab", None)
    if rep.failed and lab is not None:
        for name, text in lab.logs(60):
            rep.sections.append((f"stderr tail of {name}", text))
        rep.sections.append(("logs directory", str(lab.logdir)))


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.write_sep("-", "vx6 e2e figures (informational, no thresholds)")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def e2e_env():
    """Root, tools and the vx6 binary; sweeps namespaces left by killed earlier runs."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the e2e suite needs root (network namespaces), and CI must run it")
        pytest.skip("the e2e suite needs root (network namespaces)")
    missing = sorted({pkg for cmd, pkg in NEEDED_TOOLS.items() if not _which(cmd)})
    if missing and not os.environ.get("VX6_E2E_NO_INSTALL") and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, timeout=900, check=False)
        missing = sorted({pkg for cmd, pkg in NEEDED_TOOLS.items() if not _which(cmd)})
    if missing:
        pytest.fail(f"missing tools; install the Debian packages: {' '.join(missing)}")
    if not (os.path.isfile(labmod.VX6_BIN) and os.access(labmod.VX6_BIN, os.X_OK)):
        pytest.fail(
            f"vx6 binary not found at {labmod.VX6_BIN}: run `cargo build --release` "
            "(or set VX6_BIN)"
        )
    # 200 concurrent forwards need a few fds per connection in this process and the daemons
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    labmod.sweep_stale_namespaces()
    return labmod.VX6_BIN


def _which(cmd):
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/sbin")


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture
def lab(e2e_env, request, tmp_path):
    """A fresh test bed (switch namespace + bridge); everything in it is torn down afterwards."""
    the_lab = labmod.Lab(tmp_path)
    request.node.vx6_lab = the_lab
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def nodes(lab):
    """Two namespaces on one link, owner (fd6a:0:N::1) and client (::2), and a fresh identity
    for each (`vx6 init`)."""
    owner_ns = lab.node("owner")
    client_ns = lab.node("client")
    lab.check_link(client_ns, owner_ns)
    return SimpleNamespace(
        owner_ns=owner_ns,
        client_ns=client_ns,
        owner_home=lab.home("alice"),
        client_home=lab.home("bob"),
    )


@pytest.fixture
def sshd(lab, nodes):
    """OpenSSH's sshd on 127.0.0.1:22 in the owner's namespace."""
    return labmod.Sshd(lab, nodes.owner_ns, port=22)


@pytest.fixture
def figure(record_property):
    """figure(name, value): reports a measured figure in the terminal summary and junit xml."""

    def rec(name, value):
        _FIGURES.append((name, value))
        record_property(name, value)
        print(f"FIGURE {name}: {value}")

    return rec
