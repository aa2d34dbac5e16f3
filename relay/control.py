"""What an operator can see of a running relay and do to it.

The console talks to a relay only through :class:`RelayControl`: in-process it is
served by the relay's own state, attached it travels over the admin socket. Both
sides exchange the frozen views below, which hold plain values only, so that they
can be encoded as JSON unchanged (see the admin protocol).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Seconds of command rate kept per room for the console's sparkline.
RATE_HISTORY_SECONDS = 60


class OperationRefused(Exception):
    """The relay refused an operator's request; the message says why, plainly."""


@dataclass(frozen=True)
class RoomView:
    """One room as the operator sees it."""

    name: str
    members: int
    command_count: int
    byte_size: int
    joinable: bool
    keep_open: bool
    blender_version: str
    mixer_version: str
    commands_per_second: float
    rate_history: tuple[float, ...]
    """Commands per second over the last minute, oldest first, one per second."""


@dataclass(frozen=True)
class ArtistView:
    """One connected client."""

    client_id: str
    user_name: str | None
    address: str
    room: str | None
    connected_at: float
    commands_in_per_second: float
    commands_out_per_second: float
    bytes_in_per_second: float
    bytes_out_per_second: float
    backlog_bytes: int
    login: str | None
    """The GitHub login the connection was granted under, once login exists."""


@dataclass(frozen=True)
class Totals:
    """The whole relay."""

    connections: int
    rooms: int
    commands_per_second: float
    bytes_per_second: float
    cpu_percent: float
    rss_bytes: int
    store_state: str | None
    """"ok", "behind" or "degraded: <why>"; None without a store."""
    cluster_state: str | None
    """Role, leader and lag in one line; None on a single node."""


@dataclass(frozen=True)
class RelaySnapshot:
    """Everything the dashboard shows, taken at one instant."""

    taken_at: float
    rooms: tuple[RoomView, ...]
    artists: tuple[ArtistView, ...]
    totals: Totals


@dataclass(frozen=True)
class RelayEvent:
    """One line of the console's event log."""

    seq: int
    """Consecutive within one run of the relay, and greater than every number of
    its previous runs (a run starts from its start time in microseconds), so
    ``events(after=last seen)`` is right across a relay restart too."""
    at: float
    kind: str
    """"connect", "disconnect", "join", "leave", "drop", "error", "room" or
    "operator"."""
    text: str
    room: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class CommandSummary:
    """One command of a room's history, as the paged list shows it."""

    index: int
    """Its position in the room's history, from 1."""
    seq: int
    type: int
    type_name: str
    size: int
    sender: str | None
    at: float | None


@dataclass(frozen=True)
class CommandDetail:
    """One command, inspected."""

    summary: CommandSummary
    leading_path: str | None
    """The path string the payload starts with, for types that have one."""
    head: bytes
    """The first bytes of the frame, header included, for a hex view."""
    command_id: int = 0
    """The header's command id, as the sender set it (added with the operator
    actions; the header's other fields are ``summary.size`` and ``summary.type``)."""


@dataclass(frozen=True)
class HistoryPage:
    """A slice of a room's history."""

    room: str
    total: int
    commands: tuple[CommandSummary, ...]


@dataclass(frozen=True)
class AuditEntry:
    """One operator action, as the audit log keeps it."""

    at: float
    operator: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True)
class Ban:
    """A refusal of new connections from a login or an address, until a time."""

    subject: str
    """"login:<github login>" or "address:<ip>"."""
    until: float
    reason: str
    operator: str


@dataclass(frozen=True)
class Lease:
    """Permission for one address to connect, granted by a GitHub login."""

    address: str
    login: str
    granted_at: float
    expires_at: float
    via: str
    """How it was granted: "browser", "device" or an operator's action."""


class RelayControl(Protocol):
    """A relay as an operator drives it; every destructive call names who asks.

    Every method raises :class:`OperationRefused` when the relay says no (no such
    room, a name already taken, ...) and ``ConnectionError`` when an attached
    relay cannot be reached.
    """

    async def snapshot(self) -> RelaySnapshot: ...

    async def events(self, after: int, limit: int = 500) -> list[RelayEvent]:
        """Events whose seq is greater than ``after``, oldest first."""
        ...

    async def kick(
        self, client_id: str, *, operator: str, ban_seconds: float | None = None
    ) -> None: ...

    async def bans(self) -> list[Ban]: ...

    async def lift_ban(self, subject: str, *, operator: str) -> None: ...

    async def leases(self) -> list[Lease]:
        """The leases in force, oldest first; none when the relay requires no
        login."""
        ...

    async def revoke_lease(self, address: str, *, operator: str) -> None:
        """End an address's lease and close that address's connections; refused
        when the relay requires no login or the address holds no lease."""
        ...

    async def delete_room(self, room: str, *, operator: str) -> None:
        """Delete a room; its members are disconnected first."""
        ...

    async def set_keep_open(
        self, room: str, keep_open: bool, *, operator: str
    ) -> None: ...

    async def history_page(self, room: str, start: int, count: int) -> HistoryPage:
        """Commands ``start`` to ``start + count - 1`` (indices from 1)."""
        ...

    async def command(self, room: str, index: int) -> CommandDetail: ...

    async def fork_room(
        self, room: str, index: int, new_room: str, *, operator: str
    ) -> None:
        """Create ``new_room`` holding the first ``index`` commands of ``room``."""
        ...

    async def rewind_room(self, room: str, index: int, *, operator: str) -> None:
        """Cut ``room`` back to its first ``index`` commands; its members receive
        CLEAR_CONTENT, that history, then JOIN_ROOM."""
        ...

    async def export_room(self, room: str, path: Path, *, operator: str) -> int:
        """Write the room file (PROTOCOL.md section 8); returns its size in bytes."""
        ...

    async def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        """The newest entries, newest first."""
        ...
