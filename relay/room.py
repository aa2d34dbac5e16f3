"""Rooms and their command histories, as the relay keeps them in memory."""

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.messages import is_mergeable
from relay.protocol import Frame, Wire, leading_string

if TYPE_CHECKING:
    from relay.client import Client

# Attributes the relay owns; clients may not set them as custom attributes.
RESERVED_ROOM_ATTRIBUTES = frozenset(
    {
        "keep_open",
        "blender_version",
        "mixer_version",
        "ignore_version_check",
        "generic_protocol",
        "command_count",
        "byte_size",
        "joinable",
    }
)


@dataclass(slots=True)
class HistoryEntry:
    """One stored room command and its place in the room's history."""

    seq: int
    kind: int
    wire: Wire
    merge_key: bytes | None


class History:
    """A room's stored commands, in order, with the merge rule applied.

    Every entry gets a sequence number that only grows, so a reader that remembers
    the last number it sent never misses an entry and never sees one twice, even
    when a merge removes the entry before it.
    """

    def __init__(self) -> None:
        self._entries: list[HistoryEntry] = []
        self._last_seq = 0
        self._byte_size = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def byte_size(self) -> int:
        """Wire bytes of every stored command, headers included."""
        return self._byte_size

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry (0 for an empty history)."""
        return self._last_seq

    def append(self, frame: Frame) -> None:
        """Store a room command, replacing the last entry when the merge rule says
        so: a type in 201-998 whose leading string equals the last entry's."""
        merge_key = leading_string(frame.payload) if is_mergeable(frame.kind) else None
        entries = self._entries
        if merge_key is not None and entries:
            last = entries[-1]
            if last.kind == frame.kind and last.merge_key == merge_key:
                entries.pop()
                self._byte_size -= len(last.wire)

        self._last_seq += 1
        entries.append(HistoryEntry(self._last_seq, frame.kind, frame.wire, merge_key))
        self._byte_size += len(frame.wire)

    def entries_after(
        self, seq: int, until_seq: int, max_bytes: int
    ) -> list[HistoryEntry]:
        """Return entries with ``seq < entry.seq <= until_seq``, oldest first, about
        ``max_bytes`` of them (always at least one when one is left)."""
        entries = self._entries
        start = bisect_right(entries, seq, key=lambda entry: entry.seq)
        batch: list[HistoryEntry] = []
        batch_bytes = 0
        for entry in entries[start:]:
            if entry.seq > until_seq or (batch and batch_bytes >= max_bytes):
                break

            batch.append(entry)
            batch_bytes += len(entry.wire)

        return batch


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
        entries = self._history.entries_after(self._cursor, self._until, max_bytes)
        if entries:
            self._cursor = entries[-1].seq
            return [entry.wire for entry in entries]

        confirmation, self._confirmation = self._confirmation, None
        return [confirmation] if confirmation is not None else []

    def finish(self) -> None:
        """Tell the room the joiner has received the whole history."""
        self._on_finish()


@dataclass(eq=False)
class Room:
    """A named room: its attributes, members and history."""

    name: str
    blender_version: str
    mixer_version: str
    ignore_version_check: bool
    generic_protocol: bool
    creator: "Client | None"
    keep_open: bool = False
    is_joinable: bool = False
    custom: dict[str, Any] = field(default_factory=dict)
    members: dict["Client", None] = field(default_factory=dict)
    joiners: set["Client"] = field(default_factory=set)
    history: History = field(default_factory=History)

    def attributes(self) -> dict[str, Any]:
        """All attributes, as LIST_ROOMS and the first ROOM_UPDATE report them."""
        return {
            "keep_open": self.keep_open,
            "blender_version": self.blender_version,
            "mixer_version": self.mixer_version,
            "ignore_version_check": self.ignore_version_check,
            "generic_protocol": self.generic_protocol,
            "command_count": len(self.history),
            "byte_size": self.history.byte_size,
            "joinable": self.is_joinable,
            **self.custom,
        }

    def statistics(self) -> dict[str, int]:
        """The attributes that change with every stored command."""
        return {"byte_size": self.history.byte_size, "command_count": len(self.history)}
