"""The console attached through the admin socket: the same state as in-process,
and a relay that stops and comes back is shown and found again by itself."""

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from textual.widgets import DataTable

from mixer_console.console.app import MixerConsole
from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.event_log import EventLog
from mixer_console.console.widgets.rooms_table import RoomsTable
from mixer_console.console.widgets.totals_bar import TotalsBar
from relay.admin_client import AdminClient
from relay.config import Settings
from relay.control import RelayControl
from relay.server import RelayServer
from tests.console.consoles import OPERATOR
from tests.console.test_operations import commands
from tests.control.admin_helpers import private_socket_dir
from tests.mixer_client import MixerClient
from tests.relays import running_relay

WAIT_TIMEOUT = 10.0

# Columns that move with the clock or the traffic meter's sampling instant.
MOVING_COLUMNS = frozenset({"since", "rate", "history"})


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with private_socket_dir() as socket_dir:
        yield Settings(
            host="127.0.0.1",
            port=0,
            room_update_interval=0.01,
            data_dir=tmp_path / "data",
            admin_socket=socket_dir / "admin.sock",
            room_grace=60,
        )


def socket_of(settings: Settings) -> Path:
    path = settings.admin_socket_path()
    assert path is not None
    return path


def still_rows(table: DataTable[object]) -> dict[str, tuple[str, ...]]:
    """The table's rows by key, without the columns that move by themselves."""
    keys = [column.key for column in table.ordered_columns]
    return {
        str(row.value): tuple(
            str(table.get_cell(row, key))
            for key in keys
            if key.value not in MOVING_COLUMNS
        )
        for row in table.rows
    }


def totals_line(app: MixerConsole) -> str:
    return str(app.dashboard.query_one(TotalsBar).render())


async def until(app: MixerConsole, condition: object, what: str) -> None:
    """Let the app run until ``condition()`` holds; fail after a bound."""
    assert callable(condition)
    with anyio.move_on_after(WAIT_TIMEOUT):
        for _ in range(int(WAIT_TIMEOUT / 0.05)):
            if condition():
                return

            await anyio.sleep(0.05)

    raise AssertionError(f"never: {what}; totals: {totals_line(app)!r}")


async def dashboard_of(control: RelayControl, artists: int) -> list[object]:
    """What a console over ``control`` shows once it has ``artists`` rows."""
    app = MixerConsole(control, OPERATOR, "test")
    async with app.run_test(size=(160, 48)):
        dashboard = app.dashboard
        artists_table = dashboard.query_one(ArtistsTable)
        events = dashboard.query_one(EventLog)
        await until(app, lambda: artists_table.row_count == artists, "artists shown")
        await until(app, lambda: events.row_count > 0, "events shown")
        return [
            still_rows(dashboard.query_one(RoomsTable)),
            still_rows(artists_table),
            still_rows(events),
            totals_line(app).split(" CPU")[0],
        ]


async def people_in_a_room(server: RelayServer) -> list[MixerClient]:
    assert server.port is not None
    ada = await MixerClient.connect(server.port)
    await ada.handshake("ada")
    await ada.create_room("studio", commands=commands(3))
    bob = await MixerClient.connect(server.port)
    await bob.handshake("bob")
    await bob.join_room("studio")
    chloe = await MixerClient.connect(server.port)
    await chloe.handshake("chloe")
    return [ada, bob, chloe]


async def test_attached_console_shows_the_in_process_state(settings: Settings) -> None:
    """Rooms, artists, events and totals read the same over the socket."""
    async with running_relay(settings) as server:
        clients = await people_in_a_room(server)
        try:
            in_process = await dashboard_of(server.control, artists=3)
            client = AdminClient(socket_of(settings))
            try:
                attached = await dashboard_of(client, artists=3)
            finally:
                await client.aclose()
        finally:
            for mixer_client in clients:
                await mixer_client.aclose()

    assert attached == in_process
    assert "studio" in in_process[0]  # type: ignore[operator]


async def test_attached_console_follows_a_relay_restart(settings: Settings) -> None:
    """The relay stops: the console says so; it comes back: the console finds it
    again by itself and shows the restored room."""
    client = AdminClient(socket_of(settings))
    app = MixerConsole(client, OPERATOR, "attached")
    try:
        async with app.run_test(size=(160, 48)):
            rooms = app.dashboard.query_one(RoomsTable)
            async with running_relay(settings) as server:
                assert server.port is not None
                ada = await MixerClient.connect(server.port)
                await ada.handshake("ada")
                await ada.create_room("studio", commands=commands(2))
                await until(app, lambda: "studio" in rooms.rows, "room shown")
                # Stopped as on a signal: the live room is kept for Ada's return.
                server.broadcaster.stop()

            await ada.aclose()
            await until(
                app,
                lambda: "relay stopped / reconnecting" in totals_line(app),
                "the stop shown",
            )
            async with running_relay(settings):
                await until(app, lambda: "conns" in totals_line(app), "found again")
                await until(app, lambda: "studio" in rooms.rows, "room restored")

                assert str(rooms.get_cell("studio", "commands")) == "2"
    finally:
        await client.aclose()
