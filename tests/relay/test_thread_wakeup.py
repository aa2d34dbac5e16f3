"""ThreadWakeup: another thread wakes an event-loop task without waiting for it."""

import threading
import time

import anyio

from relay.thread_wakeup import ThreadWakeup

# Generous: a loaded 2-core machine; a blocking wake-up would take the whole
# time the event loop is kept busy (BUSY_SECONDS) instead.
WAKE_SECONDS = 0.5
BUSY_SECONDS = 1.5


async def test_a_thread_wakes_a_busy_loop_without_waiting_for_it() -> None:
    """While the event loop is busy, many wake-ups from a thread return at once,
    and the task's next wait then returns."""
    wakeup = ThreadWakeup()
    took: list[float] = []

    def wake_many() -> None:
        started = time.monotonic()
        for _ in range(1000):
            wakeup.wake()

        took.append(time.monotonic() - started)

    try:
        thread = threading.Thread(target=wake_many)
        thread.start()
        # The event loop is kept busy: it runs nothing else meanwhile.
        time.sleep(BUSY_SECONDS)  # noqa: ASYNC251
        thread.join(timeout=10)

        assert took and took[0] < WAKE_SECONDS
        with anyio.fail_after(5):
            await wakeup.wait()
    finally:
        wakeup.close()


async def test_a_wait_returns_only_after_a_new_wake_up() -> None:
    """A wake-up is used up by one wait; the next wait sleeps until woken."""
    wakeup = ThreadWakeup()
    try:
        wakeup.wake()
        with anyio.fail_after(5):
            await wakeup.wait()

        with anyio.move_on_after(0.2) as idle:
            await wakeup.wait()

        assert idle.cancelled_caught
        threading.Timer(0.05, wakeup.wake).start()
        with anyio.fail_after(5):
            await wakeup.wait()
    finally:
        wakeup.close()


def test_wake_after_close_does_nothing() -> None:
    """pysyncobj's thread may apply an entry while the relay stops."""
    wakeup = ThreadWakeup()
    wakeup.close()
    wakeup.wake()
