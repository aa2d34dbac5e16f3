"""Starting the console from the command line: its log file, its operator and
the app over a hosted relay."""

import getpass
import logging
from pathlib import Path

from mixer_console.console.app import MixerConsole
from mixer_console.console.hosted import HostedRelayServer
from relay.config import Settings
from relay.logs import JsonEventFormatter, TextEventFormatter
from relay.server import RelayServer

LOG_FILE_NAME = "console.log"


def log_file(settings: Settings) -> Path:
    """Where the console's process logs: the terminal belongs to the console."""
    return settings.data_dir / LOG_FILE_NAME


def send_logs_to_file(settings: Settings) -> Path:
    """Send every log record to :func:`log_file`, appended, one line per event
    (JSON unless MIXER_LOG_FORMAT=text); returns the file's path.

    Raises:
        OSError: the file cannot be created or opened.
    """
    path = log_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        TextEventFormatter() if settings.log_format == "text" else JsonEventFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    return path


def operator_name() -> str:
    """Who the audit log names: the OS user running the console."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name and no password entry (a bare container, say).
        return "unknown"


def run_hosted_console(server: RelayServer) -> None:
    """Run the console with ``server`` (bound) inside it until the operator
    quits or a stop signal arrives; the relay then stops gracefully."""
    app = MixerConsole(
        server.control,
        operator_name(),
        f"{server.settings.host}:{server.port}",
        hosted=HostedRelayServer(server),
        handle_signals=True,
    )
    try:
        app.run()
    finally:
        server.close()
