"""GitHub as an OAuth 2.0 provider and an identity API, through authlib's httpx
client.

Both flows the relay offers end in a user access token: the authorization code
flow with ``state`` and PKCE (S256) for browsers, and the device flow for
terminals. The token is used at once to ask GitHub who the user is and which
organisations they belong to, and is never kept, logged or shown.

GitHub answers OAuth errors with HTTP 200 and a form-encoded body unless the
request asks for JSON; authlib's token requests do ask, and so does the
device-code request below.
"""

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from relay.config import Settings
from relay.device_flow import DeviceCode, DevicePoll, DeviceState
from relay.errors import LoginFailed

log = logging.getLogger(__name__)

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"

# read:org lets the relay see the user's organisation memberships, and nothing
# else beyond the public profile.
SCOPE = "read:org"

# Seconds any one request to GitHub may take, all of it: httpx's own timeout
# bounds each read, and an answer trickling a byte at a time passes every one.
REQUEST_TIMEOUT = 10.0

# Bytes any one answer from GitHub may hold; its real answers hold a few hundred,
# and httpx would read a bigger one whole into memory.
MAX_ANSWER_BYTES = 1024 * 1024

# The numbers a device login may name, in seconds (GitHub's are 900 and 5).
MAX_DEVICE_EXPIRES_IN = 24 * 3600
MAX_DEVICE_INTERVAL = 3600

# What GitHub takes as a login: letters, digits and hyphens (39 at most), and,
# on GitHub Enterprise, an underscore before a managed user's short code.
GITHUB_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")

USER_AGENT = "mixer-console"

# What GitHub's REST API asks its clients to accept.
_API = {"Accept": "application/vnd.github+json"}

# The interval GitHub's device flow uses when it names none (RFC 8628, 3.5).
DEFAULT_DEVICE_INTERVAL = 5


# GitHub's error codes for a device token request that is not (yet) granted.
_DEVICE_ERRORS = {
    "authorization_pending": DeviceState.PENDING,
    "slow_down": DeviceState.SLOW_DOWN,
    "expired_token": DeviceState.EXPIRED,
    "access_denied": DeviceState.DENIED,
}


class GitHub:
    """The GitHub (or GitHub Enterprise) an OAuth app is registered with.

    Args:
        settings: the client id and secret, GitHub's addresses and ours.
    """

    def __init__(self, settings: Settings) -> None:
        self._client_id = settings.github_client_id
        self._client_secret = settings.github_client_secret
        self._authorize_url = settings.github_url + "/login/oauth/authorize"
        self._token_url = settings.github_url + "/login/oauth/access_token"
        self._device_url = settings.github_url + "/login/device/code"
        self._api_url = settings.github_api_url
        self.callback_url = settings.public_url + "/login/callback"
        # Loading the certificate store takes about 50 ms: once, not per client.
        self._tls = httpx2.create_ssl_context()

    def _client(self, token: str = "") -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            # GitHub takes the client's credentials in the form body.
            token_endpoint_auth_method="client_secret_post",
            scope=SCOPE,
            redirect_uri=self.callback_url,
            code_challenge_method="S256",
            token={"access_token": token, "token_type": "bearer"} if token else None,
            timeout=REQUEST_TIMEOUT,
            verify=self._tls,
            # GitHub's API refuses requests without a User-Agent.
            headers={"User-Agent": USER_AGENT},
            event_hooks={"response": [_bound_answer]},
        )

    async def authorization_url(self, state: str, code_verifier: str) -> str:
        """The GitHub page a browser is sent to, carrying ``state`` and the PKCE
        challenge of ``code_verifier``."""
        async with self._client() as client:
            url, _state = client.create_authorization_url(
                self._authorize_url, state=state, code_verifier=code_verifier
            )

        return str(url)

    async def exchange_code(self, code: str, code_verifier: str) -> str:
        """Trade an authorization code for the user's access token.

        Raises:
            LoginFailed: GitHub refused the code or the verifier, or is unreachable.
        """
        async with self._client() as client:
            with _translated("the code could not be exchanged"):
                token = await client.fetch_token(
                    self._token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )

        return _access_token(token)

    async def start_device_login(self) -> DeviceCode:
        """Ask GitHub for a device code and the user code a person types in.

        Raises:
            LoginFailed: GitHub refused (device flow not enabled for the app, say).
        """
        async with self._client() as client:
            with _translated("GitHub did not start a device login"):
                # No token exists yet: the request must not try to send one.
                response = await client.request(
                    "POST",
                    self._device_url,
                    withhold_token=True,
                    data={"client_id": self._client_id, "scope": SCOPE},
                    headers={"Accept": "application/json"},
                )
                body = _json_object(response)

        if "error" in body:
            raise LoginFailed(
                "GitHub did not start a device login: " + _error_text(body)
            )

        try:
            code = DeviceCode(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                expires_in=int(body["expires_in"]),
                interval=int(body.get("interval", DEFAULT_DEVICE_INTERVAL)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise LoginFailed(
                "GitHub's device login answer lacks a field: " + str(exc)
            ) from None

        if not (
            0 < code.expires_in <= MAX_DEVICE_EXPIRES_IN
            and 0 <= code.interval <= MAX_DEVICE_INTERVAL
        ):
            raise LoginFailed(
                "GitHub's device login answer names an impossible expiry "
                f"({code.expires_in} s) or interval ({code.interval} s)"
            )

        return code

    async def poll_device_login(self, device_code: str) -> DevicePoll:
        """Make one device token request.

        Raises:
            LoginFailed: GitHub answered with an error other than the device
                flow's own, or is unreachable.
        """
        async with self._client() as client:
            with _translated("the device login failed"):
                try:
                    token = await client.fetch_token(
                        self._token_url,
                        grant_type=DEVICE_GRANT_TYPE,
                        device_code=device_code,
                    )
                except OAuthError as exc:
                    state = _DEVICE_ERRORS.get(str(exc.error))
                    if state is None:
                        raise

                    return DevicePoll(state)

        return DevicePoll(DeviceState.GRANTED, _access_token(token))

    async def login_of(self, token: str) -> str:
        """The GitHub login a user access token belongs to.

        Raises:
            LoginFailed: GitHub does not accept the token, or is unreachable.
        """
        if not is_plausible_token(token):
            raise LoginFailed("this is not a GitHub token")

        async with self._client(token) as client:
            with _translated("GitHub could not say who this is"):
                response = await client.get(self._api_url + "/user", headers=_API)

            if response.status_code in (401, 403):
                raise LoginFailed("GitHub does not accept this token")

            body = _json_object(response)

        login = body.get("login")
        if response.status_code != 200 or not isinstance(login, str) or not login:
            raise LoginFailed(
                f"GitHub's user API answered HTTP {response.status_code} without "
                "a login"
            )

        if not GITHUB_LOGIN.fullmatch(login):
            raise LoginFailed("GitHub's user API answered with not a GitHub login")

        return login

    async def is_member(self, token: str, org: str) -> bool:
        """Tell whether the token's user is an active member of ``org``.

        Raises:
            LoginFailed: GitHub answered something else than yes or no.
        """
        url = f"{self._api_url}/user/memberships/orgs/{quote(org, safe='')}"
        async with self._client(token) as client:
            with _translated("GitHub could not list the memberships"):
                response = await client.get(url, headers=_API)

            # 404: not a member; 403: the org restricts what apps may see.
            if response.status_code in (403, 404):
                return False

            body = _json_object(response)

        if response.status_code != 200:
            raise LoginFailed(
                f"GitHub's membership API answered HTTP {response.status_code}"
            )

        return body.get("state") == "active"


# GitHub's tokens are short printable ASCII strings without spaces; 255
# characters leaves room for every format it has used.
MAX_TOKEN_CHARS = 255


def is_plausible_token(token: str) -> bool:
    """Tell whether ``token`` could be a GitHub token at all (anything else could
    not even travel in an HTTP header)."""
    return (
        0 < len(token) <= MAX_TOKEN_CHARS
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


class _AnswerTooLarge(Exception):
    """GitHub's answer went past MAX_ANSWER_BYTES."""


async def _bound_answer(response: httpx2.Response) -> None:
    """Make ``response`` refuse its body past MAX_ANSWER_BYTES, as it arrives
    (response hooks run before the body is read)."""
    stream = response.stream
    assert isinstance(stream, httpx2.AsyncByteStream)  # an async client's
    response.stream = _BoundedStream(stream)


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._stream:
            received += len(chunk)
            if received > MAX_ANSWER_BYTES:
                raise _AnswerTooLarge

            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Bound a request to GitHub at REQUEST_TIMEOUT in all, and turn httpx's and
    authlib's errors into :class:`LoginFailed`, saying what failed without the
    request's details (those can hold a code)."""
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            yield
    except TimeoutError:
        log.warning("github.too_slow", extra={"doing": what})
        raise LoginFailed(f"{what}: GitHub took too long to answer") from None
    except _AnswerTooLarge:
        log.warning("github.answer_too_large", extra={"doing": what})
        raise LoginFailed(
            f"{what}: GitHub's answer is larger than {MAX_ANSWER_BYTES} bytes"
        ) from None
    except OAuthError as exc:
        raise LoginFailed(
            f"{what}: GitHub answered {exc.error}"
            + (f" ({exc.description})" if exc.description else "")
        ) from None
    except httpx2.HTTPError as exc:
        log.warning(
            "github.unreachable", extra={"error": type(exc).__name__, "doing": what}
        )
        raise LoginFailed(f"{what}: GitHub could not be reached") from None
    except (ValueError, OverflowError):
        raise LoginFailed(f"{what}: GitHub's answer is unreadable") from None


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None

    if not isinstance(body, dict):
        raise LoginFailed(
            f"GitHub answered HTTP {response.status_code} with something other "
            "than a JSON object"
        )

    return body


def _access_token(token: dict[str, Any]) -> str:
    value = token.get("access_token")
    if not isinstance(value, str) or not value:
        raise LoginFailed("GitHub's token answer holds no access token")

    return value


def _error_text(body: dict[str, Any]) -> str:
    description = body.get("error_description")
    return str(body["error"]) + (f" ({description})" if description else "")
