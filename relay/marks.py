"""Rooms marked for some later work, with a wake-up for the task that does it."""

import anyio

from relay.room import Room


class RoomMarks:
    """A set of rooms, in marking order, and an event set while it is not empty.

    The broadcaster marks rooms as commands arrive (cheaply: once per room until
    the marks are taken); a background task waits for the first mark, lets more
    accumulate, then takes them all.
    """

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._marked = anyio.Event()

    def __bool__(self) -> bool:
        return bool(self._rooms)

    def mark(self, room: Room) -> None:
        """Mark a room (again marking one already marked changes nothing)."""
        if room.name not in self._rooms:
            if not self._rooms:
                self._marked.set()

            self._rooms[room.name] = room

    def unmark(self, room: Room) -> bool:
        """Forget a room's mark; return whether it was marked."""
        return self._rooms.pop(room.name, None) is not None

    async def wait(self) -> None:
        """Wait until some room is marked."""
        await self._marked.wait()

    def take(self) -> list[Room]:
        """Return the marked rooms and clear every mark."""
        rooms = list(self._rooms.values())
        self._rooms = {}
        self._marked = anyio.Event()
        return rooms
