"""CPU the store's writing threads spend per stored byte and per command.

Run from the repository root::

    .venv/bin/python benchmarks/journal_bench.py            # ~30 s
    .venv/bin/python benchmarks/journal_bench.py --mb 100 --sizes 64,4096

Each case opens a store in a fresh temporary data directory and appends
commands of one size (type 140, never merged) the way the relay does: in
blocks of one client read (128 KiB of frames), a short sleep between reads, the
journal thread writing meanwhile. The CPU time of the journal thread (which
appends to SQLite's WAL) and of the checkpointer thread (which copies the WAL
into the database file) is read from /proc, user and system apart, from the
first append until everything is written. "floor" is the same bytes written
without SQLite, the way SQLite's WAL writes them (each page to the WAL, then
copied into the database at every checkpoint, with fdatasync): what any SQLite
WAL store pays in the kernel.

These figures are why the fan-out target is hard on 2 cores: the relay
without a store forwards 4 KiB commands to one receiver at about 90,000
commands/s, about 370 MB/s, and the store's CPU per MB times that rate is the
share of a core it takes from the relay and its clients. The machine has 2
cores; other processes running meanwhile make the figures vary.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.protocol import encode_frame
from store.repository import RoomRecord
from store.store import Store, StoreOptions

READ_BYTES = 128 * 1024
PAGE = 16384
FRAME_HEADER = 24
CHECKPOINT_BYTES = 4 * 1024 * 1024
SENDER = "127.0.0.1:5000"


def thread_cpu(tid: int) -> tuple[float, float]:
    """A thread of this process's user and system CPU seconds, from /proc."""
    text = Path(f"/proc/self/task/{tid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def store_case(size: int, total_bytes: int, folder: Path) -> dict[str, float]:
    """Append ``total_bytes`` of ``size``-byte commands; the writing threads' CPU."""
    store = Store.open(folder, StoreOptions())
    try:
        threads = {
            "journal": store.journal._thread.native_id,
            "checkpoint": store.journal._checkpointer._thread.native_id,
        }
        store.save_room(
            RoomRecord(1, "bench", "", "", False, False, False, True, {}, 0)
        )
        wires = [encode_frame(140, os.urandom(size)) for _ in range(64)]
        per_read = max(1, READ_BYTES // len(wires[0]))
        commands = max(1, total_bytes // len(wires[0]))
        before = {name: thread_cpu(tid) for name, tid in threads.items() if tid}
        began = time.monotonic()
        sent = 0
        while sent < commands:
            block = [wires[(sent + i) % len(wires)] for i in range(per_read)]
            first = store.allocate_seqs(len(block))
            block_size = sum(map(len, block))
            store.append_block(first, 1, 140, block_size, block, SENDER, time.time())
            sent += len(block)
            time.sleep(0.0005)

        if not store.journal.flush(120.0):
            raise RuntimeError("the journal did not write everything in 120 s")

        elapsed = time.monotonic() - began
        after = {name: thread_cpu(threads[name]) for name in before}
    finally:
        store.close(10.0)

    figures = {"mb": sent * len(wires[0]) / 1e6, "commands": sent, "seconds": elapsed}
    for name in ("journal", "checkpoint"):
        (user0, system0), (user1, system1) = before[name], after[name]
        figures[f"{name}_user"] = user1 - user0
        figures[f"{name}_system"] = system1 - system0

    figures["user"] = figures["journal_user"] + figures["checkpoint_user"]
    figures["system"] = figures["journal_system"] + figures["checkpoint_system"]
    return figures


def floor_case(total_bytes: int, folder: Path) -> dict[str, float]:
    """Write ``total_bytes`` as SQLite's WAL would, without SQLite."""
    page = os.urandom(PAGE)
    header = os.urandom(FRAME_HEADER)
    wal = os.open(folder / "wal", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    db = os.open(folder / "db", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    before = os.times()
    db_offset = 0
    pages = 0
    try:
        for _ in range(max(1, total_bytes // PAGE)):
            offset = 32 + pages * (FRAME_HEADER + PAGE)
            os.pwrite(wal, header, offset)
            os.pwrite(wal, page, offset + FRAME_HEADER)
            pages += 1
            if pages * PAGE >= CHECKPOINT_BYTES:
                os.fdatasync(wal)
                for index in range(pages):
                    at = 32 + index * (FRAME_HEADER + PAGE) + FRAME_HEADER
                    os.pwrite(db, os.pread(wal, PAGE, at), db_offset)
                    db_offset += PAGE

                os.fdatasync(db)
                pages = 0
    finally:
        os.close(wal)
        os.close(db)

    after = os.times()
    return {
        "mb": total_bytes / 1e6,
        "commands": 0,
        "user": after.user - before.user,
        "system": after.system - before.system,
        "seconds": after.elapsed - before.elapsed,
    }


def emit(text: str) -> None:
    """Write one line of the report."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def report(label: str, figures: dict[str, float]) -> str:
    cpu = figures["user"] + figures["system"]
    line = (
        f"{label:14s} {figures['mb']:7.0f} MB  user {figures['user']:5.2f} s  "
        f"system {figures['system']:5.2f} s  = {1e3 * cpu / figures['mb']:5.2f} ms/MB"
    )
    if figures["commands"]:
        line += f"  {1e6 * cpu / figures['commands']:6.2f} us/command"

    if "journal_user" in figures:
        journal = figures["journal_user"] + figures["journal_system"]
        checkpoint = figures["checkpoint_user"] + figures["checkpoint_system"]
        line += (
            f"  (journal {1e3 * journal / figures['mb']:4.2f}, "
            f"checkpoint {1e3 * checkpoint / figures['mb']:4.2f})"
        )

    return line


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0, help="MB per case")
    parser.add_argument("--sizes", default="64,1024,4096,65536")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    total = int(args.mb * 1e6)
    emit(f"Store writing threads' CPU per stored MB ({os.cpu_count()} cores, shared)")
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as temp:
        for round_number in range(args.rounds):
            for size in [int(text) for text in args.sizes.split(",")]:
                folder = Path(temp) / f"store-{round_number}-{size}"
                figures = store_case(size, total, folder)
                shutil.rmtree(folder)
                emit(report(f"store {size} B", figures))

            folder = Path(temp) / f"floor-{round_number}"
            folder.mkdir()
            emit(report("floor (no SQL)", floor_case(total, folder)))
            shutil.rmtree(folder)

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
