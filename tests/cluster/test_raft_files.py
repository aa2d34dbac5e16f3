"""A cluster node whose Raft journal cannot be read (a folder in its place, an
empty file, a journal whose header promises records that are not there) does
not start: exit status 4 and a line naming the journal, not a traceback."""

import struct
import subprocess
from pathlib import Path

import pytest

from store.replication import JOURNAL_NAME
from tests.cluster_nodes import make_nodes

# pysyncobj's journal header: name (24 bytes), version (8), format (4), then the
# offset where the records end (4); records start right after it.
HEADER_BYTES = 40


def torn_journal() -> bytes:
    """A header saying records reach byte 200, over zeros: a machine crash can
    leave it so when the header's page reached the disk and the records' did not."""
    header = bytearray(b"PYSYNCOBJ".ljust(24, b"\0") + b"0.3.17".ljust(8, b"\0"))
    header += struct.pack("<II", 1, 200)
    assert len(header) == HEADER_BYTES
    return bytes(header) + bytes(1024 - HEADER_BYTES)


def make_folder(path: Path) -> None:
    path.mkdir()


def make_empty(path: Path) -> None:
    path.write_bytes(b"")


def make_torn(path: Path) -> None:
    path.write_bytes(torn_journal())


@pytest.mark.parametrize("spoil", [make_folder, make_empty, make_torn])
def test_node_with_unreadable_raft_journal_refuses_to_start(
    tmp_path: Path, spoil: object
) -> None:
    node, peer = make_nodes(tmp_path, 2)
    node.data_dir.mkdir(parents=True)
    journal = node.data_dir / JOURNAL_NAME
    spoil(journal)  # type: ignore[operator]

    node.launch([peer])
    assert node.process is not None
    try:
        status = node.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait(timeout=10)
        raise AssertionError("the node started on an unreadable journal") from None

    output = node.log_path.read_text(errors="replace")

    assert status == 4, output
    assert "Traceback" not in output
    assert str(journal) in output
    assert "raft.unavailable" in output
