"""Failures stay with what caused them: inside the console the relay shares the
app's loop, and an exception escaping one task would end the whole process."""

import logging

import anyio
import pytest

from relay.admin_client import AdminClient
from relay.bans import BanList
from relay.config import Settings
from relay.control import OperationRefused
from relay.local_control import LocalControl
from relay.messages import MessageType
from relay.server import RelayServer
from relay.supervision import supervised
from tests.control.admin_helpers import private_socket_dir
from tests.relay.flows import Connect
from tests.relays import running_relay


async def test_a_failing_handler_ends_only_its_connection(
    relay: RelayServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A request whose handler raises closes that connection (logged, with an
    error event); the relay goes on serving everyone else."""

    def broken(client: object, payload: memoryview) -> None:
        raise RuntimeError("a bug in a handler")

    bystander = await connect()
    await bystander.handshake("bob")
    victim = await connect()
    await victim.handshake("ada")
    relay.broadcaster._handlers[MessageType.SET_CLIENT_NAME] = broken

    await victim.send(MessageType.SET_CLIENT_NAME, b"x")
    await victim.expect_closed()

    assert "bob" in str(await bystander.list_clients())
    newcomer = await connect()
    assert await newcomer.handshake()
    failures = [r for r in caplog.records if r.getMessage() == "session.failed"]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    texts = [e.text for e in await relay.control.events(0) if e.kind == "error"]
    assert texts == ["internal error: connection closed"]


async def test_a_failing_background_task_is_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A supervised task that raises is logged and started again; one that keeps
    failing is given up after its restarts, without raising."""
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("transient")

    async def hopeless() -> None:
        raise RuntimeError("permanent")

    with anyio.fail_after(5):
        await supervised("flaky", flaky, restart_delay=0.01)
        await supervised("hopeless", hopeless, max_restarts=2, restart_delay=0.01)

    messages = [r.getMessage() for r in caplog.records]
    assert attempts == 3
    assert messages.count("task.failed") == 2 + 3
    assert messages.count("task.abandoned") == 1


async def test_a_failing_admin_request_is_answered_and_contained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """A request that hits a bug gets an "internal" error; the console stays
    attached and the relay serves the next request."""

    async def broken_bans(self: LocalControl) -> list[object]:
        raise RuntimeError("a bug in bans")

    with private_socket_dir() as directory:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=directory / "data",
            admin_socket=directory / "admin.sock",
        )
        async with running_relay(settings):
            console = AdminClient(directory / "admin.sock")
            assert await console.snapshot()
            monkeypatch.setattr(LocalControl, "bans", broken_bans)
            with pytest.raises(OperationRefused, match="internal: the relay failed"):
                await console.bans()
            snapshot = await console.snapshot()
            await console.aclose()

    assert snapshot.totals.connections == 0


async def test_a_failing_ban_check_refuses_and_contains(
    relay: RelayServer,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When checking a new connection against the bans fails, that connection is
    refused with a message (never let in unchecked) and the relay goes on."""
    bystander = await connect()
    await bystander.handshake("bob")

    def broken(self: BanList, ip: str, login: str | None) -> str | None:
        raise RuntimeError("a bug in the ban check")

    with monkeypatch.context() as patch:
        patch.setattr(BanList, "refusal", broken)
        refused = await connect()
        frames = await refused.expect_closed()

    welcome = await connect()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    assert b"could not check this connection" in bytes(frames[0].payload)
    assert await welcome.handshake()
    assert "bob" in str(await bystander.list_clients())
    assert any(r.getMessage() == "session.admission_failed" for r in caplog.records)
