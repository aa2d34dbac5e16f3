"""How the admin commands show names and leases as text, the same on the relay's
machine and from a running relay."""

import time
from typing import Any

from store.access import LeaseRecord


def printable(text: str) -> str:
    """The text as is, or quoted with escapes if it holds control characters."""
    return text if text.isprintable() else ascii(text)


def parse_timestamp(value: Any) -> float:
    """A time, in seconds since the epoch, read from a relay's answer.

    Raises:
        ValueError: it is no number, or no time this computer can show (NaN,
            infinite, or too far from now for its clock: such as 1e999, which
            JSON readers take for infinity).
    """
    try:
        seconds = float(value)
        time.localtime(seconds)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"not a time: {value!r:.40}") from exc

    return seconds


def format_time(seconds: float) -> str:
    """A time as the commands show it, to the minute, in local time."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def format_leases(leases: list[LeaseRecord]) -> str:
    """The leases as text, one line each."""
    if not leases:
        return "no lease in force\n"

    lines = [
        f"{lease.address:<40} {printable(lease.login):<39} {lease.via:<8} until "
        f"{format_time(lease.expires_at)}"
        for lease in leases
    ]
    return "\n".join(lines) + "\n"
