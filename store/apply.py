"""Applying committed Raft entries to a node's SQLite file, exactly once each.

An entry is a batch of operations proposed by one node (see
:mod:`store.replication` for the whole design). Every node applies the same
entries in the same order, so the rows they write are the same everywhere: room
ids and command sequence numbers are handed out here, at apply time, never by
the proposing node.

Each entry is applied in one transaction that also records the entry's Raft
index: replay after a restart (pysyncobj replays its journal from the last
snapshot) is then harmless.

Entries are numbered by their proposer: a stream (node and process start) and
a number counting up from 1. The applier applies each stream's entries in
number order, once each: a number already applied is a retry committed twice
and is skipped; a number ahead of the next expected one (the entry before it
was lost with a leader and is being retried) is held in the database until the
gap is filled, or until its proposer abandons the missing number. So a
client's commands are never reordered by a failover, and every node holds and
releases the same entries at the same log positions.
"""

import json
import logging
import marshal
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from relay.history import LastCommand, merge_key
from relay.messages import is_stored
from relay.protocol import HEADER
from store.access import LeaseRecord, delete_lease, save_lease
from store.operators import (
    AuditRecord,
    BanRecord,
    delete_ban,
    save_audit,
    save_ban,
)
from store.repository import (
    RoomRecord,
    copy_history,
    delete_commands,
    delete_room,
    insert_commands,
    last_seq,
    load_rooms,
    newest_command,
    prefix_size,
    read_page,
    save_room,
    truncate_history,
)

log = logging.getLogger(__name__)

# Bytes of a command read to find its merge key (the path it starts with).
HEAD_BYTES = 64 * 1024

# The entry number of an abandonment, which is applied whatever its position.
ABANDON = 0

# The operations on who may connect and what operators did, by their length:
# ("lease", origin, address, login, granted_at, expires_at, via),
# ("unlease", origin, address), ("ban", origin, subject, until, reason,
# operator), ("unban", origin, subject) and ("audit", origin, at, operator,
# action, target, detail).
ACCESS_OPERATIONS = {"lease": 7, "unlease": 3, "ban": 6, "unban": 3, "audit": 7}


@dataclass(frozen=True, slots=True)
class RoomSaved:
    """A room's row was created or changed by ``origin`` (a node id)."""

    origin: str
    record: RoomRecord


@dataclass(frozen=True, slots=True)
class RoomDeleted:
    """A room and its history were deleted by ``origin``."""

    origin: str
    name: str


@dataclass(frozen=True, slots=True)
class CommandCommitted:
    """A room command is committed: forward it to the room's members.

    ``seq`` is its number in the room's history, 0 for a command that is not
    stored (forwarded only).
    """

    origin: str
    client_id: str
    room: str
    room_id: int
    seq: int
    kind: int
    wire: bytes


@dataclass(frozen=True, slots=True)
class RoomForked:
    """An operator on ``origin`` created ``record``'s room from the first
    ``count`` commands of ``source``."""

    origin: str
    record: RoomRecord
    source: str
    count: int
    byte_size: int
    last: LastCommand | None


@dataclass(frozen=True, slots=True)
class RoomRewound:
    """An operator on ``origin`` cut a room's history back to its first
    ``count`` commands."""

    origin: str
    name: str
    count: int
    byte_size: int
    last: LastCommand | None


@dataclass(frozen=True, slots=True)
class OperationSkipped:
    """An operator's fork or rewind proposed by ``origin`` could not be applied
    (the log had changed the rooms since it was proposed)."""

    origin: str
    action: str
    room: str
    reason: str


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """A lease was granted (or replaced) by ``origin``."""

    origin: str
    lease: LeaseRecord


@dataclass(frozen=True, slots=True)
class LeaseRevoked:
    """An address's lease was revoked by ``origin``: its connections close."""

    origin: str
    address: str


@dataclass(frozen=True, slots=True)
class BanSet:
    """A ban was put in force by ``origin``: matching connections close."""

    origin: str
    ban: BanRecord


@dataclass(frozen=True, slots=True)
class BanLifted:
    """A ban was lifted by ``origin``."""

    origin: str
    subject: str


@dataclass(frozen=True, slots=True)
class AuditAppended:
    """An operator action was recorded by ``origin``."""

    origin: str
    entry: AuditRecord


Applied = (
    RoomSaved
    | RoomDeleted
    | RoomForked
    | RoomRewound
    | OperationSkipped
    | CommandCommitted
    | LeaseGranted
    | LeaseRevoked
    | BanSet
    | BanLifted
    | AuditAppended
)


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """What one committed entry did: ``events`` may come from entries held
    before it, and is empty for a replayed, repeated or held entry."""

    stream: str
    number: int
    raft_index: int
    events: tuple[Applied, ...]
    abandoned: int | None = None
    """For an abandonment: the number given up on."""


class MalformedOperation(ValueError):
    """Raised when an operation in an entry does not have the expected shape."""


class EntryApplier:
    """Applies entries to one database connection (used by one thread only).

    Args:
        db: the node's writing connection to its SQLite file.
        obtain_bulk: gives the bytes a ``bulk`` operation's digest names (see
            :mod:`store.bulk`), checked against it; raises when no node has them.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        obtain_bulk: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._db = db
        self._obtain_bulk = obtain_bulk
        self._last_commands: dict[int, tuple[int, int, bytes | None]] = {}
        self.applied_index = 0
        self.last_seq = 0
        self._next_seq = 1
        self.reload()

    def reload(self) -> None:
        """Read the counters again (after a snapshot replaced the database)."""
        db = self._db
        row = db.execute(
            "SELECT raft_index, next_seq FROM raft_applied WHERE id = 1"
        ).fetchone()
        self.applied_index = int(row[0]) if row else 0
        # A database written before the counter was kept has only its commands.
        kept = int(row[1]) if row is not None and row[1] is not None else 0
        self._next_seq = max(last_seq(db) + 1, kept)
        self.last_seq = self._next_seq - 1
        self._last_commands.clear()

    def apply(
        self, raft_index: int, stream: str, number: int, operations: object
    ) -> AppliedEntry:
        """Apply one committed entry in one transaction.

        Args:
            raft_index: the entry's position in the log.
            stream: who proposed it (node and process start).
            number: its number in the stream; :data:`ABANDON` for an entry
                whose one operation gives up on a missing number.
            operations: what it does.

        Raises:
            sqlite3.Error: the database refused the write; nothing of the entry
                was applied, and applying it again later is safe.
        """
        if raft_index <= self.applied_index:
            return AppliedEntry(stream, number, raft_index, ())

        db = self._db
        events: list[Applied] = []
        next_seq = self._next_seq
        db.execute("BEGIN IMMEDIATE")
        try:
            self._apply_in_order(str(stream), number, operations, events)
            db.execute(
                "INSERT INTO raft_applied (id, raft_index, next_seq) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET raft_index = excluded.raft_index, "
                "next_seq = excluded.next_seq",
                [raft_index, self._next_seq],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")

            self._next_seq = next_seq
            self._last_commands.clear()
            raise

        self.applied_index = raft_index
        self.last_seq = self._next_seq - 1
        abandoned = _abandoned_number(operations) if number == ABANDON else None
        return AppliedEntry(stream, number, raft_index, tuple(events), abandoned)

    def _apply_in_order(
        self, stream: str, number: object, operations: object, events: list[Applied]
    ) -> None:
        if not isinstance(number, int) or number < 0:
            log.error("raft.entry_malformed", extra={"stream": stream})
            return

        expected = self._next_number(stream)
        if number == ABANDON:
            missing = _abandoned_number(operations)
            if missing is None or missing < expected:
                return

            log.warning(
                "raft.entries_abandoned",
                extra={"stream": stream, "from": expected, "to": missing},
            )
            # Every number up to the abandoned one is either held (applied now,
            # in order) or given up.
            for held in range(expected, missing + 1):
                self._release(stream, held, events)

            self._advance(stream, missing + 1, events)
            return

        if number < expected:
            return  # a retry of an entry already applied

        if number > expected:
            # Known limit: entries held behind a number whose proposer died
            # before abandoning it are never applied, and their rows stay in
            # raft_held (no client received them).
            self._db.execute(
                "INSERT OR IGNORE INTO raft_held (stream, number, operations) "
                "VALUES (?, ?, ?)",
                [stream, number, _pack(operations)],
            )
            return

        self._apply_operations(stream, operations, events)
        self._advance(stream, number + 1, events)

    def _advance(self, stream: str, number: int, events: list[Applied]) -> None:
        """Set the stream's next number, applying held entries that follow."""
        while self._release(stream, number, events):
            number += 1

        self._db.execute(
            "INSERT INTO raft_streams (stream, next_number) VALUES (?, ?) "
            "ON CONFLICT (stream) DO UPDATE SET next_number = excluded.next_number",
            [stream, number],
        )

    def _release(self, stream: str, number: int, events: list[Applied]) -> bool:
        row = self._db.execute(
            "SELECT operations FROM raft_held WHERE stream = ? AND number = ?",
            [stream, number],
        ).fetchone()
        if row is None:
            return False

        self._db.execute(
            "DELETE FROM raft_held WHERE stream = ? AND number = ?", [stream, number]
        )
        self._apply_operations(stream, _unpack(row[0]), events)
        return True

    def _next_number(self, stream: str) -> int:
        row = self._db.execute(
            "SELECT next_number FROM raft_streams WHERE stream = ?", [stream]
        ).fetchone()
        return int(row[0]) if row else 1

    def _apply_operations(
        self, stream: str, operations: object, events: list[Applied]
    ) -> None:
        for operation in _operations(operations):
            try:
                event = self._apply_operation(operation)
            except MalformedOperation as exc:
                # Only a node with the secret can propose; a bad operation is our
                # bug, and skipping it keeps every node equal.
                log.error(
                    "raft.operation_skipped",
                    extra={"stream": stream, "error": str(exc)},
                )
                continue

            if event is not None:
                events.append(event)

    def _apply_operation(self, operation: tuple[Any, ...]) -> Applied | None:
        name = operation[0] if operation else None
        if name == "room":
            return self._save_room(*_shape(operation, 11))

        if name == "delete":
            return self._delete_room(*_shape(operation, 3))

        if name == "command":
            return self._add_command(*_shape(operation, 6))

        if name == "bulk":
            return self._add_bulk(*_shape(operation, 7))

        if name == "part":
            return self._add_part(*_shape(operation, 9))

        if name == "fork":
            return self._fork_room(*_shape(operation, 6))

        if name == "rewind":
            return self._rewind_room(*_shape(operation, 4))

        if name in ACCESS_OPERATIONS:
            return self._apply_access(operation)

        raise MalformedOperation(f"unknown operation {name!r}")

    def _save_room(
        self,
        _name: str,
        origin: str,
        room: str,
        blender_version: str,
        mixer_version: str,
        ignore_version_check: bool,
        generic_protocol: bool,
        keep_open: bool,
        joinable: bool,
        custom_json: str,
        created_at: float,
    ) -> RoomSaved | None:
        _require(isinstance(room, str) and room, "a room name")
        _require(isinstance(custom_json, str), "custom attributes as JSON")
        try:
            custom = json.loads(custom_json)
        except ValueError as exc:
            raise MalformedOperation(f"custom attributes: {exc}") from None

        _require(isinstance(custom, dict), "custom attributes as an object")
        row = self._db.execute(
            "SELECT id, created_at FROM rooms WHERE name = ?", [room]
        ).fetchone()
        if row is not None and (row[1] or 0.0) != _time(created_at):
            # A room keeps its creation time for life: this is another room of
            # that name, created on a node before it applied the one committed
            # first (an operator's fork), which must not take the row over.
            log.warning("raft.room_creation_skipped", extra={"room": room})
            return None

        room_id = int(row[0]) if row is not None else self._new_room_id()
        record = RoomRecord(
            id=room_id,
            name=room,
            blender_version=str(blender_version),
            mixer_version=str(mixer_version),
            ignore_version_check=bool(ignore_version_check),
            generic_protocol=bool(generic_protocol),
            keep_open=bool(keep_open),
            joinable=bool(joinable),
            custom=custom,
            created_at=_time(created_at),
        )
        save_room(self._db, record)
        return RoomSaved(str(origin), record)

    def _delete_room(self, _name: str, origin: str, room: str) -> RoomDeleted | None:
        room_id = self._room_id(room)
        if room_id is None:
            return None

        delete_room(self._db, room_id)
        self._last_commands.pop(room_id, None)
        return RoomDeleted(str(origin), room)

    def _fork_room(
        self,
        _name: str,
        origin: str,
        source: str,
        count: int,
        fork: str,
        created_at: float,
    ) -> RoomForked | OperationSkipped:
        _require(isinstance(fork, str) and fork, "a room name")
        _require(isinstance(count, int) and count >= 0, "a command count")
        source_id = self._room_id(source)
        prefix = self._prefix(source_id, count) if source_id is not None else None
        if source_id is None or prefix is None:
            reason = f"room {source!r} no longer has {count} commands"
            return OperationSkipped(str(origin), "fork", fork, reason)

        if self._room_id(fork) is not None:
            reason = f"a room named {fork!r} was created meanwhile"
            return OperationSkipped(str(origin), "fork", fork, reason)

        # Like a fork on a single relay: the source's versions and attributes.
        (source_record,) = [r for r in load_rooms(self._db) if r.id == source_id]
        record = replace(
            source_record,
            id=self._new_room_id(),
            name=fork,
            joinable=True,
            created_at=_time(created_at),
        )
        save_room(self._db, record)
        byte_size, last = prefix
        if last is not None:
            first_seq = self._next_seq
            copy_history(self._db, source_id, last.seq, record.id, first_seq)
            self._next_seq += count
            last = replace(last, seq=first_seq + count - 1)

        return RoomForked(str(origin), record, str(source), count, byte_size, last)

    def _rewind_room(
        self, _name: str, origin: str, room: str, count: int
    ) -> RoomRewound | OperationSkipped:
        _require(isinstance(count, int) and count >= 0, "a command count")
        room_id = self._room_id(room)
        if room_id is None:
            # Said, not dropped: the operator who asked is waiting for the answer.
            reason = f"no room named {room!r} any more (it was deleted meanwhile)"
            return OperationSkipped(str(origin), "rewind", room, reason)

        prefix = self._prefix(room_id, count)
        if prefix is None:
            reason = f"room {room!r} no longer has {count} commands"
            return OperationSkipped(str(origin), "rewind", room, reason)

        byte_size, last = prefix
        truncate_history(self._db, room_id, last.seq if last is not None else 0)
        self._last_commands.pop(room_id, None)
        return RoomRewound(str(origin), room, count, byte_size, last)

    def _prefix(
        self, room_id: int, count: int
    ) -> tuple[int, LastCommand | None] | None:
        """The wire bytes and newest command of a room's first ``count``
        commands; None when it has fewer."""
        if count == 0:
            return 0, None

        _total, records = read_page(self._db, room_id, count - 1, 1, HEAD_BYTES)
        if not records:
            return None

        newest = records[0]
        last = LastCommand(
            newest.seq, newest.kind, merge_key(newest.kind, newest.head), newest.size
        )
        return prefix_size(self._db, room_id, newest.seq), last

    def _add_command(
        self,
        _name: str,
        origin: str,
        client_id: str,
        room: str,
        kind: int,
        wire: bytes,
    ) -> CommandCommitted | None:
        _require(isinstance(wire, bytes) and len(wire) >= HEADER.size, "frame bytes")
        _require(isinstance(kind, int), "a message type")
        room_id = self._room_id(room)
        if room_id is None:
            # Deleted while the command was in flight: nobody can receive it.
            return None

        seq = 0
        if is_stored(kind):
            seq = self._store_command(room_id, kind, wire, str(client_id))

        return CommandCommitted(
            str(origin), str(client_id), room, room_id, seq, kind, wire
        )

    def _add_bulk(
        self,
        _name: str,
        origin: str,
        client_id: str,
        room: str,
        kind: int,
        digest: bytes,
        size: int,
    ) -> CommandCommitted | None:
        """A command whose bytes travelled beside the log (store.bulk).

        Raises:
            BulkUnavailable: no node could give the bytes; nothing is applied,
                and pysyncobj applies the entry again at its next tick.
        """
        _require(isinstance(digest, bytes) and len(digest) == 32, "a SHA-256 digest")
        _require(isinstance(size, int), "a size")
        _require(self._obtain_bulk is not None, "a node that takes bulk bytes")
        if self._room_id(room) is None:
            return None  # deleted while the command was in flight

        assert self._obtain_bulk is not None
        wire = self._obtain_bulk(digest)
        _require(len(wire) == size, f"{size} bytes")
        return self._add_command("command", origin, client_id, room, kind, wire)

    # Kept for entries that nodes of an earlier version proposed, which cut a large
    # command into parts in the log itself.
    def _add_part(
        self,
        _name: str,
        origin: str,
        client_id: str,
        room: str,
        kind: int,
        command_key: str,
        part: int,
        count: int,
        data: bytes,
    ) -> CommandCommitted | None:
        _require(isinstance(command_key, str), "a command key")
        _require(isinstance(data, bytes), "part bytes")
        _require(isinstance(count, int) and 0 <= part < count, "a part number")
        # Known limit: the parts of a command whose other parts were abandoned
        # stay in raft_parts for good.
        db = self._db
        db.execute(
            "INSERT OR REPLACE INTO raft_parts (command_key, part, data) "
            "VALUES (?, ?, ?)",
            [command_key, part, data],
        )
        (received,) = db.execute(
            "SELECT count(*) FROM raft_parts WHERE command_key = ?", [command_key]
        ).fetchone()
        if received < count:
            return None

        # Parts may be committed out of order (a retried one comes late), so the
        # command is assembled once all of them are in, in part order.
        parts = db.execute(
            "SELECT data FROM raft_parts WHERE command_key = ? ORDER BY part",
            [command_key],
        ).fetchall()
        db.execute("DELETE FROM raft_parts WHERE command_key = ?", [command_key])
        wire = b"".join(row[0] for row in parts)
        return self._add_command("command", origin, client_id, room, kind, wire)

    def _apply_access(self, operation: tuple[Any, ...]) -> Applied:
        """Write a lease, ban or audit row exactly as the proposer made it: its
        times come from the proposer, so every node writes the same row."""
        name = operation[0]
        _shape(operation, ACCESS_OPERATIONS[name])
        origin = str(operation[1])
        fields = operation[2:]
        _require(all(isinstance(f, (str, int, float)) for f in fields), "plain fields")
        if name == "lease":
            address, login, granted_at, expires_at, via = fields
            lease = LeaseRecord(
                str(address), str(login), _time(granted_at), _time(expires_at), str(via)
            )
            save_lease(self._db, lease)
            return LeaseGranted(origin, lease)

        if name == "unlease":
            delete_lease(self._db, str(fields[0]))
            return LeaseRevoked(origin, str(fields[0]))

        if name == "ban":
            subject, until, reason, operator = fields
            ban = BanRecord(str(subject), _time(until), str(reason), str(operator))
            save_ban(self._db, ban)
            return BanSet(origin, ban)

        if name == "unban":
            delete_ban(self._db, str(fields[0]))
            return BanLifted(origin, str(fields[0]))

        at, operator, action, target, detail = fields
        entry = AuditRecord(
            _time(at), str(operator), str(action), str(target), str(detail)
        )
        save_audit(self._db, entry)
        return AuditAppended(origin, entry)

    def _store_command(self, room_id: int, kind: int, wire: bytes, sender: str) -> int:
        """Append to a room's history with the merge rule (as relay.history).

        Known limit: a clustered command is stored without the time it arrived,
        since every node must write the same row and the entry carries no clock.
        """
        key = merge_key(kind, wire)
        last = self._last_command(room_id)
        if key is not None and last is not None and last[1] == kind and last[2] == key:
            delete_commands(self._db, [last[0]])

        seq = self._next_seq
        self._next_seq += 1
        insert_commands(self._db, [(seq, room_id, kind, len(wire), wire, sender, None)])
        self._last_commands[room_id] = (seq, kind, key)
        return seq

    def _last_command(self, room_id: int) -> tuple[int, int, bytes | None] | None:
        cached = self._last_commands.get(room_id)
        if cached is not None:
            return cached

        row = newest_command(self._db, room_id)
        if row is None:
            return None

        seq, kind, wire = row
        self._last_commands[room_id] = (seq, kind, merge_key(kind, wire))
        return self._last_commands[room_id]

    def _room_id(self, name: str) -> int | None:
        row = self._db.execute("SELECT id FROM rooms WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else None

    def _new_room_id(self) -> int:
        (room_id,) = self._db.execute(
            "SELECT coalesce(max(id), 0) + 1 FROM rooms"
        ).fetchone()
        return int(room_id)


def _abandoned_number(operations: object) -> int | None:
    match operations:
        case [("abandon", int(number))]:
            return number
        case _:
            log.error("raft.abandon_malformed")
            return None


def _pack(operations: Any) -> bytes:
    # marshal, not pickle: held operations are plain values, and reading them
    # back can never run code.
    try:
        return marshal.dumps(operations)
    except ValueError:
        log.error("raft.entry_malformed", extra={"reason": "not plain values"})
        return marshal.dumps([])


def _unpack(data: bytes) -> object:
    return marshal.loads(data)


def _operations(operations: object) -> list[tuple[Any, ...]]:
    if not isinstance(operations, (list, tuple)):
        log.error("raft.entry_malformed", extra={"type": type(operations).__name__})
        return []

    return [op for op in operations if isinstance(op, tuple)]


def _shape(operation: tuple[Any, ...], length: int) -> tuple[Any, ...]:
    if len(operation) != length:
        raise MalformedOperation(
            f"{operation[0]!r} takes {length} fields, not {len(operation)}"
        )

    return operation


def _time(value: object) -> float:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool), "a time")
    return float(value)  # type: ignore[arg-type]


def _require(condition: object, what: str) -> None:
    if not condition:
        raise MalformedOperation(f"expected {what}")
