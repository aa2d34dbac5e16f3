"""One line with the whole relay's figures and whether it can be reached."""

from rich.text import Text
from textual.widgets import Static

from mixer_console.console.format import format_rate
from relay.control import Totals

MB = 1_000_000


def totals_figures(totals: Totals) -> list[tuple[str, str]]:
    """(label, value) pairs, most wanted first: a narrow terminal cuts the end."""
    figures = [
        ("conns", str(totals.connections)),
        ("rooms", str(totals.rooms)),
        ("cmd/s", format_rate(totals.commands_per_second)),
        ("MB/s", f"{totals.bytes_per_second / MB:.2f}"),
    ]
    if totals.store_state is not None:
        figures.append(("store", totals.store_state))

    if totals.cluster_state is not None:
        figures.append(("cluster", totals.cluster_state))

    figures.append(("CPU", f"{totals.cpu_percent:.0f}%"))
    figures.append(("mem", f"{totals.rss_bytes / MB:.0f}MB"))
    return figures


class TotalsBar(Static):
    """Which relay, its state (running, stopped, paused view) and its totals.

    Args:
        where: the relay in a few words ("127.0.0.1:12800", a socket path).
    """

    DEFAULT_CSS = """
    TotalsBar {
        width: 1fr;
        height: 1;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, where: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._where = where
        self._state = "connecting"
        self._is_reachable = True
        self._figures: list[tuple[str, str]] = []
        self._is_paused = False
        self._shown: Text | None = None

    def show_totals(self, totals: Totals) -> None:
        self._figures = totals_figures(totals)
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
        line.append(self._where + " ", style="bold")
        if self._is_paused:
            line.append("PAUSED", style="bold reverse")
            line.append(" ")

        if self._is_reachable and self._figures:
            # One space everywhere, labels dim: with the store it fits 80 columns.
            for label, value in self._figures:
                line.append(label + " ", style="dim")
                line.append(value + " ", style="bold")
        elif self._is_reachable:
            line.append(self._state)
        else:
            line.append(self._state, style="bold red")

        # Only a changed line is repainted: updates come several times a second.
        # The bar is one line across the screen whatever it holds, so no
        # layout pass (the whole screen's) is needed.
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)
