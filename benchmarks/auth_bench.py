"""What login costs: admission, logins and metrics scrapes, against a fake GitHub.

Run from the repository root::

    .venv/bin/python benchmarks/auth_bench.py [--connections 300] [--rooms 100]

Everything runs in this one process on 127.0.0.1: a relay without login, a relay
with GitHub login, and the fake GitHub of the tests (so GitHub's own latency is
left out; these are the relay's costs). Cases:

connect
    Open a connection, send CLIENT_ID, wait for its answer, close; one after
    another. Without login, and with login from an address holding a lease.
token
    The same, the connection presenting ``mixer_token`` first (one GitHub user
    lookup per connection). Bounded by the per-address token limit.
browser login
    /login followed through the fake GitHub's redirects back to the callback,
    a fresh client each time (state, PKCE, code exchange, user lookup, lease).
metrics
    /metrics with R rooms of two clients each, scraped repeatedly.

Figures are medians and 99th percentiles of wall time per operation.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.build import TOKENS_PER_MINUTE
from relay.config import Settings
from relay.http import LOGIN_REQUESTS_PER_MINUTE
from relay.messages import MessageType
from relay.protocol import encode_json
from tests.login_relay import login_settings, running_login_relay
from tests.mixer_client import MixerClient
from tests.relays import running_relay

CASE_TIMEOUT = 120.0


def emit(text: str) -> None:
    """Write one line of the report."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def summary(label: str, seconds: list[float]) -> None:
    """Report a case's median and p99 in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    emit(
        f"| {label} | {len(ordered)} | {statistics.median(ordered) * 1000:.2f} | "
        f"{p99 * 1000:.2f} |"
    )


async def timed(count: int, operation: Callable[[], Awaitable[None]]) -> list[float]:
    """Run ``operation`` ``count`` times, one after another; their durations."""
    durations: list[float] = []
    with anyio.fail_after(CASE_TIMEOUT):
        for _ in range(count):
            started = time.perf_counter()
            await operation()
            durations.append(time.perf_counter() - started)

    return durations


async def connect_once(port: int, first: bytes | None = None) -> None:
    client = await MixerClient.connect(port)
    if first is not None:
        await client.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, first)

    await client.send(MessageType.CLIENT_ID)
    await client.expect(MessageType.CLIENT_ID)
    await client.aclose()


async def bench_without_login(data_dir: Path, connections: int) -> None:
    settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir)
    async with running_relay(settings) as relay:
        assert relay.port is not None
        port = relay.port
        summary(
            "connect, no login", await timed(connections, lambda: connect_once(port))
        )


async def bench_with_login(data_dir: Path, connections: int, rooms: int) -> None:
    async with running_login_relay(login_settings(data_dir)) as relay:
        browser_logins = LOGIN_REQUESTS_PER_MINUTE // 2

        async def browser_login() -> None:
            async with relay.browser() as browser:
                page = await browser.get("/login")
                assert page.status_code == 200, page.text

        summary("browser login", await timed(browser_logins, browser_login))
        summary(
            "connect, leased",
            await timed(connections, lambda: connect_once(relay.port)),
        )

        token = encode_json({"mixer_token": relay.github.issue_token("alice")})

        async def with_token() -> None:
            client = await MixerClient.connect(relay.port, local_host="127.0.0.2")
            await client.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, token)
            await client.send(MessageType.CLIENT_ID)
            await client.expect(MessageType.CLIENT_ID)
            await client.aclose()

        summary("connect, mixer_token", await timed(TOKENS_PER_MINUTE, with_token))

        clients: list[MixerClient] = []
        for index in range(rooms):
            creator = await relay.connect()
            await creator.create_room(f"room-{index}")
            joiner = await relay.connect()
            await joiner.join_room(f"room-{index}")
            clients += [creator, joiner]

        sizes: list[int] = []
        async with relay.browser() as http:

            async def scrape() -> None:
                page = await http.get("/metrics")
                sizes.append(len(page.content))

            summary(f"/metrics, {rooms} rooms", await timed(50, scrape))

        emit(f"\n/metrics page: {sizes[-1]} bytes with {rooms} rooms")
        for client in clients:
            await client.aclose()


async def main(connections: int, rooms: int) -> None:
    emit("| case | operations | median ms | p99 ms |")
    emit("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="mixer-auth-bench-") as folder:
        await bench_without_login(Path(folder) / "plain", connections)
        await bench_with_login(Path(folder) / "login", connections, rooms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--rooms", type=int, default=100)
    arguments = parser.parse_args()
    anyio.run(main, arguments.connections, arguments.rooms)
