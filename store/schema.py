"""The database file: how it is recognised, created and migrated.

A mixer-console database carries ``PRAGMA application_id`` = :data:`APPLICATION_ID`
and its schema version in ``PRAGMA user_version``. Opening checks both before
writing anything, so another program's file, or a file from a newer version, is
refused and left as it was.
"""

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from store.errors import NewerSchema, NotOurDatabase, StoreError, Unopenable

APPLICATION_ID = 0x4D584352  # "MXCR"
SCHEMA_VERSION = 6

# The page size of a new database file (an existing file keeps its own). SQLite
# writes every page twice, to the WAL and at each checkpoint back into the file,
# a system call or two per page each time: with 4 KiB pages the writer spent
# most of its time, on a core the relay shares, in those calls. Measured alone
# on this machine, 16 KiB pages took 38 % less CPU per MB of 4 KiB commands and
# 64 KiB pages 59 % less, but a small transaction (the cluster commits each Raft
# entry on its own) cost 53 and 117 us instead of 31: 16 KiB is the middle.
PAGE_SIZE = 16384
# How much the WAL holds before a checkpoint writes it back, whatever the
# page size (SQLite's default is 1000 pages, 4 MB of 4 KiB pages).
CHECKPOINT_BYTES = 4 * 1024 * 1024


def _create_version_1(db: sqlite_utils.Database) -> None:
    db.table("rooms").create(
        {
            "id": int,
            "name": str,
            "blender_version": str,
            "mixer_version": str,
            "ignore_version_check": int,
            "generic_protocol": int,
            "keep_open": int,
            "joinable": int,
            "custom": str,
            "created_at": float,
        },
        pk="id",
        not_null={"name", "custom"},
        if_not_exists=True,
    )
    db.table("rooms").create_index(["name"], unique=True, if_not_exists=True)
    # seq is global and grows while a relay runs: it orders every room's history,
    # and a stored command keeps its number across restarts. Numbers freed by a
    # deleted room may be handed out again after a restart, which is harmless
    # since no replay cursor outlives the process.
    db.table("commands").create(
        {"seq": int, "room_id": int, "kind": int, "size": int, "wire": bytes},
        pk="seq",
        not_null={"room_id", "kind", "size", "wire"},
        foreign_keys=[("room_id", "rooms", "id")],
        if_not_exists=True,
    )
    db.table("commands").create_index(["room_id", "seq"], if_not_exists=True)


def _add_operator_records(db: sqlite_utils.Database) -> None:
    # Who sent each command and when, for the operator's history view; commands
    # stored before this step have neither (NULL).
    commands = db.table("commands")
    columns = commands.columns_dict
    if "sender" not in columns:
        commands.add_column("sender", str)

    if "at" not in columns:
        commands.add_column("at", float)

    db.table("audit").create(
        {
            "id": int,
            "at": float,
            "operator": str,
            "action": str,
            "target": str,
            "detail": str,
        },
        pk="id",
        not_null={"at", "operator", "action", "target", "detail"},
        if_not_exists=True,
    )
    db.table("bans").create(
        {"subject": str, "until": float, "reason": str, "operator": str},
        pk="subject",
        not_null={"until", "reason", "operator"},
        if_not_exists=True,
    )


def _add_leases(db: sqlite_utils.Database) -> None:
    # One lease per address: a new login from an address replaces the old lease.
    db.table("leases").create(
        {
            "address": str,
            "login": str,
            "granted_at": float,
            "expires_at": float,
            "via": str,
        },
        pk="address",
        not_null={"login", "granted_at", "expires_at", "via"},
        if_not_exists=True,
    )


def _add_raft_apply_state(db: sqlite_utils.Database) -> None:
    # What a clustered node needs to apply the Raft log exactly once and in each
    # proposer's order: the index of the last applied entry, each proposer's
    # next entry number, entries committed ahead of a missing one, and the parts
    # of large commands not yet complete.
    db.table("raft_applied").create(
        {"id": int, "raft_index": int}, pk="id", if_not_exists=True
    )
    db.table("raft_streams").create(
        {"stream": str, "next_number": int}, pk="stream", if_not_exists=True
    )
    db.table("raft_held").create(
        {"stream": str, "number": int, "operations": bytes},
        pk=("stream", "number"),
        not_null={"operations"},
        if_not_exists=True,
    )
    db.table("raft_parts").create(
        {"command_key": str, "part": int, "data": bytes},
        pk=("command_key", "part"),
        not_null={"data"},
        if_not_exists=True,
    )


def _add_raft_next_seq(db: sqlite_utils.Database) -> None:
    # The next command number a clustered node hands out, kept with the applied
    # index: counted again from the commands left after a rewind or a deletion
    # cut the newest ones, a restarted node would number its next commands lower
    # than its peers do. NULL until the node applies an entry.
    applied = db.table("raft_applied")
    if "next_seq" not in applied.columns_dict:
        applied.add_column("next_seq", int)


def _add_command_runs(db: sqlite_utils.Database) -> None:
    # A row may hold a run of consecutive small commands (store/runs.py); count
    # says how many, and every row stored before this step holds one. The index
    # carries each row's count and size, so counting and measuring a history
    # reads only the index, never a row's overflow pages (count, a column added
    # last, sits after the wire bytes in each row).
    commands = db.table("commands")
    if "count" not in commands.columns_dict:
        commands.add_column("count", int, not_null_default=1)

    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_commands_room_id_seq_count_size "
        "ON commands (room_id, seq, count, size)"
    )
    db.execute("DROP INDEX IF EXISTS idx_commands_room_id_seq")


# Step N turns a version N-1 database into version N. Steps are idempotent: the
# library commits each table it creates, so a crash can leave a step half done.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _create_version_1,
    _add_operator_records,
    _add_leases,
    _add_raft_apply_state,
    _add_raft_next_seq,
    _add_command_runs,
]


def open_database(path: Path, cache_bytes: int) -> sqlite_utils.Database:
    """Open (creating or migrating as needed) the database at ``path``.

    Args:
        path: the SQLite file; its folder is created if missing.
        cache_bytes: SQLite's page cache for this connection.

    Raises:
        NotOurDatabase: the file is not SQLite, or belongs to another program.
        NewerSchema: the file was written by a newer version.
        Unopenable: SQLite cannot open or write the file (a folder in its
            place, a full disk).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10
        )
    except sqlite3.Error as exc:
        raise database_error(path, exc) from exc

    try:
        db = sqlite_utils.Database(connection)
        _check_identity(db, path)
        # Known limit: a file created before PAGE_SIZE keeps its 4 KiB pages (WAL
        # mode cannot change them), and its writer the higher CPU cost; exporting
        # its rooms and importing them into a new data folder gives larger pages.
        if not db.table_names():
            # Only takes effect on a file SQLite has not written yet.
            db.execute(f"PRAGMA page_size = {PAGE_SIZE}")

        db.execute(f"PRAGMA cache_size = -{max(cache_bytes // 1024, 64)}")
        db.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        db.execute(
            f"PRAGMA wal_autocheckpoint = {max(CHECKPOINT_BYTES // page_size, 1)}"
        )
        # WAL with NORMAL syncs at checkpoints: a crash of the process loses
        # nothing committed, and the file is never left unreadable.
        db.execute("PRAGMA synchronous = NORMAL")
        _migrate(db)
    except sqlite3.Error as exc:
        connection.close()
        raise database_error(path, exc) from exc
    except Exception:
        connection.close()
        raise

    return db


def database_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The store's error for SQLite's ``exc`` about the database at ``path``: a
    file that is not a database, or one that cannot be opened or written."""
    # Only errors from SQLite itself carry a code; the low byte is its kind.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _NOT_A_DATABASE_CODES:
        return NotOurDatabase(f"{path} is not a readable SQLite database: {exc}")

    return Unopenable(f"{path} cannot be opened: {exc}")


_NOT_A_DATABASE_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def schema_version(db: sqlite_utils.Database) -> int:
    """Return the schema version recorded in the database."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check_identity(db: sqlite_utils.Database, path: Path) -> None:
    application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    if application_id == APPLICATION_ID:
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise NewerSchema(
                f"{path} has schema version {version}; this mixer-console reads "
                f"up to {SCHEMA_VERSION}: upgrade mixer-console to open it"
            )

        return

    if application_id != 0 or db.table_names():
        raise NotOurDatabase(
            f"{path} is a SQLite database of another program "
            f"(application id {application_id:#x}, tables: "
            f"{', '.join(db.table_names()) or 'none'}); refusing to touch it"
        )


def _migrate(db: sqlite_utils.Database) -> None:
    version = schema_version(db)
    for target, step in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        step(db)
        db.execute(f"PRAGMA user_version = {target}")
