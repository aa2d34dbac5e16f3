"""The relay's HTTP surface: health, readiness, metrics and the login pages.

A Starlette application served by uvicorn on the relay's own event loop, in the
relay's task group, so that its handlers read the relay's state directly.

Routes:
    GET  /healthz              the process answers
    GET  /readyz               listening, store writable, cluster quorum
    GET  /metrics              Prometheus text format (with login: for leased
                               addresses and operators only)
    GET  /login                sends the browser to GitHub
    GET  /login/callback       GitHub sends the browser back here
    POST /login/device         starts a device login (JSON)
    POST /login/device/poll    one poll of a device login (JSON)
    GET  /login/lease          the lease of the caller's address (JSON)
    GET  /admin/leases         every lease (operators only, JSON)
    POST /admin/leases/revoke  revoke an address's lease (operators only, JSON)

The admin routes take ``Authorization: Bearer <GitHub token>`` of an account in
``MIXER_OPERATORS``: remote administration always needs an operator's login.
"""

import html
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from relay.access import AccessPolicy
from relay.config import Settings
from relay.errors import AuthError, LoginFailed, LoginRefused
from relay.http_limits import PEER_WARNINGS, BoundedH11Protocol
from relay.leases import LeaseBook
from relay.login import LoginService
from relay.metrics import RelayCollector, relay_registry
from relay.ratelimit import AddressLimiter
from store.access import LeaseRecord

log = logging.getLogger(__name__)

STATE_COOKIE = "mixer_login_state"

# Requests per minute per address: starting or finishing a login, and polling a
# device login (a terminal polls every 5 s or slower).
LOGIN_REQUESTS_PER_MINUTE = 20
POLL_REQUESTS_PER_MINUTE = 30

# The JSON bodies the routes take are a few dozen bytes; nothing larger is read.
MAX_BODY_BYTES = 4096

# Connections served at once; past it uvicorn answers 503 at once.
MAX_CONNECTIONS = 256

# Seconds the HTTP server may take to finish its requests when the relay stops.
SHUTDOWN_SECONDS = 1.0

ReadinessCheck = Callable[[], str | None]
"""Returns why the relay is not ready, or None when this part of it is."""


@dataclass(frozen=True)
class LoginSurface:
    """What the login pages need; absent when the relay requires no login."""

    service: LoginService
    leases: LeaseBook
    policy: AccessPolicy
    login_limiter: AddressLimiter
    poll_limiter: AddressLimiter


def create_app(
    settings: Settings,
    collector: RelayCollector,
    readiness: dict[str, ReadinessCheck],
    login: LoginSurface | None,
) -> Starlette:
    """The Starlette application of the HTTP surface.

    Args:
        settings: the public address (whether cookies need HTTPS).
        collector: the relay's metrics.
        readiness: named checks; ready means every one returns None.
        login: the login machinery, or None when login is off.
    """
    registry = relay_registry(collector)
    is_secure = settings.public_url.startswith("https://")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        problems = {name: check() for name, check in readiness.items()}
        is_ready = not any(problems.values())
        return JSONResponse(
            {
                "ready": is_ready,
                "checks": {name: problem or "ok" for name, problem in problems.items()},
            },
            status_code=200 if is_ready else 503,
        )

    async def metrics(request: Request) -> Response:
        if login is not None:
            refusal = await _metrics_refusal(request, login)
            if refusal is not None:
                return refusal

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def login_page(request: Request) -> Response:
        if login is None:
            return _page("No login needed", "This relay lets anyone connect.")

        address = _address(request)
        if not await login.login_limiter.allow(address):
            return await _too_many(login.login_limiter, address)

        try:
            url, state = await login.service.begin_browser(address)
        except AuthError as exc:
            return _page("Login unavailable", str(exc), status=502)

        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            STATE_COOKIE,
            state,
            max_age=600,
            path="/login",
            httponly=True,
            samesite="lax",
            secure=is_secure,
        )
        return response

    async def callback(request: Request) -> Response:
        if login is None:
            return _page("No login needed", "This relay lets anyone connect.", 404)

        address = _address(request)
        if not await login.login_limiter.allow(address):
            return await _too_many(login.login_limiter, address)

        query = request.query_params
        response: Response
        if "error" in query:
            response = _page(
                "Login cancelled",
                "GitHub did not log you in: "
                + (query.get("error_description") or query["error"]),
                status=400,
            )
        elif not query.get("code") or not query.get("state"):
            response = _page(
                "Login failed", "GitHub's answer lacks its code or state.", 400
            )
        else:
            response = await _finish(request, login, address)

        # Only the callback of this browser's own login ends it: a link with
        # another state, opened meanwhile, must not spoil the login in progress.
        if query.get("state") == request.cookies.get(STATE_COOKIE):
            response.delete_cookie(STATE_COOKIE, path="/login")

        return response

    async def device_start(request: Request) -> Response:
        if login is None:
            return JSONResponse({"error": "this relay requires no login"}, 404)

        address = _address(request)
        if not await login.login_limiter.allow(address):
            return await _too_many(login.login_limiter, address)

        try:
            start = await login.service.begin_device(address)
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, 502)

        return JSONResponse(
            {
                "login_id": start.login_id,
                "user_code": start.user_code,
                "verification_uri": start.verification_uri,
                "expires_in": start.expires_in,
                "interval": start.interval,
            }
        )

    async def device_poll(request: Request) -> Response:
        if login is None:
            return JSONResponse({"error": "this relay requires no login"}, 404)

        address = _address(request)
        if not await login.poll_limiter.allow(address):
            return await _too_many(login.poll_limiter, address)

        login_id = await _json_field(request, "login_id")
        if not login_id:
            return JSONResponse({"error": 'send {"login_id": ...} as JSON'}, 400)

        try:
            answer = await login.service.poll_device(address, login_id)
        except LoginRefused as exc:
            return JSONResponse({"state": "refused", "error": str(exc)}, 403)
        except AuthError as exc:
            return JSONResponse({"state": "failed", "error": str(exc)}, 400)

        body: dict[str, Any] = {
            "state": answer.state.value,
            "interval": answer.interval,
        }
        if answer.lease is not None:
            body.update(_lease_json(answer.lease))

        return JSONResponse(body)

    async def lease(request: Request) -> Response:
        if login is None:
            return JSONResponse({"error": "this relay requires no login"}, 404)

        found = login.leases.find(_address(request))
        if found is None:
            return JSONResponse({"error": "this address holds no lease"}, 404)

        return JSONResponse(_lease_json(found))

    async def admin_leases(request: Request) -> Response:
        if login is None:
            return JSONResponse({"error": "this relay requires no login"}, 404)

        operator = await _operator(request, login)
        if isinstance(operator, Response):
            return operator

        return JSONResponse([_lease_json(held) for held in login.leases.leases()])

    async def admin_revoke(request: Request) -> Response:
        if login is None:
            return JSONResponse({"error": "this relay requires no login"}, 404)

        operator = await _operator(request, login)
        if isinstance(operator, Response):
            return operator

        address = await _json_field(request, "address")
        if not address:
            return JSONResponse({"error": 'send {"address": ...} as JSON'}, 400)

        revoked = login.leases.revoke(address, operator=operator)
        return JSONResponse(
            {"address": address, "revoked": _lease_json(revoked) if revoked else None}
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/login", login_page),
            Route("/login/callback", callback),
            Route("/login/device", device_start, methods=["POST"]),
            Route("/login/device/poll", device_poll, methods=["POST"]),
            Route("/login/lease", lease),
            Route("/admin/leases", admin_leases),
            Route("/admin/leases/revoke", admin_revoke, methods=["POST"]),
        ]
    )


async def _finish(request: Request, login: LoginSurface, address: str) -> Response:
    query = request.query_params
    try:
        lease = await login.service.finish_browser(
            address,
            query["state"],
            request.cookies.get(STATE_COOKIE, ""),
            query["code"],
        )
    except LoginRefused as exc:
        return _page("Not allowed", str(exc), status=403)
    except AuthError as exc:
        return _page("Login failed", str(exc), status=400)

    return _page(
        "Logged in",
        f"Logged in as {lease.login}. Blender on this computer ({lease.address}) "
        "may now connect to the relay; the permission lasts "
        f"{(lease.expires_at - lease.granted_at) / 3600:g} hours.",
    )


async def _metrics_refusal(request: Request, login: LoginSurface) -> Response | None:
    """Why a relay with login does not show its metrics, which name every room,
    to this caller; None when the caller's address holds a lease or the request
    carries an operator's token (as a Prometheus scrape can)."""
    if login.leases.find(_address(request)) is not None:
        return None

    operator = await _operator(request, login)
    return operator if isinstance(operator, Response) else None


async def _operator(request: Request, login: LoginSurface) -> str | Response:
    """The operator a request's bearer token belongs to, or the answer that
    refuses it."""
    address = _address(request)
    if not await login.login_limiter.allow(address):
        return await _too_many(login.login_limiter, address)

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return JSONResponse(
            {"error": "send an operator's GitHub token as 'Authorization: Bearer'"},
            401,
        )

    try:
        return await login.policy.operator(token.strip())
    except LoginRefused as exc:
        return JSONResponse({"error": str(exc)}, 403)
    except LoginFailed as exc:
        return JSONResponse({"error": str(exc)}, 401)


def _address(request: Request) -> str:
    # Known limit: the relay must be reached directly, not through a proxy: the
    # lease goes to the address the relay sees, which behind a proxy is the
    # proxy's.
    return request.client.host if request.client else ""


async def _json_field(request: Request, name: str) -> str:
    """A string field of the request's small JSON body, or "" (for a body that
    is not JSON, lacks the field, or is too large to be read at all)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            return ""

    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        # RecursionError: a few kilobytes of brackets nest too deep to parse.
        return ""

    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


async def _too_many(limiter: AddressLimiter, address: str) -> Response:
    wait = await limiter.retry_after(address)
    if await limiter.is_worth_reporting(address):
        log.warning("login.rate_limited", extra={"address": address})

    return PlainTextResponse(
        f"too many login requests from this address; try again in {wait} s\n",
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


def _lease_json(lease: LeaseRecord) -> dict[str, Any]:
    return {
        "login": lease.login,
        "address": lease.address,
        "granted_at": lease.granted_at,
        "expires_at": lease.expires_at,
        "via": lease.via,
    }


def _page(title: str, text: str, status: int = 200) -> HTMLResponse:
    # Every text is escaped: some come from GitHub's answers.
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} - Mixer relay</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn, leaving signals to the relay (it would take SIGINT and SIGTERM
    for itself, and the relay would no longer stop gracefully)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Known limit: the surface speaks plain HTTP only (no TLS), and it cannot sit
# behind a TLS-terminating proxy since leases bind the address it sees.
class HttpSurface:
    """The HTTP listener.

    Args:
        settings: where to listen (``MIXER_HOST``, ``MIXER_HTTP_PORT``).
        app: what to serve.
        listener: a listening socket to serve instead of binding one (its port
            must be known before the relay is built when it is part of
            ``MIXER_PUBLIC_URL``).
    """

    def __init__(
        self,
        settings: Settings,
        app: Starlette,
        listener: socket.socket | None = None,
    ) -> None:
        self._settings = settings
        self._app = app
        self._listener = listener
        self.port: int | None = listener.getsockname()[1] if listener else None

    def bind(self, open_listener: Callable[[str, int], socket.socket]) -> int:
        """Open the listening socket now, so that a port in use fails early.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._listener is None:
            self._listener = open_listener(
                self._settings.host, self._settings.http_port
            )
            self.port = self._listener.getsockname()[1]

        assert self.port is not None
        return self.port

    async def serve(
        self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; the socket is bound already, so requests queue
        from the moment the port is reported."""
        listener = self._listener
        assert listener is not None and self.port is not None
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            http=BoundedH11Protocol,
            # Leases and rate limits go by the peer's own address: uvicorn would
            # otherwise take X-Forwarded-For from 127.0.0.1 (or from whatever
            # FORWARDED_ALLOW_IPS names) as the client's address.
            proxy_headers=False,
            # Request lines are not logged: the callback's carries a code.
            access_log=False,
            log_config=None,
            log_level="warning",
            server_header=False,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=int(SHUTDOWN_SECONDS),
        )
        # After the config, which sets uvicorn's loggers up.
        peer_warnings = logging.getLogger("uvicorn.error")
        if PEER_WARNINGS not in peer_warnings.filters:
            peer_warnings.addFilter(PEER_WARNINGS)

        server = _EmbeddedServer(config)
        task_status.started(self.port)
        try:
            await server.serve(sockets=[listener])
        except anyio.get_cancelled_exc_class():
            # uvicorn's own stop is skipped by a cancellation: run it, bounded.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_SECONDS):
                server.should_exit = True
                if server.started:
                    await server.shutdown(sockets=[listener])

            raise
        finally:
            self._listener = None
            listener.close()
