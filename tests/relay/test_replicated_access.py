"""A cluster node's leases, bans and audit log follow what other nodes applied."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.broadcaster import Broadcaster
from relay.cluster import ClusterLink
from relay.leases import LeaseBook
from store.access import LeaseRecord
from store.apply import AuditAppended, BanLifted, BanSet, LeaseGranted, LeaseRevoked
from store.operators import AuditRecord, BanRecord
from store.store import Store, StoreOptions

HERE = "127.0.0.1:7001"
THERE = "127.0.0.1:7002"
LEASE = LeaseRecord("10.0.0.5", "octocat", 100.0, 4.0e9, "browser")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Broadcaster, LeaseBook, list[str]]]:
    """A clustered broadcaster (its link not started) with a lease book."""
    store = Store.open(tmp_path, StoreOptions())
    link = ClusterLink(HERE, store)
    broadcaster = Broadcaster(store, cluster=link)
    revoked: list[str] = []
    leases = LeaseBook(store, 3600.0, on_revoke=revoked.append, cluster=link)
    broadcaster.leases = leases
    yield broadcaster, leases, revoked
    store.close(timeout=5)


def test_another_nodes_lease_is_granted_and_revoked_here(node) -> None:
    """A lease another node granted lets its address in here; its revocation
    ends it and closes the address's connections here."""
    broadcaster, leases, revoked = node
    broadcaster.apply_committed([LeaseGranted(THERE, LEASE)])

    assert leases.find("10.0.0.5") == LEASE

    broadcaster.apply_committed([LeaseRevoked(THERE, "10.0.0.5")])

    assert leases.find("10.0.0.5") is None
    assert revoked == ["10.0.0.5"]


def test_another_nodes_ban_and_audit_entry_take_effect_here(node) -> None:
    """A ban set elsewhere refuses the subject here until it is lifted; an
    audit entry recorded elsewhere is in this node's log with its own time."""
    broadcaster, _leases, _revoked = node
    ban = BanRecord("address:10.0.0.7", 4.0e9, "kicked by ops", "ops")
    entry = AuditRecord(12.5, "ops", "kick", "c1", "banned")
    broadcaster.apply_committed([BanSet(THERE, ban), AuditAppended(THERE, entry)])

    assert broadcaster.bans.refusal("10.0.0.7", None) is not None
    assert [(e.at, e.action) for e in broadcaster.audit.newest(5)] == [(12.5, "kick")]

    broadcaster.apply_committed([BanLifted(THERE, "address:10.0.0.7")])

    assert broadcaster.bans.refusal("10.0.0.7", None) is None


def test_own_changes_are_not_applied_twice(node) -> None:
    """This node's own grant, ban and audit entry were made in memory when they
    were made: their applied events change nothing here."""
    broadcaster, leases, revoked = node
    broadcaster.apply_committed(
        [
            LeaseGranted(HERE, LEASE),
            LeaseRevoked(HERE, "10.0.0.5"),
            BanSet(HERE, BanRecord("address:10.0.0.7", 4.0e9, "r", "ops")),
            AuditAppended(HERE, AuditRecord(1.0, "ops", "kick", "c1", "")),
        ]
    )

    assert leases.find("10.0.0.5") is None
    assert revoked == []
    assert broadcaster.bans.active() == []
    assert broadcaster.audit.newest(5) == []
