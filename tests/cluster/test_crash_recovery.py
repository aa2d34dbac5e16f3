"""Three real node processes restarted after a crash that left pysyncobj's files
inconsistent: the nodes still start, agree, and lose nothing."""

import pickle
from pathlib import Path

import anyio
import pytest

from tests.cluster.test_failover import KIND, history_on
from tests.cluster_nodes import (
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def push_commit_index_past_journal(journal_path: Path, extra: int) -> None:
    """Do what a machine crash can do: the commit index saved beside the journal
    (pysyncobj pickles a dict there) names entries the journal never received."""
    meta_path = journal_path.with_name(journal_path.name + ".meta")
    meta = pickle.loads(meta_path.read_bytes())
    meta["raftCommitIndex"] = meta.get("raftCommitIndex", 1) + extra
    meta_path.write_bytes(pickle.dumps(meta))


async def test_cluster_starts_after_crash_left_commit_index_past_journal(
    tmp_path: Path,
) -> None:
    """Every node killed, each with a saved commit index past its journal's end:
    they start, clamp it, elect a leader, keep every command and accept new ones.

    The upstream report (https://github.com/bakwc/PySyncObj/pull/197) is of a
    node that then waits for ever; in this test's setting 0.3.17 recovered
    without the clamp too, so the clamp is checked through its log event.
    """
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        writer = await MixerClient.connect(nodes[0].port)
        await writer.handshake("writer")
        await writer.create_room("r")
        for index in range(50):
            await writer.send_raw(room_command(KIND, b"before %d" % index))

        await writer.sync()
        await writer.aclose()
        wait_equal_rows(nodes, commands=50)
        await anyio.sleep(1.5)  # pysyncobj saves the commit index once a second
        for node in nodes:
            await anyio.to_thread.run_sync(node.kill)

        for node in nodes:
            push_commit_index_past_journal(node.data_dir / "raft.journal", 500)

        start_all(nodes)
        wait_available(nodes)
        for node in nodes:
            node.wait_event("raft.commit_index_clamped", 5)

        late = await MixerClient.connect(nodes[1].port)
        await late.handshake("late")
        history = await late.join_room("r")
        await late.send_raw(room_command(KIND, b"after"))
        await late.sync()
        await late.aclose()
        rows = wait_equal_rows(nodes, commands=51)

        assert [bytes(frame.payload) for frame in history] == [
            b"before %d" % index for index in range(50)
        ]
        assert len(rows["commands"]) == 51
        assert (await history_on(nodes[2].port))[-1] == b"after"
    finally:
        stop_all(nodes)
