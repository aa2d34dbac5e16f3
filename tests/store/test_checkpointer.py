"""The checkpointer on a real SQLite file: the WAL stays bounded, a reader's
snapshot does not stop the writer, and a closed store leaves no WAL behind."""

import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest

import store.checkpointer
import store.store
from relay.protocol import encode_frame
from store.repository import RoomRecord
from store.store import Store, StoreOptions
from tests.store.capped_store import append_mib

MIB = 1024 * 1024
WAL_LIMIT = MIB


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.store, "WAL_LIMIT_BYTES", WAL_LIMIT)
    monkeypatch.setattr(store.checkpointer, "STEP_BYTES", WAL_LIMIT)


def open_store(tmp_path: Path) -> Store:
    opened = Store.open(tmp_path, StoreOptions(flush_interval=0.01))
    opened.save_room(
        RoomRecord(1, "stream", "3.4.1", "1.0.0", False, True, True, True, {}, 0.0)
    )
    return opened


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wal_path(opened: Store) -> Path:
    return opened.path.with_name(opened.path.name + "-wal")


def pin_frames(opened: Store) -> sqlite3.Connection:
    """A reader whose open transaction keeps the checkpointer from copying the
    frames committed after it began; :func:`release` lets them go."""
    reader = sqlite3.connect(opened.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM commands").fetchone()
    return reader


def release(reader: sqlite3.Connection) -> None:
    reader.execute("COMMIT")
    reader.close()


def test_the_wal_stays_bounded_under_a_stream_of_appends(
    tmp_path: Path, small_wal: None
) -> None:
    """The writer waits for the copy past the limit, so SQLite starts the WAL
    over instead of growing it by every byte appended."""
    opened = open_store(tmp_path)
    append_mib(opened, 48)
    is_flushed = opened.journal.flush(timeout=30)
    wal_size = file_size(wal_path(opened))
    opened.close(timeout=10)

    assert is_flushed
    assert wal_size < 12 * MIB


def test_a_reader_holding_a_snapshot_does_not_stop_the_writer(
    tmp_path: Path, small_wal: None, caplog: pytest.LogCaptureFixture
) -> None:
    """While a reader pins old frames the writer goes on (the WAL grows, which is
    logged once), and once the reader is done the checkpointer copies everything
    into the database."""
    caplog.set_level(logging.INFO)
    opened = open_store(tmp_path)
    append_mib(opened, 1)
    assert opened.journal.flush(timeout=10)
    reader = pin_frames(opened)

    append_mib(opened, 24)
    is_flushed_while_pinned = opened.journal.flush(timeout=10)
    # The copy that finds the WAL held back may come after the writes are done
    # (its thread starved on a busy machine): it must come before the release.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "store.wal_held_back" not in caplog.text:
        time.sleep(0.05)

    release(reader)
    append_mib(opened, 1)
    is_flushed = opened.journal.flush(timeout=10)
    deadline = time.monotonic() + 10
    while file_size(opened.path) < 26 * MIB and time.monotonic() < deadline:
        time.sleep(0.05)

    database_size = file_size(opened.path)
    opened.close(timeout=10)
    events = [record.getMessage() for record in caplog.records]

    assert is_flushed_while_pinned
    assert is_flushed
    assert database_size >= 26 * MIB
    assert events.count("store.wal_held_back") == 1
    assert events.count("store.wal_caught_up") == 1


def test_a_closed_store_leaves_no_wal_and_keeps_every_command(
    tmp_path: Path, small_wal: None
) -> None:
    opened = open_store(tmp_path)
    append_mib(opened, 8)
    last_seq = opened.allocate_seq() - 1
    assert opened.close(timeout=10)

    wal_exists = wal_path(opened).exists()
    with contextlib.closing(sqlite3.connect(opened.path)) as db:
        (count,) = db.execute("SELECT sum(count) FROM commands").fetchone()

    assert not wal_exists
    assert count == last_seq


def test_a_lone_small_change_reaches_the_database_file(tmp_path: Path) -> None:
    """A quiet relay's changes are copied out of the WAL soon, not once 8 MiB of
    commands have piled up: until then a power cut could lose them."""
    opened = Store.open(tmp_path, StoreOptions(flush_interval=0.01))
    opened.save_room(
        RoomRecord(
            1, "lone-room-7f3a", "3.4.1", "1.0.0", False, True, True, True, {}, 0
        )
    )
    opened.append(opened.allocate_seq(), 1, 140, encode_frame(140, b"small"))
    assert opened.journal.flush(timeout=5)
    deadline = time.monotonic() + 5
    while b"lone-room-7f3a" not in opened.path.read_bytes():
        if time.monotonic() > deadline:
            break

        time.sleep(0.02)

    in_database_file = b"lone-room-7f3a" in opened.path.read_bytes()
    opened.close(timeout=10)

    assert in_database_file


def test_the_wal_file_shrinks_once_a_pinning_reader_is_done(
    tmp_path: Path, small_wal: None
) -> None:
    """A reader that held frames back made the WAL grow; once SQLite starts it
    over, the file is cut back rather than keep its largest size (disk space the
    relay held until it stopped)."""
    opened = open_store(tmp_path)
    append_mib(opened, 1)
    assert opened.journal.flush(timeout=10)
    reader = pin_frames(opened)
    append_mib(opened, 24)
    assert opened.journal.flush(timeout=10)
    wal = wal_path(opened)
    pinned_size = file_size(wal)
    release(reader)
    deadline = time.monotonic() + 10
    while file_size(wal) >= 8 * MIB and time.monotonic() < deadline:
        append_mib(opened, 1)
        opened.journal.flush(timeout=10)
        time.sleep(0.05)

    released_size = file_size(wal)
    opened.close(timeout=10)

    assert pinned_size >= 24 * MIB
    assert released_size < 8 * MIB
