"""The dashboard against a real relay hosted in the app, with real TCP clients."""

from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.rooms_table import RoomsTable
from relay.messages import MessageType
from tests.console.conftest import Console
from tests.mixer_client import room_command

COMMAND = room_command(MessageType.BLENDER_DATA_UPDATE, b"x" * 986)


def cell(table: RoomsTable | ArtistsTable, row: str, column: str) -> str:
    return str(table.get_cell(row, column))


async def test_dashboard_shows_rooms_and_artists(console: Console) -> None:
    """Rooms and artists the clients create appear with their figures."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=[COMMAND, COMMAND])
    bob = await console.connect("bob")
    await bob.join_room("castle")
    rooms = console.app.dashboard.query_one(RoomsTable)
    artists = console.app.dashboard.query_one(ArtistsTable)

    await console.until(
        lambda: rooms.row_count == 1 and artists.row_count == 2, "rows shown"
    )
    await console.until(lambda: cell(rooms, "castle", "members") == "2", "members")

    assert cell(rooms, "castle", "commands") == "2"
    assert cell(rooms, "castle", "joinable") == "yes"
    assert cell(rooms, "castle", "blender") == "3.4.1"
    assert cell(artists, ada.client_id, "user") == "ada"
    assert cell(artists, bob.client_id, "room") == "castle"
    assert cell(artists, bob.client_id, "address") == "127.0.0.1"
