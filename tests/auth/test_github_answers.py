"""A GitHub that misbehaves (odd numbers, a broken login, a huge or trickling
answer) gets a clear refusal from the relay's login pages, never a 500 with a
traceback, a lease, or a request that outlasts its bound (found by auth7)."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

import relay.github
from tests.login_relay import LoginRelay, login_settings, running_login_relay

DEVICE_CODE = "/login/device/code"
TOKEN = "/login/oauth/access_token"
USER = "/api/v3/user"


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


def device_answer(expires_in: str, interval: str) -> bytes:
    """A device-code answer with these numbers, written as JSON text."""
    return (
        b'{"device_code": "d", "user_code": "1234-5678", "verification_uri": '
        b'"http://127.0.0.1/device", "expires_in": '
        + expires_in.encode()
        + b', "interval": '
        + interval.encode()
        + b"}"
    )


async def browser_login(relay: LoginRelay) -> tuple[httpx2.Response, httpx2.Response]:
    """A browser's whole login, then its lease: the last page and the lease's."""
    async with relay.browser() as browser:
        return await browser.get("/login"), await browser.get("/login/lease")


@pytest.mark.parametrize(
    ("expires_in", "interval"),
    [
        ("1e999", "5"),
        ("900", "Infinity"),
        ("1" + "0" * 400, "5"),
        ("900", "1" + "0" * 400),
        ("900", "-5"),
        ("0", "5"),
        ("NaN", "5"),
    ],
    ids=["huge-float", "infinity", "huge-int", "huge-interval", "negative", "0", "nan"],
)
async def test_device_login_with_impossible_numbers_is_a_clear_502(
    login_relay: LoginRelay,
    caplog: pytest.LogCaptureFixture,
    expires_in: str,
    interval: str,
) -> None:
    login_relay.github.answers[DEVICE_CODE] = device_answer(expires_in, interval)

    async with login_relay.browser() as terminal:
        answer = await terminal.post("/login/device")

    assert answer.status_code == 502, answer.text
    assert "device login" in answer.json()["error"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_token_answer_with_an_impossible_expiry_is_a_failed_login(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    login_relay.github.answers[TOKEN] = (
        b'{"access_token": "gho_x", "token_type": "bearer", "expires_in": 1e999}'
    )

    page, lease = await browser_login(login_relay)

    assert page.status_code == 400, page.text
    assert "Login failed" in page.text
    assert lease.status_code == 404
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(
    "login",
    [b'"\\ud800evil"', b'"alice bob"', b'"a\\u0000b"', b'"' + b"a" * 300 + b'"'],
    ids=["lone-surrogate", "space", "nul", "300-characters"],
)
async def test_a_login_that_github_cannot_have_gets_no_lease(
    login_relay: LoginRelay, login: bytes
) -> None:
    """A user API answer whose login is no GitHub login (a lone surrogate, a
    space, a NUL, 300 characters) grants nothing: a lease under it broke every
    operator's lease listing."""
    login_relay.github.answers[USER] = b'{"login": ' + login + b', "id": 1}'

    page, lease = await browser_login(login_relay)

    assert page.status_code == 400, page.text
    assert "not a GitHub login" in page.text
    assert lease.status_code == 404


async def test_a_trickling_github_answer_is_cut_at_the_request_bound(
    login_relay: LoginRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte at a time keeps each read under httpx's timeout; the whole
    request is bounded all the same."""
    monkeypatch.setattr(relay.github, "REQUEST_TIMEOUT", 1.0)
    login_relay.github.answers[DEVICE_CODE] = device_answer("900", "5")
    login_relay.github.trickle_seconds = 0.2

    with anyio.fail_after(10):
        async with login_relay.browser() as terminal:
            answer = await terminal.post("/login/device")

    assert answer.status_code == 502
    assert "took too long" in answer.json()["error"]


async def test_a_huge_github_answer_is_refused_as_it_arrives(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relay")
    padding = b" " * (8 * relay.github.MAX_ANSWER_BYTES)
    login_relay.github.answers[DEVICE_CODE] = device_answer("900", "5") + padding

    async with login_relay.browser() as terminal:
        answer = await terminal.post("/login/device")

    assert answer.status_code == 502
    assert "larger than" in answer.json()["error"]
