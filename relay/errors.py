"""The relay's exceptions, rooted in :class:`RelayError`."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.protocol import Frame


class RelayError(Exception):
    """Root of every error the relay raises on purpose."""


class ProtocolViolation(RelayError):
    """Raised when a peer sends bytes that break the wire protocol.

    A violation of the framing ends the connection; a violation inside one payload
    is answered with SEND_ERROR and the connection stays up.
    """


class FrameTooLarge(ProtocolViolation):
    """Raised when a frame header declares a payload above the configured maximum.

    Attributes:
        frames: the whole frames that came before that header in the same bytes
            which are as valid as any others.
    """

    def __init__(self, declared: int, maximum: int, frames: "list[Frame]") -> None:
        super().__init__(
            f"frame declares {declared} payload bytes, the limit is {maximum}"
        )
        self.declared = declared
        self.maximum = maximum
        self.frames = frames


class MalformedPayload(ProtocolViolation):
    """Raised when a payload does not hold the values its message type requires."""


class ConfigError(RelayError):
    """Raised when environment variables hold values the relay cannot use.

    The message lists every bad variable at once, not only the first.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("bad configuration: " + "; ".join(problems))
        self.problems = problems


class RequestRefused(RelayError):
    """Raised when a well-formed request cannot be carried out (the room does not
    exist, the versions differ, ...); the client gets SEND_ERROR with the message."""


class AuthError(RelayError):
    """Root of the login errors; messages are shown to people, so they never hold
    a token, a code or a secret."""


class LoginFailed(AuthError):
    """Raised when a login could not be completed: GitHub unreachable or refusing,
    a code or token not accepted, a state that does not match."""


class LoginRefused(AuthError):
    """Raised when GitHub vouched for an account that this relay does not let in."""
