"""The loop that keeps the console up to date: it polls the relay's snapshot and
events several times a second and posts them to the app as messages."""

import logging

import anyio
from textual.message_pump import MessagePump

from mixer_console.console.messages import (
    EventsArrived,
    RelayStateChanged,
    SnapshotArrived,
)
from relay.control import RelayControl

log = logging.getLogger(__name__)

# Four updates a second: live to the eye, and a small cost to the relay.
POLL_INTERVAL = 0.25

# A relay that takes longer than this to answer counts as unreachable.
CALL_TIMEOUT = 5.0

# Waits between attempts to reach a relay that stopped, doubling up to the last.
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)

# Events fetched per call; a backlog larger than this comes over several polls.
EVENTS_PER_CALL = 500


class RelayFeed:
    """Polls one relay for the app; paused, it asks nothing.

    Args:
        control: the relay.
        target: where the messages go (the app).
    """

    def __init__(self, control: RelayControl, target: MessagePump) -> None:
        self.control = control
        self.is_paused = False
        self._target = target
        self._last_event = 0
        self._is_reachable: bool | None = None

    async def run(self) -> None:
        """Poll until cancelled (the app's lifetime)."""
        failures = 0
        while True:
            if self.is_paused:
                await anyio.sleep(POLL_INTERVAL)
                continue

            try:
                with anyio.fail_after(CALL_TIMEOUT):
                    await self.poll()
            except (ConnectionError, TimeoutError) as exc:
                self._set_reachable(False, f"relay stopped / reconnecting ({exc})")
                await anyio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                continue

            failures = 0
            await anyio.sleep(POLL_INTERVAL)

    async def poll(self) -> None:
        """Fetch one snapshot and the events since the last poll, and post them."""
        snapshot = await self.control.snapshot()
        # Event numbers grow across relay restarts too, so "after the last one
        # shown" is right after a reconnection as well.
        events = await self.control.events(self._last_event, EVENTS_PER_CALL)
        self._set_reachable(True, "relay running")
        self._target.post_message(SnapshotArrived(snapshot))
        if events:
            self._last_event = events[-1].seq
            self._target.post_message(EventsArrived(events))

    def _set_reachable(self, is_reachable: bool, text: str) -> None:
        if self._is_reachable is is_reachable:
            return

        self._is_reachable = is_reachable
        log.info("console.relay_state", extra={"reachable": is_reachable, "why": text})
        self._target.post_message(RelayStateChanged(is_reachable, text))
