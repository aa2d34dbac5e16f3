"""Shared fixtures: a real relay on 127.0.0.1 and clients that connect to it."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relay.config import Settings
from relay.server import RelayServer
from tests.mixer_client import MixerClient
from tests.relays import running_relay


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def relay_settings() -> Settings:
    # The admin socket has tests of its own, with paths short enough for a socket.
    return Settings(
        host="127.0.0.1", port=0, room_update_interval=0.01, admin_socket="off"
    )


@pytest.fixture
async def relay(relay_settings: Settings, tmp_path: Path) -> AsyncIterator[RelayServer]:
    """A relay on 127.0.0.1 with its store in a fresh SQLite file."""
    settings = replace(relay_settings, data_dir=tmp_path / "relay-data")
    async with running_relay(settings) as server:
        yield server


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


@pytest.fixture(autouse=True)
def isolated_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every relay a test starts, in-process or not, keeps its rooms in tmp_path."""
    data_dir = tmp_path / "env-data"
    monkeypatch.setenv("MIXER_DATA_DIR", str(data_dir))
    return data_dir
