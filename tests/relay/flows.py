"""Helpers shared by the flow tests (every flow of PROTOCOL.md §2-§5, §4b, §7).

"Nothing else arrived" is checked with a CLIENT_ID round trip
(``MixerClient.sync``): the relay writes to one client in order, so a broadcast
caused by an earlier request is queued before the answer. Statistics-only
ROOM_UPDATEs are sent on a timer, so tests that look at exact order skip them
(``significant``) and check statistics on their own.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute

from relay.messages import MessageType
from relay.protocol import (
    Frame,
    PayloadReader,
    encode_string,
)
from tests.mixer_client import MixerClient, json_of, room_command

Connect = Callable[[], Awaitable[MixerClient]]

ROOM = "studio"
STATISTICS = frozenset({"byte_size", "command_count"})
TRANSIENT = frozenset({205, 139, 1000})
BIG_HISTORY = 300
BIG_COMMAND_BYTES = 64 * 1024


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
