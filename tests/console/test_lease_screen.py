"""The leases on the bans screen: a real relay with GitHub login (against the
fake GitHub) serving the real app, in process or attached over the admin
socket, and a real Blender connection from the leased address."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from mixer_console.console.app import MixerConsole
from mixer_console.console.screens.bans import BansScreen
from mixer_console.console.screens.dialogs import ConfirmDialog
from relay.admin_client import AdminClient
from relay.control import RelayControl
from tests.console.conftest import Console
from tests.console.consoles import OPERATOR
from tests.console.test_bad_input import notifications
from tests.control.admin_helpers import running_login_relay_with_admin
from tests.login_relay import LoginRelay


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay_with_admin(tmp_path / "data") as relay:
        yield relay


@pytest.fixture(params=["in-process", "attached"])
async def control(
    request: pytest.FixtureRequest, login_relay: LoginRelay
) -> AsyncIterator[RelayControl]:
    """The relay as the console drives it: its own LocalControl, or an
    AdminClient over its admin socket."""
    if request.param == "in-process":
        yield login_relay.server.control
        return

    path = login_relay.server.settings.admin_socket_path()
    assert path is not None
    client = AdminClient(path)
    yield client
    await client.aclose()


@pytest.fixture
async def console(
    login_relay: LoginRelay, control: RelayControl
) -> AsyncIterator[Console]:
    """The console over ``control``, alice logged in through the browser."""
    async with login_relay.browser() as browser:
        page = await browser.get("/login")
    assert "Logged in as alice" in page.text

    app = MixerConsole(control, OPERATOR, f"127.0.0.1:{login_relay.port}")
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        shown = Console(app, pilot, login_relay.server, login_relay.port, [])
        yield shown
        for client in shown.clients:
            await client.aclose()

        await app.action_quit()


async def open_leases(console: Console) -> tuple[BansScreen, DataTable[object]]:
    """Press b and wait for the lease to be listed."""
    await console.pilot.press("b")
    screen = console.app.screen
    assert isinstance(screen, BansScreen)
    leases = screen.query_one("#leases", DataTable)
    await console.until(lambda: leases.row_count == 1, "the lease listed")
    return screen, leases


async def test_lease_is_listed_and_revoked_after_confirming(console: Console) -> None:
    """b lists alice's lease; v asks first, y revokes it: the Blender
    connection from that address closes, the row goes, and the audit log on
    screen names the operator."""
    blender = await console.connect("alice-blender")
    screen, leases = await open_leases(console)

    assert str(leases.get_cell_at(Coordinate(0, 0))) == "127.0.0.1"
    assert str(leases.get_cell_at(Coordinate(0, 1))) == "alice"
    assert str(leases.get_cell_at(Coordinate(0, 4))) == "browser"

    await console.pilot.press("v")
    await console.until(
        lambda: isinstance(console.app.screen, ConfirmDialog), "the confirm dialog"
    )
    await console.pilot.press("y")
    await blender.expect_closed()
    await console.until(lambda: leases.row_count == 0, "the lease gone")

    audit = screen.query_one("#audit", DataTable)
    await console.until(
        lambda: str(audit.get_cell_at(Coordinate(0, 2))) == "lease.revoke",
        "the revocation in the audit log",
    )
    assert str(audit.get_cell_at(Coordinate(0, 1))) == OPERATOR
    assert await console.app.control.leases() == []


async def test_declined_revocation_keeps_the_lease(console: Console) -> None:
    """v then n: the lease stays and its connection still works."""
    blender = await console.connect("alice-blender")
    _screen, leases = await open_leases(console)

    await console.pilot.press("v")
    await console.until(
        lambda: isinstance(console.app.screen, ConfirmDialog), "the confirm dialog"
    )
    await console.pilot.press("n")
    await console.pilot.pause()

    assert len(await console.app.control.leases()) == 1
    assert leases.row_count == 1
    assert await blender.list_clients()


async def test_revoking_a_lease_gone_meanwhile_is_refused_on_screen(
    console: Console,
) -> None:
    """A lease revoked elsewhere after the screen read it: v, y shows the
    relay's refusal, and the console keeps running."""
    await open_leases(console)
    await console.app.control.revoke_lease("127.0.0.1", operator="someone-else")

    await console.pilot.press("v", "y")
    await console.until(lambda: bool(notifications(console)), "a notification")

    assert any("no lease is in force" in text for text in notifications(console))
    assert isinstance(console.app.screen, BansScreen)


async def test_v_without_any_lease_says_so(console: Console) -> None:
    """With no lease listed, v only tells the operator there is none."""
    await console.app.control.revoke_lease("127.0.0.1", operator=OPERATOR)
    await console.pilot.press("b")
    screen = console.app.screen
    assert isinstance(screen, BansScreen)
    audit = screen.query_one("#audit", DataTable)
    await console.until(lambda: audit.row_count == 2, "the audit log read")

    await console.pilot.press("v")
    await console.until(lambda: bool(notifications(console)), "a notification")

    assert any("No lease selected" in text for text in notifications(console))
    assert isinstance(console.app.screen, BansScreen)
