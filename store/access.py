"""Rows of who may connect and what operators did: address leases and the audit
log. Plain functions over one connection, like :mod:`store.repository`."""

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


@dataclass(frozen=True)
class AuditRecord:
    """One grant, revocation or operator action, as the audit log keeps it."""

    at: float
    operator: str
    action: str
    target: str
    detail: str


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


def insert_audit(db: sqlite_utils.Database, entry: AuditRecord) -> None:
    """Append one entry to the audit log."""
    db.execute(
        "INSERT INTO audit_log (at, operator, action, target, detail) "
        "VALUES (?, ?, ?, ?, ?)",
        [entry.at, entry.operator, entry.action, entry.target, entry.detail],
    )


def load_audit(db: sqlite_utils.Database, limit: int) -> list[AuditRecord]:
    """Return the newest ``limit`` entries, newest first."""
    rows = db.execute(
        "SELECT at, operator, action, target, detail FROM audit_log "
        "ORDER BY id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [AuditRecord(*row) for row in rows]
