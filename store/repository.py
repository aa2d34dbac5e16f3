"""Rows in and out of the database: rooms and their stored commands.

Plain functions over one connection; the journal calls the writing ones from its
thread, the store's reader the reading ones. Nothing here knows about threads.
"""

import json
import mmap
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

# A command's bytes as the relay holds them; SQLite stores any of these as a BLOB.
Blob = bytes | bytearray | memoryview | mmap.mmap


# Rows per INSERT statement: 7 parameters each, well under SQLite's limit of
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


# A command as the journal appends it: (seq, room_id, kind, size, wire, sender,
# at); a bare tuple, since there is one per room command.
CommandRow = tuple[int, int, int, int, Blob, str | None, float | None]


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
    rows.

    Rows go in groups, one multi-row INSERT each: the sqlite3 module lets go of
    the GIL for every statement step, and a step per row made the relay's event
    loop wait for the GIL each time the writer took it back.
    """
    group: list[CommandRow] = []
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


def _insert_group(db: sqlite_utils.Database, group: list[CommandRow]) -> None:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(group))
    db.conn.execute(
        "INSERT INTO commands (seq, room_id, kind, size, wire, sender, at) "
        f"VALUES {values}",
        [value for row in group for value in row],
    )


def delete_commands(db: sqlite_utils.Database, seqs: list[int]) -> None:
    """Remove commands by sequence number (the merge rule replaced them)."""
    db.conn.executemany("DELETE FROM commands WHERE seq = ?", [(s,) for s in seqs])


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
    count, byte_size, last_seq = db.execute(
        "SELECT count(*), coalesce(sum(size), 0), coalesce(max(seq), 0) "
        "FROM commands WHERE room_id = ?",
        [room_id],
    ).fetchone()
    last = db.execute("SELECT wire FROM commands WHERE seq = ?", [last_seq]).fetchone()
    return HistorySummary(count, byte_size, last_seq, last[0] if last else None)


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
        "SELECT seq, kind, wire, sender, at FROM commands "
        "WHERE room_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
        [room_id, after_seq, until_seq],
    )
    try:
        for seq, kind, wire, sender, at in cursor:
            yield StoredCommand(seq, kind, wire, sender, at)
    finally:
        cursor.close()


def next_ids(db: sqlite_utils.Database) -> tuple[int, int]:
    """Return the first free room id and command sequence number."""
    (room_id,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM rooms").fetchone()
    (seq,) = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM commands").fetchone()
    return int(room_id), int(seq)


def history_statistics(db: sqlite_utils.Database) -> dict[int, tuple[int, int]]:
    """Return each room's command count and byte size, by room id (rooms without
    commands are left out)."""
    rows = db.execute(
        "SELECT room_id, count(*), coalesce(sum(size), 0) FROM commands "
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
        "SELECT count(*) FROM commands WHERE room_id = ?", [room_id]
    ).fetchone()
    rows = db.execute(
        "SELECT seq, kind, size, sender, at, substr(wire, 1, ?) FROM commands "
        "WHERE room_id = ? ORDER BY seq LIMIT ? OFFSET ?",
        [head_bytes, room_id, limit, offset],
    ).fetchall()
    return int(total), [
        CommandRecord(seq, kind, size, sender, at, bytes(head))
        for seq, kind, size, sender, at, head in rows
    ]


def prefix_size(db: sqlite_utils.Database, room_id: int, until_seq: int) -> int:
    """Return the wire bytes of a room's commands up to ``until_seq``."""
    (size,) = db.execute(
        "SELECT coalesce(sum(size), 0) FROM commands WHERE room_id = ? AND seq <= ?",
        [room_id, until_seq],
    ).fetchone()
    return int(size)


def truncate_history(db: sqlite_utils.Database, room_id: int, after_seq: int) -> None:
    """Delete a room's commands after ``after_seq`` (an operator's rewind)."""
    db.execute(
        "DELETE FROM commands WHERE room_id = ? AND seq > ?", [room_id, after_seq]
    )


def copy_history(
    db: sqlite_utils.Database,
    source_id: int,
    until_seq: int,
    target_id: int,
    first_seq: int,
) -> None:
    """Copy a room's commands up to ``until_seq`` to another room, numbered from
    ``first_seq`` on in the same order (an operator's fork)."""
    db.execute(
        "INSERT INTO commands (seq, room_id, kind, size, wire, sender, at) "
        "SELECT ? - 1 + row_number() OVER (ORDER BY seq), ?, kind, size, wire, "
        "sender, at FROM commands WHERE room_id = ? AND seq <= ? ORDER BY seq",
        [first_seq, target_id, source_id, until_seq],
    )
