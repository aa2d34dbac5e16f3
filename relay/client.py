"""One connected client, as the relay's state sees it (no sockets here)."""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay.outbox import Outbox
from relay.protocol import Wire

if TYPE_CHECKING:
    from relay.room import Room

# The attribute naming the GitHub account a connection was admitted under.
LOGIN_ATTRIBUTE = "github_login"

# What a script presents as its login; read by the admission, never kept.
TOKEN_ATTRIBUTE = "mixer_token"

# Attributes the relay owns or never keeps; clients may not set them as custom
# attributes (a token set later, after admission, is dropped the same way).
RESERVED_CLIENT_ATTRIBUTES = frozenset(
    {"id", "ip", "port", "room", LOGIN_ATTRIBUTE, TOKEN_ATTRIBUTE}
)


class Client:
    """A connection's identity, attributes, room and outgoing queue.

    Args:
        ip: the peer's address.
        port: the peer's port.
        outbox: where frames for this client wait for its writer.
        drop: ends the connection, with the reason to log.
        close: stops reading the connection and ends it once what is queued is
            written (the SEND_ERROR that says why).
    """

    def __init__(
        self,
        ip: str,
        port: int,
        outbox: Outbox,
        drop: Callable[[str], None],
        close: Callable[[str], None],
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
        # The GitHub login the connection was admitted under (None without
        # login); set by the admission, and matched against "login:" bans then.
        self.login: str | None = None
        # Traffic since the connection opened, sampled by the console for rates:
        # frames handled and their bytes in, frames queued and bytes written out.
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        self._drop = drop
        self._close = close

    def __repr__(self) -> str:
        return f"Client({self.id!r})"

    def attributes(self) -> dict[str, Any]:
        """All attributes, as LIST_CLIENTS and the accept announcement report them."""
        attributes = {
            "id": self.id,
            "ip": self.ip,
            "port": self.port,
            "room": self.room.name if self.room is not None else None,
        }
        # Present only under login, so that a relay without login says what the
        # original says.
        if self.login is not None:
            attributes[LOGIN_ATTRIBUTE] = self.login

        return {**attributes, **self.custom}

    def send(self, wire: Wire) -> None:
        """Queue a frame for this client; a client too far behind is dropped."""
        self.frames_out += 1
        if not self.outbox.push(wire):
            self.drop(
                f"backpressure: a {len(wire)}-byte frame would exceed the "
                f"{self.outbox.budget}-byte outgoing budget "
                f"({self.outbox.queued_bytes} bytes already waiting)"
            )

    def send_all(self, wires: list[Wire], size: int) -> None:
        """Queue frames for this client, in order, as :meth:`send` one by one
        would (``size`` is the sum of their lengths)."""
        if self.outbox.push_all(wires, size):
            self.frames_out += len(wires)
            return

        # Over the budget: frame by frame, so that the client is dropped at the
        # frame that does not fit, as it would be otherwise.
        for wire in wires:
            self.send(wire)

    def close(self, reason: str) -> None:
        """End this connection after writing what is queued for it."""
        self._close(reason)

    def drop(self, reason: str) -> None:
        """End this client's connection; it leaves its room as on a disconnect."""
        self.outbox.close()
        self._drop(reason)


# How a drop reason begins, and the kind the drops-by-reason metric counts it as.
_DROP_KINDS = (
    ("backpressure", "backpressure"),
    ("send stalled", "send_stalled"),
    ("a partial frame", "frame_timeout"),
    ("frame too large", "frame_too_large"),
    ("replaced", "replaced"),
    ("lease revoked", "lease_revoked"),
    ("login required", "login_required"),
    ("login refused", "login_refused"),
    ("banned", "banned"),
    ("kicked", "kicked"),
    ("room ", "room_deleted"),
)


def drop_kind(reason: str) -> str:
    """The kind of a drop reason, one of a few fixed words (for metrics)."""
    for prefix, kind in _DROP_KINDS:
        if reason.startswith(prefix):
            return kind

    return "other"
