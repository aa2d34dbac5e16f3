"""The sans-IO codec, fed byte streams split at every offset."""

import pytest

from relay.errors import FrameTooLarge, MalformedPayload
from relay.protocol import (
    HEADER,
    FrameDecoder,
    PayloadReader,
    decode_text,
    encode_bool,
    encode_frame,
    encode_json,
    encode_string,
    leading_string,
)

SMALL_FRAMES = [
    encode_frame(18),
    encode_frame(140, b"\x05\x00\x00\x00/Cube" + bytes(range(200)), 7),
    encode_frame(1, encode_string("room") + encode_bool(True), 2**32 - 1),
    encode_frame(65535, b"z" * 3),
]
STREAM = b"".join(SMALL_FRAMES)


def decode_in_two(data: bytes, offset: int, **options: int) -> list[bytes]:
    decoder = FrameDecoder(max_payload=1 << 20, **options)
    frames = decoder.feed(data[:offset]) + decoder.feed(data[offset:])
    return [bytes(frame.wire) for frame in frames]


@pytest.mark.parametrize("offset", range(len(STREAM) + 1))
def test_decoder_split_at_every_offset(offset: int) -> None:
    """Any split of a stream into two reads yields the same frames."""
    frames = decode_in_two(STREAM, offset)

    assert frames == SMALL_FRAMES


def test_decoder_byte_by_byte() -> None:
    """A stream arriving one byte per read still decodes frame by frame."""
    decoder = FrameDecoder(max_payload=1 << 20)
    frames = []
    for index in range(len(STREAM)):
        frames.extend(decoder.feed(STREAM[index : index + 1]))

    assert [frame.wire for frame in frames] == SMALL_FRAMES
    assert not decoder.has_partial_frame


def test_decoder_fields() -> None:
    """A frame exposes its type, command id, payload and wire size."""
    (frame,) = FrameDecoder(max_payload=100).feed(encode_frame(151, b"abc", 42))

    assert (frame.kind, frame.command_id) == (151, 42)
    assert bytes(frame.payload) == b"abc"
    assert frame.size == HEADER.size + 3


LARGE_STREAM = b"".join(
    [
        encode_frame(101, b"a" * 10),
        encode_frame(152, bytes(range(256)) * 40, 9),  # larger than the chunk
        encode_frame(102, b"b" * 100),
        encode_frame(152, b"c" * 5000),
    ]
)


@pytest.mark.parametrize("offset", range(0, len(LARGE_STREAM) + 1, 7))
def test_decoder_large_frames_split(offset: int) -> None:
    """Frames larger than the receive chunk decode identically at any split."""
    frames = decode_in_two(LARGE_STREAM, offset, chunk_size=1024)

    assert b"".join(frames) == LARGE_STREAM
    assert len(frames) == 4


def test_decoder_large_frame_buffer_is_exact() -> None:
    """A large frame is read into a buffer of its size, never past its end."""
    decoder = FrameDecoder(max_payload=1 << 20, chunk_size=1024)
    big = encode_frame(152, b"x" * 4000)
    decoder.feed(big[:100])

    assert len(decoder.receive_buffer()) == len(big) - 100


def test_decoder_refuses_huge_length_before_allocating() -> None:
    """A declared length of 2**63 is refused from the header alone."""
    decoder = FrameDecoder(max_payload=1 << 30)
    header = HEADER.pack(2**63, 0, 140)

    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(header)

    assert caught.value.declared == 2**63


def test_decoder_too_large_keeps_the_whole_frames_before_it() -> None:
    """Frames completed in the same bytes as a refused header come with the
    refusal, in order: how TCP split the writes must not decide their fate."""
    decoder = FrameDecoder(max_payload=100)
    before = [encode_frame(150, b"first"), encode_frame(4)]

    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"".join(before) + HEADER.pack(101, 0, 150))

    assert [frame.wire for frame in caught.value.frames] == before


def test_decoder_accepts_payload_at_the_limit() -> None:
    """A payload of exactly the maximum size passes."""
    frames = FrameDecoder(max_payload=10).feed(encode_frame(140, b"0123456789"))

    assert len(frames) == 1


def test_decoder_partial_frame_state() -> None:
    """The decoder tells whether it holds part of a frame."""
    decoder = FrameDecoder(max_payload=1000)
    assert not decoder.has_partial_frame

    decoder.feed(SMALL_FRAMES[1][:5])
    assert decoder.has_partial_frame

    decoder.feed(SMALL_FRAMES[1][5:])
    assert not decoder.has_partial_frame


def test_decoder_many_frames_in_one_read() -> None:
    """Thousands of small frames in one read all come out in order."""
    frames = [encode_frame(201, i.to_bytes(4, "little"), i) for i in range(5000)]

    decoded = FrameDecoder(max_payload=100, chunk_size=4096).feed(b"".join(frames))

    assert [frame.wire for frame in decoded] == frames


def test_reader_values_round_trip() -> None:
    """Strings, bools and JSON read back what was encoded."""
    payload = (
        encode_string("Künstler")
        + encode_bool(True)
        + encode_bool(False)
        + encode_json({"a": [1, 2]})
    )
    reader = PayloadReader(payload)

    assert reader.read_string() == "Künstler"
    assert reader.read_bool() is True
    assert reader.read_bool() is False
    assert reader.read_json_object() == {"a": [1, 2]}
    assert reader.at_end


def test_reader_bool_other_values_are_false() -> None:
    """Only 1 is true, as the add-on writes it."""
    assert PayloadReader(b"\x02\x00\x00\x00").read_bool() is False


def test_reader_optional_values_default() -> None:
    """Missing trailing values read as "" and False (VRtist sends fewer fields)."""
    reader = PayloadReader(encode_string("room"))

    assert reader.read_string() == "room"
    assert reader.read_optional_string() == ""
    assert reader.read_optional_bool() is False


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x10\x00\x00\x00abc", "declares 16 bytes"),
        (b"room", "declares"),  # old VRtist: raw text read as a length
        (b"\x02\x00", "ends before"),
        (b"\x02\x00\x00\x00\xff\xfe", "UTF-8"),
    ],
)
def test_reader_refuses_malformed_strings(payload: bytes, message: str) -> None:
    """Overrunning lengths, cut lengths and invalid UTF-8 raise MalformedPayload."""
    with pytest.raises(MalformedPayload, match=message):
        PayloadReader(payload).read_string()


def test_reader_vrtist_cut_utf8() -> None:
    """A byte count for more bytes than were written is refused, not truncated."""
    name = "Szène".encode()
    payload = len(name).to_bytes(4, "little") + name[:-1]

    with pytest.raises(MalformedPayload):
        PayloadReader(payload).read_string()


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"text"', "{"])
def test_reader_json_must_be_an_object(text: str) -> None:
    """JSON that does not parse, or is not an object, is refused."""
    with pytest.raises(MalformedPayload):
        PayloadReader(encode_string(text)).read_json_object()


def test_decode_text() -> None:
    """Raw text fills the payload; invalid UTF-8 is refused."""
    assert decode_text(b"room") == "room"

    with pytest.raises(MalformedPayload):
        decode_text(b"\xc3")


def test_leading_string() -> None:
    """The merge key is the raw leading string, or None when there is none."""
    assert leading_string(encode_string("/Cube") + b"rest") == b"/Cube"
    assert leading_string(b"\x01\x00") is None
    assert leading_string(b"\xff\x00\x00\x00ab") is None


def test_encode_json_uses_default_separators() -> None:
    """JSON is written as the original writes it, with ', ' and ': '."""
    assert encode_json({"a": 1, "b": None}) == encode_string('{"a": 1, "b": null}')
