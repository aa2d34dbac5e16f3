"""Every flow of PROTOCOL.md §2-§5, §4b and §7, as a small client script sees it.

Each test talks to a real relay over real TCP on 127.0.0.1. "Nothing else arrived"
is checked with a CLIENT_ID round trip (``MixerClient.sync``): the relay writes to
one client in order, so a broadcast caused by an earlier request is queued before
the answer. Statistics-only ROOM_UPDATEs are sent on a timer, so tests that look at
exact order skip them (``significant``) and check statistics on their own.
"""

import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from relay.messages import MessageType
from relay.protocol import (
    Frame,
    PayloadReader,
    encode_bool,
    encode_frame,
    encode_json,
    encode_string,
)
from tests.mixer_client import MixerClient, join_payload, json_of, room_command

Connect = Callable[[], Awaitable[MixerClient]]

ROOM = "studio"
STATISTICS = frozenset({"byte_size", "command_count"})
TRANSIENT = frozenset({205, 139, 1000})
BIG_HISTORY = 300
BIG_COMMAND_BYTES = 64 * 1024


# ---------------------------------------------------------------- helpers


def text_of(frame: Frame) -> str:
    """Decode a payload that is one length-prefixed string."""
    reader = PayloadReader(frame.payload)
    text = reader.read_string()
    assert reader.at_end, "trailing bytes after the string"
    return text


def raw_text_of(frame: Frame) -> str:
    return str(frame.payload, "utf-8")


def is_statistics(frame: Frame) -> bool:
    """Tell whether a frame is a timer-driven command_count/byte_size update."""
    if frame.kind != MessageType.ROOM_UPDATE:
        return False

    update = json_of(frame)
    return all(set(attributes) <= STATISTICS for attributes in update.values())


def significant(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if not is_statistics(frame)]


def summary(frames: list[Frame]) -> list[tuple[int, Any]]:
    """Kinds and decoded payloads of control frames, for readable comparisons."""
    result: list[tuple[int, Any]] = []
    for frame in frames:
        kind = frame.kind
        if kind in (
            MessageType.CLIENT_UPDATE,
            MessageType.ROOM_UPDATE,
            MessageType.LIST_ROOMS,
            MessageType.LIST_CLIENTS,
        ):
            result.append((kind, json_of(frame)))
        elif kind in (
            MessageType.JOIN_ROOM,
            MessageType.ROOM_DELETED,
            MessageType.CLIENT_DISCONNECTED,
            MessageType.SEND_ERROR,
        ):
            result.append((kind, text_of(frame)))
        elif kind == MessageType.CLIENT_ID:
            result.append((kind, raw_text_of(frame)))
        else:
            result.append((kind, bytes(frame.payload)))

    return result


async def next_significant(client: MixerClient, timeout: float = 5.0) -> Frame:
    """Return the next frame that is not a statistics update."""
    with anyio.fail_after(timeout):
        while True:
            frame = await client.receive()
            if not is_statistics(frame):
                return frame


async def settle(clients: list[MixerClient]) -> None:
    """Let every pending broadcast reach every client, and drop it."""
    for _ in range(2):
        for client in clients:
            await client.sync()


async def open_clients(connect: Connect, count: int) -> list[MixerClient]:
    """Connect and handshake ``count`` clients, with nothing left to read."""
    clients = []
    for index in range(count):
        client = await connect()
        await client.handshake(f"artist-{index}")
        clients.append(client)

    await settle(clients)
    return clients


def peer_id(client: MixerClient) -> tuple[str, str, int]:
    """The id, ip and port the relay sees for this client."""
    ip, port = client.stream.extra(SocketAttribute.local_address)[:2]
    return f"{ip}:{port}", ip, port


def command(kind: int, path: str, body: bytes = b"", command_id: int = 0) -> bytes:
    """A room command whose payload starts with an object path."""
    return room_command(kind, encode_string(path) + body, command_id)


def scene(count: int = 3) -> list[bytes]:
    return [
        command(151, f"/object/{index}", bytes([index]) * 10, 100 + index)
        for index in range(count)
    ]


async def room_with_members(
    connect: Connect, members: int, outsiders: int = 0, history: list[bytes] = ()
) -> list[MixerClient]:
    """A joinable room holding ``history``, with ``members`` clients in it
    (the creator first), then ``outsiders`` clients in no room."""
    clients = await open_clients(connect, members + outsiders)
    await clients[0].create_room(ROOM, commands=list(history))
    for member in clients[1:members]:
        await member.join_room(ROOM)

    await settle(clients)
    return clients


async def stored_of(client: MixerClient) -> tuple[int, int]:
    """The room's command_count and byte_size, as LIST_ROOMS reports them."""
    attributes = (await client.list_rooms())[ROOM]
    return attributes["command_count"], attributes["byte_size"]


def room_attributes(**changes: Any) -> dict[str, Any]:
    """A fresh room's attributes, as the default create_room makes it."""
    return {
        "keep_open": False,
        "blender_version": "3.4.1",
        "mixer_version": "1.0.0",
        "ignore_version_check": False,
        "generic_protocol": True,
        "command_count": 0,
        "byte_size": 0,
        "joinable": False,
        **changes,
    }


async def receive_until_command(
    client: MixerClient, command_id: int, timeout: float = 30.0
) -> list[Frame]:
    """Every frame up to and including the room command with ``command_id``."""
    frames: list[Frame] = []
    with anyio.fail_after(timeout):
        while True:
            frame = await client.receive()
            frames.append(frame)
            if frame.kind > 100 and frame.command_id == command_id:
                return frames


# ---------------------------------------------------------------- §4 accepting


async def test_accept_announces_newcomer_to_everyone(connect: Connect) -> None:
    """A new connection is announced with its id, ip, port and a null room to every
    client, the newcomer included."""
    first = await connect()
    to_first_itself = await first.receive()
    second = await connect()
    to_second_itself = await second.receive()
    to_first_about_second = await first.receive()
    first_id, first_ip, first_port = peer_id(first)
    second_id, second_ip, second_port = peer_id(second)
    second_attributes = {
        "id": second_id,
        "ip": second_ip,
        "port": second_port,
        "room": None,
    }

    assert to_first_itself.kind == MessageType.CLIENT_UPDATE
    assert json_of(to_first_itself) == {
        first_id: {"id": first_id, "ip": first_ip, "port": first_port, "room": None}
    }
    assert to_second_itself.kind == MessageType.CLIENT_UPDATE
    assert json_of(to_second_itself) == {second_id: second_attributes}
    assert to_first_about_second.kind == MessageType.CLIENT_UPDATE
    assert json_of(to_first_about_second) == {second_id: second_attributes}
    assert type(json_of(to_second_itself)[second_id]["port"]) is int


async def test_client_id_answers_raw_text(connect: Connect) -> None:
    """CLIENT_ID is answered with the "ip:port" id as raw text, without a length."""
    client = await connect()
    await client.send(MessageType.CLIENT_ID)
    frame = await client.expect(MessageType.CLIENT_ID)

    assert bytes(frame.payload) == peer_id(client)[0].encode()


async def test_list_clients_reports_exact_attributes(connect: Connect) -> None:
    """LIST_CLIENTS maps each id to its id, ip, port, room and custom attributes."""
    creator, outsider = await open_clients(connect, 2)
    await creator.create_room(ROOM)
    clients = await outsider.list_clients()
    creator_id, creator_ip, creator_port = peer_id(creator)
    outsider_id, outsider_ip, outsider_port = peer_id(outsider)

    assert clients == {
        creator_id: {
            "id": creator_id,
            "ip": creator_ip,
            "port": creator_port,
            "room": ROOM,
            "user_name": "artist-0",
        },
        outsider_id: {
            "id": outsider_id,
            "ip": outsider_ip,
            "port": outsider_port,
            "room": None,
            "user_name": "artist-1",
        },
    }
    assert type(clients[creator_id]["port"]) is int


async def test_list_rooms_reports_exact_attributes(connect: Connect) -> None:
    """LIST_ROOMS maps each room name to exactly its attributes, with their JSON
    types, and no "name" key."""
    history = scene(2)
    (creator,) = await room_with_members(connect, 1, history=history)
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_json({"color": "red"}),
    )
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(ROOM) + encode_bool(True)
    )
    rooms = await creator.list_rooms()
    expected = room_attributes(
        keep_open=True,
        command_count=2,
        byte_size=sum(len(wire) for wire in history),
        joinable=True,
        color="red",
    )

    assert rooms == {ROOM: expected}
    assert {key: type(value) for key, value in rooms[ROOM].items()} == {
        key: type(value) for key, value in expected.items()
    }


# ---------------------------------------------------------------- §4 attributes


async def test_client_attributes_broadcast_only_changed_keys(connect: Connect) -> None:
    """SET_CLIENT_CUSTOM_ATTRIBUTES stores the values and tells everyone only the
    keys whose value changed."""
    setter, other = await open_clients(connect, 2)
    await setter.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json({"user_name": "artist-0", "user_color": [1, 0, 0], "x": {"a": 1}}),
    )
    to_setter = await setter.sync()
    to_other = await other.sync()
    clients = await other.list_clients()
    setter_id = peer_id(setter)[0]
    update = {setter_id: {"user_color": [1, 0, 0], "x": {"a": 1}}}

    assert summary(to_setter) == [(MessageType.CLIENT_UPDATE, update)]
    assert summary(to_other) == [(MessageType.CLIENT_UPDATE, update)]
    assert clients[setter_id]["user_color"] == [1, 0, 0]
    assert clients[setter_id]["user_name"] == "artist-0"


async def test_client_attributes_unchanged_broadcast_nothing(connect: Connect) -> None:
    """Setting client attributes to the values they already have sends nothing."""
    setter, other = await open_clients(connect, 2)
    await setter.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_json({"user_name": "artist-0"})
    )
    await setter.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_json({}))
    to_setter = await setter.sync()
    to_other = await other.sync()

    assert to_setter == []
    assert to_other == []


async def test_client_attributes_reserved_keys_ignored(connect: Connect) -> None:
    """Custom attributes named id, ip, port or room are neither stored nor
    broadcast; the relay's own values stand."""
    setter, other = await open_clients(connect, 2)
    await setter.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json(
            {"id": "1.2.3.4:5", "ip": "1.2.3.4", "port": 5, "room": "x", "mood": "ok"}
        ),
    )
    to_setter = await setter.sync()
    to_other = await other.sync()
    setter_id, setter_ip, setter_port = peer_id(setter)
    clients = await other.list_clients()

    assert summary(to_setter) == [
        (MessageType.CLIENT_UPDATE, {setter_id: {"mood": "ok"}})
    ]
    assert summary(to_other) == summary(to_setter)
    assert clients[setter_id] == {
        "id": setter_id,
        "ip": setter_ip,
        "port": setter_port,
        "room": None,
        "user_name": "artist-0",
        "mood": "ok",
    }


async def test_set_client_name_sets_user_name(connect: Connect) -> None:
    """SET_CLIENT_NAME (raw text) sets user_name, broadcast like a custom
    attribute, and only when it changes."""
    setter, other = await open_clients(connect, 2)
    await setter.send(MessageType.SET_CLIENT_NAME, "Zoé".encode())
    to_other_first = await other.sync()
    await setter.send(MessageType.SET_CLIENT_NAME, "Zoé".encode())
    await setter.sync()
    to_other_again = await other.sync()
    setter_id = peer_id(setter)[0]
    clients = await other.list_clients()

    assert summary(to_other_first) == [
        (MessageType.CLIENT_UPDATE, {setter_id: {"user_name": "Zoé"}})
    ]
    assert to_other_again == []
    assert clients[setter_id]["user_name"] == "Zoé"


async def test_room_attributes_broadcast_only_changed_keys(connect: Connect) -> None:
    """SET_ROOM_CUSTOM_ATTRIBUTES tells everyone only the changed keys, and nothing
    when nothing changed."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    attributes = encode_string(ROOM) + encode_json({"color": "red", "size": 2})
    await creator.send(MessageType.SET_ROOM_CUSTOM_ATTRIBUTES, attributes)
    first = significant(await outsider.sync())
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_json({"color": "red", "size": 3}),
    )
    second = significant(await outsider.sync())
    await creator.sync()
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_json({"size": 3}),
    )
    to_creator = significant(await creator.sync())
    third = significant(await outsider.sync())
    rooms = await outsider.list_rooms()

    assert summary(first) == [
        (MessageType.ROOM_UPDATE, {ROOM: {"color": "red", "size": 2}})
    ]
    assert summary(second) == [(MessageType.ROOM_UPDATE, {ROOM: {"size": 3}})]
    assert to_creator == []
    assert third == []
    assert rooms[ROOM]["color"] == "red"
    assert rooms[ROOM]["size"] == 3


async def test_room_attributes_reserved_keys_ignored(connect: Connect) -> None:
    """Room custom attributes named like the relay's own are neither stored nor
    broadcast; the relay's values stand."""
    history = scene(2)
    creator, outsider = await room_with_members(
        connect, 1, outsiders=1, history=history
    )
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM)
        + encode_json(
            {
                "keep_open": True,
                "joinable": False,
                "command_count": 99,
                "byte_size": 1,
                "blender_version": "9.9",
                "mixer_version": "9.9",
                "ignore_version_check": True,
                "generic_protocol": False,
                "shot": 4,
            }
        ),
    )
    to_creator = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())
    rooms = await outsider.list_rooms()

    assert summary(to_creator) == [(MessageType.ROOM_UPDATE, {ROOM: {"shot": 4}})]
    assert summary(to_outsider) == summary(to_creator)
    assert rooms[ROOM] == room_attributes(
        command_count=2,
        byte_size=sum(len(wire) for wire in history),
        joinable=True,
        shot=4,
    )


async def test_room_attributes_missing_room_refused(connect: Connect) -> None:
    """SET_ROOM_CUSTOM_ATTRIBUTES for a room that does not exist gets SEND_ERROR."""
    (client,) = await open_clients(connect, 1)
    await client.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string("nowhere") + encode_json({"color": "red"}),
    )
    error = await client.expect_error()
    rooms = await client.list_rooms()

    assert "nowhere" in error
    assert rooms == {}


async def test_keep_open_broadcast_only_on_change(connect: Connect) -> None:
    """SET_ROOM_KEEP_OPEN tells everyone the new value, and nothing when it is
    already the room's value."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    keep_open = MessageType.SET_ROOM_KEEP_OPEN
    await creator.send(keep_open, encode_string(ROOM) + encode_bool(False))
    unchanged = significant(await creator.sync())
    await creator.send(keep_open, encode_string(ROOM) + encode_bool(True))
    changed = significant(await creator.sync())
    await creator.send(keep_open, encode_string(ROOM) + encode_bool(True))
    again = significant(await creator.sync())
    to_outsider = significant(await outsider.sync())
    rooms = await outsider.list_rooms()

    assert unchanged == []
    assert summary(changed) == [(MessageType.ROOM_UPDATE, {ROOM: {"keep_open": True}})]
    assert again == []
    assert summary(to_outsider) == summary(changed)
    assert rooms[ROOM]["keep_open"] is True


async def test_keep_open_missing_room_refused(connect: Connect) -> None:
    """SET_ROOM_KEEP_OPEN for a room that does not exist gets SEND_ERROR."""
    (client,) = await open_clients(connect, 1)
    await client.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string("nowhere") + encode_bool(True)
    )
    error = await client.expect_error()
    rooms = await client.list_rooms()

    assert "nowhere" in error
    assert rooms == {}


async def test_keep_open_false_on_empty_room_keeps_it(connect: Connect) -> None:
    """Setting keep_open false on an empty kept room leaves it in place: only
    leaving deletes."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    keep_open = MessageType.SET_ROOM_KEEP_OPEN
    await creator.send(keep_open, encode_string(ROOM) + encode_bool(True))
    await creator.send(MessageType.LEAVE_ROOM, ROOM.encode())
    await creator.expect(MessageType.LEAVE_ROOM)
    await outsider.send(keep_open, encode_string(ROOM) + encode_bool(False))
    to_outsider = significant(await outsider.sync())
    rooms = await outsider.list_rooms()

    assert MessageType.ROOM_DELETED not in [frame.kind for frame in to_outsider]
    assert rooms[ROOM]["keep_open"] is False


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


# ---------------------------------------------------------------- §7 ordering


def big_history(count: int = BIG_HISTORY) -> list[bytes]:
    return [
        command(151, f"/image/{index}", bytes([index % 251]) * BIG_COMMAND_BYTES, index)
        for index in range(count)
    ]


async def test_join_direct_replies_wait_for_history(connect: Connect) -> None:
    """Direct replies to requests a joiner sends right after JOIN_ROOM arrive only
    after the whole history and the JOIN_ROOM confirmation."""
    history = big_history()
    _creator, joiner = await room_with_members(connect, 1, outsiders=1, history=history)
    await joiner.send_raw(
        encode_frame(MessageType.JOIN_ROOM, join_payload(ROOM))
        + encode_frame(MessageType.CLIENT_ID)
        + encode_frame(MessageType.LIST_ROOMS)
        + encode_frame(2)
    )
    frames = significant(await joiner.receive_until(MessageType.SEND_ERROR, timeout=30))
    kinds = [frame.kind for frame in frames]
    confirmed = kinds.index(MessageType.JOIN_ROOM)

    assert kinds[0] == MessageType.CLEAR_CONTENT
    assert [bytes(f.wire) for f in frames[:confirmed] if f.kind > 100] == history
    assert kinds[1 : confirmed + 1] == [151] * len(history) + [MessageType.JOIN_ROOM]
    assert kinds[confirmed + 1 :] == [
        MessageType.CLIENT_UPDATE,
        MessageType.CLIENT_ID,
        MessageType.LIST_ROOMS,
        MessageType.SEND_ERROR,
    ]


@dataclass(frozen=True)
class Sent:
    """One room command the test sent, with what the merge rule looks at."""

    kind: int
    command_id: int
    path: str
    wire: bytes


def merged(commands: list[Sent]) -> list[Sent]:
    """The history those commands leave, by the rules of PROTOCOL.md §5."""
    history: list[Sent] = []
    for sent in commands:
        if sent.kind in TRANSIENT:
            continue

        if (
            history
            and 200 < sent.kind < 999
            and history[-1].kind == sent.kind
            and history[-1].path == sent.path
        ):
            history.pop()

        history.append(sent)

    return history


# The live pattern: drags of one object (merged), frames (never stored), data
# updates (never merged), and a different type on the same path (not merged).
LIVE_PATTERN = [
    (201, "/cube"),
    (201, "/cube"),
    (205, "/frame"),
    (201, "/cube"),
    (140, "/data"),
    (201, "/sphere"),
    (205, "/frame"),
    (202, "/sphere"),
]


def live_commands(start: int, count: int) -> list[Sent]:
    commands = []
    for index in range(start, start + count):
        kind, path = LIVE_PATTERN[index % len(LIVE_PATTERN)]
        size = 32 * 1024 if kind == 140 else 16
        body = index.to_bytes(4, "little") * (size // 4)
        wire = command(kind, path, body, command_id=10_000 + index)
        commands.append(Sent(kind, 10_000 + index, path, wire))

    return commands


def allowed_join_streams(reference: list[Sent], first: int, last: int):
    """Every stream a joiner may receive, for each moment its join could have been
    handled: after ``reference[:t]``, with first <= t <= last.

    The joiner gets the history as it stood then (the merge rule applied to what
    came before), then everything after, live. One case more: when the first
    stored command after the join merges with the history's last entry before the
    replay reached that entry, the joiner gets only the newer one (the older one
    is no longer in the history), which is still exactly once per stored state.
    """
    for moment in range(first, last + 1):
        history = merged(reference[:moment])
        live = reference[moment:]
        yield moment, history, live
        replacer = next((sent for sent in live if sent.kind not in TRANSIENT), None)
        if (
            history
            and replacer is not None
            and merged([history[-1], replacer]) == [replacer]
        ):
            yield moment, history[:-1], live


async def test_join_while_live_delivers_every_command_once_in_order(
    connect: Connect,
) -> None:
    """A client joining a big room while a member keeps sending (merged drags,
    transient frames) gets each command exactly once and in order, and a member
    keeps receiving while the joiner's history is still pending.

    The bystander member, in the room all along, receives the reference stream:
    the uploaded history (merged) then every live command. The joiner's join is
    handled at some point t of that stream, between the last command before its
    JOIN_ROOM was sent and the first sent after CLEAR_CONTENT came back. What it
    must receive is the history as it stood at t (stored commands before t, with
    the merge rule applied: superseded drags and transient frames sent before t
    are not replayed), before JOIN_ROOM, then every command after t, transient
    ones included, in order; if the first stored command after t merges with the
    history's last entry, that entry may be skipped, since the relay no longer
    holds it. The test accepts exactly those streams, for any t in that window,
    and checks that applying the merge rule to what the joiner got yields the
    relay's final history.
    """
    upload = [*big_history(), command(201, "/cube", b"start", command_id=5000)]
    creator, bystander, joiner = await open_clients(connect, 3)
    await creator.create_room(ROOM, commands=upload)
    received_history = await bystander.join_room(ROOM)
    await settle([creator, bystander, joiner])
    # Phase one ends on a drag of /cube and phase two starts with another, which
    # replaces the history's last entry while the joiner's replay is pending.
    phase_one = live_commands(0, 65)
    phase_two = live_commands(65, 64)
    phase_three = live_commands(129, 256)
    end = Sent(140, 99_999, "/end", command(140, "/end", command_id=99_999))
    live = [*phase_one, *phase_two, *phase_three, end]
    to_bystander: list[Frame] = []
    phase_two_seen = anyio.Event()

    async def follow_bystander() -> None:
        with anyio.fail_after(60):
            while True:
                frame = await bystander.receive()
                to_bystander.append(frame)
                if frame.kind > 100 and frame.command_id == phase_two[-1].command_id:
                    phase_two_seen.set()

                if frame.kind > 100 and frame.command_id == end.command_id:
                    return

    async def send_all(commands: list[Sent]) -> None:
        for sent in commands:
            await creator.send_raw(sent.wire)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow_bystander)
        await send_all(phase_one)
        await joiner.send(MessageType.JOIN_ROOM, join_payload(ROOM))
        await joiner.expect(MessageType.CLEAR_CONTENT)
        await send_all(phase_two)
        with anyio.fail_after(30):
            await phase_two_seen.wait()

        tasks.start_soon(send_all, [*phase_three, end])
        to_joiner = await receive_until_command(joiner, end.command_id, timeout=60)

    sent_by_id = {sent.command_id: sent for sent in live}
    uploaded = [
        Sent(w.kind, w.command_id, PayloadReader(w.payload).read_string(), w.wire)
        for w in received_history
    ]
    reference = uploaded + live
    bystander_ids = [f.command_id for f in to_bystander if f.kind > 100]
    confirmed = next(
        i for i, f in enumerate(to_joiner) if f.kind == MessageType.JOIN_ROOM
    )
    joiner_commands = [f for f in to_joiner if f.kind > 100]
    joiner_ids = [f.command_id for f in joiner_commands]
    before_confirmation = sum(1 for f in to_joiner[:confirmed] if f.kind > 100)
    window = range(len(uploaded), len(uploaded) + len(phase_one) + 1)
    matches = [
        (moment, len(history))
        for moment, history, after in allowed_join_streams(
            reference, window.start, window.stop - 1
        )
        if [sent.command_id for sent in history + after] == joiner_ids
    ]
    final = merged(reference)
    rooms = await creator.list_rooms()
    joiner_as_sent = [
        Sent(f.kind, f.command_id, PayloadReader(f.payload).read_string(), b"")
        for f in joiner_commands
    ]

    assert [bytes(sent.wire) for sent in uploaded] == upload
    assert bystander_ids == [sent.command_id for sent in live]
    assert all(
        bytes(f.wire) == sent_by_id[f.command_id].wire
        for f in to_bystander
        if f.kind > 100
    )
    assert len(set(joiner_ids)) == len(joiner_ids), "a command arrived twice"
    assert matches, f"joiner stream fits no join moment: ids {joiner_ids[-300:]}"
    assert before_confirmation >= min(count for _moment, count in matches)
    assert all(
        bytes(f.wire) == sent_by_id[f.command_id].wire
        for f in joiner_commands
        if f.command_id in sent_by_id
    )
    assert [s.command_id for s in merged(joiner_as_sent)] == [
        s.command_id for s in final
    ]
    assert rooms[ROOM]["command_count"] == len(final)
    assert rooms[ROOM]["byte_size"] == sum(len(sent.wire) for sent in final)
