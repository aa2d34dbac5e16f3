"""A hostile or careless peer on the HTTP surface: bodies built to break the
parser, polls raced against each other, connections that never finish a
request."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

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
