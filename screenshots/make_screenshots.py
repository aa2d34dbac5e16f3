"""Screenshots of the console in a realistic state, for the README.

Run from the repository root::

    .venv/bin/python screenshots/make_screenshots.py [--seconds 30]

It starts the real console app hosting a real relay (on 127.0.0.1, a free port,
its store in a temporary folder), connects real TCP Mixer clients that work in
three rooms at changing rates, lets the dashboard fill for a while, then drives
the app with its keys and saves SVG screenshots (Textual's ``save_screenshot``)
next to this file. PNG copies are made with rsvg-convert (Debian's
librsvg2-bin) or, failing that, cairosvg from PyPI; without either, only the
SVGs are written.
"""

import argparse
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from textual.pilot import Pilot

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mixer_console.console.app import MixerConsole  # noqa: E402
from mixer_console.console.hosted import HostedRelayServer  # noqa: E402
from relay.broadcaster import Broadcaster  # noqa: E402
from relay.config import Settings  # noqa: E402
from relay.messages import MessageType  # noqa: E402
from relay.protocol import encode_frame, encode_string  # noqa: E402
from relay.server import RelayServer, open_store  # noqa: E402
from tests.mixer_client import MixerClient  # noqa: E402

OUT = Path(__file__).resolve().parent

# Who works where: (user name, room or None, commands per second at the peak).
ARTISTS = (
    ("ada", "castle", 30.0),
    ("bob", "castle", 12.0),
    ("chloe", "castle", 6.0),
    ("dev", "forest-shot-12", 8.0),
    ("eve", "forest-shot-12", 2.0),
    ("farid", "lookdev", 0.0),
    ("gus", None, 0.0),
)

OBJECTS = ("/Castle/Tower", "/Castle/Gate", "/Castle/Wall.003", "/Forest/Oak.012")


def command(sequence: int) -> bytes:
    """A room command as the add-on sends them: the object's path first, then
    its data (here a transform matrix); transforms are mergeable, so one
    replaces the previous transform of the same object."""
    path = OBJECTS[sequence % len(OBJECTS)]
    angle = sequence / 10
    matrix = (math.cos(angle), -math.sin(angle), 0, 0, math.sin(angle))
    matrix += (math.cos(angle), 0, 0, 0, 0, 1, 0, sequence / 100, 2.5, 0, 1)
    body = encode_string(path) + struct.pack("<16f", *matrix)
    if sequence % 4:
        return encode_frame(
            MessageType.BLENDER_DATA_UPDATE, body + bytes(sequence % 700), sequence
        )

    return encode_frame(MessageType.TRANSFORM, body, sequence)


async def work(client: MixerClient, peak: float, seconds: float, phase: float) -> None:
    """Send at a rate that swells and ebbs (so the sparklines show it)."""
    began = time.monotonic()
    sent = 0
    credit = 0.0
    with anyio.move_on_after(seconds):
        for _ in range(int(seconds * 20)):
            elapsed = time.monotonic() - began
            rate = peak * (0.55 + 0.45 * math.sin(elapsed / 4 + phase))
            credit += rate * 0.05
            while credit >= 1:
                sent += 1
                credit -= 1
                await client.send_raw(command(sent))

            await anyio.sleep(0.05)


async def drain(client: MixerClient) -> None:
    """Read what the relay sends, as an add-on does (else its queue fills)."""
    try:
        while True:
            await client.stream.receive(1 << 20)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return


async def populate(port: int, seconds: float) -> None:
    """Connect the artists, open the rooms, and let them work for ``seconds``."""
    clients: list[MixerClient] = []
    async with anyio.create_task_group() as tasks:
        rooms_made: set[str] = set()
        for index, (name, room, peak) in enumerate(ARTISTS):
            client = await MixerClient.connect(port)
            clients.append(client)
            await client.handshake(name)
            if room is not None and room not in rooms_made:
                versions = (
                    ("4.1.0", "1.0.1") if room == "lookdev" else ("3.6.2", "1.0.1")
                )
                await client.create_room(
                    room, *versions, commands=[command(n) for n in range(1, 13)]
                )
                rooms_made.add(room)
            elif room is not None:
                await client.join_room(room, "3.6.2", "1.0.1")

            tasks.start_soon(drain, client)
            if peak:
                tasks.start_soon(work, client, peak, seconds, index)

        await anyio.sleep(seconds)
        tasks.cancel_scope.cancel()

    for client in clients:
        await client.aclose()


async def shoot(app: MixerConsole, pilot: Pilot[None], name: str) -> Path:
    await pilot.pause(0.3)
    path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(OUT)))
    sys.stdout.write(f"wrote {path.relative_to(REPO)}\n")
    return path


async def take(seconds: float) -> list[Path]:
    """Run the console and the traffic; return the SVGs written."""
    with tempfile.TemporaryDirectory(prefix="mixer-shots-") as data_dir:
        settings = Settings(
            host="127.0.0.1", port=0, data_dir=Path(data_dir), admin_socket="off"
        )
        store = open_store(settings)
        server = RelayServer(settings, Broadcaster(store))
        port = server.bind()
        app = MixerConsole(
            server.control, "alice", "0.0.0.0:12800", hosted=HostedRelayServer(server)
        )
        shots: list[Path] = []
        try:
            async with (
                app.run_test(size=(132, 36)) as pilot,
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(populate, port, seconds + 30)
                await anyio.sleep(seconds)
                shots.append(await shoot(app, pilot, "dashboard"))
                await pilot.resize_terminal(80, 24)
                shots.append(await shoot(app, pilot, "dashboard-80x24"))
                await pilot.resize_terminal(132, 36)
                await pilot.press("2", "down", "k")
                shots.append(await shoot(app, pilot, "kick-dialog"))
                await pilot.press("escape", "1", "h")
                await pilot.pause(0.5)
                shots.append(await shoot(app, pilot, "history"))
                await pilot.press("down", "down", "down", "i")
                await pilot.pause(0.5)
                shots.append(await shoot(app, pilot, "command"))
                await pilot.press("escape", "escape", "question_mark")
                shots.append(await shoot(app, pilot, "keys"))
                tasks.cancel_scope.cancel()
                await app.action_quit()
        finally:
            server.close()
            store.close(timeout=10)

    return shots


def to_png(svg: Path) -> Path | None:
    png = svg.with_suffix(".png")
    if shutil.which("rsvg-convert"):
        subprocess.run(
            ["rsvg-convert", str(svg), "-o", str(png)], check=True, timeout=60
        )
        return png

    try:
        import cairosvg  # type: ignore[import-not-found]
    except ImportError:
        return None

    cairosvg.svg2png(url=str(svg), write_to=str(png))
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="traffic before the first shot"
    )
    arguments = parser.parse_args()
    shots = anyio.run(take, arguments.seconds, backend="asyncio")
    for svg in shots:
        png = to_png(svg)
        done = f"wrote {png.relative_to(REPO)}" if png else "no PNG converter"
        sys.stdout.write(f"{svg.name}: {done}\n")

    return 0


if __name__ == "__main__":
    sys.exit(main())
