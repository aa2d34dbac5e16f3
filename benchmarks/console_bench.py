"""What the operator console costs the relay, and what it costs itself.

Run from the repository root::

    .venv/bin/python benchmarks/console_bench.py [--repeats 3] [--markdown]

Each case of relay_bench.py (our relay, a fresh subprocess per case) is run three
ways in turn: headless alone; headless with ``mixer-console attach`` watching it
through the admin socket and rendering in a real terminal (a tmux pane of
132x40, 256 colours, on a tmux server of this script's own); and hosted, the
relay inside the console (``mixer-console`` without ``--no-ui``) rendering on a
132x40 pseudo-terminal from script(1). The console polls the relay four times a
second; the differences are its price. The cases:

fan-out 1->8, 4 KiB and fan-out 1->32, 64 B
    saturating throughput: msgs/s is what the console may take away.
rooms 50 x 4 @ 30/s
    200 connected artists sending a fixed load: the relay's CPU and latency
    show the console's cost; the console's own CPU is measured here too, with
    200 rows in its artists table.
idle 200 clients
    200 artists doing nothing: the console's CPU for watching them.

The attached console's CPU is that of its process tree (utime+stime from /proc,
100 % = one core) over the whole case, set-up included; a hosted console's CPU
is part of the relay's. Alternating the runs spreads the
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


HOSTED = "hosted"


def hosted_spec(headless: proc.RelaySpec) -> proc.RelaySpec:
    """The relay inside the console (``mixer-console`` without ``--no-ui``),
    rendering on a pseudo-terminal of 132x40 that script(1) gives it."""
    relay_args = [arg for arg in headless.argv if arg != "--no-ui"]
    inner = f"stty cols 132 rows 40; exec {' '.join(relay_args)}"
    argv = ["script", "--quiet", "--flush", "--return", "--command", inner, "/dev/null"]
    env = {**headless.env, "TERM": "xterm-256color"}
    return replace(headless, label=HOSTED, argv=argv, env=env)


class ConsoleLauncher(bench.Launcher):
    """relay_bench's launcher; with ``watched``, a console attaches to each relay."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.watched = False
        self.console: Console | None = None
        self._work_dir: Path | None = None

    def spec(self, label: str, bare_args: list[str]) -> proc.RelaySpec:
        spec = super().spec("ours", bare_args)
        assert self._work_dir is not None
        spec.env["MIXER_ADMIN_SOCKET"] = str(self._work_dir / "admin.sock")
        if label == HOSTED:
            spec = hosted_spec(spec)

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


# How the relay runs: headless alone, headless watched by an attached console,
# or inside the console.
MODES = ("alone", "attached", HOSTED)


def measure(
    launcher: ConsoleLauncher,
    case: Callable[[bench.Launcher, str], bench.Row],
    mode: str,
) -> Measured:
    launcher.watched = mode == "attached"
    launcher.console = None
    began = time.monotonic()
    row = case(launcher, HOSTED if mode == HOSTED else "ours")
    ended = time.monotonic()
    console = launcher.console
    cpu = console.monitor.cpu_percent(began, ended) if console else None
    row.relay = mode
    return Measured(row, cpu)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode")
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
            for mode in MODES:
                measured = measure(launcher, case, mode)
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
    """Medians per scenario and mode, and the attached console's own CPU."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def share(value: float | None, base: float | None) -> str:
        return "-" if not value or not base else f"{100 * value / base:.0f}%"

    table = [
        [
            "scenario",
            "msgs/s alone",
            "attached",
            "hosted",
            "relay CPU % alone",
            "attached",
            "hosted",
            "attached console CPU %",
        ]
    ]
    scenarios = list(dict.fromkeys(m.row.scenario for m in measurements))
    for scenario in scenarios:
        runs = {
            mode: [
                m
                for m in measurements
                if m.row.scenario == scenario and m.row.relay == mode
            ]
            for mode in MODES
        }
        rates = {mode: median([m.row.msgs_s for m in runs[mode]]) for mode in MODES}
        table.append(
            [
                scenario,
                number(rates["alone"], ",.0f"),
                share(rates["attached"], rates["alone"]),
                share(rates[HOSTED], rates["alone"]),
                *(
                    number(median([m.row.cpu for m in runs[mode]]), ".0f")
                    for mode in MODES
                ),
                number(median([m.console_cpu for m in runs["attached"]]), ".0f"),
            ]
        )

    return bench.format_table(table, markdown, range(1, 8))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
