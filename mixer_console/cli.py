"""Command-line entry point: ``mixer-console [--no-ui] [--host H] [--port P]``."""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio

from relay.config import Settings
from relay.errors import ConfigError
from relay.logs import configure_logging
from relay.server import RelayServer

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CANNOT_LISTEN = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixer-console",
        description="A relay for the Mixer collaborative Blender add-on.",
        epilog="Every setting can also come from MIXER_* environment variables "
        "(see the README); options given here win.",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="run the relay headless, logging one line per event on stdout",
    )
    parser.add_argument("--host", help="address to listen on (MIXER_HOST)")
    parser.add_argument("--port", help="TCP port (MIXER_PORT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the process exit status."""
    arguments = build_parser().parse_args(argv)
    env = dict(os.environ)
    if arguments.host is not None:
        env["MIXER_HOST"] = arguments.host

    if arguments.port is not None:
        env["MIXER_PORT"] = arguments.port

    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        sys.stderr.write(f"mixer-console: {exc}\n")
        return EXIT_CONFIG

    configure_logging(settings.log_level, settings.log_format)
    # Known limit: the operator console is not built yet, so every mode is headless.
    mode = "headless" if arguments.no_ui else "headless (no console in this build)"
    server = RelayServer(settings)
    try:
        server.bind()
    except OSError as exc:
        log.error(
            "relay.cannot_listen",
            extra={"host": settings.host, "port": settings.port, "error": str(exc)},
        )
        return EXIT_CANNOT_LISTEN

    anyio.run(run_headless, server, mode)
    return EXIT_OK


async def run_headless(server: RelayServer, mode: str = "headless") -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully."""
    settings = server.settings
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:
            port = await tasks.start(server.serve)
            log.info(
                "relay.started",
                extra={
                    "host": settings.host,
                    "port": port,
                    "login": "none: anyone who reaches the port can join",
                    "mode": mode,
                },
            )
            async for signum in signals:
                log.info(
                    "relay.stopping", extra={"signal": signal.Signals(signum).name}
                )
                tasks.cancel_scope.cancel()
                break

    log.info("relay.stopped")
