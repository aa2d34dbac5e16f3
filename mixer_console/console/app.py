"""The operator console: one app over one relay, hosted in it or attached to it."""

import asyncio
import logging
import signal
from collections.abc import Iterable
from typing import ClassVar, Protocol

import anyio
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mixer_console.console.feed import RelayFeed
from mixer_console.console.messages import (
    EventsArrived,
    RelayStateChanged,
    SnapshotArrived,
)
from mixer_console.console.screens.dashboard import DashboardScreen
from mixer_console.console.terminal import (
    HangupSafeDriver,
    detach_from_gone_terminals,
    is_terminal_gone,
    report_hangup,
)
from relay.control import RelayControl

log = logging.getLogger(__name__)

# Time the hosted relay gets to stop (sessions closed, rooms saved) on quit.
RELAY_STOP_SECONDS = 5.0

# SIGINT too: the console's terminal is raw (ctrl+c is a key), so a SIGINT comes
# from kill, and deserves the graceful stop of the headless relay.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# How often the console looks whether its keyboard's terminal hung up, which no
# signal announces when that terminal is not the process's controlling one.
TERMINAL_CHECK_SECONDS = 1.0


class HostedRelay(Protocol):
    """A relay the console runs on its own event loop."""

    async def run(self) -> None:
        """Serve until :meth:`stop` is called, then stop gracefully."""
        ...

    def stop(self) -> None: ...


class MixerConsole(App[None]):
    """The dashboard over ``control``; with ``hosted``, the relay runs inside
    this app (a worker holds its task group) and quitting stops it gracefully.

    Args:
        control: the relay, as the operator drives it.
        operator: who the audit log names for every action.
        where: the relay in a few words ("127.0.0.1:12800", a socket path).
        hosted: the relay to run in this process, if any.
        handle_signals: stop on SIGINT, SIGTERM and SIGHUP like the headless
            relay, and on a terminal that hangs up (for the command line; tests
            leave the process's handlers alone).
    """

    CSS_PATH = "app.tcss"
    TITLE = "mixer-console"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "toggle_keys", "Keys", tooltip="List every key"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        control: RelayControl,
        operator: str,
        where: str,
        *,
        hosted: HostedRelay | None = None,
        handle_signals: bool = False,
    ) -> None:
        # The hangup-safe driver raises SIGHUP, so it needs the handler.
        super().__init__(driver_class=HangupSafeDriver if handle_signals else None)
        self.control = control
        self.operator = operator
        self.hosted = hosted
        self.feed = RelayFeed(control, self)
        self.dashboard = DashboardScreen(control, operator, where)
        self._handle_signals = handle_signals
        self._relay_worker: Worker[None] | None = None
        self._is_stopping = False

    async def on_mount(self) -> None:
        # The feed's first snapshot could otherwise arrive before the dashboard
        # has composed its widgets (a CI run under load failed on that).
        await self.push_screen(self.dashboard)
        if self.hosted is not None:
            self._relay_worker = self.run_worker(
                self.hosted.run, name="relay", group="relay", exit_on_error=False
            )

        self.run_worker(self.feed.run(), name="feed", group="feed")
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self._stop_on_signal, signum)

            self.set_interval(TERMINAL_CHECK_SECONDS, self._check_keyboard)

    def _check_keyboard(self) -> None:
        # Textual's input thread reads end-of-file from a hung-up terminal over
        # and over without a word, so the console would spin with no keys.
        if is_terminal_gone(0):
            report_hangup()

    def _stop_on_signal(self, signum: int) -> None:
        # Before the app's last writes, which a dead terminal would fail.
        if signum == signal.SIGHUP and detach_from_gone_terminals():
            log.info("console.terminal_gone")

        if self._is_stopping:
            # A hang-up comes from the kernel and from the failing terminal both.
            return

        self._is_stopping = True
        # An attached console leaves its relay running: its log must not say so.
        event = "relay.stopping" if self.hosted is not None else "console.stopping"
        log.info(event, extra={"signal": signal.Signals(signum).name})
        self.run_worker(self.action_quit(), group="quit")

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.dashboard.on_snapshot_arrived(message)

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.dashboard.on_events_arrived(message)

    def on_relay_state_changed(self, message: RelayStateChanged) -> None:
        self.dashboard.on_relay_state_changed(message)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A relay that fails is shown, not fatal: the operator still reads why.
        worker = event.worker
        if worker is self._relay_worker and event.state == WorkerState.ERROR:
            log.error("relay.failed", extra={"error": repr(worker.error)})
            self.dashboard.on_relay_state_changed(
                RelayStateChanged(False, f"relay failed: {worker.error!r}")
            )

    def action_toggle_pause(self) -> None:
        self.feed.is_paused = not self.feed.is_paused
        self.dashboard.show_paused(self.feed.is_paused)

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        """Stop the hosted relay gracefully (if any), then leave."""
        worker = self._relay_worker
        if self.hosted is not None and worker is not None and not worker.is_finished:
            self.hosted.stop()
            with anyio.move_on_after(RELAY_STOP_SECONDS):
                await worker.wait()

        self.exit()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, DashboardScreen):
            yield SystemCommand(
                "Kick artist", "Disconnect the selected artist", screen.action_kick
            )
            yield SystemCommand(
                "Delete room", "Delete the selected room", screen.action_delete_room
            )
            yield SystemCommand(
                "Toggle keep open",
                "Keep the selected room when its last artist leaves, or not",
                screen.action_keep_open,
            )
            yield SystemCommand(
                "Room history",
                "Open the selected room's history",
                screen.action_history,
            )
            yield SystemCommand(
                "Filter events", "Type words the events must hold", screen.action_filter
            )

        yield SystemCommand(
            "Pause / resume",
            "Freeze or unfreeze the live view",
            self.action_toggle_pause,
        )
