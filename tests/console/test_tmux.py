"""The console as an operator runs it over SSH: a real process inside tmux at
80x24, read back from the pane."""

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.mixer_client import MixerClient

ROOT = Path(__file__).resolve().parents[2]
TMUX = shutil.which("tmux")
WAIT_TIMEOUT = 20.0
POLL_SECONDS = 0.1
POLLS = int(WAIT_TIMEOUT / POLL_SECONDS)

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

    async def tmux(self, *arguments: str) -> str:
        assert TMUX is not None
        with anyio.fail_after(WAIT_TIMEOUT):
            done = await anyio.run_process([TMUX, "-S", str(self.socket), *arguments])

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


@pytest.fixture
async def pane(tmp_path: Path) -> AsyncIterator[Pane]:
    """``mixer-console --host 127.0.0.1 --port 0`` in an 80x24 tmux pane."""
    pane = Pane(tmp_path / "tmux.sock")
    command = (
        f"cd {ROOT} && MIXER_DATA_DIR={tmp_path / 'data'} "
        f"{sys.executable} -m mixer_console --host 127.0.0.1 --port 0; "
        # The shell stays a moment so that the test reads how the console ended.
        "echo console-exit=$?; sleep 20"
    )
    env_term = {"TERM": "xterm-256color"}
    await pane.tmux(
        "-f",
        os.devnull,
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "80",
        "-y",
        "24",
        "-e",
        f"TERM={env_term['TERM']}",
        command,
    )
    try:
        yield pane
    finally:
        await pane.tmux("kill-server")


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


async def test_console_in_tmux_at_80x24(pane: Pane, tmp_path: Path) -> None:
    """The dashboard fits 80x24 in tmux, shows a client's room, and "q" stops the
    relay gracefully (store flushed), logging to the file, not the terminal."""
    screen = await pane.until_shown("Rooms")
    log_file = tmp_path / "data" / "console.log"
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
    stopped = [
        event
        for event in await logged_events(log_file)
        if event["event"] == "relay.stopped"
    ]
    assert stopped and stopped[-1]["store_flushed"] is True
