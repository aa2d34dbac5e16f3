"""Three real node processes: an operator forks and rewinds a room on one node
while an artist on another streams commands into it."""

from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskStatus

from relay.admin_client import AdminClient
from relay.config import ADMIN_SOCKET_NAME
from relay.messages import MessageType
from relay.protocol import Frame
from tests.cluster.test_history_operations import (
    OPERATOR,
    command,
    stored_history,
    until_joinable,
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

STREAMED = 300
QUIET_SECONDS = 3.0
RECEIVE_SECONDS = 0.5


async def collect(
    client: MixerClient,
    into: list[Frame],
    stop: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Keep what ``client`` receives until ``stop`` is set."""
    task_status.started()
    while not stop.is_set():
        try:
            into.append(await client.receive(timeout=RECEIVE_SECONDS))
        except TimeoutError:
            continue


def scene_held(frames: list[Frame]) -> list[bytes]:
    """The room commands a member holds: those after its last CLEAR_CONTENT."""
    clears = [i for i, f in enumerate(frames) if f.kind == MessageType.CLEAR_CONTENT]
    start = clears[-1] + 1 if clears else 0
    return [bytes(frame.wire) for frame in frames[start:] if frame.kind > 100]


@pytest.mark.anyio
async def test_forks_and_rewinds_while_commands_stream_through_another_node(
    tmp_path: Path,
) -> None:
    """Forks and rewinds asked on node C while bob streams commands through node
    B all take effect; afterwards every node's file holds the same rows, and the
    members on A and C hold exactly the room's final history."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        ada = await MixerClient.connect(a.port)
        await ada.handshake("ada")
        await ada.create_room("scene", commands=[command("ada", i) for i in range(20)])
        bob = await MixerClient.connect(b.port)
        carol = await MixerClient.connect(c.port)
        for member, name in ((bob, "bob"), (carol, "carol")):
            await member.handshake(name)
            await until_joinable(member, "scene")
            await member.join_room("scene")

        admin = AdminClient(c.data_dir / ADMIN_SOCKET_NAME)
        received: dict[str, list[Frame]] = {"ada": [], "carol": []}
        stop = anyio.Event()

        async def stream() -> None:
            for index in range(STREAMED):
                await bob.send_raw(command("bob", index))
                if index % 4 == 0:
                    await anyio.sleep(0.03)

        async with anyio.create_task_group() as collectors:
            await collectors.start(collect, ada, received["ada"], stop)
            await collectors.start(collect, carol, received["carol"], stop)
            async with anyio.create_task_group() as streaming:
                streaming.start_soon(stream)
                await anyio.sleep(0.15)
                await admin.fork_room("scene", 10, "at-10", operator=OPERATOR)
                await admin.rewind_room("scene", 15, operator=OPERATOR)
                await admin.fork_room("scene", 5, "at-5", operator=OPERATOR)
                await admin.rewind_room("scene", 3, operator=OPERATOR)
                await admin.fork_room("scene", 0, "empty", operator=OPERATOR)

            await anyio.sleep(QUIET_SECONDS)
            stop.set()

        rows = wait_equal_rows(nodes)
        final = [wire for _, wire in stored_history(a, "scene")]
        held = {name: scene_held(frames) for name, frames in received.items()}
        await admin.aclose()
        for client in (ada, bob, carol):
            await client.aclose()
    finally:
        stop_all(nodes)

    assert sorted(row[1] for row in rows["rooms"]) == [
        "at-10",
        "at-5",
        "empty",
        "scene",
    ]
    assert held == {"ada": final, "carol": final}
    assert final[:3] == [command("ada", i) for i in range(3)]
