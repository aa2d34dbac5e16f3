"""Running one operator action against the relay and telling the operator how
it went, without ever letting a refusal or a lost relay end the console."""

import logging
from collections.abc import Awaitable

import anyio
from textual.app import App

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
        app.notify(f"{what}: {exc}", title="Refused", severity="error", markup=False)
        return False
    except (ConnectionError, TimeoutError) as exc:
        app.notify(f"{what}: relay unreachable ({exc})", severity="error", markup=False)
        return False

    log.info("console.operation", extra={"what": what})
    # Names in the message come from clients: shown as typed, never as markup.
    app.notify(what, title="Done", markup=False)
    return True
