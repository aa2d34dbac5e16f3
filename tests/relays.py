"""A real relay run in-process, with its store in a real SQLite file, and the
environment of one run as a process."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio

from relay.build import build_relay
from relay.config import Settings
from relay.server import RelayServer, open_store


def headless_env(data_dir: Path) -> dict[str, str]:
    """The environment of a ``mixer-console --no-ui`` process on 127.0.0.1, on
    free ports, keeping its rooms in ``data_dir`` and logging JSON lines."""
    return {
        **os.environ,
        "MIXER_DATA_DIR": str(data_dir),
        "MIXER_HOST": "127.0.0.1",
        "MIXER_PORT": "0",
        "MIXER_HTTP_PORT": "0",
        "MIXER_LOG_FORMAT": "json",
    }


@asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[RelayServer]:
    """Serve on ``settings`` (port 0 picks a free port, see ``server.port``) until
    the block ends; the store must then write everything it was given.

    The HTTP surface always takes a free port (``server.http.port``): tests run
    side by side on one machine.
    """
    settings = replace(settings, http_port=0)
    store = open_store(settings)
    server = build_relay(settings, store)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(server.serve)
            yield server
            tasks.cancel_scope.cancel()
    finally:
        assert store.close(timeout=10), "the store could not write everything"
