"""A client's outgoing queue: bounded by bytes, drained by one writer, in order."""

import mmap
from collections import deque
from collections.abc import Awaitable
from typing import Protocol

import anyio

from relay.protocol import Wire

# Fewer buffers than Linux's IOV_MAX (1024) per sendmsg call.
MAX_BATCH_BUFFERS = 512
MAX_BATCH_BYTES = 4 * 1024 * 1024


class Replay(Protocol):
    """A stream of frames produced on demand (a room's history for a joiner)."""

    def next_batch(self, max_bytes: int) -> Awaitable[list[Wire]]:
        """Return the next frames, about ``max_bytes`` of them; [] once finished."""
        ...

    def finish(self) -> None:
        """Called once, after the last batch was handed to the socket."""
        ...


class Outbox:
    """Frames waiting to be written to one client, oldest first.

    Frames are the shared wire bytes of a message: queueing one for many clients
    copies nothing. Only queued frames count against the budget; a replay item
    streams its frames lazily and holds none of them here.

    Args:
        budget: the bytes that may wait here; a push beyond it is refused, except
            into an empty queue, so one frame larger than the budget still passes.
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._items: deque[Wire | Replay] = deque()
        self._queued_bytes = 0
        self._waiter: anyio.Event | None = None
        self._is_closed = False
        self._replays = 0

    @property
    def budget(self) -> int:
        """The bytes that may wait here before the client is too slow to keep."""
        return self._budget

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames waiting here (replays not counted)."""
        return self._queued_bytes

    @property
    def is_closed(self) -> bool:
        """Tell whether the outbox takes no more frames."""
        return self._is_closed

    def push(self, wire: Wire) -> bool:
        """Queue one frame.

        Returns:
            False when the frame would take the queue over its budget; the frame
            is not queued and the client is too slow to keep.
        """
        if self._is_closed:
            return True

        size = len(wire)
        if self._queued_bytes + size > self._budget and self._queued_bytes:
            return False

        self._items.append(wire)
        self._queued_bytes += size
        self._wake()
        return True

    def push_all(self, wires: list[Wire], size: int) -> bool:
        """Queue frames, in order, if all of them fit in the budget.

        Args:
            wires: the frames.
            size: the sum of their lengths.

        Returns:
            False when they do not all fit (even into an empty queue); none of
            them is queued then, and the caller pushes them one by one.
        """
        if self._is_closed:
            return True

        if self._queued_bytes + size > self._budget:
            return False

        self._items.extend(wires)
        self._queued_bytes += size
        self._wake()
        return True

    def push_replay(self, replay: Replay) -> None:
        """Queue a replay: frames pushed after it leave after all of its frames."""
        if self._is_closed:
            return

        self._items.append(replay)
        self._replays += 1
        self._wake()

    def cancel_replays(self) -> None:
        """Forget every queued replay that has not finished (the client left)."""
        self._items = deque(item for item in self._items if not _is_replay(item))
        self._replays = 0

    def close(self) -> None:
        """Take no more frames; what is queued may still be written."""
        self._is_closed = True
        self._wake()

    def discard(self) -> None:
        """Close the outbox and forget everything queued (the connection is gone)."""
        self.close()
        self._items.clear()
        self._queued_bytes = 0
        self._replays = 0

    def take(self) -> list[Wire] | Replay | None:
        """Remove and return the next run of frames, or the replay at the head.

        Returns:
            A batch of frames (bounded in count and bytes), the replay that must
            be streamed before anything else, or None when nothing is queued.
        """
        items = self._items
        if not items:
            return None

        if self._replays:
            head = items[0]
            if _is_replay(head):
                return head  # type: ignore[return-value]

        # Without a replay queued, every item is a frame: no type test per frame.
        batch: list[Wire] = []
        batch_bytes = 0
        while (
            items and len(batch) < MAX_BATCH_BUFFERS and batch_bytes < MAX_BATCH_BYTES
        ):
            if self._replays and _is_replay(items[0]):
                break

            wire: Wire = items.popleft()  # type: ignore[assignment]
            batch.append(wire)
            batch_bytes += len(wire)

        self._queued_bytes -= batch_bytes
        return batch

    def finish_replay(self, replay: Replay) -> None:
        """Remove a replay from the head once its last batch has been written."""
        if self._items and self._items[0] is replay:
            self._items.popleft()
            self._replays -= 1

        replay.finish()

    async def wait(self) -> None:
        """Wait until something is queued or the outbox is closed."""
        if self._items or self._is_closed:
            return

        self._waiter = anyio.Event()
        await self._waiter.wait()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None


def _is_replay(item: object) -> bool:
    return not isinstance(item, bytes | bytearray | mmap.mmap)
