"""Room files: a saved room, as the Mixer add-on downloads and uploads it.

Layout of a room file:

* a u32 little-endian length J;
* J bytes of UTF-8 JSON: an object holding the room's attributes as LIST_ROOMS
  reports them (no ``name`` key: the room's name is the file's name), written
  with Python's default :func:`json.dumps` separators;
* the history's frames, back to back, exactly as on the wire (a 14-byte header,
  payload length u64 LE, command id u32 LE, type u16 LE, then the payload), up
  to the end of the file.

Files can hold gigabytes: everything here streams, and no function reads more
than one frame into memory at a time. Readers validate as they go and raise
:class:`RoomFileError`, never another exception type, naming the byte offset
and the frame index of the problem.
"""

import contextlib
import json
import os
import secrets
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from store.errors import StoreError

FRAME_HEADER = struct.Struct("<QIH")
"""Frame header: payload length, command id, message type."""

ATTRIBUTES_LENGTH = struct.Struct("<I")
"""The length that precedes the attributes' JSON text."""

LAST_CONTROL_TYPE = 100
"""Room commands are the message types strictly above this one."""

NEVER_STORED_TYPES: dict[int, str] = {
    1000: "CLIENT_ID_WRAPPER",
    205: "FRAME",
    139: "QUERY_ANIMATION_DATA",
}
"""Room commands that the relay forwards but never keeps in a history."""

MAX_ATTRIBUTES_BYTES = 16 * 1024 * 1024
"""Largest attributes JSON text accepted (real files hold a few hundred bytes)."""

MAX_ATTRIBUTES_DEPTH = 64
"""Deepest nesting accepted in the attributes (the relay's own JSON limit)."""

BOOL_ATTRIBUTES = ("keep_open", "ignore_version_check", "generic_protocol", "joinable")
STRING_ATTRIBUTES = ("blender_version", "mixer_version")
COUNT_ATTRIBUTES = ("command_count", "byte_size")

_TEMP_ATTEMPTS = 16
_TEMP_NAME_PREFIX_CHARS = 100


class RoomFileError(StoreError):
    """Raised when a room file cannot be read or written, or is not valid."""


@dataclass(frozen=True)
class RoomFileSummary:
    """What a full scan of a valid room file found.

    Attributes:
        attributes: The room attributes, as stored in the file.
        command_count: How many frames the history holds.
        byte_size: The history's wire size: the sum of 14 + payload length.
    """

    attributes: dict[str, Any]
    command_count: int
    byte_size: int


def scan_room_file(path: Path, max_frame_bytes: int) -> RoomFileSummary:
    """Validate a whole room file in one streaming pass, without keeping frames.

    Payloads are skipped, not read, so a scan costs one small read per frame.

    Args:
        path: The room file.
        max_frame_bytes: Largest payload accepted in one frame.

    Returns:
        The attributes and the history's counts.

    Raises:
        RoomFileError: The file cannot be read, is not a room file, or is
            truncated or inconsistent anywhere.
    """
    with _open_room_file(path) as (handle, size):
        reader = _RoomFileReader(path, handle, size, max_frame_bytes)
        for _ in reader.frames(read_payloads=False):
            pass

        return reader.finish()


def iter_room_file_frames(path: Path, max_frame_bytes: int) -> Iterator[bytes]:
    """Yield the history's frames, one at a time, header included.

    The file is validated as it is read, with the same checks as
    :func:`scan_room_file`; a problem raises at the point where it is found, and
    a count mismatch raises after the last frame. The file stays open until the
    iterator is exhausted or closed.

    Args:
        path: The room file.
        max_frame_bytes: Largest payload accepted in one frame.

    Yields:
        Each frame's wire bytes, in history order.

    Raises:
        RoomFileError: The file cannot be read, is not a room file, or is
            truncated or inconsistent.
    """
    with _open_room_file(path) as (handle, size):
        reader = _RoomFileReader(path, handle, size, max_frame_bytes)
        for frame in reader.frames(read_payloads=True):
            assert frame is not None
            yield frame

        reader.finish()


def encode_room_attributes(attributes: dict[str, Any]) -> bytes:
    """Encode room attributes as they start a room file: length, then JSON.

    Args:
        attributes: A JSON object's worth of room attributes (no ``name`` key).

    Returns:
        The u32 LE length followed by the UTF-8 JSON text.

    Raises:
        RoomFileError: The attributes are not a JSON-encodable object, a
            reserved attribute has the wrong type, or the text is too long.
    """
    if not isinstance(attributes, dict):
        raise RoomFileError(
            f"room attributes must be a dict, not {type(attributes).__name__}"
        )

    problem = _attributes_problem(attributes)
    if problem is not None:
        raise RoomFileError(f"room attributes: {problem}")

    try:
        text = json.dumps(attributes).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise RoomFileError(
            f"room attributes cannot be encoded as JSON: {exc}"
        ) from exc

    if len(text) > MAX_ATTRIBUTES_BYTES:
        raise RoomFileError(
            f"room attributes take {len(text)} bytes of JSON, above the "
            f"{MAX_ATTRIBUTES_BYTES} byte limit"
        )

    return ATTRIBUTES_LENGTH.pack(len(text)) + text


def write_room_file(
    path: Path, attributes: dict[str, Any], frames: Iterable[bytes]
) -> None:
    """Write a room file atomically: the target is replaced only when complete.

    The file is written to a temporary file in the same directory, synced, then
    renamed over the target. On any error, including one raised by ``frames``
    (which propagates unchanged), the target is left as it was and the
    temporary file is removed.

    Args:
        path: The room file to create or replace.
        attributes: The room attributes. If they carry ``command_count`` or
            ``byte_size``, the frames must match them.
        frames: Each history frame's wire bytes, header included, in order.

    Raises:
        RoomFileError: The attributes or a frame are invalid, the counts do not
            match, or the file cannot be written.
    """
    encoded = encode_room_attributes(attributes)
    failure = f"cannot write room file {path}"
    _check_replaceable(path, failure)
    with _os_errors(failure):
        fd, temp = _create_temp_file(path)

    try:
        out = os.fdopen(fd, "wb")
        try:
            with _os_errors(failure):
                out.write(encoded)

            command_count = 0
            byte_size = 0
            for index, frame in enumerate(frames):
                _check_frame_to_write(path, index, frame)
                with _os_errors(failure):
                    out.write(frame)

                command_count += 1
                byte_size += len(frame)

            problem = _counts_problem(attributes, command_count, byte_size)
            if problem is not None:
                raise RoomFileError(f"{path}: not written: {problem}")

            with _os_errors(failure):
                out.flush()
                os.fsync(out.fileno())
        finally:
            with _os_errors(failure):
                out.close()

        with _os_errors(failure):
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)

        raise

    with _os_errors(f"wrote {path} but cannot sync its directory"):
        _fsync_directory(path.parent)


class _RoomFileReader:
    """Reads one open room file front to back, validating everything."""

    def __init__(
        self, path: Path, handle: BinaryIO, size: int, max_frame_bytes: int
    ) -> None:
        self._path = path
        self._handle = handle
        self._size = size
        self._max_frame_bytes = max_frame_bytes
        self._command_count = 0
        self._byte_size = 0
        self._attributes = self._read_attributes()

    def frames(self, *, read_payloads: bool) -> Iterator[bytes | None]:
        """Yield each frame's wire bytes, or None per frame when not reading them.

        Args:
            read_payloads: Read and yield whole frames; when false, payloads are
                skipped and None is yielded for each frame.

        Yields:
            Each frame, in file order.

        Raises:
            RoomFileError: A frame is truncated, too large, or not storable.
        """
        offset = self._handle.tell()
        while offset < self._size:
            where = f"{self._path}: frame {self._command_count} at byte {offset}"
            remaining = self._size - offset
            if remaining < FRAME_HEADER.size:
                raise RoomFileError(
                    f"{where}: truncated header ({remaining} of "
                    f"{FRAME_HEADER.size} bytes)"
                )

            header = self._read_exact(FRAME_HEADER.size, where)
            payload_size, _command_id, kind = FRAME_HEADER.unpack(header)
            problem = _type_problem(kind)
            if problem is not None:
                raise RoomFileError(f"{where}: {problem}")

            if payload_size > self._max_frame_bytes:
                raise RoomFileError(
                    f"{where}: type {kind} declares a payload of {payload_size} "
                    f"bytes, above the {self._max_frame_bytes} byte limit"
                )

            if payload_size > remaining - FRAME_HEADER.size:
                raise RoomFileError(
                    f"{where}: type {kind} declares a payload of {payload_size} "
                    f"bytes but only {remaining - FRAME_HEADER.size} bytes "
                    "remain: the file is truncated"
                )

            frame_size = FRAME_HEADER.size + payload_size
            if read_payloads:
                self._seek(offset, where)
                yield self._read_exact(frame_size, where)
            else:
                self._seek(offset + frame_size, where)
                yield None

            offset += frame_size
            self._command_count += 1
            self._byte_size += frame_size

    def finish(self) -> RoomFileSummary:
        """Check the counts the attributes declare against the frames read.

        Returns:
            The file's summary.

        Raises:
            RoomFileError: The declared counts differ from the frames found.
        """
        problem = _counts_problem(
            self._attributes, self._command_count, self._byte_size
        )
        if problem is not None:
            raise RoomFileError(
                f"{self._path}: at the end of the file (byte {self._size}): {problem}"
            )

        return RoomFileSummary(self._attributes, self._command_count, self._byte_size)

    def _read_attributes(self) -> dict[str, Any]:
        path = self._path
        if self._size == 0:
            raise RoomFileError(f"{path}: empty file, not a room file")

        if self._size < ATTRIBUTES_LENGTH.size:
            raise RoomFileError(
                f"{path}: {self._size} bytes is too short for a room file, which "
                f"starts with a {ATTRIBUTES_LENGTH.size}-byte attributes length"
            )

        where = f"{path}: byte 0"
        (length,) = ATTRIBUTES_LENGTH.unpack(
            self._read_exact(ATTRIBUTES_LENGTH.size, where)
        )
        available = self._size - ATTRIBUTES_LENGTH.size
        if length > MAX_ATTRIBUTES_BYTES:
            raise RoomFileError(
                f"{where}: the attributes length is {length} bytes, above the "
                f"{MAX_ATTRIBUTES_BYTES} byte limit (not a room file?)"
            )

        if length > available:
            raise RoomFileError(
                f"{where}: the attributes length is {length} bytes but only "
                f"{available} bytes follow (not a room file, or truncated)"
            )

        start = ATTRIBUTES_LENGTH.size
        raw = self._read_exact(length, f"{path}: byte {start}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RoomFileError(
                f"{path}: byte {start + exc.start}: the attributes are not UTF-8 "
                f"({exc.reason})"
            ) from None

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            at = start + len(text[: exc.pos].encode("utf-8"))
            raise RoomFileError(
                f"{path}: byte {at}: the attributes are not valid JSON: {exc.msg}"
            ) from None
        except RecursionError:
            raise RoomFileError(
                f"{path}: byte {start}: the attributes are nested deeper than "
                f"{MAX_ATTRIBUTES_DEPTH} levels"
            ) from None
        except ValueError as exc:
            raise RoomFileError(
                f"{path}: byte {start}: the attributes are not valid JSON: {exc}"
            ) from None

        if not isinstance(value, dict):
            raise RoomFileError(
                f"{path}: byte {start}: the attributes must be a JSON object, "
                f"not {_json_kind(value)}"
            )

        problem = _attributes_problem(value)
        if problem is not None:
            raise RoomFileError(f"{path}: byte {start}: {problem}")

        return value

    def _read_exact(self, count: int, where: str) -> bytes:
        with _os_errors(f"{where}: cannot read"):
            data = self._handle.read(count)

        if len(data) != count:
            raise RoomFileError(
                f"{where}: the file ended early (read {len(data)} of {count} "
                "bytes); was it changed while being read?"
            )

        return data

    def _seek(self, offset: int, where: str) -> None:
        with _os_errors(f"{where}: cannot seek"):
            self._handle.seek(offset)


@contextlib.contextmanager
def _open_room_file(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file for reading, and give its size.

    Non-blocking open, so that a FIFO is refused instead of waited on.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    with _os_errors(f"cannot open room file {path}"):
        fd = os.open(path, flags)

    try:
        with _os_errors(f"cannot read room file {path}"):
            info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise

    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RoomFileError(f"{path}: not a regular file, not a room file")

    with open(fd, "rb") as handle:
        yield handle, info.st_size


@contextlib.contextmanager
def _os_errors(message: str) -> Iterator[None]:
    """Turn an OSError raised in the block into a RoomFileError."""
    try:
        yield
    except OSError as exc:
        raise RoomFileError(f"{message}: {exc}") from exc


def _attributes_problem(attributes: dict[str, Any]) -> str | None:
    """Say what is wrong with the attributes' shape, or None if nothing is."""
    for key in attributes:
        if not isinstance(key, str):
            return f"attribute names must be strings, found {key!r}"

    for key in BOOL_ATTRIBUTES:
        if key in attributes and not isinstance(attributes[key], bool):
            return (
                f"attribute {key!r} must be true or false, not {_show(attributes[key])}"
            )

    for key in STRING_ATTRIBUTES:
        if key in attributes and not isinstance(attributes[key], str):
            return f"attribute {key!r} must be a string, not {_show(attributes[key])}"

    for key in COUNT_ATTRIBUTES:
        if key in attributes and not _is_count(attributes[key]):
            return (
                f"attribute {key!r} must be a non-negative integer, "
                f"not {_show(attributes[key])}"
            )

    if _nesting_exceeds(attributes, MAX_ATTRIBUTES_DEPTH):
        return f"the attributes are nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"

    return None


def _counts_problem(
    attributes: dict[str, Any], command_count: int, byte_size: int
) -> str | None:
    """Say how declared counts differ from the frames', or None if they agree."""
    declared_count = attributes.get("command_count")
    if declared_count is not None and declared_count != command_count:
        return (
            f"the attributes give command_count {declared_count} but the history "
            f"holds {command_count} frames"
        )

    declared_size = attributes.get("byte_size")
    if declared_size is not None and declared_size != byte_size:
        return (
            f"the attributes give byte_size {declared_size} but the history's "
            f"frames take {byte_size} bytes"
        )

    return None


def _type_problem(kind: int) -> str | None:
    """Say why a frame of this type cannot be in a history, or None if it can."""
    if kind <= LAST_CONTROL_TYPE:
        return (
            f"type {kind} is a control message, not a room command "
            f"(room commands are above {LAST_CONTROL_TYPE})"
        )

    if kind in NEVER_STORED_TYPES:
        return (
            f"type {kind} ({NEVER_STORED_TYPES[kind]}) is never stored in a "
            "room history"
        )

    return None


def _check_frame_to_write(path: Path, index: int, frame: bytes) -> None:
    where = f"{path}: not written: frame {index}"
    if len(frame) < FRAME_HEADER.size:
        raise RoomFileError(
            f"{where}: {len(frame)} bytes is shorter than a "
            f"{FRAME_HEADER.size}-byte frame header"
        )

    payload_size, _command_id, kind = FRAME_HEADER.unpack_from(frame)
    if payload_size != len(frame) - FRAME_HEADER.size:
        raise RoomFileError(
            f"{where}: its header declares a payload of {payload_size} bytes but "
            f"{len(frame) - FRAME_HEADER.size} bytes follow it"
        )

    problem = _type_problem(kind)
    if problem is not None:
        raise RoomFileError(f"{where}: {problem}")


# What an existing path other than a file or a link is, by its file type.
_KINDS_OF_PATHS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "device"),
    (stat.S_ISBLK, "device"),
)


def _check_replaceable(path: Path, failure: str) -> None:
    """Refuse a target that is a directory, a named pipe, a socket or a device:
    the room file is renamed over its target, which would replace it (as root,
    /dev/null itself). A link is replaced, never followed.

    Raises:
        RoomFileError: ``path`` is one of them.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there yet, or creating the file will say why it fails

    for is_kind, kind in _KINDS_OF_PATHS:
        if is_kind(mode):
            raise RoomFileError(
                f"{failure}: it is a {kind}, which the room file would replace; "
                "write to a file"
            )


def _create_temp_file(path: Path) -> tuple[int, Path]:
    """Create a new, empty file next to ``path``, with the umask's permissions.

    Raises:
        OSError: the file cannot be created; the error names ``path``'s folder.
    """
    prefix = f".{path.name[:_TEMP_NAME_PREFIX_CHARS]}."
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_TEMP_ATTEMPTS):
        temp = path.with_name(f"{prefix}{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
        except OSError as exc:
            # The folder is what is wrong (missing, not a folder, read-only): the
            # temporary file's name would only puzzle the operator.
            raise OSError(exc.errno, exc.strerror, str(path.parent)) from exc

    raise RoomFileError(
        f"cannot write room file {path}: no free temporary name after "
        f"{_TEMP_ATTEMPTS} attempts"
    )


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where directories can be synced)."""
    if os.name != "posix":
        return

    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _nesting_exceeds(value: object, limit: int) -> bool:
    """Tell whether a parsed JSON value holds anything deeper than ``limit``.

    The value itself is at depth 1, its members at depth 2, and so on.
    """
    level: list[object] = [value]
    for _depth in range(limit):
        deeper: list[object] = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(item.values())
            elif isinstance(item, list):
                deeper.extend(item)

        if not deeper:
            return False

        level = deeper

    return True


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"

    if isinstance(value, str):
        return "a string"

    if isinstance(value, bool) or value is None:
        return json.dumps(value)

    return "a number"


def _show(value: object) -> str:
    """A short JSON rendering of a value, for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)

    return text if len(text) <= 40 else text[:37] + "..."
