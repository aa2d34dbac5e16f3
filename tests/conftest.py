"""Shared fixtures: a real relay on 127.0.0.1 and clients that connect to it."""

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from relay.config import Settings
from relay.server import RelayServer
from tests.mixer_client import MixerClient


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def relay_settings() -> Settings:
    return Settings(host="127.0.0.1", port=0, room_update_interval=0.01)


@pytest.fixture
async def relay(relay_settings: Settings) -> AsyncIterator[RelayServer]:
    server = RelayServer(relay_settings)
    async with anyio.create_task_group() as tasks:
        await tasks.start(server.serve)
        yield server
        tasks.cancel_scope.cancel()


@pytest.fixture
async def connect(
    relay: RelayServer,
) -> AsyncIterator[Callable[[], Awaitable[MixerClient]]]:
    clients: list[MixerClient] = []

    async def open_client() -> MixerClient:
        assert relay.port is not None
        client = await MixerClient.connect(relay.port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.aclose()
