"""Cost of storing one room command on the relay's hot path: History.append.

Run from the repository root::

    .venv/bin/python benchmarks/history_append_bench.py [--commands N] [--rounds R]
    .venv/bin/python benchmarks/history_append_bench.py --baseline /tmp/old-tree

Each round appends N commands of 1 KiB (type 140, never merged) to a fresh
history, in memory only, and once with a store in a temporary data directory (its
journal thread writing meanwhile, as in the relay). The best and the median
round's nanoseconds per append are printed (wall clock of the append loop alone).

With ``--baseline``, that tree's ``relay/history.py`` is loaded beside this one
and the in-memory rounds of the two alternate in one process, so that both see
the same machine load: on shared cores, separate runs differ by more than the
change being measured.
"""

import argparse
import importlib.util
import inspect
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from relay import history as this_history
from relay.protocol import Frame, FrameDecoder, encode_frame
from store.repository import RoomRecord
from store.store import Store, StoreOptions

SENDER = "127.0.0.1:5000"


def frames(count: int) -> list[Frame]:
    wire = encode_frame(140, bytes(1000))
    return FrameDecoder(1 << 20).feed(wire * count)


def append_all(history: Any, batch: list[Frame]) -> float:
    """Append as the broadcaster of that tree does: older trees take neither
    sender nor time; this one gets one clock reading per socket read, here one
    for the whole batch."""
    takes_sender = len(inspect.signature(history.append).parameters) > 1
    began = time.perf_counter()
    if takes_sender:
        received_at = time.time()
        for frame in batch:
            history.append(frame, SENDER, received_at)
    else:
        for frame in batch:
            history.append(frame)
    return time.perf_counter() - began


def in_memory(module: ModuleType, batch: list[Frame]) -> float:
    return append_all(module.History(itertools.count(1).__next__), batch)


def with_store(batch: list[Frame]) -> float:
    data_dir = Path(tempfile.mkdtemp(prefix="mixer-append-bench-"))
    try:
        store = Store.open(data_dir, StoreOptions())
        try:
            room_id = store.allocate_room_id()
            store.save_room(
                RoomRecord(room_id, "bench", "", "", False, False, False, True, {}, 0)
            )
            history = this_history.History(store.allocate_seq, store, room_id)
            return append_all(history, batch)
        finally:
            store.close(timeout=60)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def load_baseline(tree: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "baseline_history", tree / "relay" / "history.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(label: str, seconds: list[float], commands: int) -> None:
    per = 1e9 / commands
    print(  # noqa: T201
        f"{label:<22} best {min(seconds) * per:6.0f} ns, "
        f"median {statistics.median(seconds) * per:6.0f} ns per append"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="another tree to compare")
    args = parser.parse_args(argv)
    batch = frames(args.commands)
    baseline = load_baseline(args.baseline) if args.baseline else None
    this: list[float] = []
    other: list[float] = []
    for _ in range(args.rounds):
        this.append(in_memory(this_history, batch))
        if baseline is not None:
            other.append(in_memory(baseline, batch))

    stored = [with_store(batch) for _ in range(max(args.rounds // 2, 1))]
    report("in memory (this tree)", this, args.commands)
    if baseline is not None:
        report(f"in memory ({args.baseline.name})", other, args.commands)
    report("with store (this tree)", stored, args.commands)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
