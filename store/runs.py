"""Runs: consecutive small commands stored as one row.

A client's read often brings hundreds of small commands for one room at once.
Written one row each, SQLite spends more on each row's B-tree entries than on
its bytes, on a thread that shares the relay's cores. So the journal stores a
run of such commands as one row: their wire forms back to back (each frame's
header gives its length, so the run splits again without an index) and
``count``, how many it holds.

A run's commands belong to one room, came from one sender with one receive
time, and have consecutive sequence numbers: the row's ``seq`` is the first
one's, the last is ``seq + count - 1``, and the row's ``kind`` is the first
command's type. A row with ``count`` 1 is a plain command, as every row was
before runs.
"""

import mmap
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

from relay.protocol import HEADER
from store.errors import CorruptRun

# A run is cut before it would pass this many bytes: rewriting one (a merge
# or a cut inside it) stays cheap, and a larger command is stored alone. A
# whole read of the relay's receive chunk (256 KiB) fits: measured with
# benchmarks/journal_bench.py, 4 KiB commands cost the writer 20-30 % less CPU
# per MB than in 64 KiB runs (fewer rows, index entries and overflow chains).
RUN_BYTES = 256 * 1024

# A command's bytes as the relay holds them; SQLite stores any of these as a BLOB.
Blob = bytes | bytearray | memoryview | mmap.mmap

# A command as the journal appends it: (seq, room_id, kind, size, wire, sender,
# at); a bare tuple, since there is one per room command.
CommandRow = tuple[int, int, int, int, Blob, str | None, float | None]

# Commands the relay appends together, as the journal queues them: (seq,
# room_id, kind, size, wires, sender, at), numbered consecutively from seq, of
# one room, sender and receive time; kind is the first one's type and size the
# sum of their wire lengths. One per client read, not one per command.
CommandBlock = tuple[int, int, int, int, Sequence[Blob], str | None, float | None]

# A stored row: (seq, room_id, kind, size, wire, sender, at, count).
RunRow = tuple[int, int, int, int, Blob, str | None, float | None, int]

# What a run's row takes from its first command: (seq, room_id, kind, sender, at).
_RunStart = tuple[int, int, int, str | None, float | None]


class RunBuilder:
    """Gathers appended commands, in order, into the rows that store them."""

    def __init__(self) -> None:
        self._rows: list[RunRow] = []
        self._first: _RunStart | None = None
        self._wires: list[Blob] = []
        self._bytes = 0
        self._next_seq = 0

    def __bool__(self) -> bool:
        return bool(self._rows) or self._first is not None

    def add(self, row: CommandRow) -> None:
        """Append a command: to the open run when it continues it, else as the
        start of a new one."""
        seq, room_id, kind, size, wire, sender, at = row
        if self._continues(seq, room_id, sender, at, size):
            self._wires.append(wire)
            self._bytes += size
            self._next_seq += 1
            return

        self._start((seq, room_id, kind, sender, at), [wire], size)

    def add_block(self, block: CommandBlock) -> None:
        """Append a block of commands: to the open run when all of them continue
        it, else in runs of their own, cut where a run would pass RUN_BYTES.

        The block's list is never changed (a batch that failed is written again).
        """
        seq, room_id, kind, size, wires, sender, at = block
        if self._continues(seq, room_id, sender, at, size):
            self._wires += wires
            self._bytes += size
            self._next_seq += len(wires)
            return

        if size <= RUN_BYTES or len(wires) == 1:
            self._start((seq, room_id, kind, sender, at), list(wires), size)
            return

        # Where each command ends in the block, found in C rather than by a
        # Python step per command: a run ends at the last command that fits.
        ends = list(accumulate(map(len, wires)))
        start = 0
        while start < len(wires):
            base = ends[start - 1] if start else 0
            stop = max(bisect_right(ends, base + RUN_BYTES, lo=start), start + 1)
            head = (seq + start, room_id, frame_kind(wires[start]), sender, at)
            self._start(head, list(wires[start:stop]), ends[stop - 1] - base)
            start = stop

    def _continues(
        self, seq: int, room_id: int, sender: str | None, at: float | None, size: int
    ) -> bool:
        first = self._first
        return (
            first is not None
            and seq == self._next_seq
            and room_id == first[1]
            and sender == first[3]
            and at == first[4]
            and self._bytes + size <= RUN_BYTES
        )

    def _start(self, first: _RunStart, wires: list[Blob], size: int) -> None:
        self._close()
        self._first = first
        self._wires = wires
        self._bytes = size
        self._next_seq = first[0] + len(wires)

    def discard(self, seq: int) -> bool:
        """Drop the newest gathered command if it is ``seq`` (the merge rule
        replaced it before it was written); False when it is not."""
        first = self._first
        if first is None or self._next_seq - 1 != seq:
            return False

        wire = self._wires.pop()
        self._bytes -= len(wire)
        self._next_seq -= 1
        if not self._wires:
            self._first = None

        return True

    def take(self) -> list[RunRow]:
        """Return the rows gathered so far and start afresh."""
        self._close()
        rows, self._rows = self._rows, []
        return rows

    def _close(self) -> None:
        first = self._first
        if first is None:
            return

        wires = self._wires
        if len(wires) == 1:
            wire = wires[0]
        else:
            wire = b"".join(wires)

        seq, room_id, kind, sender, at = first
        self._rows.append(
            (seq, room_id, kind, self._bytes, wire, sender, at, len(wires))
        )
        self._first = None


def pack(rows: Iterable[CommandRow]) -> list[RunRow]:
    """Return the rows that store these commands, runs gathered."""
    builder = RunBuilder()
    for row in rows:
        builder.add(row)

    return builder.take()


def split_run(wire: Blob, count: int) -> list[memoryview]:
    """Return a run's frames, as views into ``wire``.

    Raises:
        CorruptRun: the headers do not cut ``wire`` into exactly ``count`` frames.
    """
    view = memoryview(wire)
    if count == 1:
        return [view]

    frames: list[memoryview] = []
    unpack = HEADER.unpack_from
    header_size = HEADER.size
    end = len(view)
    offset = 0
    for _ in range(count):
        if end - offset < header_size:
            break

        frame_end = offset + header_size + unpack(view, offset)[0]
        frames.append(view[offset:frame_end])
        offset = frame_end

    if len(frames) != count or offset != end:
        raise CorruptRun(
            f"a stored run of {count} commands ({end} bytes) does not split into "
            f"{count} frames; the database is damaged"
        )

    return frames


def frame_kind(frame: Blob) -> int:
    """Return a frame's message type, from its header."""
    return int(HEADER.unpack_from(frame)[2])
