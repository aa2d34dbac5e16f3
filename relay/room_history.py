"""A room's history as the operator reads it: pages, one command, a prefix.

With a store, histories are read from the database after the store has written
everything queued, so that positions count exactly the commands the relay holds;
without one, from memory. Reading awaits, so a caller that acts on a prefix
checks afterwards that it lost no entry meanwhile (:func:`check_unchanged`).
"""

from dataclasses import dataclass
from itertools import islice

from relay.control import CommandSummary, OperationRefused
from relay.history import HistoryEntry, LastCommand, merge_key
from relay.messages import type_name
from relay.protocol import HEADER, Wire
from relay.room import Room
from store.repository import CommandRecord
from store.store import Store

# How long a read waits for the store to write what is queued.
STORE_WAIT_SECONDS = 10.0

# Bytes read of a command to find its leading path and to show its head.
INSPECT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Prefix:
    """The first ``count`` commands of a history, as measured."""

    count: int
    byte_size: int
    last: LastCommand | None
    """What the merge rule needs of the last of them; None when count is 0."""
    removals: int
    """The history's removals when measured."""
    cuts: int
    """The history's cuts when measured."""
    is_whole: bool
    """Whether it was the whole history when measured: only then can a merge
    (which replaces the newest entry) remove one of its commands."""


async def read_page(
    room: Room, store: Store | None, offset: int, limit: int
) -> tuple[int, list[CommandRecord]]:
    """Return the history's length and its commands ``offset`` (from 0) to
    ``offset + limit - 1``, each with up to INSPECT_BYTES of its head.

    Raises:
        OperationRefused: the store did not write its queue in time.
    """
    history = room.history
    if store is None:
        entries = list(islice(history.recent, offset, offset + limit))
        return len(history), [_record_of(entry) for entry in entries]

    await _wait_for_store(room, store)
    return await store.read_page(room.store_id, offset, limit, INSPECT_BYTES)


async def read_prefix(room: Room, store: Store | None, count: int) -> Prefix:
    """Measure the first ``count`` commands of the history (0 <= count <= len).

    Raises:
        OperationRefused: the store did not write its queue in time.
    """
    history = room.history
    removals, cuts, is_whole = history.removals, history.cuts, count == len(history)
    if count == 0:
        return Prefix(0, 0, None, removals, cuts, is_whole)

    if store is None:
        entries = list(islice(history.recent, count))
        size = sum(len(entry.wire) for entry in entries)
        last = _last_of(entries[-1].seq, entries[-1].wire, len(entries[-1].wire))
        return Prefix(count, size, last, removals, cuts, is_whole)

    await _wait_for_store(room, store)
    _total, records = await store.read_page(room.store_id, count - 1, 1, INSPECT_BYTES)
    if not records:
        raise OperationRefused(f"room {room.name!r} changed meanwhile; try again")

    record = records[0]
    size = await store.prefix_size(room.store_id, record.seq)
    last = _last_of(record.seq, record.head, record.size)
    return Prefix(count, size, last, removals, cuts, is_whole)


def summary_of(index: int, record: CommandRecord) -> CommandSummary:
    """The operator's line for the command at ``index`` (from 1)."""
    return CommandSummary(
        index=index,
        seq=record.seq,
        type=record.kind,
        type_name=type_name(record.kind),
        size=record.size,
        sender=record.sender,
        at=record.at,
    )


def leading_path(record: CommandRecord) -> str | None:
    """The object path a command starts with, for the types that have one (the
    mergeable ones, PROTOCOL.md section 5); None otherwise."""
    # Known limit: a path longer than INSPECT_BYTES is not shown.
    raw = merge_key(record.kind, record.head)
    return raw.decode("utf-8", errors="replace") if raw is not None else None


def check_unchanged(current: Room, measured: Room, prefix: Prefix, action: str) -> None:
    """Refuse to act on a prefix its room changed under while it was measured:
    the room was replaced by another of the same name, was rewound, or a merge
    replaced the prefix's last command (possible only when the prefix was the
    whole history; merges past it leave it intact).

    Args:
        current: the room of that name now.
        measured: the room the prefix was measured on.
        prefix: what was measured.
        action: the operation, for the message.

    Raises:
        OperationRefused: the history lost an entry since it was measured.
    """
    history = current.history
    if current is not measured or history.cuts != prefix.cuts:
        raise OperationRefused(
            f"room {current.name!r} changed while preparing the {action}; try again"
        )

    if prefix.is_whole and history.removals != prefix.removals:
        raise OperationRefused(
            f"the newest command of room {current.name!r} was replaced while "
            f"preparing the {action}; try again, or {action} at an earlier command"
        )


async def _wait_for_store(room: Room, store: Store) -> None:
    # Known limit: history reads wait for the store to write everything queued, so
    # while the store is degraded the operator's history views and actions on
    # stored rooms are refused.
    if not await store.wait_written(STORE_WAIT_SECONDS):
        raise OperationRefused(
            f"the store has not written room {room.name!r} within "
            f"{STORE_WAIT_SECONDS:g} s (it is behind or degraded); try again later"
        )


def _record_of(entry: HistoryEntry) -> CommandRecord:
    wire = entry.wire
    kind = HEADER.unpack_from(wire)[2]
    return CommandRecord(
        entry.seq, kind, len(wire), entry.sender, entry.at, bytes(wire[:INSPECT_BYTES])
    )


def _last_of(seq: int, head: Wire, size: int) -> LastCommand:
    """What the merge rule needs of a command, from its head and full size."""
    # Known limit: a command whose path is longer than INSPECT_BYTES, left newest
    # by a rewind or a fork, is not merged with the next command of its path.
    kind = HEADER.unpack_from(head)[2]
    return LastCommand(seq, kind, merge_key(kind, head), size)
