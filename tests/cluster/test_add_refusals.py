"""``mixer-console cluster add`` refuses an address no node can have, and a node
that does not answer: pysyncobj takes any text with a colon as a member, and a
member that never answers counts against the quorum for good."""

import time
from pathlib import Path

import pytest

from tests.cluster.test_catch_up import cluster_command
from tests.cluster_nodes import (
    Node,
    free_raft_port,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
)

# Long enough for the two remaining nodes to elect a leader (pysyncobj's election
# timeout is about a second) had the third node's loss cost them the quorum.
ELECTION_SECONDS = 6.0


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1:99999", "must name a port from 1 to 65535"),
        ("127.0.0.1:0", "must name a port from 1 to 65535"),
        ("notanaddress", "must be host:port"),
        ("127.0.0.1:abc", "must be a whole number"),
    ],
)
def test_cluster_add_refuses_an_impossible_address(
    tmp_path: Path, address: str, reason: str
) -> None:
    """Refused with exit status 2 before any node is asked (none runs here)."""
    node, peer = Node("node0", tmp_path / "node0"), Node("node1", tmp_path / "node1")

    added = cluster_command(node, [peer], "add", address)

    assert added.returncode == 2, added.stdout + added.stderr
    assert address in added.stderr
    assert reason in added.stderr
    assert "Traceback" not in added.stderr


def test_cluster_add_refuses_a_node_that_does_not_answer(tmp_path: Path) -> None:
    """A port out of range, or one where no node runs, is not added: after the
    refusals the cluster of three still has its quorum with one node down."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)

        out_of_range = cluster_command(nodes[0], nodes[1:], "add", "127.0.0.1:99999")
        nobody = f"127.0.0.1:{free_raft_port()}"
        not_started = cluster_command(nodes[0], nodes[1:], "add", nobody)

        assert out_of_range.returncode == 2, out_of_range.stdout + out_of_range.stderr
        assert not_started.returncode == 7, not_started.stdout + not_started.stderr
        assert f"not adding {nobody}" in not_started.stderr
        assert "start it first" in not_started.stderr

        nodes[2].kill()
        time.sleep(ELECTION_SECONDS)
        status = cluster_command(nodes[0], nodes[1:2], "status", "--json")

        assert status.returncode == 0, status.stdout + status.stderr
        assert '"has_quorum": false' not in status.stdout
        assert status.stdout.count('"has_quorum": true') == 2
    finally:
        stop_all(nodes)
