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
from collections.abc import Iterable

from relay.protocol import HEADER
from store.errors import CorruptRun

# A run is cut before it would pass this many bytes: rewriting one (a merge
# or a cut inside it) stays cheap, and a larger command is stored alone.
RUN_BYTES = 64 * 1024

# A command's bytes as the relay holds them; SQLite stores any of these as a BLOB.
Blob = bytes | bytearray | memoryview | mmap.mmap

# A command as the journal appends it: (seq, room_id, kind, size, wire, sender,
# at); a bare tuple, since there is one per room command.
CommandRow = tuple[int, int, int, int, Blob, str | None, float | None]

# A stored row: (seq, room_id, kind, size, wire, sender, at, count).
RunRow = tuple[int, int, int, int, Blob, str | None, float | None, int]


class RunBuilder:
    """Gathers appended commands, in order, into the rows that store them."""

    def __init__(self) -> None:
        self._rows: list[RunRow] = []
        self._first: CommandRow | None = None
        self._wires: list[Blob] = []
        self._bytes = 0
        self._next_seq = 0

    def __bool__(self) -> bool:
        return bool(self._rows) or self._first is not None

    def add(self, row: CommandRow) -> None:
        """Append a command: to the open run when it continues it, else as the
        start of a new one."""
        first = self._first
        size = row[3]
        if (
            first is not None
            and row[0] == self._next_seq
            and row[1] == first[1]
            and row[5] == first[5]
            and row[6] == first[6]
            and self._bytes + size <= RUN_BYTES
        ):
            self._wires.append(row[4])
            self._bytes += size
            self._next_seq += 1
            return

        self._close()
        self._first = row
        self._wires = [row[4]]
        self._bytes = size
        self._next_seq = row[0] + 1

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

        seq, room_id, kind, _size, _wire, sender, at = first
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


def frame_kind(frame: memoryview | bytes) -> int:
    """Return a frame's message type, from its header."""
    return int(HEADER.unpack_from(frame)[2])
