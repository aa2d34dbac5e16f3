"""Bans: subjects (an address, or a login once login exists) refused new
connections until a time; kept in the store so that they survive a restart."""

import time
from datetime import UTC, datetime

from relay.cluster import ClusterLink
from relay.control import Ban
from relay.leases import normalize_address
from store.operators import BanRecord
from store.store import Store


def address_subject(ip: str) -> str:
    """The ban subject of a peer address, normalised as leases are (an IPv4 peer
    of a dual-stack socket is its IPv4 address)."""
    # Known limit: without login, a ban by address also refuses everyone else
    # who reaches the relay from that address (a studio behind one NAT).
    return f"address:{normalize_address(ip)}"


def login_subject(login: str) -> str:
    """The ban subject of a login identity."""
    return f"login:{login}"


class BanList:
    """The bans in force, persisted through the store when there is one.

    Args:
        store: where bans are written; None keeps them in memory only.
        cluster: this node's Raft link; then bans set and lifted here are
            proposed to the cluster instead, whose applier writes them.
    """

    def __init__(self, store: Store | None, cluster: ClusterLink | None = None) -> None:
        self._store = store
        self._cluster = cluster
        self._bans: dict[str, Ban] = {}

    def load(self, records: list[BanRecord]) -> None:
        """Take the bans the store kept (at start-up); expired ones are lifted."""
        for record in records:
            self._bans[record.subject] = Ban(
                record.subject, record.until, record.reason, record.operator
            )

        self.active()

    def add(self, ban: Ban) -> None:
        """Put a ban in force (replacing one on the same subject)."""
        self._bans[ban.subject] = ban
        record = BanRecord(ban.subject, ban.until, ban.reason, ban.operator)
        if self._cluster is not None:
            self._cluster.propose_ban(record)
        elif self._store is not None:
            self._store.save_ban(record)

    def lift(self, subject: str) -> Ban | None:
        """Lift the ban on a subject; return it, or None when there was none."""
        ban = self._bans.pop(subject, None)
        if ban is None:
            return None

        if self._cluster is not None:
            self._cluster.propose_lift(subject)
        elif self._store is not None:
            self._store.delete_ban(subject)

        return ban

    def set_replicated(self, record: BanRecord) -> None:
        """Put in force a ban another node set (the applier wrote its row)."""
        self._bans[record.subject] = Ban(
            record.subject, record.until, record.reason, record.operator
        )

    def lift_replicated(self, subject: str) -> None:
        """Lift a ban another node lifted (the applier deleted its row)."""
        self._bans.pop(subject, None)

    def active(self) -> list[Ban]:
        """Return the bans in force, lifting those that have expired."""
        now = time.time()
        for ban in [ban for ban in self._bans.values() if ban.until <= now]:
            self._expire(ban.subject)

        return sorted(self._bans.values(), key=lambda ban: ban.subject)

    def refusal(self, ip: str, login: str | None) -> str | None:
        """Return why a connection from ``ip`` (granted ``login``) is refused, or
        None when no ban in force applies."""
        now = time.time()
        subjects = [address_subject(ip)]
        if login is not None:
            subjects.append(login_subject(login))

        for subject in subjects:
            ban = self._bans.get(subject)
            if ban is not None and ban.until > now:
                until = datetime.fromtimestamp(ban.until, UTC).isoformat(
                    timespec="seconds"
                )
                return f"banned from this relay until {until} ({ban.reason})"

        return None

    def _expire(self, subject: str) -> None:
        self._bans.pop(subject, None)
        # Every node expires a ban by its own clock, so nothing is proposed.
        # Known limit: on a cluster node an expired ban's row stays in the bans
        # table (it is ignored at start-up like any expired ban).
        if self._cluster is None and self._store is not None:
            self._store.delete_ban(subject)
