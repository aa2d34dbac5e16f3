"""The connected clients, one row each."""

from mixer_console.console.format import (
    format_age,
    format_byte_rate,
    format_bytes,
    format_rate,
)
from mixer_console.console.widgets.cached_table import Cell
from mixer_console.console.widgets.live_table import LiveTable
from relay.control import ArtistView

ARTIST_COLUMNS = (
    ("user", "Artist"),
    ("client_id", "Client id"),
    ("address", "Address"),
    ("room", "Room"),
    ("since", "Since"),
    ("cmds_in", "Cmd/s in"),
    ("cmds_out", "out"),
    ("bytes_in", "B/s in"),
    ("bytes_out", "out"),
    ("backlog", "Backlog"),
    ("login", "Login"),
)


def artist_cells(artist: ArtistView, now: float) -> tuple[Cell, ...]:
    """One artist's row, in the order of :data:`ARTIST_COLUMNS`; ``now`` is the
    snapshot's time, so that "since" follows the relay's clock."""
    return (
        artist.user_name or "-",
        artist.client_id,
        artist.address,
        artist.room or "-",
        format_age(artist.connected_at, now),
        format_rate(artist.commands_in_per_second),
        format_rate(artist.commands_out_per_second),
        format_byte_rate(artist.bytes_in_per_second),
        format_byte_rate(artist.bytes_out_per_second),
        format_bytes(artist.backlog_bytes),
        artist.login or "-",
    )


class ArtistsTable(LiveTable):
    """Artists by name then client id; the selected one is who a kick applies to."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(ARTIST_COLUMNS, ("user", "client_id"), id=id)

    def show(self, artists: tuple[ArtistView, ...], now: float) -> None:
        self.sync({artist.client_id: artist_cells(artist, now) for artist in artists})
