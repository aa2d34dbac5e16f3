"""Starting the console from the command line: its log file, its operator, and
the app over a hosted relay or attached to one through its admin socket."""

import getpass
import logging
from pathlib import Path

import anyio

from mixer_console.console.app import MixerConsole
from mixer_console.console.hosted import HostedRelayServer
from relay.admin_client import AdminClient
from relay.config import ATTACHED_CONSOLE_LOG_NAME, CONSOLE_LOG_NAME, Settings
from relay.logs import JsonEventFormatter, TextEventFormatter
from relay.server import RelayServer

log = logging.getLogger(__name__)


def log_file(settings: Settings, *, is_attached: bool = False) -> Path:
    """Where the console's process logs: the terminal belongs to the console."""
    name = ATTACHED_CONSOLE_LOG_NAME if is_attached else CONSOLE_LOG_NAME
    return settings.data_dir / name


def send_logs_to_file(settings: Settings, *, is_attached: bool = False) -> Path:
    """Send every log record to :func:`log_file`, appended, one line per event
    (JSON unless MIXER_LOG_FORMAT=text); returns the file's path.

    Raises:
        OSError: the file cannot be created or opened, or is a named pipe.
    """
    path = log_file(settings, is_attached=is_attached)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opening a named pipe for writing waits for a reader, for ever if none comes,
    # before the console has drawn anything.
    if path.is_fifo():
        raise OSError(f"{path} is a named pipe; the console logs to a file")

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


def run_hosted_console(server: RelayServer) -> int:
    """Run the console with ``server`` (bound) inside it until the operator
    quits or a stop signal arrives; the relay then stops gracefully.

    Returns:
        The app's return code: 0, or 1 when it ended on an error of its own
        (which Textual has shown on the terminal).
    """
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

    return _logged_return_code(app)


def run_attached_console(socket: Path) -> int:
    """Run the console on the relay whose admin socket is ``socket`` until the
    operator quits; a relay that stops is shown as such and found again.

    Returns:
        The app's return code, as :func:`run_hosted_console`.
    """
    return anyio.run(_attached, socket, backend="asyncio")


async def _attached(socket: Path) -> int:
    client = AdminClient(socket)
    app = MixerConsole(
        client, operator_name(), f"attached {socket}", handle_signals=True
    )
    try:
        await app.run_async()
    finally:
        await client.aclose()

    return _logged_return_code(app)


def _logged_return_code(app: MixerConsole) -> int:
    """The app's return code, logged as console.failed when it is not 0."""
    return_code = app.return_code or 0
    if return_code:
        log.error("console.failed", extra={"return_code": return_code})

    return return_code
