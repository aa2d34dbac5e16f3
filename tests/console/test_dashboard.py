"""The dashboard against a real relay hosted in the app, with real TCP clients."""

import io
from pathlib import Path

import rich.console
from textual.widgets import Input, Label

from mixer_console.console.screens.dialogs import AskDialog, KickDialog
from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.event_log import EventLog
from mixer_console.console.widgets.rooms_table import RoomsTable
from mixer_console.console.widgets.totals_bar import TotalsBar
from relay.messages import MessageType
from tests.console.conftest import Console
from tests.console.consoles import hosted_console
from tests.mixer_client import MixerClient, room_command

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


async def test_event_filter_narrows_the_log(console: Console) -> None:
    """ "/" then words: only the matching events stay; clearing shows them all."""
    ada = await console.connect("ada")
    await ada.create_room("castle")
    await console.connect("bob")
    events = console.app.dashboard.query_one(EventLog)
    await console.until(lambda: events.row_count >= 3, "events shown")
    everything = events.row_count

    await console.pilot.press("slash", *"kind:room", "enter")
    await console.pilot.pause()

    kinds = {str(events.get_row_at(row)[1]) for row in range(events.row_count)}
    assert kinds == {"room"}
    assert events.row_count < everything

    await console.pilot.press("slash", "ctrl+u", "enter")
    await console.pilot.pause()

    assert events.row_count == everything


async def test_pause_freezes_the_view(console: Console) -> None:
    """p freezes the tables (and says so); p again brings them up to date."""
    rooms = console.app.dashboard.query_one(RoomsTable)
    await console.pilot.press("p")
    await console.pilot.pause(0.3)
    ada = await console.connect("ada")
    await ada.create_room("castle")
    await console.pilot.pause(0.6)

    assert "PAUSED" in str(console.app.dashboard.query_one(TotalsBar).render())
    assert rooms.row_count == 0

    await console.pilot.press("p")
    await console.until(lambda: "castle" in rooms.rows, "room shown after resume")


async def test_keys_and_palette_reach_the_actions(console: Console) -> None:
    """ "?" lists the keys; the command palette finds "Kick artist"."""
    bob = await console.connect("bob")
    artists = console.app.dashboard.query_one(ArtistsTable)
    await console.until(lambda: bob.client_id in artists.rows, "bob shown")

    await console.pilot.press("question_mark")
    await console.pilot.pause()
    assert console.app.screen.query("HelpPanel")
    await console.pilot.press("question_mark")
    await console.pilot.pause()
    assert not console.app.screen.query("HelpPanel")

    await console.pilot.press("ctrl+p")
    await console.pilot.pause()
    await console.pilot.press(*"Kick artist")
    await console.pilot.pause(0.3)
    await console.pilot.press("enter")
    await console.until(
        lambda: isinstance(console.app.screen, KickDialog), "the kick dialog"
    )


async def test_quitting_keeps_live_rooms_for_the_next_start(tmp_path: Path) -> None:
    """q stops the hosted relay as a signal stops the headless one: the room its
    artist was in comes back with its history at the next start."""
    data_dir = tmp_path / "data"
    with hosted_console(data_dir) as (app, server):
        async with app.run_test() as pilot:
            assert server.port is not None
            ada = await MixerClient.connect(server.port)
            await ada.handshake("ada")
            await ada.create_room("castle", commands=[COMMAND, COMMAND])
            await pilot.press("q")
            await ada.expect_closed()
            await ada.aclose()

        assert not app.is_running

    with hosted_console(data_dir) as (app, server):
        assert server.broadcaster.rooms["castle"].history.byte_size == 2 * len(COMMAND)


async def test_key_list_on_an_ssh_terminal_shows_the_consoles_keys(
    tmp_path: Path,
) -> None:
    """At 80x24, the size of a bare SSH session, "?" lists the console's own
    keys within the screen's height: the arrow, page and home keys every table
    takes pushed them below it (the kick, delete and quit keys from row 19)."""
    with hosted_console(tmp_path / "relay-data") as (app, _server):
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            panel = app.screen.query_one("KeyPanel")
            table = panel.query_one("BindingsTable").render()
            text = rich.console.Console(
                width=panel.size.width, record=True, file=io.StringIO()
            )
            text.print(table)
            lines = text.export_text().splitlines()
            height = panel.size.height
            await app.action_quit()

    shown = "\n".join(lines[:height])
    for description in ("History", "Kick", "Delete room", "Bans", "Quit"):
        assert description in shown, shown
    assert "Cursor up" not in "\n".join(lines)


async def test_names_holding_terminal_controls_are_shown_escaped(
    console: Console,
) -> None:
    """A room or user name holding escape sequences is shown with them written
    out, in the tables, the event log and the kick dialog: written as they are,
    they cleared and recoloured the operator's terminal (found by readme7), and
    a dialog's offered answer set the terminal's title (break7)."""
    room = "esc\x1b[2J\x1b[31mX"
    user = "evil\x1b[2J\x1b[H\x1b[7mPWNED\x07\u202e"
    ada = await console.connect(user)
    await ada.create_room(room)
    rooms = console.app.dashboard.query_one(RoomsTable)
    artists = console.app.dashboard.query_one(ArtistsTable)
    events = console.app.dashboard.query_one(EventLog)
    await console.until(
        lambda: rooms.row_count == 1 and artists.row_count == 1, "rows shown"
    )
    await console.pilot.press("2", "k")
    await console.until(
        lambda: isinstance(console.app.screen, KickDialog), "the kick dialog"
    )
    texts = [
        cell(rooms, room, "name"),
        cell(artists, ada.client_id, "user"),
        *(
            str(text)
            for row in range(events.row_count)
            for text in events.get_row_at(row)
        ),
        str(console.app.screen.query_one(".question", Label).render()),
    ]
    # The fork and export dialogs offer a name or path made of the room's.
    await console.pilot.press("escape")
    console.app.push_screen(AskDialog(f"Fork {room}?", f"{room}-at-1"))
    await console.until(
        lambda: (
            isinstance(console.app.screen, AskDialog)
            and bool(console.app.screen.query(Input))
        ),
        "the fork dialog",
    )
    texts.append(str(console.app.screen.query_one(".question", Label).render()))
    texts.append(console.app.screen.query_one(Input).value)

    assert cell(rooms, room, "name") == "esc\\x1b[2J\\x1b[31mX"
    assert cell(artists, ada.client_id, "user") == (
        "evil\\x1b[2J\\x1b[H\\x1b[7mPWNED\\x07\\u202e"
    )
    assert not [text for text in texts if not text.isprintable()]
