"""Leaving, deleting, disconnecting and errors (PROTOCOL.md §4, §4b).

Each test talks to a real relay over real TCP on 127.0.0.1; see tests/relay/flows.py
for how "nothing else arrived" is checked.
"""

import re
import struct

import pytest

from relay.messages import MessageType
from relay.protocol import (
    encode_bool,
    encode_json,
    encode_string,
)
from tests.mixer_client import join_payload, room_command
from tests.relay.flows import (
    ROOM,
    Connect,
    command,
    next_significant,
    open_clients,
    peer_id,
    room_with_members,
    scene,
    settle,
    significant,
    summary,
    text_of,
)

# ---------------------------------------------------------------- §4 leaving


async def test_leave_confirms_then_announces_room_null(connect: Connect) -> None:
    """LEAVE_ROOM gets an empty LEAVE_ROOM, then everyone learns the room is null;
    the room stays while a member is left."""
    creator, leaver, outsider = await room_with_members(connect, 2, outsiders=1)
    await leaver.send(MessageType.LEAVE_ROOM, ROOM.encode())
    to_leaver = [await next_significant(leaver) for _ in range(2)]
    to_creator = await next_significant(creator)
    to_outsider = await next_significant(outsider)
    left = (MessageType.CLIENT_UPDATE, {peer_id(leaver)[0]: {"room": None}})
    rooms = await outsider.list_rooms()

    assert summary(to_leaver) == [(MessageType.LEAVE_ROOM, b""), left]
    assert summary([to_creator]) == [left]
    assert summary([to_outsider]) == [left]
    assert list(rooms) == [ROOM]


async def test_leave_last_member_deletes_room(connect: Connect) -> None:
    """When the last member leaves a room without keep_open, everyone gets
    ROOM_DELETED after the leave."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(MessageType.LEAVE_ROOM, ROOM.encode())
    to_creator = [await next_significant(creator) for _ in range(3)]
    to_outsider = [await next_significant(outsider) for _ in range(2)]
    left = (MessageType.CLIENT_UPDATE, {peer_id(creator)[0]: {"room": None}})
    deleted = (MessageType.ROOM_DELETED, ROOM)

    assert summary(to_creator) == [(MessageType.LEAVE_ROOM, b""), left, deleted]
    assert summary(to_outsider) == [left, deleted]
    assert await outsider.list_rooms() == {}


async def test_leave_keep_open_room_survives_and_rejoins(connect: Connect) -> None:
    """A keep_open room outlives its last member and is rejoined with its whole
    history, byte-identical."""
    history = scene(4)
    creator, outsider = await room_with_members(
        connect, 1, outsiders=1, history=history
    )
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(ROOM) + encode_bool(True)
    )
    await creator.send(MessageType.LEAVE_ROOM, ROOM.encode())
    to_creator = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())
    rooms = await outsider.list_rooms()
    replayed = await outsider.join_room(ROOM)

    assert MessageType.ROOM_DELETED not in [f.kind for f in to_creator + to_outsider]
    assert rooms[ROOM]["command_count"] == len(history)
    assert [bytes(frame.wire) for frame in replayed] == history


async def test_leave_outside_room_refused(connect: Connect) -> None:
    """LEAVE_ROOM from a client in no room gets SEND_ERROR and no LEAVE_ROOM."""
    client, other = await open_clients(connect, 2)
    await client.send(MessageType.LEAVE_ROOM, ROOM.encode())
    to_client = await client.sync()
    to_other = await other.sync()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert to_other == []


# ---------------------------------------------------------------- §4 deleting


async def test_delete_empty_room_announces_deletion(connect: Connect) -> None:
    """DELETE_ROOM (raw text) of an empty kept room sends ROOM_DELETED to all."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(ROOM) + encode_bool(True)
    )
    await creator.send(MessageType.LEAVE_ROOM, ROOM.encode())
    await creator.expect(MessageType.LEAVE_ROOM)
    await settle([creator, outsider])
    await outsider.send(MessageType.DELETE_ROOM, ROOM.encode())
    to_outsider = significant(await outsider.sync())
    to_creator = significant(await creator.sync())

    assert summary(to_outsider) == [(MessageType.ROOM_DELETED, ROOM)]
    assert summary(to_creator) == [(MessageType.ROOM_DELETED, ROOM)]
    assert await creator.list_rooms() == {}


async def test_delete_missing_room_refused(connect: Connect) -> None:
    """DELETE_ROOM of a room that does not exist gets SEND_ERROR."""
    client, other = await open_clients(connect, 2)
    await client.send(MessageType.DELETE_ROOM, b"nowhere")
    to_client = await client.sync()
    to_other = await other.sync()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert "nowhere" in text_of(to_client[0])
    assert to_other == []


async def test_delete_room_with_members_refused(connect: Connect) -> None:
    """DELETE_ROOM of a room with a member gets SEND_ERROR and leaves the room
    unchanged and working."""
    history = scene(2)
    creator, member, outsider = await room_with_members(
        connect, 2, outsiders=1, history=history
    )
    before = await outsider.list_rooms()
    await outsider.send(MessageType.DELETE_ROOM, ROOM.encode())
    to_outsider = significant(await outsider.sync())
    after = await outsider.list_rooms()
    probe = command(140, "/still-here", command_id=9)
    await creator.send_raw(probe)
    await creator.sync()
    to_member = await member.sync()

    assert [frame.kind for frame in to_outsider] == [MessageType.SEND_ERROR]
    assert after == before
    assert [bytes(f.wire) for f in to_member if f.kind > 100] == [probe]


@pytest.mark.parametrize("how", ["leave", "drop"])
async def test_creator_gone_before_content_deletes_room(
    connect: Connect, how: str
) -> None:
    """A creator that leaves or drops before CONTENT takes its room with it, even
    with keep_open set."""
    creator, outsider = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    await creator.send_raw(command(151, "/half", b"x"))
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(ROOM) + encode_bool(True)
    )
    await creator.sync()
    await outsider.sync()
    creator_id = peer_id(creator)[0]
    if how == "leave":
        await creator.send(MessageType.LEAVE_ROOM, ROOM.encode())
        await creator.expect(MessageType.LEAVE_ROOM)
    else:
        await creator.aclose()

    count = 2 if how == "leave" else 3
    to_outsider = [await next_significant(outsider) for _ in range(count)]
    expected = [
        (MessageType.CLIENT_UPDATE, {creator_id: {"room": None}}),
        (MessageType.ROOM_DELETED, ROOM),
        (MessageType.CLIENT_DISCONNECTED, creator_id),
    ]

    assert summary(to_outsider) == expected[:count]
    assert await outsider.list_rooms() == {}


# ---------------------------------------------------------------- §4 disconnecting


async def test_disconnect_leaves_room_then_announces(connect: Connect) -> None:
    """A client that closes its socket leaves its room (deleted when it was the
    last), then everyone gets CLIENT_DISCONNECTED with its id as a string."""
    creator, member, outsider = await room_with_members(connect, 2, outsiders=1)
    member_id = peer_id(member)[0]
    creator_id = peer_id(creator)[0]
    await member.aclose()
    to_creator = [await next_significant(creator) for _ in range(2)]
    to_outsider_first = [await next_significant(outsider) for _ in range(2)]
    await creator.aclose()
    to_outsider_last = [await next_significant(outsider) for _ in range(3)]

    assert summary(to_creator) == [
        (MessageType.CLIENT_UPDATE, {member_id: {"room": None}}),
        (MessageType.CLIENT_DISCONNECTED, member_id),
    ]
    assert summary(to_outsider_first) == summary(to_creator)
    assert summary(to_outsider_last) == [
        (MessageType.CLIENT_UPDATE, {creator_id: {"room": None}}),
        (MessageType.ROOM_DELETED, ROOM),
        (MessageType.CLIENT_DISCONNECTED, creator_id),
    ]
    assert list(await outsider.list_clients()) == [peer_id(outsider)[0]]


# ---------------------------------------------------------------- §4 / §4b errors


async def test_client_send_error_broadcast_to_all(connect: Connect) -> None:
    """A client's SEND_ERROR is relayed to every client, the sender included."""
    sender, first, second = await open_clients(connect, 3)
    await sender.send(MessageType.SEND_ERROR, encode_string("disk full ✗"))
    received = [await client.sync() for client in (sender, first, second)]

    assert [summary(frames) for frames in received] == [
        [(MessageType.SEND_ERROR, "disk full ✗")]
    ] * 3


@pytest.mark.parametrize("kind", [0, 2, 8, 13, 99, 100, 6, 19, 20, 21, 22])
async def test_unaccepted_control_types_refused_naming_type(
    connect: Connect, kind: int
) -> None:
    """Unknown types up to 100, type 100 and relay-only types get SEND_ERROR naming
    the type, are not forwarded, and the connection keeps working."""
    sender, member, outsider = await room_with_members(connect, 2, outsiders=1)
    await sender.send(kind, encode_string("/cube") + b"payload")
    to_sender = significant(await sender.sync())
    to_member = significant(await member.sync())
    to_outsider = significant(await outsider.sync())
    rooms = await sender.list_rooms()

    assert [frame.kind for frame in to_sender] == [MessageType.SEND_ERROR]
    assert re.search(rf"\b{kind}\b", text_of(to_sender[0]))
    assert to_member == []
    assert to_outsider == []
    assert rooms[ROOM]["command_count"] == 0


@pytest.mark.parametrize("kind", [101, 777, 4242, 65535])
async def test_unnamed_room_types_forwarded_and_stored(
    connect: Connect, kind: int
) -> None:
    """A room command type the relay has no name for is forwarded and stored."""
    creator, member, late = await room_with_members(connect, 2, outsiders=1)
    wires = [room_command(kind, b"opaque" + bytes([n]) * n, n) for n in range(3)]
    await creator.send_raw(b"".join(wires))
    await creator.sync()
    to_member = await member.sync()
    replayed = await late.join_room(ROOM)

    assert [bytes(f.wire) for f in to_member if f.kind > 100] == wires
    assert [bytes(frame.wire) for frame in replayed] == wires


@pytest.mark.parametrize(
    "payload",
    [
        encode_string("{not json"),
        encode_string("[1, 2]"),
        encode_string('"text"'),
        encode_string("42"),
        encode_string("null"),
        struct.pack("<I", 3) + b"\xff{}",
        struct.pack("<I", 99) + b"{}",
        b"",
    ],
    ids=["bad", "list", "string", "number", "null", "not-utf8", "overrun", "empty"],
)
async def test_client_attributes_bad_json_refused(
    connect: Connect, payload: bytes
) -> None:
    """SET_CLIENT_CUSTOM_ATTRIBUTES whose JSON is malformed or not an object gets
    SEND_ERROR, changes nothing, and the connection keeps working."""
    client, other = await open_clients(connect, 2)
    await client.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, payload)
    to_client = await client.sync()
    to_other = await other.sync()
    await client.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_json({"user_color": "blue"})
    )
    after = await other.sync()
    client_id = peer_id(client)[0]

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert to_other == []
    assert summary(after) == [
        (MessageType.CLIENT_UPDATE, {client_id: {"user_color": "blue"}})
    ]


async def test_room_attributes_bad_json_refused(connect: Connect) -> None:
    """SET_ROOM_CUSTOM_ATTRIBUTES whose JSON is not an object gets SEND_ERROR."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_string("[true]"),
    )
    to_creator = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())

    assert [frame.kind for frame in to_creator] == [MessageType.SEND_ERROR]
    assert to_outsider == []
