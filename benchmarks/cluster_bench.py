"""Cluster benchmark: room commands through three Raft nodes against one relay.

Run from the repository root::

    .venv/bin/python benchmarks/cluster_bench.py            # ~3 minutes
    .venv/bin/python benchmarks/cluster_bench.py --quick --markdown

Every node is a real ``mixer-console --no-ui`` process on 127.0.0.1 with its own
temporary data directory (tests/cluster_nodes.py starts them). The sender is a
client of one node and the receiver a client of another (both followers), so
each command crosses the Raft log before the receiver sees it. The same cases
run against one relay without peers (the single-node path) for comparison.

Cases:

throughput S
    The sender streams room commands (type 150: stored, never merged) of S
    payload bytes, keeping at most a window of commands not yet received, for a
    bounded time and byte count. cmd/s and MB/s (wire bytes, 1 MB = 10^6 B) are
    counted at the receiver, from the first send to the last receipt.
Payload bytes are dots (which pysyncobj's zlib squeezes to nothing) unless
``--payload random`` (incompressible, like images or packed meshes).

latency S @ R/s
    Timestamped commands of S bytes sent at a fixed rate R for a few seconds;
    p50/p99 are send-to-receive times (one clock: both clients live in this
    process).
peak RSS per node
    The largest resident memory of each node (its process tree) sampled every
    0.2 s over the cluster's throughput and latency cases.
failover
    The leader is killed with SIGKILL while the sender (on a surviving node)
    sends a probe every 10 ms; the figure is the time from the kill to the
    receipt, on the other survivor, of the first probe sent after the kill.

The bench process (clients, asyncio) shares the machine's cores with the nodes.
"""

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_proc  # noqa: E402

from tests.cluster_nodes import (  # noqa: E402
    Node,
    leader_of,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
)
from tests.mixer_client import MixerClient, room_command  # noqa: E402

KIND = 150
STAMP = struct.Struct("<dI")  # send time, sequence number
MB = 1_000_000
# What a payload is made of past its stamp (--payload sets it).
PADDING = {"dots": lambda size: b"." * size, "random": os.urandom}
padding = b""
# A node still applying the previous case's backlog can take long to see a room.
PAIR_SECONDS = 60


@dataclass
class Row:
    setup: str
    case: str
    commands_per_second: float | None = None
    mb_per_second: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""


async def pair(
    sender_port: int, receiver_port: int, room: str
) -> tuple[MixerClient, MixerClient]:
    sender = await MixerClient.connect(sender_port)
    receiver = await MixerClient.connect(receiver_port)
    await sender.handshake("sender")
    await receiver.handshake("receiver")
    await sender.create_room(room)
    with anyio.fail_after(PAIR_SECONDS):
        while True:
            rooms = await receiver.list_rooms()
            if rooms.get(room, {}).get("joinable"):
                break

            await anyio.sleep(0.05)

    await receiver.join_room(room)
    return sender, receiver


async def close(*clients: MixerClient) -> None:
    for client in clients:
        await client.aclose()

    # The room's deletion is announced to every client: let it pass before the
    # next case's clients connect and handshake.
    await anyio.sleep(0.3)


def body(size: int, sequence: int) -> bytes:
    stamp = STAMP.pack(time.monotonic(), sequence)
    return stamp + padding[: max(0, size - len(stamp))]


async def throughput(
    sender: MixerClient,
    receiver: MixerClient,
    size: int,
    seconds: float,
    max_bytes: int,
) -> tuple[float, float, str]:
    window = max(4, min(4096, (8 * 1024 * 1024) // max(size, 1)))
    received = 0
    sent = 0
    done = anyio.Event()
    wire_size = len(room_command(KIND, body(size, 0)))
    frame = room_command(KIND, body(size, 0))
    started = time.monotonic()
    deadline = started + seconds
    last = started

    async def receive() -> None:
        nonlocal received, last
        with anyio.move_on_after(seconds + 30):
            while not done.is_set() or received < sent:
                got = await receiver.receive(timeout=seconds + 30)
                if got.kind == KIND:
                    received += 1
                    last = time.monotonic()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(receive)
        while time.monotonic() < deadline and sent * wire_size < max_bytes:
            if sent - received >= window:
                await anyio.sleep(0.0005)
                continue

            await sender.send_raw(frame)
            sent += 1

        done.set()

    elapsed = max(last - started, 1e-9)
    note = f"{sent} sent, {received} received"
    return received / elapsed, received * wire_size / elapsed / MB, note


async def latency(
    sender: MixerClient, receiver: MixerClient, size: int, rate: float, seconds: float
) -> tuple[float, float, str]:
    count = int(rate * seconds)
    delays: list[float] = []

    async def receive() -> None:
        with anyio.move_on_after(seconds + 15):
            while len(delays) < count:
                got = await receiver.receive(timeout=seconds + 15)
                if got.kind == KIND:
                    sent_at, _ = STAMP.unpack_from(got.payload)
                    delays.append(time.monotonic() - sent_at)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(receive)
        start = time.monotonic()
        for sequence in range(count):
            await anyio.sleep(max(0.0, start + sequence / rate - time.monotonic()))
            await sender.send_raw(room_command(KIND, body(size, sequence)))

    if len(delays) < 2:
        return float("nan"), float("nan"), f"{len(delays)}/{count} received"

    cuts = statistics.quantiles(delays, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, f"{len(delays)}/{count} received"


async def failover(nodes: list[Node]) -> tuple[float, str]:
    leader = leader_of(nodes)
    survivors = [node for node in nodes if node is not leader]
    sender, receiver = await pair(survivors[0].port, survivors[1].port, "failover")
    first_after: list[float] = []
    killed_at = 0.0

    async def probe() -> None:
        sequence = 0
        while not first_after:
            await sender.send_raw(room_command(KIND, body(64, sequence)))
            sequence += 1
            await anyio.sleep(0.01)

    async def receive() -> None:
        with anyio.move_on_after(30):
            while True:
                got = await receiver.receive(timeout=30)
                if got.kind != KIND:
                    continue

                sent_at, _ = STAMP.unpack_from(got.payload)
                if killed_at and sent_at > killed_at:
                    first_after.append(time.monotonic())
                    return

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(probe)
        tasks.start_soon(receive)
        await anyio.sleep(1.0)
        killed_at = time.monotonic()
        leader.kill()

    await sender.aclose()
    await receiver.aclose()
    if not first_after:
        return float("nan"), "no command got through within 30 s"

    return first_after[0] - killed_at, f"killed {leader.name}"


async def run_setup(
    setup: str, ports: tuple[int, int], sizes: list[int], seconds: float
) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        sender, receiver = await pair(*ports, f"tp-{size}")
        max_bytes = 400 * MB if size < 1024 * 1024 else 300 * MB
        per_second, mb, note = await throughput(
            sender, receiver, size, seconds, max_bytes
        )
        rows.append(Row(setup, f"throughput {size} B", per_second, mb, note=note))
        report(rows[-1])
        await close(sender, receiver)

    for size, rate in ((256, 1000.0), (65536, 100.0), (4 * 1024 * 1024, 5.0)):
        if size not in sizes:
            continue

        case = f"latency {size} B @ {rate:g}/s"
        try:
            sender, receiver = await pair(*ports, f"lat-{size}")
        except TimeoutError:
            rows.append(Row(setup, case, note=f"room not seen in {PAIR_SECONDS} s"))
            continue

        p50, p99, note = await latency(sender, receiver, size, rate, 5.0)
        rows.append(Row(setup, case, p50_ms=p50, p99_ms=p99, note=note))
        report(rows[-1])
        await close(sender, receiver)

    return rows


async def main_async(arguments: argparse.Namespace) -> list[Row]:
    global padding
    sizes = [int(size) for size in arguments.sizes.split(",")]
    padding = PADDING[arguments.payload](max(sizes))
    seconds = 3.0 if arguments.quick else 8.0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as scratch:
        base = Path(arguments.keep) if arguments.keep else Path(scratch)
        single = Node("single", base / "single")
        nodes = make_nodes(base, 3)
        try:
            if not arguments.cluster_only:
                single.start([])
                rows += await run_setup(
                    "1 node", (single.port, single.port), sizes, seconds
                )
                single.stop()

            start_all(nodes)
            wait_available(nodes)
            monitors = [bench_proc.Monitor(node.process.pid, 0.2) for node in nodes]
            leader = leader_of(nodes)
            followers = [node for node in nodes if node is not leader]
            rows += await run_setup(
                "3 nodes", (followers[0].port, followers[1].port), sizes, seconds
            )
            rows.append(peak_rss(nodes, leader, monitors))
            report(rows[-1])
            for node in nodes:
                node.stop()

            for attempt in range(arguments.failovers):
                fresh = make_nodes(base / f"failover{attempt}", 3)
                try:
                    start_all(fresh)
                    wait_available(fresh)
                    took, note = await failover(fresh)
                finally:
                    stop_all(fresh)

                rows.append(Row("3 nodes", "failover", p50_ms=took * 1000, note=note))
                report(rows[-1])
        finally:
            stop_all([single, *nodes])

    return rows


def peak_rss(
    nodes: list[Node], leader: Node, monitors: list[bench_proc.Monitor]
) -> Row:
    """Each node's largest RSS over the cluster's cases (pysyncobj keeps its
    log in memory until it compacts it)."""
    peaks = []
    for node, monitor in zip(nodes, monitors, strict=True):
        monitor.stop()
        peak = monitor.peak_rss_mb()
        role = "leader" if node is leader else "follower"
        peaks.append(f"{role} {peak:,.0f} MiB" if peak else f"{role} not sampled")

    return Row("3 nodes", "peak RSS per node", note=", ".join(peaks))


def report(row: Row) -> None:
    sys.stdout.write(f"{row}\n")
    sys.stdout.flush()


def markdown(rows: list[Row]) -> str:
    def cell(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| setup | case | cmd/s | MB/s | p50 ms | p99 ms | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.setup} | {row.case} | {cell(row.commands_per_second, 0)} | "
            f"{cell(row.mb_per_second)} | {cell(row.p50_ms)} | {cell(row.p99_ms)} | "
            f"{row.note} |"
        )

    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per case")
    parser.add_argument(
        "--sizes",
        default="100,256,4096,65536,1048576,4194304",
        help="payload sizes in bytes, comma-separated",
    )
    parser.add_argument("--failovers", type=int, default=3, help="failover runs")
    parser.add_argument("--payload", choices=sorted(PADDING), default="dots")
    parser.add_argument(
        "--cluster-only", action="store_true", help="skip the single relay"
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--keep", help="run the nodes in this folder and keep it (their logs)"
    )
    arguments = parser.parse_args()
    rows = anyio.run(main_async, arguments)
    if arguments.markdown:
        sys.stdout.write(markdown(rows) + "\n")


if __name__ == "__main__":
    main()
