"""Three (then four) real node processes: catching up through snapshots that
carry the database, and ``mixer-console cluster`` against running nodes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.cluster.test_failover import KIND, history_on
from tests.cluster_nodes import (
    ROOT,
    SECRET,
    Node,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# A short log: a node that was away must be sent a snapshot, not the entries.
COMPACTION = {"MIXER_RAFT_COMPACTION_ENTRIES": "20"}


def cluster_command(
    node: Node, peers: list[Node], *arguments: str
) -> subprocess.CompletedProcess[str]:
    """Run ``mixer-console cluster ...`` configured as ``node``."""
    return subprocess.run(
        [sys.executable, "-m", "mixer_console", "cluster", *arguments],
        cwd=ROOT,
        env={
            **os.environ,
            "MIXER_RAFT_SELF": node.raft_address,
            "MIXER_RAFT_PEERS": ",".join(peer.raft_address for peer in peers),
            "MIXER_RAFT_SECRET": SECRET,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


async def send_commands(port: int, count: int, size: int) -> None:
    client = await MixerClient.connect(port)
    try:
        await client.handshake("sender")
        await client.join_room("r")
        for index in range(count):
            body = f"{index:05d}".encode().ljust(size, b".")
            await client.send_raw(room_command(KIND, body))
            if index % 20 == 0:
                await anyio.sleep(0.01)  # many entries, so the log compacts

        await client.sync()
    finally:
        await client.aclose()


async def test_cluster_nodes_catch_up_through_database_snapshots(
    tmp_path: Path,
) -> None:
    """A node that was down while the log was compacted, and a new empty node,
    both end with the same SQLite rows as the others; cluster status shows
    every node, and the new node's members see the whole history."""
    nodes = make_nodes(tmp_path, 3)
    newcomer = Node("node3", tmp_path / "node3")
    try:
        start_all(nodes, **COMPACTION)
        wait_available(nodes)
        creator = await MixerClient.connect(nodes[0].port)
        await creator.handshake("creator")
        await creator.create_room("r")
        await creator.aclose()

        away = nodes[2]
        await anyio.to_thread.run_sync(away.kill)
        await send_commands(nodes[0].port, 600, 2000)
        for node in nodes[:2]:
            node.wait_event("raft.snapshot_written", 20)

        away.start(nodes[:2], **COMPACTION)
        rows = wait_equal_rows(nodes)
        installed = away.wait_event("raft.snapshot_installed", 5)

        assert len(rows["commands"]) == 600
        assert installed["applied_index"] > 0

        newcomer.start(nodes, **COMPACTION)
        added = await anyio.to_thread.run_sync(
            cluster_command, nodes[0], nodes[1:], "add", newcomer.raft_address
        )
        assert added.returncode == 0, added.stdout + added.stderr
        assert f"{newcomer.raft_address} is a member of the cluster" in added.stdout

        wait_available([newcomer])
        everyone = [*nodes, newcomer]
        wait_equal_rows(everyone)
        newcomer.wait_event("raft.snapshot_installed", 5)
        history = await history_on(newcomer.port)

        assert history == await history_on(nodes[0].port)
        assert len(history) == 600

        status = await anyio.to_thread.run_sync(
            cluster_command, newcomer, nodes, "status", "--json"
        )
        reports = json.loads(status.stdout)

        assert status.returncode == 0, status.stderr
        assert sorted(r["address"] for r in reports) == sorted(
            n.raft_address for n in everyone
        )
        assert [r["role"] for r in reports].count("leader") == 1
        assert all(r["has_quorum"] and r["reachable"] for r in reports)
        assert all(r["lag"] < 5 for r in reports)

        table = await anyio.to_thread.run_sync(
            cluster_command, newcomer, nodes, "status"
        )
        assert table.stdout.splitlines()[0].split() == [
            "NODE",
            "ROLE",
            "TERM",
            "COMMIT",
            "APPLIED",
            "LAG",
            "QUORUM",
            "LEADER",
        ]
        assert len(table.stdout.splitlines()) == 5
    finally:
        stop_all([*nodes, newcomer])


def test_cluster_status_reports_unreachable_node(tmp_path: Path) -> None:
    """A node that does not answer (down, or another secret) is listed as
    unreachable and the exit status says so; nothing hangs."""
    nobody = make_nodes(tmp_path, 2)
    result = cluster_command(nobody[0], nobody[1:], "status")

    assert result.returncode == 7
    assert result.stdout.count("unreachable") == 2
    assert "or its MIXER_RAFT_SECRET is not this one" in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_cluster_command_needs_cluster_settings() -> None:
    """Without MIXER_RAFT_* settings, cluster commands say what to set."""
    result = subprocess.run(
        [sys.executable, "-m", "mixer_console", "cluster", "status"],
        cwd=ROOT,
        env={
            key: value
            for key, value in os.environ.items()
            if not key.startswith("MIXER_RAFT")
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "MIXER_RAFT_SELF" in result.stderr
