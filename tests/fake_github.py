"""A small GitHub on 127.0.0.1: the OAuth endpoints and the two API calls the
relay makes, with GitHub's habits (errors as HTTP 200 with a form-encoded body
unless JSON is asked for) and a PKCE check.

It serves the web side at its root and the API under ``/api/v3``, as GitHub
Enterprise does. Tests say who is at the keyboard (``browser_user``), approve or
deny device codes, and read back what was asked of it.
"""

import base64
import hashlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from relay.config import Settings
from relay.http import HttpSurface
from relay.server import open_listener

CLIENT_ID = "Iv1.fakeclient"
CLIENT_SECRET = "fake-secret-5f1e0c9a2b7d"


@dataclass
class _Code:
    login: str
    challenge: str
    redirect_uri: str


@dataclass
class _Device:
    user_code: str
    expires_at: float
    interval: int
    last_poll: float = 0.0
    login: str | None = None
    is_denied: bool = False


@dataclass
class FakeGitHub:
    """The fake's state; ``url`` is set once it listens."""

    callback_url: str = ""
    browser_user: str = "alice"
    """Who approves the authorization page."""
    orgs: dict[str, set[str]] = field(default_factory=dict)
    """Active members of each organisation."""
    device_expires_in: int = 60
    device_interval: int = 1
    is_slow_down_next: bool = False
    """Answer the next device token request with slow_down, as GitHub may."""
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    """Access token to login."""
    pkce_checks: int = 0
    issued_codes: list[str] = field(default_factory=list)
    device_code_requests: list[dict[str, str]] = field(default_factory=list)
    """Headers of each device-code request."""
    answers: dict[str, bytes] = field(default_factory=dict)
    """Raw JSON bodies that replace an endpoint's answer, by path: the odd
    numbers, broken text or sheer size of a GitHub that misbehaves."""
    trickle_seconds: float = 0.0
    """When set, a replaced answer comes one byte every this many seconds."""
    handed_out: "MemoryObjectSendStream[str] | None" = None
    """Where each user code handed out is sent, for tests to approve."""
    _codes: dict[str, _Code] = field(default_factory=dict)
    _devices: dict[str, _Device] = field(default_factory=dict)
    _user_codes: "MemoryObjectReceiveStream[str] | None" = None

    @property
    def api_url(self) -> str:
        return self.url + "/api/v3"

    def issue_token(self, login: str) -> str:
        """A valid access token for ``login``, as a script would hold."""
        token = "gho_" + secrets.token_hex(16)
        self.tokens[token] = login
        return token

    async def next_user_code(self, timeout: float = 5.0) -> str:
        """Wait for the next user code GitHub hands out."""
        with anyio.fail_after(timeout):
            assert self._user_codes is not None
            return await self._user_codes.receive()

    def approve(self, user_code: str, login: str) -> None:
        """The person types the user code and approves, as ``login``."""
        self._device_by_user_code(user_code).login = login

    def deny(self, user_code: str) -> None:
        """The person types the user code and cancels."""
        self._device_by_user_code(user_code).is_denied = True

    def _device_by_user_code(self, user_code: str) -> _Device:
        return next(d for d in self._devices.values() if d.user_code == user_code)

    def app(self) -> Starlette:
        routes = [
            ("/login/oauth/authorize", self._authorize, ["GET"]),
            ("/login/oauth/access_token", self._token, ["POST"]),
            ("/login/device/code", self._device_code, ["POST"]),
            ("/api/v3/user", self._user, ["GET"]),
            ("/api/v3/user/memberships/orgs/{org}", self._membership, ["GET"]),
        ]
        return Starlette(
            routes=[
                Route(path, self._replaceable(path, endpoint), methods=methods)
                for path, endpoint, methods in routes
            ]
        )

    def _replaceable(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint``, unless :attr:`answers` replaces what ``path`` answers."""

        async def answer(request: Request) -> Response:
            body = self.answers.get(path)
            if body is None:
                return await endpoint(request)

            if not self.trickle_seconds:
                return Response(body, media_type="application/json")

            return StreamingResponse(
                self._trickled(body), media_type="application/json"
            )

        return answer

    async def _trickled(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            yield body[index : index + 1]
            await anyio.sleep(self.trickle_seconds)

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        if query.get("client_id") != CLIENT_ID:
            return Response("unknown client", status_code=404)

        # GitHub refuses a redirect outside the app's registered callback.
        if query.get("redirect_uri") != self.callback_url:
            return Response("redirect_uri mismatch", status_code=400)

        if query.get("code_challenge_method") != "S256":
            return Response("PKCE S256 required by this fake", status_code=400)

        code = secrets.token_hex(10)
        self.issued_codes.append(code)
        self._codes[code] = _Code(
            self.browser_user, query["code_challenge"], query["redirect_uri"]
        )
        target = (
            query["redirect_uri"]
            + "?"
            + urlencode({"code": code, "state": query.get("state", "")})
        )
        return RedirectResponse(target, status_code=302)

    async def _token(self, request: Request) -> Response:
        form = dict(await request.form())
        wants_json = "application/json" in request.headers.get("accept", "")
        if form.get("client_id") != CLIENT_ID:
            return _oauth_error("incorrect_client_credentials", wants_json)

        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_token(str(form.get("device_code", "")), wants_json)

        if form.get("client_secret") != CLIENT_SECRET:
            return _oauth_error("incorrect_client_credentials", wants_json)

        code = self._codes.pop(str(form.get("code", "")), None)
        if code is None:
            return _oauth_error("bad_verification_code", wants_json)

        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", wants_json)

        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != code.challenge:
            return _oauth_error("bad_verification_code", wants_json)

        self.pkce_checks += 1
        return _token_reply(self.issue_token(code.login), wants_json)

    def _device_token(self, device_code: str, wants_json: bool) -> Response:
        device = self._devices.get(device_code)
        if device is None:
            return _oauth_error("bad_verification_code", wants_json)

        now = time.monotonic()
        if now >= device.expires_at:
            return _oauth_error("expired_token", wants_json)

        if now - device.last_poll < device.interval or self.is_slow_down_next:
            self.is_slow_down_next = False
            device.interval += 5
            device.last_poll = now
            return _oauth_error("slow_down", wants_json)

        device.last_poll = now
        if device.is_denied:
            return _oauth_error("access_denied", wants_json)

        if device.login is None:
            return _oauth_error("authorization_pending", wants_json)

        del self._devices[device_code]
        return _token_reply(self.issue_token(device.login), wants_json)

    async def _device_code(self, request: Request) -> Response:
        self.device_code_requests.append(dict(request.headers))
        form = await request.form()
        if form.get("client_id") != CLIENT_ID:
            return _oauth_error("incorrect_client_credentials", False)

        device_code = secrets.token_hex(20)
        user_code = f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}"
        self._devices[device_code] = _Device(
            user_code,
            time.monotonic() + self.device_expires_in,
            self.device_interval,
            last_poll=time.monotonic() - self.device_interval,
        )
        if self.handed_out is not None:
            self.handed_out.send_nowait(user_code)

        body = {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": self.url + "/login/device",
            "expires_in": self.device_expires_in,
            "interval": self.device_interval,
        }
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(body)

        return _form(body)

    def _login_of(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None

        return self.tokens.get(token)

    async def _user(self, request: Request) -> Response:
        login = self._login_of(request)
        if login is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)

        return JSONResponse({"login": login, "id": abs(hash(login)) % 10**6})

    async def _membership(self, request: Request) -> Response:
        login = self._login_of(request)
        if login is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)

        org = request.path_params["org"]
        if login not in self.orgs.get(org, set()):
            return JSONResponse({"message": "Not Found"}, status_code=404)

        return JSONResponse({"state": "active", "role": "member"})


def _oauth_error(error: str, wants_json: bool) -> Response:
    # GitHub answers OAuth errors with HTTP 200.
    body = {"error": error, "error_description": error.replace("_", " ")}
    return JSONResponse(body) if wants_json else _form(body)


def _token_reply(token: str, wants_json: bool) -> Response:
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "bearer",
        "scope": "read:org",
    }
    return JSONResponse(body) if wants_json else _form(body)


def _form(body: dict[str, Any]) -> Response:
    return Response(urlencode(body), media_type="application/x-www-form-urlencoded")


@asynccontextmanager
async def running_fake_github(callback_url: str) -> AsyncIterator[FakeGitHub]:
    """Serve a fake GitHub on 127.0.0.1 (a free port) until the block ends."""
    fake = FakeGitHub(callback_url=callback_url)
    send, receive = anyio.create_memory_object_stream[str](100)
    fake.handed_out, fake._user_codes = send, receive
    listener: socket.socket = open_listener("127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    surface = HttpSurface(Settings(host="127.0.0.1"), fake.app(), listener)
    with send, receive:
        async with anyio.create_task_group() as tasks:
            await tasks.start(surface.serve)
            yield fake
            tasks.cancel_scope.cancel()
