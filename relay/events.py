"""The relay's event log for operators: the newest events, in a bounded ring.

The broadcaster records each event as it happens (connections, rooms, drops,
errors, operator actions); consoles read what came after the last sequence number
they saw, so a console that polls slowly skips what fell out of the ring and
never sees an event twice.

Sequence numbers start from the relay's start time in microseconds, so those of
a restarted relay are greater than any of its previous run: a console that
reattaches and asks for what came after the last number it saw gets exactly the
new relay's events.
"""

import time
from collections import deque
from itertools import islice

from relay.control import RelayEvent

# Events kept; older ones fall out of the ring.
# Known limit: a console that polls less often than 5000 events happen misses the
# ones that fell out of the ring, with no marker of the gap.
EVENT_LOG_CAPACITY = 5000


class EventLog:
    """The newest events, numbered from 1 in the order they happened.

    Args:
        capacity: how many events are kept.
    """

    def __init__(self, capacity: int = EVENT_LOG_CAPACITY) -> None:
        self._events: deque[RelayEvent] = deque(maxlen=capacity)
        # Fewer than one event per microsecond of a run: the next run's first
        # number is greater than this run's last.
        self._last_seq = time.time_ns() // 1000

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event (the start number before the
        first)."""
        return self._last_seq

    def record(
        self,
        kind: str,
        text: str,
        *,
        room: str | None = None,
        client_id: str | None = None,
    ) -> RelayEvent:
        """Add an event and return it."""
        self._last_seq += 1
        event = RelayEvent(self._last_seq, time.time(), kind, text, room, client_id)
        self._events.append(event)
        return event

    def after(self, seq: int, limit: int) -> list[RelayEvent]:
        """Return up to ``limit`` events whose seq is greater than ``seq``, oldest
        first."""
        events = self._events
        if not events or limit <= 0:
            return []

        # Sequence numbers in the ring are consecutive: the position is computed,
        # and kept within the ring (islice refuses bounds past sys.maxsize).
        start = min(max(0, seq + 1 - events[0].seq), len(events))
        return list(islice(events, start, start + min(limit, len(events))))
