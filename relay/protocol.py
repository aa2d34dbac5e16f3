"""The Mixer wire format, without any I/O: bytes in, frames out, and back.

Theory of operation. Every message is one frame::

    0               8          12     14
    +---------------+----------+------+--------------------+
    | payload size  | command  | type | payload            |
    | u64 LE        | id u32 LE| u16  | `payload size` B   |
    +---------------+----------+------+--------------------+

:class:`FrameDecoder` follows the stream. The caller asks it where the next bytes
go (:meth:`FrameDecoder.receive_buffer`), reads from its socket straight into that
buffer, then reports how many bytes arrived (:meth:`FrameDecoder.received`) and gets
the frames those bytes completed. Small frames gather in one reusable chunk; a frame
larger than the chunk gets a buffer of exactly its declared size, so a 500 MB image
is read once into place and never grown by concatenation. That buffer is an
anonymous memory map: the system commits its pages only as bytes arrive, so a header
that declares a huge frame and then stalls costs nothing. The declared size is
checked against the limit before anything is allocated.

A frame keeps its exact wire bytes (header included), since a relay forwards room
commands untouched: the same object goes to every receiver and into the history.

Payload values (strings, bools, JSON, raw text) are read by :class:`PayloadReader`
and written by the ``encode_*`` functions. Every string is validated: a length that
overruns the payload or bytes that are not UTF-8 raise :class:`MalformedPayload`.
"""

import json
import mmap
import struct
from dataclasses import dataclass
from typing import Any

from relay.errors import FrameTooLarge, MalformedPayload

HEADER = struct.Struct("<QIH")  # payload size, command id, message type
_U32 = struct.Struct("<I")

DEFAULT_CHUNK_SIZE = 256 * 1024

# A frame's bytes: small frames are bytes, large ones the memory map they were
# read into; all of them are read-only once the frame exists.
Wire = bytes | bytearray | mmap.mmap


# Not frozen: a frozen dataclass costs three times as much to build, per frame.
@dataclass(slots=True)
class Frame:
    """One message, holding its bytes exactly as they travel on the wire.

    Attributes:
        kind: the message type (any u16; see :mod:`relay.messages` for names).
        command_id: the sender's id, forwarded untouched.
        wire: header and payload; never mutated once the frame exists.
    """

    kind: int
    command_id: int
    wire: Wire

    @property
    def payload(self) -> memoryview:
        """The payload bytes, as a view into :attr:`wire` (no copy)."""
        return memoryview(self.wire)[HEADER.size :]

    @property
    def size(self) -> int:
        """The frame's size on the wire, header included."""
        return len(self.wire)


class FrameDecoder:
    """Turns a byte stream into frames, refusing any frame above a size limit.

    Args:
        max_payload: the largest payload size accepted, in bytes.
        chunk_size: the size of the reusable receive chunk; frames larger than it
            are read into a buffer of their own.
    """

    def __init__(self, max_payload: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._max_payload = max_payload
        self._chunk = bytearray(chunk_size)
        self._chunk_view = memoryview(self._chunk)
        self._start = 0
        self._end = 0
        self._large: mmap.mmap | None = None
        self._large_filled = 0

    @property
    def has_partial_frame(self) -> bool:
        """Tell whether some bytes of a frame arrived but not the whole frame."""
        return self._large is not None or self._end > self._start

    def receive_buffer(self) -> memoryview:
        """Return the writable buffer where the next bytes from the peer belong.

        It is never empty. While a large frame is being read it is exactly the
        remainder of that frame, so no byte of the next frame lands in it.
        """
        if self._large is not None:
            return memoryview(self._large)[self._large_filled :]

        if self._start > 0 and len(self._chunk) - self._end < HEADER.size * 64:
            pending = self._end - self._start
            self._chunk[:pending] = self._chunk_view[self._start : self._end]
            self._start = 0
            self._end = pending

        return self._chunk_view[self._end :]

    def received(self, nbytes: int) -> list[Frame]:
        """Account for ``nbytes`` written into :meth:`receive_buffer`.

        Returns:
            The frames completed by these bytes, in stream order.

        Raises:
            FrameTooLarge: a header declares a payload above the limit; the stream
                cannot be followed any further. The frames these bytes completed
                before that header come with it.
        """
        if self._large is not None:
            return self._grow_large(nbytes)

        self._end += nbytes
        return self._parse_chunk()

    def feed(self, data: bytes) -> list[Frame]:
        """Decode bytes that are already in memory (copies them in, for callers
        without a socket to read into)."""
        frames: list[Frame] = []
        source = memoryview(data)
        while source:
            target = self.receive_buffer()
            count = min(len(target), len(source))
            target[:count] = source[:count]
            source = source[count:]
            try:
                frames.extend(self.received(count))
            except FrameTooLarge as exc:
                exc.frames[:0] = frames
                raise

        return frames

    def _grow_large(self, nbytes: int) -> list[Frame]:
        assert self._large is not None
        self._large_filled += nbytes
        if self._large_filled < len(self._large):
            return []

        _size, command_id, kind = HEADER.unpack_from(self._large)
        frame = Frame(kind, command_id, self._large)
        self._large = None
        self._large_filled = 0
        return [frame]

    def _parse_chunk(self) -> list[Frame]:
        frames: list[Frame] = []
        view = self._chunk_view
        while self._end - self._start >= HEADER.size:
            size, command_id, kind = HEADER.unpack_from(self._chunk, self._start)
            if size > self._max_payload:
                raise FrameTooLarge(size, self._max_payload, frames)

            total = HEADER.size + size
            available = self._end - self._start
            if available >= total:
                wire = bytes(view[self._start : self._start + total])
                frames.append(Frame(kind, command_id, wire))
                self._start += total
            elif total > len(self._chunk):
                self._large = mmap.mmap(-1, total)
                self._large[:available] = view[self._start : self._end]
                self._large_filled = available
                self._start = self._end = 0
                break
            else:
                break

        if self._start == self._end:
            self._start = self._end = 0

        return frames


class PayloadReader:
    """Reads the values of one payload in order, validating each.

    Args:
        payload: the payload bytes (a view is fine; nothing is copied).
    """

    def __init__(self, payload: bytes | memoryview) -> None:
        self._data = memoryview(payload)
        self._offset = 0

    @property
    def at_end(self) -> bool:
        """Tell whether every byte of the payload has been read."""
        return self._offset >= len(self._data)

    def read_string(self) -> str:
        """Read a length-prefixed UTF-8 string.

        Raises:
            MalformedPayload: the string is missing, overruns the payload or is not
                UTF-8.
        """
        raw = self._read_sized()
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(f"string is not valid UTF-8: {exc.reason}") from exc

    def read_optional_string(self) -> str:
        """Read a string, or return "" when the payload has ended (old clients)."""
        return "" if self.at_end else self.read_string()

    def read_bool(self) -> bool:
        """Read a u32 bool (1 is true, anything else false).

        Raises:
            MalformedPayload: fewer than four bytes remain.
        """
        return self._read_u32("bool") == 1

    def read_optional_bool(self) -> bool:
        """Read a bool, or return False when the payload has ended (VRtist)."""
        return False if self.at_end else self.read_bool()

    def read_json_object(self) -> dict[str, Any]:
        """Read a string holding a JSON object.

        Raises:
            MalformedPayload: the string is malformed, or its text is not JSON, or
                the JSON is not an object.
        """
        text = self.read_string()
        return parse_json_object(text)

    def _read_u32(self, what: str) -> int:
        if len(self._data) - self._offset < _U32.size:
            raise MalformedPayload(f"payload ends before its {what}")

        (value,) = _U32.unpack_from(self._data, self._offset)
        self._offset += _U32.size
        return int(value)

    def _read_sized(self) -> memoryview:
        length = self._read_u32("string length")
        end = self._offset + length
        if end > len(self._data):
            remaining = len(self._data) - self._offset
            raise MalformedPayload(
                f"string declares {length} bytes but only {remaining} remain"
            )

        raw = self._data[self._offset : end]
        self._offset = end
        return raw


# Deeper values are refused: Python's JSON codec recurses once per level, and a
# value it could parse but not encode again would break every later reply that
# carries it (LIST_ROOMS, LIST_CLIENTS).
MAX_JSON_DEPTH = 64


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse JSON text that must hold an object, at most MAX_JSON_DEPTH deep.

    Raises:
        MalformedPayload: the text is not JSON, not an object, or nested too deep.
    """
    # Known limit: NaN and Infinity are taken, as Python's json (and so the
    # original broadcaster) takes them, and passed on in LIST_CLIENTS, LIST_ROOMS
    # and the updates, where a strict JSON parser refuses the whole answer.
    try:
        value = json.loads(text)
    except RecursionError:
        raise MalformedPayload(
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except ValueError as exc:
        raise MalformedPayload(f"invalid JSON: {exc}") from exc

    if not isinstance(value, dict):
        raise MalformedPayload(f"expected a JSON object, got {type(value).__name__}")

    if _nesting_exceeds(value, MAX_JSON_DEPTH):
        raise MalformedPayload(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")

    return value


def _nesting_exceeds(value: object, limit: int) -> bool:
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True

        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)

    return False


def decode_text(payload: bytes | memoryview) -> str:
    """Decode a raw-text payload (UTF-8 filling the whole payload, no prefix).

    Raises:
        MalformedPayload: the bytes are not UTF-8.
    """
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"text is not valid UTF-8: {exc.reason}") from exc


def leading_string(payload: bytes | memoryview) -> bytes | None:
    """Return the raw bytes of the string a payload starts with, or None.

    Room commands that carry an object path start with one; the history's merge
    rule compares these bytes without decoding them.
    """
    if len(payload) < _U32.size:
        return None

    (length,) = _U32.unpack_from(payload)
    end = _U32.size + length
    if end > len(payload):
        return None

    return bytes(payload[_U32.size : end])


def encode_string(text: str) -> bytes:
    """Encode a length-prefixed UTF-8 string."""
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def encode_bool(value: bool) -> bytes:
    """Encode a u32 bool."""
    return _U32.pack(1 if value else 0)


def encode_json(value: dict[str, Any]) -> bytes:
    """Encode a JSON object as a string, with Python's default separators (as the
    original broadcaster writes it)."""
    return encode_string(json.dumps(value))


def encode_frame(kind: int, payload: bytes = b"", command_id: int = 0) -> bytes:
    """Build a frame's wire bytes."""
    return HEADER.pack(len(payload), command_id, kind) + payload
