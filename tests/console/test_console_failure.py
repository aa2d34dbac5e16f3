"""A console that fails (an exception in the app, which Textual reports and
ends the app on) must not pass for a clean stop: a supervisor or a script sees
the failure in the exit status, and the hosted relay still stops gracefully."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.console.test_no_terminal import LOCAL_ANY_PORT, ROOT, pseudo_terminal
from tests.console.test_terminal import drain, logged_events

pytestmark = pytest.mark.slow

EXIT_TIMEOUT = 30.0

# A bug in the dashboard, planted in a real console process: the first snapshot
# of the relay that reaches the dashboard raises.
FAILING_CONSOLE = """
import sys

from mixer_console import cli
from mixer_console.console.screens.dashboard import DashboardScreen


def fail(self, message):
    raise RuntimeError("a planted bug in the dashboard")


DashboardScreen.on_snapshot_arrived = fail
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_failing_console_exits_with_status_1_after_stopping_its_relay(
    tmp_path: Path,
) -> None:
    """Textual shows the error on the terminal; the log says console.failed,
    then relay.stopped with everything written; the exit status is 1 (it was 0,
    as after a clean quit)."""
    data_dir = tmp_path / "data"
    written = bytearray()
    with pseudo_terminal() as (master, slave):
        process = subprocess.Popen(
            [sys.executable, "-c", FAILING_CONSOLE, *LOCAL_ANY_PORT],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_DATA_DIR": str(data_dir),
                "MIXER_HTTP_PORT": "0",
                "MIXER_LOG_FORMAT": "json",
            },
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        reader = threading.Thread(target=drain, args=(master, written), daemon=True)
        reader.start()
        try:
            status = process.wait(timeout=EXIT_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=EXIT_TIMEOUT)

        reader.join(timeout=EXIT_TIMEOUT)

    events = {
        event["event"]: event for event in logged_events(data_dir / "console.log")
    }

    assert status == 1, written.decode(errors="replace")[-2000:]
    assert "a planted bug in the dashboard" in written.decode(errors="replace")
    assert events["console.failed"]["return_code"] == 1
    assert events["relay.stopped"]["store_flushed"] is True
