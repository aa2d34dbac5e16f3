"""A data folder whose lock file is not a file (a named pipe, a device through a
link) is refused by the relay and the admin commands with status 4 and a line
naming the lock; they used to say only "File or stream is not seekable." (the
pipe) or "[Errno 22] Invalid argument" (/dev/null)."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from store.store import LOCK_NAME
from tests.store.test_schema import EXIT_STORE, ROOT, run_relay


def make_pipe(lock: Path) -> None:
    os.mkfifo(lock)


def link_to_device(lock: Path) -> None:
    lock.symlink_to(os.devnull)


@pytest.mark.parametrize("arrange", [make_pipe, link_to_device])
def test_lock_that_is_not_a_file_is_refused(
    tmp_path: Path, arrange: Callable[[Path], None]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lock = data_dir / LOCK_NAME
    arrange(lock)

    relay = run_relay(data_dir)
    rooms = _run_rooms(data_dir)

    for result in (relay, rooms):
        assert result.returncode == EXIT_STORE
        assert f"{lock} is not a regular file" in result.stderr
        assert "Traceback" not in result.stderr

    assert "relay.started" not in relay.stdout


def _run_rooms(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer_console", "rooms"],
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
