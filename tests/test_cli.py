"""The headless relay as a real process: first line, event logs, graceful stop."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.messages import MessageType
from relay.protocol import encode_frame

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 10.0


def start_relay(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mixer_console", "--no-ui", *arguments],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_event(process: subprocess.Popen[str]) -> dict[str, object]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the relay ended without logging"
    event = json.loads(line)
    assert isinstance(event, dict)
    return event


@pytest.fixture
def headless() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = start_relay("--host", "127.0.0.1", "--port", "0")
    try:
        started = read_event(process)
        assert started["event"] == "relay.started"
        yield process, int(started["port"])  # type: ignore[call-overload]
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()

    process.communicate(timeout=STARTUP_TIMEOUT)


def test_cli_first_line_fields() -> None:
    """relay.started names the host and says plainly that no login is needed."""
    process = start_relay("--host", "127.0.0.1", "--port", "0")
    try:
        started = read_event(process)
    finally:
        process.send_signal(signal.SIGTERM)
        stop(process)

    assert started["host"] == "127.0.0.1"
    assert "anyone" in str(started["login"])
    assert started["level"] == "info"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_cli_stops_gracefully(
    headless: tuple[subprocess.Popen[str], int], signum: signal.Signals
) -> None:
    """SIGTERM, SIGINT and SIGHUP stop a relay with a client within 2 s, status 0."""
    process, port = headless
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(encode_frame(MessageType.CLIENT_ID))
        client.recv(1024)
        assert read_event(process)["event"] == "client.connected"

        process.send_signal(signum)
        started = time.monotonic()
        status = process.wait(timeout=STARTUP_TIMEOUT)
        elapsed = time.monotonic() - started

    assert status == 0
    assert elapsed < 2.0
    assert process.stdout is not None
    lines = process.stdout.read().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events[0] == "relay.stopping"
    assert events[-1] == "relay.stopped"
    disconnected = [
        json.loads(line) for line in lines if '"client.disconnected"' in line
    ]
    assert [event["reason"] for event in disconnected] == ["relay stopping"]


def test_cli_logs_one_event_per_line(
    headless: tuple[subprocess.Popen[str], int],
) -> None:
    """Connect, create a room and disconnect: each is one JSON event line."""
    process, port = headless
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        name = b"logged"
        client.sendall(
            encode_frame(MessageType.JOIN_ROOM, len(name).to_bytes(4, "little") + name)
        )
        client.recv(1024)
        events = [read_event(process) for _ in range(2)]

    assert [event["event"] for event in events] == ["client.connected", "room.created"]
    assert events[1]["room"] == "logged"
    assert read_event(process)["event"] == "room.left"


def test_cli_bad_config_is_a_clear_error() -> None:
    """Bad variables are all listed on stderr, with no traceback and exit status 2."""
    process = start_relay(env={"MIXER_PORT": "abc", "MIXER_SEND_TIMEOUT": "-1"})
    _, errors = process.communicate(timeout=STARTUP_TIMEOUT)

    assert process.returncode == 2
    assert "MIXER_PORT" in errors
    assert "MIXER_SEND_TIMEOUT" in errors
    assert "Traceback" not in errors


def test_cli_port_in_use_is_a_clear_error() -> None:
    """A port that cannot be bound gives one error event and exit status 3."""
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        process = start_relay("--host", "127.0.0.1", "--port", str(port))
        output, errors = process.communicate(timeout=STARTUP_TIMEOUT)

    assert process.returncode == 3
    assert json.loads(output.splitlines()[-1])["event"] == "relay.cannot_listen"
    assert "Traceback" not in errors


def test_cli_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """A MIXER_DATA_DIR that cannot be a folder (a file is there) is a store
    error: exit status 4 and a line naming the path, not a traceback."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    process = start_relay(
        "--host", "127.0.0.1", "--port", "0", env={"MIXER_DATA_DIR": str(not_a_folder)}
    )
    _, errors = process.communicate(timeout=STARTUP_TIMEOUT)

    assert process.returncode == 4
    assert str(not_a_folder) in errors
    assert "Traceback" not in errors


def test_cli_bad_option_names_the_option() -> None:
    """A bad --port is reported as the option the user typed, not as a variable."""
    process = start_relay("--port", "abc")
    _, errors = process.communicate(timeout=STARTUP_TIMEOUT)

    assert process.returncode == 2
    assert "--port 'abc': must be a whole number" in errors
    assert "MIXER_PORT" not in errors
