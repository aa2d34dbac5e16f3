"""Accepting clients and their attributes (PROTOCOL.md §3, §4).

Each test talks to a real relay over real TCP on 127.0.0.1; see tests/relay/flows.py
for how "nothing else arrived" is checked.
"""

from relay.messages import MessageType
from relay.protocol import (
    encode_bool,
    encode_json,
    encode_string,
)
from tests.mixer_client import json_of
from tests.relay.flows import (
    ROOM,
    Connect,
    open_clients,
    peer_id,
    room_attributes,
    room_with_members,
    scene,
    settle,
    significant,
    summary,
)

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


async def test_attribute_objects_in_another_key_order_broadcast_nothing(
    connect: Connect,
) -> None:
    """An object attribute sent again with its keys in another order (which
    carries no meaning in JSON) is no change: no CLIENT_UPDATE, no ROOM_UPDATE
    (wire7: ours sent one, the original none)."""
    creator, outsider = await room_with_members(connect, 1, outsiders=1)
    await creator.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json({"view": {"x": 1, "y": [2, {"a": 3, "b": 4}]}}),
    )
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_json({"camera": {"near": 0.1, "far": 100}}),
    )
    await settle([creator, outsider])

    await creator.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json({"view": {"y": [2, {"b": 4, "a": 3}], "x": 1}}),
    )
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string(ROOM) + encode_json({"camera": {"far": 100, "near": 0.1}}),
    )

    assert significant(await creator.sync()) == []
    assert significant(await outsider.sync()) == []


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
