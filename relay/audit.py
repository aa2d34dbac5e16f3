"""The audit log: lease grants and revocations, and what operators do.

Every entry goes through :func:`record`, which writes it to the store and logs
it, so that the audit log has one way in.
"""

import logging
import time

from store.access import AuditRecord
from store.store import Store

log = logging.getLogger(__name__)


def record(
    store: Store | None, operator: str, action: str, target: str, detail: str = ""
) -> AuditRecord:
    """Add one entry to the audit log (and the event log).

    Args:
        store: where the entry is kept; None keeps it in the event log only.
        operator: who acted: a GitHub login, or "relay" for the relay's own acts.
        action: what was done, such as "lease.grant" or "lease.revoke".
        target: what it was done to: an address, a login, a room.
        detail: anything else worth keeping, in words.
    """
    entry = AuditRecord(time.time(), operator, action, target, detail)
    log.info(
        "audit.recorded",
        extra={
            "operator": operator,
            "action": action,
            "target": target,
            "detail": detail,
        },
    )
    if store is not None:
        store.record_audit(entry)

    return entry
