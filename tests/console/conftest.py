"""The console's fixtures: the real app hosting a real relay on 127.0.0.1."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from textual.pilot import Pilot

from mixer_console.console.app import MixerConsole
from relay.server import RelayServer
from tests.console.consoles import hosted_console
from tests.mixer_client import MixerClient

WAIT_TIMEOUT = 10.0


@dataclass
class Console:
    """The running app, its pilot and the hosted relay's port."""

    app: MixerConsole
    pilot: Pilot[None]
    server: RelayServer
    port: int
    clients: list[MixerClient]

    async def connect(self, user_name: str | None = None) -> MixerClient:
        """A real TCP client of the hosted relay, after the add-on's handshake."""
        client = await MixerClient.connect(self.port)
        self.clients.append(client)
        if user_name is not None:
            await client.handshake(user_name)

        return client

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let the app run until ``condition`` holds; fail after a bound."""
        with anyio.fail_after(WAIT_TIMEOUT):
            while not condition():
                await self.pilot.pause(0.05)

        assert condition(), what


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    """The console hosting a relay whose store is a fresh SQLite file."""
    with hosted_console(tmp_path / "relay-data") as (app, server):
        assert server.port is not None
        clients: list[MixerClient] = []
        async with app.run_test(size=(160, 48), notifications=True) as pilot:
            yield Console(app, pilot, server, server.port, clients)
            for client in clients:
                await client.aclose()

            await app.action_quit()
