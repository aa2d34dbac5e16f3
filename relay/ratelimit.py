"""Requests per address over a moving window, for the login endpoints and for
tokens presented over TCP: each one costs the relay requests to GitHub."""

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

# Refusals of one address worth a log line: the first in any minute, so that a
# peer hammering an endpoint cannot flood the log.
_REPORTED_REFUSALS = RateLimitItemPerMinute(1)


# Known limit: counts live in this process's memory, so a restart forgets them and
# the nodes of a cluster count separately.
class AddressLimiter:
    """Allows each address ``per_minute`` requests in any sixty seconds.

    Args:
        name: tells this limiter's counts from others'.
        per_minute: requests one address may make in a minute.
    """

    def __init__(self, name: str, per_minute: int) -> None:
        self._name = name
        self._item = RateLimitItemPerMinute(per_minute)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def allow(self, address: str) -> bool:
        """Count one request from ``address``; False when it is over the limit."""
        return await self._limiter.hit(self._item, self._name, address)

    async def is_worth_reporting(self, address: str) -> bool:
        """Tell whether a refusal of ``address`` is the first in a minute, the
        only one worth a log line."""
        return await self._limiter.hit(
            _REPORTED_REFUSALS, self._name + ".reported", address
        )

    async def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` may make a request again."""
        stats = await self._limiter.get_window_stats(self._item, self._name, address)
        return max(1, math.ceil(stats.reset_time - time.time()))
