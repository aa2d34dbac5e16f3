"""The console, started on a real pseudo-terminal, whose log file is a named
pipe: refused at once with exit status 4 and a line naming the file (it used to
wait for ever, with nothing on the screen, in the open of the pipe)."""

import os
import subprocess
import sys
from pathlib import Path

from relay.config import CONSOLE_LOG_NAME

ROOT = Path(__file__).resolve().parents[2]
EXIT_TIMEOUT = 20.0


def test_console_log_that_is_a_named_pipe_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log = data_dir / CONSOLE_LOG_NAME
    os.mkfifo(log)
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "mixer_console", "--host", "127.0.0.1"],
            cwd=ROOT,
            env={
                **os.environ,
                "MIXER_DATA_DIR": str(data_dir),
                "MIXER_PORT": "0",
                "MIXER_HTTP_PORT": "0",
            },
            stdin=slave,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        try:
            status = process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=EXIT_TIMEOUT)
            raise AssertionError("the console waited on its log's named pipe") from None

        os.set_blocking(master, False)
        screen = os.read(master, 65536).decode(errors="replace")
    finally:
        os.close(master)
        os.close(slave)

    assert status == 4
    assert str(log) in screen
    assert "named pipe" in screen
    assert "Traceback" not in screen
