"""Rows in and out of the database: rooms and their stored commands.

Plain functions over one connection; the journal calls the writing ones from its
thread, the store's reader the reading ones. Nothing here knows about threads.
"""

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from store.runs import Blob, CommandRow, RunRow, frame_kind, pack, split_run

__all__ = ["Blob", "CommandRow"]

# Rows per INSERT statement: 8 parameters each, well under SQLite's limit of
# 32766 parameters per statement. SQLite copies every bound blob, so a group is
# also cut once it holds this many bytes.
INSERT_GROUP = 1000
INSERT_GROUP_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RoomRecord:
    """A room's row: everything about it except its history."""

    id: int
    name: str
    blender_version: str
    mixer_version: str
    ignore_version_check: bool
    generic_protocol: bool
    keep_open: bool
    joinable: bool
    custom: dict[str, Any]
    created_at: float


ROOM_ATTRIBUTE_ORDER = (
    "keep_open",
    "blender_version",
    "mixer_version",
    "ignore_version_check",
    "generic_protocol",
    "command_count",
    "byte_size",
    "joinable",
)
"""The attributes the relay owns, in the order it reports them after the custom
ones; clients cannot set them, and any other attribute is a custom one."""


def room_attributes(
    room: RoomRecord, command_count: int, byte_size: int
) -> dict[str, Any]:
    """A room's attributes as LIST_ROOMS reports them and room files hold them:
    custom ones first (in the original's order), then ROOM_ATTRIBUTE_ORDER."""
    return {
        **room.custom,
        "keep_open": room.keep_open,
        "blender_version": room.blender_version,
        "mixer_version": room.mixer_version,
        "ignore_version_check": room.ignore_version_check,
        "generic_protocol": room.generic_protocol,
        "command_count": command_count,
        "byte_size": byte_size,
        "joinable": room.joinable,
    }


@dataclass(frozen=True)
class HistorySummary:
    """What the relay needs to know about a stored history without reading it."""

    command_count: int
    byte_size: int
    last_seq: int
    last_wire: bytes | None


@dataclass(frozen=True, slots=True)
class StoredCommand:
    """One stored room command."""

    seq: int
    kind: int
    wire: bytes
    sender: str | None = None
    at: float | None = None


def save_room(db: sqlite_utils.Database, room: RoomRecord) -> None:
    """Insert or replace a room's row."""
    db.execute(
        "INSERT INTO rooms (id, name, blender_version, mixer_version, "
        "ignore_version_check, generic_protocol, keep_open, joinable, custom, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
        "keep_open = excluded.keep_open, joinable = excluded.joinable, "
        "custom = excluded.custom",
        [
            room.id,
            room.name,
            room.blender_version,
            room.mixer_version,
            int(room.ignore_version_check),
            int(room.generic_protocol),
            int(room.keep_open),
            int(room.joinable),
            json.dumps(room.custom),
            room.created_at,
        ],
    )


def delete_room(db: sqlite_utils.Database, room_id: int) -> None:
    """Delete a room and its whole history."""
    db.execute("DELETE FROM commands WHERE room_id = ?", [room_id])
    db.execute("DELETE FROM rooms WHERE id = ?", [room_id])


def insert_commands(db: sqlite_utils.Database, rows: list[CommandRow]) -> None:
    """Append commands, given as (seq, room_id, kind, size, wire, sender, at)
    rows in sequence order; runs of them share a row (see store.runs)."""
    insert_runs(db, pack(rows))


def insert_runs(db: sqlite_utils.Database, rows: list[RunRow]) -> None:
    """Insert stored rows, given as (seq, room_id, kind, size, wire, sender, at,
    count).

    Rows go in groups, one multi-row INSERT each: the sqlite3 module lets go of
    the GIL for every statement step, and a step per row made the relay's event
    loop wait for the GIL each time the writer took it back.
    """
    group: list[RunRow] = []
    group_bytes = 0
    for row in rows:
        group.append(row)
        group_bytes += row[3]
        if len(group) == INSERT_GROUP or group_bytes >= INSERT_GROUP_BYTES:
            _insert_group(db, group)
            group = []
            group_bytes = 0

    if group:
        _insert_group(db, group)


def _insert_group(db: sqlite_utils.Database, group: list[RunRow]) -> None:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(group))
    db.conn.execute(
        "INSERT INTO commands (seq, room_id, kind, size, wire, sender, at, count) "
        f"VALUES {values}",
        [value for row in group for value in row],
    )


def delete_commands(db: sqlite_utils.Database, seqs: list[int]) -> None:
    """Remove commands by sequence number (the merge rule replaced them); one
    inside a run leaves the rest of the run stored."""
    for seq in seqs:
        holder = _row_start(db, None, seq)
        if holder is None:
            continue

        first, count = holder
        if count == 1:
            db.execute("DELETE FROM commands WHERE seq = ?", [first])
            continue

        _seq, room_id, _kind, _size, wire, sender, at, _count = _read_row(db, first)
        frames = split_run(wire, count)
        index = seq - first
        db.execute("DELETE FROM commands WHERE seq = ?", [first])
        before = _run_row(first, room_id, frames[:index], sender, at)
        after = _run_row(seq + 1, room_id, frames[index + 1 :], sender, at)
        insert_runs(db, [row for row in (before, after) if row is not None])


def _row_start(
    db: sqlite_utils.Database, room_id: int | None, seq: int
) -> tuple[int, int] | None:
    """Return the first sequence number and count of the row holding command
    ``seq`` (of a room, if given), or None when no row does."""
    room_filter = "room_id = ? AND " if room_id is not None else ""
    row = db.execute(
        f"SELECT seq, count FROM commands WHERE {room_filter}seq <= ? "
        "ORDER BY seq DESC LIMIT 1",
        [room_id, seq] if room_id is not None else [seq],
    ).fetchone()
    if row is None or row[0] + row[1] <= seq:
        return None

    return int(row[0]), int(row[1])


def _run_across(db: sqlite_utils.Database, room_id: int, seq: int) -> RunRow | None:
    """Return the row of a run that holds command ``seq`` and others after it
    (a cut there splits the run), or None."""
    holder = _row_start(db, room_id, seq)
    if holder is None or holder[0] + holder[1] - 1 <= seq:
        return None

    return _read_row(db, holder[0])


def _read_row(db: sqlite_utils.Database, seq: int) -> RunRow:
    row = db.execute(
        "SELECT seq, room_id, kind, size, wire, sender, at, count FROM commands "
        "WHERE seq = ?",
        [seq],
    ).fetchone()
    seq, room_id, kind, size, wire, sender, at, count = row
    return seq, room_id, kind, size, wire, sender, at, count


def _run_row(
    seq: int,
    room_id: int,
    frames: list[memoryview],
    sender: str | None,
    at: float | None,
) -> RunRow | None:
    """The row storing these frames as a run from ``seq`` on (None for none)."""
    if not frames:
        return None

    wire = b"".join(frames)
    return (
        seq,
        room_id,
        frame_kind(frames[0]),
        len(wire),
        wire,
        sender,
        at,
        len(frames),
    )


def load_rooms(db: sqlite_utils.Database) -> list[RoomRecord]:
    """Return every stored room, oldest first."""
    rows = db.execute(
        "SELECT id, name, blender_version, mixer_version, ignore_version_check, "
        "generic_protocol, keep_open, joinable, custom, created_at FROM rooms "
        "ORDER BY id"
    ).fetchall()
    return [
        RoomRecord(
            id=row[0],
            name=row[1],
            blender_version=row[2] or "",
            mixer_version=row[3] or "",
            ignore_version_check=bool(row[4]),
            generic_protocol=bool(row[5]),
            keep_open=bool(row[6]),
            joinable=bool(row[7]),
            custom=json.loads(row[8]),
            created_at=row[9] or 0.0,
        )
        for row in rows
    ]


def summarize_history(db: sqlite_utils.Database, room_id: int) -> HistorySummary:
    """Count a room's commands and fetch the newest one (for the merge rule)."""
    count, byte_size = db.execute(
        "SELECT coalesce(sum(count), 0), coalesce(sum(size), 0) FROM commands "
        "WHERE room_id = ?",
        [room_id],
    ).fetchone()
    newest = newest_command(db, room_id)
    if newest is None:
        return HistorySummary(count, byte_size, 0, None)

    return HistorySummary(count, byte_size, newest[0], newest[2])


def newest_command(
    db: sqlite_utils.Database, room_id: int
) -> tuple[int, int, bytes] | None:
    """Return the sequence number, type and wire bytes of a room's newest stored
    command, or None for an empty history."""
    row = db.execute(
        "SELECT seq, kind, wire, count FROM commands WHERE room_id = ? "
        "ORDER BY seq DESC LIMIT 1",
        [room_id],
    ).fetchone()
    if row is None:
        return None

    seq, kind, wire, count = row
    if count == 1:
        return seq, kind, wire

    last = split_run(wire, count)[-1]
    return seq + count - 1, frame_kind(last), bytes(last)


def iter_commands(
    db: sqlite_utils.Database, room_id: int, after_seq: int, until_seq: int
) -> Generator[StoredCommand, None, None]:
    """Yield a room's commands with ``after_seq < seq <= until_seq`` in order,
    one row at a time (SQLite steps the cursor as it is consumed).

    Close the iterator when done with it early: until its statement is reset,
    the connection stays in its read transaction and later reads on it see the
    database as it was then, without newer commands.
    """
    # Known limit: each command is read whole, so one command of hundreds of MB
    # is held in memory at once while it is sent.
    cursor = db.execute(
        "SELECT seq, kind, wire, sender, at, count FROM commands "
        "WHERE room_id = ?1 AND seq <= ?3 AND seq >= ("
        "SELECT coalesce(max(seq), 0) FROM commands WHERE room_id = ?1 AND seq <= ?2"
        ") ORDER BY seq",
        [room_id, after_seq, until_seq],
    )
    try:
        for first, kind, wire, sender, at, count in cursor:
            if count == 1:
                if first > after_seq:
                    yield StoredCommand(first, kind, wire, sender, at)

                continue

            for seq, frame in enumerate(split_run(wire, count), start=first):
                if after_seq < seq <= until_seq:
                    yield StoredCommand(
                        seq, frame_kind(frame), bytes(frame), sender, at
                    )
    finally:
        cursor.close()


def next_ids(db: sqlite_utils.Database) -> tuple[int, int]:
    """Return the first free room id and command sequence number."""
    (room_id,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM rooms").fetchone()
    return int(room_id), last_seq(db) + 1


def last_seq(db: sqlite_utils.Database) -> int:
    """Return the largest stored command sequence number (0 when none is)."""
    row = db.execute(
        "SELECT seq + count - 1 FROM commands ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return int(row[0]) if row else 0


def history_statistics(db: sqlite_utils.Database) -> dict[int, tuple[int, int]]:
    """Return each room's command count and byte size, by room id (rooms without
    commands are left out)."""
    rows = db.execute(
        "SELECT room_id, sum(count), coalesce(sum(size), 0) FROM commands "
        "GROUP BY room_id"
    ).fetchall()
    return {room_id: (count, byte_size) for room_id, count, byte_size in rows}


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A stored command as the operator's history view lists it."""

    seq: int
    kind: int
    size: int
    sender: str | None
    at: float | None
    head: bytes
    """The first bytes of its wire form, header included."""


def read_page(
    db: sqlite_utils.Database, room_id: int, offset: int, limit: int, head_bytes: int
) -> tuple[int, list[CommandRecord]]:
    """Return a room's command count and its commands ``offset`` (from 0) to
    ``offset + limit - 1``, in history order, each with the head of its bytes."""
    (total,) = db.execute(
        "SELECT coalesce(sum(count), 0) FROM commands WHERE room_id = ?", [room_id]
    ).fetchone()
    # The row holding command number ``offset``, and how many come before it;
    # counted over the index, whose entries carry each row's count.
    start = db.execute(
        "SELECT seq, before FROM (SELECT seq, count, "
        "sum(count) OVER (ORDER BY seq) - count AS before FROM commands "
        "WHERE room_id = ?) WHERE before + count > ? ORDER BY seq LIMIT 1",
        [room_id, offset],
    ).fetchone()
    if start is None or limit <= 0:
        return int(total), []

    first_seq, skip = start[0], offset - start[1]
    # A run is read whole (it is small); a lone command only up to its head.
    cursor = db.execute(
        "SELECT seq, kind, size, sender, at, count, "
        "CASE WHEN count = 1 THEN substr(wire, 1, ?) ELSE wire END "
        "FROM commands WHERE room_id = ? AND seq >= ? ORDER BY seq",
        [head_bytes, room_id, first_seq],
    )
    records: list[CommandRecord] = []
    try:
        for seq, kind, size, sender, at, count, data in cursor:
            if count == 1:
                records.append(CommandRecord(seq, kind, size, sender, at, bytes(data)))
            else:
                frames = split_run(data, count)[skip : skip + limit - len(records)]
                records += [
                    CommandRecord(
                        seq + skip + index,
                        frame_kind(frame),
                        len(frame),
                        sender,
                        at,
                        bytes(frame[:head_bytes]),
                    )
                    for index, frame in enumerate(frames)
                ]

            skip = 0
            if len(records) >= limit:
                break
    finally:
        cursor.close()

    return int(total), records[:limit]


def prefix_size(db: sqlite_utils.Database, room_id: int, until_seq: int) -> int:
    """Return the wire bytes of a room's commands up to ``until_seq``."""
    (size,) = db.execute(
        "SELECT coalesce(sum(size), 0) FROM commands "
        "WHERE room_id = ? AND seq + count - 1 <= ?",
        [room_id, until_seq],
    ).fetchone()
    straddling = _run_across(db, room_id, until_seq)
    if straddling is not None:
        frames = split_run(straddling[4], straddling[7])
        size += sum(len(frame) for frame in frames[: until_seq - straddling[0] + 1])

    return int(size)


def truncate_history(db: sqlite_utils.Database, room_id: int, after_seq: int) -> None:
    """Delete a room's commands after ``after_seq`` (an operator's rewind)."""
    straddling = _run_across(db, room_id, after_seq)
    db.execute(
        "DELETE FROM commands WHERE room_id = ? AND seq > ?", [room_id, after_seq]
    )
    if straddling is None:
        return

    first, _room, _kind, _size, wire, sender, at, count = straddling
    kept = split_run(wire, count)[: after_seq - first + 1]
    db.execute("DELETE FROM commands WHERE seq = ?", [first])
    row = _run_row(first, room_id, kept, sender, at)
    insert_runs(db, [row] if row is not None else [])


def copy_history(
    db: sqlite_utils.Database,
    source_id: int,
    until_seq: int,
    target_id: int,
    first_seq: int,
) -> None:
    """Copy a room's commands up to ``until_seq`` to another room, numbered from
    ``first_seq`` on in the same order (an operator's fork)."""
    # Whole rows in SQL, each renumbered after the commands before it; a run
    # that ``until_seq`` cuts is copied in part, last.
    db.execute(
        "INSERT INTO commands (seq, room_id, kind, size, wire, sender, at, count) "
        "SELECT ? + coalesce(sum(count) OVER (ORDER BY seq ROWS BETWEEN "
        "UNBOUNDED PRECEDING AND 1 PRECEDING), 0), ?, kind, size, wire, sender, "
        "at, count FROM commands WHERE room_id = ? AND seq + count - 1 <= ? "
        "ORDER BY seq",
        [first_seq, target_id, source_id, until_seq],
    )
    straddling = _run_across(db, source_id, until_seq)
    if straddling is None:
        return

    first, _room, _kind, _size, wire, sender, at, count = straddling
    (copied,) = db.execute(
        "SELECT coalesce(sum(count), 0) FROM commands WHERE room_id = ? AND seq < ?",
        [source_id, first],
    ).fetchone()
    kept = split_run(wire, count)[: until_seq - first + 1]
    row = _run_row(first_seq + copied, target_id, kept, sender, at)
    insert_runs(db, [row] if row is not None else [])
