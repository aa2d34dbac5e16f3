"""Raft snapshots that carry a node's whole database.

pysyncobj compacts its log by asking for a snapshot of the replicated state,
which for us is the node's SQLite database plus pysyncobj's own state in a side
table. With a custom serializer pysyncobj does not fork: it calls the serializer
on its own thread, and a copy of an 850 MB database there stopped a node's Raft
for seconds (benchmarks/cluster_bench.py: all three nodes compacted at the same
index, the leader lost its quorum and a new one was elected).

:class:`BackgroundSnapshot` therefore only pins the database on pysyncobj's
thread: it opens a read transaction, which in WAL mode sees the rows exactly as
of the applied index while the applier goes on writing. A thread then copies
that view with SQLite's backup API in steps, paced so that the copy leaves the
disk to the nodes' commits, into a file beside the snapshot. pysyncobj asks
:meth:`BackgroundSnapshot.state` on every tick; once the copy is whole, that
call renames it over the snapshot and reports success, and only then does
pysyncobj truncate its log. Each copy gets exactly one outcome; a failed one
(a full or failing disk) is reported only after a pause, since pysyncobj
starts the next copy on the tick after a failure.
"""

import logging
import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj import SERIALIZER_STATE  # type: ignore[import-untyped]

from store.errors import StoreError

log = logging.getLogger(__name__)

SNAPSHOT_STATE_TABLE = "snapshot_raft_state"

# Database pages copied per backup step, and the copy's pace. At 96 MB/s an
# 850 MB database takes about 9 s, a third of what this machine's disk writes,
# so three nodes on one disk compacting at once still leave room for commits.
STEP_PAGES = 256
PACE_BYTES_PER_SECOND = 96 * 1000 * 1000

# Seconds between a failed copy and the next attempt.
RETRY_SECONDS = 2.0


class SnapshotCorrupt(StoreError):
    """Raised when a snapshot received from the leader is not a whole database."""


class SnapshotAbandoned(Exception):
    """Raised inside a copy that was abandoned (a newer snapshot was installed,
    or the node is stopping)."""


class BackgroundSnapshot:
    """Writes snapshots of ``database`` to ``snapshot`` off pysyncobj's thread.

    Args:
        database: the node's SQLite file (in WAL mode).
        snapshot: pysyncobj's full dump file.
        pace: bytes per second the copy may read and write.
        retry_seconds: how long a failed copy is reported as still running,
            so that the next attempt waits that long.
    """

    def __init__(
        self,
        database: Path,
        snapshot: Path,
        pace: int = PACE_BYTES_PER_SECOND,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._database = database
        self._snapshot = snapshot
        self._partial = snapshot.with_name(snapshot.name + ".partial")
        self._pace = pace
        self._retry_seconds = retry_seconds
        self._copier: threading.Thread | None = None
        self._is_pending = False
        self._is_copied = False
        self._abandoned = threading.Event()
        self._applied_index = 0
        self._started = 0.0
        self._retry_at = 0.0

        # A copy that a crash interrupted is of no use.
        self._discard_partial()

    def begin(self, pysyncobj_file: str, raft_state: Any, applied_index: int) -> None:
        """pysyncobj's serializer: pin the database as of ``applied_index`` and
        start copying it (pysyncobj's thread, between two applied entries).

        pysyncobj renames ``pysyncobj_file`` over the snapshot as soon as this
        returns. It is removed here, so that rename fails (pysyncobj then leaves
        the outcome to :meth:`state`) and can never move a stale file into place.
        """
        Path(pysyncobj_file).unlink(missing_ok=True)
        self._is_pending = True
        self._abandoned.clear()
        self._is_copied = False
        self._applied_index = applied_index
        self._started = time.monotonic()
        if self._started < self._retry_at:
            return  # state() reports this attempt failed once the pause is over

        try:
            reader = self._pin(applied_index)
        except (sqlite3.Error, SnapshotCorrupt) as exc:
            self._fail(exc)
            return

        self._copier = threading.Thread(
            target=self._copy,
            args=(reader, pickle.dumps(raft_state)),
            name="raft-snapshot",
            daemon=True,
        )
        self._copier.start()

    def state(self) -> int:
        """pysyncobj's serialize checker (its thread, every tick): SERIALIZING
        while a copy runs, then its outcome once, then NOT_SERIALIZING.

        Every :meth:`begin` gets exactly one outcome, whatever ended its copy:
        pysyncobj starts no other snapshot (and sends none to peers) until it
        has seen one. A whole copy is renamed over the snapshot here, on
        pysyncobj's thread, because pysyncobj renames a snapshot received from
        the leader onto the same path on that thread: an older copy can never
        replace it.
        """
        if self._copier is not None and self._copier.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)

        self._copier = None
        if not self._is_pending:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)

        if self._is_copied:
            self._is_pending = self._is_copied = False
            return self._install_copy()

        # pysyncobj starts the next snapshot on its next tick after a failure:
        # the attempt stays "serializing" until the pause after it is over.
        if time.monotonic() < self._retry_at:
            return int(SERIALIZER_STATE.SERIALIZING)

        self._is_pending = False
        return int(SERIALIZER_STATE.FAILED)

    def abandon(self, timeout: float) -> None:
        """Stop a running copy and drop it, waiting at most ``timeout`` for the
        copy to end (a newer snapshot is being installed, or the node stops)."""
        self._abandoned.set()
        copier = self._copier
        if copier is not None:
            copier.join(timeout)

    def _pin(self, applied_index: int) -> sqlite3.Connection:
        reader = sqlite3.connect(
            self._database, isolation_level=None, check_same_thread=False
        )
        try:
            reader.execute("BEGIN")
            row = reader.execute(
                "SELECT raft_index FROM raft_applied WHERE id = 1"
            ).fetchone()
            pinned = int(row[0]) if row else 0
            if pinned != applied_index:
                raise SnapshotCorrupt(
                    f"the database is at index {pinned}, pysyncobj at {applied_index}"
                )
        except BaseException:
            reader.close()
            raise

        return reader

    def _copy(self, reader: sqlite3.Connection, raft_state: bytes) -> None:
        try:
            self._write_partial(reader, raft_state)
            self._is_copied = True
        except SnapshotAbandoned:
            log.info(
                "raft.snapshot_abandoned", extra={"applied_index": self._applied_index}
            )
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
        finally:
            reader.close()
            if not self._is_copied:
                self._discard_partial()

    def _install_copy(self) -> int:
        if self._abandoned.is_set():
            self._discard_partial()
            log.info(
                "raft.snapshot_abandoned", extra={"applied_index": self._applied_index}
            )
            return int(SERIALIZER_STATE.FAILED)

        try:
            os.replace(self._partial, self._snapshot)
        except OSError as exc:
            self._fail(exc)
            self._discard_partial()
            return int(SERIALIZER_STATE.FAILED)

        log.info(
            "raft.snapshot_written",
            extra={
                "applied_index": self._applied_index,
                "bytes": self._snapshot.stat().st_size,
                "seconds": round(time.monotonic() - self._started, 2),
            },
        )
        return int(SERIALIZER_STATE.SUCCESS)

    def _fail(self, exc: BaseException) -> None:
        """Log a failed copy and pause before the next one: a disk that is
        full stays full for a while, and pysyncobj would retry on every tick."""
        self._retry_at = time.monotonic() + self._retry_seconds
        log.error(
            "raft.snapshot_failed",
            extra={"applied_index": self._applied_index, "reason": str(exc)[:200]},
        )

    def _discard_partial(self) -> None:
        try:
            self._partial.unlink(missing_ok=True)
        except OSError as exc:
            self._fail(exc)

    def _write_partial(self, reader: sqlite3.Connection, raft_state: bytes) -> None:
        (page_size,) = reader.execute("PRAGMA page_size").fetchone()
        started = time.monotonic()

        def pace(_status: int, remaining: int, total: int) -> None:
            # The wait ends as soon as the copy is abandoned: at a slow pace one
            # step's share of time is seconds, and a stopping node waits for it.
            due = (total - remaining) * page_size / self._pace
            if self._abandoned.wait(max(0.0, due - (time.monotonic() - started))):
                raise SnapshotAbandoned()

        target = sqlite3.connect(self._partial)
        try:
            # The node's own database is the durable copy: the snapshot is
            # only sent to peers and compared at start, so it is not synced.
            target.execute("PRAGMA synchronous = OFF")
            reader.backup(target, pages=STEP_PAGES, progress=pace)

            # One file, no WAL beside it: pysyncobj moves and sends this file only.
            target.execute("PRAGMA journal_mode = DELETE")
            target.execute(f"CREATE TABLE {SNAPSHOT_STATE_TABLE} (state BLOB)")
            target.execute(
                f"INSERT INTO {SNAPSHOT_STATE_TABLE} VALUES (?)", [raft_state]
            )
            target.commit()
        finally:
            target.close()


def verify_snapshot(path: Path) -> None:
    """Check a received snapshot before it replaces this node's database.

    pysyncobj 0.3.17 can send a lagging node a file made of two snapshots'
    pieces (a leader that regains leadership resumes an old transfer where it
    stopped), which SQLite reads as a malformed database. Refusing it makes
    pysyncobj log the failure and send the snapshot again; the node's log still
    lacks the entries before it, so nothing is applied past the gap meanwhile.

    Raises:
        SnapshotCorrupt: the file is not a whole, consistent snapshot.
    """
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (verdict,) = source.execute("PRAGMA quick_check").fetchone()
            (pages,) = source.execute("PRAGMA page_count").fetchone()
            (page_size,) = source.execute("PRAGMA page_size").fetchone()
            size = path.stat().st_size
            if verdict == "ok" and pages * page_size != size:
                # A splice has the header (and page count) of one snapshot and
                # the length of the other.
                verdict = f"{pages} pages of {page_size} B in a file of {size} B"
            tables = {
                row[0]
                for row in source.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        finally:
            source.close()
    except sqlite3.Error as exc:
        verdict, tables = str(exc), set()

    if verdict != "ok" or SNAPSHOT_STATE_TABLE not in tables:
        log.error("raft.snapshot_corrupt", extra={"check": str(verdict)[:200]})
        raise SnapshotCorrupt(f"{path} is not a whole snapshot: {str(verdict)[:200]}")


def install_snapshot(
    path: Path, source: sqlite3.Connection, db: sqlite3.Connection
) -> None:
    """Make ``db`` (this node's WAL database) hold the rows of the snapshot at
    ``path``, opened as ``source``, in one transaction.

    SQLite's backup API cannot write into a WAL database whose page size is not
    the source's ("attempt to write a readonly database"), and a node whose file
    was created before the store moved to 16 KiB pages keeps 4 KiB ones
    (store/schema.py): such a node copies the rows table by table instead.

    Raises:
        SnapshotCorrupt: the snapshot's tables or columns are not this node's.
    """
    if _page_size(source) == _page_size(db):
        source.backup(db)
        return

    db.execute("ATTACH DATABASE ? AS snapshot", [str(path)])
    try:
        _copy_rows(db)
    finally:
        db.execute("DETACH DATABASE snapshot")

    log.info("raft.snapshot_rows_copied", extra={"page_size": _page_size(db)})


# Known limit: copying rows writes the whole database into the WAL in one
# transaction, so the WAL grows to the database's size until the next checkpoint.
def _copy_rows(db: sqlite3.Connection) -> None:
    tables = _columns(db, "main")
    offered = _columns(db, "snapshot")
    offered.pop(SNAPSHOT_STATE_TABLE, None)
    if {name: set(columns) for name, columns in tables.items()} != {
        name: set(columns) for name, columns in offered.items()
    }:
        raise SnapshotCorrupt(
            f"the snapshot's tables ({sorted(offered)}) are not this node's "
            f"({sorted(tables)}): are all nodes running the same mixer-console?"
        )

    db.execute("BEGIN IMMEDIATE")
    try:
        # Rows of one table refer to another's: checked once all are copied.
        db.execute("PRAGMA defer_foreign_keys = ON")
        for table in tables:
            db.execute(f'DELETE FROM main."{table}"')

        for table, columns in tables.items():
            names = ", ".join(f'"{column}"' for column in columns)
            db.execute(
                f'INSERT INTO main."{table}" ({names}) '
                f'SELECT {names} FROM snapshot."{table}"'
            )

        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _columns(db: sqlite3.Connection, schema: str) -> dict[str, list[str]]:
    """Each table of ``schema`` (SQLite's own left out) with its columns."""
    names = [
        row[0]
        for row in db.execute(
            f"SELECT name FROM {schema}.sqlite_master "
            "WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
        )
    ]
    return {
        name: [row[1] for row in db.execute(f'PRAGMA {schema}.table_info("{name}")')]
        for name in names
    }


def _page_size(connection: sqlite3.Connection) -> int:
    (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    return int(page_size)
