"""Three real node processes: bans and the audit log hold on every node."""

import gc
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.broadcaster import Broadcaster
from relay.cluster import ClusterLink, open_cluster
from relay.config import ADMIN_SOCKET_NAME, Settings
from relay.leases import LeaseBook
from relay.messages import MessageType
from relay.protocol import Frame
from relay.server import open_store
from store.store import Store
from tests.cluster_nodes import (
    SECRET,
    Node,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
)
from tests.mixer_client import MixerClient, error_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OPERATOR = "ops"
WAIT_SECONDS = 20.0
# How long a served connection is watched for a refusal that does not come.
REFUSAL_SECONDS = 1.0


def access_rows(node: Node) -> dict[str, list[tuple[Any, ...]]]:
    """The node's bans and audit entries, read from its SQLite file."""
    connection = sqlite3.connect(node.data_dir / "rooms.sqlite", timeout=10)
    try:
        return {
            "bans": connection.execute(
                "SELECT subject, until, reason, operator FROM bans ORDER BY subject"
            ).fetchall(),
            "audit": connection.execute(
                "SELECT id, at, operator, action, target, detail FROM audit ORDER BY id"
            ).fetchall(),
        }
    finally:
        connection.close()


def wait_equal_access(nodes: list[Node], audit_rows: int) -> dict[str, Any]:
    """Wait (bounded) until every node holds the same bans and audit rows, and
    at least ``audit_rows`` of the latter."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        tables = [access_rows(node) for node in nodes]
        if (
            all(table == tables[0] for table in tables)
            and len(tables[0]["audit"]) >= audit_rows
        ):
            return tables[0]

        if time.monotonic() > deadline:
            raise AssertionError(f"access rows still differ: {tables}")

        time.sleep(0.2)


def first_error(frames: list[Frame]) -> str:
    """The text of the first SEND_ERROR among ``frames``."""
    errors = [error_text(f) for f in frames if f.kind == MessageType.SEND_ERROR]
    return errors[0] if errors else "no error was sent"


async def refusal_on(node: Node) -> str | None:
    """Connect to ``node``: the error it sends before closing the connection,
    or None when the connection is served (it stays open)."""
    client = await MixerClient.connect(node.port)
    try:
        with anyio.move_on_after(REFUSAL_SECONDS):
            frames = await client.expect_closed(timeout=2 * REFUSAL_SECONDS)
            return first_error(frames)

        return None
    finally:
        await client.aclose()


async def wait_served(node: Node) -> None:
    """Wait (bounded) until ``node`` serves a new connection."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (refusal := await refusal_on(node)) is not None:
        assert time.monotonic() < deadline, f"{node.name} still refuses: {refusal}"
        await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_ban_on_one_node_holds_on_every_node(tmp_path: Path) -> None:
    """A kick with a ban on node A closes the banned address's connection on
    node C and refuses a reconnection on node B; lifting it on B lets the
    address in on A again; the ban and audit rows are equal on every node."""
    nodes = make_nodes(tmp_path, 3)
    a, b, c = nodes
    try:
        start_all(nodes)
        wait_available(nodes)
        on_c = await MixerClient.connect(c.port)
        await on_c.handshake()
        on_a = await MixerClient.connect(a.port)
        kicked = await on_a.handshake()
        admin_a = AdminClient(a.data_dir / ADMIN_SOCKET_NAME)
        admin_b = AdminClient(b.data_dir / ADMIN_SOCKET_NAME)

        await admin_a.kick(kicked, operator=OPERATOR, ban_seconds=600)
        frames = await on_c.expect_closed(timeout=WAIT_SECONDS)
        refusal_b = await refusal_on(b)
        banned = wait_equal_access(nodes, audit_rows=1)

        assert first_error(frames).startswith("banned from this relay")
        assert refusal_b is not None and refusal_b.startswith("banned from this relay")
        assert [row[0] for row in banned["bans"]] == ["address:127.0.0.1"]
        assert [row[3:5] for row in banned["audit"]] == [("kick", kicked)]
        assert [ban.subject for ban in await admin_b.bans()] == ["address:127.0.0.1"]

        await admin_b.lift_ban("address:127.0.0.1", operator=OPERATOR)
        await wait_served(a)
        lifted = wait_equal_access(nodes, audit_rows=2)

        assert lifted["bans"] == []
        assert [row[3] for row in lifted["audit"]] == ["kick", "lift_ban"]
        await admin_a.aclose()
        await admin_b.aclose()
        await on_a.aclose()
        await on_c.aclose()
    finally:
        stop_all(nodes)


def lease_rows(node: Node) -> list[tuple[Any, ...]]:
    """The node's leases, read from its SQLite file."""
    connection = sqlite3.connect(node.data_dir / "rooms.sqlite", timeout=10)
    try:
        return connection.execute(
            "SELECT address, login, granted_at, expires_at, via FROM leases"
        ).fetchall()
    finally:
        connection.close()


async def wait_leases(nodes: list[Node], expected: list[tuple[Any, ...]]) -> None:
    """Wait (bounded, without blocking the event loop) until every node holds
    exactly ``expected`` leases."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (tables := [lease_rows(node) for node in nodes]) != [expected] * len(nodes):
        assert time.monotonic() < deadline, f"leases still differ: {tables}"
        await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_lease_granted_on_one_node_is_on_every_node(tmp_path: Path) -> None:
    """A lease granted through one node's LeaseBook (a node run in this test's
    process, with two real node processes) is written on the other nodes, is
    still there after one of them restarts, and its revocation deletes it
    everywhere."""
    nodes = make_nodes(tmp_path, 3)
    *processes, here = nodes
    settings = Settings.from_env(
        {
            "MIXER_DATA_DIR": str(here.data_dir),
            "MIXER_RAFT_SELF": here.raft_address,
            "MIXER_RAFT_PEERS": ",".join(node.raft_address for node in processes),
            "MIXER_RAFT_SECRET": SECRET,
        }
    )
    try:
        for node in processes:
            node.launch([peer for peer in nodes if peer is not node])

        for node in processes:
            node.wait_started()

        wait_available(processes)
        # pysyncobj's destroy leaves its sockets to the garbage collector (a node
        # process exits; this one goes on): collected here, not in a later test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            store = open_store(settings)
            cluster = open_cluster(settings, store)
            try:
                await _grant_restart_revoke(nodes, cluster.link, store)
            finally:
                cluster.close()
                store.close(timeout=10)
                del cluster
                gc.collect()
    finally:
        stop_all(processes)


async def _grant_restart_revoke(
    nodes: list[Node], link: ClusterLink, store: Store
) -> None:
    """Grant through this process's node, restart a node process, revoke."""
    *processes, _here = nodes
    broadcaster = Broadcaster(store, cluster=link)
    revoked: list[str] = []
    leases = LeaseBook(store, 3600.0, on_revoke=revoked.append, cluster=link)
    broadcaster.leases = leases
    async with anyio.create_task_group() as tasks:
        await tasks.start(link.run, broadcaster)
        lease = leases.grant("10.0.0.5", "octocat", "browser")
        expected = [
            (lease.address, lease.login, lease.granted_at, lease.expires_at, "browser")
        ]
        await wait_leases(processes, expected)

        restarted = processes[0]
        restarted.stop()
        await anyio.to_thread.run_sync(
            restarted.start, [peer for peer in nodes if peer is not restarted]
        )

        assert lease_rows(restarted) == expected

        leases.revoke("10.0.0.5", operator=OPERATOR)
        await wait_leases(processes, [])
        tasks.cancel_scope.cancel()

    assert revoked == ["10.0.0.5"]
