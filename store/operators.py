"""Rows of the operator's records: the audit log and the bans.

Plain functions over one connection, like :mod:`store.repository`: the journal
writes through them from its thread, the store reads through them at start-up.
"""

from dataclasses import dataclass

import sqlite_utils


@dataclass(frozen=True)
class AuditRecord:
    """One operator action, as the audit table keeps it."""

    at: float
    operator: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True)
class BanRecord:
    """A refusal of new connections from one subject until a time."""

    subject: str
    until: float
    reason: str
    operator: str


def save_audit(db: sqlite_utils.Database, entry: AuditRecord) -> None:
    """Append an entry to the audit log."""
    db.execute(
        "INSERT INTO audit (at, operator, action, target, detail) "
        "VALUES (?, ?, ?, ?, ?)",
        [entry.at, entry.operator, entry.action, entry.target, entry.detail],
    )


def load_audit(db: sqlite_utils.Database, limit: int) -> list[AuditRecord]:
    """Return the newest ``limit`` entries, oldest first."""
    rows = db.execute(
        "SELECT at, operator, action, target, detail FROM audit "
        "ORDER BY id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [AuditRecord(*row) for row in reversed(rows)]


def save_ban(db: sqlite_utils.Database, ban: BanRecord) -> None:
    """Insert or replace the ban on a subject."""
    db.execute(
        "INSERT INTO bans (subject, until, reason, operator) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (subject) DO UPDATE SET until = excluded.until, "
        "reason = excluded.reason, operator = excluded.operator",
        [ban.subject, ban.until, ban.reason, ban.operator],
    )


def delete_ban(db: sqlite_utils.Database, subject: str) -> None:
    """Lift the ban on a subject (nothing happens when there is none)."""
    db.execute("DELETE FROM bans WHERE subject = ?", [subject])


def load_bans(db: sqlite_utils.Database) -> list[BanRecord]:
    """Return every ban, expired ones included."""
    rows = db.execute(
        "SELECT subject, until, reason, operator FROM bans ORDER BY subject"
    ).fetchall()
    return [BanRecord(*row) for row in rows]
