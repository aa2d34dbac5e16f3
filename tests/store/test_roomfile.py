"""Room files: scanning, streaming and atomic writing of saved rooms."""

import json
import os
import random
import re
import socket
import stat
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.roomfile import (
    MAX_ATTRIBUTES_BYTES,
    MAX_ATTRIBUTES_DEPTH,
    RoomFileError,
    encode_room_attributes,
    iter_room_file_frames,
    scan_room_file,
    write_room_file,
)

DATA = Path(__file__).resolve().parent.parent / "data"
MIB = 1024 * 1024
LIMIT = MIB


def frame(kind: int, payload: bytes = b"", command_id: int = 0) -> bytes:
    return struct.pack("<QIH", len(payload), command_id, kind) + payload


def room_bytes(attributes: Any, frames: list[bytes]) -> bytes:
    text = json.dumps(attributes).encode()
    return struct.pack("<I", len(text)) + text + b"".join(frames)


def counted(frames: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "keep_open": True,
        "blender_version": "3.4.1",
        "mixer_version": "1.0.0",
        "command_count": len(frames),
        "byte_size": sum(len(item) for item in frames),
        **extra,
    }


def put(tmp_path: Path, data: bytes, name: str = "room.mixer") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


SAMPLE_FRAMES = [
    frame(132, b"\x01\x00\x00\x00", 7),
    frame(140, b"\x05\x00\x00\x00/Cube" + bytes(range(20)), 8),
    frame(133, b"", 9),
]
SAMPLE = room_bytes(counted(SAMPLE_FRAMES), SAMPLE_FRAMES)

CAPTURES = [
    ("capture-basic.mixer", 23, 115764),
    ("capture-file2.mixer", 27, 122050),
    ("capture-curve.mixer", 24, 115568),
]


@pytest.mark.parametrize(("name", "count", "size"), CAPTURES)
def test_scan_room_file_real_captures(name: str, count: int, size: int) -> None:
    """The add-on's real room files scan clean with their declared counts."""
    summary = scan_room_file(DATA / name, LIMIT)

    assert (summary.command_count, summary.byte_size) == (count, size)
    assert summary.attributes["command_count"] == count
    assert summary.attributes["byte_size"] == size
    assert summary.attributes["mixer_version"] == "1.0.0"
    assert "name" not in summary.attributes


@pytest.mark.parametrize(("name", "count", "size"), CAPTURES)
def test_iter_room_file_frames_round_trip(
    tmp_path: Path, name: str, count: int, size: int
) -> None:
    """Reading a real room file and writing it back gives the same bytes."""
    source = DATA / name
    summary = scan_room_file(source, LIMIT)
    frames = list(iter_room_file_frames(source, LIMIT))
    copy = tmp_path / name
    write_room_file(copy, summary.attributes, iter(frames))

    assert len(frames) == count
    assert sum(len(item) for item in frames) == size
    assert all(item[12:14] != b"\x00\x00" for item in frames)
    assert copy.read_bytes() == source.read_bytes()


def test_iter_room_file_frames_yields_wire_frames(tmp_path: Path) -> None:
    """Each yielded item is one frame, header included, in file order."""
    path = put(tmp_path, SAMPLE)

    frames = list(iter_room_file_frames(path, LIMIT))

    assert frames == SAMPLE_FRAMES


@pytest.mark.parametrize("cut", range(len(SAMPLE)))
def test_scan_room_file_truncated_anywhere(tmp_path: Path, cut: int) -> None:
    """A room file cut at any offset, in the length, JSON or frames, is refused."""
    path = put(tmp_path, SAMPLE[:cut])

    with pytest.raises(RoomFileError):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("cut", range(len(SAMPLE)))
def test_iter_room_file_frames_truncated_anywhere(tmp_path: Path, cut: int) -> None:
    """Streaming a cut room file raises before or after its last whole frame."""
    path = put(tmp_path, SAMPLE[:cut])

    with pytest.raises(RoomFileError):
        list(iter_room_file_frames(path, LIMIT))


def test_scan_room_file_truncated_last_frame_named(tmp_path: Path) -> None:
    """A real room file missing its last byte names the truncated frame."""
    data = (DATA / "capture-basic.mixer").read_bytes()
    path = put(tmp_path, data[:-1])

    with pytest.raises(RoomFileError, match=r"frame 22 at byte \d+: .*truncated"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_truncated_header_named(tmp_path: Path) -> None:
    """A partial frame header reports its offset and how much of it is there."""
    path = put(tmp_path, SAMPLE + b"\x00" * 5)

    with pytest.raises(
        RoomFileError, match=rf"frame 3 at byte {len(SAMPLE)}: truncated header"
    ):
        scan_room_file(path, LIMIT)


def test_scan_room_file_cut_at_frame_boundary_without_counts(tmp_path: Path) -> None:
    """Without declared counts, a file cut between frames is a valid shorter room."""
    head = room_bytes({"keep_open": True}, SAMPLE_FRAMES[:2])
    path = put(tmp_path, head)

    summary = scan_room_file(path, LIMIT)

    assert summary.command_count == 2
    assert summary.byte_size == len(SAMPLE_FRAMES[0]) + len(SAMPLE_FRAMES[1])


@pytest.mark.parametrize(
    "text",
    [
        b'{"keep_open": ',
        b'{"keep_open": true,}',
        b"{'keep_open': true}",
        b"\xef\xbb\xbf{}",
        b"",
        b"   ",
        b'{"a": ' + b"9" * 5000 + b"}",
    ],
)
def test_scan_room_file_corrupt_json(tmp_path: Path, text: bytes) -> None:
    """Attributes that do not parse as JSON are refused."""
    path = put(tmp_path, struct.pack("<I", len(text)) + text)

    with pytest.raises(RoomFileError, match="not valid JSON"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_json_error_offset(tmp_path: Path) -> None:
    """A JSON syntax error is reported at its byte offset in the file."""
    text = '{"user": "é", x}'.encode()
    path = put(tmp_path, struct.pack("<I", len(text)) + text)

    with pytest.raises(RoomFileError, match=rf"byte {4 + text.index(b'x')}:"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_json_not_utf8(tmp_path: Path) -> None:
    """Attributes that are not UTF-8 are refused, naming the bad byte."""
    text = b'{"a": "\xff"}'
    path = put(tmp_path, struct.pack("<I", len(text)) + text)

    with pytest.raises(RoomFileError, match=r"byte 11: .*not UTF-8"):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("value", [[], ["keep_open"], "room", 3, 2.5, None, True])
def test_scan_room_file_json_not_object(tmp_path: Path, value: Any) -> None:
    """Attributes that are JSON but not an object are refused."""
    path = put(tmp_path, room_bytes(value, []))

    with pytest.raises(RoomFileError, match="must be a JSON object"):
        scan_room_file(path, LIMIT)


def nested(depth: int) -> bytes:
    """JSON text of an object holding ``depth`` nested containers in all."""
    arrays = depth - 1
    return b'{"a": ' + b"[" * arrays + b"]" * arrays + b"}"


@pytest.mark.parametrize("depth", [MAX_ATTRIBUTES_DEPTH + 1, 5000])
def test_scan_room_file_json_too_deep(tmp_path: Path, depth: int) -> None:
    """Attributes nested beyond the limit are refused, even past Python's stack."""
    text = nested(depth)
    path = put(tmp_path, struct.pack("<I", len(text)) + text)

    with pytest.raises(RoomFileError, match="nested deeper"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_json_at_depth_limit(tmp_path: Path) -> None:
    """Attributes nested exactly to the limit are accepted."""
    text = nested(MAX_ATTRIBUTES_DEPTH)
    path = put(tmp_path, struct.pack("<I", len(text)) + text)

    summary = scan_room_file(path, LIMIT)

    assert summary.command_count == 0


@pytest.mark.parametrize("length", [2**32 - 1, MAX_ATTRIBUTES_BYTES + 1])
def test_scan_room_file_huge_json_length(tmp_path: Path, length: int) -> None:
    """A declared attributes length far beyond the file is refused at byte 0."""
    path = put(tmp_path, struct.pack("<I", length) + b"{}" + SAMPLE_FRAMES[0])

    with pytest.raises(RoomFileError, match=rf"byte 0: .*length is {length} bytes"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_json_length_past_end(tmp_path: Path) -> None:
    """A declared attributes length a little past the end of the file is refused."""
    path = put(tmp_path, struct.pack("<I", 10) + b"{}")

    with pytest.raises(RoomFileError, match="only 2 bytes follow"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_huge_frame_length(tmp_path: Path) -> None:
    """A frame declaring 2**63 bytes is refused from its header, allocating nothing."""
    huge = struct.pack("<QIH", 2**63, 0, 140) + b"x" * 100
    path = put(tmp_path, room_bytes({}, [SAMPLE_FRAMES[0]]) + huge)
    tracemalloc.start()
    try:
        with pytest.raises(RoomFileError, match=r"frame 1 at byte \d+: .*above the"):
            scan_room_file(path, LIMIT)

        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < LIMIT // 4


def test_iter_room_file_frames_huge_frame_length(tmp_path: Path) -> None:
    """Streaming stops at a frame above the limit, after the frames before it."""
    huge = struct.pack("<QIH", 2**63, 0, 140)
    path = put(tmp_path, room_bytes({}, [SAMPLE_FRAMES[0]]) + huge)
    frames = iter_room_file_frames(path, LIMIT)

    assert next(frames) == SAMPLE_FRAMES[0]
    with pytest.raises(RoomFileError, match="above the"):
        next(frames)


def test_scan_room_file_frame_length_past_end(tmp_path: Path) -> None:
    """A frame under the limit but longer than the rest of the file is truncated."""
    huge = struct.pack("<QIH", 2**63, 0, 140) + b"x" * 100
    path = put(tmp_path, room_bytes({}, []) + huge)

    with pytest.raises(RoomFileError, match="only 100 bytes remain"):
        scan_room_file(path, 2**64)


def test_scan_room_file_frame_at_limit(tmp_path: Path) -> None:
    """A payload of exactly the limit is accepted, one byte more is not."""
    path = put(tmp_path, room_bytes({}, [frame(152, b"m" * 1000)]))

    summary = scan_room_file(path, 1000)

    assert summary.byte_size == 1014
    with pytest.raises(RoomFileError, match="above the 999 byte limit"):
        scan_room_file(path, 999)


@pytest.mark.parametrize("kind", [0, 1, 4, 6, 20, 99, 100])
def test_scan_room_file_control_type_inside(tmp_path: Path, kind: int) -> None:
    """A control message among the history's frames is refused, with its index."""
    frames = [*SAMPLE_FRAMES[:2], frame(kind, b"room"), SAMPLE_FRAMES[2]]
    path = put(tmp_path, room_bytes(counted(frames), frames))

    with pytest.raises(RoomFileError, match=rf"frame 2 .*type {kind} is a control"):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("kind", [1000, 205, 139])
def test_scan_room_file_never_stored_type(tmp_path: Path, kind: int) -> None:
    """A room command that is never stored in a history is refused."""
    frames = [SAMPLE_FRAMES[0], frame(kind, b"\x00" * 4)]
    path = put(tmp_path, room_bytes(counted(frames), frames))

    with pytest.raises(RoomFileError, match=rf"frame 1 .*type {kind} .*never stored"):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("kind", [101, 157, 208, 999, 1001, 65535])
def test_scan_room_file_unnamed_room_types(tmp_path: Path, kind: int) -> None:
    """Any room command type above 100 that may be stored is accepted."""
    frames = [frame(kind, b"payload")]
    path = put(tmp_path, room_bytes(counted(frames), frames))

    summary = scan_room_file(path, LIMIT)

    assert summary.command_count == 1


@pytest.mark.parametrize(
    ("key", "delta"), [("command_count", 1), ("command_count", -1), ("byte_size", 1)]
)
def test_scan_room_file_count_mismatch(tmp_path: Path, key: str, delta: int) -> None:
    """Declared counts that differ from the frames found are refused."""
    attributes = counted(SAMPLE_FRAMES)
    attributes[key] += delta
    path = put(tmp_path, room_bytes(attributes, SAMPLE_FRAMES))

    with pytest.raises(RoomFileError, match=rf"{key} {attributes[key]} but"):
        scan_room_file(path, LIMIT)


def test_iter_room_file_frames_count_mismatch_after_frames(tmp_path: Path) -> None:
    """Streaming yields every frame, then raises when the counts do not match."""
    attributes = counted(SAMPLE_FRAMES, command_count=4)
    path = put(tmp_path, room_bytes(attributes, SAMPLE_FRAMES))
    seen = []

    with pytest.raises(RoomFileError, match="command_count 4 but"):
        seen.extend(iter_room_file_frames(path, LIMIT))

    assert seen == SAMPLE_FRAMES


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("keep_open", 1),
        ("keep_open", "true"),
        ("ignore_version_check", None),
        ("generic_protocol", 0),
        ("joinable", []),
        ("blender_version", 3.4),
        ("mixer_version", None),
        ("command_count", -1),
        ("command_count", 3.0),
        ("command_count", True),
        ("byte_size", "116"),
        ("byte_size", 1e400),
    ],
)
def test_scan_room_file_wrong_attribute_type(
    tmp_path: Path, key: str, value: Any
) -> None:
    """A reserved attribute of the wrong type is refused, naming the attribute."""
    attributes = counted(SAMPLE_FRAMES)
    attributes[key] = value
    path = put(tmp_path, room_bytes(attributes, SAMPLE_FRAMES))

    with pytest.raises(RoomFileError, match=rf"byte 4: attribute '{key}' must"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_custom_attributes(tmp_path: Path) -> None:
    """Custom attributes of any type are kept, and no reserved one is required."""
    attributes = {"vrtist_protocol": False, "notes": {"a": [1, 2.5, None]}}
    path = put(tmp_path, room_bytes(attributes, SAMPLE_FRAMES))

    summary = scan_room_file(path, LIMIT)

    assert summary.attributes == attributes
    assert summary.command_count == 3


def test_scan_room_file_empty_history(tmp_path: Path) -> None:
    """A room file with attributes and no frames is an empty history."""
    path = put(tmp_path, room_bytes(counted([]), []))

    summary = scan_room_file(path, LIMIT)

    assert (summary.command_count, summary.byte_size) == (0, 0)
    assert list(iter_room_file_frames(path, LIMIT)) == []


def test_scan_room_file_empty_file(tmp_path: Path) -> None:
    """An empty file is refused as not a room file."""
    path = put(tmp_path, b"")

    with pytest.raises(RoomFileError, match="empty file"):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + b"\x00" * 40,
        b"This is a text file,\nnot a saved Mixer room.\n",
        b'{"keep_open": true}',
        b"\x00\x00",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x00",
        b"\x02\x00\x00\x00{}" + b"\x00" * 40,
    ],
    ids=["png", "text", "bare-json", "two-bytes", "three-bytes", "no-json", "zeros"],
)
def test_scan_room_file_not_a_room_file(tmp_path: Path, data: bytes) -> None:
    """Content in some other format is refused with RoomFileError."""
    path = put(tmp_path, data)

    with pytest.raises(RoomFileError):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("seed", range(40))
def test_scan_room_file_random_garbage(tmp_path: Path, seed: int) -> None:
    """Random bytes are refused with RoomFileError, never another exception."""
    rng = random.Random(seed)
    path = put(tmp_path, rng.randbytes(rng.randrange(1, 5000)))

    with pytest.raises(RoomFileError):
        scan_room_file(path, LIMIT)


@pytest.mark.parametrize("seed", range(60))
def test_scan_room_file_corrupted_sample(tmp_path: Path, seed: int) -> None:
    """A valid file with random bytes changed scans clean or raises RoomFileError."""
    rng = random.Random(seed)
    data = bytearray(SAMPLE)
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    path = put(tmp_path, bytes(data))

    try:
        summary = scan_room_file(path, LIMIT)
    except RoomFileError:
        summary = None

    assert summary is None or summary.command_count >= 0


def test_scan_room_file_missing(tmp_path: Path) -> None:
    """A path that does not exist raises RoomFileError naming it."""
    path = tmp_path / "absent.mixer"

    with pytest.raises(RoomFileError, match=r"cannot open room file .*absent\.mixer"):
        scan_room_file(path, LIMIT)


def test_scan_room_file_directory(tmp_path: Path) -> None:
    """A directory is refused with RoomFileError."""
    with pytest.raises(RoomFileError, match=re.escape(str(tmp_path))):
        scan_room_file(tmp_path, LIMIT)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_scan_room_file_fifo(tmp_path: Path) -> None:
    """A FIFO is refused at once instead of waiting for a writer."""
    path = tmp_path / "pipe.mixer"
    os.mkfifo(path)

    with pytest.raises(RoomFileError, match="not a regular file"):
        scan_room_file(path, LIMIT)


def write_big_room(path: Path, frame_count: int, payload_size: int) -> None:
    chunk = b"\xab" * MIB
    frames_size = frame_count * (14 + payload_size)
    with path.open("wb") as out:
        out.write(encode_room_attributes({"byte_size": frames_size}))
        for index in range(frame_count):
            out.write(struct.pack("<QIH", payload_size, index, 151))
            for start in range(0, payload_size, MIB):
                out.write(chunk[: min(MIB, payload_size - start)])


def test_iter_room_file_frames_reads_incrementally(tmp_path: Path) -> None:
    """Streaming a 50 MB file holds about one frame at a time, not the file."""
    path = tmp_path / "big.mixer"
    write_big_room(path, 50, MIB)
    count = 0
    tracemalloc.start()
    try:
        for item in iter_room_file_frames(path, 2 * MIB):
            count += 1 if len(item) == 14 + MIB and item[-1] == 0xAB else 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert count == 50
    assert MIB <= peak < 8 * MIB


def test_scan_room_file_skips_payloads(tmp_path: Path) -> None:
    """Scanning a 50 MB frame reads its header, not its payload, into memory."""
    path = tmp_path / "big.mixer"
    write_big_room(path, 1, 50 * MIB)
    tracemalloc.start()
    try:
        summary = scan_room_file(path, 64 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert summary.byte_size == 14 + 50 * MIB
    assert peak < MIB


def test_write_room_file_layout(tmp_path: Path) -> None:
    """A written file is the length, default-separator JSON, then the frames."""
    path = tmp_path / "room.mixer"
    attributes = counted(SAMPLE_FRAMES)

    write_room_file(path, attributes, SAMPLE_FRAMES)

    assert path.read_bytes() == SAMPLE
    assert scan_room_file(path, LIMIT).attributes == attributes


def test_write_room_file_keeps_old_file_when_frames_fail(tmp_path: Path) -> None:
    """A frames iterable that raises midway leaves the old file and no temp file."""
    path = put(tmp_path, b"old content")

    def failing() -> Iterator[bytes]:
        yield SAMPLE_FRAMES[0]
        yield SAMPLE_FRAMES[1]
        raise RuntimeError("history read failed")

    with pytest.raises(RuntimeError, match="history read failed"):
        write_room_file(path, {}, failing())

    assert path.read_bytes() == b"old content"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["room.mixer"]


def test_write_room_file_no_target_when_frames_fail(tmp_path: Path) -> None:
    """A failed first write creates no file at all."""
    path = tmp_path / "room.mixer"

    def failing() -> Iterator[bytes]:
        raise OSError("disk of the store failed")
        yield b""

    with pytest.raises(OSError, match="disk of the store"):
        write_room_file(path, {}, failing())

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"\x00" * 13, "shorter than a 14-byte frame header"),
        (frame(140, b"abc")[:-1], "declares a payload of 3 bytes but 2"),
        (frame(140, b"abc") + b"d", "declares a payload of 3 bytes but 4"),
        (frame(20, b"{}"), "type 20 is a control message"),
        (frame(205, b"\x00" * 4), "type 205 .*never stored"),
    ],
    ids=["short", "cut-payload", "extra-byte", "control", "never-stored"],
)
def test_write_room_file_bad_frame(tmp_path: Path, bad: bytes, message: str) -> None:
    """A malformed or unstorable frame aborts the write, naming its index."""
    path = put(tmp_path, b"old content")

    with pytest.raises(RoomFileError, match=rf"frame 1: .*{message}"):
        write_room_file(path, {}, [SAMPLE_FRAMES[0], bad])

    assert path.read_bytes() == b"old content"
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(("key", "delta"), [("command_count", 1), ("byte_size", -1)])
def test_write_room_file_count_mismatch(tmp_path: Path, key: str, delta: int) -> None:
    """Frames that do not match the declared counts abort the write."""
    attributes = counted(SAMPLE_FRAMES)
    attributes[key] += delta
    path = tmp_path / "room.mixer"

    with pytest.raises(RoomFileError, match=rf"not written: .*{key}"):
        write_room_file(path, attributes, SAMPLE_FRAMES)

    assert list(tmp_path.iterdir()) == []


def test_write_room_file_missing_directory(tmp_path: Path) -> None:
    """Writing into a directory that does not exist raises RoomFileError."""
    path = tmp_path / "absent" / "room.mixer"

    with pytest.raises(RoomFileError, match="cannot write room file"):
        write_room_file(path, {}, SAMPLE_FRAMES)


def test_write_room_file_onto_directory(tmp_path: Path) -> None:
    """A target that is a directory raises RoomFileError and leaves no temp file."""
    (tmp_path / "room.mixer").mkdir()

    with pytest.raises(RoomFileError, match="cannot write room file"):
        write_room_file(tmp_path / "room.mixer", {}, SAMPLE_FRAMES)

    assert [item.name for item in tmp_path.iterdir()] == ["room.mixer"]


def test_write_room_file_onto_a_pipe_or_a_socket_leaves_it(tmp_path: Path) -> None:
    """Regression: the room file was renamed over a named pipe or a socket (and,
    as root, over a device such as /dev/null), replacing it; both are refused."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "socket"))

        for target, kind in ((pipe, "named pipe"), (tmp_path / "socket", "socket")):
            with pytest.raises(RoomFileError, match=f"it is a {kind}"):
                write_room_file(target, {}, SAMPLE_FRAMES)

        assert stat.S_ISSOCK((tmp_path / "socket").lstat().st_mode)

    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    assert sorted(item.name for item in tmp_path.iterdir()) == ["pipe", "socket"]


def test_write_room_file_replaces_existing(tmp_path: Path) -> None:
    """A complete write replaces the old file's content."""
    path = put(tmp_path, b"old content")

    write_room_file(path, {}, [])

    assert path.read_bytes() == b"\x02\x00\x00\x00{}"


def test_encode_room_attributes_default_separators() -> None:
    """Attributes are encoded with json.dumps defaults after their u32 length."""
    attributes = {"keep_open": True, "user": "é", "joinable": False}
    text = b'{"keep_open": true, "user": "\\u00e9", "joinable": false}'

    encoded = encode_room_attributes(attributes)

    assert encoded == struct.pack("<I", len(text)) + text


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"keep_open": "yes"}, "'keep_open' must be true or false"),
        ({"command_count": -2}, "'command_count' must be a non-negative integer"),
        ({"tags": {1, 2}}, "cannot be encoded as JSON"),
        ({1: "one"}, "attribute names must be strings"),
        (["keep_open"], "must be a dict"),
    ],
)
def test_encode_room_attributes_refused(attributes: Any, message: str) -> None:
    """Attributes that a room file could not hold are refused."""
    with pytest.raises(RoomFileError, match=message):
        encode_room_attributes(attributes)
