"""One line with the whole relay's figures and whether it can be reached."""

from rich.text import Text
from textual.widgets import Static

from mixer_console.console.format import format_bytes, format_rate
from relay.control import Totals

MB = 1_000_000


def totals_text(totals: Totals) -> str:
    """The figures, shortest first so that a narrow terminal keeps the main ones."""
    parts = [
        f"conns {totals.connections}",
        f"rooms {totals.rooms}",
        f"cmd/s {format_rate(totals.commands_per_second)}",
        f"MB/s {totals.bytes_per_second / MB:.2f}",
        f"CPU {totals.cpu_percent:.0f}%",
        f"mem {format_bytes(totals.rss_bytes)}",
    ]
    if totals.store_state is not None:
        parts.append(f"store {totals.store_state}")

    if totals.cluster_state is not None:
        parts.append(f"cluster {totals.cluster_state}")

    return "  ".join(parts)


class TotalsBar(Static):
    """The relay's state (running, stopped, paused view) and its totals."""

    DEFAULT_CSS = """
    TotalsBar {
        height: 1;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._state = "connecting"
        self._is_reachable = True
        self._figures = ""
        self._is_paused = False
        self._shown: Text | None = None

    def show_totals(self, totals: Totals) -> None:
        self._figures = totals_text(totals)
        self._redraw()

    def show_state(self, is_reachable: bool, text: str) -> None:
        self._is_reachable = is_reachable
        self._state = text
        self._redraw()

    def show_paused(self, is_paused: bool) -> None:
        self._is_paused = is_paused
        self._redraw()

    def _redraw(self) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        if self._is_paused:
            line.append("PAUSED ", style="bold reverse")

        if self._is_reachable:
            line.append(self._figures or self._state)
        else:
            line.append(self._state, style="bold red")

        # Only a changed line is repainted: updates come several times a second.
        if line != self._shown:
            self._shown = line
            self.update(line)
