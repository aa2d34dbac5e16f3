"""A room's history: the stored room commands, in order, with the merge rule.

Every entry gets a sequence number that only grows (across rooms and restarts,
when a store is attached), so a reader that remembers the last number it sent
never misses an entry and never sees one twice, even when a merge removes the
entry before it.

With a store, memory holds only the entries the store has not yet written, plus
a few counters; older entries are read back from the store, in chunks, when a
joiner needs them. Without a store every entry stays in memory.
"""

import sys
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol, runtime_checkable

from relay.messages import is_mergeable
from relay.protocol import HEADER, Frame, Wire, leading_string


class StoredCommandLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def wire(self) -> bytes: ...


class CommandStore(Protocol):
    """What a history needs from the store (see :class:`store.store.Store`)."""

    @property
    def durable_seq(self) -> int:
        """Every command up to this sequence number is written."""
        ...

    def allocate_seq(self) -> int: ...

    def append(
        self,
        seq: int,
        room_id: int,
        kind: int,
        wire: Wire,
        sender: str | None,
        at: float | None,
    ) -> None: ...

    def remove(self, seq: int) -> None: ...

    def truncate_history(self, room_id: int, after_seq: int) -> None: ...

    async def read(
        self, room_id: int, after_seq: int, until_seq: int, max_bytes: int
    ) -> Sequence[StoredCommandLike]: ...


@runtime_checkable
class BlockStore(Protocol):
    """A store that takes a client read's commands in one call (the relay's own
    store; a clustered history's store is given each command by the applier)."""

    def append_block(
        self,
        seq: int,
        room_id: int,
        kind: int,
        size: int,
        wires: Sequence[Wire],
        sender: str | None,
        at: float | None,
    ) -> None: ...


@dataclass(slots=True)
class HistoryEntry:
    """One room command the store may not have written yet."""

    seq: int
    wire: Wire
    sender: str | None = None
    """The id of the client that sent it."""
    at: float | None = None
    """When the relay received it."""


@dataclass(slots=True)
class LastCommand:
    """What the merge rule needs of the newest command (not its bytes)."""

    seq: int
    kind: int
    merge_key: bytes | None
    size: int


def merge_key(kind: int, wire: Wire) -> bytes | None:
    """What the merge rule compares of a command: the leading string of a
    mergeable type's payload, None for other types (whose payload is not read)."""
    if not is_mergeable(kind):
        return None

    return leading_string(memoryview(wire)[HEADER.size :])


class History:
    """A room's stored commands.

    Args:
        sequence: hands out sequence numbers.
        store: where entries are written and read back from; None keeps them all
            in memory.
        room_id: the room's id in the store.
        command_count, byte_size, last: the state of a history loaded from the
            store at start-up.
    """

    def __init__(
        self,
        sequence: Callable[[], int],
        store: CommandStore | None = None,
        room_id: int = 0,
        command_count: int = 0,
        byte_size: int = 0,
        last: LastCommand | None = None,
    ) -> None:
        self._sequence = sequence
        self._store = store
        self._room_id = room_id
        self._recent: deque[HistoryEntry] = deque()
        self._count = command_count
        self._byte_size = byte_size
        self._last = last
        # Entries up to this number are only in the store.
        self._stored_until = last.seq if last is not None else 0
        self._removals = 0
        # The removals made while store reads were under way, as (removal number,
        # first seq removed, whether all after it went too: a rewind), kept until
        # no read that began before needs them.
        self._removed: deque[tuple[int, int, bool]] = deque()
        # The removal count when each store read under way began.
        self._reads: Counter[int] = Counter()
        self._cuts = 0
        # Checked once here, not per read: isinstance on a protocol is slow.
        self._append_block = (
            store.append_block if isinstance(store, BlockStore) else None
        )

    def __len__(self) -> int:
        return self._count

    @property
    def byte_size(self) -> int:
        """Wire bytes of every stored command, headers included."""
        return self._byte_size

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry (0 for an empty history)."""
        return self._last.seq if self._last is not None else 0

    @property
    def sequence(self) -> Callable[[], int]:
        """What hands out this history's sequence numbers (shared by the relay)."""
        return self._sequence

    @property
    def last(self) -> LastCommand | None:
        """What the merge rule knows of the newest entry."""
        return self._last

    @property
    def removals(self) -> int:
        """Entries removed so far (merges and cuts): a reader that found a
        position while awaiting checks that none was removed meanwhile."""
        return self._removals

    @property
    def cuts(self) -> int:
        """Rewinds so far. Unlike a merge, which only ever replaces the newest
        entry, a cut can remove any entry."""
        return self._cuts

    @property
    def recent(self) -> Sequence[HistoryEntry]:
        """The entries held in memory, oldest first: every entry without a store,
        only those it has not written with one."""
        return self._recent

    @property
    def has_unwritten(self) -> bool:
        """Tell whether memory holds commands the store has not confirmed."""
        return self._store is not None and bool(self._recent)

    @property
    def memory_bytes(self) -> int:
        """Bytes of commands held in memory (those the store has not written)."""
        return sum(len(entry.wire) for entry in self._recent)

    def attach(self, room_id: int) -> None:
        """Set the room's id in the store (a clustered room learns it on commit)."""
        self._room_id = room_id

    def append(
        self,
        frame: Frame,
        sender: str | None = None,
        at: float | None = None,
        seq: int | None = None,
    ) -> None:
        """Store a room command, replacing the newest entry when the merge rule
        says so: a type in 201-998 whose leading string equals the newest's.

        Args:
            frame: the command.
            sender: the id of the client that sent it.
            at: when the relay received it.
            seq: its number, when the store numbered it already (clustered).
        """
        kind = frame.kind
        wire = frame.wire
        key = merge_key(kind, wire)
        last = self._last
        if (
            key is not None
            and last is not None
            and last.kind == kind
            and last.merge_key == key
        ):
            self._remove_newest(last)

        self._push(
            seq if seq is not None else self._sequence(),
            kind,
            key,
            wire,
            sender,
            at,
        )

    def extend(
        self, frames: Sequence[Frame], sender: str | None, at: float | None
    ) -> None:
        """Store the room commands of one client read, in order, as append()
        one by one would; unless one of them is mergeable, at once: one entry
        each, but one store call, one count update and one newest command.

        Args:
            frames: the commands, at least one.
            sender: the id of the client that sent them.
            at: when the relay received them.
        """
        kinds = [frame.kind for frame in frames]
        append_block = self._append_block
        if any(map(is_mergeable, kinds)) or (
            self._store is not None and append_block is None
        ):
            # Known limit: a read that holds a mergeable command is stored one
            # command at a time, at the cost per command of append().
            for frame in frames:
                self.append(frame, sender, at)

            return

        # Numbers handed out back to back are consecutive: the sequence is a
        # counter, and nothing else runs in between.
        sequence = self._sequence
        seqs = [sequence() for _ in kinds]
        wires = [frame.wire for frame in frames]
        size = sum(map(len, wires))
        self._recent.extend(map(HistoryEntry, seqs, wires, repeat(sender), repeat(at)))
        self._last = LastCommand(seqs[-1], kinds[-1], None, len(wires[-1]))
        self._count += len(wires)
        self._byte_size += size
        if append_block is not None:
            append_block(seqs[0], self._room_id, kinds[0], size, wires, sender, at)

    def copy_entries(self, entries: Iterable[HistoryEntry]) -> None:
        """Append copies of another history's entries, unmerged, with their
        sender and time (a fork of a room without a store)."""
        for entry in entries:
            wire = entry.wire
            kind = HEADER.unpack_from(wire)[2]
            key = merge_key(kind, wire)
            self._push(self._sequence(), kind, key, wire, entry.sender, entry.at)

    def _push(
        self,
        seq: int,
        kind: int,
        key: bytes | None,
        wire: Wire,
        sender: str | None,
        at: float | None,
    ) -> None:
        """Make a command the newest entry, in memory and in the store."""
        self._recent.append(HistoryEntry(seq, wire, sender, at))
        self._last = LastCommand(seq, kind, key, len(wire))
        self._count += 1
        self._byte_size += len(wire)
        if self._store is not None:
            # Written commands leave memory through forget_written(), which the
            # server calls as the store makes progress, not once per command.
            self._store.append(seq, self._room_id, kind, wire, sender, at)

    def cut(self, last: LastCommand | None, count: int, byte_size: int) -> None:
        """Keep only the entries up to ``last`` (an operator's rewind).

        Args:
            last: the entry that becomes the newest; None empties the history.
            count: how many entries that leaves.
            byte_size: their wire bytes.
        """
        until = last.seq if last is not None else 0
        recent = self._recent
        while recent and recent[-1].seq > until:
            recent.pop()

        self._count = count
        self._byte_size = byte_size
        self._last = last
        self._stored_until = min(self._stored_until, until)
        self._removals += 1
        self._note_removal(until + 1, is_cut=True)
        self._cuts += 1
        if self._store is not None:
            self._store.truncate_history(self._room_id, until)

    async def read(
        self, after_seq: int, until_seq: int, max_bytes: int
    ) -> tuple[list[Wire], int]:
        """Read entries with ``after_seq < seq <= until_seq``, about ``max_bytes``.

        Returns:
            The frames, oldest first, and the sequence number to continue after;
            no frames and that number at ``until_seq`` mean the end.
        """
        if after_seq < self._stored_until and self._store is not None:
            end = min(until_seq, self._stored_until)
            began = self._removals
            self._reads[began] += 1
            try:
                stored = await self._store.read(
                    self._room_id, after_seq, end, max_bytes
                )
                if self._removals != began:
                    # Its view of SQLite may be older than a merge or a rewind.
                    stored = self._not_removed_since(began, stored)
            finally:
                self._end_read(began)

            if not stored:
                return [], end

            return [command.wire for command in stored], stored[-1].seq

        recent = self._recent
        start = bisect_right(recent, after_seq, key=lambda entry: entry.seq)
        frames: list[Wire] = []
        batch_bytes = 0
        cursor = after_seq
        for index in range(start, len(recent)):
            entry = recent[index]
            if entry.seq > until_seq or (frames and batch_bytes >= max_bytes):
                break

            frames.append(entry.wire)
            batch_bytes += len(entry.wire)
            cursor = entry.seq

        return frames, (cursor if frames else until_seq)

    def _note_removal(self, first: int, *, is_cut: bool) -> None:
        """Remember that entry ``first`` was removed, and every later one with
        ``is_cut``, for the store's reads under way (nothing is kept when none
        is)."""
        if self._reads:
            self._removed.append((self._removals, first, is_cut))

    def _end_read(self, began: int) -> None:
        """Forget a finished read, and the removals only it still needed."""
        reads = self._reads
        reads[began] -= 1
        if not reads[began]:
            del reads[began]

        oldest = min(reads, default=self._removals)
        removed = self._removed
        while removed and removed[0][0] <= oldest:
            removed.popleft()

    def _not_removed_since(
        self, began: int, stored: Sequence[StoredCommandLike]
    ) -> list[StoredCommandLike]:
        """``stored`` without the entries removed after the removal count was
        ``began``."""
        since = [
            (seq, is_cut) for number, seq, is_cut in self._removed if number > began
        ]
        merged = {seq for seq, is_cut in since if not is_cut}
        cut_from = min((seq for seq, is_cut in since if is_cut), default=sys.maxsize)
        return [
            command
            for command in stored
            if command.seq < cut_from and command.seq not in merged
        ]

    def _remove_newest(self, last: LastCommand) -> None:
        self._removals += 1
        self._note_removal(last.seq, is_cut=False)
        self._count -= 1
        self._byte_size -= last.size
        if self._recent and self._recent[-1].seq == last.seq:
            self._recent.pop()
        elif last.seq <= self._stored_until:
            # Written already, it stays in SQLite until the store has removed it:
            # readers stop short of it, then read on from memory.
            self._stored_until = last.seq - 1

        if self._store is not None:
            self._store.remove(last.seq)

    def forget_written(self) -> None:
        """Drop from memory the commands the store has written."""
        if self._store is None:
            return

        durable = self._store.durable_seq
        recent = self._recent
        while recent and recent[0].seq <= durable:
            self._stored_until = recent.popleft().seq


class HistoryReplay:
    """Streams a history to one joiner, up to the entry that was newest when the
    join began, then the frame that confirms the join.

    Commands stored after the join began reach the joiner live, queued behind this
    replay, so each command arrives exactly once and in history order. A merge
    that replaces an entry the replay has not reached yet leaves only the newer
    command, which the joiner then receives live.
    """

    def __init__(
        self, history: History, confirmation: bytes, on_finish: Callable[[], None]
    ) -> None:
        self._history = history
        self._cursor = 0
        self._until = history.last_seq
        self._confirmation: bytes | None = confirmation
        self._on_finish = on_finish

    async def next_batch(self, max_bytes: int) -> list[Wire]:
        """Return the next frames of the history, then the confirmation, then []."""
        while self._cursor < self._until:
            frames, self._cursor = await self._history.read(
                self._cursor, self._until, max_bytes
            )
            if frames:
                return frames

        confirmation, self._confirmation = self._confirmation, None
        return [confirmation] if confirmation is not None else []

    def finish(self) -> None:
        """Tell the room the joiner has received the whole history."""
        self._on_finish()
