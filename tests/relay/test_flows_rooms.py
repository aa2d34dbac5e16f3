"""Creating and joining rooms (PROTOCOL.md §4, §4b, §7).

Each test talks to a real relay over real TCP on 127.0.0.1; see tests/relay/flows.py
for how "nothing else arrived" is checked.
"""

import struct
from typing import Any

import pytest

from relay.config import Settings
from relay.messages import MessageType
from relay.protocol import (
    encode_bool,
    encode_frame,
    encode_string,
)
from tests.mixer_client import join_payload, json_of, room_command
from tests.relay.flows import (
    ROOM,
    Connect,
    command,
    next_significant,
    open_clients,
    peer_id,
    room_attributes,
    room_with_members,
    scene,
    settle,
    significant,
    summary,
    text_of,
)

# ---------------------------------------------------------------- §4 creating


async def test_create_room_sends_join_then_content_then_announces(
    connect: Connect,
) -> None:
    """Creating a room sends JOIN_ROOM then CONTENT to the creator, then the full
    attributes (joinable false) and the creator's room to everyone."""
    creator, outsider = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    to_creator = [await next_significant(creator) for _ in range(4)]
    to_outsider = [await next_significant(outsider) for _ in range(2)]
    creator_id = peer_id(creator)[0]
    announcements = [
        (MessageType.ROOM_UPDATE, {ROOM: room_attributes()}),
        (MessageType.CLIENT_UPDATE, {creator_id: {"room": ROOM}}),
    ]

    assert summary(to_creator) == [
        (MessageType.JOIN_ROOM, ROOM),
        (MessageType.CONTENT, b""),
        *announcements,
    ]
    assert summary(to_outsider) == announcements


async def test_content_makes_room_joinable(connect: Connect) -> None:
    """CONTENT after the upload makes the room joinable, announced to everyone."""
    creator, outsider = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    for wire in scene(2):
        await creator.send_raw(wire)

    await settle([creator, outsider])
    await creator.send(MessageType.CONTENT)
    to_creator = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())
    joinable = [(MessageType.ROOM_UPDATE, {ROOM: {"joinable": True}})]

    assert summary(to_creator) == joinable
    assert summary(to_outsider)[-1:] == joinable
    assert (await outsider.list_rooms())[ROOM]["joinable"] is True


@pytest.mark.parametrize(
    "relay_settings",
    [Settings(host="127.0.0.1", port=0, room_update_interval=30, admin_socket="off")],
    ids=["statistics-every-30s"],
)
async def test_joinable_room_is_announced_with_its_size(connect: Connect) -> None:
    """Whoever sees a room become joinable knows its command_count and
    byte_size by then, however long the statistics timer: the add-on of a
    joiner that reacts at once divides by byte_size for its progress bar
    (wire7: it saw 0 until the timer's update, behind the history)."""
    creator, outsider = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    upload = scene(2)

    await creator.send_raw(b"".join(upload) + encode_frame(MessageType.CONTENT))
    seen: dict[str, Any] = {}
    for frame in await outsider.sync():
        if frame.kind == MessageType.ROOM_UPDATE:
            seen.update(json_of(frame).get(ROOM, {}))
            if seen.get("joinable"):
                break

    assert seen["joinable"] is True
    assert seen["command_count"] == 2
    assert seen["byte_size"] == sum(map(len, upload))


async def test_content_twice_refused(connect: Connect) -> None:
    """A second CONTENT for a joinable room gets SEND_ERROR and announces nothing."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(MessageType.CONTENT)
    to_creator = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())

    assert [frame.kind for frame in to_creator] == [MessageType.SEND_ERROR]
    assert to_outsider == []
    assert (await outsider.list_rooms())[ROOM]["joinable"] is True


async def test_content_outside_room_refused(connect: Connect) -> None:
    """CONTENT from a client in no room gets SEND_ERROR and announces nothing."""
    client, other = await open_clients(connect, 2)
    await client.send(MessageType.CONTENT)
    to_client = await client.sync()
    to_other = await other.sync()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert to_other == []


# ---------------------------------------------------------------- §4 joining


async def test_join_streams_clear_history_then_confirms(connect: Connect) -> None:
    """A joiner gets CLEAR_CONTENT, the history byte-identical and in order (ids
    untouched), JOIN_ROOM, then everyone learns its room."""
    history = [
        command(151, "/a", b"one", command_id=7),
        room_command(140, b"\x00" * 300, command_id=0),
        command(202, "/mesh", b"two", command_id=0xFFFFFFFF),
    ]
    creator, joiner, outsider = await room_with_members(
        connect, 1, outsiders=2, history=history
    )
    await joiner.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    to_joiner = [await next_significant(joiner) for _ in range(len(history) + 3)]
    to_creator = await next_significant(creator)
    to_outsider = await next_significant(outsider)
    joiner_id = peer_id(joiner)[0]
    joined = (MessageType.CLIENT_UPDATE, {joiner_id: {"room": ROOM}})

    assert to_joiner[0].kind == MessageType.CLEAR_CONTENT
    assert bytes(to_joiner[0].payload) == b""
    assert [bytes(frame.wire) for frame in to_joiner[1:-2]] == history
    assert summary(to_joiner[-2:]) == [(MessageType.JOIN_ROOM, ROOM), joined]
    assert summary([to_creator]) == [joined]
    assert summary([to_outsider]) == [joined]


async def test_join_refused_when_already_in_room(connect: Connect) -> None:
    """JOIN_ROOM from a client already in a room gets SEND_ERROR, whether the
    room exists or not, and the client stays where it was."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    to_same = significant(await creator.sync())
    await creator.send(MessageType.JOIN_ROOM, join_payload("elsewhere"))
    to_other = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())
    rooms = await outsider.list_rooms()
    clients = await outsider.list_clients()

    assert [frame.kind for frame in to_same] == [MessageType.SEND_ERROR]
    assert [frame.kind for frame in to_other] == [MessageType.SEND_ERROR]
    assert to_outsider == []
    assert list(rooms) == [ROOM]
    assert clients[peer_id(creator)[0]]["room"] == ROOM


async def test_join_refused_when_not_joinable(connect: Connect) -> None:
    """Joining a room whose creator has not sent CONTENT gets SEND_ERROR, and the
    joiner stays outside (it gets none of the room's commands)."""
    creator, joiner = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    await creator.sync()
    await joiner.sync()
    await joiner.send(MessageType.JOIN_ROOM, join_payload(ROOM))
    to_joiner = significant(await joiner.sync())
    await creator.send_raw(command(151, "/late", b"x"))
    await creator.send(MessageType.CONTENT)
    await creator.sync()
    later = significant(await joiner.sync())
    clients = await joiner.list_clients()

    assert [frame.kind for frame in to_joiner] == [MessageType.SEND_ERROR]
    assert ROOM in text_of(to_joiner[0])
    assert [frame.kind for frame in later] == [MessageType.ROOM_UPDATE]
    assert clients[peer_id(joiner)[0]]["room"] is None


@pytest.mark.parametrize(
    ("blender_version", "mixer_version"),
    [("3.5.0", "1.0.0"), ("3.4.1", "1.0.1"), ("", "")],
)
async def test_join_refused_on_version_mismatch(
    connect: Connect, blender_version: str, mixer_version: str
) -> None:
    """A joiner whose Blender or Mixer version differs from the room's gets
    SEND_ERROR naming the room and both versions, and stays outside."""
    creator, joiner = await room_with_members(connect, 1, outsiders=1)
    await joiner.send(
        MessageType.JOIN_ROOM, join_payload(ROOM, blender_version, mixer_version)
    )
    to_joiner = significant(await joiner.sync())
    to_creator = significant(await creator.sync())
    clients = await joiner.list_clients()

    assert [frame.kind for frame in to_joiner] == [MessageType.SEND_ERROR]
    error = text_of(to_joiner[0])
    assert ROOM in error
    assert "3.4.1" in error
    assert "1.0.0" in error
    assert to_creator == []
    assert clients[peer_id(joiner)[0]]["room"] is None


async def test_join_refused_on_version_mismatch_despite_joiner_flag(
    connect: Connect,
) -> None:
    """Only the room's ignore_version_check counts: a joiner that sets it still
    needs the room's versions."""
    _creator, joiner = await room_with_members(connect, 1, outsiders=1)
    await joiner.send(
        MessageType.JOIN_ROOM,
        join_payload(ROOM, "3.5.0", "2.0.0", ignore_version_check=True),
    )
    to_joiner = significant(await joiner.sync())
    clients = await joiner.list_clients()

    assert [frame.kind for frame in to_joiner] == [MessageType.SEND_ERROR]
    assert clients[peer_id(joiner)[0]]["room"] is None


async def test_join_accepted_on_version_mismatch_when_room_ignores_check(
    connect: Connect,
) -> None:
    """A room created with ignore_version_check takes joiners of any version."""
    history = scene(2)
    creator, joiner = await open_clients(connect, 2)
    await creator.create_room(ROOM, ignore_version_check=True, commands=history)
    received = await joiner.join_room(ROOM, "2.93.0", "0.9.0")
    clients = await joiner.list_clients()

    assert [bytes(frame.wire) for frame in received] == history
    assert clients[peer_id(joiner)[0]]["room"] == ROOM


async def test_join_accepts_vrtist_four_fields(connect: Connect) -> None:
    """JOIN_ROOM without the trailing generic_protocol bool (VRtist) creates and
    joins rooms, reading the flag as false."""
    four_fields = (
        encode_string(ROOM)
        + encode_string("3.4.1")
        + encode_string("1.0.0")
        + encode_bool(False)
    )
    creator, joiner = await open_clients(connect, 2)
    await creator.send(MessageType.JOIN_ROOM, four_fields)
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    await creator.send(MessageType.CONTENT)
    await creator.sync()
    await joiner.send(MessageType.JOIN_ROOM, four_fields)
    await joiner.expect(MessageType.CLEAR_CONTENT)
    confirmation = await joiner.expect(MessageType.JOIN_ROOM)
    rooms = await joiner.list_rooms()

    assert text_of(confirmation) == ROOM
    assert rooms[ROOM]["generic_protocol"] is False
    assert rooms[ROOM]["ignore_version_check"] is False


async def test_join_reads_missing_fields_as_empty(connect: Connect) -> None:
    """JOIN_ROOM holding only the room name creates a room with empty versions and
    false flags."""
    (creator,) = await open_clients(connect, 1)
    await creator.send(MessageType.JOIN_ROOM, encode_string(ROOM))
    await creator.expect(MessageType.JOIN_ROOM)
    rooms = await creator.list_rooms()

    assert rooms[ROOM] == room_attributes(
        blender_version="", mixer_version="", generic_protocol=False
    )


async def test_join_refuses_raw_text_room_name(connect: Connect) -> None:
    """A room name sent as raw text (old VRtist) reads as an absurd length and gets
    SEND_ERROR; no room is created or joined and the connection stays."""
    _creator, client = await room_with_members(connect, 1, outsiders=1)
    await client.send(MessageType.JOIN_ROOM, b"studio-vr")
    to_client = significant(await client.sync())
    rooms = await client.list_rooms()
    clients = await client.list_clients()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert list(rooms) == [ROOM]
    assert clients[peer_id(client)[0]]["room"] is None


async def test_join_refuses_vrtist_truncated_non_ascii_name(connect: Connect) -> None:
    """A name whose byte count exceeds the bytes VRtist wrote (non-ASCII) is a
    malformed request: SEND_ERROR, no room, connection kept."""
    name = "café".encode()
    payload = (
        struct.pack("<I", len(name))
        + name[:4]
        + encode_string("3.4.1")
        + encode_string("1.0.0")
        + encode_bool(False)
    )
    (client,) = await open_clients(connect, 1)
    await client.send(MessageType.JOIN_ROOM, payload)
    to_client = await client.sync()
    rooms = await client.list_rooms()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert rooms == {}


async def test_join_refuses_overrunning_string(connect: Connect) -> None:
    """A JOIN_ROOM string whose length overruns the payload gets SEND_ERROR."""
    (client,) = await open_clients(connect, 1)
    await client.send(MessageType.JOIN_ROOM, struct.pack("<I", 50) + b"short")
    to_client = await client.sync()
    rooms = await client.list_rooms()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert rooms == {}


async def test_join_refuses_empty_room_name(connect: Connect) -> None:
    """JOIN_ROOM with an empty room name gets SEND_ERROR and creates nothing."""
    client, other = await open_clients(connect, 2)
    await client.send(MessageType.JOIN_ROOM, join_payload(""))
    to_client = await client.sync()
    to_other = await other.sync()
    rooms = await client.list_rooms()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert to_other == []
    assert rooms == {}


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (MessageType.JOIN_ROOM, join_payload("x").replace(b"x", b"\xff", 1)),
        (MessageType.SET_CLIENT_NAME, b"\xc3\x28"),
        (MessageType.DELETE_ROOM, b"\xff\xfe"),
        (MessageType.LEAVE_ROOM, b"\xff"),
        (MessageType.SEND_ERROR, struct.pack("<I", 2) + b"\xe2\x82"),
        (
            MessageType.SET_ROOM_KEEP_OPEN,
            struct.pack("<I", 1) + b"\x80" + encode_bool(True),
        ),
    ],
    ids=["join", "client-name", "delete", "leave", "error", "keep-open"],
)
async def test_non_utf8_text_refused_connection_kept(
    connect: Connect, kind: int, payload: bytes
) -> None:
    """Text that is not UTF-8 gets SEND_ERROR (or, for LEAVE_ROOM outside a room,
    its usual refusal) and the connection keeps working."""
    client, other = await open_clients(connect, 2)
    await client.send(kind, payload)
    to_client = await client.sync()
    to_other = await other.sync()
    rooms = await client.list_rooms()

    assert [frame.kind for frame in to_client] == [MessageType.SEND_ERROR]
    assert to_other == []
    assert rooms == {}
