"""Who may reach a service: allow lists, NodeId checks, key pinning; a dead target.

In every refusal the client's forwarded connection must be closed (EOF or reset) and the
owner's target must never see a connection."""

import time

import pytest

from lab import VX6_BIN, echo_roundtrip, expect_closed

GRACE = 0.5  # after a refusal, time for a (wrong) late connect to the target to show up


@pytest.mark.timeout_s(120)
def test_node_not_in_allow_list_is_refused(lab, nodes, transport):
    o = nodes.owner_ns
    outsider_ns = lab.node("outsider")
    lab.check_link(outsider_ns, o)
    srv = lab.server(o, 7000)
    owner = lab.start_node(
        o, nodes.owner_home, transport=transport, serve=["echo=127.0.0.1:7000"], allow=[nodes.client_home.id]
    )
    target = f"{lab.target(owner, 'echo')}=127.0.0.1:7001"
    outsider = lab.start_node(outsider_ns, lab.home("mallory"), transport=transport, forward=[target])

    expect_closed(outsider_ns, 7001)
    outsider.wait_log("closed: access denied (access_denied)")
    owner.wait_log("refused stream for \"echo\"")
    assert "(access_denied)" in owner.log()
    time.sleep(GRACE)
    assert srv.accepts == 0, f"the target saw {srv.accepts} connection(s) from a refused node"

    # control: the allowed node gets through, so the refusal above was the allow list at work
    lab.start_node(nodes.client_ns, nodes.client_home, transport=transport, forward=[target])
    echo_roundtrip(nodes.client_ns, 7001)
    assert srv.accepts == 1

    # and the outsider stays refused while the service is in use
    expect_closed(outsider_ns, 7001)
    time.sleep(GRACE)
    assert srv.accepts == 1, "the target saw a connection from the refused node"


@pytest.mark.timeout_s(60)
def test_service_without_allow_or_public_is_refused_at_start(nodes, transport):
    """Who may use a service is an explicit choice: a --serve with neither --allow nor --public
    is a configuration error, reported in one line before anything listens."""
    cp = nodes.owner_ns.run(
        [VX6_BIN, "node", "--home", nodes.owner_home.path, "--listen", f"[{nodes.owner_ns.addr}]:4433",
         "--transport", transport, "--serve", "echo=127.0.0.1:7000"],
        timeout=30,
        check=False,
    )
    assert cp.returncode != 0, f"daemon started without an access choice: {cp.stdout!r}"
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and "explicit choice" in lines[0], f"stderr: {cp.stderr!r}"
    assert "ready" not in cp.stdout


@pytest.mark.timeout_s(120)
def test_wrong_expected_node_id_fails(lab, nodes, transport):
    o, c = nodes.owner_ns, nodes.client_ns
    srv = lab.server(o, 7000)
    owner = lab.start_node(o, nodes.owner_home, transport=transport, serve=["echo=127.0.0.1:7000"], public=True)
    someone_else = lab.home("carol")  # never runs; its NodeId is the wrong expectation
    assert someone_else.id != nodes.owner_home.id
    client = lab.start_node(
        c,
        nodes.client_home,
        transport=transport,
        forward=[f"{lab.target(owner, 'echo', node_id=someone_else.id)}=127.0.0.1:7001"],
    )
    expect_closed(c, 7001)
    client.wait_log("expected")
    client.wait_log("(peer_key_mismatch)")
    time.sleep(GRACE)
    assert srv.accepts == 0, f"the target saw {srv.accepts} connection(s) through an unverified peer"


@pytest.mark.timeout_s(150)
def test_pinned_key_change_is_refused(lab, nodes, transport):
    o, c = nodes.owner_ns, nodes.client_ns
    srv = lab.server(o, 7000)
    owner = lab.start_node(o, nodes.owner_home, transport=transport, serve=["echo=127.0.0.1:7000"], public=True)
    client = lab.start_node(
        c,
        nodes.client_home,
        transport=transport,
        forward=[f"{lab.target(owner, 'echo', with_id=False)}=127.0.0.1:7001"],  # no NODEID@: pin
    )
    echo_roundtrip(c, 7001)
    assert srv.accepts == 1
    known = nodes.client_home.path / "known_peers"
    assert known.exists(), f"first use did not write {known}"

    # the owner is replaced by a different node (new home, new key) on the same address
    owner.stop(timeout=10)
    impostor = lab.start_node(
        o, lab.home("impostor"), transport=transport, serve=["echo=127.0.0.1:7000"], public=True
    )
    assert impostor.listen == owner.listen
    for _ in range(3):
        expect_closed(c, 7001)
    client.wait_log("pinned")
    client.wait_log("(peer_key_mismatch)")
    time.sleep(GRACE)
    assert srv.accepts == 1, "the target saw a connection through a node whose key changed"


@pytest.mark.timeout_s(120)
def test_target_down_closes_connection(lab, nodes, transport):
    o, c = nodes.owner_ns, nodes.client_ns
    srv = lab.server(o, 7000)
    # 127.0.0.1:7999 in the owner's fresh namespace: nothing listens there
    owner = lab.start_node(
        o,
        nodes.owner_home,
        transport=transport,
        serve=["down=127.0.0.1:7999", "echo=127.0.0.1:7000"],
        public=True,
    )
    lab.start_node(
        c,
        nodes.client_home,
        transport=transport,
        forward=[
            f"{lab.target(owner, 'down')}=127.0.0.1:7001",
            f"{lab.target(owner, 'echo')}=127.0.0.1:7002",
        ],
    )
    expect_closed(c, 7001)
    owner.wait_log("(target_unavailable)")
    # a dead service does not take the session (or the other service) down with it
    echo_roundtrip(c, 7002)
    expect_closed(c, 7001)
    assert srv.accepts == 1
