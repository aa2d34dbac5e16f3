"""How the admin commands show names and leases as text, the same on the relay's
machine and from a running relay."""

import time

from store.access import LeaseRecord


def printable(text: str) -> str:
    """The text as is, or quoted with escapes if it holds control characters."""
    return text if text.isprintable() else ascii(text)


def format_leases(leases: list[LeaseRecord]) -> str:
    """The leases as text, one line each."""
    if not leases:
        return "no lease in force\n"

    lines = [
        f"{lease.address:<40} {printable(lease.login):<39} {lease.via:<8} until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(lease.expires_at))}"
        for lease in leases
    ]
    return "\n".join(lines) + "\n"
