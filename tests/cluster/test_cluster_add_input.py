"""``mixer-console cluster add`` given an address it should not take: found by
following the README as a new engineer (readme6): a word was refused with
pysyncobj's "not enough values to unpack" and exit 7, and an address where no
node runs was taken as a member. Both are refused since break-s6's c06828a."""

from pathlib import Path

import anyio
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_cluster_add_of_a_word_that_is_no_address_is_bad_usage(
    tmp_path: Path,
) -> None:
    """``cluster add garbage`` is a usage error (exit 2) saying host:port, not
    exit 7 with pysyncobj's "not enough values to unpack"."""
    nodes = make_nodes(tmp_path, 3)

    added = cluster_command(nodes[0], nodes[1:], "add", "garbage")

    assert added.returncode == 2, added.stdout + added.stderr
    assert "host:port" in added.stderr.lower()
    assert "unpack" not in added.stderr


async def test_cluster_add_of_a_node_that_is_not_running_is_refused(
    tmp_path: Path,
) -> None:
    """The README says ``cluster add`` adds a started node. An address where no
    node answers (a typo, a node not started yet) is refused, and the cluster
    keeps its members, instead of taking a member that can never vote and
    answering "is a member of the cluster now"."""
    nodes = make_nodes(tmp_path, 3)
    taken = {node.raft_port for node in nodes}
    nobody = Node("nobody", tmp_path / "nobody")
    for _ in range(50):
        if not {nobody.raft_port - 1, nobody.raft_port, nobody.raft_port + 1} & taken:
            break

        nobody.raft_port = free_raft_port()

    try:
        start_all(nodes)
        wait_available(nodes)

        added = await anyio.to_thread.run_sync(
            cluster_command, nodes[0], nodes[1:], "add", nobody.raft_address
        )

        assert added.returncode != 0, added.stdout
        assert "is a member of the cluster now" not in added.stdout
    finally:
        stop_all(nodes)
