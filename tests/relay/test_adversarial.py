"""Adversarial checks: inputs and timings chosen to break the relay.

Each test talks to an in-process relay over real TCP on 127.0.0.1 (or ::1), so
``relay.broadcaster`` is the relay's live state.
"""

import gc
import io
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute

from relay.config import Settings
from relay.logs import TextEventFormatter
from relay.messages import MessageType
from relay.protocol import (
    Frame,
    PayloadReader,
    encode_bool,
    encode_frame,
    encode_json,
    encode_string,
)
from relay.server import RelayServer
from tests.mixer_client import MixerClient, join_payload, json_of

Connect = Callable[[], Awaitable[MixerClient]]

WAIT = 10.0
ROOT = Path(__file__).resolve().parents[2]
BASE = Settings(host="127.0.0.1", port=0, room_update_interval=0.01)


# ---------------------------------------------------------------- helpers


def text_of(frame: Frame) -> str:
    return PayloadReader(frame.payload).read_string()


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll the in-process relay's state until ``condition`` holds; bounded."""
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def ready_client(connect: Connect, name: str) -> MixerClient:
    client = await connect()
    await client.handshake(name)
    await client.sync()
    return client


async def is_alive(client: MixerClient) -> bool:
    """Tell whether the relay still answers this client (CLIENT_ID round trip)."""
    try:
        await client.send(MessageType.CLIENT_ID)
        await client.receive_until(MessageType.CLIENT_ID, timeout=WAIT)
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return False

    return True


async def answer_or_end(client: MixerClient, kinds: set[int]) -> Frame | None:
    """The next frame of one of ``kinds``, or None when the relay hung up."""
    with anyio.fail_after(WAIT):
        while True:
            try:
                frame = await client.receive(WAIT)
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                return None

            if frame.kind in kinds:
                return frame


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def big_scene(count: int, size: int) -> list[bytes]:
    return [
        encode_frame(151, i.to_bytes(4, "little") + bytes([i % 251]) * size, i + 1)
        for i in range(count)
    ]


async def keep_open_room(
    creator: MixerClient, name: str, commands: list[bytes]
) -> None:
    await creator.create_room(name, commands=commands)
    await creator.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(name) + encode_bool(True)
    )
    await creator.wait_for_room_update(name, "keep_open", True)


# ---------------------------------------------------------------- JSON values


@pytest.mark.parametrize("target", ["client", "room"])
async def test_deeply_nested_json_is_refused_and_connection_kept(
    connect: Connect, target: str
) -> None:
    """JSON nested far deeper than Python's recursion limit gets SEND_ERROR and the
    connection stays up, like any other JSON the relay cannot use."""
    client = await ready_client(connect, "deep")
    await client.create_room("r")
    text = '{"k": ' + nested_list(100_000) + "}"
    if target == "client":
        await client.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_string(text))
    else:
        await client.send(
            MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
            encode_string("r") + encode_string(text),
        )

    answer = await answer_or_end(client, {MessageType.SEND_ERROR})

    assert answer is not None, "the relay closed the connection"
    assert await is_alive(client)


async def test_stored_room_attribute_never_breaks_list_rooms_for_others(
    relay: RelayServer, connect: Connect
) -> None:
    """No room attribute one client manages to store can make LIST_ROOMS (which
    every add-on sends on connect) fail for another client."""
    creator = await ready_client(connect, "creator")
    await keep_open_room(creator, "r", [])
    await creator.send(MessageType.LEAVE_ROOM, b"r")
    await creator.expect(MessageType.LEAVE_ROOM)
    attacker = await ready_client(connect, "attacker")
    # Ever deeper values under distinct keys, until the relay refuses one (or
    # hangs up): the deepest value it kept must still encode.
    for depth in range(850, 1400):
        text = f'{{"k{depth}": {nested_list(depth)}}}'
        await attacker.send(
            MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
            encode_string("r") + encode_string(text),
        )
        kinds = {MessageType.SEND_ERROR, MessageType.CLIENT_ID}
        await attacker.send(MessageType.CLIENT_ID)
        answer = await answer_or_end(attacker, kinds)
        if answer is None or answer.kind == MessageType.SEND_ERROR:
            break

    victim = await connect()
    await victim.send(MessageType.LIST_ROOMS)
    listed = await answer_or_end(victim, {MessageType.LIST_ROOMS})

    assert listed is not None, "LIST_ROOMS cost the victim its connection"
    assert "r" in json_of(listed)


async def test_nested_json_type_change_is_stored_and_broadcast(
    connect: Connect,
) -> None:
    """A custom value whose nested 1 becomes true (equal in Python, different in
    JSON) is a change: it is broadcast and LIST_CLIENTS reports the new value."""
    client = await ready_client(connect, "artist")
    watcher = await ready_client(connect, "watcher")
    attribute = MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES
    await client.send(attribute, encode_json({"user_scenes": {"Scene": [1, 2.0]}}))
    await watcher.expect(MessageType.CLIENT_UPDATE)
    await client.send(attribute, encode_json({"user_scenes": {"Scene": [True, 2]}}))
    before_sync = await watcher.sync()
    listed = await watcher.list_clients()

    updates = [
        json_of(frame)
        for frame in before_sync
        if frame.kind == MessageType.CLIENT_UPDATE
    ]
    assert updates == [{client.client_id: {"user_scenes": {"Scene": [True, 2]}}}]
    assert listed[client.client_id]["user_scenes"] == {"Scene": [True, 2]}


async def test_lone_surrogate_and_nul_in_attributes_round_trip(
    connect: Connect,
) -> None:
    """An escaped lone surrogate and a NUL in a custom attribute come back as valid
    UTF-8 JSON holding the same value, and the connection is kept."""
    client = await ready_client(connect, "artist")
    watcher = await ready_client(connect, "watcher")
    text = '{"user_name": "a\\ud800b\\u0000c"}'
    await client.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_string(text))
    update = await watcher.expect(MessageType.CLIENT_UPDATE)

    assert json_of(update) == {client.client_id: {"user_name": "a\ud800b\x00c"}}
    assert await is_alive(client)


# ---------------------------------------------------------------- identities


async def test_reused_peer_address_keeps_the_new_connection_registered(
    relay: RelayServer,
) -> None:
    """A peer that resets its connection and reconnects at once from the same
    address and port is one registered client afterwards, and once it goes too,
    no ghost member is left in a room."""
    assert relay.port is not None
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.bind(("127.0.0.1", 0))
    address = first.getsockname()
    first.connect(("127.0.0.1", relay.port))
    first.sendall(encode_frame(MessageType.JOIN_ROOM, join_payload("first")))
    peer = f"{address[0]}:{address[1]}"
    await wait_for(lambda: "first" in relay.broadcaster.rooms)

    # Reset, then reconnect from the same port before the relay sees the reset.
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.close()
    second = socket.socket()
    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    second.bind(address)
    second.connect(("127.0.0.1", relay.port))
    try:
        await wait_for(lambda: "first" not in relay.broadcaster.rooms)
        await anyio.sleep(0.2)
        registered = list(relay.broadcaster.clients)
        second.sendall(encode_frame(MessageType.JOIN_ROOM, join_payload("second")))
        await wait_for(lambda: "second" in relay.broadcaster.rooms)
    finally:
        second.close()

    with anyio.move_on_after(2):
        await wait_for(lambda: "second" not in relay.broadcaster.rooms)

    assert registered == [peer]
    assert relay.broadcaster.clients == {}
    assert relay.broadcaster.rooms == {}


async def test_keep_open_room_does_not_retain_its_departed_creator(
    relay: RelayServer, connect: Connect
) -> None:
    """Once the creator of a kept-open room has disconnected, the relay holds no
    reference to its client (nor to the frames still queued for it)."""
    creator = await ready_client(connect, "creator")
    await keep_open_room(creator, "kept", [])
    (state,) = relay.broadcaster.clients.values()
    gone = weakref.ref(state)
    del state
    await creator.aclose()
    await wait_for(lambda: not relay.broadcaster.clients)
    gc.collect()

    assert "kept" in relay.broadcaster.rooms
    assert gone() is None, "the departed creator's Client is still referenced"


# ---------------------------------------------------------------- logs


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The relay's events, formatted as MIXER_LOG_FORMAT=text writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextEventFormatter())
    logger = logging.getLogger("relay")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


async def test_text_log_client_text_cannot_forge_lines(
    connect: Connect, text_log: io.StringIO
) -> None:
    """Room names and error texts chosen by a client stay inside their own line of
    the text log, so a client cannot forge events."""
    # No space, quote or equals sign: the text formatter quotes only those.
    forged = "x\n2030-01-01T00:00:00.000Z\tINFO\trelay.stopped"
    client = await ready_client(connect, "artist")
    await client.send(MessageType.JOIN_ROOM, join_payload(forged))
    await client.expect(MessageType.JOIN_ROOM)
    await client.expect(MessageType.CONTENT)
    await client.send(MessageType.SEND_ERROR, encode_string(forged))
    await client.expect(MessageType.SEND_ERROR)
    await client.sync()

    lines = text_log.getvalue().splitlines()
    assert lines
    assert not [line for line in lines if line.startswith("2030-")], lines


async def test_client_error_flood_does_not_flood_the_log(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends SEND_ERROR in a loop is logged a bounded number of times,
    as refused requests are, while the errors are still relayed."""
    caplog.set_level(logging.INFO, logger="relay")
    client = await ready_client(connect, "noisy")
    frame = encode_frame(MessageType.SEND_ERROR, encode_string("boom"))
    await client.send_raw(frame * 2000)
    for _ in range(2000):
        await client.expect(MessageType.SEND_ERROR, timeout=WAIT)

    logged = [r for r in caplog.records if r.getMessage() == "client.error"]
    assert len(logged) <= 100, f"{len(logged)} client.error lines for one client"


# ---------------------------------------------------------------- joins


async def test_leave_mid_replay_rejoin_then_recreate_same_name(
    connect: Connect,
) -> None:
    """A joiner that leaves while its history streams and rejoins at once gets the
    rest of the first replay cut off by LEAVE_ROOM, then one whole history; once
    the room is deleted and recreated under the same name, a joiner gets only the
    new room's history."""
    history = big_scene(48, 256 * 1024)
    creator = await ready_client(connect, "creator")
    joiner = await ready_client(connect, "joiner")
    await creator.create_room("r", commands=history)
    await joiner.send(MessageType.JOIN_ROOM, join_payload("r"))
    await joiner.expect(MessageType.CLEAR_CONTENT)
    await joiner.send_raw(
        encode_frame(MessageType.LEAVE_ROOM, b"r")
        + encode_frame(MessageType.JOIN_ROOM, join_payload("r"))
    )
    first = await joiner.receive_until(MessageType.LEAVE_ROOM, timeout=WAIT)
    second = await joiner.receive_until(MessageType.JOIN_ROOM, timeout=WAIT)

    wanted = [wire[14:] for wire in history]
    first_commands = [bytes(f.payload) for f in first if f.kind > 100]
    assert first_commands == wanted[: len(first_commands)]
    if MessageType.JOIN_ROOM in [f.kind for f in first]:
        assert first_commands == wanted
    control = [f.kind for f in second if f.kind not in (19, 20)]
    assert control[0] == MessageType.CLEAR_CONTENT
    assert [bytes(f.payload) for f in second if f.kind > 100] == wanted

    for member in (joiner, creator):
        await member.send(MessageType.LEAVE_ROOM, b"r")
        await member.expect(MessageType.LEAVE_ROOM)

    await joiner.expect(MessageType.ROOM_DELETED)
    await creator.expect(MessageType.ROOM_DELETED)
    fresh = encode_frame(151, encode_string("/fresh"), 7)
    await creator.create_room("r", commands=[fresh])
    replayed = await joiner.join_room("r")

    assert [f.wire for f in replayed] == [fresh]


async def test_many_joiners_at_once_while_creator_streams(connect: Connect) -> None:
    """Several clients joining a big room at the same moment, while its creator
    keeps sending, each receive the history and every later command exactly
    once and in order."""
    history = big_scene(16, 128 * 1024)
    creator = await ready_client(connect, "creator")
    joiners = [await ready_client(connect, f"joiner-{i}") for i in range(6)]
    await creator.create_room("r", commands=history)
    live = [
        encode_frame(140, encode_string(f"/o{i}") + b"x" * 100, 500 + i)
        for i in range(200)
    ]

    for joiner in joiners:
        await joiner.send(MessageType.JOIN_ROOM, join_payload("r"))

    await creator.send_raw(b"".join(live))
    end = encode_frame(140, encode_string("/end"), 9999)
    await creator.send_raw(end)

    expected = [wire[14:] for wire in [*history, *live, end]]
    for joiner in joiners:
        frames: list[Frame] = []
        with anyio.fail_after(WAIT * 3):
            while not (frames and frames[-1].command_id == 9999):
                frame = await joiner.receive(WAIT)
                if frame.kind > 100:
                    frames.append(frame)

        assert [bytes(f.payload) for f in frames] == expected


async def test_no_statistics_update_after_room_deleted(connect: Connect) -> None:
    """A creator that sends commands then leaves at once (statistics still
    pending) gets its room deleted, and no ROOM_UPDATE for it follows the
    ROOM_DELETED."""
    creator = await ready_client(connect, "creator")
    watcher = await ready_client(connect, "watcher")
    await creator.create_room("r")
    burst = b"".join(encode_frame(151, encode_string(f"/o{i}"), i) for i in range(50))
    await creator.send_raw(burst + encode_frame(MessageType.LEAVE_ROOM, b"r"))
    await watcher.expect(MessageType.ROOM_DELETED)
    await anyio.sleep(0.1)
    after = await watcher.sync()

    updates = [json_of(f) for f in after if f.kind == MessageType.ROOM_UPDATE]
    assert not [update for update in updates if "r" in update]
    assert (await watcher.list_rooms()) == {}


# ---------------------------------------------------------------- IPv6


@pytest.mark.parametrize("relay_settings", [replace(BASE, host="::1")], ids=["::1"])
async def test_ipv6_loopback_client_gets_its_id(
    relay: RelayServer, relay_settings: Settings
) -> None:
    """A relay bound to ::1 serves IPv6 clients; the id is the peer's address and
    port, as announced and as CLIENT_ID answers."""
    assert relay.port is not None
    stream = await anyio.connect_tcp("::1", relay.port)
    port = stream.extra(SocketAttribute.local_address)[1]
    client = MixerClient(stream)
    try:
        announced = json_of(await client.expect(MessageType.CLIENT_UPDATE))
        await client.send(MessageType.CLIENT_ID)
        answer = await client.expect(MessageType.CLIENT_ID)
    finally:
        await client.aclose()

    client_id = str(answer.payload, "utf-8")
    assert client_id == f"::1:{port}"
    assert announced[client_id]["ip"] == "::1"
    assert announced[client_id]["port"] == port


# ---------------------------------------------------------------- process


def test_cli_sigterm_while_streaming_text_log(tmp_path: Path) -> None:
    """With MIXER_LOG_FORMAT=text, a relay stopped by SIGTERM while one client
    streams to another that does not read exits 0 within 2 s, with one
    timestamped event per line and no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mixer_console", "--no-ui", "--host", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "MIXER_PORT": "0", "MIXER_LOG_FORMAT": "text"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        port = int(first.split("port=")[1].split()[0])
        sender = socket.create_connection(("127.0.0.1", port), timeout=5)
        reader = socket.create_connection(("127.0.0.1", port), timeout=5)
        sender.sendall(
            encode_frame(MessageType.JOIN_ROOM, join_payload("s"))
            + encode_frame(MessageType.CONTENT)
        )
        sender.recv(4096)
        time.sleep(0.2)
        reader.sendall(encode_frame(MessageType.JOIN_ROOM, join_payload("s")))
        time.sleep(0.2)
        sender.settimeout(0.5)
        chunk = encode_frame(151, encode_string("/o") + b"x" * 65536)
        sent = 0
        for _ in range(200):
            try:
                sender.sendall(chunk)
                sent += 1
            except TimeoutError:
                break

        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        status = process.wait(timeout=10)
        elapsed = time.monotonic() - started
        sender.close()
        reader.close()
        output, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)

    lines = [first.rstrip("\n"), *output.splitlines()]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) +\S"
    assert sent > 0
    assert status == 0
    assert elapsed < 2.0
    assert "Traceback" not in errors and "Traceback" not in output
    assert all(re.match(stamp, line) for line in lines), lines
    assert "relay.stopping" in lines[-2] or "relay.stopping" in output
    assert lines[-1].split()[2] == "relay.stopped"
