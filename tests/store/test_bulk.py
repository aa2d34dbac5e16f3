"""The bulk channel: real sockets on 127.0.0.1 and real files, bytes checked
against their digest everywhere, nothing for a peer without the secret."""

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.bulk import (
    BulkPeers,
    BulkServer,
    BulkStore,
    BulkUnavailable,
    bulk_key,
    digest_of,
    fetch,
    push,
)
from tests.cluster_nodes import free_raft_port

SECRET = "a-test-secret-of-some-length"
KEY = bulk_key(SECRET)
DATA = os.urandom(300 * 1024)
DIGEST = digest_of(DATA)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[BulkServer, BulkStore]]:
    store = BulkStore(tmp_path / "served")
    running = BulkServer(("127.0.0.1", 0), KEY, store)
    yield running, store
    running.close()


def test_bytes_pushed_with_the_key_are_stored_and_fetched_whole(server) -> None:
    running, store = server

    assert push(running.address, KEY, DIGEST, DATA)
    assert store.get(DIGEST) == DATA
    assert fetch(running.address, KEY, DIGEST) == DATA


def test_a_peer_without_the_secret_can_neither_store_nor_read(server) -> None:
    running, store = server
    wrong = bulk_key("not-the-cluster-secret-at-all")
    other = os.urandom(1000)

    assert not push(running.address, wrong, digest_of(other), other)
    assert store.get(digest_of(other)) is None
    assert push(running.address, KEY, DIGEST, DATA)
    assert fetch(running.address, wrong, DIGEST) is None


def test_bytes_that_do_not_match_their_digest_are_refused(server) -> None:
    running, store = server
    claimed = digest_of(b"something else")

    assert not push(running.address, KEY, claimed, DATA)
    assert store.get(claimed) is None
    assert not list((store._folder).iterdir())


def test_bytes_corrupted_on_disk_are_never_served(server) -> None:
    running, store = server
    assert push(running.address, KEY, DIGEST, DATA)
    path = store._folder / DIGEST.hex()
    path.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))

    assert fetch(running.address, KEY, DIGEST) is None
    assert not path.exists()


def test_garbage_from_a_peer_is_refused_and_the_server_goes_on(server) -> None:
    running, _ = server
    for garbage in (b"", b"x" * 10, os.urandom(200), b"P" + b"\xff" * 72):
        with socket.create_connection(running.address, timeout=5) as connection:
            connection.recv(64)  # the nonce
            connection.sendall(garbage)
            # The server may have closed the connection already.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_WR)

            connection.settimeout(5)
            try:
                answer = connection.recv(64)
            except ConnectionResetError:
                answer = b""

            assert answer == b""

    assert push(running.address, KEY, DIGEST, DATA)


def cluster_of_three(tmp_path: Path, running: int) -> tuple[BulkPeers, list[BulkPeers]]:
    """This node's BulkPeers and ``running`` of its two peers' (the others are
    never started: their ports refuse connections)."""
    addresses = [f"127.0.0.1:{free_raft_port()}" for _ in range(3)]
    nodes = [
        BulkPeers(
            address,
            tuple(a for a in addresses if a != address),
            SECRET,
            tmp_path / f"node{index}",
        )
        for index, address in enumerate(addresses[: 1 + running])
    ]
    return nodes[0], nodes[1:]


def test_sharing_needs_a_majority_of_the_nodes(tmp_path: Path) -> None:
    """With one peer of two up, the bytes reach a majority; with none, not."""
    alone, _ = cluster_of_three(tmp_path / "alone", running=0)
    pair, peers = cluster_of_three(tmp_path / "pair", running=1)
    try:
        assert not alone.share(DIGEST, DATA)
        assert pair.share(DIGEST, DATA)
        assert peers[0].store.get(DIGEST) == DATA
    finally:
        for node in (alone, pair, *peers):
            node.close()


def test_a_node_without_the_bytes_fetches_them_from_a_peer(tmp_path: Path) -> None:
    this, peers = cluster_of_three(tmp_path, running=2)
    try:
        assert peers[1].store.put(DIGEST, DATA)

        assert this.obtain(DIGEST) == DATA
        assert this.store.get(DIGEST) == DATA
        with pytest.raises(BulkUnavailable):
            this.obtain(digest_of(b"bytes nobody has"))
    finally:
        for node in (this, *peers):
            node.close()


def test_old_bytes_are_pruned(tmp_path: Path) -> None:
    store = BulkStore(tmp_path)
    assert store.put(DIGEST, DATA)

    assert store.prune(keep_seconds=3600) == 0
    assert store.prune(keep_seconds=-1) == 1
    assert store.get(DIGEST) is None
