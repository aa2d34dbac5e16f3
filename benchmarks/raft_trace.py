"""Where the time goes: one small room command followed across three Raft nodes.

Run from the repository root::

    .venv/bin/python benchmarks/raft_trace.py                 # ~1 minute
    .venv/bin/python benchmarks/raft_trace.py --rate 1000 --seconds 5

It starts three real nodes (tests/cluster_nodes.py) whose processes first put
timestamping wrappers around a few functions of the relay and of pysyncobj
(``python benchmarks/raft_trace.py node``; nothing of this is in the relay
itself), sends timestamped 256 B commands at a fixed rate from a client of one
follower to a client of the other, and prints, for each step of the way, the
median and 99th percentile of the time it took. Every process reads the same
clock (CLOCK_MONOTONIC is one clock for the whole machine), so times taken in
different nodes can be subtracted.

The steps, in order (F1: the sender's node, L: the leader, F2: the receiver's):

    F1 read      the sender's socket to F1's proposal of the command
    F1 batch     the proposal to the entry handed to pysyncobj
    F1 queue     handed to pysyncobj to sent to the leader (F1's tick)
    to L         sent by F1 to added to L's log
    L append     added to L's log to the first append that carries it
    to F2        that append to the entry in F2's log
    L commit     in F2's log to committed on L (the replies, L's tick)
    F2 learns    committed on L to F2 knowing it is committed
    F2 wait      F2 knowing to F2 starting to apply it
    F2 apply     applying it to SQLite
    F2 loop      applied to the event loop delivering it
    F2 write     delivered to read by the receiver
"""

import argparse
import atexit
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRACE_VARIABLE = "RAFT_TRACE_FILE"
# The cluster bench's stamp: send time and sequence number, after the header.
STAMP = struct.Struct("<dI")
PAYLOAD_OFFSET = 14
KIND = 150

STEPS = (
    ("F1 read", "sent", "f1_read"),
    ("F1 batch", "f1_read", "f1_propose"),
    ("F1 queue", "f1_propose", "f1_to_leader"),
    ("to L", "f1_to_leader", "l_log"),
    ("L append", "l_log", "l_append"),
    ("to F2", "l_append", "f2_log"),
    ("L commit", "f2_log", "l_commit"),
    ("F2 learns", "l_commit", "f2_commit"),
    ("F2 wait", "f2_commit", "f2_apply_start"),
    ("F2 apply", "f2_apply_start", "f2_apply_end"),
    ("F2 loop", "f2_apply_end", "f2_deliver"),
    ("F2 write", "f2_deliver", "received"),
)


# In a node process


def _sequence_of(wire: bytes) -> int | None:
    if len(wire) < PAYLOAD_OFFSET + STAMP.size:
        return None

    return int(STAMP.unpack_from(wire, PAYLOAD_OFFSET)[1])


def install(trace_path: Path) -> None:
    """Wrap the functions a command passes through; write the records at exit."""
    from pysyncobj.journal import FileJournal
    from pysyncobj.tcp_connection import TcpConnection

    from relay.broadcaster import Broadcaster
    from relay.cluster import ClusterLink
    from store.apply import CommandCommitted, EntryApplier

    records: list[tuple[Any, ...]] = []
    clock = time.monotonic
    highest_commit = [0]

    def wrap(owner: type, name: str, before: Callable[..., None]) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    def on_propose_command(
        _link: Any, _client: str, _room: str, _kind: int, wire: bytes
    ) -> None:
        records.append(("read", _sequence_of(bytes(wire)), clock()))

    def on_propose(_link: Any, number: int, operations: list[tuple[Any, ...]]) -> None:
        sequences = [
            _sequence_of(op[5]) for op in operations if op and op[0] == "command"
        ]
        records.append(
            ("propose", number, [s for s in sequences if s is not None], clock())
        )

    def on_send(_connection: Any, message: Any) -> None:
        if not isinstance(message, dict):
            return

        if message.get("type") == "apply_command":
            records.append(("to_leader", message["command"], clock()))
        elif message.get("type") == "append_entries":
            indexes = [entry[1] for entry in message.get("entries", ())]
            records.append(("append", indexes, message.get("commit_index"), clock()))

    def on_log_add(_journal: Any, command: bytes, index: int, _term: int) -> None:
        records.append(("log", index, command, clock()))

    def on_commit(_journal: Any, index: int) -> None:
        if index > highest_commit[0]:
            highest_commit[0] = index
            records.append(("commit", index, clock()))

    apply_original = EntryApplier.apply

    def traced_apply(applier: Any, raft_index: int, *args: Any) -> Any:
        started = clock()
        result = apply_original(applier, raft_index, *args)
        records.append(("apply", raft_index, started, clock()))
        return result

    def on_deliver(_broadcaster: Any, events: Any) -> None:
        now = clock()
        for event in events:
            if type(event) is CommandCommitted:
                records.append(("deliver", _sequence_of(event.wire), now))

    wrap(ClusterLink, "propose_command", on_propose_command)
    wrap(ClusterLink, "_propose", on_propose)
    wrap(TcpConnection, "send", on_send)
    wrap(FileJournal, "add", on_log_add)
    wrap(FileJournal, "setRaftCommitIndex", on_commit)
    EntryApplier.apply = traced_apply  # type: ignore[method-assign]
    wrap(Broadcaster, "apply_committed", on_deliver)
    atexit.register(_dump, trace_path, records)


def _entry_number(command: bytes) -> tuple[str, int] | None:
    from pysyncobj import pickle

    try:
        _function, arguments = pickle.loads(command[1:])
        return str(arguments[0]), int(arguments[1])
    except Exception:
        return None


def _dump(trace_path: Path, records: list[tuple[Any, ...]]) -> None:
    # Commands are decoded here, after the run, not while it is timed.
    with open(trace_path, "w") as out:
        for record in records:
            if record[0] == "to_leader":
                record = ("to_leader", _entry_number(record[1]), record[2])
            elif record[0] == "log":
                record = ("log", record[1], _entry_number(record[2]), record[3])

            out.write(json.dumps(record) + "\n")


def node_main() -> None:
    """Run ``mixer-console --no-ui`` with the wrappers installed."""
    install(Path(os.environ[TRACE_VARIABLE]))
    from mixer_console.cli import main

    sys.argv = ["mixer-console", *sys.argv[2:]]
    sys.exit(main())


# In the benchmark process


def first_times(path: Path) -> dict[str, Any]:
    """Read one node's records into maps from what they are about to a time."""
    by_sequence: dict[str, dict[int, float]] = {"read": {}, "deliver": {}}
    proposals: dict[int, tuple[list[int], float]] = {}
    to_leader: dict[tuple[str, int], float] = {}
    log_by_index: dict[int, float] = {}
    index_of_number: dict[tuple[str, int], int] = {}
    appends: list[tuple[list[int], float]] = []
    commits: list[tuple[int, float]] = []
    applies: dict[int, tuple[float, float]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        kind = record[0]
        if kind in by_sequence and record[1] is not None:
            by_sequence[kind].setdefault(record[1], record[2])
        elif kind == "propose":
            proposals.setdefault(record[1], (record[2], record[3]))
        elif kind == "to_leader" and record[1] is not None:
            to_leader.setdefault(tuple(record[1]), record[2])
        elif kind == "log":
            log_by_index.setdefault(record[1], record[3])
            if record[2] is not None:
                index_of_number.setdefault(tuple(record[2]), record[1])
        elif kind == "append" and record[1]:
            appends.append((record[1], record[3]))
        elif kind == "commit":
            commits.append((record[1], record[2]))
        elif kind == "apply":
            applies.setdefault(record[1], (record[2], record[3]))

    return {
        "read": by_sequence["read"],
        "deliver": by_sequence["deliver"],
        "proposals": proposals,
        "to_leader": to_leader,
        "log": log_by_index,
        "index_of_number": index_of_number,
        "appends": appends,
        "commits": commits,
        "applies": applies,
    }


def first_at_least(pairs: list[tuple[int, float]], index: int) -> float | None:
    """The first time a rising value reached ``index``."""
    for value, at in pairs:
        if value >= index:
            return at

    return None


def breakdown(
    sent: dict[int, float],
    received: dict[int, float],
    f1: dict[str, Any],
    leader: dict[str, Any],
    f2: dict[str, Any],
) -> dict[str, list[float]]:
    """Each step's durations (ms), over the commands every record was found for."""
    first_append: dict[int, float] = {}
    for indexes, at in leader["appends"]:
        for index in indexes:
            first_append.setdefault(index, at)

    number_of_sequence: dict[int, int] = {}
    for number, (sequences, _at) in f1["proposals"].items():
        for sequence in sequences:
            number_of_sequence.setdefault(sequence, number)

    stream = next(
        (key[0] for key in leader["index_of_number"] if key in f1["to_leader"]), None
    )
    steps: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}
    steps["total"] = []
    for sequence, sent_at in sent.items():
        number = number_of_sequence.get(sequence)
        if number is None or sequence not in received or stream is None:
            continue

        index = leader["index_of_number"].get((stream, number))
        if index is None or index not in f2["applies"]:
            continue

        times = {
            "sent": sent_at,
            "f1_read": f1["read"].get(sequence),
            "f1_propose": f1["proposals"][number][1],
            "f1_to_leader": f1["to_leader"].get((stream, number)),
            "l_log": leader["log"].get(index),
            "l_append": first_append.get(index),
            "f2_log": f2["log"].get(index),
            "l_commit": first_at_least(leader["commits"], index),
            "f2_commit": first_at_least(f2["commits"], index),
            "f2_apply_start": f2["applies"][index][0],
            "f2_apply_end": f2["applies"][index][1],
            "f2_deliver": f2["deliver"].get(sequence),
            "received": received[sequence],
        }
        if any(value is None for value in times.values()):
            continue

        for name, start, end in STEPS:
            steps[name].append((times[end] - times[start]) * 1000)

        steps["total"].append((received[sequence] - sent_at) * 1000)

    return steps


async def drive(
    sender_port: int, receiver_port: int, rate: float, seconds: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Send timestamped 256 B commands at ``rate``; note send and receive times."""
    from benchmarks.cluster_bench import body, close, pair
    from tests.mixer_client import room_command

    sender, receiver = await pair(sender_port, receiver_port, "trace")
    count = int(rate * seconds)
    sent: dict[int, float] = {}
    received: dict[int, float] = {}

    async def receive() -> None:
        with anyio.move_on_after(seconds + 15):
            while len(received) < count:
                got = await receiver.receive(timeout=seconds + 15)
                if got.kind == KIND:
                    _sent_at, sequence = STAMP.unpack_from(got.payload)
                    received[sequence] = time.monotonic()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(receive)
        start = time.monotonic()
        for sequence in range(count):
            await anyio.sleep(max(0.0, start + sequence / rate - time.monotonic()))
            frame = room_command(KIND, body(256, sequence))
            sent[sequence] = STAMP.unpack_from(frame, PAYLOAD_OFFSET)[0]
            await sender.send_raw(frame)

    await close(sender, receiver)
    return sent, received


def run(rate: float, seconds: float) -> dict[str, list[float]]:
    from tests.cluster_nodes import leader_of, make_nodes, stop_all, wait_available

    with tempfile.TemporaryDirectory(prefix="raft-trace-") as scratch:
        base = Path(scratch)
        nodes = make_nodes(base, 3)
        for node in nodes:
            node.program = (str(Path(__file__).resolve()), "node")

        try:
            for node in nodes:
                node.launch(
                    [peer for peer in nodes if peer is not node],
                    **{TRACE_VARIABLE: str(base / f"{node.name}.trace")},
                )

            for node in nodes:
                node.wait_started()

            wait_available(nodes)
            leader = leader_of(nodes)
            f1, f2 = [node for node in nodes if node is not leader]
            sent, received = anyio.run(drive, f1.port, f2.port, rate, seconds)
            for node in nodes:
                node.stop()

            return breakdown(
                sent,
                received,
                first_times(base / f"{f1.name}.trace"),
                first_times(base / f"{leader.name}.trace"),
                first_times(base / f"{f2.name}.trace"),
            )
        finally:
            stop_all(nodes)


def main() -> None:
    if sys.argv[1:2] == ["node"]:
        node_main()
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="commands/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    arguments = parser.parse_args()
    steps = run(arguments.rate, arguments.seconds)
    count = len(steps["total"])
    sys.stdout.write(
        f"256 B commands at {arguments.rate:g}/s for {arguments.seconds:g} s, "
        f"{count} traced end to end (target: total p99 < 100 ms)\n"
    )
    sys.stdout.write(f"{'step':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}\n")
    for name, durations in steps.items():
        if len(durations) < 2:
            continue

        cuts = statistics.quantiles(durations, n=100)
        sys.stdout.write(
            f"{name:<10} {cuts[49]:8.2f} {cuts[98]:8.2f} "
            f"{statistics.fmean(durations):8.2f}\n"
        )


if __name__ == "__main__":
    main()
