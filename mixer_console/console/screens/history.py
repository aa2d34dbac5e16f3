"""A room's history, a page at a time, and what can be done from a command:
inspect it, fork the room at it, rewind the room to it, export the room."""

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from mixer_console.console.format import format_bytes, format_clock
from mixer_console.console.operations import perform
from mixer_console.console.screens.command import CommandScreen
from mixer_console.console.screens.dialogs import AskDialog, ConfirmDialog
from mixer_console.console.widgets.live_table import literal
from relay.control import CommandSummary, HistoryPage, OperationRefused, RelayControl

PAGE_SIZE = 100

HISTORY_COLUMNS = (
    ("index", "#"),
    ("seq", "Seq"),
    ("type", "Type"),
    ("size", "Size"),
    ("sender", "Sender"),
    ("time", "Time"),
)


def command_cells(command: CommandSummary) -> tuple[Text, ...]:
    """One command's row, in the order of :data:`HISTORY_COLUMNS`."""
    cells = (
        str(command.index),
        str(command.seq),
        f"{command.type_name} ({command.type})",
        format_bytes(command.size),
        command.sender or "-",
        format_clock(command.at),
    )
    return tuple(literal(cell) for cell in cells)


class HistoryScreen(Screen[None]):
    """One room's history; Escape goes back to the dashboard.

    Args:
        control: the relay.
        operator: who the audit log names.
        room: the room whose history this is.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("i,enter", "inspect", "Inspect"),
        Binding("f", "fork", "Fork here", tooltip="New room with commands 1..N"),
        Binding("r", "rewind", "Rewind here", tooltip="Cut the room back to 1..N"),
        Binding("e", "export", "Export"),
        Binding("right_square_bracket,n", "page(1)", "Next page"),
        Binding("left_square_bracket,b", "page(-1)", "Prev page"),
        Binding("R", "reload", "Reload", show=False),
    ]

    def __init__(self, control: RelayControl, operator: str, room: str) -> None:
        super().__init__()
        self.control = control
        self.operator = operator
        self.room = room
        self.start = 1
        self.page: HistoryPage | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="history-title", markup=False)
        table: DataTable[Text] = DataTable(
            id="history", cursor_type="row", zebra_stripes=True
        )
        for key, label in HISTORY_COLUMNS:
            table.add_column(label, key=key)

        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._title("loading ...")
        self.load()

    @work(exclusive=True, group="history")
    async def load(self) -> None:
        """Fetch the page that starts at ``self.start`` and show it."""
        try:
            page = await self.control.history_page(self.room, self.start, PAGE_SIZE)
        except (OperationRefused, ConnectionError) as exc:
            self._title(f"cannot read the history: {exc}")
            return

        self.show_page(page)

    def show_page(self, page: HistoryPage) -> None:
        """Show ``page`` (commands from ``self.start``)."""
        self.page = page
        table = self.query_one("#history", DataTable)
        table.clear()
        for command in page.commands:
            table.add_row(*command_cells(command), key=str(command.index))

        if page.total == 0:
            self._title("empty history")
            return

        last = self.start + len(page.commands) - 1
        pages = (page.total + PAGE_SIZE - 1) // PAGE_SIZE
        number = (self.start - 1) // PAGE_SIZE + 1
        self._title(
            f"commands {self.start}-{last} of {page.total}, page {number}/{pages}"
        )

    def _title(self, status: str) -> None:
        self.query_one("#history-title", Static).update(
            f"History of room {self.room!r}: {status}"
        )

    @property
    def selected_index(self) -> int | None:
        """The history index of the command under the cursor."""
        table = self.query_one("#history", DataTable)
        if self.page is None or not self.page.commands:
            return None

        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(str(row_key.value))

    def action_page(self, step: int) -> None:
        total = self.page.total if self.page else 0
        start = self.start + step * PAGE_SIZE
        if 1 <= start <= max(1, total):
            self.start = start
            self.load()

    def action_reload(self) -> None:
        self.load()

    @on(DataTable.RowSelected, "#history")
    def _command_chosen(self, event: DataTable.RowSelected) -> None:
        # The focused table takes enter for itself: its selection is the key.
        self.action_inspect()

    def action_inspect(self) -> None:
        index = self.selected_index
        if index is not None:
            self.app.push_screen(CommandScreen(self.control, self.room, index))

    @work(group="operations")
    async def action_fork(self) -> None:
        index = self.selected_index
        if index is None:
            return

        new_room = await self.app.push_screen_wait(
            AskDialog(
                f"Fork {self.room!r} at command {index}: name of the new room",
                f"{self.room}-at-{index}",
            )
        )
        if new_room is not None:
            await perform(
                self.app,
                f"fork {self.room} at {index} into {new_room}",
                self.control.fork_room(
                    self.room, index, new_room, operator=self.operator
                ),
            )

    @work(group="operations")
    async def action_rewind(self) -> None:
        index = self.selected_index
        if index is None:
            return

        total = self.page.total if self.page else index
        question = (
            f"Rewind {self.room!r} to command {index}? The {total - index} commands "
            "after it are deleted and its artists are resynchronised."
        )
        if not await self.app.push_screen_wait(ConfirmDialog(question, "Rewind")):
            return

        is_done = await perform(
            self.app,
            f"rewind {self.room} to {index}",
            self.control.rewind_room(self.room, index, operator=self.operator),
        )
        if is_done:
            self.load()

    @work(group="operations")
    async def action_export(self) -> None:
        answer = await self.app.push_screen_wait(
            AskDialog(
                f"Export room {self.room!r} to the file (on the relay's machine)",
                str(Path.cwd() / f"{self.room}.mixer"),
            )
        )
        if answer is not None:
            await perform(
                self.app,
                f"export {self.room} to {answer}",
                self.control.export_room(
                    self.room, export_path(answer), operator=self.operator
                ),
            )


def export_path(answer: str) -> Path:
    """The file the operator typed, with ``~`` meaning the home directory."""
    return Path(answer).expanduser()
