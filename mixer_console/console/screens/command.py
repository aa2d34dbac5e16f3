"""One command of a history, inspected: its fields, leading path and first bytes."""

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from mixer_console.console.format import (
    format_bytes,
    format_clock,
    hex_view,
    shown,
)
from relay.control import CommandDetail, OperationRefused, RelayControl


def detail_text(detail: CommandDetail) -> str:
    """The fields, one a line, then the hex view."""
    command = detail.summary
    lines = [
        f"index         {command.index}",
        f"seq           {command.seq}",
        f"command id    {detail.command_id}",
        f"type          {command.type_name} ({command.type})",
        f"size          {command.size} bytes ({format_bytes(command.size)})",
        f"sender        {command.sender or '-'}",
        f"time          {format_clock(command.at)}",
        f"leading path  {shown(detail.leading_path) if detail.leading_path else '-'}",
        "",
        f"first {len(detail.head)} bytes of the frame (14-byte header first):",
        hex_view(detail.head),
    ]
    return "\n".join(lines)


class CommandScreen(Screen[None]):
    """One command; Escape goes back to the history."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back")
    ]

    def __init__(self, control: RelayControl, room: str, index: int) -> None:
        super().__init__()
        self.control = control
        self.room = room
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static(
            f"Room {self.room!r}, command {self.index}",
            id="command-title",
            markup=False,
        )
        with VerticalScroll():
            yield Static("loading ...", id="command-detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="command")
    async def load(self) -> None:
        try:
            detail = await self.control.command(self.room, self.index)
        except (OperationRefused, ConnectionError) as exc:
            self.query_one("#command-detail", Static).update(f"cannot read it: {exc}")
            return

        self.show_detail(detail)

    def show_detail(self, detail: CommandDetail) -> None:
        self.query_one("#command-detail", Static).update(detail_text(detail))
