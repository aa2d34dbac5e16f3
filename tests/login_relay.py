"""A relay that requires a GitHub login, against a fake GitHub, both on
127.0.0.1, with HTTP clients for the browser and the terminal sides."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx2

from relay.build import build_relay
from relay.config import Settings
from relay.server import RelayServer, open_listener, open_store
from tests.fake_github import CLIENT_ID, CLIENT_SECRET, FakeGitHub, running_fake_github
from tests.mixer_client import MixerClient

HTTP_TIMEOUT = 10.0

# Every request here is plain HTTP on loopback; one TLS context, loaded once,
# spares each client the 50 ms of loading the certificate store.
_TLS = httpx2.create_ssl_context()


@dataclass
class LoginRelay:
    """A running relay with login, its fake GitHub, and where to reach them."""

    server: RelayServer
    github: FakeGitHub
    http_url: str

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def browser(self, local_host: str | None = None) -> httpx2.AsyncClient:
        """An HTTP client that follows redirects and keeps cookies, like a
        browser, from ``local_host`` when given."""
        transport = httpx2.AsyncHTTPTransport(local_address=local_host, verify=_TLS)
        return httpx2.AsyncClient(
            base_url=self.http_url,
            follow_redirects=True,
            timeout=HTTP_TIMEOUT,
            transport=transport,
        )

    async def connect(self, local_host: str | None = None) -> MixerClient:
        return await MixerClient.connect(self.port, local_host=local_host)


def login_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a relay with GitHub login, filled in by running_login_relay."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "http_port": 0,
        "room_update_interval": 0.01,
        "data_dir": data_dir,
        "auth": "github",
        "github_client_id": CLIENT_ID,
        "github_client_secret": CLIENT_SECRET,
        "allow_users": frozenset({"alice"}),
        # The admin socket has tests of its own.
        "admin_socket": "off",
    }
    return Settings(**{**values, **overrides})


@asynccontextmanager
async def running_login_relay(settings: Settings) -> AsyncIterator[LoginRelay]:
    """Serve a relay with login and its fake GitHub until the block ends."""
    http_listener = open_listener("127.0.0.1", 0)
    http_url = f"http://127.0.0.1:{http_listener.getsockname()[1]}"
    async with running_fake_github(http_url + "/login/callback") as github:
        settings = replace(
            settings,
            public_url=http_url,
            github_url=github.url,
            github_api_url=github.api_url,
        )
        store = open_store(settings)
        server = build_relay(settings, store, http_listener=http_listener)
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(server.serve)
                yield LoginRelay(server, github, http_url)
                tasks.cancel_scope.cancel()
        finally:
            assert store.close(timeout=10), "the store could not write everything"
