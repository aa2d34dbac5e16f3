"""RelayControl served in-process, straight from a running relay's state."""

import time

from relay.broadcaster import Broadcaster
from relay.client import Client
from relay.control import (
    ArtistView,
    RelayEvent,
    RelaySnapshot,
    RoomView,
    Totals,
)
from relay.room import Room
from relay.traffic import TrafficMeter

# The most events one call returns, whatever the caller asks.
MAX_EVENTS_PER_CALL = 5000


class LocalControl:
    """The operator's view of, and hands on, a relay running in this process.

    Args:
        broadcaster: the relay's state.
        traffic: the meter sampling its rates (running in the relay's tasks).
    """

    def __init__(self, broadcaster: Broadcaster, traffic: TrafficMeter) -> None:
        self._broadcaster = broadcaster
        self._traffic = traffic

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
            cluster_state=None,
        )
        return RelaySnapshot(time.time(), rooms, artists, totals)

    async def events(self, after: int, limit: int = 500) -> list[RelayEvent]:
        """Events whose seq is greater than ``after``, oldest first."""
        return self._broadcaster.events.after(after, min(limit, MAX_EVENTS_PER_CALL))

    def _room_view(self, room: Room) -> RoomView:
        return RoomView(
            name=room.name,
            members=len(room.members),
            command_count=len(room.history),
            byte_size=room.history.byte_size,
            joinable=room.is_joinable,
            keep_open=room.keep_open,
            blender_version=room.blender_version,
            mixer_version=room.mixer_version,
            commands_per_second=self._traffic.room_rate(room),
            rate_history=self._traffic.room_history(room),
        )

    def _artist_view(self, client: Client) -> ArtistView:
        rates = self._traffic.client_rates(client)
        user_name = client.custom.get("user_name")
        return ArtistView(
            client_id=client.id,
            user_name=user_name if isinstance(user_name, str) else None,
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
