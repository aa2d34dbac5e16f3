"""The console's terminal going away: an SSH connection dropped, a tmux server
killed, a terminal window closed.

The kernel then answers every read and write on the terminal with EIO and
sends SIGHUP. Textual's Linux driver is not built for that: its writer thread
dies on the first failed write, after which the app's next writes block on the
thread's full queue for ever, so the console never stops its relay or exits.
The driver here keeps writing (into nothing) and turns a terminal that fails
into the SIGHUP the console already stops on, so the stop is the graceful one.
"""

import errno
import logging
import os
import queue
import signal
import termios
from typing import IO, Any

from textual.app import App
from textual.drivers.linux_driver import LinuxDriver

log = logging.getLogger(__name__)

# How long a stopping console waits for a terminal that does not read.
CLOSE_SECONDS = 2.0


def is_terminal_gone(fd: int = 0) -> bool:
    """Whether ``fd`` is a terminal that has hung up: its ioctls then fail with
    EIO (on a file that is no terminal they fail with ENOTTY)."""
    try:
        termios.tcgetattr(fd)
    except termios.error as error:
        return bool(error.args and error.args[0] == errno.EIO)

    return False


def detach_from_gone_terminals() -> bool:
    """Point those of stdin, stdout and stderr whose terminal hung up at
    /dev/null, so that whatever still writes or reads them on the way out
    (Textual's last escape codes, Python's final flush) neither fails nor waits;
    one still alive gets Textual's last codes, which give it back to the shell.

    Returns:
        Whether any of them had hung up.
    """
    gone = [fd for fd in (0, 1, 2) if is_terminal_gone(fd)]
    if not gone:
        return False

    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in gone:
            os.dup2(null, fd)
    finally:
        os.close(null)

    return True


class TerminalOutput:
    """The file Textual's writer thread (its only user) writes to: the terminal
    until it hangs up, then nothing, after raising SIGHUP once in this process.

    Args:
        terminal: the terminal's text stream (stderr, as Textual uses it).
    """

    def __init__(self, terminal: IO[str]) -> None:
        self._terminal = terminal
        self._is_gone = False

    def write(self, text: str) -> None:
        if self._is_gone:
            return

        try:
            self._terminal.write(text)
        except OSError as error:
            if not self._has_hung_up(error):
                raise

    def flush(self) -> None:
        if self._is_gone:
            return

        try:
            self._terminal.flush()
        except OSError as error:
            if not self._has_hung_up(error):
                raise

    def _has_hung_up(self, error: OSError) -> bool:
        """After a failed write: whether the terminal hung up (then output
        stops and SIGHUP is raised); any other failure is Textual's as before."""
        # EIO is a hung-up terminal's answer; the descriptor itself may already
        # point at /dev/null, if the SIGHUP handler ran since the write failed.
        if error.errno != errno.EIO and not is_terminal_gone(self._terminal.fileno()):
            return False

        self._is_gone = True
        report_hangup()
        return True


def report_hangup() -> None:
    """Tell this process its terminal hung up, as the kernel does (it may not:
    the terminal's process group can have changed, or a wrapper ate the
    signal)."""
    os.kill(os.getpid(), signal.SIGHUP)


class HangupSafeDriver(LinuxDriver):
    """Textual's Linux driver, but a terminal that hangs up stops the app
    through SIGHUP instead of killing the driver's threads, and one that stops
    reading (a stalled SSH connection) never holds up the event loop.

    Textual's writes wait for room in its writer thread's queue. A terminal
    that stops reading without hanging up fills it within seconds, and then
    every write waits: the whole event loop, so the hosted relay too, stopped
    serving its artists 17 s after the terminal stalled, and a stop signal
    waited for ever. Here output that finds no room is dropped, and the whole
    screen is drawn again once the terminal reads again.
    """

    def __init__(self, app: App[Any], **options: Any) -> None:
        super().__init__(app, **options)
        self._is_dropping = False

        # Known limit: this replaces LinuxDriver's private output file and uses
        # its writer thread's private queue (Textual 8), so a Textual release
        # that renames them loses the protection.
        if self._file is not None:
            # A file in every way the writer thread uses one.
            self._file = TerminalOutput(self._file)  # type: ignore[assignment]

    def write(self, data: str) -> None:
        """Queue ``data`` for the terminal, or drop it if the terminal has not
        read what is queued already."""
        writer = self._writer_thread
        assert writer is not None, "Driver must be in application mode"
        try:
            writer._queue.put_nowait(data)
        except queue.Full:
            if not self._is_dropping:
                self._is_dropping = True
                log.warning("console.terminal_stalled")

            return

        if self._is_dropping:
            self._is_dropping = False
            log.info("console.terminal_resumed")
            # What was dropped left the terminal's screen out of date.
            self._app.call_later(self._app.refresh, layout=True)

    def close(self) -> None:
        """Stop the writer thread, waiting at most CLOSE_SECONDS for a terminal
        that does not read (the thread is a daemon: it ends with the process)."""
        writer = self._writer_thread
        if writer is None:
            return

        try:
            writer._queue.put(None, timeout=CLOSE_SECONDS)
        except queue.Full:
            log.warning("console.terminal_abandoned")
            return

        writer.join(timeout=CLOSE_SECONDS)

    def resume_application_mode(self) -> None:
        """Take the terminal again after a stop (SIGCONT), unless it is gone."""
        # The kernel sends SIGCONT with the SIGHUP of a hang-up: resuming then
        # would start a second writer and input thread on a dead terminal.
        if not os.isatty(self.fileno):
            return

        super().resume_application_mode()

    def run_input_thread(self) -> None:
        """Read keys until the app stops or the terminal hangs up."""
        try:
            super().run_input_thread()
        except OSError:
            if not is_terminal_gone(self.fileno):
                raise

            report_hangup()
