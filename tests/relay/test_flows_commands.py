"""Room commands and the history rules (PROTOCOL.md §4, §5).

Each test talks to a real relay over real TCP on 127.0.0.1; see tests/relay/flows.py
for how "nothing else arrived" is checked.
"""

import struct
from typing import Any

import anyio
import pytest

from relay.messages import MessageType
from relay.protocol import (
    encode_frame,
    encode_string,
)
from tests.mixer_client import json_of, room_command
from tests.relay.flows import (
    ROOM,
    STATISTICS,
    Connect,
    command,
    peer_id,
    room_with_members,
    scene,
    significant,
    stored_of,
)

# ---------------------------------------------------------------- §4 room commands


async def test_room_commands_forwarded_in_order_never_echoed(connect: Connect) -> None:
    """Room commands reach every other member byte-identical and in arrival order,
    never the sender, never a client outside the room."""
    first, second, third, outsider = await room_with_members(connect, 3, outsiders=1)
    from_first = [
        command(140, f"/p/{index}", bytes(index), command_id=index)
        for index in range(5)
    ]
    from_second = [room_command(777, b"opaque", command_id=42)]
    await first.send_raw(b"".join(from_first))
    echoed_to_first = await first.sync()
    await second.send_raw(from_second[0])
    echoed_to_second = await second.sync()
    to_first = await first.sync()
    to_third = await third.sync()
    to_outsider = await outsider.sync()

    assert [frame for frame in echoed_to_first if frame.kind > 100] == []
    assert [bytes(f.wire) for f in echoed_to_second if f.kind > 100] == from_first
    assert [bytes(f.wire) for f in to_first if f.kind > 100] == from_second
    assert [bytes(f.wire) for f in to_third if f.kind > 100] == (
        from_first + from_second
    )
    assert [frame for frame in to_outsider if frame.kind > 100] == []


async def test_room_commands_around_requests_in_one_read_keep_their_order(
    connect: Connect,
) -> None:
    """Room commands sent in one write with requests between them are applied in
    order: LIST_ROOMS counts only the commands before it, and those after a
    LEAVE_ROOM are refused as outside a room, neither stored nor forwarded."""
    sender, receiver = await room_with_members(connect, 2)
    before = [command(140, f"/a/{index}", bytes(index)) for index in range(4)]
    middle = [command(140, f"/b/{index}", bytes(index)) for index in range(3)]
    after = [command(140, f"/c/{index}", bytes(index)) for index in range(2)]
    await sender.send_raw(
        b"".join(before)
        + encode_frame(MessageType.LIST_ROOMS)
        + b"".join(middle)
        + encode_frame(MessageType.LEAVE_ROOM, ROOM.encode())
        + b"".join(after)
    )
    to_sender = significant(await sender.sync())
    to_receiver = await receiver.sync()
    listed = json_of(next(f for f in to_sender if f.kind == MessageType.LIST_ROOMS))
    count, size = await stored_of(receiver)

    assert listed[ROOM]["command_count"] == len(before)
    assert [bytes(f.wire) for f in to_receiver if f.kind > 100] == before + middle
    assert count == len(before + middle)
    assert size == sum(map(len, before + middle))
    assert [f.kind for f in to_sender][-len(after) :] == [MessageType.SEND_ERROR] * len(
        after
    )


async def test_room_command_outside_room_refused_not_stored(connect: Connect) -> None:
    """A room command from a client in no room gets SEND_ERROR, is neither stored
    nor forwarded, and the connection stays."""
    member, outsider = await room_with_members(connect, 1, outsiders=1)
    before = await stored_of(outsider)
    await outsider.send_raw(command(140, "/stray", b"x"))
    to_outsider = significant(await outsider.sync())
    to_member = await member.sync()
    after = await stored_of(outsider)

    assert [frame.kind for frame in to_outsider] == [MessageType.SEND_ERROR]
    assert [frame for frame in to_member if frame.kind > 100] == []
    assert after == before


# ---------------------------------------------------------------- §5 history


async def test_history_transient_commands_forwarded_not_stored(
    connect: Connect,
) -> None:
    """Types 1000, 205 and 139 reach the members but are not stored: the counts do
    not move and a late joiner does not get them."""
    history = scene(2)
    creator, member, late = await room_with_members(
        connect, 2, outsiders=1, history=history
    )
    transient = [
        room_command(1000, encode_string(peer_id(member)[0]) + b"wrapped", 1),
        room_command(205, struct.pack("<i", 12), 2),
        room_command(139, encode_string("/anim"), 3),
    ]
    await creator.send_raw(b"".join(transient))
    await creator.sync()
    to_member = await member.sync()
    counts = await stored_of(late)
    replayed = await late.join_room(ROOM)

    assert [bytes(f.wire) for f in to_member if f.kind > 100] == transient
    assert counts == (2, sum(len(wire) for wire in history))
    assert [bytes(frame.wire) for frame in replayed] == history


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ([(201, "/cube"), (201, "/cube"), (201, "/cube")], [2]),
        ([(201, "/cube"), (205, "/cube"), (201, "/cube")], [2]),
        ([(998, "/cube"), (998, "/cube")], [1]),
        ([(140, "/cube"), (140, "/cube")], [0, 1]),
        ([(201, "/cube"), (201, "/sphere")], [0, 1]),
        ([(201, "/cube"), (202, "/cube")], [0, 1]),
        ([(201, "/cube"), (202, "/cube"), (201, "/cube")], [0, 1, 2]),
        ([(200, "/cube"), (200, "/cube")], [0, 1]),
        ([(999, "/cube"), (999, "/cube")], [0, 1]),
        ([(1000, "/cube"), (1000, "/cube")], []),
        ([(201, None), (201, None)], [0, 1]),
    ],
    ids=[
        "same-path-merges",
        "transient-between-merges",
        "type-998-merges",
        "type-140-kept",
        "other-path-kept",
        "other-type-kept",
        "only-last-merges",
        "type-200-kept",
        "type-999-kept",
        "transient-not-stored",
        "no-leading-string-kept",
    ],
)
async def test_history_merge_rule(
    connect: Connect, sent: list[tuple[int, str | None]], stored: list[int]
) -> None:
    """A type in 201-998 with the same leading string as the last stored command
    replaces it; nothing else merges; byte_size is the sum of 14 + payload."""
    wires = [
        command(kind, path, bytes([index]) * (index + 1), command_id=index)
        if path is not None
        else room_command(kind, b"\xff\xff\xff\xff" + bytes([index]), index)
        for index, (kind, path) in enumerate(sent)
    ]
    creator, member, late = await room_with_members(connect, 2, outsiders=1)
    await creator.send_raw(b"".join(wires))
    await creator.sync()
    to_member = await member.sync()
    counts = await stored_of(late)
    replayed = await late.join_room(ROOM)
    expected = [wires[index] for index in stored]

    assert [bytes(f.wire) for f in to_member if f.kind > 100] == wires
    # Each wire is the 14-byte header followed by the payload.
    assert counts == (len(expected), sum(len(wire) for wire in expected))
    assert [bytes(frame.wire) for frame in replayed] == expected


async def test_history_byte_size_sums_header_and_payload(connect: Connect) -> None:
    """byte_size is the sum of 14 + payload length over the stored commands."""
    payloads = [b"", b"x" * 10, b"y" * 1000, b"z" * 70000]
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send_raw(b"".join(room_command(140, body) for body in payloads))
    await creator.sync()
    counts = await stored_of(outsider)

    assert counts == (4, sum(14 + len(body) for body in payloads))


async def test_room_update_statistics_coalesced_latest_arrives(
    connect: Connect,
) -> None:
    """A burst of 500 stored commands yields far fewer than 500 ROOM_UPDATEs of
    byte_size and command_count, the last of them with the final values."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    burst = [room_command(140, bytes(index % 7), index) for index in range(500)]
    final = (500, sum(len(wire) for wire in burst))
    await creator.send_raw(b"".join(burst))
    updates: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        while not updates or updates[-1] != {
            "byte_size": final[1],
            "command_count": final[0],
        }:
            frame = await outsider.receive()
            if frame.kind == MessageType.ROOM_UPDATE:
                updates.append(json_of(frame)[ROOM])

    extra = room_command(140, b"one more")
    await creator.send_raw(extra)
    later: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        while not later or later[-1]["command_count"] != 501:
            frame = await outsider.expect(MessageType.ROOM_UPDATE)
            later.append(json_of(frame)[ROOM])

    counts = [update["command_count"] for update in updates]

    assert len(updates) < 50
    assert all(set(update) == STATISTICS for update in updates)
    assert counts == sorted(counts)
    assert later[-1] == {"byte_size": final[1] + len(extra), "command_count": 501}
    assert all(update["command_count"] == 500 for update in later[:-1])
