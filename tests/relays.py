"""A real relay run in-process, with its store in a real SQLite file."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from relay.broadcaster import Broadcaster
from relay.config import Settings
from relay.server import RelayServer, open_store


@asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[RelayServer]:
    """Serve on ``settings`` (port 0 picks a free port, see ``server.port``) until
    the block ends; the store must then write everything it was given."""
    store = open_store(settings)
    broadcaster = Broadcaster(store, settings.store_max_unwritten_bytes)
    broadcaster.restore(settings.room_grace)
    server = RelayServer(settings, broadcaster)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(server.serve)
            yield server
            tasks.cancel_scope.cancel()
    finally:
        assert store.close(timeout=10), "the store could not write everything"
