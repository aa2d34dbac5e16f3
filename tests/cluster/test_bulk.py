"""Three real node processes: large commands travel beside the Raft log, and
every node ends with them whole."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from store.bulk import bulk_address, bulk_key, digest_of, fetch
from tests.cluster.test_failover import KIND, collect, history_on
from tests.cluster_nodes import (
    SECRET,
    leader_of,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MIB = 1024 * 1024


@asynccontextmanager
async def joined_pair(
    sender_port: int, receiver_port: int, room: str = "r"
) -> AsyncIterator[tuple[MixerClient, MixerClient]]:
    """A client that created ``room`` and a client of another node in it, both
    closed on the way out, whether the test passed or not."""
    sender = await MixerClient.connect(sender_port)
    try:
        receiver = await MixerClient.connect(receiver_port)
        try:
            await sender.handshake("sender")
            await receiver.handshake("receiver")
            await sender.create_room(room)
            await anyio.sleep(0.5)
            await receiver.join_room(room)
            yield sender, receiver
        finally:
            await receiver.aclose()
    finally:
        await sender.aclose()


async def test_a_large_command_travels_beside_the_log(tmp_path: Path) -> None:
    """Its bytes reach a member on another node whole and in order, every node
    stores them, none of them is in a Raft journal, and a peer without the
    secret cannot read them from a node's bulk port."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        sender_node, receiver_node = (node for node in nodes if node is not leader)
        pair = joined_pair(sender_node.port, receiver_node.port)
        async with pair as (sender, receiver):
            large = os.urandom(3 * MIB)
            await sender.send_raw(room_command(KIND, large))
            await sender.send_raw(room_command(KIND, b"after"))

            assert bytes((await receiver.expect(KIND, timeout=30)).payload) == large
            assert bytes((await receiver.expect(KIND, timeout=10)).payload) == b"after"
            rows = wait_equal_rows(nodes, commands=2)
            wire = next(row[4] for row in rows["commands"] if len(row[4]) > MIB)
            for node in nodes:
                journal = (node.data_dir / "raft.journal").read_bytes()
                assert large[:4096] not in journal

            address = bulk_address(receiver_node.raft_address)
            wrong = bulk_key("not-the-cluster-secret-at-all")
            assert fetch(address, wrong, digest_of(wire)) is None
            assert fetch(address, bulk_key(SECRET), digest_of(wire)) == wire
    finally:
        stop_all(nodes)


async def test_a_node_down_during_the_transfer_fetches_the_bytes(
    tmp_path: Path,
) -> None:
    """A node that was down while a large command was shared gets its bytes from
    a peer when it comes back, and its rows equal the others'."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        sender_node, absent = (node for node in nodes if node is not leader)
        absent.kill()
        async with joined_pair(sender_node.port, leader.port) as (sender, receiver):
            large = os.urandom(2 * MIB)
            await sender.send_raw(room_command(KIND, large))

            assert bytes((await receiver.expect(KIND, timeout=30)).payload) == large
            absent.start([node for node in nodes if node is not absent])
            wait_available([absent])
            wait_equal_rows(nodes, commands=1)
            assert [e for e in absent.events() if e.get("event") == "bulk.fetched"]
    finally:
        stop_all(nodes)


async def test_the_senders_node_killed_mid_transfer_leaves_no_partial_command(
    tmp_path: Path,
) -> None:
    """The sender's node is killed while it streams large commands: the survivors
    agree on the history, every command a client received is whole and in it,
    and large commands still get through afterwards."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        sender_node, receiver_node = (node for node in nodes if node is not leader)
        survivors = [leader, receiver_node]
        pair = joined_pair(sender_node.port, receiver_node.port)
        async with pair as (sender, receiver):
            sent = [bytes([index]) + os.urandom(MIB - 1) for index in range(12)]
            received: list[bytes] = []

            async def stream() -> None:
                for body in sent:
                    try:
                        await sender.send_raw(room_command(KIND, body))
                    except (anyio.BrokenResourceError, OSError):
                        return

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stream)
                first = await receiver.expect(KIND, timeout=30)
                sender_node.kill()

            received.append(bytes(first.payload))
            await collect(receiver, received, 8.0)

            wait_equal_rows(survivors)
            history = await history_on(leader.port)
            assert history == await history_on(receiver_node.port)
            assert all(body in sent for body in history)
            assert [body for body in received if body in sent] == history

            later_pair = joined_pair(leader.port, receiver_node.port, "later")
            async with later_pair as (late, watcher):
                after = os.urandom(MIB)
                await late.send_raw(room_command(KIND, after))
                assert bytes((await watcher.expect(KIND, timeout=30)).payload) == after
    finally:
        stop_all(nodes)
