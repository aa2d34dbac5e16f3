"""RelayControl served in-process, straight from a running relay's state."""

import time
from pathlib import Path

from relay.broadcaster import Broadcaster
from relay.client import Client
from relay.cluster import cluster_state
from relay.control import (
    ArtistView,
    AuditEntry,
    Ban,
    CommandDetail,
    HistoryPage,
    Lease,
    OperationRefused,
    RelayEvent,
    RelaySnapshot,
    RoomView,
    Totals,
)
from relay.leases import LeaseBook
from relay.operations import Operations
from relay.room import Room
from relay.traffic import TrafficMeter

# The most events one call returns, whatever the caller asks.
MAX_EVENTS_PER_CALL = 5000

# The characters of a text an artist's add-on chose (a user name, a version)
# that a view shows: such texts are unbounded on the wire, and whole they could
# make a snapshot too large for an attached console to read.
SHOWN_TEXT_CHARS = 256


class LocalControl:
    """The operator's view of, and hands on, a relay running in this process.

    Args:
        broadcaster: the relay's state.
        traffic: the meter sampling its rates (running in the relay's tasks).
        leases: the leases in force, when the relay requires a login (None:
            it requires none).
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        traffic: TrafficMeter,
        leases: LeaseBook | None = None,
    ) -> None:
        self._broadcaster = broadcaster
        self._traffic = traffic
        self._leases = leases
        self._operations = Operations(broadcaster)

    async def snapshot(self) -> RelaySnapshot:
        """Everything the dashboard shows, as of now."""
        broadcaster = self._broadcaster
        rooms = tuple(self._room_view(room) for room in broadcaster.rooms.values())
        artists = tuple(
            self._artist_view(client) for client in broadcaster.clients.values()
        )
        totals = Totals(
            connections=len(artists),
            rooms=len(rooms),
            commands_per_second=sum(room.commands_per_second for room in rooms),
            bytes_per_second=sum(
                artist.bytes_in_per_second + artist.bytes_out_per_second
                for artist in artists
            ),
            cpu_percent=self._traffic.cpu_percent,
            rss_bytes=self._traffic.rss_bytes,
            store_state=self._store_state(),
            cluster_state=cluster_state(self._broadcaster.cluster),
        )
        return RelaySnapshot(time.time(), rooms, artists, totals)

    async def events(self, after: int, limit: int = 500) -> list[RelayEvent]:
        """Events whose seq is greater than ``after``, oldest first."""
        return self._broadcaster.events.after(after, min(limit, MAX_EVENTS_PER_CALL))

    async def kick(
        self, client_id: str, *, operator: str, ban_seconds: float | None = None
    ) -> None:
        """Disconnect a client; with ``ban_seconds``, ban its login or address."""
        self._operations.kick(client_id, operator, ban_seconds)

    async def bans(self) -> list[Ban]:
        """The bans in force."""
        return self._broadcaster.bans.active()

    async def lift_ban(self, subject: str, *, operator: str) -> None:
        """Lift a ban before it expires."""
        self._operations.lift_ban(subject, operator)

    async def leases(self) -> list[Lease]:
        """The leases in force, oldest first; none without login."""
        if self._leases is None:
            return []

        return [
            Lease(
                address=held.address,
                login=held.login,
                granted_at=held.granted_at,
                expires_at=held.expires_at,
                via=held.via,
            )
            for held in self._leases.leases()
        ]

    async def revoke_lease(self, address: str, *, operator: str) -> None:
        """End an address's lease and close that address's connections."""
        if self._leases is None:
            raise OperationRefused("this relay requires no login, so it has no leases")

        # Refused before anything happens: LeaseBook.revoke would close the
        # address's connections and write the audit log even without a lease.
        if self._leases.find(address) is None:
            raise OperationRefused(
                f"no lease is in force for address {_shortened(address)!r}"
            )

        self._leases.revoke(address, operator=operator)

    async def delete_room(self, room: str, *, operator: str) -> None:
        """Delete a room; its members are disconnected first."""
        self._operations.delete_room(room, operator)

    async def set_keep_open(self, room: str, keep_open: bool, *, operator: str) -> None:
        """Set a room's keep_open (clients see ROOM_UPDATE)."""
        self._operations.set_keep_open(room, keep_open, operator)

    async def history_page(self, room: str, start: int, count: int) -> HistoryPage:
        """Commands ``start`` to ``start + count - 1`` (indices from 1)."""
        return await self._operations.history_page(room, start, count)

    async def command(self, room: str, index: int) -> CommandDetail:
        """Inspect one command of a room's history (index from 1)."""
        return await self._operations.command(room, index)

    async def fork_room(
        self, room: str, index: int, new_room: str, *, operator: str
    ) -> None:
        """Create ``new_room`` holding the first ``index`` commands of ``room``."""
        await self._operations.fork_room(room, index, new_room, operator)

    async def rewind_room(self, room: str, index: int, *, operator: str) -> None:
        """Cut ``room`` back to its first ``index`` commands, resyncing members."""
        await self._operations.rewind_room(room, index, operator)

    async def export_room(self, room: str, path: Path, *, operator: str) -> int:
        """Write the room file; returns its size in bytes."""
        return await self._operations.export_room(room, path, operator)

    async def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        """The newest entries, newest first."""
        return self._broadcaster.audit.newest(limit)

    def _room_view(self, room: Room) -> RoomView:
        # Known limit: a room's name is shown whole, since operators act on rooms
        # by name, so a room named with tens of megabytes makes snapshots too large
        # for attached consoles to read until it is deleted.
        return RoomView(
            name=room.name,
            members=len(room.members),
            command_count=len(room.history),
            byte_size=room.history.byte_size,
            joinable=room.is_joinable,
            keep_open=room.keep_open,
            blender_version=_shortened(room.blender_version),
            mixer_version=_shortened(room.mixer_version),
            commands_per_second=self._traffic.room_rate(room),
            rate_history=self._traffic.room_history(room),
        )

    def _artist_view(self, client: Client) -> ArtistView:
        rates = self._traffic.client_rates(client)
        user_name = client.custom.get("user_name")
        return ArtistView(
            client_id=client.id,
            user_name=_shortened(user_name) if isinstance(user_name, str) else None,
            address=client.ip,
            room=client.room.name if client.room is not None else None,
            connected_at=client.connected_at,
            commands_in_per_second=rates.frames_in,
            commands_out_per_second=rates.frames_out,
            bytes_in_per_second=rates.bytes_in,
            bytes_out_per_second=rates.bytes_out,
            backlog_bytes=client.outbox.queued_bytes,
            login=client.login,
        )

    def _store_state(self) -> str | None:
        store = self._broadcaster.store
        if store is None:
            return None

        if store.last_error:
            return f"degraded: {store.last_error}"

        if self._broadcaster.is_store_behind:
            return "behind"

        return "ok"


def _shortened(text: str) -> str:
    """``text`` cut to SHOWN_TEXT_CHARS characters, marked when cut."""
    if len(text) <= SHOWN_TEXT_CHARS:
        return text

    return text[: SHOWN_TEXT_CHARS - 1] + "\u2026"
