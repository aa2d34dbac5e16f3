"""The console started where it has no terminal to read keys from or draw on:
a clear refusal, never a crash or a console spinning on an input it cannot
read."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXIT_TIMEOUT = 15.0
LOCAL_ANY_PORT = ["--host", "127.0.0.1", "--port", "0"]

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def pseudo_terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (master, slave) descriptors, closed at the end."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def read_all(master: int) -> str:
    """What was written on the terminal, once its only writer has ended."""
    data = b""
    for _ in range(1000):
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break  # EIO: nobody holds the slave end any more

        if not chunk:
            break

        data += chunk

    return data.decode(errors="replace")


def run_without_input(
    tmp_path: Path, arguments: list[str], *, is_stdin_closed: bool
) -> tuple[int, str]:
    """Run ``mixer-console ARGUMENTS`` with stdout and stderr on a terminal and
    stdin on /dev/null or closed; returns its status and what it wrote."""
    command = [sys.executable, "-m", "mixer_console", *arguments]
    if is_stdin_closed:
        command = ["sh", "-c", 'exec "$@" 0<&-', "sh", *command]

    with pseudo_terminal() as (master, slave):
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "MIXER_DATA_DIR": str(tmp_path / "data")},
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        try:
            status = process.wait(timeout=EXIT_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=EXIT_TIMEOUT)

        return status, read_all(master)


@pytest.mark.parametrize("is_stdin_closed", [False, True], ids=["devnull", "closed"])
@pytest.mark.parametrize(
    ("arguments", "advice"),
    [
        (LOCAL_ANY_PORT, "--no-ui"),
        (["attach", "--socket", "/nonexistent/admin.sock"], "ssh -t"),
    ],
    ids=["hosted", "attach"],
)
def test_console_without_a_terminal_on_stdin_is_refused(
    tmp_path: Path, arguments: list[str], advice: str, is_stdin_closed: bool
) -> None:
    """Regression: with stdin on /dev/null the console's input thread spun on
    end-of-file for ever, and with stdin closed it crashed with a traceback and
    exit status 0; both are now a one-line refusal with status 2, with advice
    that fits the command (attach has no --no-ui)."""
    status, written = run_without_input(
        tmp_path, arguments, is_stdin_closed=is_stdin_closed
    )

    assert status == 2
    assert "stdin is not a terminal" in written
    assert advice in written
    assert "Traceback" not in written
