"""Background tasks that survive their own bugs: a failure is logged and the task
started again, so one broken task never ends the relay (or the console around it).
"""

import logging
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger(__name__)

# A task that keeps failing is restarted this many times in a row, then left
# stopped (logged), so that a permanent bug does not spin the loop.
MAX_RESTARTS = 20
RESTART_DELAY_SECONDS = 1.0


async def supervised(
    name: str,
    task: Callable[[], Awaitable[None]],
    max_restarts: int = MAX_RESTARTS,
    restart_delay: float = RESTART_DELAY_SECONDS,
) -> None:
    """Run ``task`` until it returns; restart it after an exception.

    Args:
        name: the task's name in the log.
        task: the coroutine function to run.
        max_restarts: consecutive failures tolerated before giving up on it.
        restart_delay: seconds to wait before each restart.
    """
    for attempt in range(max_restarts + 1):
        try:
            await task()
            return
        except Exception:
            log.exception(
                "task.failed",
                extra={"task": name, "attempt": attempt + 1, "restarts": max_restarts},
            )

        await anyio.sleep(restart_delay)

    log.error("task.abandoned", extra={"task": name})
