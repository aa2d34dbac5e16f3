"""Who may use the relay: GitHub accounts allowed by name, by organisation, or
as operators."""

import logging
from typing import TYPE_CHECKING

from relay.config import Settings
from relay.errors import LoginRefused

if TYPE_CHECKING:
    # Only a relay that requires login builds one (see relay.device_flow).
    from relay.github import GitHub

log = logging.getLogger(__name__)

ANY_ACCOUNT = "*"


class AccessPolicy:
    """The allow-lists of the settings, checked against GitHub.

    Args:
        settings: ``MIXER_ALLOW_USERS``, ``MIXER_ALLOW_ORGS``, ``MIXER_OPERATORS``.
        github: where logins and memberships are looked up.
    """

    def __init__(self, settings: Settings, github: "GitHub") -> None:
        self._users = settings.allow_users
        self._orgs = sorted(settings.allow_orgs)
        self._operators = settings.operators
        self._github = github

    def is_operator(self, login: str) -> bool:
        """Tell whether a GitHub login is one of the relay's operators."""
        return login.lower() in self._operators

    # Known limit: membership is checked when a lease is granted, so someone who
    # leaves an allowed organisation keeps their lease until it expires or an
    # operator revokes it.
    async def admit(self, token: str) -> str:
        """Return the login of the token's user if this relay lets them in.

        Raises:
            LoginFailed: GitHub does not accept the token or cannot be reached.
            LoginRefused: the account is on none of the allow-lists.
        """
        login = await self._github.login_of(token)
        name = login.lower()
        if ANY_ACCOUNT in self._users or name in self._users or name in self._operators:
            return login

        for org in self._orgs:
            if await self._github.is_member(token, org):
                return login

        log.warning("login.refused", extra={"login": login})
        raise LoginRefused(
            f"the GitHub account {login!r} is not allowed on this relay; ask its "
            "operators to add it"
        )

    async def operator(self, token: str) -> str:
        """Return the login of the token's user if they are an operator.

        Raises:
            LoginFailed: GitHub does not accept the token or cannot be reached.
            LoginRefused: the account is not one of ``MIXER_OPERATORS``.
        """
        login = await self._github.login_of(token)
        if not self.is_operator(login):
            log.warning("operator.refused", extra={"login": login})
            raise LoginRefused(f"the GitHub account {login!r} is not an operator")

        return login
