"""MIXER_ADMIN_SOCKET, and the admin socket of the headless relay process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.config import Settings
from relay.control import RelaySnapshot
from relay.errors import ConfigError
from tests.control.admin_helpers import private_socket_dir

ROOT = Path(__file__).resolve().parent.parent.parent


def test_admin_socket_defaults_to_the_data_directory() -> None:
    """Unset, the socket is admin.sock in the data directory; off turns it off."""
    settings = Settings.from_env({"MIXER_DATA_DIR": "/srv/mixer"})
    off = Settings.from_env({"MIXER_ADMIN_SOCKET": " OFF "})
    chosen = Settings.from_env({"MIXER_ADMIN_SOCKET": "/run/mixer/a.sock"})

    assert settings.admin_socket_path() == Path("/srv/mixer/admin.sock")
    assert off.admin_socket_path() is None
    assert chosen.admin_socket_path() == Path("/run/mixer/a.sock")


def test_admin_socket_refusals_say_why() -> None:
    """A relative or too long path is refused with the reason."""
    with pytest.raises(ConfigError) as relative:
        Settings.from_env({"MIXER_ADMIN_SOCKET": "admin.sock"})
    with pytest.raises(ConfigError) as long:
        Settings.from_env({"MIXER_ADMIN_SOCKET": "/" + "a" * 120})

    assert "must be an absolute path, or off" in str(relative.value)
    assert "a Unix socket path holds at most 107" in str(long.value)


async def attach_once(path: Path) -> tuple[RelaySnapshot, int | None]:
    console = AdminClient(path)
    snapshot = await console.snapshot()
    await console.aclose()
    return snapshot, console.relay_pid


def test_headless_relay_serves_the_admin_socket() -> None:
    """``mixer-console --no-ui`` names its admin socket in its first line, serves
    consoles on it, and removes it when stopped."""
    with private_socket_dir() as directory:
        path = directory / "admin.sock"
        process = subprocess.Popen(
            [sys.executable, "-m", "mixer_console", "--no-ui", "--host", "127.0.0.1"],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_PORT": "0",
                "MIXER_LOG_FORMAT": "json",
                "MIXER_ADMIN_SOCKET": str(path),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            started = json.loads(process.stdout.readline())
            snapshot, pid = anyio.run(attach_once, path)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)

        assert started["event"] == "relay.started"
        assert started["admin_socket"] == str(path)
        assert snapshot.totals.store_state == "ok"
        assert pid == process.pid
        assert process.returncode == 0
        assert not path.exists()
