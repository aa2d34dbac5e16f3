"""The checkpointer of a real store in a child process: copies that fail because
its files are capped with RLIMIT_FSIZE (the database file cannot grow, the WAL
still can), and a WAL that a killed store left behind."""

import contextlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from store.store import DATABASE_NAME

ROOT = Path(__file__).resolve().parent.parent.parent
MIB = 1024 * 1024
REPLY_TIMEOUT = 60.0


class CappedStore:
    """The child process of tests/store/capped_store.py, driven line by line."""

    def __init__(
        self, data_dir: Path, wal_limit: int, step_bytes: int, step_seconds: float
    ) -> None:
        self.data_dir = data_dir
        self.err_path = data_dir.parent / f"capped-store-{os.urandom(4).hex()}.err"
        self._err = open(self.err_path, "wb")  # closed in stop()
        arguments = [str(data_dir), str(wal_limit), str(step_bytes), str(step_seconds)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store.capped_store", *arguments],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return the child's reply."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self.process.stdin.flush()
        readable, _, _ = select.select([self.process.stdout], [], [], REPLY_TIMEOUT)
        line = self.process.stdout.readline() if readable else b""
        assert line, f"no reply to {op}: {self.err_path.read_text()[-2000:]}"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def logged(self, event: str) -> int:
        """How many times the child logged ``event``."""
        lines = self.err_path.read_text(errors="replace").splitlines()
        return lines.count(event)

    def stop(self) -> None:
        """Kill the child if it is still running, wait for it, close its pipes."""
        if self.process.poll() is None:
            self.process.kill()

        self.process.communicate(timeout=10)
        self._err.close()


StartStore = Callable[..., CappedStore]


@pytest.fixture
def capped_store(tmp_path: Path) -> Iterator[StartStore]:
    started: list[CappedStore] = []

    def start(
        wal_limit: int, step_bytes: int, step_seconds: float = 0.2
    ) -> CappedStore:
        child = CappedStore(tmp_path / "data", wal_limit, step_bytes, step_seconds)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False

        time.sleep(0.05)

    return True


def fill_then_cap(child: CappedStore, mib: int) -> None:
    """Append ``mib`` MiB and wait for the copy, then cap both files just past the
    larger of them: the WAL can be written again from its start (up to about
    ``mib`` MiB), the database cannot grow."""
    database = child.data_dir / DATABASE_NAME
    wal = database.with_name(DATABASE_NAME + "-wal")
    child.request("append", mib=mib, marker="before-cap")
    assert child.request("flush", timeout=30)["flushed"]
    assert wait_until(lambda: database.stat().st_size >= mib * MIB, 10)
    largest = max(database.stat().st_size, wal.stat().st_size)
    child.request("cap", bytes=largest + 256 * 1024)


def stored_count(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        (count,) = db.execute("SELECT sum(count) FROM commands").fetchone()

    return int(count)


def test_a_failed_copy_is_retried_while_the_store_is_quiet(
    capped_store: StartStore,
) -> None:
    """A copy that failed for want of space is tried again once there is room,
    though nothing new is committed: until then the commands are only in the
    WAL, unsynced, and the WAL cannot start over."""
    child = capped_store(32 * MIB, 8 * MIB)
    child.request("room")
    fill_then_cap(child, 8)
    last_seq = child.request("append", mib=2, marker="quiet-9d2c")["last_seq"]
    assert child.request("flush", timeout=30)["flushed"]
    has_failed = wait_until(lambda: child.logged("store.checkpoint_failed") > 0, 10)
    child.request("uncap")
    database = child.data_dir / DATABASE_NAME
    is_copied = wait_until(lambda: b"quiet-9d2c" in database.read_bytes(), 10)
    recovered = child.logged("store.checkpoint_recovered")
    is_flushed = child.request("close", timeout=10)["flushed"]
    child.stop()

    assert has_failed
    assert is_copied
    assert recovered == 1
    assert is_flushed
    assert stored_count(child.data_dir) == last_seq
    assert not os.path.exists(f"{database}-wal")


def test_a_failing_copy_shows_the_store_degraded_until_it_recovers(
    capped_store: StartStore,
) -> None:
    """While copies fail the store reports why (its degraded status: the
    console, the metrics and the readiness probe show it), and the report ends
    when a copy succeeds again."""
    child = capped_store(32 * MIB, 8 * MIB)
    child.request("room")
    fill_then_cap(child, 8)
    child.request("append", mib=2, marker="degraded")
    assert child.request("flush", timeout=30)["flushed"]
    has_failed = wait_until(lambda: child.logged("store.checkpoint_failed") > 0, 10)
    while_failing = child.request("status")["last_error"]
    child.request("uncap")
    has_recovered = wait_until(
        lambda: child.logged("store.checkpoint_recovered") > 0, 10
    )
    after_recovery = child.request("status")["last_error"]
    child.stop()

    assert has_failed
    assert "copying the WAL into the database file failed" in while_failing
    assert has_recovered
    assert after_recovery == ""


def test_a_failing_copy_does_not_hold_the_writer_back(
    capped_store: StartStore,
) -> None:
    """Past the WAL limit with every copy failing, the writer goes on appending
    to the WAL (the documented fallback) instead of waiting out the checkpoint
    wait before each transaction: 2 s per 2 MiB held a relay to 1 MiB/s."""
    child = capped_store(MIB, MIB)
    child.request("room")
    fill_then_cap(child, 24)
    last_seq = child.request("append", mib=16, marker="past-limit")["last_seq"]
    # Eight transactions: with a 2 s wait before each this took 14 s or more;
    # the bound is loose for a busy machine.
    flushed = child.request("flush", timeout=30)
    child.request("uncap")
    is_flushed = child.request("close", timeout=10)["flushed"]
    child.stop()

    assert flushed["flushed"]
    assert flushed["seconds"] < 7
    assert child.logged("store.checkpoint_failed") == 1
    assert is_flushed
    assert stored_count(child.data_dir) == last_seq


def test_a_wal_left_by_a_killed_store_is_copied_by_a_quiet_one(
    capped_store: StartStore,
) -> None:
    """A store killed before its copy ran leaves commands in the WAL only; the
    next one copies them soon though it writes nothing (they stayed unsynced
    until its first commit, and the WAL could not start over)."""
    killed = capped_store(32 * MIB, 8 * MIB, 600)
    killed.request("room")
    last_seq = killed.request("append", mib=2, marker="left-4e1b")["last_seq"]
    assert killed.request("flush", timeout=30)["flushed"]
    killed.stop()
    database = killed.data_dir / DATABASE_NAME
    was_in_database_file = b"left-4e1b" in database.read_bytes()
    quiet = capped_store(32 * MIB, 8 * MIB)
    is_copied = wait_until(lambda: b"left-4e1b" in database.read_bytes(), 10)
    is_flushed = quiet.request("close", timeout=10)["flushed"]
    quiet.stop()

    assert not was_in_database_file
    assert is_copied
    assert is_flushed
    assert stored_count(killed.data_dir) == last_seq
