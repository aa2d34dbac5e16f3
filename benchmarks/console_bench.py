"""What the operator console costs the relay, and what it costs itself.

Run from the repository root::

    .venv/bin/python benchmarks/console_bench.py [--repeats 3] [--markdown]

Each case of relay_bench.py (our relay, headless, a fresh subprocess per case)
is run twice in turn: once alone, once with ``mixer-console attach`` watching it
through the admin socket and rendering in a real terminal (a tmux pane of
132x40, 256 colours, on a tmux server of this script's own). The console polls
the relay four times a second, so the difference is its price. The cases:

fan-out 1->8, 4 KiB and fan-out 1->32, 64 B
    saturating throughput: msgs/s is what the console may take away.
rooms 50 x 4 @ 30/s
    200 connected artists sending a fixed load: the relay's CPU and latency
    show the console's cost; the console's own CPU is measured here too, with
    200 rows in its artists table.
idle 200 clients
    200 artists doing nothing: the console's CPU for watching them.

The console's CPU is that of its process tree (utime+stime from /proc, 100 % =
one core) over the whole case, set-up included. Alternating the runs spreads the
noise of a shared machine over both columns; the summary gives medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import bench_proc as proc
import relay_bench as bench

REPO = Path(__file__).resolve().parent.parent
TMUX = shutil.which("tmux")
ATTACH_TIMEOUT = 20.0


@dataclass
class Measured:
    row: bench.Row
    console_cpu: float | None = None


class Console:
    """``mixer-console attach`` rendering in a tmux pane of its own server."""

    def __init__(self, socket: Path, work_dir: Path) -> None:
        self.tmux_socket = work_dir / "tmux.sock"
        data_dir = work_dir / "console-data"
        command = (
            f"cd {REPO} && MIXER_DATA_DIR={data_dir} "
            f"{sys.executable} -m mixer_console attach --socket {socket}"
        )
        self.tmux(
            "-f", os.devnull, "new-session", "-d", "-s", "console",
            "-x", "132", "-y", "40", "-e", "TERM=tmux-256color", command,
        )  # fmt: skip
        self.pid = int(
            self.tmux("display-message", "-p", "-t", "console", "#{pane_pid}")
        )
        self.monitor = proc.Monitor(self.pid)

    def tmux(self, *arguments: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-S", str(self.tmux_socket), *arguments],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    def wait_rendering(self) -> str | None:
        """None once the pane shows the relay's figures, else why not."""
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while time.monotonic() < deadline:
            if "conns" in self.tmux("capture-pane", "-p", "-t", "console"):
                return None
            time.sleep(0.1)
        return "the console never showed the relay"

    def stop(self) -> None:
        self.monitor.stop()
        subprocess.run(
            [TMUX or "tmux", "-S", str(self.tmux_socket), "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


class ConsoleLauncher(bench.Launcher):
    """relay_bench's launcher; with ``watched``, a console attaches to each relay."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.watched = False
        self.console: Console | None = None
        self._work_dir: Path | None = None

    def spec(self, label: str, bare_args: list[str]) -> proc.RelaySpec:
        spec = super().spec(label, bare_args)
        assert self._work_dir is not None
        spec.env["MIXER_ADMIN_SOCKET"] = str(self._work_dir / "admin.sock")
        return spec

    @contextmanager
    def running(
        self, label: str, bare_args: list[str]
    ) -> Iterator[tuple[proc.RelayProcess, proc.Monitor] | str]:
        # A short private folder: socket paths are limited to 107 bytes.
        self._work_dir = Path(tempfile.mkdtemp(prefix="mx-cbench-", dir="/tmp"))
        try:
            with super().running(label, bare_args) as started:
                if isinstance(started, str) or not self.watched:
                    yield started
                    return

                console = Console(self._work_dir / "admin.sock", self._work_dir)
                try:
                    problem = console.wait_rendering()
                    self.console = console
                    yield problem if problem else started
                finally:
                    console.stop()
        finally:
            shutil.rmtree(self._work_dir, ignore_errors=True)


def cases(settings: bench.Settings) -> list[Callable[[bench.Launcher, str], bench.Row]]:
    return [
        lambda launcher, label: bench.fanout_case(launcher, label, settings, 8, 4096),
        lambda launcher, label: bench.fanout_case(launcher, label, settings, 32, 64),
        lambda launcher, label: bench.rooms_case(launcher, label, settings),
        lambda launcher, label: bench.idle_case(launcher, label, settings),
    ]


def measure(
    launcher: ConsoleLauncher,
    case: Callable[[bench.Launcher, str], bench.Row],
    watched: bool,
) -> Measured:
    launcher.watched = watched
    launcher.console = None
    began = time.monotonic()
    row = case(launcher, "ours")
    ended = time.monotonic()
    console = launcher.console
    cpu = console.monitor.cpu_percent(began, ended) if console else None
    row.relay = "ours + console" if watched else "ours"
    return Measured(row, cpu)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pair")
    parser.add_argument("--duration", type=float, default=3.0, help="fan-out seconds")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--log-dir", default="/tmp/mixer-console-bench-logs")
    args = parser.parse_args(argv)
    if TMUX is None:
        bench.emit("tmux is needed to render the console (apt-get install tmux)")
        return 1

    relay_args = bench.parse_args(["--relay", "ours", "--log-dir", args.log_dir])
    settings = replace(bench.FULL, duration=args.duration, idle_clients=200)
    launcher = ConsoleLauncher(relay_args)
    bench.emit("\n".join(proc.machine_lines()))
    rows: list[list[str]] = []
    measurements: list[Measured] = []
    for case in cases(settings):
        for repeat in range(args.repeats):
            for watched in (False, True):
                measured = measure(launcher, case, watched)
                measurements.append(measured)
                cells = bench.cells(measured.row)
                console_cpu = (
                    "-"
                    if measured.console_cpu is None
                    else f"{measured.console_cpu:.0f}"
                )
                line = [*cells[:8], console_cpu, str(repeat + 1), cells[9]]
                rows.append(line)
                bench.emit(" | ".join(line), file=sys.stderr)

    columns = [*bench.COLUMNS[:8], "console CPU %", "run", "notes"]
    bench.emit()
    bench.emit(bench.format_table([columns, *rows], args.markdown, range(2, 10)))
    bench.emit()
    bench.emit(summary(measurements, args.markdown))
    return 0


def median(values: list[float | None]) -> float | None:
    known = sorted(value for value in values if value is not None)
    return statistics.median(known) if known else None


def summary(measurements: list[Measured], markdown: bool) -> str:
    """Medians per scenario: the relay alone, watched, and the console's CPU."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    table = [
        [
            "scenario",
            "msgs/s alone",
            "msgs/s watched",
            "watched/alone",
            "relay CPU % alone",
            "relay CPU % watched",
            "console CPU %",
        ]
    ]
    scenarios = list(dict.fromkeys(m.row.scenario for m in measurements))
    for scenario in scenarios:
        alone = [
            m
            for m in measurements
            if m.row.scenario == scenario and m.console_cpu is None
        ]
        watched = [
            m
            for m in measurements
            if m.row.scenario == scenario and m.console_cpu is not None
        ]
        rate_alone = median([m.row.msgs_s for m in alone])
        rate_watched = median([m.row.msgs_s for m in watched])
        ratio = rate_watched / rate_alone if rate_alone and rate_watched else None
        table.append(
            [
                scenario,
                number(rate_alone, ",.0f"),
                number(rate_watched, ",.0f"),
                "-" if ratio is None else f"{100 * ratio:.0f}%",
                number(median([m.row.cpu for m in alone]), ".0f"),
                number(median([m.row.cpu for m in watched]), ".0f"),
                number(median([m.console_cpu for m in watched]), ".0f"),
            ]
        )

    return bench.format_table(table, markdown, range(1, 7))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
