"""Raft snapshots of a node's database: written in the background as of one
index, and checked when received before they may replace a node's database."""

import pickle
import sqlite3
import time
from pathlib import Path

import pytest
from pysyncobj import SERIALIZER_STATE  # type: ignore[import-untyped]

from store.snapshots import (
    SNAPSHOT_STATE_TABLE,
    BackgroundSnapshot,
    SnapshotCorrupt,
    install_snapshot,
    verify_snapshot,
)


def write_snapshot(path: Path, rows: int = 2000) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE commands (seq INTEGER PRIMARY KEY, wire BLOB)")
    connection.executemany(
        "INSERT INTO commands VALUES (?, ?)", [(n, b"x" * 500) for n in range(rows)]
    )
    connection.execute(f"CREATE TABLE {SNAPSHOT_STATE_TABLE} (state BLOB)")
    connection.execute(f"INSERT INTO {SNAPSHOT_STATE_TABLE} VALUES (x'00')")
    connection.commit()
    connection.close()


def test_verify_snapshot_accepts_whole_file(tmp_path: Path) -> None:
    """A complete snapshot passes."""
    path = tmp_path / "raft.snapshot"
    write_snapshot(path)

    verify_snapshot(path)


def test_verify_snapshot_refuses_spliced_file(tmp_path: Path) -> None:
    """Regression: pysyncobj sent a node a file made of the start of one
    snapshot and the rest of a larger one, which the node read as malformed."""
    first, second, spliced = (tmp_path / name for name in ("a", "b", "spliced"))
    write_snapshot(first, rows=2000)
    write_snapshot(second, rows=4000)
    half = first.stat().st_size // 2
    spliced.write_bytes(first.read_bytes()[:half] + second.read_bytes()[half:])

    with pytest.raises(SnapshotCorrupt):
        verify_snapshot(spliced)


@pytest.mark.parametrize("content", [b"", b"not sqlite at all" * 100])
def test_verify_snapshot_refuses_other_files(tmp_path: Path, content: bytes) -> None:
    """An empty file (no snapshot yet) or a non-database is refused, not copied."""
    path = tmp_path / "raft.snapshot"
    path.write_bytes(content)

    with pytest.raises(SnapshotCorrupt):
        verify_snapshot(path)


class AppliedDatabase:
    """A node's database as the applier leaves it: rows plus the applied index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("CREATE TABLE raft_applied (id, raft_index)")
        self.connection.execute("INSERT INTO raft_applied VALUES (1, 0)")
        self.connection.execute("CREATE TABLE commands (seq INTEGER PRIMARY KEY, b)")
        self.index = 0

    def apply(self, entries: int, size: int = 4000) -> None:
        """Apply ``entries`` entries of one command each, one transaction each."""
        for _ in range(entries):
            self.index += 1
            self.connection.execute("BEGIN")
            self.connection.execute(
                "INSERT INTO commands VALUES (?, ?)", [self.index, b"c" * size]
            )
            self.connection.execute(
                "UPDATE raft_applied SET raft_index = ? WHERE id = 1", [self.index]
            )
            self.connection.execute("COMMIT")


def snapshot_rows(path: Path) -> tuple[int, int, bytes]:
    """The snapshot's applied index, its command count and pysyncobj's state."""
    connection = sqlite3.connect(path)
    try:
        (index,) = connection.execute("SELECT raft_index FROM raft_applied").fetchone()
        (count,) = connection.execute("SELECT count(*) FROM commands").fetchone()
        (state,) = connection.execute(
            f"SELECT state FROM {SNAPSHOT_STATE_TABLE}"
        ).fetchone()
    finally:
        connection.close()

    return index, count, pickle.loads(state)


def wait_outcome(snapshots: BackgroundSnapshot, seconds: float = 30) -> int:
    """Poll the checker as pysyncobj's ticks do until the copy has an outcome."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = snapshots.state()
        if state != SERIALIZER_STATE.SERIALIZING:
            return state

        time.sleep(0.005)

    raise AssertionError(f"no outcome within {seconds} s")


def test_snapshot_is_the_database_as_of_its_index_while_entries_go_on(
    tmp_path: Path,
) -> None:
    """The copy runs while the applier keeps committing, and holds exactly the
    rows of the index it was started at; the outcome is reported once."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(500)
    snapshot = tmp_path / "raft.snapshot"
    snapshots = BackgroundSnapshot(database.path, snapshot, pace=1_000_000)

    snapshots.begin(str(tmp_path / "raft.snapshot.tmp"), ("raft", "state"), 500)
    assert snapshots.state() == SERIALIZER_STATE.SERIALIZING
    database.apply(200)
    assert snapshots.state() == SERIALIZER_STATE.SERIALIZING

    assert wait_outcome(snapshots) == SERIALIZER_STATE.SUCCESS
    assert snapshots.state() == SERIALIZER_STATE.NOT_SERIALIZING
    assert snapshot_rows(snapshot) == (500, 500, ("raft", "state"))
    verify_snapshot(snapshot)
    assert database.index == 700


def test_abandoned_snapshot_leaves_the_previous_one(tmp_path: Path) -> None:
    """A copy dropped half-way (a newer snapshot arrived, or the node stops)
    reports failure and leaves the previous snapshot and no partial file."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(100)
    snapshot = tmp_path / "raft.snapshot"
    first = BackgroundSnapshot(database.path, snapshot)
    first.begin(str(snapshot) + ".tmp", 1, 100)
    assert wait_outcome(first) == SERIALIZER_STATE.SUCCESS
    database.apply(900)
    slow = BackgroundSnapshot(database.path, snapshot, pace=200_000)
    slow.begin(str(snapshot) + ".tmp", 2, 1000)

    slow.abandon(timeout=5)

    assert wait_outcome(slow) == SERIALIZER_STATE.FAILED
    assert slow.state() == SERIALIZER_STATE.NOT_SERIALIZING
    assert snapshot_rows(snapshot) == (100, 100, 1)
    assert sorted(path.name for path in tmp_path.glob("raft.snapshot*")) == [
        "raft.snapshot"
    ]


def test_stale_files_never_become_the_snapshot(tmp_path: Path) -> None:
    """A partial copy left by a crash is removed at start, and pysyncobj's own
    temporary file is removed before pysyncobj would rename it into place."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(10)
    snapshot = tmp_path / "raft.snapshot"
    partial = tmp_path / "raft.snapshot.partial"
    partial.write_bytes(b"half a copy")
    pysyncobj_file = tmp_path / "raft.snapshot.tmp"
    pysyncobj_file.write_bytes(b"an old serializer's leftover")

    snapshots = BackgroundSnapshot(database.path, snapshot)
    assert not partial.exists()
    snapshots.begin(str(pysyncobj_file), 0, 10)

    assert not pysyncobj_file.exists()
    assert wait_outcome(snapshots) == SERIALIZER_STATE.SUCCESS
    assert snapshot_rows(snapshot)[:2] == (10, 10)


def test_snapshot_of_a_database_behind_pysyncobj_fails(tmp_path: Path) -> None:
    """The pinned rows must be those of the index pysyncobj snapshots: otherwise
    the snapshot fails (pysyncobj keeps its log) instead of being wrong."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(10)
    snapshots = BackgroundSnapshot(
        database.path, tmp_path / "raft.snapshot", retry_seconds=0
    )

    snapshots.begin(str(tmp_path / "raft.snapshot.tmp"), 0, 11)

    assert snapshots.state() == SERIALIZER_STATE.FAILED
    assert snapshots.state() == SERIALIZER_STATE.NOT_SERIALIZING
    assert not (tmp_path / "raft.snapshot").exists()


def test_failed_copy_is_reported_after_a_pause(tmp_path: Path) -> None:
    """Regression: pysyncobj starts the next snapshot on the tick after a
    failure, so a disk that stayed full was copied to about 100 times a second.
    A failure (here: the snapshot's folder is gone, as with a full or failing
    disk) is reported once, when the pause is over; the next copy succeeds."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(10)
    folder = tmp_path / "snapshots"
    folder.mkdir()
    snapshots = BackgroundSnapshot(
        database.path, folder / "raft.snapshot", retry_seconds=0.5
    )
    folder.rmdir()
    failed_at = time.monotonic()

    snapshots.begin(str(folder / "raft.snapshot.tmp"), 0, 10)

    assert snapshots.state() == SERIALIZER_STATE.SERIALIZING
    assert wait_outcome(snapshots) == SERIALIZER_STATE.FAILED
    assert time.monotonic() - failed_at >= 0.5
    assert snapshots.state() == SERIALIZER_STATE.NOT_SERIALIZING
    folder.mkdir()
    snapshots.begin(str(folder / "raft.snapshot.tmp"), 0, 10)
    assert wait_outcome(snapshots) == SERIALIZER_STATE.SUCCESS


def test_copy_whose_cleanup_fails_still_has_one_outcome(tmp_path: Path) -> None:
    """Regression: a copy that failed and whose partial file could not be
    removed either (a folder stood in its place) ended its thread with no
    outcome, so pysyncobj waited for ever and never compacted or sent a
    snapshot again."""
    database = AppliedDatabase(tmp_path / "rooms.sqlite")
    database.apply(10)
    snapshot = tmp_path / "raft.snapshot"
    snapshots = BackgroundSnapshot(database.path, snapshot, retry_seconds=0)
    obstacle = tmp_path / "raft.snapshot.partial"
    obstacle.mkdir()

    snapshots.begin(str(tmp_path / "raft.snapshot.tmp"), 0, 10)

    assert wait_outcome(snapshots) == SERIALIZER_STATE.FAILED
    assert snapshots.state() == SERIALIZER_STATE.NOT_SERIALIZING
    obstacle.rmdir()
    snapshots.begin(str(tmp_path / "raft.snapshot.tmp"), 0, 10)
    assert wait_outcome(snapshots) == SERIALIZER_STATE.SUCCESS


def wal_database(path: Path, page_size: int, tables: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA page_size = {page_size}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(tables)
    return connection


ROOMS_AND_COMMANDS = """
    CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE commands (seq INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id), wire BLOB);
"""


def test_snapshot_installs_into_a_database_of_another_page_size(
    tmp_path: Path,
) -> None:
    """Regression: SQLite's backup API cannot write into a WAL database of
    another page size, so a node with an older 4 KiB-page file refused every
    16 KiB-page snapshot ('attempt to write a readonly database')."""
    leader = wal_database(tmp_path / "leader.sqlite", 16384, ROOMS_AND_COMMANDS)
    leader.execute("INSERT INTO rooms VALUES (1, 'r')")
    leader.executemany(
        "INSERT INTO commands VALUES (?, 1, ?)", [(n, b"w" * 300) for n in range(500)]
    )
    snapshot = tmp_path / "raft.snapshot"
    target = sqlite3.connect(snapshot)
    leader.backup(target)
    target.execute(f"CREATE TABLE {SNAPSHOT_STATE_TABLE} (state BLOB)")
    target.commit()
    target.close()
    node = wal_database(tmp_path / "node.sqlite", 4096, ROOMS_AND_COMMANDS)
    node.execute("INSERT INTO rooms VALUES (7, 'stale')")
    node.execute("INSERT INTO commands VALUES (1, 7, x'00')")
    source = sqlite3.connect(snapshot)

    install_snapshot(snapshot, source, node)

    assert node.execute("PRAGMA page_size").fetchone() == (4096,)
    for table in ("rooms", "commands"):
        query = f"SELECT * FROM {table} ORDER BY 1"
        assert node.execute(query).fetchall() == leader.execute(query).fetchall()


def test_snapshot_of_other_tables_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A snapshot whose tables are not the node's (another schema version) is
    refused with a clear error and the node's rows are left as they were."""
    snapshot = tmp_path / "raft.snapshot"
    other = wal_database(snapshot, 16384, "CREATE TABLE rooms (id, title);")
    other.execute("PRAGMA journal_mode = DELETE")
    other.close()
    node = wal_database(tmp_path / "node.sqlite", 4096, ROOMS_AND_COMMANDS)
    node.execute("INSERT INTO rooms VALUES (1, 'kept')")
    source = sqlite3.connect(snapshot)

    with pytest.raises(SnapshotCorrupt, match="same mixer-console"):
        install_snapshot(snapshot, source, node)

    assert node.execute("SELECT * FROM rooms").fetchall() == [(1, "kept")]
    assert node.execute("PRAGMA database_list").fetchall()[1:] == []
