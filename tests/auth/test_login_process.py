"""The headless relay with login as a real process: what it says at start-up,
its HTTP surface, and its refusal of an incomplete login configuration."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 15.0
SECRET = "process-secret-0d9f1c"
LOGIN_ENV = {
    "MIXER_AUTH": "github",
    "GITHUB_CLIENT_ID": "Iv1.process",
    "GITHUB_CLIENT_SECRET": SECRET,
    "MIXER_PUBLIC_URL": "http://127.0.0.1:1",
    "MIXER_ALLOW_USERS": "alice",
    "MIXER_LOG_FORMAT": "json",
    "MIXER_ADMIN_SOCKET": "off",
}


def relay_process(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mixer_console", "--no-ui", "--host", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "MIXER_PORT": "0", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_relay_with_login_says_so_and_serves_http() -> None:
    """relay.started names the login page and the HTTP port; /healthz answers
    and /login sends the browser to GitHub; the secret is in no output."""
    process = relay_process(LOGIN_ENV)
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        base = f"http://127.0.0.1:{started['http_port']}"
        health = httpx2.get(base + "/healthz", timeout=TIMEOUT)
        login = httpx2.get(base + "/login", timeout=TIMEOUT)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=TIMEOUT)

    assert started["event"] == "relay.started"
    assert "github" in started["login"]
    assert "http://127.0.0.1:1/login" in started["login"]
    assert health.status_code == 200
    assert login.status_code == 303
    assert login.headers["location"].startswith("https://github.com/login/oauth")
    assert process.returncode == 0
    assert SECRET not in out + err + login.text + login.headers["location"]


def test_incomplete_login_configuration_stops_the_relay() -> None:
    """MIXER_AUTH=github without a client id exits 2 naming the variable, and
    does not repeat the secret."""
    env = {k: v for k, v in LOGIN_ENV.items() if k != "GITHUB_CLIENT_ID"}

    process = relay_process(env)
    out, err = process.communicate(timeout=TIMEOUT)

    assert process.returncode == 2
    assert "GITHUB_CLIENT_ID is required" in err
    assert "Traceback" not in err
    assert SECRET not in out + err
    assert "relay.started" not in out


def test_login_command_refuses_a_relay_that_is_not_a_url() -> None:
    """``mixer-console login --relay relay.studio`` exits 2 with a message on
    stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "mixer_console", "login", "--relay", "relay.studio"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 2
    assert "must be an http:// or https:// address" in result.stderr
