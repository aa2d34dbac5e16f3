"""Three real node processes attacked while they write and install snapshots
(store/snapshots.py): every node ends with the same rows, and compaction goes on."""

import os
import signal
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from tests.cluster.test_catch_up import COMPACTION, send_commands
from tests.cluster_nodes import (
    Node,
    leader_of,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# A pace at which a copy of the test's database (about 1.5 MB) takes seconds,
# so that a node can be killed, paused or sent a snapshot while it copies.
SLOW_COPY = {**COMPACTION, "MIXER_RAFT_SNAPSHOT_PACE": "300000"}
# Copies of seconds each, one after another under steady traffic.
STEADY_COPY = {**COMPACTION, "MIXER_RAFT_SNAPSHOT_PACE": "100000"}
# A copy that outlasts a pause of several seconds (its pace counts wall time).
SLOWER_COPY = {**COMPACTION, "MIXER_RAFT_SNAPSHOT_PACE": "50000"}


def count_events(node: Node, name: str) -> int:
    return sum(1 for event in node.events() if event.get("event") == name)


def wait_clients_gone(node: Node, timeout: float = 10.0) -> None:
    """Wait until ``node`` has seen every client of this test leave: a client
    that connects earlier is sent the last one's CLIENT_DISCONNECTED."""
    deadline = time.monotonic() + timeout
    while count_events(node, "client.connected") > count_events(
        node, "client.disconnected"
    ):
        assert time.monotonic() < deadline, f"{node.name}: clients still connected"
        time.sleep(0.05)


async def create_room(node: Node) -> None:
    creator = await MixerClient.connect(node.port)
    try:
        await creator.handshake("creator")
        await creator.create_room("r")
    finally:
        await creator.aclose()

    await anyio.to_thread.run_sync(wait_clients_gone, node)


async def send_batch(node: Node, count: int) -> None:
    """Send ``count`` commands of 2000 B through ``node`` (tens of entries)."""
    await send_commands(node.port, count, 2000)
    await anyio.to_thread.run_sync(wait_clients_gone, node)


def assert_no_log_truncated(nodes: list[Node]) -> None:
    """No follower dropped entries it had applied (pysyncobj logs it; the
    acknowledgement guard in store/replication.py is there to prevent it)."""
    for node in nodes:
        text = node.log_path.read_text(errors="replace")
        assert "truncating already-applied" not in text, node.name


def partial_copy(node: Node) -> Path:
    return node.data_dir / "raft.snapshot.partial"


def wait_copying(nodes: list[Node], timeout: float = 20.0) -> None:
    """Wait until every one of ``nodes`` is writing a snapshot copy."""
    deadline = time.monotonic() + timeout
    while not all(partial_copy(node).exists() for node in nodes):
        assert time.monotonic() < deadline, "no snapshot copy in progress"
        time.sleep(0.02)


def wait_written(node: Node, count: int, timeout: float = 30.0) -> None:
    """Wait until ``node`` has written more than ``count`` snapshots."""
    deadline = time.monotonic() + timeout
    while count_events(node, "raft.snapshot_written") <= count:
        assert time.monotonic() < deadline, f"{node.name}: compaction stopped"
        time.sleep(0.1)


def snapshot_index(node: Node) -> int:
    """The applied index of the database in the node's snapshot file."""
    connection = sqlite3.connect(
        f"file:{node.data_dir / 'raft.snapshot'}?mode=ro", uri=True
    )
    try:
        (index,) = connection.execute(
            "SELECT raft_index FROM raft_applied WHERE id = 1"
        ).fetchone()
    finally:
        connection.close()

    return int(index)


def make_old_database(path: Path) -> None:
    """An empty database file with 4 KiB pages in WAL mode, as a node created
    before the store moved to 16 KiB pages has (store/schema.py keeps them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA page_size = 4096")
        connection.execute("PRAGMA journal_mode = WAL")
    finally:
        connection.close()


async def test_node_with_other_page_size_catches_up_through_snapshot(
    tmp_path: Path,
) -> None:
    """A node whose file keeps 4 KiB pages (older mixer-console) is sent the
    leader's 16 KiB-page snapshot: it installs it and ends with equal rows.

    SQLite's backup API cannot write into a WAL database of another page size
    ('attempt to write a readonly database'), so the node never caught up.
    """
    nodes = make_nodes(tmp_path, 3)
    away = nodes[2]
    make_old_database(away.data_dir / "rooms.sqlite")
    try:
        start_all(nodes, **COMPACTION)
        wait_available(nodes)
        await create_room(nodes[0])
        await anyio.to_thread.run_sync(away.kill)
        await send_batch(nodes[0], 600)
        for node in nodes[:2]:
            node.wait_event("raft.snapshot_written", 20)

        away.start(nodes[:2], **COMPACTION)
        rows = wait_equal_rows(nodes, timeout=30, commands=600)
        away.wait_event("raft.snapshot_installed", 5)

        assert len(rows["commands"]) == 600
    finally:
        stop_all(nodes)


async def test_compaction_resumes_after_snapshot_copy_fails(tmp_path: Path) -> None:
    """A node that cannot write its snapshot copy (here a folder stands where
    the copy goes) logs the failure, keeps committing, does not retry the copy
    on every tick, and compacts again once the copy can be written."""
    nodes = make_nodes(tmp_path, 3)
    blocked = nodes[0]
    obstacle = blocked.data_dir / "raft.snapshot.partial"
    try:
        start_all(nodes, **COMPACTION)
        wait_available(nodes)
        await create_room(nodes[0])
        obstacle.mkdir()
        await send_batch(nodes[0], 600)
        blocked.wait_event("raft.snapshot_failed", 20)
        await anyio.sleep(2.0)
        failures = count_events(blocked, "raft.snapshot_failed")

        wait_equal_rows(nodes, commands=600)
        # A retry on every 5 ms tick would be hundreds of copies in 2 s.
        assert failures < 20, f"{failures} failed copies in about 2 s"

        obstacle.rmdir()
        written = count_events(blocked, "raft.snapshot_written")
        await send_batch(nodes[0], 600)
        deadline = time.monotonic() + 20
        while count_events(blocked, "raft.snapshot_written") <= written:
            assert time.monotonic() < deadline, "no snapshot after the failure"
            await anyio.sleep(0.1)

        wait_equal_rows(nodes, commands=1200)
    finally:
        stop_all(nodes)


async def test_leader_killed_while_copying_restarts_and_catches_up(
    tmp_path: Path,
) -> None:
    """The leader, SIGKILLed in the middle of its snapshot copy: the others
    elect a leader and go on; the killed node starts, drops its partial copy,
    catches up to equal rows, and compacts again."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes, **SLOW_COPY)
        wait_available(nodes)
        await create_room(nodes[0])
        await send_batch(nodes[0], 600)
        # Committed everywhere before the kill (what was not is lost with it).
        wait_equal_rows(nodes, commands=600)
        leader = leader_of(nodes)
        wait_copying([leader])
        await anyio.to_thread.run_sync(leader.kill)

        assert partial_copy(leader).exists()
        survivors = [node for node in nodes if node is not leader]
        await send_batch(survivors[0], 300)
        wait_equal_rows(survivors, commands=900)

        leader.start(survivors, **SLOW_COPY)
        rows = wait_equal_rows(nodes, timeout=40, commands=900)

        assert len(rows["commands"]) == 900
        await send_batch(survivors[0], 300)
        wait_written(leader, 0)
        wait_equal_rows(nodes, timeout=40, commands=1200)
        assert_no_log_truncated(nodes)
    finally:
        stop_all(nodes)


async def test_paused_node_sent_snapshot_while_copying_its_own(
    tmp_path: Path,
) -> None:
    """A node paused in the middle of its own copy falls behind the others'
    compacted logs; resumed, it is sent their snapshot, drops its own copy,
    installs theirs, ends with equal rows and compacts again."""
    nodes = make_nodes(tmp_path, 3)
    paused = nodes[2]
    try:
        start_all(nodes, **COMPACTION)
        paused.stop()
        paused.start(nodes[:2], **SLOWER_COPY)
        wait_available(nodes)
        await create_room(nodes[0])
        await send_batch(nodes[0], 600)
        wait_copying([paused])
        assert paused.process is not None
        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            # Long enough for the leader to drop the connection (what it sent
            # before is lost), then until both others compacted twice: their
            # logs start past the paused node's.
            await anyio.sleep(5.0)
            written = [count_events(node, "raft.snapshot_written") for node in nodes]
            sent = 600
            for _ in range(8):
                await send_batch(nodes[0], 300)
                sent += 300
                if all(
                    count_events(node, "raft.snapshot_written") >= before + 2
                    for node, before in zip(nodes[:2], written, strict=False)
                ):
                    break

            wait_equal_rows(nodes[:2], commands=sent)
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)

        rows = wait_equal_rows(nodes, timeout=40, commands=sent)
        installed = paused.wait_event("raft.snapshot_installed", 5)
        abandoned = paused.wait_event("raft.snapshot_abandoned", 5)

        assert len(rows["commands"]) == sent
        assert abandoned["applied_index"] < installed["applied_index"]
        # Its own older copy never replaced the snapshot it was sent.
        assert snapshot_index(paused) >= installed["applied_index"]
        assert count_events(paused, "raft.snapshot_written") == 0

        # pysyncobj saw the abandoned copy's outcome: it starts the next one.
        await send_batch(nodes[0], 300)
        wait_copying([paused])
        wait_equal_rows(nodes, timeout=40, commands=sent + 300)
        assert_no_log_truncated(nodes)
    finally:
        stop_all(nodes)


async def test_all_nodes_stopped_while_copying_lose_nothing(tmp_path: Path) -> None:
    """Every node stopped (SIGTERM) while each writes a snapshot copy: each stops
    at once and cleanly, and started again they keep every command, agree, and
    compact again."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes, **SLOW_COPY)
        wait_available(nodes)
        await create_room(nodes[0])
        await send_batch(nodes[0], 600)
        wait_equal_rows(nodes, commands=600)
        wait_copying(nodes)
        stopped_at = time.monotonic()
        statuses = [node.stop(timeout=10) for node in nodes]

        assert statuses == [0, 0, 0]
        assert time.monotonic() - stopped_at < 10
        assert not any(partial_copy(node).exists() for node in nodes)

        start_all(nodes, **SLOW_COPY)
        wait_available(nodes)
        rows = wait_equal_rows(nodes, commands=600)

        assert len(rows["commands"]) == 600
        await send_batch(nodes[1], 300)
        for node in nodes:
            wait_written(node, 0)

        wait_equal_rows(nodes, timeout=40, commands=900)
        assert_no_log_truncated(nodes)
    finally:
        stop_all(nodes)


async def test_lagging_node_is_sent_a_snapshot_while_the_leader_copies(
    tmp_path: Path,
) -> None:
    """A node that needs the leader's snapshot gets its last whole one while
    the leader writes the next: pysyncobj sends no snapshot while its
    serializer is busy, so under steady traffic (one copy after another) a
    lagging node waited a whole copy, or for ever with copies back to back."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes, **STEADY_COPY)
        wait_available(nodes)
        leader = leader_of(nodes)
        await create_room(leader)
        away, other = [node for node in nodes if node is not leader]
        await anyio.to_thread.run_sync(away.kill)
        # Until the leader wrote a snapshot and copies the next one.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            await send_batch(leader, 100)
            if (
                count_events(leader, "raft.snapshot_written")
                and partial_copy(leader).exists()
            ):
                break

        written = count_events(leader, "raft.snapshot_written")
        assert written and partial_copy(leader).exists()
        away.start([leader, other], **STEADY_COPY)
        away.wait_event("raft.snapshot_installed", 20)

        # Still the copy that ran when the node started.
        assert count_events(leader, "raft.snapshot_written") == written
        wait_equal_rows(nodes, timeout=40)
        assert_no_log_truncated(nodes)
    finally:
        stop_all(nodes)


async def test_paused_leader_rejoins_behind_compacted_logs(tmp_path: Path) -> None:
    """The leader paused (as if cut off) while the others elect a new leader and
    compact past it: resumed, it hears its peers' queued replies as a leader of
    an old term, steps down, catches up through a snapshot, and no node drops
    an entry it had applied."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes, **COMPACTION)
        wait_available(nodes)
        leader = leader_of(nodes)
        others = [node for node in nodes if node is not leader]
        await create_room(leader)
        await send_batch(leader, 300)
        wait_equal_rows(nodes, commands=300)
        assert leader.process is not None
        os.kill(leader.process.pid, signal.SIGSTOP)
        try:
            await anyio.sleep(5.0)  # the others elect a new leader
            written = count_events(others[0], "raft.snapshot_written")
            await send_batch(others[0], 600)
            wait_written(others[0], written)
            wait_equal_rows(others, commands=900)
        finally:
            os.kill(leader.process.pid, signal.SIGCONT)

        rows = wait_equal_rows(nodes, timeout=40, commands=900)
        leader.wait_event("raft.snapshot_installed", 10)

        assert len(rows["commands"]) == 900
        assert_no_log_truncated(nodes)
    finally:
        stop_all(nodes)
