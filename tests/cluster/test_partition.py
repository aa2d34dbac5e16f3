"""Three real node processes: quorum loss, a paused node, a full restart, and
the secret."""

import os
import pickle
import signal
import socket
import struct
import time
import zlib
from pathlib import Path

import anyio
import pytest

from relay.messages import MessageType
from tests.cluster.test_failover import KIND, collect, history_on, stream
from tests.cluster_nodes import (
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, join_payload, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BURST = 600


async def test_cluster_cut_off_node_refuses_then_rejoins(tmp_path: Path) -> None:
    """A node whose peers are gone tells its clients (SEND_ERROR, then closes)
    within seconds and refuses room requests; once the peers are back it
    accepts them again and its room members see the others' commands."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        lone = nodes[0]
        member = await MixerClient.connect(lone.port)
        await member.handshake("member")
        await member.create_room("r")

        cut_at = time.monotonic()
        for node in nodes[1:]:
            await anyio.to_thread.run_sync(node.kill)

        frames = await member.expect_closed(timeout=10)
        closed_after = time.monotonic() - cut_at
        late = await MixerClient.connect(lone.port)
        await late.send(MessageType.JOIN_ROOM, join_payload("r"))
        refusal = await late.expect_error()
        await late.expect_closed()
        await late.aclose()

        assert any(frame.kind == MessageType.SEND_ERROR for frame in frames)
        assert closed_after < 8
        assert "no quorum" in refusal

        earlier = [e for e in lone.events() if e.get("event") == "cluster.available"]
        for node in nodes[1:]:
            node.launch([peer for peer in nodes if peer is not node])

        for node in nodes[1:]:
            node.wait_started()

        # The lone node logged "available" before the cut too: wait for the next.
        lone.wait_event("cluster.available", 20, after=len(earlier))
        wait_available(nodes[1:])
        back = await MixerClient.connect(lone.port)
        other = await MixerClient.connect(nodes[1].port)
        await back.handshake("back")
        await other.handshake("other")
        await back.join_room("r")
        await anyio.sleep(0.3)
        await other.join_room("r")
        await back.send_raw(room_command(KIND, b"after the partition"))
        frame = await other.expect(KIND, timeout=10)

        assert bytes(frame.payload) == b"after the partition"
        await back.aclose()
        await other.aclose()
        await member.aclose()
    finally:
        stop_all(nodes)


async def test_cluster_all_killed_at_once_loses_nothing(tmp_path: Path) -> None:
    """Kill -9 all three nodes at the same moment, start them again: every
    command a client received is still there, once, in the same order on every
    node (the cluster's term and votes survive the restart)."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        sender = await MixerClient.connect(nodes[0].port)
        receiver = await MixerClient.connect(nodes[1].port)
        await sender.handshake("sender")
        await receiver.handshake("receiver")
        await sender.create_room("r")
        await anyio.sleep(0.3)
        await receiver.join_room("r")
        sent: list[bytes] = []
        received: list[bytes] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stream, sender, "s", sent, 0.002)
            tasks.start_soon(collect, receiver, received, 10.0)
            await anyio.sleep(1.0)
            for node in nodes:
                node.process.kill()  # type: ignore[union-attr]

            for node in nodes:
                await anyio.to_thread.run_sync(node.process.wait, 10)  # type: ignore[union-attr]

            tasks.cancel_scope.cancel()

        start_all(nodes)
        wait_available(nodes)
        histories = [await history_on(node.port) for node in nodes]

        assert received, "the receiver got nothing before the crash"
        assert histories[0] == histories[1] == histories[2]
        assert len(set(histories[0])) == len(histories[0])
        assert set(received) <= set(histories[0])
        assert [body for body in histories[0] if body in set(received)] == received
        wait_equal_rows(nodes)
        await sender.aclose()
        await receiver.aclose()
    finally:
        stop_all(nodes)


class CreatesFile:
    """Unpickling this creates a file: proof that a payload was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


async def test_cluster_paused_node_reports_its_stall_and_catches_up(
    tmp_path: Path,
) -> None:
    """A node frozen for seconds (SIGSTOP, as a paused VM) logs how long its Raft
    thread stood still once it runs again, and ends with the others' rows."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        paused = nodes[2]
        assert paused.process is not None
        sender = await MixerClient.connect(nodes[0].port)
        await sender.handshake("sender")
        await sender.create_room("r")

        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            for index in range(20):
                await sender.send_raw(room_command(KIND, b"while paused %d" % index))
            await anyio.sleep(1.5)
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)

        stalled = paused.wait_event("raft.thread_stalled", 10)
        rows = wait_equal_rows(nodes, commands=20)

        assert stalled["seconds"] >= 1.0
        assert len(rows["commands"]) == 20
        await sender.aclose()
    finally:
        stop_all(nodes)


async def test_cluster_node_stopped_after_a_burst_commits_what_it_accepted(
    tmp_path: Path,
) -> None:
    """A node stopped (SIGTERM) right after a sender's burst first commits the
    commands it had accepted: the others end with all of them. Before, a node
    dropped what it had not committed yet (19 of 600 in the breaker's test)."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        stopping = nodes[0]
        sender = await MixerClient.connect(stopping.port)
        await sender.handshake("sender")
        await sender.create_room("r")
        for index in range(BURST):
            await sender.send_raw(room_command(KIND, b"%04d" % index + b"." * 2000))

        await sender.sync()
        status = await anyio.to_thread.run_sync(stopping.stop)
        rows = wait_equal_rows(nodes[1:], commands=BURST)

        assert status == 0
        assert len(rows["commands"]) == BURST
        assert stopping.wait_event("relay.stopped", 1)["cluster_drained"] is True
        await sender.aclose()
    finally:
        stop_all(nodes)


def raw_pysyncobj_message(message: object) -> bytes:
    """A message framed as pysyncobj frames it when it has no password."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


async def test_cluster_without_secret_cannot_join_read_or_execute(
    tmp_path: Path,
) -> None:
    """A node with the wrong secret never joins and never receives a row; an
    unauthenticated pickled message that would create a file is refused, and
    the file does not appear."""
    nodes = make_nodes(tmp_path, 3)
    intruder = nodes[2]
    try:
        for node in nodes[:2]:
            node.launch([peer for peer in nodes if peer is not node])

        intruder.launch(nodes[:2], secret="not-the-cluster-secret-at-all")
        for node in nodes:
            node.wait_started()

        wait_available(nodes[:2])
        writer = await MixerClient.connect(nodes[0].port)
        await writer.handshake("writer")
        await writer.create_room("r")
        await writer.send_raw(room_command(KIND, b"secret scene"))
        wait_equal_rows(nodes[:2])

        marker = tmp_path / "executed"
        for node in nodes[:2]:
            with socket.create_connection(("127.0.0.1", node.raft_port), 5) as sock:
                sock.sendall(raw_pysyncobj_message(CreatesFile(marker)))
                sock.sendall(raw_pysyncobj_message(["status"]))
                sock.settimeout(5)
                try:
                    answer = sock.recv(4096)
                except (ConnectionResetError, TimeoutError):
                    answer = b""

            assert answer == b"", "a node answered an unauthenticated message"

        await anyio.sleep(3.0)

        assert not marker.exists()
        assert intruder.rows() == {"rooms": [], "commands": []}
        assert not [e for e in intruder.events() if e["event"] == "cluster.available"]
        assert "secret scene" not in intruder.log_path.read_text(errors="replace")
        assert len(await history_on(nodes[1].port)) == 1
        await writer.aclose()
    finally:
        stop_all(nodes)
