"""``mixer-console login``: GitHub's device flow through the relay."""

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mixer_console.login_cli import EXIT_LOGIN, EXIT_OK, device_login
from tests.login_relay import LoginRelay, login_settings, running_login_relay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


async def login_while(
    relay: LoginRelay, act: str, login: str = "alice"
) -> tuple[int, str]:
    """Run the login command; once the code is out, approve or deny it (or do
    nothing, for "wait")."""
    out = io.StringIO()
    status = -1

    async def run_login() -> None:
        nonlocal status
        status = await device_login(relay.http_url, out)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_login)
            code = await relay.github.next_user_code()
            if act == "approve":
                relay.github.approve(code, login)
            elif act == "deny":
                relay.github.deny(code)

    return status, out.getvalue()


async def test_device_login_grants_a_lease(login_relay: LoginRelay) -> None:
    """The command shows the code and the page, polls until the person approves,
    and the terminal's address then holds a lease; the device-code request
    carries no token."""
    status, output = await login_while(login_relay, "approve")

    async with login_relay.browser() as http:
        lease = await http.get("/login/lease")

    assert status == EXIT_OK
    assert "enter the code" in output
    assert login_relay.github.url + "/login/device" in output
    assert "Logged in as alice" in output
    assert lease.json()["login"] == "alice"
    assert all(
        "authorization" not in headers
        for headers in login_relay.github.device_code_requests
    )


@pytest.mark.slow
async def test_device_login_slows_down_when_github_asks(
    login_relay: LoginRelay,
) -> None:
    """slow_down from GitHub adds 5 s to the polling interval, and the login
    still completes."""
    login_relay.github.is_slow_down_next = True
    started = anyio.current_time()

    status, output = await login_while(login_relay, "approve")

    assert status == EXIT_OK
    assert "every 6 s" in output
    assert anyio.current_time() - started >= 6


async def test_device_login_denied(login_relay: LoginRelay) -> None:
    """A person who cancels on GitHub ends the command with a clear message."""
    status, output = await login_while(login_relay, "deny")

    assert status == EXIT_LOGIN
    assert "cancelled on GitHub" in output


async def test_device_login_expires(tmp_path: Path) -> None:
    """A code nobody enters in time ends the command with a clear message."""
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        relay.github.device_expires_in = 2
        status, output = await login_while(relay, "wait")

    assert status == EXIT_LOGIN
    assert "expired" in output


async def test_device_login_refuses_account_outside_allow_list(
    login_relay: LoginRelay,
) -> None:
    """An approved account that no allow-list names gets no lease."""
    status, output = await login_while(login_relay, "approve", login="mallory")

    async with login_relay.browser() as http:
        lease = await http.get("/login/lease")

    assert status == EXIT_LOGIN
    assert "'mallory' is not allowed" in output
    assert lease.status_code == 404


async def test_device_login_polled_from_another_address_is_refused(
    login_relay: LoginRelay,
) -> None:
    """A login id used from another address than the one that began the login
    (a stolen id) is refused, and that address gets no lease."""
    async with login_relay.browser() as terminal:
        start = (await terminal.post("/login/device")).json()

    login_relay.github.approve(start["user_code"], "alice")
    async with login_relay.browser(local_host="127.0.0.2") as thief:
        stolen = await thief.post(
            "/login/device/poll", json={"login_id": start["login_id"]}
        )
        lease = await thief.get("/login/lease")

    assert stolen.status_code == 400
    assert "no such device login" in stolen.json()["error"]
    assert lease.status_code == 404


async def test_login_command_runs_as_a_process(login_relay: LoginRelay) -> None:
    """``mixer-console login --relay URL`` as a real process: prints the code,
    waits for approval, exits 0."""
    command = [sys.executable, "-m", "mixer_console", "login", "--relay"]
    async with await anyio.open_process(
        [*command, login_relay.http_url],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        code = await login_relay.github.next_user_code(timeout=20)
        login_relay.github.approve(code, "alice")
        with anyio.fail_after(30):
            status = await process.wait()

        assert process.stdout is not None
        output = b"".join([chunk async for chunk in process.stdout]).decode()

    assert status == EXIT_OK
    assert code in output
    assert "Logged in as alice" in output
