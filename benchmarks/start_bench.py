"""How fast the relay starts and stops, as a process.

Run from the repository root::

    .venv/bin/python benchmarks/start_bench.py [--runs 7] [--commands 20000]

Cases, each a fresh ``mixer-console --no-ui`` process on 127.0.0.1:

start, empty
    From exec to its ``relay.started`` line, with an empty data folder.
start, stored room
    The same with one room of ``--commands`` 1 KiB commands kept from the last
    run (the store loads its rooms before listening).
stop
    From SIGTERM to the process's exit, right after a client sent
    ``--commands`` 1 KiB commands (everything must be flushed on the way out).

Figures are the median and the slowest of the runs, in seconds.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.messages import MessageType  # noqa: E402
from tests.mixer_client import MixerClient, room_command  # noqa: E402

START_TIMEOUT = 30.0
MIXER_CONSOLE = (sys.executable, "-m", "mixer_console")
COMMAND = room_command(MessageType.BLENDER_DATA_UPDATE, bytes(1024 - 8))


class Relay:
    """One relay process on its own data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> float:
        """Start the process; seconds until it said relay.started."""
        environment = {
            **os.environ,
            "MIXER_DATA_DIR": str(self.data_dir),
            "MIXER_HTTP_PORT": "0",
            "MIXER_LOG_FORMAT": "json",
            "MIXER_ROOM_GRACE": "3600",
        }
        begun = time.perf_counter()
        self.process = subprocess.Popen(
            [*MIXER_CONSOLE, "--no-ui", "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        deadline = begun + START_TIMEOUT
        while time.perf_counter() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the relay ended before relay.started")

            event = json.loads(line)
            if event["event"] == "relay.started":
                self.port = int(event["port"])
                return time.perf_counter() - begun

        raise RuntimeError("no relay.started in time")

    def stop(self) -> float:
        """SIGTERM; seconds until the process ended."""
        assert self.process is not None
        begun = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=START_TIMEOUT)
        elapsed = time.perf_counter() - begun
        assert self.process.stdout is not None
        self.process.stdout.close()
        if self.process.returncode != 0:
            raise RuntimeError(f"the relay exited with {self.process.returncode}")

        return elapsed


async def fill_room(port: int, commands: int) -> None:
    """One client creates a room with ``commands`` commands, then waits until
    the relay answered a request sent after them (so all were read)."""
    client = await MixerClient.connect(port)
    try:
        await client.handshake("bench")
        await client.create_room("bench-room", commands=[COMMAND] * commands)
        await client.list_rooms()
    finally:
        await client.aclose()


def figures(name: str, seconds: list[float]) -> str:
    return (
        f"{name:<22} median {statistics.median(seconds):6.3f} s   "
        f"slowest {max(seconds):6.3f} s   ({len(seconds)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--commands", type=int, default=20_000)
    arguments = parser.parse_args()

    empty: list[float] = []
    stored: list[float] = []
    stops: list[float] = []
    for _ in range(arguments.runs):
        with tempfile.TemporaryDirectory(prefix="start-bench-") as folder:
            relay = Relay(Path(folder))
            empty.append(relay.start())
            anyio.run(fill_room, relay.port, arguments.commands)
            stops.append(relay.stop())
            stored.append(relay.start())
            relay.stop()

    report = [
        f"cores: {os.cpu_count()}; {arguments.commands} x 1 KiB commands",
        figures("start, empty", empty),
        figures("start, stored room", stored),
        figures("stop after a burst", stops),
    ]
    sys.stdout.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
