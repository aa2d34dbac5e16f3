"""Admission of TCP connections when the relay requires a GitHub login.

A connection is let in when its address holds a lease, or when its first message
is SET_CLIENT_CUSTOM_ATTRIBUTES carrying a ``mixer_token`` that GitHub accepts
for an allowed account. Until then the connection is not a client: nobody is
told about it and it is told nothing, not even the room list; a refused one gets
one SEND_ERROR naming the login page, and is closed.
"""

import logging
from collections import Counter

from relay.access import AccessPolicy
from relay.config import Settings
from relay.errors import AuthError, LoginFailed
from relay.leases import LeaseBook
from relay.ratelimit import AddressLimiter

log = logging.getLogger(__name__)

# Connections waiting to be admitted at once, at most; past it new ones are
# refused at once, so that a flood of silent connections holds no more than this.
MAX_PENDING_ADMISSIONS = 256

# Of those, the most one address may hold, so that one address cannot keep
# everyone else's tokens out (as the HTTP surface bounds one address's share).
MAX_PENDING_ADMISSIONS_PER_ADDRESS = 32


class Gate:
    """Decides which connections become clients.

    Args:
        settings: the login page's address, for the refusal message.
        leases: the leases in force.
        policy: the allow-lists, for tokens presented over TCP.
        limiter: bounds the tokens one address may present.
    """

    def __init__(
        self,
        settings: Settings,
        leases: LeaseBook,
        policy: AccessPolicy,
        limiter: AddressLimiter,
    ) -> None:
        self._login_url = settings.login_url
        self._public_url = settings.public_url
        self.leases = leases
        self._policy = policy
        self._limiter = limiter
        self._pending: Counter[str] = Counter()

    # Known limit: the lease is checked when a connection opens, so a connection
    # outlives the lease it came in under (revoking a lease closes it, expiry
    # does not).
    def leased_login(self, ip: str) -> str | None:
        """The login whose lease covers ``ip``, if one does."""
        lease = self.leases.find(ip)
        return lease.login if lease is not None else None

    def begin_admission(self, ip: str) -> bool:
        """Count one more connection from ``ip`` waiting for its first message;
        False when too many are waiting already, from anywhere or from ``ip``
        (call :meth:`end_admission` after a True)."""
        pending = self._pending
        if (
            pending.total() >= MAX_PENDING_ADMISSIONS
            or pending[ip] >= MAX_PENDING_ADMISSIONS_PER_ADDRESS
        ):
            return False

        pending[ip] += 1
        return True

    def end_admission(self, ip: str) -> None:
        """Count one connection from ``ip`` less waiting for its first message."""
        pending = self._pending
        pending[ip] -= 1
        if not pending[ip]:
            del pending[ip]

    async def admit_token(self, ip: str, token: str) -> str:
        """The login a token presented over TCP admits.

        Raises:
            LoginFailed: too many tokens from this address, or GitHub refused it.
            LoginRefused: the account is not allowed.
        """
        if not await self._limiter.allow(ip):
            raise LoginFailed("too many login attempts from this address; wait")

        login = await self._policy.admit(token)
        log.info("login.token_accepted", extra={"address": ip, "login": login})
        return login

    def refusal(self, error: AuthError | None = None) -> str:
        """The SEND_ERROR text for a connection that is not let in."""
        why = f"login refused: {error}" if error else "login required"
        return (
            f"{why}: this relay needs a GitHub login. Open {self._login_url} in a "
            "browser on this computer, or run 'mixer-console login --relay "
            f"{self._public_url}', then connect again"
        )
