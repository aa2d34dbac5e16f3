"""A small Mixer client over real TCP: the relay as a test script sees it."""

import json
from typing import Any

import anyio
from anyio.abc import SocketStream

from relay.messages import MessageType
from relay.protocol import (
    Frame,
    FrameDecoder,
    PayloadReader,
    encode_bool,
    encode_frame,
    encode_json,
    encode_string,
)

RECEIVE_TIMEOUT = 5.0

# Broadcasts that arrive at any time; most tests look past them. A client that
# closed just before this one connected can be announced as disconnected after
# this one joined the relay's list, in the middle of its first request.
NOISE = frozenset(
    {
        MessageType.CLIENT_UPDATE,
        MessageType.ROOM_UPDATE,
        MessageType.CLIENT_DISCONNECTED,
    }
)


class MixerClient:
    """One connection to the relay, with helpers for the add-on's requests."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_payload=2**40)
        self._frames: list[Frame] = []
        self.client_id = ""

    @classmethod
    async def connect(cls, port: int, local_host: str | None = None) -> "MixerClient":
        """Connect to a relay on 127.0.0.1, from ``local_host`` when given (another
        loopback address, such as 127.0.0.2)."""
        stream = await anyio.connect_tcp("127.0.0.1", port, local_host=local_host)
        return cls(stream)

    async def aclose(self) -> None:
        await self.stream.aclose()

    def _decode(self, data: bytes) -> list[Frame]:
        """Decode frames, turning large ones (memory maps) into bytes to compare."""
        return [
            frame
            if isinstance(frame.wire, bytes)
            else Frame(frame.kind, frame.command_id, bytes(frame.wire))
            for frame in self._decoder.feed(data)
        ]

    async def send(self, kind: int, payload: bytes = b"", command_id: int = 0) -> None:
        await self.stream.send(encode_frame(kind, payload, command_id))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def receive(self, timeout: float = RECEIVE_TIMEOUT) -> Frame:
        """Return the next frame, whatever its type."""
        with anyio.fail_after(timeout):
            while not self._frames:
                data = await self.stream.receive(1 << 20)
                self._frames.extend(self._decode(data))

        return self._frames.pop(0)

    async def receive_until(
        self, kind: int, timeout: float = RECEIVE_TIMEOUT
    ) -> list[Frame]:
        """Return every frame up to and including the next one of ``kind``."""
        frames: list[Frame] = []
        with anyio.fail_after(timeout):
            while True:
                frame = await self.receive(timeout)
                frames.append(frame)
                if frame.kind == kind:
                    return frames

    async def expect(
        self, kind: int, skip: frozenset[int] = NOISE, timeout: float = RECEIVE_TIMEOUT
    ) -> Frame:
        """Return the next frame that is not in ``skip``; it must be of ``kind``."""
        with anyio.fail_after(timeout):
            while True:
                frame = await self.receive(timeout)
                if frame.kind in skip and frame.kind != kind:
                    continue

                assert frame.kind == kind, (
                    f"expected {MessageType(kind).name}, got type {frame.kind}: "
                    f"{bytes(frame.payload[:200])!r}"
                )
                return frame

    async def expect_error(self, timeout: float = RECEIVE_TIMEOUT) -> str:
        frame = await self.expect(MessageType.SEND_ERROR, timeout=timeout)
        return PayloadReader(frame.payload).read_string()

    async def expect_closed(self, timeout: float = RECEIVE_TIMEOUT) -> list[Frame]:
        """Read until the relay closes the connection; return what came before."""
        frames = list(self._frames)
        self._frames.clear()
        with anyio.fail_after(timeout):
            while True:
                try:
                    data = await self.stream.receive(1 << 20)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return frames

                frames.extend(self._decode(data))

    async def sync(self) -> list[Frame]:
        """Round-trip a CLIENT_ID; return every frame that arrived before its answer.

        The relay writes to one client in order, so this holds everything it
        queued for this client before handling the request.
        """
        await self.send(MessageType.CLIENT_ID)
        frames = await self.receive_until(MessageType.CLIENT_ID)
        return frames[:-1]

    async def list_rooms(self) -> dict[str, Any]:
        """Ask for LIST_ROOMS; frames that arrive before the answer are dropped."""
        await self.send(MessageType.LIST_ROOMS)
        frames = await self.receive_until(MessageType.LIST_ROOMS)
        return json_of(frames[-1])

    async def list_clients(self) -> dict[str, Any]:
        """Ask for LIST_CLIENTS; frames that arrive before the answer are dropped."""
        await self.send(MessageType.LIST_CLIENTS)
        frames = await self.receive_until(MessageType.LIST_CLIENTS)
        return json_of(frames[-1])

    async def handshake(self, user_name: str = "artist") -> str:
        """Do what the add-on does on connect; return this client's id."""
        await self.send(MessageType.CLIENT_ID)
        await self.send(MessageType.LIST_CLIENTS)
        await self.send(MessageType.LIST_ROOMS)
        await self.send(
            MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
            encode_json({"user_name": user_name}),
        )
        frame = await self.expect(MessageType.CLIENT_ID)
        self.client_id = str(frame.payload, "utf-8")
        await self.expect(MessageType.LIST_CLIENTS)
        await self.expect(MessageType.LIST_ROOMS)
        return self.client_id

    async def create_room(
        self,
        name: str,
        blender_version: str = "3.4.1",
        mixer_version: str = "1.0.0",
        ignore_version_check: bool = False,
        commands: list[bytes] = (),  # type: ignore[assignment]
    ) -> None:
        """Create a room, upload ``commands`` (wire frames) and make it joinable."""
        await self.send(
            MessageType.JOIN_ROOM,
            join_payload(name, blender_version, mixer_version, ignore_version_check),
        )
        await self.expect(MessageType.JOIN_ROOM)
        await self.expect(MessageType.CONTENT)
        for wire in commands:
            await self.send_raw(wire)

        await self.send(MessageType.CONTENT)
        await self.wait_for_room_update(name, "joinable", True)

    async def wait_for_room_update(self, room: str, key: str, value: Any) -> None:
        with anyio.fail_after(RECEIVE_TIMEOUT):
            while True:
                frame = await self.receive()
                if frame.kind == MessageType.ROOM_UPDATE:
                    update = json_of(frame)
                    if update.get(room, {}).get(key) == value:
                        return

    async def join_room(
        self, name: str, blender_version: str = "3.4.1", mixer_version: str = "1.0.0"
    ) -> list[Frame]:
        """Join an existing room; return the room commands of its history."""
        await self.send(
            MessageType.JOIN_ROOM, join_payload(name, blender_version, mixer_version)
        )
        await self.expect(MessageType.CLEAR_CONTENT)
        frames = await self.receive_until(MessageType.JOIN_ROOM, timeout=30)
        return [frame for frame in frames if frame.kind > 100]


def join_payload(
    name: str,
    blender_version: str = "3.4.1",
    mixer_version: str = "1.0.0",
    ignore_version_check: bool = False,
    generic_protocol: bool = True,
) -> bytes:
    return (
        encode_string(name)
        + encode_string(blender_version)
        + encode_string(mixer_version)
        + encode_bool(ignore_version_check)
        + encode_bool(generic_protocol)
    )


def error_text(frame: Frame) -> str:
    """The message of a SEND_ERROR frame."""
    return PayloadReader(frame.payload).read_string()


def json_of(frame: Frame) -> dict[str, Any]:
    value = json.loads(PayloadReader(frame.payload).read_string())
    assert isinstance(value, dict)
    return value


def room_command(kind: int, body: bytes, command_id: int = 0) -> bytes:
    return encode_frame(kind, body, command_id)
