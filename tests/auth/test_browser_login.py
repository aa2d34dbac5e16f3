"""The browser login (code flow with state and PKCE) and what it grants."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from relay.messages import MessageType
from tests.login_relay import LoginRelay, login_settings, running_login_relay
from tests.mixer_client import error_text


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


async def test_browser_login_grants_a_lease_to_its_address(
    login_relay: LoginRelay,
) -> None:
    """Following every redirect from /login through GitHub and back ends on a
    page naming the login, and the address holds a lease."""
    async with login_relay.browser() as browser:
        page = await browser.get("/login")
        lease = await browser.get("/login/lease")

    assert page.status_code == 200
    assert "Logged in as alice" in page.text
    assert [r.url.path for r in page.history] == [
        "/login",
        "/login/oauth/authorize",
    ]
    assert login_relay.github.pkce_checks == 1
    assert lease.json()["login"] == "alice"
    assert lease.json()["address"] == "127.0.0.1"


async def test_connection_without_lease_is_refused_with_the_login_url(
    login_relay: LoginRelay,
) -> None:
    """An add-on connecting before any login gets one SEND_ERROR naming the login
    page, then the connection closes; nothing else reaches it."""
    client = await login_relay.connect()
    await client.send(MessageType.CLIENT_ID)
    await client.send(MessageType.LIST_ROOMS)

    frames = await client.expect_closed()
    await client.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    assert login_relay.http_url + "/login" in error_text(frames[0])


async def test_leased_connection_is_labelled_for_everyone(
    login_relay: LoginRelay,
) -> None:
    """After a browser login, connections from that address are accepted and
    every client sees their github_login."""
    async with login_relay.browser() as browser:
        await browser.get("/login")

    first = await login_relay.connect()
    await first.handshake("alice-blender")
    second = await login_relay.connect()
    await second.handshake("alice-laptop")

    clients = await first.list_clients()
    await first.aclose()
    await second.aclose()

    assert {attrs["github_login"] for attrs in clients.values()} == {"alice"}
    assert len(clients) == 2


async def test_tampered_state_is_refused(login_relay: LoginRelay) -> None:
    """A callback whose state differs from the one the login began with grants
    nothing."""
    async with login_relay.browser() as browser:
        start = await browser.get("/login", follow_redirects=False)
        authorize = await browser.get(start.headers["location"], follow_redirects=False)
        back = authorize.headers["location"].replace("state=", "state=x")
        page = await browser.get(back)
        lease = await browser.get("/login/lease")

    assert page.status_code == 400
    assert "not valid" in page.text
    assert lease.status_code == 404


async def test_state_from_another_browser_is_refused(login_relay: LoginRelay) -> None:
    """A callback carrying a valid state, opened in a browser that did not begin
    the login (no state cookie), grants nothing."""
    async with login_relay.browser() as browser:
        start = await browser.get("/login", follow_redirects=False)
        authorize = await browser.get(start.headers["location"], follow_redirects=False)

    async with login_relay.browser() as other:
        page = await other.get(authorize.headers["location"])
        lease = await other.get("/login/lease")

    assert page.status_code == 400
    assert lease.status_code == 404


async def test_login_only_ever_names_our_own_callback(login_relay: LoginRelay) -> None:
    """Whatever the request carries, the authorization request names only the
    relay's own callback, and the callback answers with a page, never a
    redirect elsewhere."""
    async with login_relay.browser() as browser:
        start = await browser.get(
            "/login",
            params={"redirect_uri": "http://evil.example/", "next": "http://evil/"},
            follow_redirects=False,
        )
        authorize = httpx2.URL(start.headers["location"])
        back = await browser.get(authorize, follow_redirects=True)

    assert authorize.params["redirect_uri"] == login_relay.http_url + "/login/callback"
    assert "evil" not in str(authorize)
    assert back.status_code == 200
    assert back.url.path == "/login/callback"


async def test_a_foreign_callback_does_not_spoil_a_login_in_progress(
    login_relay: LoginRelay,
) -> None:
    """A callback with some other state (a link on another site, opened by the
    browser meanwhile) leaves the browser's state cookie alone, so its own
    login still ends with a lease (auth7: the cookie was deleted)."""
    async with login_relay.browser() as browser:
        start = await browser.get("/login", follow_redirects=False)
        authorize = await browser.get(start.headers["location"], follow_redirects=False)
        foreign = await browser.get("/login/callback?code=junk&state=junk")
        page = await browser.get(authorize.headers["location"])
        lease = await browser.get("/login/lease")

    assert foreign.status_code == 400
    assert page.status_code == 200, page.text
    assert lease.json()["login"] == "alice"
