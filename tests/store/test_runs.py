"""Runs of small commands sharing a row: packing, splitting, and every history
read and change on a real SQLite file, checked against a plain list."""

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from relay.protocol import encode_frame
from store.errors import CorruptRun
from store.repository import (
    RoomRecord,
    copy_history,
    delete_commands,
    history_statistics,
    insert_commands,
    iter_commands,
    next_ids,
    prefix_size,
    read_page,
    save_room,
    summarize_history,
    truncate_history,
)
from store.runs import (
    RUN_BYTES,
    CommandBlock,
    CommandRow,
    RunBuilder,
    pack,
    split_run,
)
from store.schema import MIGRATIONS, open_database
from store.store import Store, StoreOptions
from tests.store.stored_rows import command_rows

HEAD = 20


def record(room_id: int, name: str) -> RoomRecord:
    return RoomRecord(room_id, name, "3.4.1", "1.0.0", False, True, True, True, {}, 0.0)


def command(
    seq: int, room_id: int = 1, sender: str = "a", at: float = 1.0
) -> CommandRow:
    wire = encode_frame(140 + seq % 3, f"command {seq} ".encode() * (seq % 4 + 1))
    return (seq, room_id, 140 + seq % 3, len(wire), wire, sender, at)


# Seqs 1-6 one read of one sender (a run), 7-8 another time, 9 another sender,
# 10-12 a run again: three runs and one command alone, four rows.
HISTORY = [command(s) for s in range(1, 7)]
HISTORY += [command(s, at=2.0) for s in (7, 8)]
HISTORY += [command(9, sender="b", at=2.0)]
HISTORY += [command(s, at=3.0) for s in (10, 11, 12)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = open_database(tmp_path / "rooms.sqlite", cache_bytes=1 << 20)
    save_room(database, record(1, "runs"))
    save_room(database, record(2, "fork"))
    insert_commands(database, HISTORY)
    yield database
    database.conn.close()


def stored(db: sqlite_utils.Database, room_id: int = 1) -> list[tuple[int, bytes]]:
    return [(c.seq, bytes(c.wire)) for c in iter_commands(db, room_id, 0, 10**9)]


def expected(rows: list[CommandRow]) -> list[tuple[int, bytes]]:
    return [(row[0], bytes(row[4])) for row in rows]


def row_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM commands").fetchone()[0])


def test_pack_gathers_one_read_of_one_sender_into_a_row() -> None:
    """Consecutive commands of one room, sender and time share a row; another
    sender, time, room or a gap in the numbers starts a new row."""
    rows = pack(
        [*HISTORY, command(13, room_id=2, at=3.0), command(15, room_id=2, at=3.0)]
    )

    assert [(row[0], row[7]) for row in rows] == [
        (1, 6),
        (7, 2),
        (9, 1),
        (10, 3),
        (13, 1),
        (15, 1),
    ]
    assert rows[0][4] == b"".join(bytes(row[4]) for row in HISTORY[:6])
    assert rows[0][3] == sum(row[3] for row in HISTORY[:6])


def test_pack_cuts_a_run_at_its_byte_limit() -> None:
    """A run never passes RUN_BYTES, and a larger command is stored alone."""
    wire = encode_frame(140, bytes(1000))
    small = [(s, 1, 140, len(wire), wire, "a", 1.0) for s in range(1, 201)]
    big_wire = encode_frame(140, bytes(RUN_BYTES))
    big = (201, 1, 140, len(big_wire), big_wire, "a", 1.0)

    rows = pack([*small, big])

    assert all(row[3] <= RUN_BYTES or row[7] == 1 for row in rows)
    assert sum(row[7] for row in rows) == 201
    assert rows[-1][4] is big_wire


def block_of(first: int, wires: list[bytes], sender: str = "a") -> CommandBlock:
    return (first, 1, 140, sum(map(len, wires)), wires, sender, 1.0)


def test_add_block_continues_a_run_and_cuts_a_large_block() -> None:
    """A block that fits continues the open run; a larger one is cut where a run
    would pass RUN_BYTES (a command larger than a run alone); every command
    comes back in order, and the blocks' lists are left as they were."""
    wire = encode_frame(140, bytes(1000))
    big_wire = encode_frame(140, bytes(RUN_BYTES))
    many = 2 * RUN_BYTES // len(wire)
    blocks = [
        block_of(1, [wire] * 10),
        block_of(11, [wire] * 10),
        block_of(21, [wire] * many),
        block_of(21 + many, [wire, big_wire, wire]),
        block_of(24 + many, [wire] * 2, sender="b"),
    ]
    copies = [list(block[4]) for block in blocks]
    builder = RunBuilder()

    for block in blocks:
        builder.add_block(block)
    rows = builder.take()

    assert (rows[0][0], rows[0][7]) == (1, 20)
    assert all(row[3] <= RUN_BYTES or row[7] == 1 for row in rows)
    assert [
        (row[0] + index, bytes(frame))
        for row in rows
        for index, frame in enumerate(split_run(row[4], row[7]))
    ] == [
        (seq, bytes(w))
        for seq, w in enumerate((w for b in blocks for w in b[4]), start=1)
    ]
    assert [row[3] for row in rows] == [len(row[4]) for row in rows]
    assert rows[-1][5] == "b" and rows[-1][7] == 2
    assert [list(block[4]) for block in blocks] == copies


def test_add_block_then_discard_drops_the_newest_command() -> None:
    """A merge that replaces a block's last command before it is written leaves
    the rest of the block in its run."""
    wires = [encode_frame(140, bytes([index])) for index in range(3)]
    builder = RunBuilder()

    builder.add_block(block_of(1, wires))
    is_discarded = builder.discard(3)
    rows = builder.take()

    assert is_discarded
    assert [(row[0], row[7], bytes(row[4])) for row in rows] == [
        (1, 2, wires[0] + wires[1])
    ]


def test_store_appends_blocks_and_reports_their_last_number(tmp_path: Path) -> None:
    """Blocks appended through the store are written as their commands, read
    back in order, and durable_seq reaches each block's last number."""
    store = Store.open(tmp_path, StoreOptions(flush_interval=10.0))
    store.save_room(record(1, "blocks"))
    wires = [encode_frame(140, f"command {index}".encode()) for index in range(7)]
    first = store.allocate_seqs(4)
    store.append_block(first, 1, 140, sum(map(len, wires[:4])), wires[:4], "a", 1.0)
    second = store.allocate_seqs(3)
    store.append_block(second, 1, 140, sum(map(len, wires[4:])), wires[4:], "b", 2.0)

    is_flushed = store.journal.flush(timeout=5)
    durable = store.durable_seq
    with contextlib.closing(sqlite3.connect(store.path)) as connection:
        rows = command_rows(connection)

    store.close(timeout=5)

    assert is_flushed
    assert durable == second + 2
    assert [(seq, wire) for seq, _room, _kind, _size, wire in rows] == list(
        zip(range(first, first + 7), wires, strict=True)
    )


@pytest.mark.parametrize("cut", [1, 13, -1, -14])
def test_split_run_refuses_bytes_that_do_not_match_its_count(cut: int) -> None:
    """A damaged run (bytes missing or left over) raises CorruptRun, a clear error,
    instead of handing out wrong frames."""
    wire = b"".join(bytes(row[4]) for row in HISTORY[:6])
    damaged = wire[:-cut] if cut > 0 else wire + bytes(-cut)

    with pytest.raises(CorruptRun, match="damaged"):
        split_run(damaged, 6)


def test_runs_take_fewer_rows_and_read_back_in_order(
    db: sqlite_utils.Database,
) -> None:
    """The history reads back command by command, with each one's number, type,
    sender and time, from four rows."""
    commands = list(iter_commands(db, 1, 0, 100))

    assert row_count(db) == 4
    assert [(c.seq, bytes(c.wire), c.sender, c.at) for c in commands] == [
        (row[0], bytes(row[4]), row[5], row[6]) for row in HISTORY
    ]
    assert [c.kind for c in commands] == [row[2] for row in HISTORY]


@pytest.mark.parametrize(
    ("after", "until"), [(0, 3), (2, 5), (3, 3), (5, 8), (6, 10), (8, 12), (11, 99)]
)
def test_iter_commands_ranges_cut_runs(
    db: sqlite_utils.Database, after: int, until: int
) -> None:
    """A range that starts or ends inside a run yields exactly its commands."""
    commands = list(iter_commands(db, 1, after, until))

    assert [(c.seq, bytes(c.wire)) for c in commands] == expected(
        [row for row in HISTORY if after < row[0] <= until]
    )


@pytest.mark.parametrize(
    ("offset", "limit"), [(0, 3), (2, 5), (5, 1), (6, 20), (11, 5)]
)
def test_read_page_counts_commands_not_rows(
    db: sqlite_utils.Database, offset: int, limit: int
) -> None:
    """The operator's pages number commands one by one across runs."""
    total, records = read_page(db, 1, offset, limit, HEAD)
    page = HISTORY[offset : offset + limit]

    assert total == len(HISTORY)
    assert [(r.seq, r.kind, r.size, r.sender, r.at, r.head) for r in records] == [
        (row[0], row[2], row[3], row[5], row[6], bytes(row[4])[:HEAD]) for row in page
    ]


def test_prefix_size_and_summaries_count_inside_runs(
    db: sqlite_utils.Database,
) -> None:
    """Sizes up to any command, counts and the newest command see through runs."""
    sizes = [prefix_size(db, 1, seq) for seq in range(13)]
    summary = summarize_history(db, 1)

    assert sizes == [sum(row[3] for row in HISTORY[:seq]) for seq in range(13)]
    assert (summary.command_count, summary.byte_size, summary.last_seq) == (
        12,
        sum(row[3] for row in HISTORY),
        12,
    )
    assert summary.last_wire == HISTORY[-1][4]
    assert history_statistics(db) == {1: (12, summary.byte_size)}
    assert next_ids(db) == (3, 13)


@pytest.mark.parametrize("seq", [1, 3, 6, 7, 9, 12])
def test_delete_command_inside_a_run_keeps_the_others(
    db: sqlite_utils.Database, seq: int
) -> None:
    """Removing one command (the merge rule) leaves the rest of its run, numbered
    as before, and the following command is still found after it."""
    delete_commands(db, [seq])

    assert stored(db) == expected([row for row in HISTORY if row[0] != seq])
    assert summarize_history(db, 1).command_count == 11


@pytest.mark.parametrize("after", [0, 2, 6, 7, 11, 12])
def test_truncate_history_inside_a_run(db: sqlite_utils.Database, after: int) -> None:
    """A rewind to a command inside a run keeps that run's first part."""
    truncate_history(db, 1, after)

    assert stored(db) == expected([row for row in HISTORY if row[0] <= after])
    assert summarize_history(db, 1).last_seq == after


@pytest.mark.parametrize("until", [1, 4, 6, 8, 9, 11, 12])
def test_copy_history_renumbers_runs_and_cuts_the_last(
    db: sqlite_utils.Database, until: int
) -> None:
    """A fork up to a command inside a run copies exactly the commands up to it,
    numbered from the first new number on, with their senders and times."""
    copy_history(db, 1, until, 2, 100)
    copied = list(iter_commands(db, 2, 0, 10**9))
    source = [row for row in HISTORY if row[0] <= until]

    assert [(c.seq, bytes(c.wire), c.sender, c.at) for c in copied] == [
        (100 + index, bytes(row[4]), row[5], row[6]) for index, row in enumerate(source)
    ]
    assert stored(db) == expected(HISTORY)


def test_journal_skips_a_command_merged_before_it_was_written(tmp_path: Path) -> None:
    """A command the merge rule removes in the same batch is never written, and
    one removed after it was written leaves the rest of its run."""
    store = Store.open(tmp_path, StoreOptions(flush_interval=10.0, batch_size=10_000))
    store.save_room(record(1, "merging"))
    for row in HISTORY[:6]:
        store.append(row[0], 1, row[2], row[4], row[5], row[6])

    store.remove(6)
    store.journal.flush(timeout=5)
    store.remove(5)
    is_flushed = store.journal.flush(timeout=5)
    with contextlib.closing(sqlite3.connect(store.path)) as connection:
        rows = command_rows(connection)

    store.close(timeout=5)

    assert is_flushed
    assert [(seq, wire) for seq, _room, _kind, _size, wire in rows] == expected(
        HISTORY[:4]
    )


def write_version_4(path: Path) -> None:
    """A database as the previous version left it: one row per command."""
    database = sqlite_utils.Database(
        sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    )
    for target, step in enumerate(MIGRATIONS[:4], start=1):
        step(database)
        database.execute(f"PRAGMA user_version = {target}")

    database.execute("PRAGMA application_id = 1297630034")
    save_room(database, record(1, "old"))
    database.conn.executemany(
        "INSERT INTO commands (seq, room_id, kind, size, wire, sender, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        HISTORY,
    )
    database.conn.close()


def test_version_4_database_opens_and_reads_unchanged(tmp_path: Path) -> None:
    """A database of the previous version (a row per command) is migrated: its
    history reads as before, and new commands append after it as runs."""
    path = tmp_path / "rooms.sqlite"
    write_version_4(path)

    database = open_database(path, cache_bytes=1 << 20)
    before = stored(database)
    rows_before = row_count(database)
    more = [command(seq, at=4.0) for seq in range(13, 20)]
    insert_commands(database, more)
    after = stored(database)
    rows_after = row_count(database)
    summary = summarize_history(database, 1)
    database.conn.close()

    assert before == expected(HISTORY)
    assert rows_before == 12
    assert after == expected(HISTORY + more)
    assert rows_after == 13
    assert (summary.command_count, summary.last_seq) == (19, 19)
