"""The relay run inside the console's process, on the app's event loop."""

import logging

import anyio

from relay.server import RelayServer

log = logging.getLogger(__name__)


# Known limit: the relay shares the app's event loop with the rendering, so a
# repaint delays every connection by up to tens of milliseconds and costs
# throughput at saturation; under heavy load, run it --no-ui and attach.
class HostedRelayServer:
    """Runs a bound :class:`RelayServer` in a task group of its own (the app runs
    :meth:`run` in a worker); :meth:`stop` ends it the way the headless relay
    stops on a signal: rooms stay as they are, for the next start to restore.

    Args:
        server: the relay, already bound (so a bad address fails before the
            console takes the terminal).
    """

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.port: int | None = server.port
        self._is_stop_asked = False
        self._stop: anyio.Event | None = None

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        self._stop = anyio.Event()
        if self._is_stop_asked:
            return

        async with anyio.create_task_group() as tasks:
            self.port = await tasks.start(self.server.serve)
            log.info(
                "relay.started", extra=self.server.started_fields(self.port, "console")
            )
            await self._stop.wait()
            await self.server.prepare_stop()
            tasks.cancel_scope.cancel()

    def stop(self) -> None:
        """Ask :meth:`run` to stop; safe before it started and more than once."""
        self._is_stop_asked = True
        if self._stop is not None:
            self._stop.set()
