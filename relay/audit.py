"""The audit log: every operator action, who did it, kept in the store."""

import time
from collections import deque

from relay.control import AuditEntry
from relay.events import EventLog
from store.operators import AuditRecord
from store.store import Store

# Entries kept in memory (and loaded at start-up); older ones stay in the store.
# Known limit: consoles see only the newest 1000 entries; older ones are kept in
# the store's audit table but can only be read from the database file.
AUDIT_MEMORY_ENTRIES = 1000


class AuditLog:
    """Records operator actions in memory, in the store and in the event log.

    Args:
        store: where entries are written; None keeps them in memory only.
        events: the event log that also shows each action.
    """

    def __init__(self, store: Store | None, events: EventLog) -> None:
        self._store = store
        self._events = events
        self._entries: deque[AuditEntry] = deque(maxlen=AUDIT_MEMORY_ENTRIES)

    def load(self, records: list[AuditRecord]) -> None:
        """Take the newest entries the store kept, oldest first (at start-up)."""
        self._entries.extend(
            AuditEntry(r.at, r.operator, r.action, r.target, r.detail) for r in records
        )

    def record(
        self,
        operator: str,
        action: str,
        target: str,
        detail: str = "",
        *,
        room: str | None = None,
        client_id: str | None = None,
    ) -> AuditEntry:
        """Record one action and return its entry."""
        entry = AuditEntry(time.time(), operator, action, target, detail)
        self._entries.append(entry)
        if self._store is not None:
            self._store.save_audit(
                AuditRecord(entry.at, operator, action, target, detail)
            )

        text = f"{operator}: {action} {target}" + (f" ({detail})" if detail else "")
        self._events.record("operator", text, room=room, client_id=client_id)
        return entry

    def newest(self, limit: int) -> list[AuditEntry]:
        """Return up to ``limit`` entries, newest first."""
        entries = list(self._entries)
        entries.reverse()
        return entries[: max(limit, 0)]
