"""The client recovers by itself when the owner's daemon dies and comes back."""

import time

import pytest

from lab import echo_roundtrip, retry

RECOVERY_S = 12  # "new client connections succeed again within ~10 s" (+ slack for a busy CI box)


@pytest.mark.timeout_s(150)
def test_owner_kill9_and_restart_client_recovers(lab, nodes, transport, figure):
    o, c = nodes.owner_ns, nodes.client_ns
    srv = lab.server(o, 7000)
    args = dict(transport=transport, serve=["echo=127.0.0.1:7000"], allow=[nodes.client_home.id])
    owner = lab.start_node(o, nodes.owner_home, **args)
    client = lab.start_node(
        c, nodes.client_home, transport=transport, forward=[f"{lab.target(owner, 'echo')}=127.0.0.1:7001"]
    )
    echo_roundtrip(c, 7001)

    owner.kill9()
    time.sleep(0.5)
    restarted = lab.start_node(o, nodes.owner_home, **args)  # same home, same key, same address
    t0 = time.monotonic()
    _, attempts = retry(lambda: echo_roundtrip(c, 7001, timeout=3), timeout=RECOVERY_S)
    took = time.monotonic() - t0
    assert client.alive(), f"the client daemon died\n{client.tail()}"
    assert restarted.alive()
    assert srv.accepts >= 2
    # The owner's restart is seen at once (QUIC stateless reset, TCP reset), and a connection
    # the old owner never answered is replayed on the new session: no connection fails.
    assert attempts == 1, f"{attempts - 1} connection(s) failed before the client recovered"
    figure(f"recovery after owner kill -9 ({transport})", f"{took:.2f} s, {attempts} attempt(s)")
