"""A device login (RFC 8628) as the relay sees it: GitHub's code, and each poll's
outcome. Apart from the GitHub client, so that a relay that requires no login
does not load authlib and its JOSE stack (about a tenth of a second at start)."""

from dataclasses import dataclass, field
from enum import StrEnum


class DeviceState(StrEnum):
    """Where a device login stands after one token request."""

    GRANTED = "granted"
    PENDING = "pending"
    SLOW_DOWN = "slow_down"
    EXPIRED = "expired"
    DENIED = "denied"


@dataclass(frozen=True)
class DeviceCode:
    """GitHub's answer to a device login request."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DevicePoll:
    """One device token request's outcome; ``token`` is set once granted."""

    state: DeviceState
    token: str = field(default="", repr=False)
