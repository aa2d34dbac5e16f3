"""Rooms: their attributes, members and history."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.history import History
from store.repository import ROOM_ATTRIBUTE_ORDER, RoomRecord, room_attributes

if TYPE_CHECKING:
    from relay.client import Client

# Attributes the relay owns; clients may not set them as custom attributes.
RESERVED_ROOM_ATTRIBUTES = frozenset(ROOM_ATTRIBUTE_ORDER)


@dataclass(eq=False)
class Room:
    """A named room: its attributes, members and history."""

    name: str
    blender_version: str
    mixer_version: str
    ignore_version_check: bool
    generic_protocol: bool
    creator: "Client | None"
    history: History
    store_id: int = 0
    created_at: float = 0.0
    grace_until: float | None = None
    """Set on a room restored at start-up that nobody has rejoined yet."""
    keep_open: bool = False
    is_joinable: bool = False
    custom: dict[str, Any] = field(default_factory=dict)
    commands_in: int = 0
    """Room commands received from members since the room was created or restored."""
    bytes_in: int = 0
    """Their payload bytes."""
    commands_out: int = 0
    """Room commands forwarded to members (one per receiving member)."""
    bytes_out: int = 0
    """Their payload bytes."""
    members: dict["Client", None] = field(default_factory=dict)
    joiners: set["Client"] = field(default_factory=set)

    def attributes(self) -> dict[str, Any]:
        """All attributes, as LIST_ROOMS and the first ROOM_UPDATE report them."""
        return room_attributes(self.record(), len(self.history), self.history.byte_size)

    def record(self) -> RoomRecord:
        """The room's row in the store (everything but its history)."""
        return RoomRecord(
            id=self.store_id,
            name=self.name,
            blender_version=self.blender_version,
            mixer_version=self.mixer_version,
            ignore_version_check=self.ignore_version_check,
            generic_protocol=self.generic_protocol,
            keep_open=self.keep_open,
            joinable=self.is_joinable,
            custom=dict(self.custom),
            created_at=self.created_at,
        )

    def statistics(self) -> dict[str, int]:
        """The attributes that change with every stored command."""
        return {"byte_size": self.history.byte_size, "command_count": len(self.history)}
