"""Screenshots of the main screens, compared with the accepted ones.

The app hosts a real relay; its live feed is paused and the test shows its own
fixed scene (tests/console/fixed_scene.py), so that clocks, ports and rates do
not change the picture. Accept a deliberate change with
``python -m pytest tests/console/test_snapshots.py --snapshot-update``.
"""

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from textual.pilot import Pilot

from mixer_console.console.app import MixerConsole
from mixer_console.console.messages import EventsArrived, SnapshotArrived
from mixer_console.console.screens.bans import BansScreen
from mixer_console.console.screens.command import CommandScreen
from mixer_console.console.screens.dashboard import DashboardScreen
from mixer_console.console.screens.history import HistoryScreen
from tests.console import fixed_scene
from tests.console.consoles import hosted_console

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clock times read the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[MixerConsole]:
    with hosted_console(tmp_path / "data", "0.0.0.0:12800") as (app, _):
        yield app


async def show_fixed_scene(pilot: Pilot[None]) -> None:
    """Pause the live feed, then show the fixed snapshot and events."""
    app = pilot.app
    assert isinstance(app, MixerConsole)
    await pilot.pause()
    app.action_toggle_pause()
    app.post_message(SnapshotArrived(fixed_scene.SNAPSHOT))
    app.post_message(EventsArrived(fixed_scene.EVENTS))
    await pilot.pause()


def then(*steps: Callable[[Pilot[None]], Awaitable[None]]) -> Callable[..., object]:
    async def run(pilot: Pilot[None]) -> None:
        for step in steps:
            await step(pilot)

    return run


async def finished(app: MixerConsole, group: str) -> None:
    """Wait for the app's workers of ``group`` (a screen's loading) to end."""
    with anyio.fail_after(10):
        for worker in [worker for worker in app.workers if worker.group == group]:
            await worker.wait()


async def open_history(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MixerConsole)
    await pilot.press("h")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    # The real relay has no room "castle": once its answer is in, show the page.
    await finished(app, "history")
    screen.show_page(fixed_scene.PAGE)
    await pilot.pause()


async def open_command(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MixerConsole)
    await pilot.press("down", "down", "down", "down", "i")
    screen = app.screen
    assert isinstance(screen, CommandScreen)
    await finished(app, "command")
    screen.show_detail(fixed_scene.DETAIL)
    await pilot.pause()


def test_dashboard_80x24(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """The dashboard fits the smallest terminal an operator uses over SSH."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_fixed_scene)


def test_dashboard_wide(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """A larger terminal shows every column and more rows."""
    assert snap_compare(app, terminal_size=(140, 40), run_before=show_fixed_scene)


def test_dashboard_keys(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """ "?" lists every key of the screen."""
    assert snap_compare(
        app, terminal_size=(120, 30), press=["?"], run_before=show_fixed_scene
    )


def test_kick_dialog(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """Kicking asks for confirmation and offers a ban."""

    async def kick_second_artist(pilot: Pilot[None]) -> None:
        await pilot.press("2", "down", "k")

    assert snap_compare(
        app,
        terminal_size=(80, 24),
        run_before=then(show_fixed_scene, kick_second_artist),
    )


def test_history_screen(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """A room's history, one page of commands."""
    assert snap_compare(
        app, terminal_size=(100, 30), run_before=then(show_fixed_scene, open_history)
    )


def test_command_screen(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """One command: fields, leading path, hex view."""
    assert snap_compare(
        app,
        terminal_size=(100, 30),
        run_before=then(show_fixed_scene, open_history, open_command),
    )


def test_bans_screen(snap_compare: SnapCompare, app: MixerConsole) -> None:
    """The bans in force, the leases and the audit log."""

    async def open_bans(pilot: Pilot[None]) -> None:
        await pilot.press("b")
        screen = app.screen
        assert isinstance(screen, BansScreen)
        await finished(app, "bans")
        screen.show(fixed_scene.BANS, fixed_scene.LEASES, fixed_scene.AUDIT)
        await pilot.pause()

    assert snap_compare(
        app, terminal_size=(100, 24), run_before=then(show_fixed_scene, open_bans)
    )


def test_dashboard_screen_is_the_first(app: MixerConsole) -> None:
    """The dashboard is what the app opens on (the snapshots above rely on it)."""
    assert isinstance(app.dashboard, DashboardScreen)
