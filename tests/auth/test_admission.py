"""Which TCP connections a relay with login lets in, and what the others see."""

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from relay.control import Ban
from relay.gate import MAX_PENDING_ADMISSIONS, MAX_PENDING_ADMISSIONS_PER_ADDRESS
from relay.messages import MessageType
from relay.protocol import HEADER, encode_json
from tests.login_relay import LoginRelay, login_settings, running_login_relay
from tests.mixer_client import MixerClient, error_text, json_of

OTHER_ADDRESS = "127.0.0.2"


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


async def log_in(relay: LoginRelay, local_host: str | None = None) -> None:
    async with relay.browser(local_host) as browser:
        page = await browser.get("/login")

    assert page.status_code == 200, page.text


async def leased_observer(relay: LoginRelay) -> MixerClient:
    """A logged-in client that has seen everything up to now."""
    await log_in(relay)
    observer = await relay.connect()
    await observer.handshake("observer")
    await observer.sync()
    return observer


async def test_lease_used_from_another_address_is_refused(
    login_relay: LoginRelay,
) -> None:
    """A lease granted to 127.0.0.1 does not let a connection from 127.0.0.2 in."""
    await log_in(login_relay)

    stranger = await login_relay.connect(local_host=OTHER_ADDRESS)
    await stranger.send(MessageType.CLIENT_ID)
    frames = await stranger.expect_closed()
    await stranger.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    assert "login required" in error_text(frames[0])


async def test_refused_connection_is_invisible_to_others(
    login_relay: LoginRelay,
) -> None:
    """Nobody hears of a connection that is refused: no CLIENT_UPDATE, no
    CLIENT_DISCONNECTED, and it is not listed."""
    observer = await leased_observer(login_relay)

    stranger = await login_relay.connect(local_host=OTHER_ADDRESS)
    await stranger.send(MessageType.LIST_CLIENTS)
    await stranger.expect_closed()
    await stranger.aclose()
    seen = await observer.sync()
    clients = await observer.list_clients()
    await observer.aclose()

    assert seen == []
    assert list(clients) == [observer.client_id]


async def test_token_in_first_attributes_admits_and_is_never_forwarded(
    login_relay: LoginRelay,
) -> None:
    """A script presenting ``mixer_token`` first is let in under its login; the
    other attributes apply, and the token reaches nobody, itself included."""
    observer = await leased_observer(login_relay)
    token = login_relay.github.issue_token("alice")

    script = await login_relay.connect(local_host=OTHER_ADDRESS)
    await script.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json({"mixer_token": token, "user_name": "render-bot"}),
    )
    script_id = await script.handshake("render-bot")
    script_saw = await script.sync()
    observer_saw = await observer.sync()
    clients = await observer.list_clients()
    await script.aclose()
    await observer.aclose()

    everything = b"".join(bytes(f.wire) for f in [*script_saw, *observer_saw])
    assert clients[script_id]["github_login"] == "alice"
    assert clients[script_id]["user_name"] == "render-bot"
    assert "mixer_token" not in json.dumps(clients)
    assert token.encode() not in everything
    assert any(
        json_of(f).get(script_id, {}).get("github_login") == "alice"
        for f in observer_saw
        if f.kind == MessageType.CLIENT_UPDATE
    )


async def test_unknown_token_is_refused_with_the_login_url(
    login_relay: LoginRelay,
) -> None:
    """A token GitHub does not accept gets SEND_ERROR with the login page."""
    script = await login_relay.connect(local_host=OTHER_ADDRESS)
    await script.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json({"mixer_token": "gho_not_a_real_token"}),
    )
    frames = await script.expect_closed()
    await script.aclose()

    message = error_text(frames[0])
    assert "login refused" in message
    assert login_relay.http_url + "/login" in message
    assert "gho_not_a_real_token" not in message


async def test_token_of_account_outside_allow_list_is_refused(
    login_relay: LoginRelay,
) -> None:
    """A valid token of an account no allow-list names is refused."""
    token = login_relay.github.issue_token("mallory")

    script = await login_relay.connect(local_host=OTHER_ADDRESS)
    await script.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_json({"mixer_token": token})
    )
    frames = await script.expect_closed()
    await script.aclose()

    assert "'mallory' is not allowed" in error_text(frames[0])


async def test_large_first_frame_is_refused_unread(login_relay: LoginRelay) -> None:
    """A stranger declaring a 1 GiB first frame is refused at once; the relay
    does not wait for, or buffer, the payload."""
    stranger = await login_relay.connect()
    await stranger.send_raw(
        HEADER.pack(1 << 30, 0, MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES)
    )

    frames = await stranger.expect_closed(timeout=5)
    await stranger.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]


@pytest.mark.slow
async def test_silent_connection_is_refused_after_the_admission_time(
    login_relay: LoginRelay,
) -> None:
    """A connection that never sends is closed with the login message once the
    admission time has passed, not held open."""
    stranger = await login_relay.connect()

    frames = await stranger.expect_closed(timeout=15)
    await stranger.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]


async def test_revoking_a_lease_closes_its_connections(
    login_relay: LoginRelay,
) -> None:
    """Revocation (as the console calls it) closes the address's connections,
    refuses new ones, and goes to the audit log."""
    observer = await leased_observer(login_relay)
    leases = login_relay.server.leases
    assert leases is not None

    revoked = leases.revoke("127.0.0.1", operator="op-carol")
    await observer.expect_closed()
    await observer.aclose()
    again = await login_relay.connect()
    await again.send(MessageType.CLIENT_ID)
    refused = await again.expect_closed()
    await again.aclose()
    audit = login_relay.server.broadcaster.audit.newest(2)

    assert revoked is not None and revoked.login == "alice"
    assert [f.kind for f in refused] == [MessageType.SEND_ERROR]
    assert [(e.operator, e.action, e.target) for e in audit[:2]] == [
        ("op-carol", "lease.revoke", "127.0.0.1"),
        ("alice", "lease.grant", "127.0.0.1"),
    ]


async def test_lease_expires(tmp_path: Path) -> None:
    """A lease lets its address in until its time is up, not after."""
    settings = login_settings(tmp_path / "data", lease_ttl=3.0)
    async with running_login_relay(settings) as relay:
        await log_in(relay)
        early = await relay.connect()
        await early.handshake()
        await anyio.sleep(3.2)
        late = await relay.connect()
        await late.send(MessageType.CLIENT_ID)
        frames = await late.expect_closed()
        await late.aclose()
        await early.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]


async def test_lease_survives_a_restart(tmp_path: Path) -> None:
    """A lease is kept in the store: after a restart the address still connects."""
    settings = login_settings(tmp_path / "data")
    async with running_login_relay(settings) as relay:
        await log_in(relay)

    async with running_login_relay(settings) as relay:
        client = await relay.connect()
        client_id = await client.handshake()
        clients = await client.list_clients()
        await client.aclose()

    assert clients[client_id]["github_login"] == "alice"


async def silent_connections(
    relay: LoginRelay, addresses: list[str]
) -> list[MixerClient]:
    """As many connections waiting for their first message as one address may
    hold, from each of ``addresses`` (loopback addresses, such as 127.0.3.1)."""
    return [
        await relay.connect(local_host=address)
        for address in addresses
        for _ in range(MAX_PENDING_ADMISSIONS_PER_ADDRESS)
    ]


async def test_too_many_waiting_connections_are_refused_at_once(
    login_relay: LoginRelay,
) -> None:
    """Past the limit of connections waiting for their first message, a new one
    is refused at once instead of being held for the admission time."""
    addresses = MAX_PENDING_ADMISSIONS // MAX_PENDING_ADMISSIONS_PER_ADDRESS
    waiting = await silent_connections(
        login_relay, [f"127.0.3.{index + 1}" for index in range(addresses)]
    )
    try:
        extra = await login_relay.connect(local_host="127.0.4.1")
        frames = await extra.expect_closed(timeout=3)
        await extra.aclose()
    finally:
        for client in waiting:
            await client.aclose()

    assert "too many connections" in error_text(frames[0])


async def test_one_address_cannot_hold_every_admission(
    login_relay: LoginRelay,
) -> None:
    """Silent connections from one address fill only that address's share of
    the admissions: its next one is refused at once, and a script presenting
    its token from another address is let in (auth7: one address's 256 silent
    connections, renewed every 10 s, locked every token out)."""
    waiting = await silent_connections(login_relay, ["127.0.3.1"])
    try:
        extra = await login_relay.connect(local_host="127.0.3.1")
        refused = await extra.expect_closed(timeout=3)
        await extra.aclose()
        script = await login_relay.connect(local_host=OTHER_ADDRESS)
        await script.send(
            MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
            encode_json({"mixer_token": login_relay.github.issue_token("alice")}),
        )
        script_id = await script.handshake("render-bot")
        clients = await script.list_clients()
        await script.aclose()
    finally:
        for client in waiting:
            await client.aclose()

    assert "too many connections" in error_text(refused[0])
    assert clients[script_id]["github_login"] == "alice"


async def test_banned_login_is_refused_even_with_a_lease(
    login_relay: LoginRelay,
) -> None:
    """A ban on a GitHub login refuses that login's connections once the
    admission knows who they are, lease or not."""
    await log_in(login_relay)
    login_relay.server.broadcaster.bans.add(
        Ban("login:alice", time.time() + 60, "testing bans", "op-carol")
    )

    client = await login_relay.connect()
    await client.send(MessageType.CLIENT_ID)
    frames = await client.expect_closed()
    await client.aclose()

    assert "banned from this relay" in error_text(frames[0])


@pytest.mark.parametrize(
    "token",
    ["gho_\r\nInjected: yes", "gho_é", "x" * 60_000, " ", ""],
    ids=["header-injection", "non-ascii", "huge", "blank", "empty"],
)
async def test_malformed_token_is_refused_cleanly(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    """A token that could not even travel in an HTTP header is refused with
    SEND_ERROR like any unknown token, without asking GitHub, and logs no
    error."""
    script = await login_relay.connect(local_host=OTHER_ADDRESS)
    await script.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, encode_json({"mixer_token": token})
    )
    frames = await script.expect_closed()
    await script.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    assert "login" in error_text(frames[0])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "github.unreachable" not in caplog.text
