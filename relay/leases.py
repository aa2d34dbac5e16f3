"""Leases: the addresses a GitHub login lets connect, until they expire.

The unmodified add-on cannot log in, so a login is tied to the address it was
made from: a browser or a terminal on the artist's machine logs in, and Blender
on the same machine may then connect. A lease lives in memory for the relay's
checks and in the store so that it survives a restart.
"""

import ipaddress
import logging
import time
from collections.abc import Callable

from relay.audit import AuditLog
from relay.cluster import ClusterLink
from store.access import LeaseRecord
from store.store import Store

log = logging.getLogger(__name__)

# Known limit: one lease per address, so artists whose machines share one address
# (behind NAT, or through a proxy) share one login, the last one made.


def normalize_address(address: str) -> str:
    """The address as leases are keyed: IPv4 clients of a dual-stack socket
    (``::ffff:10.0.0.5``) count as their IPv4 address."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address

    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)

    return str(parsed)


class LeaseBook:
    """The leases in force, kept in step with the store.

    Args:
        store: where leases persist (None: in memory only).
        ttl: seconds a new lease lasts.
        on_revoke: called with an address whose lease was revoked, to close that
            address's connections.
        audit: where grants and revocations are recorded (None: nowhere).
        clock: the time, in seconds since the epoch.
        cluster: this node's Raft link; then grants and revocations are
            proposed to the cluster instead, whose applier writes them.
    """

    def __init__(
        self,
        store: Store | None,
        ttl: float,
        on_revoke: Callable[[str], None] = lambda address: None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        cluster: ClusterLink | None = None,
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._audit = audit
        self._ttl = ttl
        self._leases: dict[str, LeaseRecord] = {}
        self.on_revoke = on_revoke
        self._clock = clock

    def restore(self) -> None:
        """Load the leases the store kept that have not expired (at start-up)."""
        if self._store is None:
            return

        for lease in self._store.load_leases(self._clock()):
            self._leases[lease.address] = lease

    def grant(self, address: str, login: str, via: str) -> LeaseRecord:
        """Let ``address`` connect as ``login`` for the lease time, replacing the
        address's previous lease."""
        now = self._clock()
        lease = LeaseRecord(
            normalize_address(address), login, now, now + self._ttl, via
        )
        self._leases[lease.address] = lease
        if self._cluster is not None:
            self._cluster.propose_lease(lease)
        elif self._store is not None:
            self._store.save_lease(lease)

        self._record(
            login, "lease.grant", lease.address, f"via {via}, for {self._ttl:g} s"
        )
        return lease

    def find(self, address: str) -> LeaseRecord | None:
        """The lease in force for ``address``, if any; an expired one is removed."""
        key = normalize_address(address)
        lease = self._leases.get(key)
        if lease is None:
            return None

        if lease.expires_at <= self._clock():
            self._forget(key)
            log.info("lease.expired", extra={"address": key, "login": lease.login})
            return None

        return lease

    def leases(self) -> list[LeaseRecord]:
        """Every lease in force, oldest first."""
        return sorted(
            (
                lease
                for lease in list(self._leases.values())
                if self.find(lease.address)
            ),
            key=lambda lease: lease.granted_at,
        )

    def revoke(self, address: str, *, operator: str) -> LeaseRecord | None:
        """End an address's lease and close its connections.

        Returns:
            The revoked lease, or None when the address had none (its connections
            are closed all the same).
        """
        key = normalize_address(address)
        lease = self._leases.get(key)
        self._forget(key)
        if self._cluster is not None:
            # Proposed even without a lease here: the other nodes close the
            # address's connections too.
            self._cluster.propose_revoke(key)

        self._record(
            operator,
            "lease.revoke",
            key,
            f"lease of {lease.login}" if lease else "no lease was in force",
        )
        self.on_revoke(key)
        return lease

    def revoke_login(self, login: str, *, operator: str) -> list[LeaseRecord]:
        """End every lease ``login`` holds; returns them."""
        held = [
            lease
            for lease in list(self._leases.values())
            if lease.login.lower() == login.lower()
        ]
        for lease in held:
            self.revoke(lease.address, operator=operator)

        return held

    def _record(self, operator: str, action: str, target: str, detail: str) -> None:
        # "lease.grant" is logged as "lease.granted", "lease.revoke" as "lease.revoked".
        log.info(
            action + "ed" if action.endswith("t") else action + "d",
            extra={"operator": operator, "address": target, "detail": detail},
        )
        if self._audit is not None:
            self._audit.record(operator, action, target, detail)

    def grant_replicated(self, lease: LeaseRecord) -> None:
        """Take a lease another node granted (the applier wrote its row)."""
        self._leases[lease.address] = lease

    def revoke_replicated(self, address: str) -> None:
        """End a lease another node revoked, and close the address's connections."""
        self._leases.pop(address, None)
        self.on_revoke(address)

    def _forget(self, address: str) -> None:
        is_held = self._leases.pop(address, None) is not None
        # Every node expires a lease by its own clock; only a single relay
        # deletes the row. Known limit: on a cluster node an expired lease's
        # row stays in the leases table (it is never loaded again).
        if is_held and self._cluster is None and self._store is not None:
            self._store.delete_lease(address)
