"""The commands that talk to a running relay over HTTP (``login``, ``leases
--relay``, ``lease revoke --relay``) refuse a --relay that is no usable address
with exit status 2 and a line saying so, before any request."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

COMMANDS = [
    ("login", "--relay"),
    ("leases", "--relay"),
    ("lease", "revoke", "192.0.2.1", "--relay"),
]

BAD_URLS = [
    ("http://127.0.0.1:99999", "port"),
    ("http://[::1", "address"),
    ("http://127.0.0.1:12801/\udcff", "UTF-8"),
    ("ftp://127.0.0.1", "http"),
    ("127.0.0.1:12801", "http"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_a_bad_relay_url_is_refused(
    tmp_path: Path, command: tuple[str, ...], url: str, reason: str
) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "mixer_console", *command, os.fsencode(url)],
        cwd=ROOT,
        env={
            **os.environ,
            "MIXER_DATA_DIR": str(tmp_path),
            "MIXER_OPERATOR_TOKEN": "gho_" + "a" * 36,
        },
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )

    assert process.returncode == 2, process.stdout + process.stderr
    assert "Traceback" not in process.stderr
    assert "--relay" in process.stderr
    assert reason in process.stderr
