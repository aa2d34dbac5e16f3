"""Operator actions through the real app's keys, against a real hosted relay and
real TCP clients: what the artists' connections see afterwards."""

import time
from pathlib import Path

import anyio
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Input

from mixer_console.console.screens.bans import BansScreen
from mixer_console.console.screens.command import CommandScreen
from mixer_console.console.screens.dialogs import AskDialog, ConfirmDialog, KickDialog
from mixer_console.console.screens.history import HistoryScreen
from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.live_table import LiveTable
from mixer_console.console.widgets.rooms_table import RoomsTable
from relay.messages import MessageType
from tests.console.conftest import Console
from tests.mixer_client import MixerClient, room_command


def commands(count: int) -> list[bytes]:
    return [
        room_command(MessageType.BLENDER_DATA_UPDATE, f"command {n}".encode())
        for n in range(1, count + 1)
    ]


async def select(console: Console, table: LiveTable, key: str) -> None:
    """Focus ``table`` and put its cursor on the row of ``key`` once shown."""
    await console.until(lambda: key in table.rows, f"row {key} shown")
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    await console.pilot.pause()


async def open_history_at(console: Console, room: str, index: int) -> HistoryScreen:
    """Open ``room``'s history from the dashboard, cursor on command ``index``."""
    await select(console, console.app.dashboard.query_one(RoomsTable), room)
    await console.pilot.press("h")
    screen = console.app.screen
    assert isinstance(screen, HistoryScreen)
    table = screen.query_one("#history", DataTable)
    await console.until(lambda: table.row_count > 0, "history page shown")
    table.move_cursor(row=index - 1)
    await console.pilot.pause()
    return screen


async def test_enter_on_a_room_opens_its_history(console: Console) -> None:
    """The README's key table: enter, like h, opens the selected room's history."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(2))
    await select(console, console.app.dashboard.query_one(RoomsTable), "castle")

    await console.pilot.press("enter")
    await console.pilot.pause()

    assert isinstance(console.app.screen, HistoryScreen)


async def test_enter_on_a_command_inspects_it(console: Console) -> None:
    """The README's key table: enter, like i, inspects the selected command."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(2))
    await open_history_at(console, "castle", 2)

    await console.pilot.press("enter")
    await console.pilot.pause()

    assert isinstance(console.app.screen, CommandScreen)


async def test_kick_disconnects_the_artist(console: Console) -> None:
    """k, then Kick in the dialog: the artist's connection ends, others stay."""
    ada = await console.connect("ada")
    bob = await console.connect("bob")
    await select(console, console.app.dashboard.query_one(ArtistsTable), bob.client_id)

    await console.pilot.press("k")
    assert isinstance(console.app.screen, KickDialog)
    await console.pilot.press("tab", "enter")

    await bob.expect_closed()
    await ada.sync()
    await console.until(
        lambda: bob.client_id not in console.server.broadcaster.clients, "bob gone"
    )


async def test_kick_with_ban_refuses_the_reconnection(console: Console) -> None:
    """A kick with a ban: the artist is disconnected and cannot come back."""
    bob = await console.connect("bob")
    await select(console, console.app.dashboard.query_one(ArtistsTable), bob.client_id)

    await console.pilot.press("k")
    # The ban list: open it, take the next choice (15 minutes), then Kick.
    await console.pilot.press("enter", "down", "enter", "tab", "enter")

    await bob.expect_closed()
    again = await MixerClient.connect(console.port)
    try:
        await again.expect_closed()
    finally:
        await again.aclose()

    (ban,) = await console.server.control.bans()
    assert ban.subject == "address:127.0.0.1"
    assert ban.operator == "test-operator"


async def test_cancelled_kick_changes_nothing(console: Console) -> None:
    """Escape in the kick dialog leaves the artist connected."""
    bob = await console.connect("bob")
    await select(console, console.app.dashboard.query_one(ArtistsTable), bob.client_id)

    await console.pilot.press("k", "escape")
    await console.pilot.pause()

    assert not isinstance(console.app.screen, KickDialog)
    assert await bob.list_clients()


async def test_delete_room_needs_confirmation(console: Console) -> None:
    """d asks first; "n" keeps the room, "y" deletes it and disconnects its
    members."""
    ada = await console.connect("ada")
    await ada.create_room("doomed", commands=commands(3))
    rooms = console.app.dashboard.query_one(RoomsTable)
    await select(console, rooms, "doomed")

    await console.pilot.press("d")
    assert isinstance(console.app.screen, ConfirmDialog)
    await console.pilot.press("n")
    await console.pilot.pause()
    assert "doomed" in console.server.broadcaster.rooms

    await console.pilot.press("d", "y")
    await console.until(lambda: "doomed" not in rooms.rows, "room gone from the table")

    assert "doomed" not in console.server.broadcaster.rooms
    await ada.expect_closed()


async def test_keep_open_toggles(console: Console) -> None:
    """o turns keep_open on, and again off; the table follows."""
    ada = await console.connect("ada")
    await ada.create_room("castle")
    rooms = console.app.dashboard.query_one(RoomsTable)
    await select(console, rooms, "castle")

    await console.pilot.press("o")
    await console.until(
        lambda: str(rooms.get_cell("castle", "keep_open")) == "yes", "kept open"
    )
    await console.pilot.press("o")
    await console.until(
        lambda: str(rooms.get_cell("castle", "keep_open")) == "no", "no longer"
    )

    assert console.server.broadcaster.rooms["castle"].keep_open is False


async def test_fork_gives_a_room_with_the_first_n_commands(console: Console) -> None:
    """f at command 3, name accepted: a joiner of the new room receives exactly
    the first three commands."""
    history = commands(5)
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=history)
    await open_history_at(console, "castle", 3)

    await console.pilot.press("f")
    dialog = console.app.screen
    assert isinstance(dialog, AskDialog)
    dialog.query_one(Input).value = "castle-fork"
    await console.pilot.press("enter")
    await console.until(
        lambda: "castle-fork" in console.server.broadcaster.rooms, "fork created"
    )

    joiner = await console.connect("bob")
    received = await joiner.join_room("castle-fork")

    assert [frame.wire for frame in received] == history[:3]


async def test_rewind_resynchronises_members_and_joiners(console: Console) -> None:
    """r at command 2, confirmed: the member receives CLEAR_CONTENT, the first two
    commands, then JOIN_ROOM; a new joiner receives exactly those two."""
    history = commands(4)
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=history)
    bob = await console.connect("bob")
    assert [f.wire for f in await bob.join_room("castle")] == history
    await open_history_at(console, "castle", 2)

    await console.pilot.press("r")
    assert isinstance(console.app.screen, ConfirmDialog)
    await console.pilot.press("y")

    await bob.expect(MessageType.CLEAR_CONTENT)
    frames = await bob.receive_until(MessageType.JOIN_ROOM)
    assert [f.wire for f in frames if f.kind > 100] == history[:2]
    joiner = await console.connect("chloe")
    received = await joiner.join_room("castle")

    assert [frame.wire for frame in received] == history[:2]


async def test_export_writes_the_room_file(console: Console, tmp_path: Path) -> None:
    """e, a path: the room file is written there."""
    ada = await console.connect("ada")
    await ada.create_room("castle", commands=commands(3))
    await open_history_at(console, "castle", 1)
    target = tmp_path / "castle.mixer"

    await console.pilot.press("e")
    dialog = console.app.screen
    assert isinstance(dialog, AskDialog)
    dialog.query_one(Input).value = str(target)
    await console.pilot.press("enter")
    await console.until(target.exists, "room file written")

    assert target.stat().st_size > 0


async def test_room_rate_matches_the_traffic(console: Console) -> None:
    """A member sending about 20 commands a second shows about that in its room."""
    ada = await console.connect("ada")
    await ada.create_room("busy")
    rooms = console.app.dashboard.query_one(RoomsTable)
    wire = commands(1)[0]
    began = time.monotonic()
    sent = 0

    with anyio.fail_after(20):
        while (elapsed := time.monotonic() - began) < 4:
            due = int(elapsed * 20)
            await ada.send_raw(wire * (due - sent))
            sent = due
            await console.pilot.pause(0.05)

    sent_rate = sent / (time.monotonic() - began)
    shown = float(str(rooms.get_cell("busy", "rate")))
    # Generous bounds: the machine is shared and the meter samples once a second.
    assert 0.5 * sent_rate <= shown <= 1.5 * sent_rate


async def test_bans_screen_lifts_a_ban(console: Console) -> None:
    """b lists the ban a kick set and the audit log; l, confirmed, lifts it and
    the artist can connect again."""
    bob = await console.connect("bob")
    await select(console, console.app.dashboard.query_one(ArtistsTable), bob.client_id)
    await console.pilot.press("k", "enter", "down", "enter", "tab", "enter")
    await bob.expect_closed()

    await console.pilot.press("b")
    screen = console.app.screen
    assert isinstance(screen, BansScreen)
    bans = screen.query_one("#bans", DataTable)
    audit = screen.query_one("#audit", DataTable)
    await console.until(lambda: bans.row_count == 1, "the ban listed")
    assert str(bans.get_cell_at(Coordinate(0, 0))) == "address:127.0.0.1"
    assert str(bans.get_cell_at(Coordinate(0, 2))) == "test-operator"
    assert str(audit.get_cell_at(Coordinate(0, 2))) == "kick"

    await console.pilot.press("l", "y")
    await console.until(lambda: bans.row_count == 0, "the ban gone")

    assert await console.server.control.bans() == []
    again = await console.connect("bob")
    assert await again.list_clients()
    assert str(audit.get_cell_at(Coordinate(0, 2))) == "lift_ban"
