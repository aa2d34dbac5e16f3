"""Waking an event-loop task from another thread without ever blocking that thread.

anyio's portals (``BlockingPortal.start_task_soon``, ``from_thread.run_sync``)
make the calling thread wait until the event loop has run what it was given.
pysyncobj's thread must not wait for a busy event loop: it sends the heartbeats
that keep the cluster's leader, and a stall of a few hundred milliseconds under
load costs an election. A :class:`ThreadWakeup` instead writes one byte to a
socket pair, and the task that waits on it sleeps until the socket is readable.
"""

import socket
import threading

import anyio


class ThreadWakeup:
    """One task's wake-up call, made from any thread in constant time.

    Wake-ups made before the task waits, or while it is busy, are not lost:
    they make its next :meth:`wait` return at once, and many of them count as
    one.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._is_pending = False
        self._is_closed = False

    def wake(self) -> None:
        """Make the task's next :meth:`wait` return (any thread; never blocks)."""
        with self._lock:
            if self._is_pending or self._is_closed:
                return

            self._is_pending = True
            try:
                self._writer.send(b"\0")
            except BlockingIOError:
                pass  # the socket is full of earlier bytes: the task wakes anyway

    async def wait(self) -> None:
        """Sleep until woken (the event loop; one task only).

        Whatever the waker did before this returns is visible to the caller;
        a wake-up made after it returns makes the next call return.
        """
        await anyio.wait_readable(self._reader)
        with self._lock:
            self._is_pending = False
            try:
                while self._reader.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Close the socket pair; later wake-ups do nothing."""
        with self._lock:
            self._is_closed = True
            self._reader.close()
            self._writer.close()
