"""Real relay node processes forming a Raft cluster on 127.0.0.1.

Each node is a ``mixer-console --no-ui`` process with its own data directory;
its JSON log goes to a file that the tests read for events (role changes,
quorum). Ports are chosen free when a node is first started.
"""

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-test-secret-of-some-length"
START_TIMEOUT = 20.0


# Raft ports are picked below the range the OS hands out for outgoing
# connections: a port picked from that range and bound later (the bulk port
# most of all, picked only as the Raft port + 1) could meanwhile become the
# local port of some connection on this busy machine.
FIRST_RAFT_PORT = 20000
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_raft_port() -> int:
    """A Raft port free on 127.0.0.1 with the next one (the bulk port) free too,
    both outside the OS's range of ephemeral ports."""
    try:
        ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768

    for _ in range(200):
        port = random.randrange(
            FIRST_RAFT_PORT, max(FIRST_RAFT_PORT + 2, ephemeral - 2)
        )
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue

        return port

    raise AssertionError("no two free ports in a row in 200 tries")


@dataclass
class Node:
    """One relay node: its addresses, data directory, and process while running."""

    name: str
    data_dir: Path
    raft_port: int = field(default_factory=free_raft_port)
    program: tuple[str, ...] = ("-m", "mixer_console")
    """What Python runs: the relay, or a wrapper around it (benchmarks)."""
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    http_port: int = 0
    log_path: Path = field(init=False)
    _log_offset: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.name}.log"

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    def start(self, peers: list["Node"], secret: str = SECRET, **env: str) -> None:
        """Start the process and wait for relay.started (which gives its port)."""
        self.launch(peers, secret, **env)
        self.wait_started()

    def launch(self, peers: list["Node"], secret: str = SECRET, **env: str) -> None:
        """Start the process without waiting for it."""
        assert self.process is None or self.process.poll() is not None
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        variables = {
            **os.environ,
            "MIXER_HOST": "127.0.0.1",
            "MIXER_PORT": "0",
            # Three nodes on one host cannot share the default HTTP port.
            "MIXER_HTTP_PORT": "0",
            "MIXER_DATA_DIR": str(self.data_dir),
            "MIXER_LOG_FORMAT": "json",
            "MIXER_RAFT_SELF": self.raft_address,
            "MIXER_RAFT_PEERS": ",".join(peer.raft_address for peer in peers),
            "MIXER_RAFT_SECRET": secret,
            "MIXER_ROOM_UPDATE_INTERVAL": "0.01",
            **env,
        }
        if not peers:  # a single relay, for comparison
            for variable in (
                "MIXER_RAFT_SELF",
                "MIXER_RAFT_PEERS",
                "MIXER_RAFT_SECRET",
            ):
                variables.pop(variable)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, *self.program, "--no-ui"],
                cwd=ROOT,
                env=variables,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def wait_started(self) -> None:
        """Wait for relay.started, which gives the node's client port."""
        started = self.wait_event("relay.started", START_TIMEOUT)
        self.port = int(started["port"])
        self.http_port = int(started["http_port"] or 0)

    def events(self) -> list[dict[str, Any]]:
        """Every JSON event this node logged since its last start."""
        if not self.log_path.exists():
            return []

        with open(self.log_path, "rb") as log_file:
            log_file.seek(self._log_offset)
            lines = log_file.read().splitlines()

        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a traceback or pysyncobj's own text lines

        return events

    def wait_event(self, name: str, timeout: float, after: int = 0) -> dict[str, Any]:
        """Wait for the ``after``-th-or-later event called ``name``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matching = [e for e in self.events() if e.get("event") == name]
            if len(matching) > after:
                return matching[after]

            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {name}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )

            time.sleep(0.05)

        raise AssertionError(f"{self.name}: no {name} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (killed if it lingers)."""
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else 0

        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"{self.name} did not stop in {timeout} s") from None

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """The node's rooms and commands, read from its SQLite file."""
        connection = sqlite3.connect(self.data_dir / "rooms.sqlite", timeout=10)
        try:
            return {
                "rooms": connection.execute(
                    "SELECT id, name, blender_version, mixer_version, "
                    "ignore_version_check, generic_protocol, keep_open, joinable, "
                    "custom, created_at FROM rooms ORDER BY id"
                ).fetchall(),
                "commands": connection.execute(
                    "SELECT seq, room_id, kind, size, wire FROM commands ORDER BY seq"
                ).fetchall(),
            }
        finally:
            connection.close()


def make_nodes(tmp_path: Path, count: int) -> list[Node]:
    """``count`` nodes with fresh data directories under ``tmp_path``, no two of
    them on neighbouring Raft ports (each one's next port is its bulk port)."""
    nodes = [Node(f"node{index}", tmp_path / f"node{index}") for index in range(count)]
    taken: set[int] = set()
    for node in nodes:
        for _ in range(50):
            if not {node.raft_port - 1, node.raft_port, node.raft_port + 1} & taken:
                break

            node.raft_port = free_raft_port()

        taken.add(node.raft_port)

    return nodes


def start_all(nodes: list[Node], **env: str) -> None:
    """Start every node, each knowing all the others."""
    for node in nodes:
        node.launch([peer for peer in nodes if peer is not node], **env)

    for node in nodes:
        node.wait_started()


def stop_all(nodes: list[Node]) -> None:
    """Stop every node still running (SIGKILL: used in test teardown)."""
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=10)


def wait_available(nodes: list[Node], timeout: float = 20.0) -> None:
    """Wait until every node has logged that it can commit."""
    for node in nodes:
        node.wait_event("cluster.available", timeout)


def leader_of(nodes: list[Node], timeout: float = 15.0) -> Node:
    """The node that the running nodes agree is the leader."""
    by_address = {node.raft_address: node for node in nodes}
    running = [n for n in nodes if n.process is not None and n.process.poll() is None]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = []
        for node in running:
            changes = [
                e for e in node.events() if e.get("event") == "raft.leader_changed"
            ]
            seen.append(changes[-1].get("leader") if changes else None)

        if seen and seen[0] in by_address and seen.count(seen[0]) == len(seen):
            return by_address[seen[0]]

        time.sleep(0.05)

    raise AssertionError("the nodes did not agree on a leader")


def wait_equal_rows(
    nodes: list[Node], timeout: float = 20.0, commands: int = 0, rooms: int = 0
) -> dict[str, Any]:
    """Wait until every node's SQLite holds the same rooms and commands (and at
    least ``commands`` commands and ``rooms`` rooms)."""
    deadline = time.monotonic() + timeout
    while True:
        tables = [node.rows() for node in nodes]
        if (
            all(table == tables[0] for table in tables)
            and len(tables[0]["commands"]) >= commands
            and len(tables[0]["rooms"]) >= rooms
        ):
            return tables[0]

        if time.monotonic() > deadline:
            counts = [
                (n.name, len(t["commands"])) for n, t in zip(nodes, tables, strict=True)
            ]
            raise AssertionError(f"rows still differ after {timeout} s: {counts}")

        time.sleep(0.2)
