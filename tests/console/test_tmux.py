"""The console as an operator runs it over SSH: a real process inside tmux at
80x24, read back from the pane."""

import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream

from relay.messages import MessageType
from tests.control.admin_helpers import private_socket_dir
from tests.mixer_client import MixerClient, room_command

ROOT = Path(__file__).resolve().parents[2]
TMUX = shutil.which("tmux")
WAIT_TIMEOUT = 20.0
POLL_SECONDS = 0.1
LOCAL_ANY_PORT = ("--host", "127.0.0.1", "--port", "0")
POLLS = int(WAIT_TIMEOUT / POLL_SECONDS)
COMMAND = room_command(MessageType.BLENDER_DATA_UPDATE, b"x" * 986)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        TMUX is None, reason="tmux is not installed (Debian: apt-get install tmux)"
    ),
]


class Pane:
    """One tmux session on a server of the test's own (its socket in tmp)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def tmux(self, *arguments: str, check: bool = True) -> str:
        assert TMUX is not None
        with anyio.fail_after(WAIT_TIMEOUT):
            done = await anyio.run_process(
                [TMUX, "-S", str(self.socket), *arguments], check=check
            )

        return done.stdout.decode()

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p", "-t", "console")

    async def until_shown(self, text: str) -> str:
        """The screen once it shows ``text``; fails after a bound."""
        with anyio.fail_after(WAIT_TIMEOUT):
            for _ in range(POLLS):
                screen = await self.screen()
                if text in screen:
                    return screen

                await anyio.sleep(POLL_SECONDS)

        raise AssertionError(f"the pane never showed {text!r}:\n{screen}")


@asynccontextmanager
async def console_pane(arguments: str, data_dir: Path) -> AsyncIterator[Pane]:
    """``mixer-console ARGUMENTS`` in an 80x24 tmux pane, 256 colours, on a tmux
    server of its own that is killed at the end."""
    command = (
        f"cd {ROOT} && MIXER_DATA_DIR={data_dir} "
        f"{sys.executable} -m mixer_console {arguments}; "
        # The shell stays a moment so that the test reads how the console ended.
        "echo console-exit=$?; sleep 20"
    )
    with private_socket_dir() as socket_dir:
        pane = Pane(socket_dir / "tmux.sock")
        # No user tmux.conf: the pane is what a default tmux gives over SSH.
        await pane.tmux(
            *("-f", os.devnull, "new-session", "-d", "-s", "console"),
            *("-x", "80", "-y", "24", "-e", "TERM=tmux-256color", command),
        )
        try:
            yield pane
        finally:
            # A test that hung the terminal up has killed the server already.
            await pane.tmux("kill-server", check=False)


async def logged_events(log_file: Path) -> list[dict[str, object]]:
    path = anyio.Path(log_file)
    if not await path.exists():
        return []

    return [json.loads(line) for line in (await path.read_text()).splitlines()]


async def relay_port(log_file: Path) -> int:
    """The port the console's relay logged in relay.started."""
    with anyio.fail_after(WAIT_TIMEOUT):
        for _ in range(POLLS):
            for event in await logged_events(log_file):
                if event["event"] == "relay.started":
                    return int(event["port"])  # type: ignore[call-overload]

            await anyio.sleep(POLL_SECONDS)

    raise AssertionError("the console's log has no relay.started")


async def test_console_in_tmux_at_80x24(tmp_path: Path) -> None:
    """The dashboard fits 80x24 in tmux, shows a client's room, and "q" stops the
    relay gracefully (store flushed), logging to the file, not the terminal."""
    async with console_pane("--host 127.0.0.1 --port 0", tmp_path / "data") as pane:
        await in_tmux(pane, tmp_path / "data" / "console.log")


async def in_tmux(pane: Pane, log_file: Path) -> None:
    screen = await pane.until_shown("Rooms")
    client = await MixerClient.connect(await relay_port(log_file))
    try:
        await client.handshake("ada")
        await client.create_room("tmux-room")
        screen = await pane.until_shown("tmux-room")
    finally:
        await client.aclose()

    lines = screen.splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    assert "conns" in lines[0] and "store ok" in lines[0]
    assert "Kick" in lines[-1]
    assert "relay.started" not in screen

    await pane.tmux("send-keys", "-t", "console", "q")
    screen = await pane.until_shown("console-exit=")

    assert "console-exit=0" in screen
    events = await logged_events(log_file)
    (started,) = [event for event in events if event["event"] == "relay.started"]
    assert started["mode"] == "console"
    assert str(started["admin_socket"]).endswith("admin.sock")
    assert isinstance(started["http_port"], int) and started["http_port"] > 0
    assert str(started["login"]).startswith("none")
    stopped = [event for event in events if event["event"] == "relay.stopped"]
    assert stopped and stopped[-1]["store_flushed"] is True


async def first_line(stream: ByteReceiveStream) -> str:
    """The first line the process writes (its relay.started event)."""
    data = b""
    with anyio.fail_after(WAIT_TIMEOUT):
        for _ in range(1000):
            if b"\n" in data:
                break

            data += await stream.receive()

    return data.split(b"\n")[0].decode()


async def test_attach_in_tmux_follows_a_headless_relay(tmp_path: Path) -> None:
    """``mixer-console attach`` at 80x24 shows a headless relay's room, says so
    when the relay stops, and "q" leaves with status 0."""
    with private_socket_dir() as socket_dir:
        socket = socket_dir / "admin.sock"
        relay = await anyio.open_process(
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
                "MIXER_DATA_DIR": str(tmp_path / "relay-data"),
                "MIXER_ADMIN_SOCKET": str(socket),
                "MIXER_LOG_FORMAT": "json",
            },
            stderr=None,
        )
        try:
            assert relay.stdout is not None
            started = json.loads(await first_line(relay.stdout))
            assert started["event"] == "relay.started"
            client = await MixerClient.connect(int(started["port"]))
            await client.handshake("ada")
            await client.create_room("headless-room")
            async with console_pane(
                f"attach --socket {socket}", tmp_path / "console-data"
            ) as pane:
                screen = await pane.until_shown("headless-room")
                assert screen.splitlines()[0].lstrip().startswith("attached")

                relay.send_signal(signal.SIGTERM)
                with anyio.fail_after(WAIT_TIMEOUT):
                    await relay.wait()

                await pane.until_shown("relay stopped / reconnecting")
                await pane.tmux("send-keys", "-t", "console", "q")
                screen = await pane.until_shown("console-exit=")

                assert "console-exit=0" in screen
            await client.aclose()
        finally:
            if relay.returncode is None:
                relay.kill()

            await relay.aclose()


def console_pid(pane_pid: int) -> int:
    """The console's process: the child of the pane's shell."""
    children = Path(f"/proc/{pane_pid}/task/{pane_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


async def test_signal_stops_the_console_gracefully(tmp_path: Path) -> None:
    """SIGINT to the console process (its terminal is raw, so ctrl+c is a key)
    stops the relay as on "q": the store is flushed and the room its artist was
    in is kept for the next start."""
    data_dir = tmp_path / "data"
    async with console_pane("--host 127.0.0.1 --port 0", data_dir) as pane:
        client = await MixerClient.connect(await relay_port(data_dir / "console.log"))
        await client.handshake("ada")
        await client.create_room("kept-room")
        await pane.until_shown("kept-room")
        pane_pid = int(await pane.tmux("display-message", "-p", "#{pane_pid}"))

        os.kill(console_pid(pane_pid), signal.SIGINT)
        screen = await pane.until_shown("console-exit=")
        await client.aclose()

    assert "console-exit=0" in screen
    stopped = [
        event
        for event in await logged_events(data_dir / "console.log")
        if event["event"] == "relay.stopped"
    ]
    assert stopped and stopped[-1]["store_flushed"] is True
    listing = await anyio.run_process(
        [sys.executable, "-m", "mixer_console", "rooms", "--json"],
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(data_dir)},
    )
    assert [room["name"] for room in json.loads(listing.stdout)] == ["kept-room"]


def has_ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True

    # The state follows the command name, which is in parentheses.
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def until_ended(pid: int) -> None:
    with anyio.move_on_after(WAIT_TIMEOUT):
        for _ in range(POLLS):
            if has_ended(pid):
                return

            await anyio.sleep(POLL_SECONDS)

    threads = thread_states(pid)
    # The test started it: a console left hanging must not outlive the test.
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(
        f"process {pid} still ran after its terminal hung up; threads: {threads}"
    )


def thread_states(pid: int) -> list[str]:
    """Each thread's name, state and kernel wait channel, to tell a hang apart."""
    states = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        try:
            name = (task / "comm").read_text().strip()
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            channel = (task / "wchan").read_text().strip()
        except OSError:
            continue

        states.append(f"{name}:{state}:{channel}")

    return states


async def stored_rooms(data_dir: Path) -> dict[str, int]:
    """Room name -> stored command count, read by a one-off ``rooms`` command
    (which a data folder still locked by a live relay would refuse)."""
    listing = await anyio.run_process(
        [sys.executable, "-m", "mixer_console", "rooms", "--json"],
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(data_dir)},
    )
    return {room["name"]: room["command_count"] for room in json.loads(listing.stdout)}


async def test_terminal_hangup_stops_the_hosted_console(tmp_path: Path) -> None:
    """When the console's terminal vanishes (its tmux server killed, as when an
    SSH connection drops), the process ends by itself: the relay stops, the
    store is flushed with every command, and the room is kept for the next
    start."""
    data_dir = tmp_path / "data"
    async with console_pane("--host 127.0.0.1 --port 0", data_dir) as pane:
        client = await MixerClient.connect(await relay_port(data_dir / "console.log"))
        await client.handshake("ada")
        await client.create_room("kept-room", commands=[COMMAND] * 50)
        await pane.until_shown("kept-room")
        pane_pid = int(await pane.tmux("display-message", "-p", "#{pane_pid}"))
        console = console_pid(pane_pid)

        await pane.tmux("kill-server")
        await until_ended(console)
        await client.aclose()

    events = await logged_events(data_dir / "console.log")
    names = [event["event"] for event in events]
    assert names.count("console.terminal_gone") == 1
    assert names.count("relay.stopping") == 1
    stopped = [event for event in events if event["event"] == "relay.stopped"]
    assert stopped and stopped[-1]["store_flushed"] is True
    assert await stored_rooms(data_dir) == {"kept-room": 50}


async def test_terminal_hangup_ends_an_attached_console(tmp_path: Path) -> None:
    """An attached console whose terminal vanishes ends by itself, its log
    saying the console stopped (it said "relay.stopping", which it never does);
    the relay it watched goes on serving."""
    with private_socket_dir() as socket_dir:
        socket = socket_dir / "admin.sock"
        relay = await anyio.open_process(
            [sys.executable, "-m", "mixer_console", "--no-ui", *LOCAL_ANY_PORT],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_DATA_DIR": str(tmp_path / "relay-data"),
                "MIXER_ADMIN_SOCKET": str(socket),
                "MIXER_LOG_FORMAT": "json",
            },
            stderr=None,
        )
        try:
            assert relay.stdout is not None
            started = json.loads(await first_line(relay.stdout))
            async with console_pane(
                f"attach --socket {socket}", tmp_path / "console-data"
            ) as pane:
                await pane.until_shown("Rooms")
                pane_pid = int(await pane.tmux("display-message", "-p", "#{pane_pid}"))
                console = console_pid(pane_pid)

                await pane.tmux("kill-server")
                await until_ended(console)

            client = await MixerClient.connect(int(started["port"]))
            await client.handshake("ada")
            await client.aclose()
            log_file = tmp_path / "console-data" / "console-attached.log"
            events = [event["event"] for event in await logged_events(log_file)]
            assert relay.returncode is None
            assert "console.stopping" in events and "relay.stopping" not in events
        finally:
            if relay.returncode is None:
                relay.kill()

            await relay.aclose()
