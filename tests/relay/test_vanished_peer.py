"""A peer whose machine vanishes from the network leaves its room in bounded time."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("vanish_in_netns.py")


def run_in_network_namespace() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--net", sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def namespace_available() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")

    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here (needs root)")


def test_session_vanished_peer_is_dropped_by_keepalive(
    namespace_available: None,
) -> None:
    """With a 1 s keepalive and a 3 s send timeout, a client whose network went
    down leaves its room and is disconnected within seconds, not never."""
    result = run_in_network_namespace()
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout.splitlines()[-1])
    names = [event["event"] for event in events]

    assert names[:2] == ["client.connected", "room.created"]
    assert names[-4:] == [
        "room.left",
        "room.deleted",
        "client.disconnected",
        "test.elapsed",
    ]
    assert "timed out" in events[-2]["reason"]
    assert events[-1]["seconds"] < 20
