"""``leases --relay`` and ``lease revoke --relay`` given a relay that is no
http(s) address: found by following the README as a new engineer (readme6).

``mixer-console login --relay 127.0.0.1:12801`` said "--relay must be an
http(s) address" and exited 2; the lease commands tried the request, exited 7
and said the relay "cannot be reached" with httpx's words about a missing
protocol. All three now refuse it the same way, before any request."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

# Nothing listens here; the command must refuse before it tries anyway.
NO_SCHEME = "127.0.0.1:9"


def lease_command(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``mixer-console`` as an operator would, with a token set."""
    return subprocess.run(
        [sys.executable, "-m", "mixer_console", *argv],
        cwd=ROOT,
        env={
            **os.environ,
            "MIXER_DATA_DIR": str(data_dir),
            "MIXER_OPERATOR_TOKEN": "gho_not_checked_here",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("leases", "--relay", NO_SCHEME),
        ("lease", "revoke", "127.0.0.1", "--relay", NO_SCHEME),
    ],
)
def test_lease_commands_refuse_a_relay_without_http_scheme(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """Exit 2 and the same words as ``login --relay``."""
    result = lease_command(tmp_path, *argv)

    assert result.returncode == 2, result.stderr
    assert "argument --relay: must be an http:// or https:// address" in result.stderr


def test_login_refuses_a_relay_without_http_scheme(tmp_path: Path) -> None:
    """What the lease commands match."""
    result = lease_command(tmp_path, "login", "--relay", NO_SCHEME)

    assert result.returncode == 2, result.stderr
    assert "argument --relay: must be an http:// or https:// address" in result.stderr
