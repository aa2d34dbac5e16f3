"""Bad input and faults, over real TCP on 127.0.0.1: the relay must stay healthy.

The relay runs in this process (the ``relay`` fixture), so its memory is this
process's memory and its state is ``relay.broadcaster``. Misbehaving peers are
raw non-blocking sockets driven from the same event loop; well-behaved ones are
:class:`MixerClient` connections.
"""

import errno
import gc
import json
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from relay.config import MIB, Settings
from relay.errors import ConfigError
from relay.messages import MessageType
from relay.protocol import (
    HEADER,
    Frame,
    FrameDecoder,
    PayloadReader,
    encode_bool,
    encode_frame,
    encode_json,
    encode_string,
)
from relay.server import RelayServer
from tests.mixer_client import MixerClient, join_payload

Connect = Callable[[], Awaitable[MixerClient]]

BASE = Settings(host="127.0.0.1", port=0, room_update_interval=0.01)

# The relay's process is this one: a buffer the size of a refused frame, or of a
# flood, would show up in its resident memory.
RSS_SLACK = 64 * MIB

# Every wait in this module gives up after this long.
WAIT = 10.0

PROJECT = Path(__file__).resolve().parents[2]

SEND_ERROR = MessageType.SEND_ERROR


@pytest.fixture(autouse=True)
def relay_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the relay's events; any ERROR record (a crash) fails the test."""
    caplog.set_level(logging.INFO, logger="relay")
    yield caplog

    errors = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("relay") and record.levelno >= logging.ERROR
    ]
    assert not errors, errors


# Raw sockets ----------------------------------------------------------------


def new_socket(rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket; a receive buffer set before connecting keeps
    the advertised window that small."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    return sock


def start_connect(sock: socket.socket, port: int) -> None:
    code = sock.connect_ex(("127.0.0.1", port))
    if code not in (0, errno.EINPROGRESS):
        raise OSError(code, os.strerror(code))


async def finish_connect(sock: socket.socket) -> None:
    await anyio.wait_writable(sock)
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def open_raw(port: int, rcvbuf: int | None = None) -> socket.socket:
    """Connect a raw non-blocking socket to the relay."""
    sock = new_socket(rcvbuf)
    try:
        start_connect(sock, port)
        with anyio.fail_after(WAIT):
            await finish_connect(sock)
    except BaseException:
        sock.close()
        raise

    return sock


def close_raw(sock: socket.socket, *, reset: bool = False) -> None:
    """Close a raw socket; with ``reset`` the relay gets an RST instead of a FIN."""
    if sock.fileno() < 0:
        return

    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    sock.close()


def port_of(relay: RelayServer) -> int:
    assert relay.port is not None
    return relay.port


def raw_id(sock: socket.socket) -> str:
    """The client id the relay gives this socket's connection."""
    ip, port = sock.getsockname()[:2]
    return f"{ip}:{port}"


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Send every byte, waiting while the socket is full; bounded in time."""
    view = memoryview(data)
    with anyio.fail_after(WAIT):
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(sock)


async def read_some(sock: socket.socket, count: int) -> bytes:
    """Read at least ``count`` bytes (whatever arrives first beyond that)."""
    received = bytearray()
    with anyio.fail_after(WAIT):
        while len(received) < count:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue

            assert data, "the relay closed the connection"
            received += data

    return bytes(received)


async def read_until_closed(sock: socket.socket, limit: int = 64 * MIB) -> bytes:
    """Read until the relay ends the connection (FIN or RST); bounded in bytes
    and time."""
    received = bytearray()
    with anyio.fail_after(WAIT):
        while len(received) < limit:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            except ConnectionResetError:
                return bytes(received)

            if not data:
                return bytes(received)

            received += data

    raise AssertionError(f"the relay sent more than {limit} bytes without closing")


def frames_of(data: bytes | bytearray) -> list[Frame]:
    return FrameDecoder(max_payload=2**40).feed(bytes(data))


def string_of(frame: Frame) -> str:
    return PayloadReader(frame.payload).read_string()


# Relay state and logs ---------------------------------------------------------


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll the in-process relay's state until ``condition`` holds; bounded."""
    with anyio.fail_after(WAIT):
        # The relay's state has no change notification to wait on.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def member_ids(relay: RelayServer, room: str) -> set[str]:
    return {client.id for client in relay.broadcaster.rooms[room].members}


def joiner_ids(relay: RelayServer, room: str) -> set[str]:
    return {client.id for client in relay.broadcaster.rooms[room].joiners}


@contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def rss_bytes() -> int:
    """This process's resident memory, which includes the in-process relay."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

    raise AssertionError("no VmRSS in /proc/self/status")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == event]


def reasons(caplog: pytest.LogCaptureFixture, event: str, client_id: str) -> list[str]:
    """The ``reason`` fields of the relay's ``event`` records for one client."""
    return [
        str(getattr(record, "reason", ""))
        for record in records(caplog, event)
        if getattr(record, "client_id", None) == client_id
    ]


# Clients ---------------------------------------------------------------------


async def round_trip(client: MixerClient) -> list[Frame]:
    """Send CLIENT_ID and return every frame that arrived before its answer; the
    relay writes to one client in order, so these are all it queued before."""
    await client.send(MessageType.CLIENT_ID)
    frames = await client.receive_until(MessageType.CLIENT_ID, timeout=WAIT)
    return frames[:-1]


async def list_clients(client: MixerClient) -> list[str]:
    await client.send(MessageType.LIST_CLIENTS)
    frames = await client.receive_until(MessageType.LIST_CLIENTS, timeout=WAIT)
    return sorted(parse_json(frames[-1]))


async def list_rooms(client: MixerClient) -> dict[str, Any]:
    await client.send(MessageType.LIST_ROOMS)
    frames = await client.receive_until(MessageType.LIST_ROOMS, timeout=WAIT)
    return parse_json(frames[-1])


def parse_json(frame: Frame) -> dict[str, Any]:
    value = json.loads(string_of(frame))
    assert isinstance(value, dict)
    return value


async def expect(client: MixerClient, kind: int) -> Frame:
    """The next frame that is not a broadcast about other clients or rooms."""
    return await client.expect(kind, timeout=WAIT)


async def collect_room_frames(client: MixerClient, count: int) -> list[Frame]:
    """Read until ``count`` room commands (type > 100) arrived; return them."""
    frames: list[Frame] = []
    with anyio.fail_after(WAIT * 3):
        while len(frames) < count:
            frame = await client.receive(WAIT)
            if frame.kind > 100:
                frames.append(frame)

    return frames


def big_commands(count: int, size: int) -> list[bytes]:
    """Distinct room commands (BLENDER_DATA_CREATE) of ``size`` payload bytes."""
    return [
        encode_frame(
            MessageType.BLENDER_DATA_CREATE,
            i.to_bytes(4, "little") + bytes([i % 251]) * (size - 4),
            command_id=1000 + i,
        )
        for i in range(count)
    ]


async def join_raw(relay: RelayServer, room: str, rcvbuf: int) -> socket.socket:
    """Join ``room`` from a raw socket that will never read; return it once the
    relay counts it as a member."""
    sock = await open_raw(port_of(relay), rcvbuf=rcvbuf)
    await send_all(sock, encode_frame(MessageType.JOIN_ROOM, join_payload(room)))
    joined = raw_id(sock)
    await wait_for(lambda: joined in member_ids(relay, room))
    return sock


# Truncated and oversized frames ------------------------------------------------


@pytest.mark.parametrize("cut", [1, 7, 13, HEADER.size + 3])
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_session_truncated_frame_then_close_cleans_up(
    relay: RelayServer, connect: Connect, cut: int, reset: bool
) -> None:
    """A peer that sends part of a frame and goes away is removed and announced as
    disconnected, and the relay keeps serving the others."""
    watcher = await connect()
    await watcher.handshake("watcher")
    sock = await open_raw(port_of(relay))
    gone = raw_id(sock)
    await wait_for(lambda: gone in relay.broadcaster.clients)

    await send_all(sock, encode_frame(MessageType.LIST_ROOMS, b"abcdef")[:cut])
    close_raw(sock, reset=reset)
    disconnected = await watcher.expect(MessageType.CLIENT_DISCONNECTED, timeout=WAIT)
    listed = await list_clients(watcher)

    assert string_of(disconnected) == gone
    assert listed == [watcher.client_id]
    assert list(relay.broadcaster.clients) == [watcher.client_id]


HUGE_LENGTHS = [
    (BASE, 2**63),
    (BASE, 2**64 - 1),
    (BASE, BASE.max_frame_bytes + 1),
    (replace(BASE, max_frame_bytes=MIB), 2**63),
    (replace(BASE, max_frame_bytes=MIB), 512 * MIB),
    (replace(BASE, max_frame_bytes=MIB), MIB + 1),
]


@pytest.mark.parametrize(
    ("relay_settings", "declared"),
    HUGE_LENGTHS,
    ids=["2^63", "2^64-1", "1GiB+1", "2^63-small", "512MiB-small", "1MiB+1-small"],
)
async def test_session_huge_declared_length_is_refused_without_allocating(
    relay: RelayServer,
    connect: Connect,
    relay_logs: pytest.LogCaptureFixture,
    relay_settings: Settings,
    declared: int,
) -> None:
    """A header declaring more than max_frame_bytes gets one SEND_ERROR naming both
    sizes, then the connection is closed, and nothing the declared size is
    allocated."""
    watcher = await connect()
    await watcher.handshake("watcher")
    sock = await open_raw(port_of(relay))
    gone = raw_id(sock)
    before = rss_bytes()

    try:
        await send_all(sock, struct.pack("<QIH", declared, 7, 151) + b"x" * 1000)
        frames = frames_of(await read_until_closed(sock))
    finally:
        close_raw(sock)

    grown = rss_bytes() - before
    disconnected = await watcher.expect(MessageType.CLIENT_DISCONNECTED, timeout=WAIT)
    errors = [string_of(frame) for frame in frames if frame.kind == SEND_ERROR]
    dropped = reasons(relay_logs, "client.dropped", gone)

    assert len(errors) == 1
    assert str(declared) in errors[0]
    assert str(relay_settings.max_frame_bytes) in errors[0]
    assert grown < RSS_SLACK
    assert string_of(disconnected) == gone
    assert dropped
    assert "frame too large" in dropped[0]


async def test_session_commands_before_a_huge_length_still_reach_the_room(
    relay: RelayServer, connect: Connect
) -> None:
    """A room command that arrives in the same read as a header declaring too
    much is relayed before the sender is refused, as it is when the two arrive
    apart (wire7: it was lost)."""
    sender = await connect()
    member = await connect()
    await sender.handshake("sender")
    await member.handshake("member")
    await sender.create_room("room")
    await member.join_room("room")
    too_large = HEADER.pack(relay.settings.max_frame_bytes + 1, 0, 150)

    await sender.send_raw(encode_frame(150, b"precious") + too_large)

    assert await sender.expect_error(timeout=WAIT)
    relayed = await member.expect(150, timeout=WAIT)
    assert bytes(relayed.payload) == b"precious"


PROBES = {
    "http": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:12800\r\nUser-Agent: curl/8\r\n\r\n",
    "tls": bytes.fromhex("160301020001000001fc0303") + os.urandom(32),
    "ssh": b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n",
}


@pytest.mark.parametrize("probe", list(PROBES))
async def test_session_foreign_protocol_gets_error_and_close(
    relay: RelayServer, connect: Connect, probe: str
) -> None:
    """A non-Mixer client (HTTP, TLS, SSH) gets SEND_ERROR and is closed, since
    its first 8 bytes read as an absurd length, and the relay keeps serving."""
    watcher = await connect()
    await watcher.handshake("watcher")
    sock = await open_raw(port_of(relay))
    gone = raw_id(sock)

    try:
        await send_all(sock, PROBES[probe])
        frames = frames_of(await read_until_closed(sock))
    finally:
        close_raw(sock)

    disconnected = await watcher.expect(MessageType.CLIENT_DISCONNECTED, timeout=WAIT)
    listed = await list_clients(watcher)
    kinds = [frame.kind for frame in frames]

    assert kinds.count(SEND_ERROR) == 1
    assert "frame" in string_of(frames[kinds.index(SEND_ERROR)])
    assert string_of(disconnected) == gone
    assert listed == [watcher.client_id]


# Frames that stop arriving ------------------------------------------------------

FRAME_TIMEOUT = replace(BASE, frame_timeout=0.5)

PARTIAL_FRAMES = {
    "header": encode_frame(MessageType.LIST_ROOMS)[:10],
    "small-payload": encode_frame(MessageType.BLENDER_DATA_CREATE, b"p" * 64)[:40],
    "large-payload": encode_frame(MessageType.BLENDER_DATA_CREATE, b"p" * 2 * MIB)[
        : 300 * 1024
    ],
}


@pytest.mark.parametrize("relay_settings", [FRAME_TIMEOUT], ids=["0.5s"])
@pytest.mark.parametrize("partial", list(PARTIAL_FRAMES))
async def test_session_stalled_partial_frame_is_closed(
    relay: RelayServer,
    connect: Connect,
    relay_logs: pytest.LogCaptureFixture,
    relay_settings: Settings,
    partial: str,
) -> None:
    """A frame whose bytes stop arriving for frame_timeout gets its connection
    closed with a logged reason, while an idle client stays."""
    watcher = await connect()
    await watcher.handshake("watcher")
    sock = await open_raw(port_of(relay))
    stalled = raw_id(sock)

    try:
        await send_all(sock, PARTIAL_FRAMES[partial])
        await read_until_closed(sock)
    finally:
        close_raw(sock)

    disconnected = await watcher.expect(MessageType.CLIENT_DISCONNECTED, timeout=WAIT)
    dropped = reasons(relay_logs, "client.dropped", stalled)

    assert string_of(disconnected) == stalled
    assert dropped
    assert "partial frame" in dropped[0]
    assert watcher.client_id in relay.broadcaster.clients


@pytest.mark.parametrize("relay_settings", [FRAME_TIMEOUT], ids=["0.5s"])
async def test_session_idle_at_frame_boundary_is_kept(
    relay: RelayServer, connect: Connect, relay_settings: Settings
) -> None:
    """A client silent for three times frame_timeout between frames stays
    connected: the timeout is for partial frames only."""
    client = await connect()
    await client.handshake("idle")

    await anyio.sleep(3 * relay_settings.frame_timeout)
    rooms = await list_rooms(client)

    assert rooms == {}
    assert client.client_id in relay.broadcaster.clients


@pytest.mark.parametrize("relay_settings", [FRAME_TIMEOUT], ids=["0.5s"])
async def test_session_trickling_frame_is_kept(
    relay: RelayServer, relay_settings: Settings
) -> None:
    """A frame sent one byte per fifth of frame_timeout takes longer than the
    timeout in total but keeps making progress, so it is answered."""
    sock = await open_raw(port_of(relay))
    trickler = raw_id(sock)
    received = bytearray()
    try:
        for byte in encode_frame(MessageType.CLIENT_ID):
            await send_all(sock, bytes([byte]))
            await anyio.sleep(relay_settings.frame_timeout / 5)

        with anyio.fail_after(WAIT):
            while MessageType.CLIENT_ID not in [f.kind for f in frames_of(received)]:
                received += await read_some(sock, 1)
    finally:
        close_raw(sock)

    answers = [f for f in frames_of(received) if f.kind == MessageType.CLIENT_ID]

    assert [bytes(answer.payload) for answer in answers] == [trickler.encode()]


# Many clients at once ----------------------------------------------------------

CROWD = 1000


async def test_server_thousand_clients_connecting_and_leaving_are_cleaned_up(
    relay: RelayServer, connect: Connect, relay_logs: pytest.LogCaptureFixture
) -> None:
    """A thousand raw connections opened and closed at once (FIN or RST, some
    after a frame or half a header) all disappear from the relay, each announced
    gone, no socket leaks, and a new client is then served."""
    watcher = await connect()
    await watcher.handshake("watcher")
    baseline = fd_count()
    socks = [new_socket() for _ in range(CROWD)]
    try:
        for sock in socks:
            start_connect(sock, port_of(relay))

        with anyio.fail_after(WAIT):
            for sock in socks:
                await finish_connect(sock)

        for i, sock in enumerate(socks):
            if i % 3 == 0:
                sock.send(encode_frame(MessageType.CLIENT_ID))
            elif i % 3 == 1:
                sock.send(encode_frame(MessageType.LIST_ROOMS)[:5])

            close_raw(sock, reset=i % 2 == 1)
    finally:
        for sock in socks:
            close_raw(sock)

    def settled() -> bool:
        accepted = len(records(relay_logs, "client.connected")) + len(
            records(relay_logs, "client.lost_at_accept")
        )
        return accepted >= CROWD + 1 and list(relay.broadcaster.clients) == [
            watcher.client_id
        ]

    await wait_for(settled)
    seen = await round_trip(watcher)
    announced = {
        client_id
        for frame in seen
        if frame.kind == MessageType.CLIENT_UPDATE
        for client_id in parse_json(frame)
    } - {watcher.client_id}
    gone = {
        string_of(frame)
        for frame in seen
        if frame.kind == MessageType.CLIENT_DISCONNECTED
    }
    leaked = fd_count() - baseline
    connected = len(records(relay_logs, "client.connected"))
    newcomer = await connect()
    newcomer_id = await newcomer.handshake("newcomer")

    assert connected == len(announced) + 1
    assert gone == announced
    assert relay.broadcaster.rooms == {}
    assert leaked <= 0
    assert sorted(relay.broadcaster.clients) == sorted([watcher.client_id, newcomer_id])


# Slow and stalled readers ------------------------------------------------------------


async def stream_past_stuck_member(
    relay: RelayServer, connect: Connect, room: str, commands: list[bytes]
) -> tuple[list[Frame], str, list[Frame], set[str]]:
    """Stream ``commands`` from a sender into ``room``, where one member reads
    everything and another (a raw socket with a tiny buffer) reads nothing, until
    the stuck one is gone.

    Returns:
        The frames the reading member got, the stuck member's id, what the sender
        received afterwards, and the ids of the two members that stay.
    """
    sender = await connect()
    await sender.handshake("sender")
    await sender.create_room(room)
    fast = await connect()
    await fast.handshake("fast")
    await fast.join_room(room)
    stuck = await join_raw(relay, room, rcvbuf=4096)
    stuck_id = raw_id(stuck)
    received: list[Frame] = []
    try:
        async with anyio.create_task_group() as tasks:

            async def receive_all() -> None:
                received.extend(await collect_room_frames(fast, len(commands)))

            tasks.start_soon(receive_all)
            for wire in commands:
                await sender.send_raw(wire)

        await wait_for(lambda: stuck_id not in relay.broadcaster.clients)
        sender_saw = await round_trip(sender)
    finally:
        close_raw(stuck)

    return received, stuck_id, sender_saw, {sender.client_id, fast.client_id}


@pytest.mark.parametrize(
    "relay_settings", [replace(BASE, client_buffer_bytes=MIB)], ids=["1MiB"]
)
async def test_session_client_that_stops_reading_is_dropped_for_backpressure(
    relay: RelayServer,
    connect: Connect,
    relay_logs: pytest.LogCaptureFixture,
    relay_settings: Settings,
) -> None:
    """A room member that never reads is dropped with a backpressure reason once
    its outbox passes client_buffer_bytes; the reading member gets every frame
    in order and the sender is never refused."""
    commands = big_commands(128, 256 * 1024)
    received, slow_id, sender_saw, members = await stream_past_stuck_member(
        relay, connect, "slow", commands
    )

    dropped = reasons(relay_logs, "client.dropped", slow_id)

    assert [frame.wire for frame in received] == commands
    assert dropped
    assert "backpressure" in dropped[0]
    assert SEND_ERROR not in [frame.kind for frame in sender_saw]
    assert member_ids(relay, "slow") == members
    assert len(relay.broadcaster.rooms["slow"].history) == len(commands)


@pytest.mark.parametrize(
    "relay_settings", [replace(BASE, send_timeout=0.5)], ids=["0.5s"]
)
async def test_session_peer_that_acks_but_never_reads_is_dropped(
    relay: RelayServer,
    connect: Connect,
    relay_logs: pytest.LogCaptureFixture,
    relay_settings: Settings,
) -> None:
    """A member whose TCP stack acknowledges but whose application never reads,
    with far less queued than client_buffer_bytes, is disconnected after
    send_timeout without progress, while the others carry on."""
    commands = big_commands(64, 256 * 1024)
    received, stalled_id, sender_saw, _ = await stream_past_stuck_member(
        relay, connect, "stalled", commands
    )

    dropped = reasons(relay_logs, "client.dropped", stalled_id)

    assert sum(len(wire) for wire in commands) < relay_settings.client_buffer_bytes
    assert [frame.wire for frame in received] == commands
    assert dropped
    assert "send stalled" in dropped[0]
    assert SEND_ERROR not in [frame.kind for frame in sender_saw]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_room_joiner_vanishing_mid_history_leaves_room_deletable(
    relay: RelayServer, connect: Connect, reset: bool
) -> None:
    """A joiner that disappears while a big history streams to it is removed from
    the room's members and joiners, so the room can be deleted once empty."""
    creator = await connect()
    await creator.handshake("creator")
    await creator.create_room("big", commands=big_commands(32, MIB))
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string("big") + encode_bool(True)
    )
    await creator.wait_for_room_update("big", "keep_open", True)
    other = await connect()
    await other.handshake("other")

    joiner = await join_raw(relay, "big", rcvbuf=4096)
    joiner_id = raw_id(joiner)
    try:
        await read_some(joiner, 64 * 1024)
        joining_midway = joiner_ids(relay, "big") == {joiner_id}
    finally:
        close_raw(joiner, reset=reset)

    await wait_for(lambda: joiner_id not in relay.broadcaster.clients)
    joiners_after = joiner_ids(relay, "big")
    members_after = member_ids(relay, "big")
    await other.send(MessageType.DELETE_ROOM, b"big")
    refused_while_occupied = string_of(await expect(other, SEND_ERROR))
    await creator.send(MessageType.LEAVE_ROOM, b"big")
    await expect(creator, MessageType.LEAVE_ROOM)
    await other.send(MessageType.DELETE_ROOM, b"big")
    deleted = await expect(other, MessageType.ROOM_DELETED)

    assert joining_midway
    assert joiners_after == set()
    assert members_after == {creator.client_id}
    assert "big" in refused_while_occupied
    assert string_of(deleted) == "big"
    assert "big" not in relay.broadcaster.rooms


# Floods -----------------------------------------------------------------------

FLOOD_CAP = 256 * MIB


@pytest.mark.parametrize(
    "relay_settings", [replace(BASE, client_buffer_bytes=MIB)], ids=["1MiB"]
)
async def test_session_flood_before_reading_is_not_buffered(
    relay: RelayServer,
    connect: Connect,
    relay_logs: pytest.LogCaptureFixture,
    relay_settings: Settings,
) -> None:
    """A peer that floods room commands from outside any room without ever
    reading is dropped long before its flood could pile up in relay memory.

    Each command earns a SEND_ERROR the peer never reads, so its outbox fills
    and the relay drops it for backpressure after a few MB. A relay that read
    the socket into a growing buffer ahead of handling the frames, or that
    parked unhandled input while the peer's replies were stuck, would instead
    take the whole 256 MB (and its RSS would grow by as much) or stall the
    flood for ever; both fail here, as does an unbounded outbox.
    """
    watcher = await connect()
    await watcher.handshake("watcher")
    flooder = new_socket(rcvbuf=4096)
    block = encode_frame(MessageType.BLENDER_DATA_CREATE, b"data") * (64 * 1024 // 18)
    before = rss_bytes()
    sent = 0
    try:
        start_connect(flooder, port_of(relay))
        await finish_connect(flooder)
        flooder_id = raw_id(flooder)
        # One request.refused record per command would weigh more than the flood.
        with logger_level("relay.broadcaster", logging.ERROR), anyio.fail_after(WAIT):
            while sent < FLOOD_CAP:
                try:
                    sent += flooder.send(block)
                except BlockingIOError:
                    await anyio.wait_writable(flooder)
                except (BrokenPipeError, ConnectionResetError):
                    break
    finally:
        close_raw(flooder)

    grown = rss_bytes() - before
    await wait_for(lambda: flooder_id not in relay.broadcaster.clients)
    dropped = reasons(relay_logs, "client.dropped", flooder_id)
    listed = await list_clients(watcher)

    assert sent < FLOOD_CAP // 8
    assert grown < RSS_SLACK
    assert dropped
    assert "backpressure" in dropped[0]
    assert listed == [watcher.client_id]


@pytest.mark.parametrize(
    "relay_settings", [replace(BASE, max_frame_bytes=256 * MIB)], ids=["256MiB"]
)
async def test_session_declared_frame_costs_memory_only_as_it_arrives(
    relay: RelayServer, connect: Connect, relay_settings: Settings
) -> None:
    """Fourteen bytes declaring a payload under max_frame_bytes must not make the
    relay commit the declared size up front: a few such headers would otherwise
    exhaust its memory without the peers sending anything."""
    declared = relay_settings.max_frame_bytes * 3 // 4
    watcher = await connect()
    await watcher.handshake("watcher")
    sock = await open_raw(port_of(relay))
    before = rss_bytes()
    try:
        await send_all(sock, struct.pack("<QIH", declared, 1, 151) + b"x" * 4096)
        await anyio.sleep(0.2)
        await round_trip(watcher)
        grown = rss_bytes() - before
    finally:
        close_raw(sock)

    assert grown < RSS_SLACK, f"{grown // MIB} MiB committed for 4 KiB received"


# Malformed payloads ----------------------------------------------------------

MALFORMED = [
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_string("{not json")),
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_string("[1, 2]")),
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_string('"text"')),
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, b"\xff\xff\xff\xff{}"),
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, b"\x04\x00\x00\x00\xff\xfe{}"),
    (MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, b""),
    (MessageType.JOIN_ROOM, b"vrtist-raw-room-name"),
    (MessageType.JOIN_ROOM, encode_string("")),
    (MessageType.JOIN_ROOM, b"\x03\x00\x00\x00\xff\xfe\xfd"),
    (MessageType.SET_ROOM_CUSTOM_ATTRIBUTES, encode_string("nope") + encode_json({})),
    (MessageType.SET_ROOM_CUSTOM_ATTRIBUTES, encode_string("x")),
    (MessageType.SET_ROOM_KEEP_OPEN, encode_string("nope") + encode_bool(True)),
    (MessageType.SET_ROOM_KEEP_OPEN, encode_string("nope") + b"\x01"),
    (MessageType.DELETE_ROOM, b"\xff\xfe"),
    (MessageType.DELETE_ROOM, b"missing"),
    (MessageType.SET_CLIENT_NAME, b"\xc3\x28"),
    (MessageType.LEAVE_ROOM, b"nowhere"),
    (MessageType.CONTENT, b""),
    (MessageType.SEND_ERROR, b"\x10\x00\x00\x00ab"),
    *[(kind, b"junk") for kind in (0, 2, 8, 13, 50, 99, 100, 6, 19, 20, 21, 22)],
    *[(kind, b"junk") for kind in (101, 151, 205, 999, 1000, 65535)],
]


async def test_broadcaster_malformed_request_storm_gets_one_error_each(
    relay: RelayServer, connect: Connect
) -> None:
    """Every malformed payload and unknown or relay-only type, sent 40 times in a
    burst, is answered with exactly one SEND_ERROR and changes nothing, and the
    connection and the other clients are unaffected."""
    bystander = await connect()
    await bystander.handshake("bystander")
    stormer = await connect()
    await stormer.handshake("stormer")
    storm = b"".join(
        encode_frame(kind, payload, command_id=i)
        for i in range(40)
        for kind, payload in MALFORMED
    )

    await stormer.send_raw(storm)
    answered = await round_trip(stormer)
    bystander_saw = await round_trip(bystander)
    rooms = await list_rooms(stormer)

    assert [f.kind for f in answered].count(SEND_ERROR) == 40 * len(MALFORMED)
    assert SEND_ERROR not in [frame.kind for frame in bystander_saw]
    assert rooms == {}
    assert relay.broadcaster.clients[stormer.client_id].custom == {
        "user_name": "stormer"
    }


async def test_broadcaster_random_payload_storm_crashes_nothing(
    relay: RelayServer, connect: Connect
) -> None:
    """Three thousand well-framed messages of random types and payloads (seeded)
    leave the connection open and the relay serving everyone."""
    rng = random.Random(20240601)
    kinds = [*range(30), *range(98, 112), *range(199, 210), 999, 1000, 65535]
    bystander = await connect()
    await bystander.handshake("bystander")
    stormer = await connect()
    await stormer.handshake("stormer")
    storm = b"".join(
        encode_frame(rng.choice(kinds), rng.randbytes(rng.randrange(48)), i)
        for i in range(3000)
    )

    await stormer.send_raw(storm)
    await round_trip(stormer)
    await round_trip(bystander)
    newcomer = await connect()
    newcomer_id = await newcomer.handshake("newcomer")

    assert stormer.client_id in relay.broadcaster.clients
    assert newcomer_id in relay.broadcaster.clients


# Configuration -------------------------------------------------------------------

BAD_VALUES = [
    ("MIXER_HOST", "   "),
    ("MIXER_PORT", "abc"),
    ("MIXER_PORT", "70000"),
    ("MIXER_PORT", "-1"),
    ("MIXER_MAX_FRAME_BYTES", "-1"),
    ("MIXER_MAX_FRAME_BYTES", "0"),
    ("MIXER_CLIENT_BUFFER_BYTES", "1.5"),
    ("MIXER_CLIENT_BUFFER_BYTES", ""),
    ("MIXER_SEND_TIMEOUT", "nan"),
    ("MIXER_SEND_TIMEOUT", "inf"),
    ("MIXER_FRAME_TIMEOUT", "0"),
    ("MIXER_KEEPALIVE_IDLE", "soon"),
    ("MIXER_ROOM_UPDATE_INTERVAL", "-0.1"),
    ("MIXER_LOG_LEVEL", "LOUD"),
    ("MIXER_LOG_FORMAT", "xml"),
    ("MIXER_ADMIN_SOCKET", ""),
    ("MIXER_ADMIN_SOCKET", "relative/admin.sock"),
    ("MIXER_ADMIN_SOCKET", "/tmp/" + "x" * 110),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_settings_from_env_refuses_bad_value(variable: str, value: str) -> None:
    """Each unusable value is refused with a ConfigError naming its variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(variable + "=")


def test_settings_from_env_lists_every_bad_variable() -> None:
    """Several bad variables at once give one ConfigError listing each of them,
    and good ones beside them are not reported."""
    env = dict(BAD_VALUES)
    env["MIXER_FRAME_TIMEOUT"] = "2.5"

    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)

    named = [problem.split("=")[0] for problem in caught.value.problems]
    bad = sorted({variable for variable, _ in BAD_VALUES} - {"MIXER_FRAME_TIMEOUT"})

    assert sorted(named) == bad
    assert all(variable in str(caught.value) for variable in bad)


async def serve_one_client(settings: Settings) -> str | None:
    """Run a relay with ``settings`` and connect one client; return what went
    wrong, or None when the client was served."""
    # A relay that fails mid-accept may leave its accepted socket to the garbage
    # collector: that is part of the failure reported, not a later test's error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        failure = await _serve_one_client(settings)
        gc.collect()

    return failure


async def _serve_one_client(settings: Settings) -> str | None:
    server = RelayServer(settings)
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                await tasks.start(server.serve)
                assert server.port is not None
                client = await MixerClient.connect(server.port)
                try:
                    await client.handshake("probe")
                finally:
                    await client.aclose()

                tasks.cancel_scope.cancel()
    except Exception as exc:  # the failure is the test's verdict, shown there
        return f"{type(exc).__name__}: {exc!r}"

    return None


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MIXER_KEEPALIVE_IDLE", "40000"), ("MIXER_SEND_TIMEOUT", "3000000")],
)
async def test_settings_from_env_accepts_only_values_the_relay_can_use(
    variable: str, value: str
) -> None:
    """A value from_env accepts must let the relay serve clients (socket options
    have kernel limits: TCP_KEEPIDLE 32767 s, TCP_USER_TIMEOUT 2**31-1 ms);
    otherwise from_env must refuse it."""
    try:
        settings = Settings.from_env({variable: value})
    except ConfigError as exc:
        refused, failure = exc.problems[0].startswith(variable), None
    else:
        refused = False
        failure = await serve_one_client(replace(settings, host="127.0.0.1", port=0))

    assert refused or failure is None, failure


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mixer_console`` with only the given MIXER_* variables;
    bounded, and bound to 127.0.0.1 should the configuration pass."""
    clean = {key: val for key, val in os.environ.items() if not key.startswith("MIXER")}
    return subprocess.run(
        [sys.executable, "-m", "mixer_console", *args],
        env={**clean, "MIXER_HOST": "127.0.0.1", "MIXER_HTTP_PORT": "0", **env},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_bad_environment_exits_with_clear_message() -> None:
    """The headless relay with bad MIXER_* values exits non-zero, naming every
    bad variable on stderr, without a traceback and without starting."""
    bad = {
        "MIXER_PORT": "abc",
        "MIXER_MAX_FRAME_BYTES": "-1",
        "MIXER_SEND_TIMEOUT": "never",
        "MIXER_LOG_LEVEL": "LOUD",
    }

    result = run_cli(["--no-ui"], bad)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert all(variable in result.stderr for variable in bad)
    assert "relay.started" not in result.stdout


def test_cli_bad_port_option_exits_with_clear_message() -> None:
    """A --port that is not a number exits non-zero with its value on stderr and
    no traceback."""
    result = run_cli(["--no-ui", "--port", "http"], {})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "'http'" in result.stderr
    assert "relay.started" not in result.stdout
