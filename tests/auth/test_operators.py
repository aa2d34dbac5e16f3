"""Remote administration needs an operator's GitHub login: the admin routes and
``mixer-console lease revoke --relay`` as a real process."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from relay.messages import MessageType
from tests.login_relay import LoginRelay, login_settings, running_login_relay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    settings = login_settings(tmp_path / "data", operators=frozenset({"olga"}))
    async with running_login_relay(settings) as relay:
        yield relay


async def mixer_console(
    relay: LoginRelay, *argv: str, token: str | None
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MIXER_OPERATOR_TOKEN"}
    if token is not None:
        env["MIXER_OPERATOR_TOKEN"] = token

    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "mixer_console", *argv, "--relay", relay.http_url],
            cwd=ROOT,
            env=env,
            check=False,
        )

    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_operator_revokes_over_http_and_connections_close(
    login_relay: LoginRelay,
) -> None:
    """An operator's ``leases --relay`` lists the lease as ``leases`` does on the
    relay's machine (address, login, how it was granted; in text and JSON),
    ``lease revoke
    --relay`` ends it and closes the address's connection; the audit log names
    the operator."""
    async with login_relay.browser() as browser:
        await browser.get("/login")

    artist = await login_relay.connect()
    await artist.handshake()
    token = login_relay.github.issue_token("olga")

    listed = await mixer_console(login_relay, "leases", token=token)
    as_json = await mixer_console(login_relay, "leases", "--json", token=token)
    revoked = await mixer_console(
        login_relay, "lease", "revoke", "127.0.0.1", token=token
    )
    await artist.expect_closed()
    await artist.aclose()
    audit = login_relay.server.broadcaster.audit.newest(1)

    assert listed[0] == 0
    assert listed[1].split()[:3] == ["127.0.0.1", "alice", "browser"]
    assert as_json[0] == 0
    assert [
        (lease["address"], lease["login"], lease["via"])
        for lease in json.loads(as_json[1])
    ] == [("127.0.0.1", "alice", "browser")]
    assert revoked[0] == 0
    assert "revoked the lease of alice on 127.0.0.1" in revoked[1]
    assert (audit[0].operator, audit[0].action) == ("olga", "lease.revoke")


@pytest.mark.parametrize("address", ["10.9.8.7", "not-an-ip"])
async def test_revoking_what_holds_no_lease_fails_as_it_does_locally(
    login_relay: LoginRelay, address: str
) -> None:
    """``lease revoke --relay`` of an address without a lease says so on stderr
    and exits 6, as the local ``lease revoke`` does."""
    token = login_relay.github.issue_token("olga")

    status, out, err = await mixer_console(
        login_relay, "lease", "revoke", address, token=token
    )

    assert status == 6
    assert f"no lease for {address}" in err
    assert out == ""


async def test_non_operator_is_refused(login_relay: LoginRelay) -> None:
    """A valid token of an account that is no operator is refused (exit 7, 403),
    and the lease stays."""
    async with login_relay.browser() as browser:
        await browser.get("/login")
        token = login_relay.github.issue_token("alice")
        refused = await mixer_console(
            login_relay, "lease", "revoke", "127.0.0.1", token=token
        )
        direct = await browser.post(
            "/admin/leases/revoke",
            json={"address": "127.0.0.1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        lease = await browser.get("/login/lease")
        anonymous = await browser.get("/admin/leases")

    assert refused[0] == 7
    assert "not an operator" in refused[2]
    assert direct.status_code == 403
    assert lease.status_code == 200
    assert anonymous.status_code == 401


async def test_remote_command_without_token_is_a_usage_error(
    login_relay: LoginRelay,
) -> None:
    """Without MIXER_OPERATOR_TOKEN the command says how to get one, exit 2."""
    status, _out, err = await mixer_console(login_relay, "leases", token=None)

    assert status == 2
    assert "MIXER_OPERATOR_TOKEN" in err


async def test_revoked_address_cannot_reconnect(login_relay: LoginRelay) -> None:
    """After an operator's revocation the address is refused again."""
    async with login_relay.browser() as browser:
        await browser.get("/login")
        await browser.post(
            "/admin/leases/revoke",
            json={"address": "127.0.0.1"},
            headers={
                "Authorization": f"Bearer {login_relay.github.issue_token('olga')}"
            },
        )

    client = await login_relay.connect()
    await client.send(MessageType.CLIENT_ID)
    frames = await client.expect_closed()
    await client.aclose()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]


def _lease(
    granted_at: bytes = b"1700000000", expires_at: bytes = b"1700043200"
) -> bytes:
    """A list of one lease as the relay sends it, with these times as written."""
    return (
        b'[{"address": "10.0.0.5", "login": "ada", "granted_at": '
        + granted_at
        + b', "expires_at": '
        + expires_at
        + b', "via": "browser"}]'
    )


def _device_start(expires_in: bytes = b"60", interval: bytes = b"0") -> bytes:
    """The relay's answer to a device login, with these numbers as written."""
    return (
        b'{"login_id": "1", "user_code": "WDJB-MJHT", "verification_uri": "x", '
        b'"expires_in": ' + expires_in + b', "interval": ' + interval + b"}"
    )


def _granted(expires_at: bytes) -> bytes:
    """The relay's answer to a poll once the login is approved."""
    return (
        b'{"state": "granted", "interval": 5, "login": "ada", "address": '
        b'"127.0.0.1", "granted_at": 1700000000, "expires_at": ' + expires_at + b"}"
    )


class LeasesAnswer(http.server.BaseHTTPRequestHandler):
    """A server at --relay that answers /admin/leases, and the revocation,
    with something else than the relay does (an older relay, a proxy, another
    service)."""

    answers: ClassVar[dict[str, bytes]] = {
        "/html-page": b"<html><body>It works!</body></html>",
        "/not-a-list": b'{"leases": []}',
        "/missing-fields": b'[{"address": "10.0.0.5"}]',
        "/wrong-types": b'[{"address": "10.0.0.5", "login": "ada", "granted_at": '
        b'"soon", "expires_at": [], "via": "browser"}]',
        # Times no clock can show: Python reads the first two as infinity and
        # the third as an int too large for a float (each was a traceback).
        "/infinite-expiry": _lease(expires_at=b"1e999"),
        "/infinity-expiry": _lease(expires_at=b"Infinity"),
        "/huge-expiry": _lease(expires_at=b"1" + b"0" * 400),
        "/nan-grant": _lease(granted_at=b"NaN"),
    }

    revocations: ClassVar[dict[str, bytes]] = {
        "/a-list": b"[]",
        "/not-an-object": b'{"revoked": "yes"}',
        "/missing-fields": b'{"revoked": {"login": "ada"}}',
        # Read once as "no lease for ADDRESS" (exit 6): only the relay's own
        # {"address": ..., "revoked": null} may say that.
        "/html-page": b"<html><body>It works!</body></html>",
        "/empty-object": b"{}",
        "/unrelated-object": b'{"status": "ok"}',
        "/null-revoked-alone": b'{"revoked": null}',
    }

    def do_GET(self) -> None:
        self._answer(self.answers[self.path.removesuffix("/admin/leases")])

    logins: ClassVar[dict[str, bytes]] = {
        "/code-only": b'{"user_code": "WDJB-MJHT"}',
        "/bad-interval": b'{"user_code": "WDJB-MJHT", "verification_uri": "x", '
        b'"expires_in": "soon", "interval": 5, "login_id": "1"}',
        # Numbers no wait can use: too large for a float, or infinite (both
        # were OverflowError tracebacks, or a wait without end), NaN, negative.
        "/huge-interval": _device_start(interval=b"1" + b"0" * 400),
        "/infinite-interval": _device_start(interval=b"1e999"),
        "/nan-interval": _device_start(interval=b"NaN"),
        "/negative-interval": _device_start(interval=b"-1"),
        "/huge-expiry": _device_start(expires_in=b"1" + b"0" * 400),
        "/infinite-expiry": _device_start(expires_in=b"1e999"),
        "/negative-expiry": _device_start(expires_in=b"-60"),
        # The same in the answer to a poll, after a good start.
        "/huge-slow-down": _device_start(),
        "/infinite-slow-down": _device_start(),
        "/granted-forever": _device_start(),
        "/granted-long-ago": _device_start(),
    }

    # Good answers whose waits outlast the code, which lives 1 s here.
    expiring_logins: ClassVar[dict[str, bytes]] = {
        "/long-interval": _device_start(expires_in=b"1", interval=b"100000"),
        "/vast-interval": _device_start(expires_in=b"1", interval=b"1e300"),
        "/vast-slow-down": _device_start(expires_in=b"1"),
    }

    polls: ClassVar[dict[str, bytes]] = {
        "/vast-slow-down": b'{"state": "slow_down", "interval": 1e300}',
        "/huge-slow-down": b'{"state": "slow_down", "interval": 1' + b"0" * 400 + b"}",
        "/infinite-slow-down": b'{"state": "slow_down", "interval": Infinity}',
        "/granted-forever": _granted(expires_at=b"1e999"),
        "/granted-long-ago": _granted(expires_at=b"-1e20"),
    }

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/login/device"):
            starts = self.logins | self.expiring_logins
            self._answer(starts[self.path.removesuffix("/login/device")])
        elif self.path.endswith("/login/device/poll"):
            self._answer(self.polls[self.path.removesuffix("/login/device/poll")])
        else:
            revocation = self.path.removesuffix("/admin/leases/revoke")
            self._answer(self.revocations[revocation])

    def _answer(self, body: bytes) -> None:
        is_page = body.startswith(b"<")
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if is_page else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def leases_answer() -> Iterator[str]:
    """The base URL of a LeasesAnswer server on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LeasesAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def run_against(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``mixer-console`` with an operator token set, to its end (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "mixer_console", *argv],
        cwd=ROOT,
        env={**os.environ, "MIXER_OPERATOR_TOKEN": "gho_anything"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("options", [(), ("--json",)], ids=["text", "json"])
@pytest.mark.parametrize("path", sorted(LeasesAnswer.answers))
def test_an_answer_that_is_not_leases_is_a_clear_error(
    leases_answer: str, path: str, options: tuple[str, ...]
) -> None:
    """``leases --relay``, with or without ``--json``, at a server whose answer is
    not leases says so and exits 7, printing nothing and no traceback; with
    ``--json`` it used to print the answer as it was (``{}`` for a web page) and
    exit 0."""
    url = leases_answer + path

    result = run_against("leases", *options, "--relay", url)

    assert result.returncode == 7
    assert f"{url} did not answer with leases" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", sorted(LeasesAnswer.revocations))
def test_a_revocation_answer_that_is_not_one_is_a_clear_error(
    leases_answer: str, path: str
) -> None:
    """``lease revoke --relay`` at a server whose answer is not a revocation (a
    web page, JSON of another shape) says so and exits 7, without a traceback;
    an answer without ``revoked`` used to exit 6, "no lease for ADDRESS"."""
    url = leases_answer + path

    result = run_against("lease", "revoke", "10.0.0.5", "--relay", url)

    assert result.returncode == 7, result.stderr
    assert f"{url} did not answer with a revocation" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", sorted(LeasesAnswer.logins))
def test_a_device_login_answer_that_is_not_one_is_a_clear_error(
    leases_answer: str, path: str
) -> None:
    """``login --relay`` at a server whose answer to the device login, or to a
    poll, is JSON but not the relay's says so and exits 7, without a traceback;
    numbers no wait or clock can use were tracebacks, or waits without end."""
    url = leases_answer + path

    result = run_against("login", "--relay", url)

    assert result.returncode == 7, result.stderr
    assert f"{url} did not answer as a mixer-console relay" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", sorted(LeasesAnswer.expiring_logins))
def test_a_device_login_never_waits_past_the_code_expiry(
    leases_answer: str, path: str
) -> None:
    """``login --relay`` told to wait longer than its code lives (in the first
    answer or a slow_down) stops when the code expires, exit 7; it used to
    sleep the whole interval (100000 s, 1e300 s) first."""
    started = time.monotonic()

    result = run_against("login", "--relay", leases_answer + path)
    elapsed = time.monotonic() - started

    assert result.returncode == 7, result.stderr
    assert "the code expired" in result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 10
