"""Store benchmark for our relay: what writing every room command to SQLite costs.

Run from the repository root::

    .venv/bin/python benchmarks/store_bench.py            # full run, ~10 minutes
    .venv/bin/python benchmarks/store_bench.py --quick --markdown
    .venv/bin/python benchmarks/store_bench.py --cases join,big --json out.json

Each case starts a fresh relay subprocess (``python -m mixer_console``) on
127.0.0.1 with its own temporary MIXER_DATA_DIR, driven by the forked clients of
bench_clients.py, and samples its CPU and RSS from /proc (bench_proc.py). The
relay's database, ``<data dir>/rooms.sqlite``, is polled read-only from this
process (WAL lets a reader in while the relay writes): the rows with a ``seq``
above the last one seen are read, their ``count`` (commands in the row: a run
of small commands shares one) and ``size`` (wire bytes, header included)
summed, which adds up to ``SELECT sum(count), sum(size) FROM commands`` without
rescanning the table; a full count checks the total at the end.

Sections:

append 1->N, S
    One sender streams room commands (type 140: stored, never merged) of S
    payload bytes to N receivers for a bounded time, as in relay_bench's fan-out
    (no latency probes). "stored cmd/s" and "stored MB/s" are the commands (and
    their wire bytes, 1 MB = 10^6 B) sent, over the time from the first send to
    the first poll that found all of them in the database; "lag s" is how long
    after the last send that was. "deliv msgs/s" counts deliveries at the
    receivers as relay_bench does. CPU covers first send to "all stored". When
    not all commands reach the store, the rates are up to the last stored row,
    and the relay log's count of refused commands (request.refused) is quoted.
fan-out cost 1->N, S
    relay_bench's fan-out case, against this tree and against a git worktree of
    the last commit before the store (861fe79, created in /tmp and removed at
    the end). The two trees alternate, each case is repeated (--runs), and the
    medians are compared; "drop %" is how much slower the store makes the relay
    (negative: it was faster, i.e. noise). "CPU us/msg" is relay CPU time per
    delivery; CPU figures use only the runs that drained (no timeout).
    A third relay takes turns with the two: this tree started with no store
    (storeless_relay.py; --no-storeless leaves it out). 861fe79 predates every
    later feature on the hot path (login, leases, metrics, the console's rates,
    the cluster's hooks), so "drop vs storeless %" is what the store alone
    costs, and "storeless vs no-store %" what those features cost; the target
    stays the drop against 861fe79. Measured on main at f06c081 (2 runs per
    relay, 2 shared cores), those features made 10-14 % of the drop at 1->1
    (the store 15-34 %), and none of it at 1->8 and 1->32 (main without a
    store was as fast as 861fe79 or faster); see the README's store section.
    ``--before DIR`` adds a fourth: the store of an earlier checkout (before
    and after a change, in the same turns).
join H x S
    A creator uploads H commands of S bytes; once the room is joinable the
    database is polled until all H are written, so the joiner's history really
    streams from SQLite (the relay keeps only unwritten commands in memory).
    Then joins are timed as in relay_bench (JOIN_ROOM sent -> reply received,
    every frame checked to arrive in order); MB/s is history wire bytes over the
    median join time (target: at least 200 MB/s).
big H x S
    The same with a 2 GiB history (2048 x 1 MiB, uploaded in 128 MiB chunks so
    the client never holds it whole) and one join. Peak relay RSS is reported
    during the upload, while the store finishes writing, at rest one second
    after the write, and during the join (target: below 150 MB). Skipped when
    the temporary directory has less than 6 GB free. "paced" keeps at most
    128 MiB sent and not yet in the database (the relay refuses room commands
    past MIXER_STORE_MAX_UNWRITTEN_BYTES, 256 MiB by default); "unpaced" sends
    as fast as the relay reads, as an add-on would.

Every wait is bounded, and the whole run stops starting cases after
--max-minutes. Only processes this run started are stopped, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_clients as clients
import bench_proc as proc
import relay_bench as rb
from bench_clients import Result

REPO = rb.REPO
MIB = rb.MIB
CTX = rb.CTX
NOSTORE_COMMIT = "861fe79"
NOSTORE_PATH = "/tmp/mixer-nostore"
DATABASE_NAME = "rooms.sqlite"
BIG_FREE_BYTES = 6 * 10**9
JOIN_TARGET_MB_S = 200.0
BIG_RSS_TARGET_MB = 150.0
FANOUT_TARGET_DROP = 10.0
# The fan-out trees, in order: this one, the commit before the store, this one
# started with no store (benchmarks/storeless_relay.py), and --before's tree.
FANOUT_PREFIXES = ("store", "nostore", "storeless", "before")
# The paced upload keeps at most this much sent and not yet in the database
# (below the relay's default MIXER_STORE_MAX_UNWRITTEN_BYTES, 256 MiB).
UPLOAD_WINDOW = 128 * MIB


@dataclass
class Settings:
    """Sizes, counts and durations of every case (full run or --quick)."""

    append_receivers: list[int]
    append_sizes: list[int]
    append_duration: float
    fanout_receivers: list[int]
    fanout_sizes: list[int]
    fanout_duration: float
    fanout_runs: int
    probes: tuple[int, float]
    joins: list[tuple[int, int]]
    join_repeats: int
    big_count: int
    big_size: int
    write_timeout: float = 120.0
    stall_timeout: float = 10.0


FULL = Settings(
    append_receivers=[1, 8],
    append_sizes=[256, 4096],
    append_duration=3.0,
    fanout_receivers=[1, 8, 32],
    fanout_sizes=[64, 4096],
    fanout_duration=3.0,
    fanout_runs=3,
    probes=(200, 200.0),
    joins=[(10000, 1024), (100, MIB)],
    join_repeats=3,
    big_count=2048,
    big_size=MIB,
)

QUICK = Settings(
    append_receivers=[1, 8],
    append_sizes=[256, 4096],
    append_duration=1.0,
    fanout_receivers=[1, 8],
    fanout_sizes=[64, 4096],
    fanout_duration=1.0,
    fanout_runs=1,
    probes=(50, 100.0),
    joins=[(2000, 1024), (20, MIB)],
    join_repeats=2,
    big_count=256,
    big_size=MIB,
    write_timeout=60.0,
)


# ---------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str = ""  # a format spec for numbers; "" for text


@dataclass(eq=False)
class Section:
    """One table of the report: its columns, its rows (dicts keyed by column)."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def render(self, markdown: bool) -> str:
        table = [[c.title for c in self.columns]]
        table += [[cell(row.get(c.key), c.fmt) for c in self.columns] for row in self]
        numeric = range(1, len(self.columns) - 1)
        heading = f"### {self.title}" if markdown else self.title
        return heading + "\n\n" + rb.format_table(table, markdown, numeric)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if fmt and isinstance(value, int | float):
        return format(value, fmt)
    return str(value)


def new_row(case: str) -> dict[str, Any]:
    return {"case": case, "notes": []}


def fail(row: dict[str, Any], text: str) -> dict[str, Any]:
    row["notes"].append(text)
    return row


CASE = Column("case", "case")
NOTES = Column("notes", "notes")


def append_section() -> Section:
    return Section(
        "Append throughput into the store while relaying",
        [
            CASE,
            Column("delivered_msgs_s", "deliv msgs/s", ",.0f"),
            Column("stored_cmd_s", "stored cmd/s", ",.0f"),
            Column("stored_mb_s", "stored MB/s", ",.1f"),
            Column("lag_s", "lag s", ".2f"),
            Column("cpu", "CPU %", ".0f"),
            Column("rss_mb", "RSS MB", ".1f"),
            NOTES,
        ],
    )


def fanout_section() -> Section:
    return Section(
        "Fan-out cost of the store (medians; store = this tree, "
        f"no store = {NOSTORE_COMMIT}, storeless = this tree without a store)",
        [
            CASE,
            Column("store_msgs_s", "store msgs/s", ",.0f"),
            Column("nostore_msgs_s", "no-store msgs/s", ",.0f"),
            Column("drop", "drop %", ".1f"),
            Column("target", f"drop <= {FANOUT_TARGET_DROP:.0f} %"),
            Column("storeless_msgs_s", "storeless msgs/s", ",.0f"),
            Column("storeless_drop", "drop vs storeless %", ".1f"),
            Column("features_drop", "storeless vs no-store %", ".1f"),
            Column("before_msgs_s", "before msgs/s", ",.0f"),
            Column("gain", "store vs before %", ".1f"),
            Column("store_p50", "store p50 ms", ".2f"),
            Column("nostore_p50", "no-store p50 ms", ".2f"),
            Column("store_cpu", "store CPU %", ".0f"),
            Column("nostore_cpu", "no-store CPU %", ".0f"),
            Column("store_us", "store CPU us/msg", ".2f"),
            Column("nostore_us", "no-store CPU us/msg", ".2f"),
            Column("store_rss", "store RSS MB", ".1f"),
            Column("nostore_rss", "no-store RSS MB", ".1f"),
            NOTES,
        ],
    )


def join_section() -> Section:
    return Section(
        "Join time from the store (history fully written first)",
        [
            CASE,
            Column("join_s", "join s", ".3f"),
            Column("worst_s", "worst s", ".3f"),
            Column("msgs_s", "msgs/s", ",.0f"),
            Column("mb_s", "MB/s", ",.1f"),
            Column("target", f">= {JOIN_TARGET_MB_S:.0f} MB/s"),
            Column("cpu", "CPU %", ".0f"),
            Column("rss_mb", "RSS MB", ".1f"),
            NOTES,
        ],
    )


def big_section() -> Section:
    return Section(
        "Relay RSS with a large stored history",
        [
            CASE,
            Column("upload_s", "upload s", ".1f"),
            Column("upload_mb_s", "upload MB/s", ",.0f"),
            Column("write_s", "write s", ".1f"),
            Column("rss_upload", "RSS upload MB", ".1f"),
            Column("rss_writing", "RSS writing MB", ".1f"),
            Column("rss_rest", "RSS at rest MB", ".1f"),
            Column("rss_join", "RSS join MB", ".1f"),
            Column("join_s", "join s", ".2f"),
            Column("mb_s", "join MB/s", ",.1f"),
            Column("frames", "frames"),
            Column("target", f"join < {BIG_RSS_TARGET_MB:.0f} MB"),
            NOTES,
        ],
    )


# ---------------------------------------------------------------- helpers


class DbPoller:
    """Counts the rows of a relay's ``commands`` table, read-only, in a thread.

    Each poll reads only the rows with a ``seq`` above the largest seen so far:
    the journal writes commands in ``seq`` order and type 140 is never merged,
    so the running totals equal ``SELECT sum(count), sum(size) FROM commands``.
    Samples are (time the poll began, commands, bytes).
    """

    def __init__(
        self, path: Path, interval: float, mirror: Any = None, limit: float = 900.0
    ) -> None:
        self.path = path
        self.mirror = mirror  # a shared counter (RawValue) kept equal to count
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self.count = 0
        self.bytes = 0
        self.errors = 0
        self._last_seq = 0
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> DbPoller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        uri = f"file:{self.path}?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=1.0)
        except sqlite3.Error:
            self.errors += 1
            return None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        deadline = time.monotonic() + self._limit
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                conn = conn or self._connect()
                if conn is not None:
                    self._poll(conn)
                self._stop.wait(self.interval)
        finally:
            if conn is not None:
                conn.close()

    def _poll(self, conn: sqlite3.Connection) -> None:
        began = time.monotonic()
        try:
            # fetchall steps the statement to its end, so no read transaction
            # stays open between polls (it would hold back WAL checkpoints).
            rows = conn.execute(
                "SELECT coalesce(sum(count), 0), coalesce(sum(size), 0), max(seq) "
                "FROM commands WHERE seq > ?",
                [self._last_seq],
            ).fetchall()
        except sqlite3.Error:
            self.errors += 1
            return
        count, size, last = rows[0]
        if count:
            self.count += count
            self.bytes += size
            self._last_seq = last
            if self.mirror is not None:
                self.mirror.value = self.count
        self.samples.append((began, self.count, self.bytes))

    def wait_for(self, target: int, timeout: float, stall: float) -> float | None:
        """The time of the first poll that saw ``target`` commands; None when
        the timeout passes or the count stops growing for ``stall`` seconds."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.count >= target:
                return next(t for t, n, _ in self.samples if n >= target)
            if self.count != last_count:
                last_count, last_change = self.count, time.monotonic()
            elif time.monotonic() - last_change > stall:
                return None
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def full_count(self) -> tuple[int, int] | None:
        """``SELECT sum(count), sum(size) FROM commands``, once (None on error)."""
        conn = self._connect()
        if conn is None:
            return None
        try:
            rows = conn.execute(
                "SELECT coalesce(sum(count), 0), coalesce(sum(size), 0) FROM commands"
            ).fetchall()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        return int(rows[0][0]), int(rows[0][1])


class TreeLauncher(rb.Launcher):
    """Starts our relay from a given source tree (this one or a worktree);
    ``storeless`` starts it through storeless_relay.py, with no store."""

    def __init__(
        self, args: argparse.Namespace, repo: Path, tag: str, storeless: bool = False
    ) -> None:
        super().__init__(args)
        self.repo = repo
        self.tag = tag
        self.storeless = storeless

    def spec(self, label: str, bare_args: list[str]) -> proc.RelaySpec:
        spec = proc.ours_spec(proc.free_port(), str(self.repo), self.args.ours_arg)
        spec.label = self.tag.replace(" ", "-")
        if self.storeless:
            script = self.repo / "benchmarks" / "storeless_relay.py"
            spec.argv = [sys.executable, str(script), *spec.argv[3:]]
        return spec


def database_of(relay: proc.RelayProcess) -> Path:
    return Path(relay.spec.env["MIXER_DATA_DIR"]) / DATABASE_NAME


def fanout_settings(settings: Settings, duration: float) -> rb.Settings:
    """relay_bench settings for the fan-out runs of this benchmark."""
    base = rb.Settings(**asdict(rb.FULL))
    base.duration = duration
    base.probes_small = settings.probes
    base.probes_large = settings.probes
    return base


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def refusals(relay: proc.RelayProcess) -> str | None:
    """How many room commands the relay's log says it refused, and why."""
    count, reason = 0, ""
    try:
        lines = relay.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines[-100000:]:
        if '"request.refused"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        count = max(count, int(event.get("refusals", 1)))
        reason = reason or str(event.get("error", ""))[:120]
    return f"relay refused >= {count} commands: {reason}" if count else None


def not_stored(poller: DbPoller, target: int, waited: float) -> str:
    text = f"store has {poller.count}/{target} commands after {waited:.0f} s"
    total = poller.full_count()
    if total is None or total[0] != poller.count:
        text += f" (full count {total[0] if total else '?'})"
    if poller.errors:
        text += f" ({poller.errors} read errors)"
    return text


# ---------------------------------------------------------------- append


def append_case(
    launcher: TreeLauncher, settings: Settings, n: int, size: int
) -> dict[str, Any]:
    row = new_row(f"append 1->{n}, {rb.size_label(size)}")
    with launcher.running("ours", []) as started:
        if isinstance(started, str):
            return fail(row, f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.FanoutConfig(
            port=relay.spec.port,
            bare=False,
            room=f"bench-append-{n}-{size}",
            payload_size=size,
            receivers=n,
            duration=settings.append_duration,
            cap_bytes=min(1024 * MIB, 4096 * MIB // n),
            probe_count=0,
            probe_rate=1.0,
            drain_timeout=20.0,
        )
        stored: list[float | None] = []
        problem: list[str] = []

        def wait_stored(sender: Result) -> None:
            # The receivers are still in the room: once they leave, the relay
            # deletes the room and its history.
            began = time.monotonic()
            stored.append(
                poller.wait_for(
                    sender["sent"], settings.write_timeout, settings.stall_timeout
                )
            )
            if stored[0] is None:
                waited = time.monotonic() - began
                problem.append(not_stored(poller, sender["sent"], waited))
                return
            total = poller.full_count()
            if total != (poller.count, poller.bytes):
                problem.append(f"full count {total} != polled")

        with DbPoller(database_of(relay), 0.02) as poller:
            bench = fanout_settings(settings, cfg.duration)
            outcome = rb.run_fanout(cfg, bench, wait_stored)
        if isinstance(outcome, str):
            return fail(row, outcome)
        sender, receivers = outcome
        stored_at = stored[0] if stored else None
        fill_append(row, cfg, sender, receivers, monitor, poller, stored_at)
        row["notes"] += problem
        refused = refusals(relay)
        if refused:
            row["notes"].append(refused)
        if not relay.alive():
            fail(row, "relay died")
    return row


def fill_append(
    row: dict[str, Any],
    cfg: clients.FanoutConfig,
    sender: Result,
    receivers: list[Result],
    monitor: proc.Monitor,
    poller: DbPoller,
    stored_at: float | None,
) -> None:
    delivered = rb.Row("", "")
    rb.fill_fanout(delivered, cfg, sender, receivers, monitor)
    row["delivered_msgs_s"] = delivered.msgs_s
    row["rss_mb"] = monitor.peak_rss_mb()
    row["notes"] += delivered.notes
    if stored_at is None:
        # Not all stored: the rate up to the last poll that found new rows.
        growing = [t for t, n, _ in poller.samples if n == poller.count]
        if not growing or growing[0] <= sender["started"]:
            return
        elapsed = growing[0] - sender["started"]
        row["stored_cmd_s"] = poller.count / elapsed
        row["stored_mb_s"] = poller.bytes / elapsed / 1e6
        row["notes"].append("stored rates up to the last stored row")
        return
    elapsed = stored_at - sender["started"]
    row["stored_cmd_s"] = sender["sent"] / elapsed
    row["stored_mb_s"] = poller.bytes / elapsed / 1e6
    row["lag_s"] = max(0.0, stored_at - sender["sent_done"])
    row["cpu"] = monitor.cpu_percent(sender["started"], stored_at)
    expected_bytes = sender["sent"] * cfg.frame_size
    if poller.bytes != expected_bytes:
        row["notes"].append(f"stored {poller.bytes} B, expected {expected_bytes}")


# ---------------------------------------------------------------- fan-out cost


def fanout_cost(
    trees: list[TreeLauncher], settings: Settings, n: int, size: int, turn: int
) -> dict[str, Any]:
    """Run relay_bench's fan-out case on both trees, alternating, and compare."""
    row = new_row(f"fan-out 1->{n}, {rb.size_label(size)}")
    bench = fanout_settings(settings, settings.fanout_duration)
    runs: dict[str, list[rb.Row]] = {t.tag: [] for t in trees}
    for run in range(settings.fanout_runs):
        order = trees if (turn + run) % 2 == 0 else trees[::-1]
        for tree in order:
            result = rb.fanout_case(tree, "ours", bench, n, size)
            runs[tree.tag].append(result)
            progress(f"  {tree.tag} run {run + 1}: {' | '.join(rb.cells(result))}")
    for tree, prefix in zip(trees, FANOUT_PREFIXES, strict=False):
        rows = runs[tree.tag]
        rates = [r.msgs_s for r in rows if r.msgs_s is not None]
        # CPU only over runs that drained (a timeout's window is mostly idle).
        good = [r for r in rows if r.msgs_s and not any(map(is_timeout, r.notes))]
        row[f"{prefix}_msgs_s"] = median(rates)
        row[f"{prefix}_p50"] = median([r.p50_ms for r in good])
        row[f"{prefix}_cpu"] = median([r.cpu for r in good])
        row[f"{prefix}_us"] = median([cpu_us(r) for r in good])
        row[f"{prefix}_rss"] = median([r.rss_mb for r in rows])
        figures = "/".join(f"{rate / 1000:.0f}k" for rate in rates)
        row["notes"].append(f"{tree.tag}: {figures or 'no result'}")
        problems = {note for r in rows for note in r.notes if not is_sent_note(note)}
        row["notes"] += [f"{tree.tag}: {p}" for p in sorted(problems)]
    store, nostore = row.get("store_msgs_s"), row.get("nostore_msgs_s")
    if store and nostore:
        row["drop"] = 100.0 * (1.0 - store / nostore)
        row["target"] = verdict(row["drop"] <= FANOUT_TARGET_DROP)
    storeless = row.get("storeless_msgs_s")
    if store and storeless:
        row["storeless_drop"] = 100.0 * (1.0 - store / storeless)
    if nostore and storeless:
        row["features_drop"] = 100.0 * (1.0 - storeless / nostore)
    before = row.get("before_msgs_s")
    if store and before:
        row["gain"] = 100.0 * (store / before - 1.0)
    return row


def is_sent_note(note: str) -> bool:
    return note.startswith("sent ")


def is_timeout(note: str) -> bool:
    return note.startswith("timeout")


def cpu_us(row: rb.Row) -> float | None:
    """Relay CPU time per delivered message, in microseconds."""
    if row.cpu is None or not row.msgs_s:
        return None
    return row.cpu / 100.0 / row.msgs_s * 1e6


# ---------------------------------------------------------------- joins


@dataclass
class JoinRun:
    """What one upload-wait-join run measured (times are monotonic)."""

    began: float = 0.0
    uploaded_at: float | None = None
    written_at: float | None = None
    rest_rss_mb: float | None = None
    result: Result | None = None
    problem: str | None = None


def run_join(
    relay: proc.RelayProcess,
    monitor: proc.Monitor,
    cfg: clients.JoinConfig,
    settings: Settings,
    upload_timeout: float,
) -> JoinRun:
    """Upload (paced by the store when ``cfg.upload_window`` is set), wait until
    the store holds the whole history, settle a second, then join."""
    run = JoinRun(began=time.monotonic())
    uploaded, resume = CTX.Event(), CTX.Event()
    stored = CTX.RawValue("q", 0) if cfg.upload_window else None
    poller = DbPoller(database_of(relay), 0.05, stored)
    args = (cfg, uploaded, resume, stored)
    process, pipe = rb.start(clients.join_after_main, *args)
    try:
        deadline = time.monotonic() + upload_timeout
        while not uploaded.wait(0.1):
            if pipe.poll(0) or time.monotonic() > deadline:
                break
        if not uploaded.is_set():
            outcome = rb.wait_results([pipe], 1.0)
            run.problem = f"upload: {outcome if isinstance(outcome, str) else '?'}"
            return run
        run.uploaded_at = time.monotonic()
        run.written_at = poller.wait_for(
            cfg.count, settings.write_timeout, settings.stall_timeout
        )
        poller.stop()
        if run.written_at is None:
            waited = time.monotonic() - run.uploaded_at
            run.problem = not_stored(poller, cfg.count, waited)
        else:
            time.sleep(1.0)
            last = monitor.samples[-1] if monitor.samples else None
            run.rest_rss_mb = last.rss_kib / 1024.0 if last else None
        resume.set()
        outcome = rb.wait_results([pipe], cfg.timeout * (cfg.joins + 2))
        if isinstance(outcome, str):
            run.problem = "; ".join(filter(None, [run.problem, outcome]))
        else:
            run.result = outcome[0]
        return run
    finally:
        poller.stop()
        resume.set()
        rb.reap([process])


def join_case(
    launcher: TreeLauncher, settings: Settings, count: int, size: int
) -> dict[str, Any]:
    row = new_row(f"join {count} x {rb.size_label(size)}")
    with launcher.running("ours", []) as started:
        if isinstance(started, str):
            return fail(row, f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.JoinConfig(
            port=relay.spec.port,
            bare=False,
            room="bench-join",
            payload_size=size,
            count=count,
            joins=settings.join_repeats,
            timeout=60.0,
        )
        run = run_join(relay, monitor, cfg, settings, cfg.timeout * 2)
        if run.problem:
            fail(row, run.problem)
        if run.result is None:
            return row
        measured = rb.Row("", "")
        rb.fill_join(measured, cfg, run.result, monitor)
        row["notes"] += upload_notes(run) + measured.notes
        if measured.p50_ms is None or measured.p99_ms is None:
            return row
        row["join_s"] = measured.p50_ms / 1000.0
        row["worst_s"] = measured.p99_ms / 1000.0
        row["msgs_s"], row["mb_s"] = measured.msgs_s, measured.mb_s
        row["target"] = verdict((measured.mb_s or 0.0) >= JOIN_TARGET_MB_S)
        row["cpu"], row["rss_mb"] = measured.cpu, measured.rss_mb
        if not relay.alive():
            fail(row, "relay died")
    return row


def upload_notes(run: JoinRun) -> list[str]:
    notes = []
    result = run.result or {}
    if result.get("upload_errors"):
        notes.append(f"{result['upload_errors']} SEND_ERROR during upload")
    if run.uploaded_at is not None and run.written_at is not None:
        notes.append(f"written {run.written_at - run.uploaded_at:.2f} s after")
    return notes


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def big_case(
    launcher: TreeLauncher, settings: Settings, count: int, size: int, paced: bool
) -> dict[str, Any]:
    total = count * (size + 14)
    how = "paced" if paced else "unpaced"
    label = f"big {count} x {rb.size_label(size)} ({total / 2**30:.1f} GiB), {how}"
    row = new_row(label)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < BIG_FREE_BYTES:
        return fail(row, f"skipped: {free / 1e9:.1f} GB free in the temp dir (< 6)")
    with launcher.running("ours", []) as started:
        if isinstance(started, str):
            return fail(row, f"failed to start: {started}")
        relay, monitor = started
        cfg = clients.JoinConfig(
            port=relay.spec.port,
            bare=False,
            room="bench-big",
            payload_size=size,
            count=count,
            joins=1,
            timeout=120.0,
            upload_window=UPLOAD_WINDOW if paced else 0,
        )
        run = run_join(relay, monitor, cfg, settings, 240.0)
        if run.problem:
            fail(row, run.problem)
        fill_big(row, cfg, run, monitor)
        refused = refusals(relay)
        if refused:
            row["notes"].append(refused)
        if not relay.alive():
            fail(row, "relay died")
    return row


def fill_big(
    row: dict[str, Any], cfg: clients.JoinConfig, run: JoinRun, monitor: proc.Monitor
) -> None:
    if run.uploaded_at is None:
        return
    row["rss_upload"] = monitor.peak_rss_mb(run.began, run.uploaded_at)
    if run.written_at is not None:
        row["write_s"] = run.written_at - run.uploaded_at
        row["rss_writing"] = monitor.peak_rss_mb(run.uploaded_at, run.written_at)
        row["rss_rest"] = run.rest_rss_mb
    if run.result is None:
        return
    row["upload_s"] = run.result["upload_seconds"]
    row["upload_mb_s"] = cfg.count * (cfg.payload_size + 14) / row["upload_s"] / 1e6
    row["notes"] += upload_notes(run)
    joins = run.result["joins"]
    if not joins or "error" in joins[0]:
        text = joins[0]["error"] if joins else "no join"
        fail(row, f"join failed: {text}")
        return
    join = joins[0]
    row["frames"] = f"{join['frames']}/{cfg.count}"
    if not join["ok"]:
        fail(row, f"not all in order ({join['seq_errors']} out of order)")
    row["join_s"] = join["seconds"]
    row["mb_s"] = cfg.count * (cfg.payload_size + 14) / join["seconds"] / 1e6
    peak = monitor.peak_rss_mb(join["started"], join["joined_at"])
    row["rss_join"] = peak
    row["target"] = verdict(peak is not None and peak < BIG_RSS_TARGET_MB)


# ---------------------------------------------------------------- worktree


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tree_state() -> str:
    """This tree's commit, and whether the relay's code differs from it."""
    head = git("rev-parse", "--short", "HEAD").stdout.strip() or "?"
    changed = git("status", "--porcelain", "--", "relay", "store", "mixer_console")
    return head + (" with uncommitted changes" if changed.stdout.strip() else "")


@contextmanager
def nostore_tree(commit: str, path: Path) -> Iterator[Path | str]:
    """A detached git worktree of ``commit`` at ``path`` (removed on exit), or
    an error text. An existing worktree at ``path`` is used only if it is one of
    this repository's, at that commit."""
    created = False
    try:
        if path.exists():
            head = subprocess.run(
                ["git", "-C", str(path), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
            wanted = git("rev-parse", commit).stdout.strip()
            listed = str(path) in git("worktree", "list", "--porcelain").stdout
            if not (listed and head and head == wanted):
                yield f"{path} exists and is not a worktree of {commit}; remove it"
                return
            created = True
        else:
            done = git("worktree", "add", "--detach", str(path), commit)
            if done.returncode != 0:
                yield f"git worktree add failed: {done.stderr.strip()[-300:]}"
                return
            created = True
        yield path
    finally:
        if created:
            git("worktree", "remove", "--force", str(path))


# ---------------------------------------------------------------- main


def progress(text: str) -> None:
    rb.emit(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mixer relay store benchmark (see the module docstring)."
    )
    parser.add_argument(
        "--cases",
        default="append,fanout,join,big,big-unpaced",
        help="comma-separated subset of append,fanout,join,big,big-unpaced",
    )
    parser.add_argument("--quick", action="store_true", help="~1-2 minute smoke run")
    parser.add_argument("--runs", type=int, help="fan-out runs per tree and case")
    parser.add_argument("--receivers", help="fan-out receiver counts, e.g. 1,8,32")
    parser.add_argument("--duration", type=float, help="seconds per stream case")
    parser.add_argument("--big-count", type=int, help="1 MiB commands in 'big'")
    parser.add_argument("--nostore-commit", default=NOSTORE_COMMIT)
    parser.add_argument("--nostore-path", default=NOSTORE_PATH)
    parser.add_argument(
        "--before",
        help="a checkout of an earlier commit whose store also takes turns in "
        "the fan-out runs (needs the storeless runs: leave --no-storeless out)",
    )
    parser.add_argument(
        "--no-storeless",
        action="store_true",
        help="leave out the fan-out runs of this tree without a store",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=20.0,
        help="start no case after this many minutes",
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        help="extra argument for our relay's command line (repeatable)",
    )
    parser.add_argument("--log-dir", default="/tmp/mixer-bench-logs")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings(**asdict(QUICK if args.quick else FULL))
    if args.runs:
        settings.fanout_runs = args.runs
    if args.receivers:
        settings.fanout_receivers = [int(x) for x in args.receivers.split(",")]
    if args.duration:
        settings.append_duration = settings.fanout_duration = args.duration
    if args.big_count:
        settings.big_count = args.big_count
    return settings


Step = tuple[Section, Callable[[], dict[str, Any]]]


def plan(
    args: argparse.Namespace, settings: Settings, trees: list[TreeLauncher]
) -> list[Step]:
    """(section, case) pairs in run order; ``trees`` is [this, no store] or
    [this] when the worktree could not be made."""
    cases = set(args.cases.split(","))
    here = trees[0]
    steps: list[Step] = []
    if "append" in cases:
        section = append_section()
        for n in settings.append_receivers:
            for size in settings.append_sizes:
                steps.append((section, bind(append_case, here, settings, n, size)))
    if "fanout" in cases and len(trees) >= 2:
        section = fanout_section()
        turn = 0
        for n in settings.fanout_receivers:
            for size in settings.fanout_sizes:
                case = bind(fanout_cost, trees, settings, n, size, turn)
                steps.append((section, case))
                turn += 1
    if "join" in cases:
        section = join_section()
        for count, size in settings.joins:
            steps.append((section, bind(join_case, here, settings, count, size)))
    section = big_section()
    for name, paced in (("big", True), ("big-unpaced", False)):
        if name in cases:
            count, size = settings.big_count, settings.big_size
            case = bind(big_case, here, settings, count, size, paced)
            steps.append((section, case))
    return steps


def bind(case: Callable[..., dict[str, Any]], *args: Any) -> Callable[[], Any]:
    return lambda: case(*args)


def run_steps(steps: list[Step], began: float, max_minutes: float) -> list[Section]:
    sections: list[Section] = []
    for section, case in steps:
        if section not in sections:
            sections.append(section)
        if time.monotonic() - began > max_minutes * 60:
            section.rows.append(fail(new_row("(rest)"), "skipped: --max-minutes"))
            break
        row = case()
        section.rows.append(row)
        cells = [cell(row.get(c.key), c.fmt) for c in section.columns]
        progress(f"[{time.monotonic() - began:6.1f} s] {' | '.join(cells)}")
    return sections


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    notes: list[str] = []
    if not (REPO / "mixer_console" / "__main__.py").exists():
        rb.emit("mixer_console/__main__.py not found; nothing to measure")
        return 1
    here = TreeLauncher(args, REPO, "store")
    load = os.getloadavg()
    rb.emit("\n".join(proc.machine_lines()), flush=True)
    began = time.monotonic()
    want_fanout = "fanout" in args.cases.split(",")
    path = Path(args.nostore_path)
    with nostore_tree(args.nostore_commit, path) if want_fanout else empty() as tree:
        trees = [here]
        if isinstance(tree, Path):
            trees.append(TreeLauncher(args, tree, "no store"))
            if not args.no_storeless:
                trees.append(TreeLauncher(args, REPO, "storeless", storeless=True))
            if args.before:
                trees.append(TreeLauncher(args, Path(args.before), "before"))
        elif isinstance(tree, str):
            notes.append(f"fan-out cost skipped: {tree}")
        sections = run_steps(plan(args, settings, trees), began, args.max_minutes)
    mode = "quick" if args.quick else "full"
    elapsed = time.monotonic() - began
    rb.emit(f"Run: {mode}, {elapsed:.0f} s; logs in {args.log_dir}")
    rb.emit(
        "Load average (1/5/15 min) at start: "
        + " ".join(f"{x:.2f}" for x in load)
        + "; at end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    rb.emit(f"Tree: {tree_state()}")
    for note in notes:
        rb.emit(f"Note: {note}")
    for section in sections:
        rb.emit()
        rb.emit(section.render(args.markdown))
    if args.json:
        report = {
            "machine": proc.machine_lines(),
            "mode": mode,
            "seconds": elapsed,
            "tree": tree_state(),
            "notes": notes,
            "settings": asdict(settings),
            "sections": [asdict(section) for section in sections],
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


@contextmanager
def empty() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
