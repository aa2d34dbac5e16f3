"""Three real node processes: an operator reads, exports, forks and rewinds a
room's history on any node, whichever nodes its commands came through."""

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.config import ADMIN_SOCKET_NAME
from relay.control import HistoryPage, OperationRefused
from relay.messages import MessageType
from relay.protocol import encode_string
from store.roomfile import iter_room_file_frames
from tests.cluster_nodes import (
    Node,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OPERATOR = "ops"
WAIT_SECONDS = 20.0
MAX_FRAME_BYTES = 1024**2


def command(sender: str, index: int) -> bytes:
    body = encode_string(f"/scene/{sender}/{index}") + bytes(200)
    return room_command(MessageType.TRANSFORM, body)


async def scene_through(node: Node, count: int) -> tuple[MixerClient, list[bytes]]:
    """Ada, connected to ``node``, creates room "scene" with ``count`` commands;
    returns her client and the commands."""
    sent = [command("ada", index) for index in range(count)]
    ada = await MixerClient.connect(node.port)
    await ada.handshake("ada")
    await ada.create_room("scene", commands=sent)
    return ada, sent


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
    exports from C and A are the same file, holding exactly the commands sent."""
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


def stored_history(node: Node, room: str) -> list[tuple[int, bytes]]:
    """The room's commands (kind, bytes) in the node's SQLite file."""
    connection = sqlite3.connect(node.data_dir / "rooms.sqlite", timeout=10)
    try:
        return connection.execute(
            "SELECT commands.kind, commands.wire FROM commands JOIN rooms "
            "ON rooms.id = commands.room_id WHERE rooms.name = ? ORDER BY seq",
            [room],
        ).fetchall()
    finally:
        connection.close()


async def until_stored(nodes: list[Node], room: str, wires: list[bytes]) -> None:
    """Wait (bounded) until every node's file holds exactly ``wires`` for room."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        stored = [[wire for _, wire in stored_history(n, room)] for n in nodes]
        if stored == [wires] * len(nodes):
            return

        assert time.monotonic() < deadline, [len(history) for history in stored]
        await anyio.sleep(0.2)


async def resynchronised(client: MixerClient) -> list[bytes]:
    """What a member receives after a rewind: CLEAR_CONTENT, the history, then
    JOIN_ROOM; returns the room commands in between."""
    await client.expect(MessageType.CLEAR_CONTENT, timeout=WAIT_SECONDS)
    frames = await client.receive_until(MessageType.JOIN_ROOM, timeout=WAIT_SECONDS)
    return [bytes(frame.wire) for frame in frames if frame.kind > 100]


@pytest.mark.anyio
async def test_fork_and_rewind_through_any_node(tmp_path: Path) -> None:
    """A fork asked on node C is a room an artist on node A joins with exactly
    its first commands; a rewind asked on node B resynchronises the members on
    all three nodes to the first commands, and every node's file holds the same
    rows after each; the room goes on from there."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        ada, sent = await scene_through(a, 10)
        members = [ada]
        for node, name in ((b, "bob"), (c, "carol")):
            member = await MixerClient.connect(node.port)
            await member.handshake(name)
            await until_joinable(member, "scene")
            joined = await member.join_room("scene")
            assert [bytes(frame.wire) for frame in joined] == sent
            members.append(member)

        admin_b = AdminClient(b.data_dir / ADMIN_SOCKET_NAME)
        admin_c = AdminClient(c.data_dir / ADMIN_SOCKET_NAME)
        await admin_c.fork_room("scene", 6, "scene-at-6", operator=OPERATOR)
        dave = await MixerClient.connect(a.port)
        await dave.handshake("dave")
        await until_joinable(dave, "scene-at-6")
        forked = await dave.join_room("scene-at-6")

        assert [bytes(frame.wire) for frame in forked] == sent[:6]
        await until_stored(nodes, "scene-at-6", sent[:6])
        await until_stored(nodes, "scene", sent)

        await admin_b.rewind_room("scene", 4, operator=OPERATOR)
        for member in members:
            assert await resynchronised(member) == sent[:4]

        await until_stored(nodes, "scene", sent[:4])
        after = command("ada", 99)
        await ada.send_raw(after)
        for member in members[1:]:
            frames = await member.receive_until(MessageType.TRANSFORM, timeout=5)
            assert bytes(frames[-1].wire) == after

        await until_stored(nodes, "scene", [*sent[:4], after])
        for client in (*members, dave):
            await client.aclose()

        await admin_b.aclose()
        await admin_c.aclose()
    finally:
        stop_all(nodes)
