"""The relay's events, newest last, narrowed by a filter the operator types."""

import itertools
from collections import deque
from collections.abc import Iterable

from rich.text import Text

from mixer_console.console.format import format_clock
from mixer_console.console.widgets.cached_table import CachedCellTable
from mixer_console.console.widgets.live_table import literal
from relay.control import RelayEvent

# Known limit: the view keeps the last 2,000 events; older ones are only in the
# relay's log file.
KEPT_EVENTS = 2000

EVENT_COLUMNS = (
    ("time", "Time"),
    ("kind", "Kind"),
    ("room", "Room"),
    ("client", "Client"),
    ("text", "Event"),
)


def event_cells(event: RelayEvent) -> tuple[Text, ...]:
    """One event's row, in the order of :data:`EVENT_COLUMNS`."""
    cells = (
        format_clock(event.at),
        event.kind,
        event.room or "",
        event.client_id or "",
        event.text,
    )
    return tuple(literal(cell) for cell in cells)


def matches(event: RelayEvent, words: list[str]) -> bool:
    """Whether every word of the filter occurs in the event (case ignored);
    ``kind:join`` asks for one kind exactly."""
    haystack = " ".join(
        (event.kind, event.text, event.room or "", event.client_id or "")
    ).lower()
    for word in words:
        if word.startswith("kind:"):
            if event.kind != word.removeprefix("kind:"):
                return False
        elif word not in haystack:
            return False

    return True


class EventLog(CachedCellTable):
    """The latest events that match the filter; the newest row stays in view
    unless the operator moved the cursor up to read."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        # Each kept event with its row key: a restarted relay counts seq from 1
        # again, so the view numbers its rows itself.
        self._events: deque[tuple[str, RelayEvent]] = deque(maxlen=KEPT_EVENTS)
        self._row_keys = itertools.count(1)
        self._words: list[str] = []

    def on_mount(self) -> None:
        for key, label in EVENT_COLUMNS:
            self.add_column(label, key=key)

    def add_events(self, events: Iterable[RelayEvent]) -> None:
        is_following = self.cursor_row >= self.row_count - 1
        for event in events:
            if len(self._events) == KEPT_EVENTS:
                oldest_key, _ = self._events[0]
                if oldest_key in self.rows:
                    self.remove_row(oldest_key)

            key = str(next(self._row_keys))
            self._events.append((key, event))
            if matches(event, self._words):
                self.add_row(*event_cells(event), key=key)

        if is_following and self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    def set_filter(self, text: str) -> None:
        """Show only the kept events that match ``text`` (see :func:`matches`)."""
        self._words = text.lower().split()
        self.clear()
        for key, event in self._events:
            if matches(event, self._words):
                self.add_row(*event_cells(event), key=key)

        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
