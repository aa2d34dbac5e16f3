"""A clustered node whose large command cannot reach its peers: real sockets
(peers that refuse), a real store and broadcaster, the link running."""

from pathlib import Path

import anyio

from relay.broadcaster import Broadcaster
from relay.cluster import ClusterLink
from relay.protocol import encode_frame
from store.bulk import BulkPeers
from store.store import Store, StoreOptions
from tests.cluster_nodes import SECRET, free_raft_port

HERE = "127.0.0.1:7001"


async def test_a_command_whose_bytes_reach_no_peer_is_dropped_with_its_followers(
    tmp_path: Path,
) -> None:
    """A large command whose bytes reach no peer is never proposed, nor are its
    sender's commands queued behind it (the room would see them without it).

    The link has no replica: proposing anything would fail the test.
    """
    store = Store.open(tmp_path, StoreOptions())
    # Peers that were never started: every push to them is refused at once.
    peers = tuple(f"127.0.0.1:{free_raft_port()}" for _ in range(2))
    bulk = BulkPeers(f"127.0.0.1:{free_raft_port()}", peers, SECRET, tmp_path / "b")
    link = ClusterLink(HERE, store)
    link.attach(None, bulk)  # type: ignore[arg-type]
    broadcaster = Broadcaster(store, cluster=link)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(link.run, broadcaster)
            link.propose_command("c1", "r", 150, encode_frame(150, bytes(100_000)))
            link.propose_command("c1", "r", 150, encode_frame(150, b"after"))
            for _ in range(400):
                if not link.pending_bytes:
                    break

                await anyio.sleep(0.05)

            assert link.pending_bytes == 0
            tasks.cancel_scope.cancel()
    finally:
        bulk.close()
        store.close(timeout=5)
