"""RelayControl over the admin socket: the console attached to a relay running
elsewhere in the machine (see :mod:`relay.admin_protocol`).

The client connects on its first call. A call that finds its connection closed
by the relay connects again first, so a console that keeps calling ``snapshot``
follows a relay restart by itself; while no relay answers, every call raises
``ConnectionError``. A request is never sent twice: one whose answer was lost
(the relay stopped while working on it) raises ``ConnectionError`` too.

The relay answers one request at a time per connection, so the history actions
that can take long (a fork, a rewind, an export of a large room) go through a
second connection: the console's views keep polling while one runs.
"""

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from relay.admin_protocol import (
    MAX_ANSWER_BYTES,
    AdminProtocolError,
    check_hello,
    decode_line,
    decode_result,
    encode_line,
    encode_params,
    hello,
)
from relay.control import (
    AuditEntry,
    Ban,
    CommandDetail,
    HistoryPage,
    Lease,
    OperationRefused,
    RelayEvent,
    RelaySnapshot,
)
from relay.line_socket import LineSocket, LineTooLong

CONNECT_SECONDS = 5.0

# Seconds a request may take: a fork or an export of a large room writes a lot.
REQUEST_SECONDS = 120.0

# The requests that read or write a room's whole history.
LONG_METHODS = frozenset({"fork_room", "rewind_room", "export_room"})


@dataclass
class _Lane:
    """One connection to the relay, used by one request at a time."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    stream: LineSocket | None = None


class AdminClient:
    """A relay's RelayControl, reached through its admin socket.

    Args:
        path: the relay's admin socket.
        request_seconds: how long one request may take before the relay is
            deemed gone.
    """

    def __init__(self, path: Path, request_seconds: float = REQUEST_SECONDS) -> None:
        self.path = path
        self._request_seconds = request_seconds
        self._views = _Lane()
        self._actions = _Lane()
        self._ids = itertools.count(1)
        self.relay_pid: int | None = None
        """The process id of the relay attached to, once connected."""

    @property
    def is_connected(self) -> bool:
        """Tell whether a connection to the relay is open (a call found it)."""
        return self._views.stream is not None or self._actions.stream is not None

    async def aclose(self) -> None:
        """Close the connections (the next call opens a new one)."""
        self._forget_connection(self._views)
        self._forget_connection(self._actions)
        await anyio.lowlevel.checkpoint()

    async def snapshot(self) -> RelaySnapshot:
        """Everything the dashboard shows, as of now."""
        result: RelaySnapshot = await self._call("snapshot")
        return result

    async def events(self, after: int, limit: int = 500) -> list[RelayEvent]:
        """Events whose seq is greater than ``after``, oldest first."""
        result: list[RelayEvent] = await self._call("events", after=after, limit=limit)
        return result

    async def kick(
        self, client_id: str, *, operator: str, ban_seconds: float | None = None
    ) -> None:
        """Disconnect a client; with ``ban_seconds``, ban its login or address."""
        await self._call(
            "kick", client_id=client_id, operator=operator, ban_seconds=ban_seconds
        )

    async def bans(self) -> list[Ban]:
        """The bans in force."""
        result: list[Ban] = await self._call("bans")
        return result

    async def lift_ban(self, subject: str, *, operator: str) -> None:
        """Lift a ban before it expires."""
        await self._call("lift_ban", subject=subject, operator=operator)

    async def leases(self) -> list[Lease]:
        """The leases in force, oldest first; none without login."""
        result: list[Lease] = await self._call("leases")
        return result

    async def revoke_lease(self, address: str, *, operator: str) -> None:
        """End an address's lease and close that address's connections."""
        await self._call("revoke_lease", address=address, operator=operator)

    async def delete_room(self, room: str, *, operator: str) -> None:
        """Delete a room; its members are disconnected first."""
        await self._call("delete_room", room=room, operator=operator)

    async def set_keep_open(self, room: str, keep_open: bool, *, operator: str) -> None:
        """Set a room's keep_open."""
        await self._call(
            "set_keep_open", room=room, keep_open=keep_open, operator=operator
        )

    async def history_page(self, room: str, start: int, count: int) -> HistoryPage:
        """Commands ``start`` to ``start + count - 1`` (indices from 1)."""
        result: HistoryPage = await self._call(
            "history_page", room=room, start=start, count=count
        )
        return result

    async def command(self, room: str, index: int) -> CommandDetail:
        """Inspect one command of a room's history (index from 1)."""
        result: CommandDetail = await self._call("command", room=room, index=index)
        return result

    async def fork_room(
        self, room: str, index: int, new_room: str, *, operator: str
    ) -> None:
        """Create ``new_room`` holding the first ``index`` commands of ``room``."""
        await self._call(
            "fork_room", room=room, index=index, new_room=new_room, operator=operator
        )

    async def rewind_room(self, room: str, index: int, *, operator: str) -> None:
        """Cut ``room`` back to its first ``index`` commands, resyncing members."""
        await self._call("rewind_room", room=room, index=index, operator=operator)

    async def export_room(self, room: str, path: Path, *, operator: str) -> int:
        """Write the room file (a path on the relay's machine); returns its size."""
        result: int = await self._call(
            "export_room", room=room, path=path, operator=operator
        )
        return result

    async def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        """The newest entries, newest first."""
        result: list[AuditEntry] = await self._call("audit_log", limit=limit)
        return result

    async def _call(self, method: str, **params: Any) -> Any:
        """Send one request and return its decoded result.

        Raises:
            OperationRefused: the relay refused the request.
            ConnectionError: the relay cannot be reached, or broke the protocol.
        """
        lane = self._actions if method in LONG_METHODS else self._views
        async with lane.lock:
            request_id = next(self._ids)
            request = {"id": request_id, "method": method}
            request["params"] = encode_params(params)
            try:
                stream = await self._connected(lane)
                with anyio.fail_after(self._request_seconds):
                    await stream.send(encode_line(request))
                    answer = decode_line(await stream.receive_line(MAX_ANSWER_BYTES))
            except (
                OSError,
                EOFError,
                LineTooLong,
                TimeoutError,
                AdminProtocolError,
            ) as exc:
                self._forget_connection(lane)
                raise ConnectionError(
                    f"cannot use the relay at {self.path}: {_describe(exc)}"
                ) from exc
            except BaseException:
                # Cancelled mid-request: the answer would arrive for nobody and
                # be taken for the next request's.
                self._forget_connection(lane)
                raise

            return self._result_of(lane, method, request_id, answer)

    def _result_of(
        self, lane: _Lane, method: str, request_id: object, answer: dict[str, Any]
    ) -> Any:
        if answer.get("id") != request_id:
            self._forget_connection(lane)
            raise ConnectionError(
                f"the relay answered request {answer.get('id')!r} to request "
                f"{request_id!r}"
            )

        error = answer.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), str(error.get("message"))
            if code == "refused":
                raise OperationRefused(message)

            raise OperationRefused(f"{code}: {message}")

        try:
            return decode_result(method, answer.get("result"))
        except AdminProtocolError as exc:
            raise ConnectionError(str(exc)) from exc

    async def _connected(self, lane: _Lane) -> LineSocket:
        if lane.stream is not None and lane.stream.is_closed_by_peer():
            # The relay went away since the last call (and may be back): a new
            # connection, rather than a request sent to nobody.
            self._forget_connection(lane)

        if lane.stream is not None:
            return lane.stream

        with anyio.fail_after(CONNECT_SECONDS):
            stream = await LineSocket.connect_unix(str(self.path))
            try:
                greeting = decode_line(await stream.receive_line(MAX_ANSWER_BYTES))
                error = greeting.get("error")
                if isinstance(error, dict):
                    raise ConnectionRefusedError(str(error.get("message")))

                check_hello(greeting)
                await stream.send(encode_line(hello()))
            except BaseException:
                stream.close()
                raise

        pid = greeting.get("relay_pid")
        self.relay_pid = pid if isinstance(pid, int) else None
        lane.stream = stream
        return stream

    def _forget_connection(self, lane: _Lane) -> None:
        stream, lane.stream = lane.stream, None
        if stream is not None:
            stream.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror

    return str(exc) or type(exc).__name__
