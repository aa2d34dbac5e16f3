"""A room's history in memory: a read's commands appended at once end as they
would one by one."""

import itertools

import pytest

from relay.history import History
from relay.protocol import Frame, FrameDecoder, encode_frame, encode_string


def frames_of(kinds_and_paths: list[tuple[int, str]]) -> list[Frame]:
    data = b"".join(
        encode_frame(kind, encode_string(path) + bytes(index), command_id=index)
        for index, (kind, path) in enumerate(kinds_and_paths)
    )
    return FrameDecoder(1 << 20).feed(data)


def state(history: History) -> tuple[object, ...]:
    entries = [(e.seq, bytes(e.wire), e.sender, e.at) for e in history.recent]
    return entries, len(history), history.byte_size, history.last


@pytest.mark.parametrize(
    "commands",
    [
        [(140, "/a"), (140, "/a"), (777, "/b")],
        [(140, "/a"), (201, "/x"), (201, "/x"), (140, "/c"), (201, "/x")],
        [(201, "/x"), (202, "/x"), (201, "/y")],
    ],
    ids=["never-merged", "merged-inside-the-read", "mergeable-types-not-merged"],
)
def test_history_extend_ends_as_append_one_by_one(
    commands: list[tuple[int, str]],
) -> None:
    """extend() leaves the entries, count, byte size and newest command that
    append() one frame at a time leaves, merges included."""
    one_by_one = History(itertools.count(1).__next__)
    at_once = History(itertools.count(1).__next__)
    one_by_one.append(frames_of([(201, "/x")])[0], "first", 0.5)
    at_once.append(frames_of([(201, "/x")])[0], "first", 0.5)

    for frame in frames_of(commands):
        one_by_one.append(frame, "artist", 2.0)
    at_once.extend(frames_of(commands), "artist", 2.0)

    assert state(at_once) == state(one_by_one)
