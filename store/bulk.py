"""Large command bytes travel beside the Raft log; the log commits their digest.

Why. pysyncobj pickles (protocol 2, which turns bytes into text and back),
zlib-compresses and encrypts every message, once per peer and on every hop.
Measured on this project's 2-core machine: that encodes incompressible bytes at
about 5 MB/s, and 1 MiB commands of random bytes crossed a three-node cluster at
under 1 MB/s that way.

How. A node proposing a command of :data:`BULK_BYTES` or more stores its bytes,
sends them straight to every peer over this channel, and proposes only a small
operation naming them by their SHA-256 digest once a majority of the nodes
(itself included) hold them. So any committed digest is held by a majority.
Every node applies that operation with the bytes from its own store, checked
against the digest, or, when it lacks them (it was down, the push to it failed),
fetches them from any peer that has them and checks them the same way.

The channel. One request per TCP connection to a peer's bulk port (its Raft
port + 1, on the same host). The server opens with a random nonce; the request
header (operation, digest, length) carries an HMAC-SHA256 tag, keyed from the
cluster secret, over the nonce and the header, and so does the reply's header.
A peer without the secret can neither store nor read anything, and a recorded
request cannot be replayed. Bodies need no tag of their own: they must hash to
the digest, which the tagged header names. Headers are fixed binary structs:
nothing received is ever unpickled.
"""

import hashlib
import hmac
import logging
import os
import socket
import socketserver
import struct
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from store.errors import StoreError

log = logging.getLogger(__name__)

# Commands at least this large travel beside the log. Measured with random
# bytes (benchmarks/cluster_bench.py --payload random): 64 KiB commands made
# 0.8 MB/s in the log and 10 MB/s beside it; with dots, which pysyncobj's zlib
# squeezes to nothing, 21-25 MB/s in the log and 12.6 beside it.
# Known limit: each command opens one connection per peer and writes a file on
# every node, so commands of 64 KiB to 192 KiB that compress well are slower
# beside the log than they were in it.
BULK_BYTES = 64 * 1024
# The largest body a peer accepts (the relay's own frame limit is 1 GiB).
MAX_BODY_BYTES = 2 * 1024**3
# Bytes are kept this long after they arrive, for peers that come to fetch them
# (a node that was down replays entries from its journal when it comes back).
# Known limit: a node whose journal still holds a bulk entry it never applied
# when every copy of the bytes is older than this cannot apply it, and is stuck
# until its data folder is emptied (it then catches up as a new node).
KEEP_SECONDS = 900.0
# pysyncobj applies a failed entry again at its next tick, logging the failure
# each time: a pause keeps that to about one log line a second.
UNAVAILABLE_PAUSE = 1.0
# Seconds one request may take, connecting included.
REQUEST_SECONDS = 10.0

PUT = b"P"
GET = b"G"
STORED = b"S"
FOUND = b"F"
MISSING = b"M"
REFUSED = b"R"

_REQUEST = struct.Struct("!c32sQ")  # operation, digest, body length
_REPLY = struct.Struct("!cQ")  # status, body length
NONCE_BYTES = 32
TAG_BYTES = 32


class BulkError(StoreError):
    """Raised when bytes cannot be exchanged with a peer."""


class BulkUnavailable(StoreError):
    """Raised when no node could give the bytes a committed digest names."""


def bulk_key(secret: str) -> bytes:
    """The channel's HMAC key, derived from the cluster secret (never the secret
    itself, which pysyncobj uses for its own encryption)."""
    return hmac.digest(secret.encode(), b"mixer-console bulk bytes v1", "sha256")


def digest_of(data: bytes | memoryview) -> bytes:
    """The SHA-256 digest that names ``data``."""
    return hashlib.sha256(data).digest()


def bulk_address(raft_address: str) -> tuple[str, int]:
    """A node's bulk address: its Raft host, on the Raft port + 1."""
    host, _, port = raft_address.rpartition(":")
    return host.strip("[]"), int(port) + 1


def _tag(key: bytes, nonce: bytes, direction: bytes, header: bytes) -> bytes:
    return hmac.digest(key, nonce + direction + header, "sha256")


def _receive_exactly(connection: socket.socket, size: int, deadline: float) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        count = connection.recv_into(view[received:])
        if count == 0:
            raise BulkError("the peer closed the connection")

        received += count

    return bytes(buffer)


# The folder of the data folder that holds the bytes of large commands.
BULK_FOLDER = "bulk"


class BulkStore:
    """The bytes this node holds, one file per digest under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, digest: bytes, data: bytes) -> bool:
        """Keep ``data`` under ``digest``; False (nothing kept) if it does not
        hash to it."""
        if not hmac.compare_digest(digest_of(data), digest):
            return False

        path = self._path(digest)
        # Known limit: the file is not synced (nor is pysyncobj's journal), so a
        # power cut on a majority of the nodes at once can lose committed bytes.
        # A name of its own per thread: two peers may push the same bytes at once.
        partial = path.with_name(f".{path.name}.{threading.get_ident()}")
        partial.write_bytes(data)
        os.replace(partial, path)
        return True

    def get(self, digest: bytes) -> bytes | None:
        """The bytes kept under ``digest``, if they are here and whole."""
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None

        if not hmac.compare_digest(digest_of(data), digest):
            log.error("bulk.corrupt", extra={"digest": digest.hex()})
            path.unlink(missing_ok=True)
            return None

        return data

    def prune(self, keep_seconds: float = KEEP_SECONDS) -> int:
        """Delete bytes older than ``keep_seconds``; returns how many files."""
        cutoff = time.time() - keep_seconds
        removed = 0
        for path in self._folder.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # removed meanwhile

        return removed

    def _path(self, digest: bytes) -> Path:
        return self._folder / digest.hex()


# Known limit: connections are not counted, so anyone who reaches the bulk port
# can hold many threads for REQUEST_SECONDS each before being refused.
class BulkServer:
    """Serves this node's :class:`BulkStore` to peers that know the key.

    Each connection runs on a thread of its own (socketserver's), bounded in
    time by :data:`REQUEST_SECONDS`.
    """

    def __init__(self, address: tuple[str, int], key: bytes, store: BulkStore) -> None:
        handler = _handler_class(key, store)
        self._server = socketserver.ThreadingTCPServer(
            address, handler, bind_and_activate=False
        )
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        try:
            self._server.server_bind()
            self._server.server_activate()
        except OSError:
            self._server.server_close()
            raise

        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="bulk-server",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving (bounded: the serving loop polls every 0.2 s)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


def _handler_class(
    key: bytes, store: BulkStore
) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connection: socket.socket = self.request
            peer = str(self.client_address[0])
            try:
                _serve(connection, key, store)
            except (OSError, BulkError) as exc:
                log.warning(
                    "bulk.request_failed", extra={"peer": peer, "error": str(exc)}
                )

    return Handler


def _serve(connection: socket.socket, key: bytes, store: BulkStore) -> None:
    deadline = time.monotonic() + REQUEST_SECONDS
    nonce = os.urandom(NONCE_BYTES)
    connection.sendall(nonce)
    header = _receive_exactly(connection, _REQUEST.size, deadline)
    tag = _receive_exactly(connection, TAG_BYTES, deadline)
    if not hmac.compare_digest(tag, _tag(key, nonce, b"Q", header)):
        # Nothing is answered to a peer without the key.
        raise BulkError("a request without a valid tag was refused")

    operation, digest, length = _REQUEST.unpack(header)
    body = b""
    if operation == PUT and length <= MAX_BODY_BYTES:
        received = _receive_exactly(connection, length, deadline)
        status = STORED if store.put(digest, received) else REFUSED
        if status == REFUSED:
            log.error("bulk.digest_mismatch", extra={"digest": digest.hex()})
    elif operation == GET and length == 0:
        found = store.get(digest)
        status, body = (FOUND, found) if found is not None else (MISSING, b"")
    else:
        status = REFUSED

    reply = _REPLY.pack(status, len(body))
    connection.sendall(reply + _tag(key, nonce, b"A", reply))
    if body:
        connection.sendall(body)


def _request(
    address: tuple[str, int], key: bytes, operation: bytes, digest: bytes, body: bytes
) -> tuple[bytes, bytes]:
    """Send one request; returns the reply's status and body.

    Raises:
        BulkError: the peer is unreachable, too slow, or its reply is not
            tagged with the key.
    """
    deadline = time.monotonic() + REQUEST_SECONDS
    try:
        with socket.create_connection(address, timeout=REQUEST_SECONDS) as connection:
            nonce = _receive_exactly(connection, NONCE_BYTES, deadline)
            header = _REQUEST.pack(operation, digest, len(body))
            connection.sendall(header + _tag(key, nonce, b"Q", header))
            if body:
                connection.settimeout(max(0.01, deadline - time.monotonic()))
                connection.sendall(body)

            reply = _receive_exactly(connection, _REPLY.size, deadline)
            tag = _receive_exactly(connection, TAG_BYTES, deadline)
            if not hmac.compare_digest(tag, _tag(key, nonce, b"A", reply)):
                raise BulkError(f"{address}: a reply without a valid tag")

            status, length = _REPLY.unpack(reply)
            if length > MAX_BODY_BYTES:
                raise BulkError(f"{address}: a reply of {length} B")

            return status, _receive_exactly(connection, length, deadline)
    except OSError as exc:
        raise BulkError(f"{address}: {exc}") from exc


def push(address: tuple[str, int], key: bytes, digest: bytes, data: bytes) -> bool:
    """Give a peer bytes to keep; True once it has stored them whole."""
    try:
        status, _ = _request(address, key, PUT, digest, data)
    except BulkError as exc:
        log.warning("bulk.push_failed", extra={"error": str(exc)})
        return False

    return status == STORED


def fetch(address: tuple[str, int], key: bytes, digest: bytes) -> bytes | None:
    """Ask a peer for the bytes named by ``digest``; None unless it gives them
    whole (hashing to the digest)."""
    try:
        status, data = _request(address, key, GET, digest, b"")
    except BulkError as exc:
        log.warning("bulk.fetch_failed", extra={"error": str(exc)})
        return None

    if status != FOUND:
        return None

    if not hmac.compare_digest(digest_of(data), digest):
        log.error("bulk.digest_mismatch", extra={"digest": digest.hex()})
        return None

    return data


class BulkPeers:
    """This node's side of the channel: its store, its server, its peers.

    Args:
        self_address: this node's Raft address (the server listens next to it).
        peers: the other nodes' Raft addresses.
        secret: the cluster secret.
        folder: where this node keeps the bytes.

    Raises:
        OSError: the bulk port cannot be bound.
    """

    def __init__(
        self, self_address: str, peers: tuple[str, ...], secret: str, folder: Path
    ) -> None:
        self._key = bulk_key(secret)
        self.store = BulkStore(folder)
        self._peers = [bulk_address(peer) for peer in peers]
        self._pushes = ThreadPoolExecutor(
            max_workers=max(1, 2 * len(peers)), thread_name_prefix="bulk-push"
        )
        self.server = BulkServer(bulk_address(self_address), self._key, self.store)

    def share(self, digest: bytes, data: bytes) -> bool:
        """Keep ``data`` and push it to every peer; True once a majority of the
        nodes (this one included) hold it (a worker thread; blocks for at most
        :data:`REQUEST_SECONDS`). Pushes still under way go on afterwards."""
        if not self.store.put(digest, data):
            return False

        needed = (len(self._peers) + 1) // 2  # peers, besides this node
        pending: set[Future[bool]] = {
            self._pushes.submit(push, peer, self._key, digest, data)
            for peer in self._peers
        }
        deadline = time.monotonic() + REQUEST_SECONDS
        stored = 0
        while stored < needed and pending and time.monotonic() < deadline:
            done, pending = wait(
                pending, deadline - time.monotonic(), return_when=FIRST_COMPLETED
            )
            stored += sum(1 for future in done if future.result())

        return stored >= needed

    # Known limit: a fetch runs on pysyncobj's thread, which does nothing else
    # meanwhile (up to REQUEST_SECONDS per peer that does not answer).
    def obtain(self, digest: bytes) -> bytes:
        """The bytes a committed digest names: from this node's store, or
        fetched from the first peer that has them (pysyncobj's thread).

        Raises:
            BulkUnavailable: no peer gave them within its time.
        """
        data = self.store.get(digest)
        if data is not None:
            return data

        for peer in self._peers:
            data = fetch(peer, self._key, digest)
            if data is not None:
                self.store.put(digest, data)
                log.info(
                    "bulk.fetched", extra={"digest": digest.hex(), "bytes": len(data)}
                )
                return data

        time.sleep(UNAVAILABLE_PAUSE)
        raise BulkUnavailable(f"no node gave the bytes of {digest.hex()}")

    def close(self) -> None:
        """Stop serving and pushing."""
        self.server.close()
        self._pushes.shutdown(wait=False, cancel_futures=True)
