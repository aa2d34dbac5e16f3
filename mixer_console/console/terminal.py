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
import os
import signal
import termios
from typing import IO, Any

from textual.app import App
from textual.drivers.linux_driver import LinuxDriver


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


# Known limit: a terminal that stops reading without hanging up (a stalled SSH
# connection) blocks the write here, and a stop signal then waits in Textual's
# stop, with the relay no longer listening and its store not closed, until the
# terminal drains or hangs up.
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
    through SIGHUP instead of killing the driver's threads."""

    def __init__(self, app: App[Any], **options: Any) -> None:
        super().__init__(app, **options)

        # Known limit: this replaces LinuxDriver's private output file (Textual
        # 8), so a Textual release that renames it loses the protection.
        if self._file is not None:
            # A file in every way the writer thread uses one.
            self._file = TerminalOutput(self._file)  # type: ignore[assignment]

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
