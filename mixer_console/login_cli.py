"""``mixer-console login --relay URL``: log this computer in from a terminal.

GitHub's device flow, run through the relay (which holds the OAuth app's
credentials): the relay asks GitHub for a code, this command shows it with the
page to enter it on, then polls the relay at the interval GitHub asks for until
the person approves, denies, or the code expires. The lease goes to this
computer's address, as the relay sees it, so Blender here may then connect.

Exit status: 0 logged in; 2 bad usage; 7 the login did not happen (denied,
expired, refused, the relay or GitHub failed, or the answer is not one a relay
gives); 130 stopped by SIGINT, SIGTERM or SIGHUP.
"""

import argparse
import math
import signal
import time
from typing import Any, TextIO

import anyio
import httpx2

from mixer_console.listing import format_time, parse_timestamp
from mixer_console.relay_url import relay_url

EXIT_OK = 0
EXIT_LOGIN = 7
EXIT_INTERRUPTED = 130

# A login waits minutes for its person: these end it, saying so.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# What slow_down adds to the polling interval (RFC 8628, 3.5).
SLOW_DOWN_SECONDS = 5

# Seconds one request to the relay may take (a poll includes GitHub's answer).
REQUEST_TIMEOUT = 30.0

# Polls made at most, whatever the relay says: a code lives 15 minutes on
# GitHub, polled every 5 s at the fastest.
MAX_POLLS = 1000


def add_command(commands: "argparse._SubParsersAction[Any]") -> None:
    """Add ``login`` to the ``mixer-console`` subcommands."""
    login = commands.add_parser(
        "login",
        help="log this computer in to a relay that requires GitHub",
        description="Log in to a relay with GitHub's device flow: open the page "
        "shown, type the code, and Blender on this computer may then connect.",
    )
    login.add_argument(
        "--relay",
        required=True,
        metavar="URL",
        type=relay_url,
        help="the relay's HTTP address, such as http://relay.studio:12801",
    )


def run(arguments: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``login``, telling the person on ``out`` (and ``err`` when it is
    interrupted); returns the exit status (bad usage, exit 2, is argparse's)."""
    status = anyio.run(_login_until_stopped, arguments.relay, out)
    if status is None:
        err.write("mixer-console: login interrupted\n")
        return EXIT_INTERRUPTED

    return status


async def _login_until_stopped(relay: str, out: TextIO) -> int | None:
    """Run the login; None when a stop signal came first. Received here, not as
    KeyboardInterrupt: raised in the middle of a connection attempt, that one
    ended the command with asyncio's traceback of the interrupted task."""
    status: int | None = None
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tasks:

            async def log_in() -> None:
                nonlocal status
                status = await device_login(relay, out)
                tasks.cancel_scope.cancel()

            tasks.start_soon(log_in)
            async for _signum in signals:
                tasks.cancel_scope.cancel()
                break

    return status


async def device_login(relay: str, out: TextIO) -> int:
    """Log in through ``relay``'s device flow, telling the person on ``out``."""
    async with httpx2.AsyncClient(base_url=relay, timeout=REQUEST_TIMEOUT) as http:
        try:
            return await _device_login(http, out)
        except httpx2.HTTPError as exc:
            out.write(f"login failed: the relay at {relay} cannot be reached: {exc}\n")
            return EXIT_LOGIN
        except (KeyError, TypeError, ValueError):
            # A field missing or of the wrong kind: another server answers there.
            out.write(
                f"login failed: {relay} did not answer as a mixer-console relay "
                "does; is it the relay's HTTP address?\n"
            )
            return EXIT_LOGIN


async def _device_login(http: httpx2.AsyncClient, out: TextIO) -> int:
    response = await http.post("/login/device")
    start = _answer(response)
    if response.status_code != 200 or "user_code" not in start:
        out.write(f"login failed: {start.get('error') or _status(response)}\n")
        return EXIT_LOGIN

    expires_in = _seconds(start["expires_in"])
    interval = _seconds(start["interval"])
    out.write(
        f"Open {start['verification_uri']} and enter the code {start['user_code']}\n"
        f"(it expires in {_minutes(math.ceil(expires_in / 60))})\n"
    )
    deadline = time.monotonic() + expires_in
    for _ in range(MAX_POLLS):
        # Never past the code's expiry: a poll after it cannot succeed.
        await anyio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break

        response = await http.post(
            "/login/device/poll", json={"login_id": start["login_id"]}
        )
        if response.status_code == 429:
            interval = max(interval, _seconds(response.headers.get("retry-after", 60)))
            continue

        answer = _answer(response)
        state = answer.get("state")
        if state == "pending":
            continue

        if state == "slow_down":
            interval = max(interval + SLOW_DOWN_SECONDS, _seconds(answer["interval"]))
            out.write(f"GitHub asks to poll more slowly: every {interval:g} s\n")
            continue

        return _finish(state, answer, response, out)

    if time.monotonic() < deadline:
        out.write("login failed: gave up polling\n")
    else:
        out.write("login failed: the code expired before it was entered\n")

    return EXIT_LOGIN


def _finish(
    state: object, answer: dict[str, Any], response: httpx2.Response, out: TextIO
) -> int:
    if state == "granted":
        until = format_time(parse_timestamp(answer["expires_at"]))
        out.write(
            f"Logged in as {answer['login']}: Blender on this computer "
            f"({answer['address']}) may connect until {until}\n"
        )
        return EXIT_OK

    if state == "expired":
        out.write("login failed: the code expired before it was entered; run again\n")
    elif state == "denied":
        out.write("login failed: the login was cancelled on GitHub\n")
    else:
        out.write(f"login failed: {answer.get('error') or _status(response)}\n")

    return EXIT_LOGIN


def _answer(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}

    return body if isinstance(body, dict) else {}


def _seconds(value: Any) -> float:
    """A number of seconds from the relay's answer.

    Raises:
        ValueError: it is no number, or one no wait can use: negative, NaN,
            infinite (1e999 is read so), or an integer too large for a float.
    """
    try:
        seconds = float(value)
    except OverflowError as exc:
        raise ValueError(f"not a number of seconds: {value!r:.40}") from exc

    # NaN fails both comparisons.
    if not 0 <= seconds < math.inf:
        raise ValueError(f"not a number of seconds: {value!r:.40}")

    return seconds


def _status(response: httpx2.Response) -> str:
    return f"the relay answered HTTP {response.status_code}"


def _minutes(count: int) -> str:
    return "1 minute" if count == 1 else f"{count} minutes"
