"""What artists and operators type must not break the console: names that look
like markup, requests the relay refuses, things that vanished meanwhile."""

from pathlib import Path

from textual.widgets import Input, Label

from mixer_console.console.screens.dialogs import AskDialog, ConfirmDialog
from mixer_console.console.screens.history import HistoryScreen
from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.event_log import EventLog
from mixer_console.console.widgets.rooms_table import RoomsTable
from relay.messages import MessageType
from relay.protocol import HEADER
from tests.console.conftest import Console
from tests.console.test_operations import commands, open_history_at, select

# Rich markup that fails to parse (a closing tag with nothing open) or that
# would restyle the screen if it were parsed.
MARKUP_NAMES = ("[/]", "[bold red]boom[/bold red]", "[link=x]", "\\[b]", "[")


def notifications(console: Console) -> list[str]:
    """The text of the notifications on screen."""
    return [str(toast.render()) for toast in console.app.screen.query("Toast")]


async def test_markup_in_names_is_shown_as_typed(console: Console) -> None:
    """User and room names full of markup show literally in the tables, the
    dialogs and the history, and the app keeps running."""
    clients = []
    for name in MARKUP_NAMES:
        client = await console.connect(name)
        await client.create_room(name, commands=commands(1))
        clients.append(client)

    rooms = console.app.dashboard.query_one(RoomsTable)
    artists = console.app.dashboard.query_one(ArtistsTable)
    await console.until(lambda: rooms.row_count == len(MARKUP_NAMES), "rooms shown")
    await console.until(lambda: artists.row_count == len(MARKUP_NAMES), "artists")
    await console.pilot.pause()

    for client, name in zip(clients, MARKUP_NAMES, strict=True):
        assert str(rooms.get_cell(name, "name")) == name
        assert str(artists.get_cell(client.client_id, "user")) == name

    await select(console, rooms, "[/]")
    await console.pilot.press("d")
    assert isinstance(console.app.screen, ConfirmDialog)
    await console.pilot.press("n")
    await select(console, artists, clients[0].client_id)
    await console.pilot.press("k", "escape")
    screen = await open_history_at(console, "[bold red]boom[/bold red]", 1)
    await console.pilot.pause()

    assert console.app.is_running
    assert isinstance(screen, HistoryScreen)


async def test_fork_into_an_existing_name_is_refused_plainly(console: Console) -> None:
    """The relay refuses; the operator reads why, and nothing changes."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(2))
    bob = await console.connect("bob")
    await bob.create_room("[taken]")
    await open_history_at(console, "castle", 1)

    await console.pilot.press("f")
    dialog = console.app.screen
    assert isinstance(dialog, AskDialog)
    dialog.query_one(Input).value = "[taken]"
    await console.pilot.press("enter")
    await console.until(lambda: bool(notifications(console)), "a notification")

    assert any("exists already" in text for text in notifications(console))
    assert len(console.server.broadcaster.rooms["[taken]"].history) == 0
    assert console.app.is_running


async def test_export_to_a_missing_folder_is_refused(
    console: Console, tmp_path: Path
) -> None:
    """A path whose folder does not exist gives a plain refusal, no file."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(1))
    await open_history_at(console, "castle", 1)
    target = tmp_path / "no-such-folder" / "castle.mixer"

    await console.pilot.press("e")
    dialog = console.app.screen
    assert isinstance(dialog, AskDialog)
    dialog.query_one(Input).value = str(target)
    await console.pilot.press("enter")
    await console.until(lambda: bool(notifications(console)), "a notification")

    assert not target.exists()
    assert console.app.is_running


async def test_an_empty_answer_keeps_the_question_open(console: Console) -> None:
    """Enter on an empty name asks again instead of forking into '', and the
    dialog says why nothing happened."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(2))
    await open_history_at(console, "castle", 1)

    await console.pilot.press("f")
    dialog = console.app.screen
    assert isinstance(dialog, AskDialog)
    dialog.query_one(Input).value = "   "
    await console.pilot.press("enter")
    await console.pilot.pause()

    assert console.app.screen is dialog
    assert "type an answer first" in str(dialog.query_one(".hint", Label).render())
    assert set(console.server.broadcaster.rooms) == {"castle"}


async def test_kick_of_an_artist_who_left_is_refused(console: Console) -> None:
    """The artist leaves while the dialog is open: the kick is refused plainly."""
    bob = await console.connect("bob")
    await select(console, console.app.dashboard.query_one(ArtistsTable), bob.client_id)
    await console.pilot.press("k")
    await bob.aclose()
    await console.until(
        lambda: bob.client_id not in console.server.broadcaster.clients, "bob gone"
    )

    await console.pilot.press("tab", "enter")
    await console.until(lambda: bool(notifications(console)), "a notification")

    assert any("no connected client" in text for text in notifications(console))


async def test_actions_on_empty_tables_say_so(console: Console) -> None:
    """With no room and no artist, room actions and kick warn instead of failing."""
    await console.pilot.press("d", "o", "h", "k")
    await console.pilot.pause()

    assert isinstance(console.app.screen, type(console.app.dashboard))
    assert any("No room selected" in text for text in notifications(console))
    assert any("No artist selected" in text for text in notifications(console))


async def test_history_of_a_room_deleted_meanwhile(console: Console) -> None:
    """The room goes while its history is open: paging says so, no crash."""
    ada = await console.connect("ada")
    await ada.create_room("brief", commands=commands(2))
    screen = await open_history_at(console, "brief", 1)
    await ada.aclose()
    await console.until(
        lambda: "brief" not in console.server.broadcaster.rooms, "room gone"
    )

    await console.pilot.press("R")
    await console.until(
        lambda: "cannot read" in str(screen.query_one("#history-title").render()),
        "the title says why",
    )

    assert console.app.is_running


async def test_a_failing_connection_does_not_end_the_console(console: Console) -> None:
    """A bug hit by one connection (a handler that raises) and a client sending an
    absurd frame length close those connections only: the app, with the relay
    on its loop, goes on, shows the error, and serves the others."""

    def broken(client: object, payload: memoryview) -> None:
        raise RuntimeError("a bug in a handler")

    bystander = await console.connect("bob")
    victim = await console.connect("ada")
    console.server.broadcaster._handlers[MessageType.SET_CLIENT_NAME] = broken
    await victim.send(MessageType.SET_CLIENT_NAME, b"x")
    await victim.expect_closed()
    liar = await console.connect()
    await liar.send_raw(HEADER.pack(2**63, 0, MessageType.JOIN_ROOM))
    await liar.expect_closed()
    events = console.app.dashboard.query_one(EventLog)

    await console.until(
        lambda: any(
            str(events.get_row_at(row)[1]) == "error" for row in range(events.row_count)
        ),
        "the error in the event log",
    )

    assert console.app.is_running
    assert "bob" in str(await bystander.list_clients())
    newcomer = await console.connect("chloe")
    await newcomer.create_room("still-serving")
    rooms = console.app.dashboard.query_one(RoomsTable)
    await console.until(lambda: "still-serving" in rooms.rows, "a new room shown")
