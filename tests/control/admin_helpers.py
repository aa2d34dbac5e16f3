"""Helpers for the admin socket tests: short private socket paths, raw lines."""

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from relay.config import Settings
from relay.line_socket import LineSocket
from tests.login_relay import LoginRelay, login_settings, running_login_relay

TIMEOUT = 10.0


@contextmanager
def private_socket_dir() -> Iterator[Path]:
    """A fresh directory of mode 0700 with a path short enough for a socket
    (pytest's own temporary paths can pass the 107-byte limit)."""
    directory = Path(tempfile.mkdtemp(prefix="mx-admin-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def running_login_relay_with_admin(data_dir: Path) -> AsyncIterator[LoginRelay]:
    """A relay with login (running_login_relay) that also serves its admin socket,
    at ``relay.server.settings.admin_socket_path()``, ready when yielded."""
    with private_socket_dir() as socket_dir:
        settings = login_settings(data_dir, admin_socket=socket_dir / "admin.sock")
        async with running_login_relay(settings) as relay:
            await wait_for_socket(relay.server.settings)
            yield relay


async def wait_for_socket(settings: Settings) -> None:
    """Wait until the relay's admin socket exists."""
    path = settings.admin_socket_path()
    assert path is not None
    for _ in range(200):
        if path.exists():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


class RawConsole:
    """One admin connection spoken to line by line, for protocol tests."""

    def __init__(self, stream: LineSocket) -> None:
        self.stream = stream

    @classmethod
    async def attach(cls, path: Path, version: int = 1) -> "RawConsole":
        with anyio.fail_after(TIMEOUT):
            console = cls(await LineSocket.connect_unix(str(path)))
            greeting = await console.receive()
            assert greeting["hello"] == "mixer-console-admin", greeting
            await console.send({"hello": "mixer-console-admin", "version": version})
        return console

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        with anyio.fail_after(TIMEOUT):
            await self.stream.send(data)

    async def receive(self) -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            line = await self.stream.receive_line(64 * 1024 * 1024)
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    async def expect_closed(self) -> None:
        """Read until the relay closes the connection."""
        with anyio.fail_after(TIMEOUT):
            try:
                await self.stream.receive_line(64 * 1024 * 1024)
            except (EOFError, OSError):
                return
        raise AssertionError("the connection stayed open")

    async def aclose(self) -> None:
        self.stream.close()
        await anyio.lowlevel.checkpoint()
