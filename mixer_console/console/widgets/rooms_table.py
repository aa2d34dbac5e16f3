"""The rooms of the relay, one row each."""

from mixer_console.console.format import format_bytes, format_rate, sparkline
from mixer_console.console.widgets.cached_table import Cell
from mixer_console.console.widgets.live_table import LiveTable
from relay.control import RoomView

ROOM_COLUMNS = (
    ("name", "Room"),
    ("members", "Artists"),
    ("commands", "Cmds"),
    ("size", "Size"),
    ("joinable", "Join"),
    ("keep_open", "Keep"),
    ("blender", "Blender"),
    ("mixer", "Mixer"),
    ("rate", "Cmd/s"),
    ("history", "Last minute"),
)


def room_cells(room: RoomView) -> tuple[Cell, ...]:
    """One room's row, in the order of :data:`ROOM_COLUMNS`."""
    return (
        room.name,
        str(room.members),
        str(room.command_count),
        format_bytes(room.byte_size),
        "yes" if room.joinable else "no",
        "yes" if room.keep_open else "no",
        room.blender_version,
        room.mixer_version,
        format_rate(room.commands_per_second),
        sparkline(room.rate_history),
    )


class RoomsTable(LiveTable):
    """Rooms by name; the selected one is what room actions apply to."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(ROOM_COLUMNS, ("name",), id=id)

    def show(self, rooms: tuple[RoomView, ...]) -> None:
        self.sync({room.name: room_cells(room) for room in rooms})
