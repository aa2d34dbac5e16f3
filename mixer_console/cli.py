"""Command-line entry point: ``mixer-console [--host H] [--port P]`` runs the
relay inside the operator console, ``--no-ui`` runs it headless;
``mixer-console attach [--socket PATH]`` opens the console on a running relay;
``mixer-console rooms`` and ``mixer-console room ...`` are the admin commands of
:mod:`mixer_console.admin_cli` (see it for their exit status)."""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mixer_console import admin_cli, login_cli
from relay.build import build_relay
from relay.cluster import open_cluster
from relay.config import Settings
from relay.errors import ConfigError
from relay.logs import configure_logging
from relay.server import RelayServer, open_store
from store.errors import StoreError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CANNOT_LISTEN = 3
EXIT_STORE = 4
# The console ended on an error of its own (Textual showed it on the terminal).
EXIT_CONSOLE_FAILED = 1
# What a shell reports for a command ended by SIGPIPE (128 + 13).
EXIT_OUTPUT_CLOSED = 141

# Stopping must take under 2 s in all; the store gets most of it to flush.
STORE_CLOSE_SECONDS = 1.5

# SIGHUP too: closing the SSH session that started the relay stops it cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        help="run the relay headless, logging one line per event on stdout "
        "(by default the operator console runs it and logs to a file)",
    )
    parser.add_argument(
        "--host", help="address to listen on (MIXER_HOST, default 0.0.0.0)"
    )
    parser.add_argument("--port", help="TCP port (MIXER_PORT, default 12800)")
    commands = admin_cli.add_commands(parser)
    login_cli.add_command(commands)
    attach = commands.add_parser(
        "attach",
        help="open the console on a relay already running (--no-ui)",
        description="Open the operator console on a running relay through its "
        "admin socket (only the relay's user may). A relay that stops is shown "
        "as such and the console reconnects by itself.",
    )
    attach.add_argument(
        "--socket",
        help="the relay's admin socket (MIXER_ADMIN_SOCKET, default admin.sock "
        "in MIXER_DATA_DIR)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the process exit status."""
    # Until the relay's own handlers are installed, a stop signal still ends the
    # start-up cleanly instead of with a traceback.
    previous = {
        signum: signal.signal(signum, _stop_during_startup) for signum in STOP_SIGNALS
    }
    try:
        parser = build_parser()
        arguments = parser.parse_args(argv)
        if arguments.command == "attach":
            return _run_attach(parser, arguments)

        if arguments.command is not None:
            return _run_admin(parser, arguments, previous)

        return _run(arguments)
    except KeyboardInterrupt:
        log.info("relay.stopped", extra={"during": "start-up"})
        return EXIT_OK
    except BrokenPipeError:
        # The reader of stdout went away (``mixer-console rooms | head -1``).
        _discard_stdout()
        return EXIT_OUTPUT_CLOSED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail
    again on the closed pipe (and print its own traceback)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _stop_during_startup(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _end_at_once_on_stop_signals(command: str) -> None:
    """Make a stop signal end the process at once, with status 130 and a line
    saying so: for the commands that only wait for a running relay or node,
    which have nothing to undo. Raised as KeyboardInterrupt inside the HTTP
    client, at whatever point it was, the stop could leave the client's
    connection pool locked, and its close then waited for ever (seen once in a
    CI run of tests/test_interrupted_commands.py)."""
    message = f"mixer-console: {command} interrupted\n".encode()

    def end(signum: int, frame: object) -> None:
        os.write(sys.stderr.fileno(), message)
        os._exit(admin_cli.EXIT_INTERRUPTED)

    for signum in STOP_SIGNALS:
        signal.signal(signum, end)


def _refuse_relay_options(
    parser: argparse.ArgumentParser, arguments: argparse.Namespace
) -> None:
    if arguments.no_ui or arguments.host is not None or arguments.port is not None:
        parser.error(
            "--no-ui, --host and --port apply to running the relay, not to "
            f"'{arguments.command}'"
        )


def _run_attach(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> int:
    """Open the console on a running relay; returns the exit status."""
    _refuse_relay_options(parser, arguments)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"mixer-console: {exc}\n")
        return EXIT_CONFIG

    refusal = _terminal_refusal("run attach from a terminal (ssh -t over SSH)")
    if refusal is not None:
        sys.stderr.write(f"mixer-console: {refusal}\n")
        return EXIT_CONFIG

    socket = (
        Path(arguments.socket).expanduser()
        if arguments.socket
        else settings.admin_socket_path()
    )
    if socket is None:
        sys.stderr.write(
            "mixer-console: MIXER_ADMIN_SOCKET is off: give the relay's socket "
            "with --socket\n"
        )
        return EXIT_CONFIG

    # Textual is imported only where a console runs: it would triple the start-up
    # time of a headless relay and of every admin command.
    from mixer_console.console.launch import run_attached_console, send_logs_to_file

    try:
        send_logs_to_file(settings, is_attached=True)
    except OSError as exc:
        sys.stderr.write(f"mixer-console: cannot write the log file: {exc}\n")
        return EXIT_STORE

    return EXIT_CONSOLE_FAILED if run_attached_console(socket) else EXIT_OK


def _run_admin(
    parser: argparse.ArgumentParser,
    arguments: argparse.Namespace,
    previous: dict[signal.Signals, Any],
) -> int:
    """Run an admin command; a stop signal interrupts it with status 130, and
    the signal handlers are given back afterwards (for callers in-process)."""
    try:
        _refuse_relay_options(parser, arguments)
        if arguments.command == "login":
            return login_cli.run(arguments, sys.stdout, sys.stderr)

        if arguments.command == "cluster" or getattr(arguments, "relay", None):
            _end_at_once_on_stop_signals(arguments.command)

        return admin_cli.run(arguments)
    except KeyboardInterrupt:
        # The store's commands say themselves that nothing changed; these talk
        # to running relays or nodes (cluster, login, --relay), which may have
        # acted already, and a status 0 would pass for success.
        sys.stderr.write(f"mixer-console: {arguments.command} interrupted\n")
        return admin_cli.EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(arguments: argparse.Namespace) -> int:
    options = {
        "MIXER_HOST": ("--host", arguments.host),
        "MIXER_PORT": ("--port", arguments.port),
    }
    given = {name: value for name, (_, value) in options.items() if value is not None}
    try:
        Settings.from_env(given)
        settings = Settings.from_env({**os.environ, **given})
    except ConfigError as exc:
        message = str(exc)
        for variable, (option, value) in options.items():
            if value is not None:
                message = message.replace(f"{variable}=", f"{option} ")

        sys.stderr.write(f"mixer-console: {message}\n")
        return EXIT_CONFIG

    if arguments.no_ui:
        configure_logging(settings.log_level, settings.log_format)
    else:
        refusal = _terminal_refusal("run the relay headless with --no-ui")
        if refusal is not None:
            sys.stderr.write(f"mixer-console: {refusal}\n")
            return EXIT_CONFIG

        from mixer_console.console.launch import send_logs_to_file

        try:
            send_logs_to_file(settings)
        except OSError as exc:
            sys.stderr.write(f"mixer-console: cannot write the log file: {exc}\n")
            return EXIT_STORE

    try:
        store = open_store(settings)
    except (StoreError, OSError) as exc:
        log.error("store.unavailable", extra={"error": str(exc)})
        sys.stderr.write(f"mixer-console: {exc}\n")
        return EXIT_STORE

    cluster = None
    try:
        if settings.is_clustered:
            cluster = open_cluster(settings, store)
    except StoreError as exc:
        log.error("raft.unavailable", extra={"error": str(exc)})
        sys.stderr.write(f"mixer-console: {exc}\n")
        store.close(timeout=STORE_CLOSE_SECONDS)
        return EXIT_STORE

    try:
        server = build_relay(
            settings,
            store,
            cluster_link=cluster.link if cluster is not None else None,
        )
        try:
            server.bind()
        except OSError as exc:
            log.error(
                "relay.cannot_listen",
                extra={
                    "host": settings.host,
                    "port": settings.port,
                    "http_port": settings.http_port,
                    "error": str(exc),
                },
            )
            if not arguments.no_ui:
                sys.stderr.write(
                    f"mixer-console: cannot listen on {settings.host} port "
                    f"{settings.port}: {exc}\n"
                )

            return EXIT_CANNOT_LISTEN

        console_return_code = 0
        if arguments.no_ui:
            anyio.run(run_headless, server)
        else:
            from mixer_console.console.launch import run_hosted_console

            console_return_code = run_hosted_console(server)
    finally:
        if cluster is not None:
            cluster.close()

        is_flushed = store.close(timeout=STORE_CLOSE_SECONDS)

    log.info(
        "relay.stopped",
        extra={"store_flushed": is_flushed, "cluster_drained": server.cluster_drained},
    )
    return EXIT_CONSOLE_FAILED if console_return_code else EXIT_OK


def _terminal_refusal(advice: str) -> str | None:
    """Why the console cannot run in this process, followed by ``advice``, or
    None: Textual reads keys from stdin and draws on stderr, and on anything but
    a terminal it spins on end-of-file (stdin on /dev/null) or crashes (stdin
    closed)."""
    for name, stream in (("stdin", sys.__stdin__), ("stderr", sys.__stderr__)):
        if stream is None or not stream.isatty():
            return (
                f"the console needs a terminal, and {name} is not a terminal; {advice}"
            )

    return None


async def run_headless(server: RelayServer, mode: str = "headless") -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then stop gracefully."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tasks:
            port = await tasks.start(server.serve)
            log.info("relay.started", extra=server.started_fields(port, mode))
            async for signum in signals:
                log.info(
                    "relay.stopping", extra={"signal": signal.Signals(signum).name}
                )
                await server.prepare_stop()
                tasks.cancel_scope.cancel()
                break
