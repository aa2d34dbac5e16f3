"""The audit log: every operator action, who did it, kept in the store."""

import time
from collections import deque

from relay.cluster import ClusterLink
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
        cluster: this node's Raft link; then entries are proposed to the
            cluster instead, whose applier writes them on every node.
    """

    def __init__(
        self, store: Store | None, events: EventLog, cluster: ClusterLink | None = None
    ) -> None:
        self._store = store
        self._cluster = cluster
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
        record = AuditRecord(entry.at, operator, action, target, detail)
        if self._cluster is not None:
            self._cluster.propose_audit(record)
        elif self._store is not None:
            self._store.save_audit(record)

        self._show(entry, room=room, client_id=client_id)
        return entry

    def add_replicated(self, record: AuditRecord) -> AuditEntry:
        """Take an entry another node recorded (the applier wrote its row)."""
        # Known limit: an entry applied while this node was starting can be
        # both loaded from the store and delivered, and then shows twice in
        # memory (the audit table holds it once).
        entry = AuditEntry(
            record.at, record.operator, record.action, record.target, record.detail
        )
        self._entries.append(entry)
        self._show(entry)
        return entry

    def _show(
        self,
        entry: AuditEntry,
        *,
        room: str | None = None,
        client_id: str | None = None,
    ) -> None:
        detail = f" ({entry.detail})" if entry.detail else ""
        text = f"{entry.operator}: {entry.action} {entry.target}{detail}"
        self._events.record("operator", text, room=room, client_id=client_id)

    def newest(self, limit: int) -> list[AuditEntry]:
        """Return up to ``limit`` entries, newest first."""
        entries = list(self._entries)
        entries.reverse()
        return entries[: max(limit, 0)]
