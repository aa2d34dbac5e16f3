"""A hostile or careless peer on the HTTP surface: bodies built to break the
parser, polls raced against each other, connections that never finish a
request."""

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from relay import http_limits, login
from relay.http import LOGIN_REQUESTS_PER_MINUTE, MAX_CONNECTIONS
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


def unfinished_requests(port: int, local_host: str, count: int) -> list[socket.socket]:
    """Connections from ``local_host`` that each send half a request head and
    then nothing, as a slowloris does."""
    connections = []
    for _ in range(count):
        connection = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(local_host, 0)
        )
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        connections.append(connection)

    return connections


def http_port(relay: LoginRelay) -> int:
    return int(relay.http_url.rsplit(":", 1)[1])


async def test_one_address_cannot_hold_every_http_connection(
    login_relay: LoginRelay,
) -> None:
    """An address opening more connections than the surface serves at once,
    none finishing its request, is cut to its share: another address is still
    answered at once."""
    hostile = unfinished_requests(
        http_port(login_relay), "127.0.0.3", MAX_CONNECTIONS + 4
    )
    try:
        await anyio.sleep(0.5)
        async with login_relay.browser("127.0.0.2") as http:
            health = await http.get("/healthz")
    finally:
        for connection in hostile:
            connection.close()

    assert health.status_code == 200


async def test_unfinished_request_heads_are_closed(
    login_relay: LoginRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections from many addresses that never finish their request head
    fill the surface only until the head deadline: then the relay closes them
    and serves others again."""
    monkeypatch.setattr(http_limits, "REQUEST_HEAD_SECONDS", 1.0)
    per_address = http_limits.MAX_CONNECTIONS_PER_ADDRESS
    hostile = [
        connection
        for host in range(MAX_CONNECTIONS // per_address)
        for connection in unfinished_requests(
            http_port(login_relay), f"127.0.1.{host + 1}", per_address
        )
    ]
    try:
        async with login_relay.browser("127.0.0.2") as http:
            during = await http.get("/healthz")
            await anyio.sleep(2.5)
            after = await http.get("/healthz")

        closed = [connection.recv(1024) for connection in hostile]
    finally:
        for connection in hostile:
            connection.close()

    assert during.status_code == 503
    assert after.status_code == 200
    assert closed == [b""] * len(hostile)


async def test_forwarded_headers_neither_move_a_lease_nor_dodge_the_limit(
    login_relay: LoginRelay,
) -> None:
    """X-Forwarded-For and Forwarded are not believed, not even from the relay's
    own machine (uvicorn believes them from 127.0.0.1 by default): the lease goes
    to the address the relay sees, and a new forwarded address per request does
    not reset the rate limit."""
    async with login_relay.browser() as browser:
        page = await browser.get("/login", headers={"x-forwarded-for": "10.9.9.9"})
        answers = [
            (
                await browser.get(
                    "/login",
                    headers={
                        "x-forwarded-for": f"10.0.0.{attempt}",
                        "forwarded": f"for=10.0.1.{attempt}",
                    },
                    follow_redirects=False,
                )
            ).status_code
            for attempt in range(LOGIN_REQUESTS_PER_MINUTE)
        ]

    leases = leases_of(login_relay)
    assert page.status_code == 200
    assert leases == ["127.0.0.1"]
    assert answers[-1] == 429


def leases_of(relay: LoginRelay) -> list[str]:
    leases = relay.server.leases
    assert leases is not None
    return [lease.address for lease in leases.leases()]


async def test_metrics_name_rooms_only_to_leased_addresses_and_operators(
    tmp_path: Path,
) -> None:
    """With login on, /metrics (which names every room) answers an address that
    holds a lease, or a request carrying an operator's token; anyone else gets
    401 and a token of an account that is no operator 403, neither naming a
    room. Health stays open to all."""
    settings = login_settings(tmp_path / "data", operators=frozenset({"olga"}))
    async with running_login_relay(settings) as relay:
        async with relay.browser() as browser:
            await browser.get("/login")

        creator = await relay.connect()
        await creator.handshake("creator")
        await creator.create_room("secret-project")
        operator = {"authorization": "Bearer " + relay.github.issue_token("olga")}
        artist = {"authorization": "Bearer " + relay.github.issue_token("alice")}
        async with relay.browser() as leased:
            from_lease = await leased.get("/metrics")

        async with relay.browser("127.0.0.2") as stranger:
            anonymous = await stranger.get("/metrics")
            as_artist = await stranger.get("/metrics", headers=artist)
            as_operator = await stranger.get("/metrics", headers=operator)
            health = await stranger.get("/healthz")

        await creator.aclose()

    assert from_lease.status_code == 200
    assert "secret-project" in from_lease.text
    assert (anonymous.status_code, as_artist.status_code) == (401, 403)
    assert "secret-project" not in anonymous.text + as_artist.text
    assert as_operator.status_code == 200
    assert "secret-project" in as_operator.text
    assert health.status_code == 200


async def test_callback_from_another_address_leaves_the_login_to_its_browser(
    login_relay: LoginRelay,
) -> None:
    """Someone at another address who learns a login's callback URL (state and
    code) and its cookie is refused, and the attempt does not spoil the login:
    the browser that began it still finishes it, once."""
    async with login_relay.browser() as browser:
        begun = await browser.get("/login", follow_redirects=False)
        approved = await browser.get(begun.headers["location"], follow_redirects=False)
        callback = approved.headers["location"]
        state = browser.cookies["mixer_login_state"]
        async with login_relay.browser("127.0.0.2") as other:
            other.cookies.set("mixer_login_state", state, path="/login")
            stolen = await other.get(callback)

        finished = await browser.get(callback)
        replayed = await browser.get(callback)

    assert stolen.status_code == 400
    assert finished.status_code == 200
    assert "Logged in as alice" in finished.text
    assert replayed.status_code == 400
    assert leases_of(login_relay) == ["127.0.0.1"]


async def test_logins_begun_elsewhere_do_not_push_out_a_pending_login(
    login_relay: LoginRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address beginning login after login (within its rate limit) forgets
    its own oldest ones, never the login another address is in the middle of
    (the pending logins are capped, here at 12, as at 1000 in use)."""
    monkeypatch.setattr(login, "MAX_PENDING_LOGINS", 12)
    async with login_relay.browser() as browser:
        begun = await browser.get("/login", follow_redirects=False)
        approved = await browser.get(begun.headers["location"], follow_redirects=False)
        async with login_relay.browser("127.0.0.2") as flood:
            starts = [
                (await flood.get("/login", follow_redirects=False)).status_code
                for _ in range(LOGIN_REQUESTS_PER_MINUTE)
            ]

        finished = await browser.get(approved.headers["location"])

    assert starts == [303] * LOGIN_REQUESTS_PER_MINUTE
    assert finished.status_code == 200
    assert "Logged in as alice" in finished.text


async def test_refused_requests_are_logged_once_a_minute_per_address(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer hammering the login page past its limit gets 429 each time but
    costs the log one line a minute, not one per request."""
    caplog.set_level(logging.INFO)
    async with login_relay.browser("127.0.0.2") as http:
        answers = [
            (await http.get("/login", follow_redirects=False)).status_code
            for _ in range(LOGIN_REQUESTS_PER_MINUTE + 30)
        ]

    limited = [r for r in caplog.records if r.getMessage() == "login.rate_limited"]
    assert answers[LOGIN_REQUESTS_PER_MINUTE:] == [429] * 30
    assert len(limited) == 1


def send_raw_requests(port: int, requests: list[bytes]) -> None:
    """Each request on a connection of its own, closed once answered."""
    for request in requests:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(request)
            connection.recv(65536)


async def test_warnings_about_bad_requests_are_logged_once_a_minute(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed requests and WebSocket upgrades, 40 of each, cost the log one
    line of each of uvicorn's warnings (auth7: 1,500 lines in 0.8 s from one
    peer), and the surface goes on answering."""
    caplog.set_level(logging.INFO)
    garbage = b"\x00\x01 not http at all\r\n\r\n"
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    port = http_port(login_relay)

    await anyio.to_thread.run_sync(send_raw_requests, port, [garbage, upgrade] * 40)
    async with login_relay.browser() as http:
        health = await http.get("/healthz")

    uvicorn_warnings = [
        r.getMessage() for r in caplog.records if r.name.startswith("uvicorn")
    ]
    assert health.status_code == 200
    assert len(uvicorn_warnings) == len(set(uvicorn_warnings)) <= 3, uvicorn_warnings
