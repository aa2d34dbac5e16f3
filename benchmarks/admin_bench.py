"""What an attached console costs the relay: the admin socket under polling.

Run from the repository root::

    .venv/bin/python benchmarks/admin_bench.py [--artists 200] [--rooms 10]
        [--rate 20] [--poll-hz 4] [--seconds 5]

A headless relay (``python -m mixer_console --no-ui``, 127.0.0.1, a fresh data
directory whose admin socket is used) gets ``--artists`` connections spread over
``--rooms`` rooms; in each room one artist sends ``--rate`` commands of 1 KiB a
second, and a thread reads everything the relay sends to every artist. The
relay's CPU (utime + stime from /proc, 100 % = one core) is measured over
``--seconds`` without a console, then with one that asks for a snapshot and the
new events ``--poll-hz`` times a second, as a dashboard does; the snapshot's
round trip and size are reported too.
"""

import argparse
import selectors
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import anyio
from bench_proc import CLK_TCK, RelayProcess, cpu_ticks, free_port, ours_spec

from relay.admin_client import AdminClient
from relay.admin_protocol import encode_line, encode_result
from relay.messages import MessageType
from relay.protocol import encode_bool, encode_frame, encode_json, encode_string

REPO = Path(__file__).resolve().parent.parent


def join_payload(room: str) -> bytes:
    return (
        encode_string(room)
        + encode_string("3.4.1")
        + encode_string("1.0.0")
        + encode_bool(False)
        + encode_bool(True)
    )


def connect_artists(port: int, artists: int, rooms: int) -> list[socket.socket]:
    """Connect, name and seat every artist; room creators upload nothing."""
    sockets = []
    for index in range(artists):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        room = f"room-{index % rooms}"
        sock.sendall(
            encode_frame(MessageType.CLIENT_ID)
            + encode_frame(
                MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
                encode_json({"user_name": f"artist-{index}"}),
            )
            + encode_frame(MessageType.JOIN_ROOM, join_payload(room))
        )
        if index < rooms:
            sock.sendall(encode_frame(MessageType.CONTENT))
            time.sleep(0.05)  # the room is joinable before its first joiner asks

        sockets.append(sock)

    return sockets


def drain(sockets: list[socket.socket], stop: threading.Event) -> None:
    """Read and discard whatever the relay sends, until ``stop``."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)

    while not stop.is_set():
        for key, _ in selector.select(0.1):
            try:
                key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except (BlockingIOError, ConnectionError):
                pass

    selector.close()


def send_traffic(
    senders: list[socket.socket], rate: float, stop: threading.Event
) -> None:
    """Each sender sends ``rate`` 1 KiB commands a second, until ``stop``."""
    command = encode_frame(MessageType.BLENDER_DATA_UPDATE, bytes(1010))
    began = time.monotonic()
    sent = 0
    while not stop.wait(0.02):
        due = int((time.monotonic() - began) * rate)
        for sock in senders:
            for _ in range(due - sent):
                try:
                    sock.send(command)
                except (BlockingIOError, ConnectionError):
                    pass
        sent = due


def cpu_percent(pid: int, seconds: float) -> float:
    before = cpu_ticks(pid)
    time.sleep(seconds)
    return 100.0 * (cpu_ticks(pid) - before) / CLK_TCK / seconds


async def poll(path: Path, hz: float, seconds: float) -> tuple[list[float], int]:
    """Poll like a dashboard; return snapshot round trips and the last size."""
    console = AdminClient(path)
    round_trips: list[float] = []
    size = 0
    last_event = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        asked = time.perf_counter()
        snapshot = await console.snapshot()
        round_trips.append(time.perf_counter() - asked)
        events = await console.events(last_event)
        if events:
            last_event = events[-1].seq

        size = len(encode_line({"id": 1, "result": encode_result(snapshot)}))
        await anyio.sleep(max(0.0, 1 / hz - (time.perf_counter() - asked)))

    await console.aclose()
    return round_trips, size


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artists", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--poll-hz", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    spec = ours_spec(free_port(), str(REPO), [])
    admin_path = Path(spec.env["MIXER_DATA_DIR"]) / "admin.sock"
    with RelayProcess(spec, Path("/tmp/mixer-bench-logs")) as relay:
        problem = relay.wait_ready()
        if problem is not None:
            print(f"relay not ready: {problem}")  # noqa: T201
            return 1

        sockets = connect_artists(spec.port, args.artists, args.rooms)
        stop = threading.Event()
        threads = [
            threading.Thread(target=drain, args=(sockets, stop)),
            threading.Thread(
                target=send_traffic, args=(sockets[: args.rooms], args.rate, stop)
            ),
        ]
        for thread in threads:
            thread.start()

        try:
            time.sleep(1.0)
            without = cpu_percent(relay.pid, args.seconds)
            before = cpu_ticks(relay.pid)
            round_trips, size = anyio.run(poll, admin_path, args.poll_hz, args.seconds)
            with_console = (
                100.0 * (cpu_ticks(relay.pid) - before) / CLK_TCK / (args.seconds)
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            for sock in sockets:
                sock.close()

    round_trips.sort()
    print(  # noqa: T201
        f"{args.artists} artists in {args.rooms} rooms, "
        f"{args.rooms * args.rate:.0f} commands/s in all\n"
        f"relay CPU without a console: {without:5.1f} %\n"
        f"relay CPU with a console polling at {args.poll_hz:g} Hz: "
        f"{with_console:5.1f} %\n"
        f"snapshot round trip: median {statistics.median(round_trips) * 1000:.1f} ms,"
        f" worst {round_trips[-1] * 1000:.1f} ms over {len(round_trips)} polls; "
        f"snapshot line {size / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
