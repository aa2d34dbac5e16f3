"""Three real node processes: an operator's rewind or fork, then a node
restarted or cut off from the other two."""

from pathlib import Path

import pytest

from relay.admin_client import AdminClient
from relay.config import ADMIN_SOCKET_NAME
from relay.control import OperationRefused
from tests.cluster.test_history_operations import (
    OPERATOR,
    command,
    full_history,
    scene_through,
    until_joinable,
    until_stored,
)
from tests.cluster_nodes import (
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WAIT_SECONDS = 20.0


@pytest.mark.anyio
async def test_node_restarted_after_a_rewind_writes_the_rows_of_the_others(
    tmp_path: Path,
) -> None:
    """Regression: a node restarted after a rewind cut the newest commands
    numbered the next commands from what was left, lower than its peers did, so
    its rows never matched theirs again; now every node's file holds the same
    rows, numbers included."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        ada, sent = await scene_through(a, 10)
        admin_b = AdminClient(b.data_dir / ADMIN_SOCKET_NAME)
        await full_history(admin_b, "scene", total=10)
        await admin_b.rewind_room("scene", 4, operator=OPERATOR)
        await until_stored(nodes, "scene", sent[:4])
        await admin_b.aclose()

        c.stop()
        c.start([a, b])
        c.wait_event("cluster.available", WAIT_SECONDS)
        after = [command("ada", index) for index in range(100, 103)]
        for wire in after:
            await ada.send_raw(wire)

        await until_stored(nodes, "scene", sent[:4] + after)
        rows = wait_equal_rows(nodes, WAIT_SECONDS, commands=7)
        await ada.aclose()
    finally:
        stop_all(nodes)

    assert [row[4] for row in rows["commands"]] == sent[:4] + after


@pytest.mark.anyio
async def test_fork_and_rewind_on_a_node_cut_off_are_refused(tmp_path: Path) -> None:
    """With the two other nodes stopped, a fork or a rewind asked on the node
    left is refused at once, saying why, and its room is as it was."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        ada, _ = await scene_through(a, 5)
        bob = await MixerClient.connect(a.port)
        await bob.handshake("bob")
        await until_joinable(bob, "scene")
        await bob.aclose()
        await ada.aclose()
        admin_a = AdminClient(a.data_dir / ADMIN_SOCKET_NAME)
        await full_history(admin_a, "scene", total=5)

        b.stop()
        c.stop()
        a.wait_event("cluster.unavailable", WAIT_SECONDS)
        with pytest.raises(OperationRefused, match="no quorum"):
            await admin_a.fork_room("scene", 2, "scene-at-2", operator=OPERATOR)

        with pytest.raises(OperationRefused, match="no quorum"):
            await admin_a.rewind_room("scene", 2, operator=OPERATOR)

        page = await admin_a.history_page("scene", 1, 10)
        rooms = [room.name for room in (await admin_a.snapshot()).rooms]
        await admin_a.aclose()
    finally:
        stop_all(nodes)

    assert page.total == 5
    assert rooms == ["scene"]
