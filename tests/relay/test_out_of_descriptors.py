"""A headless relay out of file descriptors (RLIMIT_NOFILE in the child) while
clients keep connecting: it logs the failing accepts once, not ten times a
second, and says when accepts work again, for a client that then joins."""

import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio

from tests.mixer_client import MixerClient
from tests.relays import headless_env

ROOT = Path(__file__).resolve().parent.parent.parent
DESCRIPTORS = 48
MAX_CLIENTS = 200
TIMEOUT = 20.0
# Long enough for the old loop (a line per failed accept, each 0.1 s at most)
# to log 20 lines or more.
FAILING_SECONDS = 3.0
CONNECT_INTERVAL = 0.05


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


def _named(log: Path, name: str) -> list[dict[str, object]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue

        if event.get("event") == name:
            events.append(event)

    return events


def _wait_for(log: Path, name: str) -> dict[str, object]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        events = _named(log, name)
        if events:
            return events[0]

        time.sleep(0.05)

    raise AssertionError(f"no {name} within {TIMEOUT} s:\n{log.read_text()[-2000:]}")


async def _handshake(port: int) -> None:
    with anyio.fail_after(TIMEOUT):
        client = await MixerClient.connect(port)
        try:
            await client.handshake("late")
        finally:
            await client.aclose()


def test_relay_out_of_descriptors_logs_once_and_recovers(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    with open(log, "wb") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "mixer_console", "--no-ui"],
            cwd=ROOT,
            env=headless_env(tmp_path / "data"),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_descriptors,
        )
    clients: list[socket.socket] = []
    try:
        port = int(_wait_for(log, "relay.started")["port"])  # type: ignore[call-overload]
        for _ in range(MAX_CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            time.sleep(0.01)
            if _named(log, "relay.accept_failed"):
                break

        # Clients keep coming while the relay has no descriptor to take them.
        failing_until = time.monotonic() + FAILING_SECONDS
        while time.monotonic() < failing_until and len(clients) < MAX_CLIENTS:
            clients.append(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            time.sleep(CONNECT_INTERVAL)

        failures = _named(log, "relay.accept_failed")
        assert len(failures) == 1, f"{len(failures)} lines: {failures[:2]}"
        for client in clients:
            client.close()

        clients.clear()
        resumed = _wait_for(log, "relay.accept_resumed")
        anyio.run(_handshake, port)
    finally:
        for client in clients:
            client.close()

        relay.terminate()
        relay.wait(timeout=TIMEOUT)

    assert "Too many open files" in str(failures[0]["error"])
    assert int(resumed["failures"]) > 1  # type: ignore[call-overload]
    assert "Traceback" not in log.read_text(errors="replace")
