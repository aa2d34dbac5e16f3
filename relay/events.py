"""The relay's event log for operators: the newest events, in a bounded ring.

The broadcaster records each event as it happens (connections, rooms, drops,
errors, operator actions); consoles read what came after the last sequence number
they saw, so a console that polls slowly skips what fell out of the ring and
never sees an event twice.
"""

import time
from collections import deque
from itertools import islice

from relay.control import RelayEvent

# Events kept; older ones fall out of the ring.
EVENT_LOG_CAPACITY = 5000


class EventLog:
    """The newest events, numbered from 1 in the order they happened.

    Args:
        capacity: how many events are kept.
    """

    def __init__(self, capacity: int = EVENT_LOG_CAPACITY) -> None:
        self._events: deque[RelayEvent] = deque(maxlen=capacity)
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event (0 before the first)."""
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

        # Sequence numbers in the ring are consecutive: the position is computed.
        start = max(0, seq + 1 - events[0].seq)
        return list(islice(events, start, start + limit))
