"""Commands that talk to running relays or nodes (cluster status and add,
login, leases --relay), stopped by SIGINT, SIGTERM or SIGHUP while waiting for
an answer, exit 130 and say so; they used to exit 0 without a word, which a
script takes for success (a login that did not happen, a node not added)."""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mixer_console.admin_cli import EXIT_INTERRUPTED

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0
SECRET = "a-test-secret-of-some-length"


def cluster_status(address: str) -> list[str]:
    return ["cluster", "status"]


def cluster_add(address: str) -> list[str]:
    return ["cluster", "add", address]


def login(address: str) -> list[str]:
    return ["login", "--relay", f"http://{address}"]


def remote_leases(address: str) -> list[str]:
    return ["leases", "--relay", f"http://{address}"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("command", [cluster_status, cluster_add, login, remote_leases])
def test_command_stopped_while_waiting_exits_130(
    tmp_path: Path, command: Callable[[str], list[str]], stop: signal.Signals
) -> None:
    with socket.socket() as silent:
        # Accepts the command's connection (the kernel does) and never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(TIMEOUT)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "mixer_console", *command(address)],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_DATA_DIR": str(tmp_path),
                "MIXER_RAFT_SELF": address,
                "MIXER_RAFT_PEERS": "127.0.0.1:9",
                "MIXER_RAFT_SECRET": SECRET,
                "MIXER_OPERATOR_TOKEN": "gho_" + "a" * 36,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = silent.accept()
            process.send_signal(stop)
            _, errors = process.communicate(timeout=TIMEOUT)
            connection.close()
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=TIMEOUT)

    assert process.returncode == EXIT_INTERRUPTED, errors
    assert "interrupted" in errors
    assert "Traceback" not in errors
