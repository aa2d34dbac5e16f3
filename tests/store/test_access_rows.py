"""Leases in the store, through the journal and the admin commands (the
migration that adds them is in test_schema.py)."""

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from store.access import LeaseRecord
from store.admin import AdminStore
from store.errors import NotFound
from store.store import DATABASE_NAME, Store, StoreOptions


def test_leases_persist(tmp_path: Path) -> None:
    """Leases queued through the store are on disk after a reopen; an expired
    lease is not loaded; a deleted one is gone."""
    now = time.time()
    store = Store.open(tmp_path, StoreOptions())
    store.save_lease(LeaseRecord("10.0.0.5", "alice", now, now + 60, "browser"))
    store.save_lease(LeaseRecord("10.0.0.6", "bob", now - 90, now - 30, "device"))
    store.save_lease(LeaseRecord("10.0.0.7", "carol", now, now + 60, "browser"))
    store.delete_lease("10.0.0.7")
    assert store.close(timeout=10)

    reopened = Store.open(tmp_path, StoreOptions())
    leases = reopened.load_leases(time.time())
    assert reopened.close(timeout=10)

    assert [(lease.address, lease.login) for lease in leases] == [("10.0.0.5", "alice")]


def test_admin_revokes_a_lease_with_an_audit_entry(tmp_path: Path) -> None:
    """The admin store revokes a lease and writes who did it, in one go; an
    address without a lease is NotFound."""
    now = time.time()
    store = Store.open(tmp_path, StoreOptions())
    store.save_lease(LeaseRecord("10.0.0.5", "alice", now, now + 60, "browser"))
    assert store.close(timeout=10)

    with AdminStore.open(tmp_path) as admin:
        revoked = admin.revoke_lease("10.0.0.5", "local:ops", time.time())
        remaining = admin.list_leases(time.time())
        with pytest.raises(NotFound):
            admin.revoke_lease("10.0.0.9", "local:ops", time.time())

    with closing(sqlite3.connect(tmp_path / DATABASE_NAME)) as db:
        audit = db.execute("SELECT operator, action, target FROM audit").fetchall()

    assert revoked.login == "alice"
    assert remaining == []
    assert audit == [("local:ops", "lease.revoke", "10.0.0.5")]
