"""The console's output when its terminal hangs up, on a real pseudo-terminal
whose master end the test closes (what a dropped SSH connection does)."""

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import pytest

from mixer_console.console.terminal import TerminalOutput, is_terminal_gone
from relay.messages import MessageType
from relay.protocol import encode_frame

ROOT = Path(__file__).resolve().parents[2]
EXIT_TIMEOUT = 20.0
LOCAL_ANY_PORT = ("--host", "127.0.0.1", "--port", "0")


@pytest.fixture
def hangups() -> Iterator[list[int]]:
    """SIGHUPs this process receives during the test (instead of dying)."""
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGHUP, record)
    try:
        yield received
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (master, slave) descriptors, closed at the end."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass


@contextlib.contextmanager
def text_stream(fd: int) -> Iterator[IO[str]]:
    """A text stream on a copy of ``fd``; closing it may fail on what failed."""
    stream = os.fdopen(os.dup(fd), "w", encoding="utf-8")
    try:
        yield stream
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def test_a_live_terminal_and_a_plain_file_are_not_gone(
    terminal: tuple[int, int], tmp_path: Path
) -> None:
    _, slave = terminal
    with open(tmp_path / "plain", "w") as plain:
        assert not is_terminal_gone(plain.fileno())

    assert not is_terminal_gone(slave)


def test_a_terminal_whose_master_closed_is_gone(terminal: tuple[int, int]) -> None:
    master, slave = terminal

    os.close(master)

    assert is_terminal_gone(slave)


def test_output_reaches_a_live_terminal(
    terminal: tuple[int, int], hangups: list[int]
) -> None:
    master, slave = terminal
    with text_stream(slave) as stream:
        output = TerminalOutput(stream)

        output.write("frame one")
        output.flush()

    assert os.read(master, 100) == b"frame one"
    assert hangups == []


def test_output_to_a_hung_up_terminal_is_dropped_and_raises_sighup_once(
    terminal: tuple[int, int], hangups: list[int]
) -> None:
    """Where Textual's writer thread died (and the app then hung on its full
    queue), every write returns, and the process hears SIGHUP once."""
    master, slave = terminal
    with text_stream(slave) as stream:
        output = TerminalOutput(stream)
        os.close(master)

        for frame in range(100):
            output.write(f"frame {frame}\n")
            output.flush()

    assert hangups == [signal.SIGHUP]


def test_output_failing_on_what_is_no_terminal_still_raises(
    hangups: list[int],
) -> None:
    """A broken pipe is not a hangup: the failure is reported as before."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with text_stream(write_end) as stream:
        os.close(write_end)
        output = TerminalOutput(stream)

        with pytest.raises(BrokenPipeError):
            output.write("x" * 100_000)
            output.flush()

    assert hangups == []


def terminal_of_80x24() -> tuple[int, int]:
    """A pseudo-terminal the size of a default SSH window: (master, slave)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return master, slave


def drain(master: int, into: bytearray) -> None:
    """Read what the console draws until it lets go of the terminal (EIO), so
    that its writes never wait on a full terminal."""
    for _ in range(1_000_000):
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return

        if not chunk:
            return

        into += chunk


def logged_events(log_file: Path) -> list[dict[str, object]]:
    if not log_file.exists():
        return []

    return [json.loads(line) for line in log_file.read_text().splitlines()]


def start_console(
    tmp_path: Path, keyboard: int, screen: int
) -> subprocess.Popen[bytes]:
    """The console hosting a relay, reading keys from ``keyboard`` and drawing
    on ``screen`` (slave ends of pseudo-terminals, closed here once it has
    them)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mixer_console", *LOCAL_ANY_PORT],
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(tmp_path / "data")},
        stdin=keyboard,
        stdout=screen,
        stderr=screen,
        start_new_session=True,
    )
    for fd in {keyboard, screen}:
        os.close(fd)

    return process


def wait_until_started(log_file: Path, pause: Callable[[], object]) -> int:
    """The hosted relay's port, once its log says it started; ``pause`` runs
    between two looks."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    while True:
        for event in logged_events(log_file):
            if event["event"] == "relay.started":
                return int(str(event["port"]))

        assert time.monotonic() < deadline, "the console never started"
        pause()


@pytest.mark.slow
def test_console_whose_keyboard_terminal_hangs_up_stops(tmp_path: Path) -> None:
    """Regression: a console reading keys from a terminal that hung up while it
    drew on another (no SIGHUP comes then: neither is its controlling terminal)
    spun on end-of-file for ever; it now stops gracefully, the store flushed, and
    gives the terminal it draws on back (it leaves the alternate screen)."""
    keyboard, keyboard_slave = terminal_of_80x24()
    screen, screen_slave = terminal_of_80x24()
    drawn = bytearray()
    drawer = threading.Thread(target=drain, args=(screen, drawn), daemon=True)
    log_file = tmp_path / "data" / "console.log"
    try:
        process = start_console(tmp_path, keyboard_slave, screen_slave)
        drawer.start()
        wait_until_started(log_file, lambda: time.sleep(0.1))

        hung_up_at = len(drawn)
        os.close(keyboard)
        try:
            status = process.wait(timeout=EXIT_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=EXIT_TIMEOUT)
    finally:
        drawer.join(timeout=EXIT_TIMEOUT)
        with contextlib.suppress(OSError):
            os.close(screen)

    events = [event["event"] for event in logged_events(log_file)]
    stopped = [e for e in logged_events(log_file) if e["event"] == "relay.stopped"]

    assert status == 0
    assert "console.terminal_gone" in events
    assert stopped and stopped[-1]["store_flushed"] is True
    assert b"\x1b[?1049l" in drawn[hung_up_at:]


def read_for(master: int, seconds: float) -> bytes:
    """What the console draws on ``master`` during ``seconds``."""
    drawn = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([master], [], [], 0.05)
        if readable:
            try:
                drawn += os.read(master, 65536)
            except OSError:
                break

    return bytes(drawn)


def round_trip_seconds(port: int) -> float:
    """How long the hosted relay takes to answer a LIST_ROOMS (a new client)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(encode_frame(MessageType.LIST_ROOMS))
        assert client.recv(65536), "the relay closed the connection"

    return time.monotonic() - started


@pytest.mark.slow
def test_a_terminal_that_stops_reading_holds_up_neither_the_relay_nor_the_stop(
    tmp_path: Path,
) -> None:
    """Regression: a terminal that stops reading without hanging up (a stalled
    SSH connection) filled Textual's output queue, and then every write waited:
    17 s after the stall the hosted relay answered no artist, and SIGTERM did
    not stop it. Now the console drops output while the terminal does not read
    (logged once), the relay goes on answering, the screen is drawn again when
    the terminal reads again, and a stop signal stops it gracefully."""
    master, slave = terminal_of_80x24()
    log_file = tmp_path / "data" / "console.log"
    process = start_console(tmp_path, slave, slave)
    try:
        port = wait_until_started(log_file, lambda: read_for(master, 0.1))
        # The screen changes every second (rates, CPU): its output piles up.
        deadline = time.monotonic() + 90
        while "console.terminal_stalled" not in [
            e["event"] for e in logged_events(log_file)
        ]:
            assert time.monotonic() < deadline, "the terminal never filled up"
            round_trip_seconds(port)
            time.sleep(0.5)

        stalled_round_trips = [round_trip_seconds(port) for _ in range(5)]
        redrawn = read_for(master, 5)
        os.kill(process.pid, signal.SIGTERM)
        status = process.wait(timeout=EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=EXIT_TIMEOUT)

        os.close(master)

    events = [event["event"] for event in logged_events(log_file)]
    stopped = [e for e in logged_events(log_file) if e["event"] == "relay.stopped"]

    assert max(stalled_round_trips) < 5
    assert "console.terminal_resumed" in events
    assert b"Rooms [1]" in redrawn
    assert status == 0
    assert stopped and stopped[-1]["store_flushed"] is True
