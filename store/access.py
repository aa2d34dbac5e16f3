"""Rows of who may connect: the address leases GitHub logins grant. Plain
functions over one connection, like :mod:`store.repository`."""

from dataclasses import dataclass

import sqlite_utils


@dataclass(frozen=True)
class LeaseRecord:
    """Permission for one address to connect, granted by a GitHub login."""

    address: str
    login: str
    granted_at: float
    expires_at: float
    via: str
    """How it was granted: "browser", "device" or an operator's action."""


def save_lease(db: sqlite_utils.Database, lease: LeaseRecord) -> None:
    """Insert a lease, replacing the address's previous one."""
    db.execute(
        "INSERT OR REPLACE INTO leases (address, login, granted_at, expires_at, via) "
        "VALUES (?, ?, ?, ?, ?)",
        [lease.address, lease.login, lease.granted_at, lease.expires_at, lease.via],
    )


def delete_lease(db: sqlite_utils.Database, address: str) -> None:
    """Remove an address's lease, if it has one."""
    db.execute("DELETE FROM leases WHERE address = ?", [address])


def load_leases(db: sqlite_utils.Database, now: float) -> list[LeaseRecord]:
    """Return the leases that have not expired at ``now``, oldest first."""
    rows = db.execute(
        "SELECT address, login, granted_at, expires_at, via FROM leases "
        "WHERE expires_at > ? ORDER BY granted_at",
        [now],
    ).fetchall()
    return [LeaseRecord(*row) for row in rows]
