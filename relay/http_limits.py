"""uvicorn's HTTP/1.1 protocol with the bounds a port open to anyone needs.

uvicorn serves a fixed number of connections at once and times out only idle
keep-alive connections, so peers that open connections and never finish a
request would hold every one of them, and the surface would answer nobody
else. Here each connection must send a whole request head soon after it opens
(or after its previous answer), a request may take a bounded time, and one
address holds a bounded share of the connections.
"""

import asyncio
import logging
import time
from collections import Counter

from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a connection has to send a whole request head, from its opening or
# from the end of its previous answer.
REQUEST_HEAD_SECONDS = 10.0

# Seconds a request may then take to be answered (a login makes a few requests
# to GitHub, each bounded at 10 s).
REQUEST_SECONDS = 120.0

# Connections one address may hold at once; a browser opens about six.
MAX_CONNECTIONS_PER_ADDRESS = 32

# Seconds between two lines of one of uvicorn's warnings about a peer's request.
PEER_WARNING_SECONDS = 60.0


class PeerWarningLimit(logging.Filter):
    """Lets each of uvicorn's warnings about a peer's request ("Invalid HTTP
    request received.", an upgrade it does not serve) through once a minute,
    the next one carrying ``left_out``, the count of those dropped meanwhile: a
    peer sending garbage cost the log up to three lines a request. Errors
    always pass."""

    def __init__(self) -> None:
        super().__init__()
        self._logged_at: dict[object, float] = {}
        self._left_out: Counter[object] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True

        # The message's template: uvicorn has a handful, whatever the peers send.
        template = record.msg
        now = time.monotonic()
        logged_at = self._logged_at.get(template)
        if logged_at is not None and now - logged_at < PEER_WARNING_SECONDS:
            self._left_out[template] += 1
            return False

        self._logged_at[template] = now
        left_out = self._left_out.pop(template, 0)
        if left_out:
            record.left_out = left_out

        return True


PEER_WARNINGS = PeerWarningLimit()


# Known limit: the bounds rest on uvicorn's H11Protocol attributes (client,
# connections, cycle, transport), which are not a documented interface.
class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that hold a place without
    making a request, and refusing an address's connections past its share."""

    _deadline: asyncio.TimerHandle | None = None
    _is_answering: bool = False

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Count the connection, refuse it past its address's share, and start
        the request head deadline."""
        super().connection_made(transport)

        host = self.client[0] if self.client else None
        same_address = sum(
            1
            for other in self.connections
            if isinstance(other, H11Protocol)
            and other.client
            and other.client[0] == host
        )
        if same_address > MAX_CONNECTIONS_PER_ADDRESS:
            transport.abort()
            return

        self._arm(REQUEST_HEAD_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline, then let uvicorn clean up."""
        if self._deadline is not None:
            self._deadline.cancel()

        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """An answer is out: the next request head has its own deadline."""
        super().on_response_complete()
        self._is_answering = False
        self._arm(REQUEST_HEAD_SECONDS)

    def _arm(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()

        self._deadline = self.loop.call_later(seconds, self._on_deadline)

    def _on_deadline(self) -> None:
        is_busy = self.cycle is not None and not self.cycle.response_complete
        if is_busy and not self._is_answering and not self.transport.is_closing():
            # A request came in time and is being answered: give it its time.
            self._is_answering = True
            self._arm(REQUEST_SECONDS)
            return

        # No whole request in time, an answer overdue, or a closing connection
        # whose peer does not read what is left: end it without waiting.
        self.transport.abort()
