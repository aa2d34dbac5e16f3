"""The two ways to log in, each ending in a lease for the address it started from.

Browser: ``begin_browser`` makes a fresh ``state`` and PKCE verifier, remembered
with the browser's address; GitHub sends the browser back with a code, and
``finish_browser`` accepts it only with that state, from that address, with the
state also in the browser's cookie (so that nobody can make a victim's browser
finish a login they started).

Device: ``begin_device`` asks GitHub for a user code and keeps GitHub's device
code to itself, handing out an unguessable login id instead; ``poll_device``
makes one token request per call, no faster than GitHub allows, and answers
only the address that began the login.
"""

import hmac
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from relay.access import AccessPolicy
from relay.device_flow import DeviceCode, DeviceState
from relay.errors import LoginFailed, LoginRefused
from relay.leases import LeaseBook, normalize_address
from store.access import LeaseRecord

if TYPE_CHECKING:
    # Only a relay that requires login builds one (see relay.device_flow).
    from relay.github import GitHub

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = TypeVar("_P", bound="_Pending")

# A browser has this long between opening /login and coming back from GitHub.
BROWSER_LOGIN_SECONDS = 600.0

# Logins begun and not finished, at most; the oldest is forgotten past this.
MAX_PENDING_LOGINS = 1000

# Logins one address may have begun and not finished; past this its own oldest
# is forgotten, so that one address beginning login after login cannot push out
# the logins others are in the middle of.
# Known limit: artists behind one NAT address who begin more logins at once than
# this push out each other's.
MAX_PENDING_PER_ADDRESS = 8

# What slow_down adds to the interval (RFC 8628, 3.5).
SLOW_DOWN_SECONDS = 5


@dataclass
class _BrowserLogin:
    address: str
    code_verifier: str = field(repr=False)
    expires_at: float


@dataclass
class _DeviceLogin:
    address: str
    device_code: str = field(repr=False)
    expires_at: float
    interval: int
    next_poll_at: float
    is_polling: bool = False
    """A token request for this login is out: another poll now is too fast."""


@dataclass(frozen=True)
class DeviceStart:
    """What a terminal shows to begin a device login."""

    login_id: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DeviceAnswer:
    """Where a device login stands; ``lease`` is set once granted."""

    state: DeviceState
    interval: int
    lease: LeaseRecord | None = None


# Known limit: logins in progress live in memory, so one begun before a restart
# must be started again after it.
class LoginService:
    """Runs logins and grants leases.

    Args:
        github: the OAuth provider.
        policy: who is allowed in.
        leases: where granted leases go.
        clock: monotonic seconds, for the pending logins' deadlines.
    """

    def __init__(
        self,
        github: "GitHub",
        policy: AccessPolicy,
        leases: LeaseBook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._github = github
        self._policy = policy
        self._leases = leases
        self._clock = clock
        self._browser: OrderedDict[str, _BrowserLogin] = OrderedDict()
        self._device: OrderedDict[str, _DeviceLogin] = OrderedDict()
        self.outcomes: Counter[str] = Counter()
        """Finished logins by outcome ("granted", "refused", "failed", ...)."""

    async def begin_browser(self, address: str) -> tuple[str, str]:
        """Start a browser login.

        Returns:
            The GitHub URL to send the browser to, and the state to set in its
            cookie.
        """
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        expires_at = self._clock() + BROWSER_LOGIN_SECONDS
        _remember(self._browser, state, _BrowserLogin(address, verifier, expires_at))
        url = await self._github.authorization_url(state, verifier)
        return url, state

    async def finish_browser(
        self, address: str, state: str, cookie_state: str, code: str
    ) -> LeaseRecord:
        """Complete a browser login with the code GitHub sent back.

        Raises:
            LoginFailed: the state is unknown, used, expired, not the browser's,
                or from another address (the login then stays pending for its
                own browser); or GitHub refused the code.
            LoginRefused: the account is not allowed.
        """
        pending = self._browser.get(state)
        if pending is not None and pending.expires_at <= self._clock():
            del self._browser[state]
            pending = None

        # A refused attempt leaves the login pending: someone who learnt its
        # callback URL elsewhere must not spoil it for the browser that began it.
        is_valid = (
            pending is not None
            and hmac.compare_digest(state.encode(), cookie_state.encode())
            and normalize_address(pending.address) == normalize_address(address)
        )
        if pending is None or not is_valid:
            self.outcomes["bad_state"] += 1
            log.warning("login.bad_state", extra={"address": address})
            raise LoginFailed(
                "this login link is not valid here (expired, already used, or "
                "started in another browser or from another address); start again"
            )

        # Used once: a replayed callback finds nothing.
        del self._browser[state]
        token = await self._counted(
            self._github.exchange_code(code, pending.code_verifier)
        )
        return await self._grant(address, token, via="browser")

    async def begin_device(self, address: str) -> DeviceStart:
        """Start a device login for a terminal at ``address``.

        Raises:
            LoginFailed: GitHub did not start one.
        """
        code: DeviceCode = await self._counted(self._github.start_device_login())
        login_id = secrets.token_urlsafe(32)
        now = self._clock()
        _remember(
            self._device,
            login_id,
            _DeviceLogin(
                address, code.device_code, now + code.expires_in, code.interval, now
            ),
        )
        return DeviceStart(
            login_id,
            code.user_code,
            code.verification_uri,
            code.expires_in,
            code.interval,
        )

    async def poll_device(self, address: str, login_id: str) -> DeviceAnswer:
        """Ask once whether the person has approved the device login.

        Raises:
            LoginFailed: no such login (unknown, finished, or begun from another
                address), or GitHub failed.
            LoginRefused: the account is not allowed.
        """
        pending = self._device.get(login_id)
        if pending is None or normalize_address(pending.address) != normalize_address(
            address
        ):
            self.outcomes["bad_state"] += 1
            log.warning("login.bad_device_id", extra={"address": address})
            raise LoginFailed("no such device login from this address; start again")

        now = self._clock()
        if pending.expires_at <= now:
            del self._device[login_id]
            return DeviceAnswer(DeviceState.EXPIRED, pending.interval)

        if pending.is_polling or now < pending.next_poll_at:
            # Polling faster than GitHub allows (or twice at once): answer as
            # GitHub would, without asking it.
            pending.interval += SLOW_DOWN_SECONDS
            pending.next_poll_at = now + pending.interval
            return DeviceAnswer(DeviceState.SLOW_DOWN, pending.interval)

        pending.is_polling = True
        try:
            poll = await self._github.poll_device_login(pending.device_code)
        except LoginFailed:
            self._device.pop(login_id, None)
            self.outcomes["failed"] += 1
            raise
        finally:
            pending.is_polling = False

        if poll.state == DeviceState.SLOW_DOWN:
            pending.interval += SLOW_DOWN_SECONDS

        pending.next_poll_at = self._clock() + pending.interval
        if poll.state in (DeviceState.PENDING, DeviceState.SLOW_DOWN):
            return DeviceAnswer(poll.state, pending.interval)

        self._device.pop(login_id, None)
        if poll.state != DeviceState.GRANTED:
            self.outcomes[poll.state.value] += 1
            return DeviceAnswer(poll.state, pending.interval)

        lease = await self._grant(address, poll.token, via="device")
        return DeviceAnswer(DeviceState.GRANTED, pending.interval, lease)

    async def _grant(self, address: str, token: str, via: str) -> LeaseRecord:
        try:
            login = await self._policy.admit(token)
        except LoginFailed:
            self.outcomes["failed"] += 1
            raise
        except LoginRefused:
            self.outcomes["refused"] += 1
            raise

        self.outcomes["granted"] += 1
        return self._leases.grant(address, login, via)

    async def _counted(self, step: Awaitable[_T]) -> _T:
        try:
            return await step
        except LoginFailed:
            self.outcomes["failed"] += 1
            raise


class _Pending(Protocol):
    address: str


def _remember(pending: OrderedDict[str, _P], key: str, value: _P) -> None:
    """Keep a login begun, forgetting its address's oldest beyond the address's
    share, then the oldest of all beyond the cap."""
    address = normalize_address(value.address)
    own = [
        other_key
        for other_key, other in pending.items()
        if normalize_address(other.address) == address
    ]
    for old_key in own[: max(0, len(own) + 1 - MAX_PENDING_PER_ADDRESS)]:
        del pending[old_key]

    pending[key] = value
    while len(pending) > MAX_PENDING_LOGINS:
        pending.popitem(last=False)
