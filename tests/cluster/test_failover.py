"""Three real node processes: losing the leader loses nothing a client received."""

import time
from pathlib import Path

import anyio
import pytest

from relay.messages import MessageType
from tests.cluster_nodes import (
    leader_of,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KIND = 150  # a stored room command that is never merged
PER_CLIENT = 300


async def stream(
    client: MixerClient,
    tag: str,
    sent: list[bytes],
    pause: float,
    done: anyio.Event | None = None,
) -> None:
    """Send numbered commands until done or the connection breaks."""
    for index in range(PER_CLIENT):
        body = f"{tag}-{index:04d}".encode()
        try:
            await client.send_raw(room_command(KIND, body))
        except (anyio.BrokenResourceError, OSError):
            return

        sent.append(body)
        await anyio.sleep(pause)

    if done is not None:
        done.set()


async def collect(client: MixerClient, received: list[bytes], seconds: float) -> None:
    """Record every room command received for ``seconds`` or until closed."""
    with anyio.move_on_after(seconds):
        while True:
            try:
                frame = await client.receive(timeout=seconds)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

            if frame.kind == KIND:
                received.append(bytes(frame.payload))
            elif frame.kind == MessageType.SEND_ERROR:
                received.append(b"SEND_ERROR")


async def history_on(port: int) -> list[bytes]:
    client = await MixerClient.connect(port)
    try:
        await client.handshake("checker")
        return [bytes(frame.payload) for frame in await client.join_room("r")]
    finally:
        await client.aclose()


def assert_in_order(received: list[bytes], history: list[bytes]) -> None:
    positions = [history.index(body) for body in received]
    assert positions == sorted(positions), "received out of history order"


async def test_cluster_leader_killed_loses_nothing_received(tmp_path: Path) -> None:
    """Kill -9 the leader while two clients on two nodes stream: the survivors'
    histories are equal, hold every command a client received, in the order it
    was received, once each; the restarted node ends with the same rows."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        follower = next(node for node in nodes if node is not leader)
        a = await MixerClient.connect(leader.port)
        b = await MixerClient.connect(follower.port)
        await a.handshake("a")
        await b.handshake("b")
        await a.create_room("r")
        await anyio.sleep(0.5)
        await b.join_room("r")

        sent_a: list[bytes] = []
        sent_b: list[bytes] = []
        got_a: list[bytes] = []
        got_b: list[bytes] = []
        b_done = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stream, a, "a", sent_a, 0.005)
            tasks.start_soon(stream, b, "b", sent_b, 0.01, b_done)
            tasks.start_soon(collect, a, got_a, 15.0)
            tasks.start_soon(collect, b, got_b, 15.0)
            await anyio.sleep(1.0)
            killed_at = time.monotonic()
            await anyio.to_thread.run_sync(leader.kill)
            with anyio.fail_after(20):
                await b_done.wait()

            await anyio.sleep(3.0)
            tasks.cancel_scope.cancel()

        survivors = [node for node in nodes if node is not leader]
        histories = [await history_on(node.port) for node in survivors]

        assert time.monotonic() - killed_at < 30
        assert b"SEND_ERROR" not in got_b
        assert histories[0] == histories[1]
        history = histories[0]
        assert len(set(history)) == len(history), "a command is stored twice"
        assert set(got_a) <= set(history)
        assert set(got_b) <= set(history)
        assert set(sent_b) <= set(history), "a command of a surviving node was lost"
        assert_in_order(got_a, history)
        assert_in_order(got_b, history)
        assert_in_order([body for body in history if body.startswith(b"b")], sent_b)
        assert any(body.startswith(b"a") for body in got_b)

        await a.aclose()
        await b.aclose()
        leader.start([node for node in nodes if node is not leader])
        wait_available([leader])
        wait_equal_rows(nodes)
        assert histories[0] == await history_on(leader.port)
    finally:
        stop_all(nodes)


async def test_cluster_large_command_crosses_nodes_whole(tmp_path: Path) -> None:
    """A command larger than one Raft entry, sent through a follower, reaches a
    member on another node whole and before the commands sent after it.

    Regression: the key that names a split command used up an entry number, so
    every later entry of that node waited for an entry that never came.
    """
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        sender_node, receiver_node = (node for node in nodes if node is not leader)
        sender = await MixerClient.connect(sender_node.port)
        receiver = await MixerClient.connect(receiver_node.port)
        await sender.handshake("sender")
        await receiver.handshake("receiver")
        await sender.create_room("r")
        await anyio.sleep(0.5)
        await receiver.join_room("r")
        large = bytes(range(256)) * (5 * 1024 * 1024 // 256)
        await sender.send_raw(room_command(KIND, large))
        await sender.send_raw(room_command(KIND, b"after"))
        first = await receiver.expect(KIND, timeout=30)
        second = await receiver.expect(KIND, timeout=10)

        assert bytes(first.payload) == large
        assert bytes(second.payload) == b"after"
        await sender.aclose()
        await receiver.aclose()
    finally:
        stop_all(nodes)
