"""The admin socket: attached consoles see and do what in-process ones do."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.admin_server import AdminEndpointError, AdminServer
from relay.config import Settings
from relay.control import OperationRefused, RelaySnapshot
from relay.line_socket import LineSocket
from relay.server import RelayServer
from store.store import DATABASE_NAME
from tests.control.admin_helpers import RawConsole, private_socket_dir, wait_for_socket
from tests.control.test_operations import OPERATOR, commands
from tests.mixer_client import MixerClient
from tests.relays import running_relay


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with private_socket_dir() as directory:
        yield directory


@pytest.fixture
def admin_settings(socket_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        admin_socket=socket_dir / "admin.sock",
        room_grace=60,
    )


@pytest.fixture
async def relay(admin_settings: Settings) -> AsyncIterator[RelayServer]:
    async with running_relay(admin_settings) as server:
        await wait_for_socket(admin_settings)
        yield server


async def client_in_room(relay: RelayServer) -> MixerClient:
    assert relay.port is not None
    client = await MixerClient.connect(relay.port)
    await client.handshake("ada")
    await client.create_room("studio", commands=commands(4))
    return client


def without_instants(snapshot: RelaySnapshot) -> RelaySnapshot:
    """The parts of a snapshot that do not move while nothing happens."""
    totals = replace(snapshot.totals, cpu_percent=0, rss_bytes=0)
    return replace(snapshot, taken_at=0, totals=totals)


async def test_attached_snapshot_equals_in_process(
    relay: RelayServer, admin_settings: Settings
) -> None:
    """Two consoles at once see the snapshot and events the relay has in-process."""
    client = await client_in_room(relay)
    path = admin_settings.admin_socket_path()
    assert path is not None
    first, second = AdminClient(path), AdminClient(path)
    # Rates move once a second: retry until no sample fell between the calls.
    for _ in range(5):
        local = without_instants(await relay.control.snapshot())
        attached = [without_instants(await c.snapshot()) for c in (first, second)]
        if attached == [local, local]:
            break
        await anyio.sleep(0.3)

    assert attached == [local, local]
    assert local.rooms[0].name == "studio"
    assert await first.events(0) == await relay.control.events(0)
    assert await second.events(0, limit=1) == (await relay.control.events(0))[:1]
    assert first.relay_pid == os.getpid()
    for console in (first, second, client):
        await console.aclose()


async def test_operations_travel_over_the_socket(
    relay: RelayServer, admin_settings: Settings, tmp_path: Path
) -> None:
    """History, inspect (bytes included), fork, export, kick and refusals attached."""
    client = await client_in_room(relay)
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = AdminClient(path)

    page = await console.history_page("studio", 1, 10)
    detail = await console.command("studio", 1)
    await console.fork_room("studio", 2, "take2", operator=OPERATOR)
    size = await console.export_room("studio", tmp_path / "s.mixer", operator=OPERATOR)
    await console.set_keep_open("studio", True, operator=OPERATOR)
    with pytest.raises(OperationRefused, match="no room named 'nowhere'"):
        await console.rewind_room("nowhere", 1, operator=OPERATOR)
    await console.kick(client.client_id, operator=OPERATOR, ban_seconds=60)
    await client.expect_closed()
    bans = await console.bans()
    audit = await console.audit_log()

    assert page == await relay.control.history_page("studio", 1, 10)
    assert detail == await relay.control.command("studio", 1)
    assert detail.head == commands(4)[0]
    assert "take2" in relay.broadcaster.rooms
    assert size == (tmp_path / "s.mixer").stat().st_size
    assert [b.subject for b in bans] == ["address:127.0.0.1"]
    assert [e.action for e in audit] == [
        "kick",
        "set_keep_open",
        "export_room",
        "fork_room",
    ]
    await console.lift_ban("address:127.0.0.1", operator=OPERATOR)
    await console.delete_room("take2", operator=OPERATOR)
    assert await console.bans() == []
    await console.aclose()
    await client.aclose()


async def test_client_reconnects_after_a_relay_restart(
    admin_settings: Settings,
) -> None:
    """While the relay is down calls raise ConnectionError; once it is back the
    same client works again."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = AdminClient(path)
    async with running_relay(admin_settings):
        await wait_for_socket(admin_settings)
        assert (await console.snapshot()).totals.connections == 0

    with pytest.raises(ConnectionError, match="cannot use the relay"):
        await console.snapshot()
    assert not console.is_connected

    async with running_relay(admin_settings):
        await wait_for_socket(admin_settings)
        snapshot = await console.snapshot()
        await console.aclose()

    assert snapshot.totals.rooms == 0


async def test_stale_socket_is_replaced(admin_settings: Settings) -> None:
    """A socket file nobody answers on (a relay that crashed) is removed at start."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()

    async with running_relay(admin_settings):
        await wait_for_socket(admin_settings)
        console = AdminClient(path)
        assert await console.snapshot()
        await console.aclose()


async def test_live_socket_and_other_files_are_left_alone(
    relay: RelayServer, admin_settings: Settings, socket_dir: Path
) -> None:
    """A second endpoint on a path a relay answers on, or on a file that is not a
    socket, refuses to start and touches nothing."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    regular = socket_dir / "notes.txt"
    regular.write_text("keep me")

    with pytest.raises(AdminEndpointError, match="another relay answers"):
        await AdminServer(relay.control, path, is_default=False).serve()
    with pytest.raises(AdminEndpointError, match="is not a socket"):
        await AdminServer(relay.control, regular, is_default=False).serve()

    assert regular.read_text() == "keep me"
    console = AdminClient(path)
    assert await console.snapshot()
    await console.aclose()


async def test_socket_in_an_open_directory_is_refused(tmp_path: Path) -> None:
    """A socket path in a directory others can enter is refused; the relay goes
    on serving artists and says why in its event log."""
    open_dir = Path("/tmp") / f"mx-open-{os.getpid()}"
    open_dir.mkdir(mode=0o755)
    try:
        open_dir.chmod(0o755)
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path / "data",
            admin_socket=open_dir / "a.sock",
        )
        async with running_relay(settings) as relay:
            assert relay.port is not None
            client = await MixerClient.connect(relay.port)
            assert await client.handshake()
            await client.aclose()
            for _ in range(100):
                errors = [
                    e.text for e in await relay.control.events(0) if e.kind == "error"
                ]
                if errors:
                    break
                await anyio.sleep(0.02)
    finally:
        open_dir.rmdir()

    assert errors and "closed to others (mode 0700)" in errors[0]
    assert not (open_dir / "a.sock").exists()


async def test_default_socket_is_private(tmp_path: Path) -> None:
    """The default socket sits in the data directory, made 0700, with mode 0600."""
    data_dir = Path("/tmp") / f"mx-data-{os.getpid()}"
    settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir)
    try:
        async with running_relay(settings):
            await wait_for_socket(settings)
            socket_mode = (data_dir / "admin.sock").stat().st_mode & 0o777
            dir_mode = data_dir.stat().st_mode & 0o777
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    assert (socket_mode, dir_mode) == (0o600, 0o700)


async def test_malformed_unknown_and_huge_requests(
    relay: RelayServer, admin_settings: Settings
) -> None:
    """Bad requests get clear errors and the connection stays; a huge line gets
    too_large and the connection closes."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = await RawConsole.attach(path)
    cases = [
        (b"this is not json\n", "bad_request", "not a JSON line"),
        (b"[1, 2]\n", "bad_request", "a message is a JSON object, not list"),
        (b"[" * 200_000 + b"\n", "bad_request", "nested too deeply"),
        (b'{"method": "snapshot"}\n', "bad_request", "a request needs an id"),
        # Ids that JSON cannot echo back (found by readme7: the connection died).
        (b'{"id": NaN, "method": "bans"}\n', "bad_request", "a request needs an id"),
        (b'{"id": 1e999, "method": "bans"}\n', "bad_request", "a whole number"),
        (b'{"id": -Infinity, "method": "bans"}\n', "bad_request", "needs an id"),
        (b'{"id": 1.5, "method": "bans"}\n', "bad_request", "a whole number"),
        (b'{"id": 1, "method": "reboot"}\n', "bad_request", "unknown method 'reboot'"),
        (
            b'{"id": 2, "method": "events", "params": {"after": "x"}}\n',
            "bad_request",
            "after must be a whole number",
        ),
        (
            b'{"id": 3, "method": "events", "params": {"after": true}}\n',
            "bad_request",
            "after must be a whole number",
        ),
        (
            b'{"id": 4, "method": "kick", "params": {"client_id": "a"}}\n',
            "bad_request",
            "missing parameter(s) operator",
        ),
        (
            b'{"id": 5, "method": "bans", "params": {"x": 1}}\n',
            "bad_request",
            "unknown parameter(s) x",
        ),
        (
            b'{"id": 6, "method": "command", "params": {"room": "r", "index": 1}}\n',
            "refused",
            "no room named 'r'",
        ),
    ]
    for line, code, message in cases:
        await console.send_raw(line)
        answer = await console.receive()
        assert answer["error"]["code"] == code, answer
        assert answer["id"] in (None, *range(1, 7)), answer
        assert message in answer["error"]["message"], answer

    await console.send({"id": "ok", "method": "snapshot"})
    assert (await console.receive())["id"] == "ok"

    async def send_huge() -> None:
        try:
            await console.send_raw(b"x" * (5 * 1024 * 1024))
        except OSError:
            pass  # the relay closed before the last bytes: expected

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(send_huge)
        answer = await console.receive()
    await console.expect_closed()
    await console.aclose()

    assert answer["error"]["code"] == "too_large"


async def test_unsupported_version_is_refused(
    relay: RelayServer, admin_settings: Settings
) -> None:
    """A console speaking another protocol version is told so, then closed."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = await RawConsole.attach(path, version=99)

    answer = await console.receive()
    await console.expect_closed()
    await console.aclose()

    assert answer["error"]["code"] == "unsupported_version"
    assert "version 99 is not supported" in answer["error"]["message"]


async def test_console_that_stops_reading_does_not_stall_the_relay(
    relay: RelayServer, admin_settings: Settings
) -> None:
    """A console that sends requests and never reads blocks only itself: artists
    and other consoles are served at once."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    client = await client_in_room(relay)
    stuck = await RawConsole.attach(path)
    params = {"room": "studio", "start": 1, "count": 1000}
    request = json.dumps({"id": 1, "method": "history_page", "params": params})
    with anyio.move_on_after(3):
        for _ in range(20000):
            await stuck.send_raw(request.encode() + b"\n")

    other = AdminClient(path)
    with anyio.fail_after(2):
        assert await client.list_rooms()
        assert await other.snapshot()

    await other.aclose()

    await stuck.aclose()
    await client.aclose()


CHILD = """
import os, socket, sys
os.setgid(65534)
os.setuid(65534)
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print("connect failed:", exc.strerror)
    sys.exit(0)
print(sock.makefile("rb").readline().decode().strip())
"""


def run_as_nobody(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
async def test_other_users_are_refused(
    relay: RelayServer, admin_settings: Settings, socket_dir: Path
) -> None:
    """Another user cannot open the socket (mode 0600 in a 0700 directory); with
    the permissions opened up, the peer's uid check still refuses it."""
    path = admin_settings.admin_socket_path()
    assert path is not None

    by_permissions = await anyio.to_thread.run_sync(run_as_nobody, path)
    os.chmod(socket_dir, 0o711)
    os.chmod(path, 0o666)
    by_uid = await anyio.to_thread.run_sync(run_as_nobody, path)

    assert by_permissions == "connect failed: Permission denied"
    assert '"code":"forbidden"' in by_uid
    assert "only the relay's user (uid 0) may attach; you are uid 65534" in by_uid


async def test_event_numbers_grow_across_a_restart(admin_settings: Settings) -> None:
    """A console that reattaches and asks for events after the last number it saw
    gets the restarted relay's events, from its first."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = AdminClient(path)
    async with running_relay(admin_settings) as relay:
        await wait_for_socket(admin_settings)
        assert relay.port is not None
        for _ in range(3):
            client = await MixerClient.connect(relay.port)
            await client.handshake()
            await client.aclose()
        await anyio.sleep(0.1)
        last_seen = (await console.events(0))[-1].seq

    async with running_relay(admin_settings) as relay:
        await wait_for_socket(admin_settings)
        assert relay.port is not None
        client = await MixerClient.connect(relay.port)
        await client.handshake()
        after_restart = await console.events(last_seen)
        await client.aclose()
        await console.aclose()

    assert [event.kind for event in after_restart] == ["connect"]
    assert after_restart[0].seq > last_seen


async def test_numbers_out_of_range_are_bad_requests(
    relay: RelayServer, admin_settings: Settings
) -> None:
    """Numbers Python cannot hold as asked (more digits than int parsing allows, a
    ban too long for a float) get bad_request; they used to be "internal" errors
    logged as relay bugs, and in the hello they closed the connection unanswered."""
    path = admin_settings.admin_socket_path()
    assert path is not None
    digits = b"9" * 5000
    console = await RawConsole.attach(path)
    await console.send_raw(
        b'{"id": 1, "method": "events", "params": {"after": ' + digits + b"}}\n"
    )
    too_many_digits = await console.receive()
    await console.send(
        {
            "id": 2,
            "method": "kick",
            "params": {"client_id": "a", "operator": "o", "ban_seconds": 10**400},
        }
    )
    too_big_for_float = await console.receive()
    await console.send({"id": 3, "method": "snapshot"})
    still_served = await console.receive()
    await console.aclose()

    late = RawConsole(await LineSocket.connect_unix(str(path)))
    await late.receive()
    await late.send_raw(
        b'{"hello": "mixer-console-admin", "version": ' + digits + b"}\n"
    )
    hello_answer = await late.receive()
    await late.expect_closed()
    await late.aclose()

    assert too_many_digits["error"]["code"] == "bad_request", too_many_digits
    assert "not a JSON line" in too_many_digits["error"]["message"]
    assert too_big_for_float["error"]["code"] == "bad_request", too_big_for_float
    assert "ban_seconds is out of range" in too_big_for_float["error"]["message"]
    assert still_served["id"] == 3 and "result" in still_served
    assert hello_answer["error"]["code"] == "unsupported_version", hello_answer


async def test_views_answer_while_a_long_action_runs(
    relay: RelayServer, admin_settings: Settings, tmp_path: Path
) -> None:
    """An export that waits for the store (its file locked by another writer
    here) does not hold up the same console's snapshots; it completes once the
    store can write again."""
    client = await client_in_room(relay)
    path = admin_settings.admin_socket_path()
    assert path is not None
    console = AdminClient(path)
    await console.snapshot()
    blocker = sqlite3.connect(admin_settings.data_dir / DATABASE_NAME, timeout=10)
    target = tmp_path / "studio.mixer"
    exported: list[int] = []

    async def export() -> None:
        exported.append(await console.export_room("studio", target, operator=OPERATOR))

    try:
        blocker.execute("BEGIN EXCLUSIVE")
        # A command the store cannot write while the lock is held.
        await client.send_raw(commands(5)[4])
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(export)
            await anyio.sleep(0.3)
            snapshot = await console.snapshot()
            is_export_done = bool(exported)
            blocker.rollback()

        assert not is_export_done
        assert snapshot.rooms[0].name == "studio"
        assert exported == [target.stat().st_size]
    finally:
        blocker.close()
        await console.aclose()
        await client.aclose()
