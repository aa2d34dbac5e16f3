"""The real console app hosting a real relay, as the command line builds it."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mixer_console.console.app import MixerConsole
from mixer_console.console.hosted import HostedRelayServer
from relay.broadcaster import Broadcaster
from relay.config import Settings
from relay.server import RelayServer, open_store

OPERATOR = "test-operator"


@contextmanager
def hosted_console(
    data_dir: Path, where: str | None = None, admin_socket: Path | None = None
) -> Iterator[tuple[MixerConsole, RelayServer]]:
    """An app whose relay (bound on 127.0.0.1, any port, its store in
    ``data_dir``, its admin socket off unless given) runs inside it once the
    app runs; the store must write everything by the end of the block."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        room_update_interval=0.01,
        data_dir=data_dir,
        admin_socket=admin_socket or "off",
    )
    store = open_store(settings)
    try:
        broadcaster = Broadcaster(store, settings.store_max_unwritten_bytes)
        broadcaster.restore(settings.room_grace)
        server = RelayServer(settings, broadcaster)
        port = server.bind()
        app = MixerConsole(
            server.control,
            OPERATOR,
            where or f"127.0.0.1:{port}",
            hosted=HostedRelayServer(server),
        )
        try:
            yield app, server
        finally:
            server.close()
    finally:
        assert store.close(timeout=10), "the store could not write everything"
