"""A hostile or careless peer on the HTTP surface: bodies built to break the
parser, polls raced against each other, connections that never finish a
request."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.login_relay import LoginRelay, login_settings, running_login_relay


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


async def test_deeply_nested_json_body_is_a_clear_error(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A small body nested thousands of levels deep (JSON's parser gives up with
    RecursionError) is answered 400, not 500 with a traceback in the log."""
    async with login_relay.browser() as http:
        poll = await http.post("/login/device/poll", content=b"[" * 4000)
        health = await http.get("/healthz")

    assert poll.status_code == 400
    assert "login_id" in poll.json()["error"]
    assert health.status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_concurrent_polls_of_one_device_login_grant_once(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Polls of one device login sent at once make one request to GitHub: one is
    granted, the others are told to slow down (or, once it is granted, that it
    is over); none fails with 500, and the login id never reaches the log."""
    login_relay.github.device_interval = 0
    answers: list[tuple[int, str]] = []
    async with login_relay.browser() as http:
        start = (await http.post("/login/device")).json()
        login_relay.github.approve(await login_relay.github.next_user_code(), "alice")

        async def poll() -> None:
            answer = await http.post(
                "/login/device/poll", json={"login_id": start["login_id"]}
            )
            answers.append((answer.status_code, answer.json()["state"]))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for _ in range(3):
                    tasks.start_soon(poll)

    assert [state for _, state in answers].count("granted") == 1
    assert {answer for answer in answers if answer[1] != "granted"} <= {
        (200, "slow_down"),
        (400, "failed"),
    }
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert start["login_id"] not in caplog.text
