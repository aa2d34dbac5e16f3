"""How a listener logs accepts that fail (out of file descriptors, say): the
first failure at once, then at most once a minute while they go on, and once
more when a connection is accepted again. The accept loops retry every 0.1 s,
so a line per failure filled the log with ten lines a second."""

import logging
import time

log = logging.getLogger(__name__)

REPEAT_SECONDS = 60.0


class AcceptFailures:
    """The failures of one listener's accepts since its last success.

    Args:
        listener: names the events: ``<listener>.accept_failed`` and
            ``<listener>.accept_resumed``.
    """

    def __init__(self, listener: str) -> None:
        self._failed_event = f"{listener}.accept_failed"
        self._resumed_event = f"{listener}.accept_resumed"
        self._count = 0
        self._logged_at: float | None = None

    def failed(self, error: OSError) -> None:
        """Count a failed accept, logging it if none was logged this minute."""
        self._count += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < REPEAT_SECONDS:
            return

        self._logged_at = now
        log.error(
            self._failed_event, extra={"error": str(error), "failures": self._count}
        )

    def accepted(self) -> None:
        """A connection was accepted: say so once after failures."""
        if not self._count:
            return

        log.warning(self._resumed_event, extra={"failures": self._count})
        self._count = 0
        self._logged_at = None
