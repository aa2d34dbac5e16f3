"""Running one operator action against the relay and telling the operator how
it went, without ever letting a refusal or a lost relay end the console."""

import logging
from collections.abc import Awaitable

import anyio
from textual.app import App
from textual.notifications import SeverityLevel

from mixer_console.console.format import shown
from relay.control import OperationRefused

log = logging.getLogger(__name__)

# An action the relay has not answered within this is reported as failed.
OPERATION_TIMEOUT = 30.0


async def perform(app: App[object], what: str, action: Awaitable[object]) -> bool:
    """Await ``action`` and notify the outcome; returns whether it succeeded.

    Args:
        app: where the notification shows.
        what: the action in a few words ("kick 127.0.0.1:5000").
        action: the call to the relay.
    """
    try:
        with anyio.fail_after(OPERATION_TIMEOUT):
            await action
    except OperationRefused as exc:
        notify(app, f"{what}: {exc}", title="Refused", severity="error")
        return False
    except (ConnectionError, TimeoutError) as exc:
        notify(app, f"{what}: relay unreachable ({exc})", severity="error")
        return False

    log.info("console.operation", extra={"what": what})
    notify(app, what, title="Done")
    return True


def notify(
    app: App[object],
    message: str,
    title: str = "",
    severity: SeverityLevel = "information",
) -> None:
    """Show ``message``, whose names come from clients: never read as markup,
    and escaped where a terminal would act on them."""
    app.notify(shown(message), title=title, severity=severity, markup=False)
