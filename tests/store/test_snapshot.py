"""A received Raft snapshot is checked before it may replace a node's database."""

import sqlite3
from pathlib import Path

import pytest

from store.replication import SNAPSHOT_STATE_TABLE, SnapshotCorrupt, verify_snapshot


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
