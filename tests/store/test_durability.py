"""Durability of rooms and histories: restarts, crashes, a full disk, big rooms.

Relays run for real: as ``python -m mixer_console`` processes stopped by signal,
or in-process when a test needs the store itself (its size cap, its memory).
Clients talk to them over TCP on 127.0.0.1, and the SQLite file is read directly
once the relay has written it.
"""

import json
import logging
import mmap
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import pytest

from relay.config import Settings
from relay.messages import MessageType
from relay.protocol import encode_bool, encode_frame, encode_json, encode_string
from relay.server import RelayServer
from store.store import DATABASE_NAME, Store
from tests.mixer_client import NOISE, MixerClient, join_payload, room_command
from tests.relays import running_relay
from tests.store.stored_rows import command_rows

ROOT = Path(__file__).resolve().parent.parent.parent
MIB = 1024 * 1024
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
FLUSH_INTERVAL = 0.05


class RelayProcess:
    """One ``mixer-console`` process whose event log goes to a file."""

    def __init__(self, tmp_path: Path, data_dir: Path, env: dict[str, str]) -> None:
        self.index = len(list(tmp_path.glob("relay-*.out")))
        self.out_path = tmp_path / f"relay-{self.index}.out"
        self.err_path = tmp_path / f"relay-{self.index}.err"
        self.data_dir = data_dir
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._files: list[IO[bytes]] = []

    def _spawn(self) -> None:
        out = open(self.out_path, "wb")  # closed in close()
        err = open(self.err_path, "wb")
        self._files = [out, err]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mixer_console",
                "--no-ui",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_DATA_DIR": str(self.data_dir),
                "MIXER_LOG_FORMAT": "json",
                "MIXER_STORE_FLUSH_INTERVAL": str(FLUSH_INTERVAL),
                "MIXER_ROOM_UPDATE_INTERVAL": "0.01",
                **self.env,
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )

    async def start(self) -> int:
        """Start the process and return its port once it logged relay.started."""
        await anyio.to_thread.run_sync(self._spawn)
        started = await self.wait_for("relay.started", timeout=START_TIMEOUT)
        self.port = int(started["port"])
        return self.port

    def events(self) -> list[dict[str, Any]]:
        """Every complete event line logged so far."""
        lines = self.out_path.read_bytes().split(b"\n")[:-1]
        return [json.loads(line) for line in lines]

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    async def wait_for(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return the first logged event named ``event``, waiting for it."""
        assert self.process is not None
        with anyio.fail_after(timeout):
            while True:
                found = [line for line in self.events() if line["event"] == event]
                if found:
                    return found[0]

                assert self.process.poll() is None, (
                    f"the relay ended ({self.process.returncode}) before {event}: "
                    f"{self.stderr()[-2000:]}"
                )
                await anyio.sleep(0.02)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` to the process and return its exit status."""
        assert self.process is not None
        os.kill(self.process.pid, signum)
        with anyio.fail_after(STOP_TIMEOUT):
            while True:
                if self.process.poll() is not None:
                    break

                await anyio.sleep(0.02)

        return self.process.returncode

    def close(self) -> None:
        """Kill the process if it still runs (by its pid) and close its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

        for file in self._files:
            file.close()


StartRelay = Callable[..., RelayProcess]


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[StartRelay]:
    """Makes relay processes (not started) and kills any still running at the end."""
    made: list[RelayProcess] = []

    def make(data_dir: Path, **env: str) -> RelayProcess:
        relay = RelayProcess(tmp_path, data_dir, env)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def port_of(relay: RelayServer) -> int:
    assert relay.port is not None
    return relay.port


def store_of(relay: RelayServer) -> Store:
    store = relay.broadcaster.store
    assert store is not None
    return store


def stored_commands(data_dir: Path) -> list[tuple[int, int, int, bytes]]:
    """Every stored command as (seq, room_id, kind, wire), in seq order."""
    with closing(sqlite3.connect(data_dir / DATABASE_NAME, timeout=10)) as db:
        rows = command_rows(db)

    return [(seq, room_id, kind, wire) for seq, room_id, kind, _size, wire in rows]


def stored_room_names(data_dir: Path) -> list[str]:
    with closing(sqlite3.connect(data_dir / DATABASE_NAME, timeout=10)) as db:
        return [name for (name,) in db.execute("SELECT name FROM rooms ORDER BY id")]


def committed(data_dir: Path, sql: str) -> int:
    """Run a counting query on what is committed so far (the relay may still be
    writing); 0 while the database or its tables do not exist yet."""
    path = data_dir / DATABASE_NAME
    if not path.exists():
        return 0

    with closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return int(db.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def count_stored(data_dir: Path) -> int:
    return committed(data_dir, "SELECT coalesce(sum(count), 0) FROM commands")


def count_joinable(data_dir: Path) -> int:
    return committed(data_dir, "SELECT count(*) FROM rooms WHERE joinable")


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll ``predicate`` until it holds (every 20 ms, at most ``timeout``)."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return

            await anyio.sleep(0.02)


def keyed(kind: int, key: str, body: bytes) -> bytes:
    """A room command whose payload starts with an object path (the merge key)."""
    return room_command(kind, encode_string(key) + body)


def merged(sent: list[bytes]) -> list[bytes]:
    """The history the relay should keep of ``sent``: transient types dropped, a
    201-998 command replacing the newest one of its type and leading string."""
    history: list[bytes] = []
    last: tuple[int, bytes] | None = None
    for wire in sent:
        kind = int.from_bytes(wire[12:14], "little")
        if kind in (MessageType.FRAME, MessageType.QUERY_ANIMATION_DATA, 1000):
            continue

        key = None
        if 200 < kind < 999 and len(wire) >= 18:
            length = int.from_bytes(wire[14:18], "little")
            if 18 + length <= len(wire):
                key = (kind, wire[18 : 18 + length])

        if key is not None and last == key and history:
            history.pop()

        history.append(wire)
        last = key

    return history


async def keep_open(client: MixerClient, room: str) -> None:
    await client.send(
        MessageType.SET_ROOM_KEEP_OPEN, encode_string(room) + encode_bool(True)
    )


async def connected(port: int) -> MixerClient:
    client = await MixerClient.connect(port)
    await client.handshake()
    return client


# 1. Restart ------------------------------------------------------------------


async def test_restart_keeps_room_attributes_and_history(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """A keep_open room survives two graceful restarts: same attributes and
    statistics, the exact history, and commands sent after a restart follow it."""
    before_content = [
        room_command(140, b"create cube"),
        keyed(201, "/cube", b"position 1"),
        keyed(201, "/cube", b"position 2"),  # merges with the one before
        room_command(MessageType.FRAME, b"frame 12"),  # transient
    ]
    after_content = [
        keyed(202, "/cube", b"mesh"),
        keyed(201, "/cube", b"position 3"),  # a 202 came between: no merge
        keyed(201, "/sphere", b"position 4"),
    ]
    expected = merged(before_content + after_content)
    first = relay_process(data_dir)
    port = await first.start()
    creator = await connected(port)
    await creator.create_room("kept", commands=before_content)
    for wire in after_content:
        await creator.send_raw(wire)
    await keep_open(creator, "kept")
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string("kept") + encode_json({"description": "the kept room"}),
    )
    await creator.sync()
    listed_before = (await creator.list_rooms())["kept"]
    await creator.aclose()
    first_status = await first.stop()
    first_rows = stored_commands(data_dir)

    second = relay_process(data_dir)
    port = await second.start()
    observer = await connected(port)
    listed_after = (await observer.list_rooms())["kept"]
    joiner = await connected(port)
    history = await joiner.join_room("kept")
    later = [keyed(201, "/sphere", b"position 5"), room_command(140, b"delete")]
    for wire in later:
        await joiner.send_raw(wire)
    await joiner.sync()
    await joiner.aclose()
    await observer.aclose()
    second_status = await second.stop()
    second_rows = stored_commands(data_dir)

    third = relay_process(data_dir)
    port = await third.start()
    rejoiner = await connected(port)
    listed_third = (await rejoiner.list_rooms())["kept"]
    history_third = await rejoiner.join_room("kept")
    await rejoiner.aclose()
    third_status = await third.stop()

    expected_later = merged(before_content + after_content + later)
    assert (first_status, second_status, third_status) == (0, 0, 0)
    assert [wire for *_, wire in first_rows] == expected
    assert listed_before["command_count"] == len(expected) == 5
    assert listed_before["byte_size"] == sum(len(wire) for wire in expected)
    assert listed_before["keep_open"] is True
    assert listed_before["description"] == "the kept room"
    assert listed_after == listed_before
    assert [frame.wire for frame in history] == expected
    assert [wire for *_, wire in second_rows] == expected_later
    seqs = [seq for seq, *_ in second_rows]
    assert seqs == sorted(set(seqs))
    assert min(seqs[-2:]) > max(seq for seq, *_ in first_rows)
    assert [frame.wire for frame in history_third] == expected_later
    assert listed_third["command_count"] == len(expected_later)
    assert listed_third["byte_size"] == sum(len(wire) for wire in expected_later)


# 2. Grace ---------------------------------------------------------------------


async def live_room_then_stop(
    relay: RelayProcess, signum: int, commands: list[bytes]
) -> None:
    """Create a room (not keep_open) with ``commands``, keep its creator in it, make
    sure it is written, then stop the relay with ``signum``."""
    port = await relay.start()
    creator = await connected(port)
    await creator.create_room("live", commands=commands)
    await creator.sync()
    await wait_until(lambda: count_joinable(relay.data_dir) == 1, 10)
    try:
        await relay.stop(signum)
    finally:
        await creator.aclose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
async def test_grace_live_room_can_be_rejoined_after_restart(
    relay_process: StartRelay, data_dir: Path, signum: int
) -> None:
    """A room that still had a member when the relay stopped (gracefully or not)
    is restored and can be rejoined, with its history, within the grace period."""
    commands = [room_command(140, b"scene %d" % i) for i in range(5)]
    await live_room_then_stop(relay_process(data_dir), signum, commands)

    relay = relay_process(data_dir, MIXER_ROOM_GRACE="30")
    port = await relay.start()
    restored = [e for e in relay.events() if e["event"] == "room.restored"]
    joiner = await connected(port)
    listed = await joiner.list_rooms()
    # Joining a room that is gone would create a new one: only join a restored one.
    history = await joiner.join_room("live") if "live" in listed else []
    await joiner.aclose()

    assert [event["room"] for event in restored] == ["live"]
    assert restored[0]["command_count"] == len(commands)
    assert [frame.wire for frame in history] == commands
    assert listed["live"]["command_count"] == len(commands)


async def test_grace_room_nobody_rejoins_is_deleted(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """With a 2 s grace and nobody rejoining, a restored room is deleted: connected
    clients get ROOM_DELETED, LIST_ROOMS and the database no longer have it."""
    commands = [room_command(140, b"scene")]
    await live_room_then_stop(relay_process(data_dir), signal.SIGKILL, commands)

    relay = relay_process(data_dir, MIXER_ROOM_GRACE="2")
    port = await relay.start()
    watcher = await connected(port)
    listed_during = await watcher.list_rooms()
    deleted = await watcher.expect(MessageType.ROOM_DELETED, timeout=5)
    listed_after = await watcher.list_rooms()
    await watcher.aclose()
    status = await relay.stop()

    assert "live" in listed_during
    assert bytes(deleted.payload) == encode_string("live")
    assert "live" not in listed_after
    assert status == 0
    assert [e["room"] for e in relay.events() if e["event"] == "room.grace_ended"] == [
        "live"
    ]
    assert stored_room_names(data_dir) == []
    assert stored_commands(data_dir) == []


async def test_grace_rejoined_room_outlives_grace(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """A restored room rejoined within the grace period is not deleted when the
    period ends; it goes when its last member leaves, as any room does."""
    commands = [room_command(140, b"scene")]
    await live_room_then_stop(relay_process(data_dir), signal.SIGKILL, commands)

    relay = relay_process(data_dir, MIXER_ROOM_GRACE="2")
    port = await relay.start()
    member = await connected(port)
    history = await member.join_room("live")
    await anyio.sleep(2.5)  # past the grace period
    listed_after_grace = await member.list_rooms()
    await member.send(MessageType.LEAVE_ROOM)
    await member.expect(MessageType.LEAVE_ROOM)
    deleted = await member.expect(MessageType.ROOM_DELETED)
    await member.aclose()
    await relay.stop()

    assert [frame.wire for frame in history] == commands
    assert "live" in listed_after_grace
    assert bytes(deleted.payload) == encode_string("live")
    assert stored_room_names(data_dir) == []


async def test_grace_unfinished_upload_is_discarded(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """A room whose creator never sent CONTENT is discarded at restart, with its
    commands, even though it was written before the crash."""
    first = relay_process(data_dir)
    port = await first.start()
    creator = await connected(port)
    await creator.send(MessageType.JOIN_ROOM, encode_string("upload"))
    await creator.expect(MessageType.JOIN_ROOM)
    await creator.expect(MessageType.CONTENT)
    for i in range(3):
        await creator.send_raw(room_command(140, b"part %d" % i))
    await creator.sync()
    await wait_until(lambda: count_stored(data_dir) == 3, 10)
    await first.stop(signal.SIGKILL)
    await creator.aclose()

    second = relay_process(data_dir)
    port = await second.start()
    observer = await connected(port)
    listed = await observer.list_rooms()
    await observer.aclose()
    await second.stop()

    assert stored_room_names(data_dir) == []
    assert stored_commands(data_dir) == []
    assert listed == {}
    assert [e["room"] for e in second.events() if e["event"] == "room.discarded"] == [
        "upload"
    ]


# 3. Graceful stop -------------------------------------------------------------


async def test_graceful_stop_writes_every_received_command(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """Thousands of commands sent just before SIGTERM, with writes held back by a
    long flush interval, are all in the history after a restart."""
    commands = [room_command(140, i.to_bytes(4, "little") * 8) for i in range(5000)]
    first = relay_process(
        data_dir, MIXER_STORE_FLUSH_INTERVAL="30", MIXER_STORE_BATCH_SIZE="100000"
    )
    port = await first.start()
    creator = await connected(port)
    await creator.create_room("burst")
    await keep_open(creator, "burst")
    await creator.send_raw(b"".join(commands))
    await creator.sync()
    stored_before_stop = count_stored(data_dir)
    status = await first.stop()
    await creator.aclose()

    second = relay_process(data_dir)
    port = await second.start()
    joiner = await connected(port)
    history = await joiner.join_room("burst")
    await joiner.aclose()
    await second.stop()

    assert stored_before_stop < len(commands)
    assert status == 0
    assert [frame.wire for frame in history] == commands


# 4. Crash -------------------------------------------------------------------


STREAM_LIMIT = 5_000_000
STREAM_SECONDS = 20.0


def stream_command(i: int) -> bytes:
    """The i-th command of a stream: merged pairs, transients and plain ones, each
    ending with its index."""
    body = i.to_bytes(4, "little") * 16
    if i % 10 == 0:
        return keyed(201, f"/obj{i}", body)

    if i % 10 == 1:
        return keyed(201, f"/obj{i - 1}", body)  # replaces the one before

    if i % 10 == 2:
        return room_command(MessageType.FRAME, body)

    return room_command(140, body)


def stream_index(wire: bytes | bytearray | mmap.mmap) -> int:
    return int.from_bytes(wire[-4:], "little")


def stream(port: int, room: str, sent: list[int]) -> None:
    """Join ``room`` (it exists) and stream commands until the relay goes away (or
    the limits pass); ``sent`` gets the count handed to the socket so far."""
    deadline = time.monotonic() + STREAM_SECONDS
    with socket.create_connection(("127.0.0.1", port), timeout=STREAM_SECONDS) as sock:
        sock.sendall(encode_frame(MessageType.JOIN_ROOM, join_payload(room)))
        chunk = 500
        try:
            for start in range(0, STREAM_LIMIT, chunk):
                indexes = range(start, start + chunk)
                sock.sendall(b"".join(stream_command(i) for i in indexes))
                sent.append(start + chunk)
                if time.monotonic() > deadline:
                    return
        except OSError:
            return


@pytest.mark.slow
async def test_crash_during_appends_keeps_a_prefix(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """SIGKILL while a sender streams commands: after a restart the database opens
    and the history is exactly what the relay kept of a prefix of the stream,
    with at least everything that was committed before the kill."""
    first = relay_process(data_dir)
    port = await first.start()
    creator = await connected(port)
    await creator.create_room("stream")
    await keep_open(creator, "stream")
    await creator.sync()
    sent: list[int] = []
    sender = threading.Thread(target=stream, args=(port, "stream", sent))
    sender.start()
    try:
        await wait_until(lambda: count_stored(data_dir) >= 20_000, 20)
        committed = count_stored(data_dir)
        await first.stop(signal.SIGKILL)
    finally:
        await anyio.to_thread.run_sync(partial(sender.join, timeout=30))
    await creator.aclose()

    with closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    second = relay_process(data_dir)
    port = await second.start()
    joiner = await connected(port)
    history = [frame.wire for frame in await joiner.join_room("stream")]
    await joiner.aclose()
    await second.stop()
    rows = stored_commands(data_dir)
    last = stream_index(history[-1]) if history else -1
    expected = merged([stream_command(i) for i in range(last + 1)])

    assert not sender.is_alive()
    assert integrity == "ok"
    assert sent and sent[-1] < STREAM_LIMIT
    assert len(history) >= committed
    assert history == expected
    assert [wire for *_, wire in rows] == history
    assert [seq for seq, *_ in rows] == sorted({seq for seq, *_ in rows})


BIG_COMMAND_BYTES = 64 * 1024
# MiB committed before each kill: within the checkpointer's first steps of
# 8 MiB, and past its 32 MiB WAL limit (where the writer waits for the copy and
# SQLite starts the WAL over); each kill also waits a random moment more.
KILL_AFTER_MIB = (1, 9, 20, 36, 45)


def crash_command(cycle: int, i: int) -> bytes:
    """The i-th 64 KiB command of the stream of relay number ``cycle``."""
    head = bytes([cycle]) + i.to_bytes(4, "little")
    return room_command(140, head * (BIG_COMMAND_BYTES // len(head)))


def stream_big(port: int, room: str, cycle: int) -> None:
    """Join ``room`` and stream big commands until the relay goes away."""
    deadline = time.monotonic() + STREAM_SECONDS
    with socket.create_connection(("127.0.0.1", port), timeout=STREAM_SECONDS) as sock:
        try:
            sock.sendall(encode_frame(MessageType.JOIN_ROOM, join_payload(room)))
            for start in range(0, STREAM_LIMIT, 16):
                sock.sendall(
                    b"".join(crash_command(cycle, i) for i in range(start, start + 16))
                )
                if time.monotonic() > deadline:
                    return
        except OSError:
            return


def has_stored(data_dir: Path, count: int) -> bool:
    return count_stored(data_dir) >= count


def room_histories(data_dir: Path) -> dict[int, list[bytes]]:
    """Every room's stored commands, in seq order."""
    histories: dict[int, list[bytes]] = {}
    for _seq, room_id, _kind, wire in stored_commands(data_dir):
        histories.setdefault(room_id, []).append(wire)

    return histories


@pytest.mark.slow
async def test_kills_during_big_appends_keep_every_committed_prefix(
    relay_process: StartRelay, data_dir: Path
) -> None:
    """SIGKILL, again and again on one data folder, while 64 KiB commands stream in
    (during the checkpointer's copies and WAL restarts): each time the database
    opens intact, every room's history is a prefix of its stream with at least
    what was committed before the kill, and earlier rooms are untouched."""
    moments = random.Random(5)
    kept: dict[int, list[bytes]] = {}
    integrity: list[str] = []
    for cycle, kill_after_mib in enumerate(KILL_AFTER_MIB):
        relay = relay_process(data_dir)
        port = await relay.start()
        creator = await connected(port)
        await creator.create_room(f"crash-{cycle}")
        await keep_open(creator, f"crash-{cycle}")
        await creator.sync()
        await creator.aclose()
        before = count_stored(data_dir)
        kill_after = before + kill_after_mib * MIB // BIG_COMMAND_BYTES
        sender = threading.Thread(
            target=stream_big, args=(port, f"crash-{cycle}", cycle)
        )
        sender.start()
        try:
            await wait_until(partial(has_stored, data_dir, kill_after), 30)
            await anyio.sleep(moments.uniform(0, 0.3))
            committed_before_kill = count_stored(data_dir) - before
            await relay.stop(signal.SIGKILL)
        finally:
            await anyio.to_thread.run_sync(partial(sender.join, timeout=30))

        with closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
            integrity.append(db.execute("PRAGMA integrity_check").fetchone()[0])

        histories = room_histories(data_dir)
        new_rooms = [room_id for room_id in histories if room_id not in kept]
        assert len(new_rooms) == 1, histories.keys()
        history = histories[new_rooms[0]]
        expected = [crash_command(cycle, i) for i in range(len(history))]
        assert history == expected, f"cycle {cycle}: not a prefix of the stream"
        assert len(history) >= committed_before_kill, f"cycle {cycle}: lost"
        assert {room_id: histories[room_id] for room_id in kept} == kept
        kept[new_rooms[0]] = history

    assert integrity == ["ok"] * len(KILL_AFTER_MIB)


# 5. Full disk -------------------------------------------------------------------


@pytest.fixture
def store_settings(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        room_update_interval=0.01,
        data_dir=tmp_path / "data",
        store_flush_interval=0.01,
    )


async def room_commands_arriving(client: MixerClient, seconds: float) -> list[bytes]:
    """The room commands that reach ``client`` within ``seconds``, unasked."""
    frames: list[bytes] = []
    with anyio.move_on_after(seconds):
        while True:
            frame = await client.receive(timeout=seconds + 1)
            if frame.kind > 100:
                frames.append(bytes(frame.wire))

    return frames


async def commands_received(client: MixerClient) -> list[bytes]:
    """The room commands that reached ``client`` so far (up to a round trip)."""
    return [bytes(frame.wire) for frame in await client.sync() if frame.kind > 100]


def logged(caplog: pytest.LogCaptureFixture, event: str) -> int:
    return sum(record.getMessage() == event for record in caplog.records)


async def test_full_disk_relays_live_and_writes_after_recovery(
    store_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """While the database cannot grow, live members still receive every command;
    once there is room again the store recovers and the history is complete."""
    caplog.set_level(logging.INFO)
    commands = [room_command(140, i.to_bytes(4, "little") * 256) for i in range(3000)]
    async with running_relay(store_settings) as relay:
        store = store_of(relay)
        creator = await connected(port_of(relay))
        member = await connected(port_of(relay))
        await creator.create_room("full", commands=commands[:10])
        await keep_open(creator, "full")
        await member.join_room("full")
        await wait_until(lambda: store.durable_seq > 0, 10)
        store.limit_size(1)  # no page beyond those the file has
        received: list[bytes] = []
        for start in range(10, len(commands), 100):
            await creator.send_raw(b"".join(commands[start : start + 100]))
            await creator.sync()
            received += await commands_received(member)
            if logged(caplog, "store.degraded"):
                break
        await wait_until(lambda: logged(caplog, "store.degraded") > 0, 10)
        await creator.send_raw(b"".join(commands[start + 100 :]))
        await creator.sync()
        with anyio.fail_after(20):
            while len(received) < len(commands) - 10:
                received += await commands_received(member)
        degraded_while_relaying = store.journal.is_degraded
        store.limit_size(0)
        await wait_until(lambda: logged(caplog, "store.recovered") > 0, 10)
        joiner = await connected(port_of(relay))
        history = [frame.wire for frame in await joiner.join_room("full")]
        for client in (creator, member, joiner):
            await client.aclose()

    async with running_relay(store_settings) as relay:
        rejoiner = await connected(port_of(relay))
        history_after_restart = [
            frame.wire for frame in await rejoiner.join_room("full")
        ]
        await rejoiner.aclose()

    assert degraded_while_relaying
    assert received == commands[10:]
    assert history == commands
    assert history_after_restart == commands


async def test_full_disk_holds_the_sender_back_past_unwritten_limit(
    store_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Past store_max_unwritten_bytes of backlog the relay stops reading the
    sender (client.paused) instead of refusing or dropping commands; once the
    store can write again every command is relayed and stored, in order.

    Regression: room commands past the backlog used to be refused with
    SEND_ERROR, leaving holes in the sender's scene as others saw it.
    """
    caplog.set_level(logging.INFO)
    settings = replace(store_settings, store_max_unwritten_bytes=64 * 1024)
    commands = [room_command(140, i.to_bytes(4, "little") * 256) for i in range(200)]
    async with running_relay(settings) as relay:
        store = store_of(relay)
        creator = await connected(port_of(relay))
        member = await connected(port_of(relay))
        await creator.create_room("capped")
        await keep_open(creator, "capped")
        await member.join_room("capped")
        await wait_until(lambda: not store.journal.backlog, 10)
        store.limit_size(1)
        await creator.send_raw(b"".join(commands))
        await wait_until(lambda: logged(caplog, "client.paused") > 0, 10)
        # The member is paused too (it is in the room): read without asking.
        received_while_full = await room_commands_arriving(member, seconds=1.0)
        store.limit_size(0)
        await wait_until(lambda: logged(caplog, "client.resumed") > 0, 10)
        answers = await creator.sync()
        received = received_while_full + await commands_received(member)
        for client in (creator, member):
            await client.aclose()

    async with running_relay(settings) as relay:
        joiner = await connected(port_of(relay))
        history = [frame.wire for frame in await joiner.join_room("capped")]
        await joiner.aclose()

    assert 0 < len(received_while_full) < len(commands)
    assert not [frame for frame in answers if frame.kind == MessageType.SEND_ERROR]
    assert received == commands
    assert history == commands


# 7. Memory ----------------------------------------------------------------------


def big_command(i: int) -> bytes:
    return room_command(140, bytes([i % 251]) * MIB)


@pytest.mark.slow
async def test_memory_big_history_is_not_held(store_settings: Settings) -> None:
    """Once 300 MiB of history is written, the relay's history holds almost none
    of it in memory, and a joiner still receives all of it."""
    count = 300
    async with running_relay(store_settings) as relay:
        store = store_of(relay)
        creator = await connected(port_of(relay))
        await creator.create_room("big")
        answers = []
        for i in range(count):
            await creator.send_raw(big_command(i))
            if i % 32 == 31:
                # Paced, so that the backlog stays under store_max_unwritten_bytes
                # however slow the disk is.
                answers += await creator.sync()
                await wait_until(lambda: store.pending_bytes < 64 * MIB, 60)
        answers += await creator.sync()
        history = relay.broadcaster.rooms["big"].history
        await wait_until(lambda: store.durable_seq >= history.last_seq, 60)
        # However the history learns that its commands are written, it has time.
        with anyio.move_on_after(5):
            while True:
                if history.memory_bytes <= 2 * MIB:
                    break

                await anyio.sleep(0.05)
        memory_bytes = history.memory_bytes
        joiner = await connected(port_of(relay))
        await joiner.send(
            MessageType.JOIN_ROOM,
            encode_string("big") + encode_string("3.4.1") + encode_string("1.0.0"),
        )
        await joiner.expect(MessageType.CLEAR_CONTENT)
        matching = 0
        for i in range(count):
            frame = await joiner.expect(140, timeout=30)
            matching += frame.wire == big_command(i)
        await joiner.expect(MessageType.JOIN_ROOM)
        for client in (creator, joiner):
            await client.aclose()

    assert [frame for frame in answers if frame.kind not in NOISE] == []
    assert len(history) == count
    assert memory_bytes <= 2 * MIB
    assert matching == count
