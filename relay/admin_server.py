"""The admin endpoint: the Unix socket consoles attach to (see
:mod:`relay.admin_protocol` for what travels on it).

Only the relay's own user gets in: the socket is mode 0600, inside a directory
only that user can enter, and each peer's user id is checked with SO_PEERCRED.
Each console connection is served by its own task, one request at a time, so at
most one answer per console waits to be written; a console that stops reading
is disconnected once a write makes no progress for
:data:`ADMIN_SEND_TIMEOUT`, and never holds the relay back.
"""

import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from relay.accept_failures import AcceptFailures
from relay.admin_protocol import (
    MAX_LINE_BYTES,
    AdminProtocolError,
    check_hello,
    decode_line,
    encode_line,
    encode_result,
    hello,
    parse_params,
)
from relay.control import OperationRefused
from relay.line_socket import LineSocket, LineTooLong
from relay.local_control import LocalControl

log = logging.getLogger(__name__)

# Seconds a console may take to read an answer, and to send its hello.
ADMIN_SEND_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0

# Seconds a connection attempt to an existing socket may take to tell whether a
# relay still answers on it.
STALE_CHECK_SECONDS = 1.0

_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class AdminEndpointError(Exception):
    """The admin socket cannot be opened; the message says why and what to do."""


class AdminServer:
    """Serves :class:`LocalControl` to consoles on a Unix socket.

    Args:
        control: the relay's in-process control.
        path: the socket's path.
        is_default: the path is the default one in the data directory, which the
            relay may make private; any other directory must be private already.
    """

    def __init__(self, control: LocalControl, path: Path, is_default: bool) -> None:
        self._control = control
        self._path = path
        self._is_default = is_default
        self._uid = os.geteuid()
        self._listener: socket.socket | None = None
        self.connections = 0
        """Consoles connected right now."""

    async def open(self) -> None:
        """Create the socket, so that a bad path fails before the relay starts.

        Raises:
            AdminEndpointError: the socket cannot be opened.
        """
        await self._prepare()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The directory is private, so nobody else can reach the socket
            # between its creation and the chmod.
            listener.bind(str(self._path))
            os.chmod(self._path, 0o600)
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise AdminEndpointError(
                f"cannot listen on the admin socket {self._path}: {exc.strerror or exc}"
            ) from exc

        self._listener = listener

    async def serve(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve consoles until cancelled (opening the socket first if
        :meth:`open` was not called); the socket file is removed at the end.

        Raises:
            AdminEndpointError: the socket cannot be opened.
        """
        if self._listener is None:
            await self.open()

        listener = self._listener
        assert listener is not None
        try:
            async with anyio.create_task_group() as tasks:
                task_status.started()
                await self._accept_loop(listener, tasks)
        finally:
            self._listener = None
            anyio.notify_closing(listener)
            listener.close()
            try:
                self._path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("admin.cleanup_failed", extra={"error": str(exc)})

    async def _accept_loop(self, listener: socket.socket, tasks: TaskGroup) -> None:
        failures = AcceptFailures("admin")
        while True:
            await anyio.wait_readable(listener)
            try:
                sock, _address = listener.accept()
                console = LineSocket(sock)
            except BlockingIOError:
                continue
            except OSError as exc:
                # Out of file descriptors, say: keep listening.
                failures.failed(exc)
                await anyio.sleep(0.1)
                continue

            failures.accepted()
            tasks.start_soon(self._serve_console, console)

    async def _prepare(self) -> None:
        directory = self._path.parent
        try:
            if self._is_default:
                directory.mkdir(parents=True, exist_ok=True)
                # The data directory is the relay's own: make it private.
                directory.chmod(0o700)

            info = directory.stat()
        except OSError as exc:
            raise AdminEndpointError(
                f"the admin socket's directory {directory} cannot be used: "
                f"{exc.strerror or exc}"
            ) from exc

        if info.st_uid != self._uid or info.st_mode & 0o077:
            raise AdminEndpointError(
                f"the admin socket's directory {directory} (mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}) must be "
                "owned by this user and closed to others (mode 0700): set "
                "MIXER_ADMIN_SOCKET to a path in such a directory"
            )

        await self._remove_stale_socket()

    async def _remove_stale_socket(self) -> None:
        path = self._path
        try:
            info = path.lstat()
        except FileNotFoundError:
            return

        if not stat.S_ISSOCK(info.st_mode):
            raise AdminEndpointError(
                f"{path} exists and is not a socket; remove it or set "
                "MIXER_ADMIN_SOCKET to another path"
            )

        try:
            with anyio.fail_after(STALE_CHECK_SECONDS):
                probe = await LineSocket.connect_unix(str(path))
        except (OSError, TimeoutError):
            log.info("admin.stale_socket_removed", extra={"socket": str(path)})
            path.unlink(missing_ok=True)
            return

        probe.close()
        raise AdminEndpointError(
            f"another relay answers on {path}; stop it, or set MIXER_ADMIN_SOCKET "
            "to another path"
        )

    async def _serve_console(self, stream: LineSocket) -> None:
        # Contained: inside the console the relay shares the app's loop, and an
        # exception leaving this task would end the whole process.
        self.connections += 1
        try:
            await self._converse(stream)
        except (EOFError, OSError, TimeoutError):
            pass  # the console went away, or stopped reading
        except Exception:
            log.exception("admin.connection_failed")
        finally:
            self.connections -= 1
            stream.close()

    async def _converse(self, stream: LineSocket) -> None:
        peer_uid = _peer_uid(stream.sock)
        if peer_uid != self._uid:
            log.warning("admin.refused", extra={"peer_uid": peer_uid})
            await self._send(
                stream,
                _error(
                    None,
                    "forbidden",
                    f"only the relay's user (uid {self._uid}) may attach; you are "
                    f"uid {peer_uid}",
                ),
            )
            return

        await self._send(stream, hello(relay_pid=os.getpid()))
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                check_hello(decode_line(await stream.receive_line(MAX_LINE_BYTES)))
        except AdminProtocolError as exc:
            await self._send(stream, _error(None, "unsupported_version", str(exc)))
            return
        except LineTooLong:
            await self._send(stream, _error(None, "too_large", _too_large()))
            return

        log.info("admin.attached", extra={"consoles": self.connections})
        # One request at a time per connection (AdminClient sends its long history
        # actions on a second one). Bounded by the connection's life: it ends when
        # the console goes.
        while True:
            try:
                line = await stream.receive_line(MAX_LINE_BYTES)
            except LineTooLong:
                await self._send(stream, _error(None, "too_large", _too_large()))
                return

            await self._send(stream, await self._answer(line))

    async def _answer(self, line: bytes) -> dict[str, Any]:
        request_id: object = None
        try:
            request = decode_line(line)
            given_id = request.get("id")
            if not isinstance(given_id, int | str) or isinstance(given_id, bool):
                # Not echoed: NaN or 1e999 cannot even be written back as JSON.
                raise AdminProtocolError(
                    "a request needs an id (a whole number or a string)"
                )

            request_id = given_id

            method = request.get("method")
            if not isinstance(method, str):
                raise AdminProtocolError("a request needs a method name")

            params = parse_params(method, request.get("params"))
            result = await getattr(self._control, method)(**params)
            return {"id": request_id, "result": encode_result(result)}
        except AdminProtocolError as exc:
            return _error(request_id, "bad_request", str(exc))
        except OperationRefused as exc:
            return _error(request_id, "refused", str(exc))
        except Exception:
            log.exception("admin.request_failed")
            return _error(
                request_id, "internal", "the relay failed on this request (see its log)"
            )

    async def _send(self, stream: LineSocket, message: dict[str, Any]) -> None:
        with anyio.fail_after(ADMIN_SEND_TIMEOUT):
            await stream.send(encode_line(message))


def _peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


def _error(request_id: object, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code, "message": message}}


def _too_large() -> str:
    return f"a message line may hold at most {MAX_LINE_BYTES} bytes; closing"
