"""Leases through the operator contract: in-process (LocalControl) and over the
admin socket (AdminClient), on a relay with GitHub login against a fake GitHub
and on one without login."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.admin_client import AdminClient
from relay.config import Settings
from relay.control import Lease, OperationRefused
from relay.messages import MessageType
from tests.control.admin_helpers import (
    RawConsole,
    private_socket_dir,
    running_login_relay_with_admin,
    wait_for_socket,
)
from tests.login_relay import LoginRelay
from tests.mixer_client import error_text
from tests.relays import running_relay

OPERATOR = "olga"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with private_socket_dir() as directory:
        yield directory


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay_with_admin(tmp_path / "data") as relay:
        yield relay


@pytest.fixture
async def admin(login_relay: LoginRelay) -> AsyncIterator[AdminClient]:
    path = login_relay.server.settings.admin_socket_path()
    assert path is not None
    client = AdminClient(path)
    yield client
    await client.aclose()


async def log_in(relay: LoginRelay) -> None:
    """Log alice in through the real browser flow, from 127.0.0.1."""
    async with relay.browser() as browser:
        page = await browser.get("/login")

    assert "Logged in as alice" in page.text


async def test_a_login_is_listed_in_process_and_over_the_socket(
    login_relay: LoginRelay, admin: AdminClient
) -> None:
    """A browser login's lease is listed, with the same fields, by LocalControl
    and by AdminClient."""
    before = await login_relay.server.control.leases()
    await log_in(login_relay)

    local = await login_relay.server.control.leases()
    attached = await admin.leases()

    assert before == []
    assert attached == local
    (lease,) = local
    assert isinstance(lease, Lease)
    assert (lease.address, lease.login, lease.via) == ("127.0.0.1", "alice", "browser")
    assert lease.granted_at < lease.expires_at


async def test_revoke_over_the_socket_closes_the_leased_client(
    login_relay: LoginRelay, admin: AdminClient
) -> None:
    """Revoking the address's lease through AdminClient closes the Blender
    connection it let in, empties the list, refuses reconnecting, and the
    audit log names the operator."""
    await log_in(login_relay)
    blender = await login_relay.connect()
    await blender.handshake("alice-blender")

    await admin.revoke_lease("127.0.0.1", operator=OPERATOR)
    await blender.expect_closed()
    await blender.aclose()
    remaining = await admin.leases()
    audit = await admin.audit_log()

    assert remaining == []
    revoke = next(entry for entry in audit if entry.action == "lease.revoke")
    assert (revoke.operator, revoke.target) == (OPERATOR, "127.0.0.1")
    assert "alice" in revoke.detail
    again = await login_relay.connect()
    await again.send(MessageType.CLIENT_ID)
    frames = await again.expect_closed()
    await again.aclose()
    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    assert "/login" in error_text(frames[0])


async def test_revoking_an_address_without_lease_is_refused(
    login_relay: LoginRelay, admin: AdminClient
) -> None:
    """An address without lease is refused, in process and over the socket,
    with a message naming it; the lease held elsewhere, its connection and the
    audit log are untouched."""
    await log_in(login_relay)
    blender = await login_relay.connect()
    await blender.handshake("alice-blender")

    with pytest.raises(OperationRefused, match=r"no lease .*10\.9\.9\.9"):
        await login_relay.server.control.revoke_lease("10.9.9.9", operator=OPERATOR)
    with pytest.raises(OperationRefused, match=r"no lease .*10\.9\.9\.9"):
        await admin.revoke_lease("10.9.9.9", operator=OPERATOR)

    assert await blender.list_clients()
    await blender.aclose()
    assert len(await admin.leases()) == 1
    audit = await admin.audit_log()
    assert [entry.action for entry in audit] == ["lease.grant"]


async def test_malformed_lease_requests_are_bad_requests(
    login_relay: LoginRelay,
) -> None:
    """A revoke_lease without operator, with a number for an address, or with
    an unknown parameter gets bad_request, and the connection stays usable."""
    path = login_relay.server.settings.admin_socket_path()
    assert path is not None
    raw = await RawConsole.attach(path)
    requests = [
        {"address": "127.0.0.1"},
        {"address": 127, "operator": OPERATOR},
        {"address": "127.0.0.1", "operator": OPERATOR, "force": True},
    ]
    answers = []
    for number, params in enumerate(requests):
        await raw.send({"id": number, "method": "revoke_lease", "params": params})
        answers.append(await raw.receive())
    await raw.send({"id": "last", "method": "leases"})
    listed = await raw.receive()
    await raw.aclose()

    assert [answer["error"]["code"] for answer in answers] == ["bad_request"] * 3
    assert "operator" in answers[0]["error"]["message"]
    assert "address must be a string" in answers[1]["error"]["message"]
    assert "force" in answers[2]["error"]["message"]
    assert listed == {"id": "last", "result": []}


async def test_without_login_there_are_no_leases_to_revoke(
    socket_dir: Path, tmp_path: Path
) -> None:
    """A relay without login lists no lease and refuses a revocation plainly,
    in process and over the socket."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        admin_socket=socket_dir / "admin.sock",
    )
    path = settings.admin_socket_path()
    assert path is not None
    async with running_relay(settings) as server:
        await wait_for_socket(settings)
        admin = AdminClient(path)
        try:
            listed = (await server.control.leases(), await admin.leases())
            with pytest.raises(OperationRefused, match="requires no login"):
                await server.control.revoke_lease("127.0.0.1", operator=OPERATOR)
            with pytest.raises(OperationRefused, match="requires no login"):
                await admin.revoke_lease("127.0.0.1", operator=OPERATOR)
        finally:
            await admin.aclose()

    assert listed == ([], [])
