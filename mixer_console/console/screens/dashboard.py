"""The main screen: totals, rooms, artists and the event log, live."""

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input

from mixer_console.console.format import format_age
from mixer_console.console.messages import (
    EventsArrived,
    RelayStateChanged,
    SnapshotArrived,
)
from mixer_console.console.operations import perform
from mixer_console.console.screens.bans import BansScreen
from mixer_console.console.screens.dialogs import ConfirmDialog, KickDialog
from mixer_console.console.screens.history import HistoryScreen
from mixer_console.console.widgets.artists_table import ArtistsTable
from mixer_console.console.widgets.event_log import EventLog
from mixer_console.console.widgets.rooms_table import RoomsTable
from mixer_console.console.widgets.totals_bar import TotalsBar
from relay.control import RelayControl, RelaySnapshot


class DashboardScreen(Screen[None]):
    """Everything at a glance; room actions apply to the selected room, kick to
    the selected artist.

    Args:
        control: the relay.
        operator: who the audit log names for every action.
        where: the relay in a few words, for the totals bar.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h,enter", "history", "History", tooltip="Open the room's history"),
        Binding("k", "kick", "Kick", tooltip="Disconnect the artist, maybe ban"),
        Binding("d", "delete_room", "Delete room"),
        Binding("o", "keep_open", "Keep open", tooltip="Toggle the room's keep_open"),
        Binding("b", "bans", "Bans", tooltip="Bans in force and the audit log"),
        Binding("slash", "filter", "Filter events"),
        Binding("p", "app.toggle_pause", "Pause", tooltip="Freeze the view to read it"),
        Binding("1", "focus_pane('rooms')", "Rooms", show=False),
        Binding("2", "focus_pane('artists')", "Artists", show=False),
        Binding("3", "focus_pane('events')", "Events", show=False),
    ]

    def __init__(self, control: RelayControl, operator: str, where: str) -> None:
        super().__init__()
        self.control = control
        self.operator = operator
        self.where = where
        self.snapshot: RelaySnapshot | None = None

    def compose(self) -> ComposeResult:
        yield TotalsBar(self.where, id="totals")
        with Vertical(id="rooms-pane", classes="pane"):
            yield RoomsTable(id="rooms")
        with Vertical(id="artists-pane", classes="pane"):
            yield ArtistsTable(id="artists")
        with Vertical(id="events-pane", classes="pane"):
            yield Input(placeholder="filter: words, kind:join ...", id="filter")
            yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rooms-pane").border_title = "Rooms [1]"
        self.query_one("#artists-pane").border_title = "Artists [2]"
        self.query_one("#events-pane").border_title = "Events [3]"
        self.query_one("#filter").display = False
        self.query_one(RoomsTable).focus()

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        snapshot = message.snapshot
        self.snapshot = snapshot
        self.query_one(TotalsBar).show_totals(snapshot.totals)
        self.query_one(RoomsTable).show(snapshot.rooms)
        self.query_one(ArtistsTable).show(snapshot.artists, snapshot.taken_at)

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.query_one(EventLog).add_events(message.events)

    def on_relay_state_changed(self, message: RelayStateChanged) -> None:
        self.query_one(TotalsBar).show_state(message.is_reachable, message.text)

    def show_paused(self, is_paused: bool) -> None:
        self.query_one(TotalsBar).show_paused(is_paused)

    @property
    def selected_room(self) -> str | None:
        return self.query_one(RoomsTable).selected_key

    @property
    def selected_artist(self) -> str | None:
        return self.query_one(ArtistsTable).selected_key

    def action_focus_pane(self, table_id: str) -> None:
        self.query_one(f"#{table_id}").focus()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(EventLog).set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        field = self.query_one("#filter", Input)
        field.display = bool(event.value)
        self.query_one(EventLog).focus()

    def action_bans(self) -> None:
        self.app.push_screen(BansScreen(self.control, self.operator))

    @on(DataTable.RowSelected, "#rooms")
    def _room_chosen(self, event: DataTable.RowSelected) -> None:
        # The focused table takes enter for itself: its selection is the key.
        self.action_history()

    def action_history(self) -> None:
        room = self._require(self.selected_room, "room")
        if room is not None:
            self.app.push_screen(HistoryScreen(self.control, self.operator, room))

    @work(group="operations")
    async def action_kick(self) -> None:
        client_id = self._require(self.selected_artist, "artist")
        if client_id is None:
            return

        choice = await self.app.push_screen_wait(KickDialog(self._artist_label()))
        if choice is None:
            return

        what = f"kick {client_id}"
        if choice.ban_seconds is not None:
            what += f" and ban for {format_age(0, choice.ban_seconds)}"

        await perform(
            self.app,
            what,
            self.control.kick(
                client_id, operator=self.operator, ban_seconds=choice.ban_seconds
            ),
        )

    @work(group="operations")
    async def action_delete_room(self) -> None:
        room = self._require(self.selected_room, "room")
        if room is None:
            return

        question = f"Delete room {room!r}? Its artists are disconnected."
        if await self.app.push_screen_wait(ConfirmDialog(question, "Delete")):
            await perform(
                self.app,
                f"delete room {room}",
                self.control.delete_room(room, operator=self.operator),
            )

    @work(group="operations")
    async def action_keep_open(self) -> None:
        room = self._require(self.selected_room, "room")
        if room is None or self.snapshot is None:
            return

        views = [view for view in self.snapshot.rooms if view.name == room]
        if not views:
            return

        keep_open = not views[0].keep_open
        await perform(
            self.app,
            f"keep_open {'on' if keep_open else 'off'} for {room}",
            self.control.set_keep_open(room, keep_open, operator=self.operator),
        )

    def _artist_label(self) -> str:
        client_id = self.selected_artist
        artists = self.snapshot.artists if self.snapshot else ()
        for artist in artists:
            if artist.client_id == client_id and artist.user_name:
                return f"{artist.user_name} ({client_id})"

        return str(client_id)

    def _require(self, key: str | None, what: str) -> str | None:
        if key is None:
            self.app.notify(f"No {what} selected", severity="warning")

        return key
