"""Load benchmark for Mixer relays: ours (mixer_console), the original, the bare limit.

Run from the repository root::

    .venv/bin/python benchmarks/relay_bench.py --relay both \
        --original-path /tmp/mixer-ref
    .venv/bin/python benchmarks/relay_bench.py --quick --relay original --markdown

Every relay runs as a fresh subprocess per case, listening on 127.0.0.1, and is
driven by forked client processes (never the relay's own process). Clients use
an independent codec (bench_wire.py) so both relays see identical bytes. The
relay's CPU (utime+stime of its process tree, /proc/<pid>/stat; 100 % = one
core) and RSS (peak of VmRSS sampled every 50 ms from /proc/<pid>/status) are
measured for each case.

Scenarios:

fan-out 1->N, size S
    One sender creates a room, N receivers join it, then the sender streams
    room commands (type 140, stored in history, never merged) of S payload
    bytes for a bounded time and a bounded byte count. The sender keeps at most
    a window of ~8 MiB (at most 4096 frames) not yet delivered to every
    receiver, so relay queues stay bounded and the run measures sustained
    throughput. msgs/s and MB/s count deliveries at the receivers (frame bytes,
    header included, 1 MB = 10^6 B) from the first send to the last delivery.
    Latency: after the stream has drained, timestamped probe frames are sent at
    a fixed modest rate; p50/p99 are one-way send->receive times of those, so
    they show per-message cost, not queueing under saturation.
join H x S
    A creator uploads H room commands of S bytes and sends CONTENT; then a
    joiner measures JOIN_ROOM sent -> JOIN_ROOM reply received (repeated a few
    times, new connection each time), checking that CLEAR_CONTENT and every
    history command arrived, in order, before the reply. p50/p99 columns hold
    the median and the worst join time; msgs/s and MB/s are history frames and
    bytes over the median join time.
rooms R x A @ F/s
    R rooms of A artists; each artist sends 256-byte commands at F per second
    for D seconds. CPU is measured over the sending window; latency over all
    deliveries; "5 s" in the notes is the share of the expected deliveries
    (each command reaches the A-1 other members) that arrived by 5 s after
    sending stopped.
idle C clients
    C clients connect and do the add-on's handshake (CLIENT_ID, LIST_CLIENTS,
    LIST_ROOMS), then stay idle; CPU is measured over a few seconds after a
    settling second. p50/p99 hold the handshake time.
bare
    The bare limit: the same client code against bench_bare.py, a forwarder
    with no relay logic (fan-out: bytes from the sender copied to every
    receiver; join: a canned CLEAR_CONTENT + history + JOIN_ROOM). "vs bare" is
    the relay's msgs/s as a share of the bare figure for the same case.

Every wait is bounded; a case that fails or times out is reported as such in
the notes column instead of hanging the run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from array import array
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bench_clients as clients
import bench_proc as proc
import bench_wire as wire
from bench_clients import Result

REPO = Path(__file__).resolve().parent.parent
CTX = multiprocessing.get_context("fork")
MIB = 1024 * 1024


@dataclass
class Settings:
    """Sizes and durations of every case (full run or --quick)."""

    receivers: list[int]
    sizes: list[int]
    duration: float
    probes_small: tuple[int, float]
    probes_large: tuple[int, float]
    joins: list[tuple[int, int]]
    join_repeats: int
    rooms: int
    artists: int
    rate: float
    rooms_duration: float
    idle_clients: int
    idle_seconds: float
    receiver_procs: int = 2
    drain_timeout: float = 20.0


FULL = Settings(
    receivers=[1, 8, 32],
    sizes=[64, 4096, MIB],
    duration=3.0,
    probes_small=(200, 200.0),
    probes_large=(20, 10.0),
    joins=[(10000, 1024), (100, MIB)],
    join_repeats=3,
    rooms=50,
    artists=4,
    rate=30.0,
    rooms_duration=10.0,
    idle_clients=200,
    idle_seconds=5.0,
)

QUICK = Settings(
    receivers=[1, 8],
    sizes=[64, 4096, MIB],
    duration=1.0,
    probes_small=(50, 100.0),
    probes_large=(5, 10.0),
    joins=[(1000, 1024), (10, MIB)],
    join_repeats=2,
    rooms=10,
    artists=4,
    rate=30.0,
    rooms_duration=3.0,
    idle_clients=50,
    idle_seconds=2.0,
)


@dataclass
class Row:
    """One line of the table; None prints as '-'."""

    scenario: str
    relay: str
    msgs_s: float | None = None
    mb_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu: float | None = None
    rss_mb: float | None = None
    share: float | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, text: str) -> Row:
        self.notes.append(text)
        return self


# ---------------------------------------------------------------- helpers


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def samples(results: list[Result], key: str) -> list[float]:
    values = array("d")
    for result in results:
        values.frombytes(result[key])
    return values.tolist()


def size_label(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


class Launcher:
    """Builds the RelaySpec of each relay for one case, on a fresh port."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log_dir = Path(args.log_dir)

    def spec(self, label: str, bare_args: list[str]) -> proc.RelaySpec:
        port = proc.free_port()
        if label == "ours":
            return proc.ours_spec(port, str(REPO), self.args.ours_arg)
        if label == "original":
            return proc.original_spec(port, self.args.original_path)
        return proc.bare_spec(port, bare_args)

    @contextmanager
    def running(
        self, label: str, bare_args: list[str]
    ) -> Iterator[tuple[proc.RelayProcess, proc.Monitor] | str]:
        """A started relay and its monitor, or an error text."""
        relay = proc.RelayProcess(self.spec(label, bare_args), self.log_dir)
        monitor = proc.Monitor(relay.pid)
        try:
            problem = relay.wait_ready(10.0)
            yield problem if problem else (relay, monitor)
        finally:
            monitor.stop()
            relay.stop()


def wait_results(pipes: list[Connection], timeout: float) -> list[Result] | str:
    """One dict from each pipe, or an error text at the deadline."""
    deadline = time.monotonic() + timeout
    results: list[Result] = []
    for pipe in pipes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not pipe.poll(remaining):
            return "timeout waiting for clients"
        try:
            results.append(pipe.recv())
        except EOFError:
            return "a client process died"
    errors = [r["error"] for r in results if "error" in r]
    return f"failed: {errors[0]}" if errors else results


def wait_ready(
    count: int, queue: Any, pipes: list[Connection], timeout: float
) -> str | None:
    """Collect ``count`` ready reports; an error text when clients fail first."""
    deadline = time.monotonic() + timeout
    got = 0
    while got < count:
        if time.monotonic() > deadline:
            return f"timeout in setup ({got}/{count} clients ready)"
        try:
            got += queue.get(timeout=0.2)
        except Exception:  # queue.Empty; poll the pipes for an early error
            for pipe in pipes:
                if pipe.poll(0):
                    result = pipe.recv()
                    return f"setup failed: {result.get('error', result)}"
    return None


def start(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    """A forked client process and the pipe its result comes back on."""
    parent, child = CTX.Pipe(duplex=False)
    process = CTX.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    child.close()
    return process, parent


def reap(processes: list[Any]) -> None:
    """Join the client processes this run started; terminate stragglers."""
    for process in processes:
        process.join(5.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


# ---------------------------------------------------------------- fan-out


def fanout_case(
    launcher: Launcher, label: str, settings: Settings, n: int, size: int
) -> Row:
    row = Row(f"fan-out 1->{n}, {size_label(size)}", label)
    probes = settings.probes_large if size >= MIB else settings.probes_small
    bare_args = ["--mode", "fanout", "--receivers", str(n)]
    with launcher.running(label, bare_args) as started:
        if isinstance(started, str):
            return row.fail(f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.FanoutConfig(
            port=relay.spec.port,
            bare=label == "bare",
            room=f"bench-fanout-{n}-{size}",
            payload_size=size,
            receivers=n,
            duration=settings.duration,
            cap_bytes=min(1024 * MIB, 4096 * MIB // n),
            probe_count=probes[0],
            probe_rate=probes[1],
            drain_timeout=settings.drain_timeout,
        )
        outcome = run_fanout(cfg, settings)
        if isinstance(outcome, str):
            return row.fail(outcome)
        sender, receivers = outcome
        fill_fanout(row, cfg, sender, receivers, monitor)
        if not relay.alive():
            row.fail("relay died")
    return row


def run_fanout(
    cfg: clients.FanoutConfig,
    settings: Settings,
    on_sent: Callable[[Result], None] | None = None,
) -> tuple[Result, list[Result]] | str:
    """Run one fan-out; ``on_sent`` gets the sender's result while the receivers
    are still in the room (so the room, and its history, still exists)."""
    delivered = CTX.RawArray("q", cfg.receivers)
    ready, go, stop, queue = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    sender, sender_pipe = start(clients.sender_main, cfg, delivered, ready, go)
    processes = [sender]
    try:
        deadline = time.monotonic() + clients.SETUP_TIMEOUT
        while not ready.wait(0.1):
            if sender_pipe.poll(0) or time.monotonic() > deadline:
                return "sender setup failed"
        pipes = []
        for indices in split(list(range(cfg.receivers)), settings.receiver_procs):
            process, pipe = start(
                clients.receivers_main, cfg, indices, delivered, queue, stop
            )
            processes.append(process)
            pipes.append(pipe)
        problem = wait_ready(cfg.receivers, queue, pipes, clients.SETUP_TIMEOUT * 2)
        if problem:
            return problem
        go.set()
        probe_time = cfg.probe_count / cfg.probe_rate
        limit = cfg.duration + 2 * cfg.drain_timeout + probe_time + 10
        sent = wait_results([sender_pipe], limit)
        if on_sent is not None and not isinstance(sent, str):
            on_sent(sent[0])
        stop.set()
        received = wait_results(pipes, 15.0)
        if isinstance(sent, str) or isinstance(received, str):
            return sent if isinstance(sent, str) else str(received)
        return sent[0], received
    finally:
        stop.set()
        go.set()
        reap(processes)


def fill_fanout(
    row: Row,
    cfg: clients.FanoutConfig,
    sender: Result,
    receivers: list[Result],
    monitor: proc.Monitor,
) -> None:
    deliveries = sum(r["bulk"] for r in receivers)
    last = max(r["last_bulk"] for r in receivers)
    elapsed = last - sender["started"]
    if deliveries and elapsed > 0:
        row.msgs_s = deliveries / elapsed
        row.mb_s = deliveries * cfg.frame_size / elapsed / 1e6
    latencies = samples(receivers, "latencies")
    row.p50_ms = percentile(latencies, 0.50)
    row.p99_ms = percentile(latencies, 0.99)
    row.cpu = monitor.cpu_percent(sender["started"], sender["drained_at"])
    row.rss_mb = monitor.peak_rss_mb()
    expected = sender["sent"] * cfg.receivers
    sent_mb = sender["sent"] * cfg.frame_size / 1e6
    row.notes.append(f"sent {sender['sent']} ({sent_mb:.0f} MB)")
    if not sender["drained"]:
        row.notes.append(f"timeout: delivered {deliveries}/{expected}")
    elif not sender["probes_drained"]:
        row.notes.append("timeout: probes not all delivered")
    add_client_problems(row, receivers)


def add_client_problems(row: Row, results: list[Result]) -> None:
    errors = sum(r.get("errors", 0) for r in results)
    eof = sum(
        len(r["eof"]) if isinstance(r["eof"], list) else r["eof"] for r in results
    )
    if errors:
        row.notes.append(f"{errors} SEND_ERROR")
    if eof:
        row.notes.append(f"{eof} clients disconnected")


# ---------------------------------------------------------------- join


def join_case(
    launcher: Launcher, label: str, settings: Settings, count: int, size: int
) -> Row:
    row = Row(f"join {count} x {size_label(size)}", label)
    bare_args = ["--mode", "join", "--history-count", str(count)]
    bare_args += ["--payload-size", str(size)]
    with launcher.running(label, bare_args) as started:
        if isinstance(started, str):
            return row.fail(f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.JoinConfig(
            port=relay.spec.port,
            bare=label == "bare",
            room="bench-join",
            payload_size=size,
            count=count,
            joins=settings.join_repeats,
            timeout=60.0,
        )
        _, pipe = start(clients.join_main, cfg)
        outcome = wait_results([pipe], cfg.timeout * (cfg.joins + 2))
        if isinstance(outcome, str):
            return row.fail(outcome)
        fill_join(row, cfg, outcome[0], monitor)
        if not relay.alive():
            row.fail("relay died")
    return row


def fill_join(
    row: Row, cfg: clients.JoinConfig, result: Result, monitor: proc.Monitor
) -> None:
    joins = result["joins"]
    good = [j for j in joins if "error" not in j and j["ok"]]
    if not cfg.bare:
        row.notes.append(f"upload {result['upload_seconds']:.2f} s")
    if len(good) < len(joins) or not joins:
        bad = (joins or [{"error": "no join"}])[-1]
        text = bad.get("error") or f"got {bad['frames']}/{cfg.count} in order"
        row.notes.append(f"failed: {text}")
    if not good:
        return
    times = [j["seconds"] for j in good]
    median = percentile(times, 0.5) or 0.0
    frame = wire.HEADER.size + cfg.payload_size
    row.msgs_s = cfg.count / median
    row.mb_s = cfg.count * frame / median / 1e6
    row.p50_ms, row.p99_ms = median * 1000.0, max(times) * 1000.0
    row.cpu = monitor.cpu_percent(good[0]["started"], good[-1]["joined_at"])
    row.rss_mb = monitor.peak_rss_mb()
    row.notes.append(f"{len(good)} joins")


# ---------------------------------------------------------------- rooms


def rooms_case(launcher: Launcher, label: str, settings: Settings) -> Row:
    cfg_name = (
        f"rooms {settings.rooms} x {settings.artists} @ {settings.rate:.0f}/s, 256 B"
    )
    row = Row(cfg_name, label)
    with launcher.running(label, []) as started:
        if isinstance(started, str):
            return row.fail(f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.RoomsConfig(
            port=relay.spec.port,
            artists_per_room=settings.artists,
            rate=settings.rate,
            payload_size=256,
            duration=settings.rooms_duration,
            grace=5.0,
        )
        outcome = run_rooms(cfg, settings)
        if isinstance(outcome, str):
            return row.fail(outcome)
        began, results = outcome
        fill_rooms(row, cfg, began, results, monitor)
        if not relay.alive():
            row.fail("relay died")
    return row


def run_rooms(
    cfg: clients.RoomsConfig, settings: Settings
) -> tuple[float, list[Result]] | str:
    names = [f"bench-room-{i}" for i in range(settings.rooms)]
    go, queue = CTX.Event(), CTX.Queue()
    start_at = CTX.Value("d", 0.0)
    processes, pipes = [], []
    try:
        for rooms in split(names, settings.receiver_procs):
            process, pipe = start(clients.rooms_main, cfg, rooms, queue, start_at, go)
            processes.append(process)
            pipes.append(pipe)
        total = settings.rooms * settings.artists
        problem = wait_ready(total, queue, pipes, clients.SETUP_TIMEOUT * 4)
        if problem:
            return problem
        start_at.value = time.monotonic() + 0.5
        go.set()
        outcome = wait_results(pipes, cfg.duration + cfg.grace + 30.0)
        return outcome if isinstance(outcome, str) else (start_at.value, outcome)
    finally:
        go.set()
        reap(processes)


def fill_rooms(
    row: Row,
    cfg: clients.RoomsConfig,
    began: float,
    results: list[Result],
    monitor: proc.Monitor,
) -> None:
    sent = sum(r["sent"] for r in results)
    delivered = sum(r["delivered"] for r in results)
    expected = sent * (cfg.artists_per_room - 1)
    row.msgs_s = delivered / cfg.duration
    row.mb_s = sum(r["delivered_bytes"] for r in results) / cfg.duration / 1e6
    latencies = samples(results, "latencies")
    row.p50_ms = percentile(latencies, 0.50)
    row.p99_ms = percentile(latencies, 0.99)
    row.cpu = monitor.cpu_percent(began, began + cfg.duration)
    row.rss_mb = monitor.peak_rss_mb()
    share = 100.0 * delivered / expected if expected else 0.0
    row.notes.append(f"5 s: {share:.1f}% delivered")
    row.notes.append(f"sent {sent / cfg.duration:.0f}/s")
    unsent = sum(r["unsent_bytes"] for r in results)
    if unsent:
        row.notes.append(f"{unsent} B never accepted by the relay")
    add_client_problems(row, results)


# ---------------------------------------------------------------- idle


def idle_case(launcher: Launcher, label: str, settings: Settings) -> Row:
    row = Row(f"idle {settings.idle_clients} clients", label)
    with launcher.running(label, []) as started:
        if isinstance(started, str):
            return row.fail(f"failed to start: {started}")
        relay, monitor = started
        outcome = run_idle(relay.spec.port, settings)
        if isinstance(outcome, str):
            return row.fail(outcome)
        (t0, t1), results = outcome
        handshakes = samples(results, "handshakes")
        row.p50_ms = percentile(handshakes, 0.5)
        row.p99_ms = percentile(handshakes, 0.99)
        row.cpu = monitor.cpu_percent(t0, t1)
        row.rss_mb = monitor.peak_rss_mb()
        row.notes.append("p50/p99 = handshake")
        add_client_problems(row, results)
        if not relay.alive():
            row.fail("relay died")
    return row


def run_idle(
    port: int, settings: Settings
) -> tuple[tuple[float, float], list[Result]] | str:
    stop, queue = CTX.Event(), CTX.Queue()
    processes, pipes = [], []
    counts = [len(part) for part in split(list(range(settings.idle_clients)), 2)]
    try:
        for count in counts:
            process, pipe = start(clients.idle_main, port, count, queue, stop)
            processes.append(process)
            pipes.append(pipe)
        problem = wait_ready(settings.idle_clients, queue, pipes, 60.0)
        if problem:
            return problem
        time.sleep(1.0)
        t0 = time.monotonic()
        time.sleep(settings.idle_seconds)
        t1 = time.monotonic()
        stop.set()
        outcome = wait_results(pipes, 15.0)
        return outcome if isinstance(outcome, str) else ((t0, t1), outcome)
    finally:
        stop.set()
        reap(processes)


# ---------------------------------------------------------------- table


COLUMNS = [
    "scenario",
    "relay",
    "msgs/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "CPU %",
    "RSS MB",
    "vs bare",
    "notes",
]


def cells(row: Row) -> list[str]:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    share = "-" if row.share is None else f"{100.0 * row.share:.0f}%"
    return [
        row.scenario,
        row.relay,
        num(row.msgs_s, ",.0f"),
        num(row.mb_s, ",.1f"),
        num(row.p50_ms, ".2f"),
        num(row.p99_ms, ".2f"),
        num(row.cpu, ".0f"),
        num(row.rss_mb, ".1f"),
        share,
        "; ".join(row.notes),
    ]


def render(rows: list[Row], markdown: bool) -> str:
    table = [COLUMNS] + [cells(row) for row in rows]
    return format_table(table, markdown, range(2, 9))


def format_table(
    table: list[list[str]], markdown: bool, numeric: Container[int]
) -> str:
    """Header line then rows, as Markdown or as aligned text (the columns whose
    index is in ``numeric`` right-aligned)."""
    columns = table[0]
    if markdown:
        lines = ["| " + " | ".join(line) + " |" for line in table]
        lines.insert(1, "|" + "|".join(" --- " for _ in columns) + "|")
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    out = []
    for line in table:
        parts = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(parts).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def add_shares(rows: list[Row]) -> None:
    bare = {row.scenario: row for row in rows if row.relay == "bare"}
    for row in rows:
        base = bare.get(row.scenario)
        if row.relay != "bare" and base and base.msgs_s and row.msgs_s:
            row.share = row.msgs_s / base.msgs_s


# ---------------------------------------------------------------- main


def emit(text: str = "", file: Any = None, flush: bool = True) -> None:
    """Write one line of the report (stdout unless told otherwise)."""
    stream = file or sys.stdout
    stream.write(text + "\n")
    if flush:
        stream.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mixer relay load benchmark (see the module docstring)."
    )
    parser.add_argument("--relay", choices=("ours", "original", "both"), default="both")
    parser.add_argument("--original-path", default="/tmp/mixer-ref")
    parser.add_argument(
        "--cases",
        default="fanout,join,rooms,idle",
        help="comma-separated subset of fanout,join,rooms,idle",
    )
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare limit")
    parser.add_argument("--receivers", help="fan-out receiver counts, e.g. 1,8,32")
    parser.add_argument("--sizes", help="fan-out payload sizes in bytes")
    parser.add_argument("--duration", type=float, help="fan-out seconds per case")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        help="extra argument for our relay's command line (repeatable)",
    )
    parser.add_argument("--log-dir", default="/tmp/mixer-bench-logs")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    settings = Settings(**asdict(base))
    if args.receivers:
        settings.receivers = [int(x) for x in args.receivers.split(",")]
    if args.sizes:
        settings.sizes = [int(x) for x in args.sizes.split(",")]
    if args.duration:
        settings.duration = args.duration
    return settings


def relays_from(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The relays to run (bare first) and notes about skipped ones."""
    wanted = ["original", "ours"] if args.relay == "both" else [args.relay]
    notes = []
    if "ours" in wanted and not (REPO / "mixer_console" / "__main__.py").exists():
        wanted.remove("ours")
        notes.append("ours skipped: mixer_console/__main__.py does not exist yet")
    server = Path(args.original_path) / "mixer/broadcaster/apps/server.py"
    if "original" in wanted and not server.exists():
        wanted.remove("original")
        notes.append(f"original skipped: {server} not found")
    return wanted, notes


def plan(args: argparse.Namespace, settings: Settings) -> list[tuple[str, Any]]:
    """(uses bare?, case function taking launcher and label) in run order."""
    cases = set(args.cases.split(","))
    steps: list[tuple[str, Any]] = []
    if "fanout" in cases:
        for n in settings.receivers:
            for size in settings.sizes:
                steps.append(("bare", _bind(fanout_case, settings, n, size)))
    if "join" in cases:
        for count, size in settings.joins:
            steps.append(("bare", _bind(join_case, settings, count, size)))
    if "rooms" in cases:
        steps.append(("", _bind(rooms_case, settings)))
    if "idle" in cases:
        steps.append(("", _bind(idle_case, settings)))
    return steps


def _bind(case: Callable[..., Row], *args: Any) -> Callable[[Launcher, str], Row]:
    return lambda launcher, label: case(launcher, label, *args)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    relays, notes = relays_from(args)
    launcher = Launcher(args)
    rows: list[Row] = []
    emit("\n".join(proc.machine_lines()), flush=True)
    began = time.monotonic()
    for bare, case in plan(args, settings):
        labels = ([bare] if bare and not args.no_bare else []) + relays
        for label in labels:
            row = case(launcher, label)
            rows.append(row)
            emit(
                f"[{time.monotonic() - began:6.1f} s] {' | '.join(cells(row))}",
                file=sys.stderr,
                flush=True,
            )
    add_shares(rows)
    mode = "quick" if args.quick else "full"
    emit(f"Run: {mode}, {time.monotonic() - began:.0f} s; logs in {args.log_dir}")
    for note in notes:
        emit(f"Note: {note}")
    emit()
    emit(render(rows, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
