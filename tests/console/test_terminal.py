"""The console's output when its terminal hangs up, on a real pseudo-terminal
whose master end the test closes (what a dropped SSH connection does)."""

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import pytest

from mixer_console.console.terminal import TerminalOutput, is_terminal_gone


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
