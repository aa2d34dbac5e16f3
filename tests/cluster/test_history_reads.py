"""Three real node processes: an operator reads and exports a room's history on
any node, whichever nodes its commands came through."""

from pathlib import Path

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.config import ADMIN_SOCKET_NAME
from relay.control import HistoryPage, OperationRefused
from relay.messages import MessageType
from relay.protocol import encode_string
from store.roomfile import iter_room_file_frames
from tests.cluster_nodes import make_nodes, start_all, stop_all, wait_available
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OPERATOR = "ops"
WAIT_SECONDS = 20.0
MAX_FRAME_BYTES = 1024**2


def command(sender: str, index: int) -> bytes:
    body = encode_string(f"/scene/{sender}/{index}") + bytes(200)
    return room_command(MessageType.TRANSFORM, body)


async def full_history(admin: AdminClient, room: str, total: int) -> HistoryPage:
    """The room's first page once the node holds ``total`` commands (bounded)."""
    with anyio.fail_after(WAIT_SECONDS):
        for _ in range(int(WAIT_SECONDS / 0.2)):
            try:
                page = await admin.history_page(room, 1, 100)
            except OperationRefused:
                page = None  # the room has not reached this node yet

            if page is not None and page.total == total:
                return page

            await anyio.sleep(0.2)

    raise AssertionError(f"the node never held {total} commands: {page}")


async def until_joinable(client: MixerClient, room: str) -> None:
    """Wait (bounded) until the client's node lists ``room`` as joinable."""
    with anyio.fail_after(WAIT_SECONDS):
        for _ in range(int(WAIT_SECONDS / 0.1)):
            listed = (await client.list_rooms()).get(room)
            if listed is not None and listed.get("joinable"):
                return

            await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_history_reads_and_exports_on_every_node(tmp_path: Path) -> None:
    """Commands sent through node A and node B are listed in the same order
    with their senders on node C, a command inspected there shows its path, and
    exports from C and A are the same file, holding exactly the commands sent.
    A fork stays refused on a cluster node, saying so."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        ada = await MixerClient.connect(a.port)
        await ada.handshake("ada")
        first = [command("ada", index) for index in range(20)]
        await ada.create_room("scene", commands=first)
        bob = await MixerClient.connect(b.port)
        await bob.handshake("bob")
        await until_joinable(bob, "scene")
        await bob.join_room("scene")
        then = [command("bob", index) for index in range(5)]
        for wire in then:
            await bob.send_raw(wire)

        admin_a = AdminClient(a.data_dir / ADMIN_SOCKET_NAME)
        admin_c = AdminClient(c.data_dir / ADMIN_SOCKET_NAME)
        page = await full_history(admin_c, "scene", total=25)
        detail = await admin_c.command("scene", 21)
        await full_history(admin_a, "scene", total=25)
        export_c = tmp_path / "from-c.mixer"
        export_a = tmp_path / "from-a.mixer"
        size = await admin_c.export_room("scene", export_c, operator=OPERATOR)
        await admin_a.export_room("scene", export_a, operator=OPERATOR)

        assert [summary.size for summary in page.commands] == [
            len(wire) for wire in first + then
        ]
        assert [summary.index for summary in page.commands] == list(range(1, 26))
        assert detail.leading_path == "/scene/bob/0"
        assert size == export_c.stat().st_size
        assert export_c.read_bytes() == export_a.read_bytes()
        assert list(iter_room_file_frames(export_c, MAX_FRAME_BYTES)) == first + then

        with pytest.raises(OperationRefused, match="not available on a cluster"):
            await admin_c.fork_room("scene", 10, "scene-at-10", operator=OPERATOR)

        with pytest.raises(OperationRefused, match="Raft file"):
            await admin_c.export_room(
                "scene", c.data_dir / "raft.journal", operator=OPERATOR
            )

        await admin_a.aclose()
        await admin_c.aclose()
        await ada.aclose()
        await bob.aclose()
    finally:
        stop_all(nodes)
