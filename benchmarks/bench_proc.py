"""Starting, watching and stopping the relay under test.

A relay runs as a subprocess listening on 127.0.0.1 only. :class:`Monitor`
samples its CPU time (utime + stime from ``/proc/<pid>/stat``, summed over the
process and its descendants) and its resident memory (``VmRSS`` from
``/proc/<pid>/status``) in a background thread, so that any time window of a
scenario can be turned into a CPU percentage (100 % = one core) and a peak RSS.

The original broadcaster binds every interface by default; it is started
through a wrapper written to /tmp at run time that patches ``socket.bind`` to
bind 127.0.0.1 and refuse anything else. After start-up the listening address
is checked in ``/proc/net/tcp`` and a relay that listens elsewhere is stopped.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK_HEX = "0100007F"

WRAPPER_TEXT = '''"""Bench wrapper: the original broadcaster, on 127.0.0.1 only."""

import runpy
import socket
import sys

sys.path.insert(0, {path!r})
_real_bind = socket.socket.bind


def _loopback_bind(self, address):
    if self.family == socket.AF_INET:
        host, port = address
        if host in ("", "0.0.0.0", "localhost"):
            host = "127.0.0.1"
        if host != "127.0.0.1":
            raise OSError(f"bench wrapper refuses to bind {{host!r}}")
        address = (host, port)
    elif self.family != socket.AF_UNIX:
        raise OSError("bench wrapper refuses non-IPv4 sockets")
    return _real_bind(self, address)


socket.socket.bind = _loopback_bind
sys.argv = ["mixer.broadcaster.apps.server", *sys.argv[1:]]
runpy.run_module("mixer.broadcaster.apps.server", run_name="__main__", alter_sys=True)
'''


@dataclass
class RelaySpec:
    """How to start one relay: its label, command line and working directory."""

    label: str
    argv: list[str]
    cwd: str
    port: int
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ours_spec(port: int, repo: str, extra: list[str]) -> RelaySpec:
    """Our relay, ``python -m mixer_console --no-ui``, run from the repository."""
    argv = [sys.executable, "-m", "mixer_console", "--no-ui"]
    argv += ["--host", "127.0.0.1", "--port", str(port), *extra]
    # A fresh store per run, so that no case inherits another's rooms.
    data_dir = tempfile.mkdtemp(prefix="mixer-bench-store-")
    # The HTTP surface on any free port: benchmarks may run side by side.
    env = {"MIXER_DATA_DIR": data_dir, "MIXER_HTTP_PORT": "0"}
    return RelaySpec("ours", argv, repo, port, env)


def original_spec(port: int, original_path: str) -> RelaySpec:
    """The original broadcaster, through a loopback-only wrapper in /tmp."""
    wrapper = Path("/tmp/mixer_bench_original_wrapper.py")
    wrapper.write_text(WRAPPER_TEXT.format(path=str(Path(original_path).resolve())))
    argv = [sys.executable, str(wrapper), "--port", str(port)]
    argv += ["--log-level", "ERROR"]
    return RelaySpec("original", argv, "/tmp", port)


def bare_spec(port: int, args: list[str]) -> RelaySpec:
    """The trivial forwarder (the bare limit), see bench_bare.py."""
    script = Path(__file__).with_name("bench_bare.py")
    argv = [sys.executable, str(script), "--port", str(port), *args]
    return RelaySpec("bare", argv, str(script.parent), port)


class RelayProcess:
    """A started relay; use as a context manager so that it is always stopped."""

    def __init__(self, spec: RelaySpec, log_dir: Path) -> None:
        self.spec = spec
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.label}-{spec.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 10.0) -> str | None:
        """Poll a TCP connect until it succeeds; an error text, or None when ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode} ({self.log_tail()})"
            try:
                with socket.create_connection(("127.0.0.1", self.spec.port), 0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            return self._check_loopback_only()
        return f"not listening after {timeout:.0f} s"

    def _check_loopback_only(self) -> str | None:
        addresses = listening_addresses(self.spec.port)
        foreign = [a for a in addresses if a != LOOPBACK_HEX]
        if foreign:
            self.stop()
            return f"listens on non-loopback addresses {foreign}; stopped"
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 400) -> str:
        self._log.flush()
        text = self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        return " ".join(text.split())

    def stop(self) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, each given a few seconds."""
        for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGTERM, 3.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        self._log.close()
        if "MIXER_DATA_DIR" in self.spec.env:
            shutil.rmtree(self.spec.env["MIXER_DATA_DIR"], ignore_errors=True)


def listening_addresses(port: int) -> list[str]:
    """Hex local addresses of LISTEN sockets on ``port`` (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, found through the ppid of each process."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10000:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@dataclass
class Sample:
    t: float
    ticks: int
    rss_kib: int


@dataclass
class Monitor:
    """Samples a process tree's CPU ticks and RSS until stopped (max 1 hour)."""

    pid: int
    interval: float = 0.05
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._pids = [self.pid]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 3600
        rounds = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if rounds % 20 == 0:
                self._pids = [self.pid, *descendants(self.pid)]
            rounds += 1
            ticks = sum(cpu_ticks(p) for p in self._pids)
            rss = sum(rss_kib(p) for p in self._pids)
            self.samples.append(Sample(time.monotonic(), ticks, rss))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def cpu_percent(self, t0: float, t1: float) -> float | None:
        """Average CPU use between two monotonic times (100 = one core)."""
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if len(inside) < 2 or inside[-1].t - inside[0].t < 0.2:
            return None
        first, last = inside[0], inside[-1]
        seconds = (last.ticks - first.ticks) / CLK_TCK
        return 100.0 * seconds / (last.t - first.t)

    def peak_rss_mb(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        """Largest sampled RSS between two monotonic times, in MiB."""
        values = [s.rss_kib for s in self.samples if t0 <= s.t <= t1 and s.rss_kib]
        return max(values) / 1024.0 if values else None


def machine_lines() -> list[str]:
    """CPU model, cores, Python and kernel, for the top of the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return [
        f"CPU: {model} ({cores} usable cores, {os.cpu_count()} online)",
        f"Python: {platform.python_version()} ({sys.executable})",
        f"Kernel: {platform.system()} {platform.release()}",
    ]
