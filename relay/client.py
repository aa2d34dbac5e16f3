"""One connected client, as the relay's state sees it (no sockets here)."""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay.outbox import Outbox
from relay.protocol import Wire

if TYPE_CHECKING:
    from relay.room import Room

# Attributes the relay owns; clients may not set them as custom attributes.
RESERVED_CLIENT_ATTRIBUTES = frozenset({"id", "ip", "port", "room"})


class Client:
    """A connection's identity, attributes, room and outgoing queue.

    Args:
        ip: the peer's address.
        port: the peer's port.
        outbox: where frames for this client wait for its writer.
        drop: ends the connection, with the reason to log.
    """

    def __init__(
        self, ip: str, port: int, outbox: Outbox, drop: Callable[[str], None]
    ) -> None:
        self.id = f"{ip}:{port}"
        self.ip = ip
        self.port = port
        self.outbox = outbox
        self.custom: dict[str, Any] = {}
        self.room: Room | None = None
        self.refusals = 0
        self.errors_sent = 0
        self.is_gone = False
        self.connected_at = time.time()
        # The login identity the connection was granted under; set by the login
        # step once it exists, and matched against "login:" bans then.
        self.login: str | None = None
        # Traffic since the connection opened, sampled by the console for rates:
        # frames handled and their bytes in, frames queued and bytes written out.
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        self._drop = drop

    def __repr__(self) -> str:
        return f"Client({self.id!r})"

    def attributes(self) -> dict[str, Any]:
        """All attributes, as LIST_CLIENTS and the accept announcement report them."""
        return {
            "id": self.id,
            "ip": self.ip,
            "port": self.port,
            "room": self.room.name if self.room is not None else None,
            **self.custom,
        }

    def send(self, wire: Wire) -> None:
        """Queue a frame for this client; a client too far behind is dropped."""
        self.frames_out += 1
        if not self.outbox.push(wire):
            self.drop(
                f"backpressure: a {len(wire)}-byte frame would exceed the "
                f"{self.outbox.budget}-byte outgoing budget "
                f"({self.outbox.queued_bytes} bytes already waiting)"
            )

    def drop(self, reason: str) -> None:
        """End this client's connection; it leaves its room as on a disconnect."""
        self.outbox.close()
        self._drop(reason)
