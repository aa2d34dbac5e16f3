"""``mixer-console cluster add`` given an address it should not take: found by
following the README as a new engineer (readme6). Both are strict expected
failures: they say what a clear refusal looks like, and turn into failures of
the suite once the product does it, so that the mark is removed then."""

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


@pytest.mark.xfail(strict=True, reason="product defect: exit 7, pysyncobj's words")
def test_cluster_add_of_a_word_that_is_no_address_is_bad_usage(
    tmp_path: Path,
) -> None:
    """``cluster add garbage`` is a usage error (exit 2) naming HOST:PORT, not
    exit 7 with pysyncobj's "not enough values to unpack"."""
    nodes = make_nodes(tmp_path, 3)

    added = cluster_command(nodes[0], nodes[1:], "add", "garbage")

    assert added.returncode == 2, added.stdout + added.stderr
    assert "HOST:PORT" in added.stderr
    assert "unpack" not in added.stderr


@pytest.mark.xfail(strict=True, reason="product defect: a node nobody runs is added")
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
