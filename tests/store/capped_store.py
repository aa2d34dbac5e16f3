"""A real store in a child process whose file sizes the test can cap.

``python -m tests.store.capped_store DATA_DIR WAL_LIMIT STEP_BYTES STEP_SECONDS``
opens a store there and answers one JSON request per line on stdin with one JSON line on
stdout; its log goes to stderr. Capping sets the process's RLIMIT_FSIZE (Python
ignores SIGXFSZ, so writes past it fail with EFBIG): the way a full disk looks to
SQLite, without root and without touching the test's own process.
"""

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import store.checkpointer
import store.store
from relay.protocol import encode_frame
from store.repository import RoomRecord
from store.store import Store, StoreOptions

SENDER = "127.0.0.1:5000"
ROOM = RoomRecord(1, "capped", "3.4.1", "1.0.0", False, True, True, True, {}, 0.0)


def append_mib(opened: Store, mib: int, marker: bytes = b"end") -> int:
    """Append ``mib`` MiB of 4 KiB commands in reads of 128 KiB, as fast as the
    store takes them, the last one carrying ``marker``; return the last sequence
    number."""
    wires = [encode_frame(140, bytes([index]) * 4096) for index in range(32)]
    last_read = [*wires[:-1], encode_frame(140, marker * (4096 // len(marker)))]
    for read in range(mib * 8):
        block = last_read if read == mib * 8 - 1 else wires
        first = opened.allocate_seqs(len(block))
        size = sum(map(len, block))
        opened.append_block(first, 1, 140, size, block, SENDER, time.time())

    return opened.allocate_seqs(0) - 1


def answer(opened: Store, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request and return its reply."""
    op = request["op"]
    if op == "room":
        opened.save_room(ROOM)
        return {}

    if op == "append":
        marker = request["marker"].encode()
        return {"last_seq": append_mib(opened, request["mib"], marker)}

    if op == "flush":
        started = time.monotonic()
        is_flushed = opened.journal.flush(request["timeout"])
        return {"flushed": is_flushed, "seconds": time.monotonic() - started}

    if op == "cap":
        resource.setrlimit(
            resource.RLIMIT_FSIZE, (request["bytes"], resource.RLIM_INFINITY)
        )
        return {}

    if op == "uncap":
        unlimited = resource.RLIM_INFINITY
        resource.setrlimit(resource.RLIMIT_FSIZE, (unlimited, unlimited))
        return {}

    if op == "status":
        return {"last_error": opened.last_error}

    if op == "close":
        return {"flushed": opened.close(timeout=request["timeout"])}

    return {"error": f"unknown op {op!r}"}


def main() -> None:
    """Serve requests until "close" or the end of stdin."""
    data_dir, wal_limit, step_bytes = Path(sys.argv[1]), *map(int, sys.argv[2:4])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    store.store.WAL_LIMIT_BYTES = wal_limit
    store.checkpointer.STEP_BYTES = step_bytes
    store.checkpointer.STEP_SECONDS = float(sys.argv[4])
    opened = Store.open(data_dir, StoreOptions(flush_interval=0.01))
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.write(json.dumps(answer(opened, request)) + "\n")
        sys.stdout.flush()
        if request["op"] == "close":
            return


if __name__ == "__main__":
    main()
