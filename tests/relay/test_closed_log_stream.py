"""A headless relay whose log reader goes away (``mixer-console --no-ui | head
-1``, a log shipper that dies): it says so once on stderr and goes on serving
without a log, instead of printing logging's traceback for every event after."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio

from tests.mixer_client import MixerClient
from tests.relays import headless_env

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 20.0
CLIENTS = 5


async def _come_and_go(port: int) -> None:
    with anyio.fail_after(TIMEOUT):
        for index in range(CLIENTS):
            client = await MixerClient.connect(port)
            await client.handshake(f"artist{index}")
            await client.create_room(f"room{index}")
            await client.aclose()


def test_relay_goes_on_when_its_log_reader_is_gone(tmp_path: Path) -> None:
    relay = subprocess.Popen(
        [sys.executable, "-m", "mixer_console", "--no-ui"],
        cwd=ROOT,
        env=headless_env(tmp_path / "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        started = json.loads(relay.stdout.readline())
        relay.stdout.close()  # the reader goes away
        anyio.run(_come_and_go, int(started["port"]))
        relay.send_signal(signal.SIGTERM)
        _, errors = relay.communicate(timeout=TIMEOUT)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate(timeout=TIMEOUT)

    assert relay.returncode == 0, errors
    assert "Traceback" not in errors
    assert "Logging error" not in errors
    assert errors.count("the log's reader went away") == 1, errors
