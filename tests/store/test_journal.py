"""The journal on a real SQLite file: batching, waking, refused changes."""

import array
import contextlib
import logging
import sqlite3
import time
import weakref
from pathlib import Path

import pytest

from relay.protocol import encode_frame
from store.repository import (
    INSERT_GROUP_BYTES,
    RoomRecord,
    insert_commands,
    save_room,
)
from store.schema import open_database
from store.store import Store, StoreOptions

MIB = 1024 * 1024


def record(room_id: int, name: str) -> RoomRecord:
    return RoomRecord(room_id, name, "3.4.1", "1.0.0", False, True, True, True, {}, 0.0)


def stored_seqs(store: Store) -> list[int]:
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        rows = db.execute("SELECT seq FROM commands ORDER BY seq").fetchall()

    return [row[0] for row in rows]


def test_journal_writes_a_lone_change_within_the_flush_interval(
    tmp_path: Path,
) -> None:
    """A single queued command is written without waiting for a full batch.

    Regression: the writer slept until a full batch arrived, so a quiet room's
    commands stayed unwritten until the relay stopped.
    """
    store = Store.open(tmp_path, StoreOptions(flush_interval=0.01, batch_size=1000))
    store.save_room(record(1, "quiet"))
    store.append(store.allocate_seq(), 1, 140, b"x" * 20)
    deadline = time.monotonic() + 5
    while store.durable_seq < 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    durable = store.durable_seq
    store.close(timeout=5)

    assert durable == 1


def test_journal_drops_only_a_change_the_schema_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command for a room that does not exist is left out with an ERROR; the
    rest of its batch is written, and the journal does not retry it for ever."""
    store = Store.open(tmp_path, StoreOptions(flush_interval=0.01))
    store.save_room(record(1, "real"))
    store.append(1, 1, 140, b"first")
    store.append(2, 99, 140, b"orphan")
    store.append(3, 1, 140, b"second")

    is_flushed = store.journal.flush(timeout=5)
    seqs = stored_seqs(store)
    store.close(timeout=5)

    assert is_flushed
    assert seqs == [1, 3]
    dropped = [r for r in caplog.records if r.getMessage() == "store.change_dropped"]
    assert len(dropped) == 1
    assert dropped[0].levelno == logging.ERROR


def test_insert_commands_cuts_groups_by_bytes(tmp_path: Path) -> None:
    """Big commands are inserted a few at a time, not a thousand per statement.

    Regression: groups were cut by row count only, so SQLite held copies of up to
    1,000 commands of 1 MiB at once and the relay's memory passed 1 GB.
    """
    db = open_database(tmp_path / "rooms.sqlite", cache_bytes=1 << 20)
    save_room(db, record(1, "big"))
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    rows = [(seq, 1, 140, 2 * MIB, bytes(2 * MIB), None, None) for seq in range(1, 11)]

    insert_commands(db, rows)
    inserts = [s for s in statements if s.startswith("INSERT INTO commands")]
    count = db.execute("SELECT count(*) FROM commands").fetchone()[0]
    db.conn.close()

    assert count == 10
    assert len(inserts) >= 10 * 2 * MIB // INSERT_GROUP_BYTES


def test_journal_lets_go_of_a_written_batch(tmp_path: Path) -> None:
    """Once a batch is written, the journal holds none of its commands' bytes.

    Regression: the writing thread kept its last batch while it slept, and after
    an upload of 1 MiB commands the idle relay held tens of MB of them.
    """
    store = Store.open(tmp_path, StoreOptions(flush_interval=0.01))
    store.save_room(record(1, "big"))
    wire = array.array("B", encode_frame(140, bytes(MIB)))
    written = weakref.ref(wire)
    store.append(store.allocate_seq(), 1, 140, wire)  # type: ignore[arg-type]
    del wire
    is_flushed = store.journal.flush(timeout=5)
    deadline = time.monotonic() + 5
    while written() is not None and time.monotonic() < deadline:
        time.sleep(0.01)

    is_released = written() is None
    store.close(timeout=5)

    assert is_flushed
    assert is_released


def append_kib(store: Store, room_id: int, kib: int) -> None:
    """Append ``kib`` KiB of 1 KiB commands to a room, in reads of 64 KiB."""
    wires = [encode_frame(140, bytes([room_id]) * 1010) for _ in range(64)]
    for _ in range(kib // 64):
        first = store.allocate_seqs(len(wires))
        store.append_block(first, room_id, 140, sum(map(len, wires)), wires, None, 0)


def full_store(tmp_path: Path, old_kib: int, new_kib: int) -> Store:
    """A store holding room 1 ("old", ``old_kib`` KiB, written), capped just
    above its size, with room 2 ("new", ``new_kib`` KiB) queued behind."""
    store = Store.open(tmp_path, StoreOptions(flush_interval=0.01))
    store.save_room(record(1, "old"))
    append_kib(store, 1, old_kib)
    assert store.journal.flush(timeout=10)
    store.limit_size(store.path.stat().st_size + 256 * 1024)
    store.save_room(record(2, "new"))
    append_kib(store, 2, new_kib)
    return store


def rooms_on_disk(store: Store) -> tuple[list[int], list[int]]:
    """The ids of the stored rooms, and of the rooms the stored commands are of."""
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        rooms = db.execute("SELECT id FROM rooms ORDER BY id").fetchall()
        commands = db.execute("SELECT DISTINCT room_id FROM commands").fetchall()

    return [row[0] for row in rooms], sorted(row[0] for row in commands)


def test_deleting_a_room_makes_room_in_a_full_store(tmp_path: Path) -> None:
    """A store at its size cap writes an operator's room deletion ahead of the
    commands that cannot fit, so the space it frees takes them: the deletion
    waited behind them, the store stayed degraded, and a stop lost both (found
    by readme7)."""
    store = full_store(tmp_path, old_kib=2048, new_kib=1024)

    assert not store.journal.flush(timeout=1)
    assert "full" in store.last_error

    store.delete_room(1)
    is_flushed = store.journal.flush(timeout=10)
    on_disk = rooms_on_disk(store)

    assert store.close(timeout=10)
    assert is_flushed
    assert on_disk == ([2], [2])
    assert store.last_error == ""
    # Its deletion met in the queue, the room no longer costs each batch a pass.
    assert not store.journal._deleted_rooms


def test_a_deleted_fork_does_not_keep_its_source_from_making_room(
    tmp_path: Path,
) -> None:
    """A fork's copy queued in a full store, the fork then deleted (as the relay
    does when the copy times out), keeps its source from nothing: deleting the
    source still makes room (break7: the store stayed degraded)."""
    # More than a transaction of room 2: the fork's copy waits behind.
    store = full_store(tmp_path, old_kib=4096, new_kib=3072)
    store.save_room(record(3, "old-fork"))
    store.copy_history(1, store.durable_seq, 3, store.allocate_seqs(2048))

    assert not store.journal.flush(timeout=1)

    store.delete_room(3)
    store.delete_room(1)
    is_flushed = store.journal.flush(timeout=10)
    on_disk = rooms_on_disk(store)

    assert store.close(timeout=10)
    assert is_flushed
    assert on_disk == ([2], [2])


def test_a_fork_of_a_fork_keeps_the_history_it_copies_from(tmp_path: Path) -> None:
    """Room 1 forked into 3 and 3 into 4, both copies waiting in a full store,
    then 3 and 1 deleted: 1 is not deleted ahead of the copy that 4 still needs
    through 3, and once the cap is lifted room 4 holds the whole history
    (break8: it was left empty)."""
    store = full_store(tmp_path, old_kib=4096, new_kib=3072)
    commands = 4096
    for source, fork in ((1, 3), (3, 4)):
        store.save_room(record(fork, f"fork {fork}"))
        first = store.allocate_seqs(commands)
        until = store.durable_seq if source == 1 else first - 1
        store.copy_history(source, until, fork, first)

    store.delete_room(3)
    store.delete_room(1)

    assert not store.journal.flush(timeout=1)

    store.limit_size(0)
    is_flushed = store.journal.flush(timeout=20)
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        (copied,) = db.execute(
            "SELECT coalesce(sum(count), 0) FROM commands WHERE room_id = 4"
        ).fetchone()
    on_disk = rooms_on_disk(store)

    assert store.close(timeout=10)
    assert is_flushed
    assert on_disk == ([2, 4], [2, 4])
    assert copied == commands
