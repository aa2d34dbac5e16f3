"""Leases and the audit log in the store: the migration that adds them, and their
rows through the journal and the admin commands."""

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from store.access import AuditRecord, LeaseRecord
from store.admin import AdminStore
from store.errors import NotFound
from store.schema import SCHEMA_VERSION, open_database
from store.store import DATABASE_NAME, Store, StoreOptions


def test_version_1_database_gains_leases_and_audit_log(tmp_path: Path) -> None:
    """A database written before login existed is migrated in place: its rooms
    stay, and the lease and audit tables appear."""
    path = tmp_path / DATABASE_NAME
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA application_id = 1297630034")
        db.execute(
            "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "blender_version TEXT, mixer_version TEXT, ignore_version_check "
            "INTEGER, generic_protocol INTEGER, keep_open INTEGER, joinable "
            "INTEGER, custom TEXT NOT NULL, created_at FLOAT)"
        )
        db.execute("INSERT INTO rooms (id, name, custom) VALUES (1, 'kept', '{}')")
        db.execute("PRAGMA user_version = 1")
        db.commit()

    db = open_database(path, cache_bytes=1 << 20)
    tables = set(db.table_names())
    rooms = db.execute("SELECT name FROM rooms").fetchall()
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.conn.close()

    assert SCHEMA_VERSION == 2
    assert {"leases", "audit_log"} <= tables
    assert rooms == [("kept",)]
    assert version == 2


async def test_leases_and_audit_entries_persist(tmp_path: Path) -> None:
    """Leases and audit entries queued through the store are on disk after a
    reopen; an expired lease is not loaded; a deleted one is gone."""
    now = time.time()
    store = Store.open(tmp_path, StoreOptions())
    store.save_lease(LeaseRecord("10.0.0.5", "alice", now, now + 60, "browser"))
    store.save_lease(LeaseRecord("10.0.0.6", "bob", now - 90, now - 30, "device"))
    store.save_lease(LeaseRecord("10.0.0.7", "carol", now, now + 60, "browser"))
    store.delete_lease("10.0.0.7")
    store.record_audit(AuditRecord(now, "alice", "lease.grant", "10.0.0.5", ""))
    assert store.close(timeout=10)

    reopened = Store.open(tmp_path, StoreOptions())
    leases = reopened.load_leases(time.time())
    audit = await reopened.audit_log(10)
    assert reopened.close(timeout=10)

    assert [(lease.address, lease.login) for lease in leases] == [("10.0.0.5", "alice")]
    assert [(entry.operator, entry.action) for entry in audit] == [
        ("alice", "lease.grant")
    ]


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
        audit = db.execute("SELECT operator, action, target FROM audit_log").fetchall()

    assert revoked.login == "alice"
    assert remaining == []
    assert audit == [("local:ops", "lease.revoke", "10.0.0.5")]
