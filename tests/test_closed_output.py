"""Admin commands whose reader went away (``mixer-console rooms | head -1``, a
closed pipe) end quietly with status 141, as a command killed by SIGPIPE does
in a shell, instead of with a BrokenPipeError traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixer_console.cli import EXIT_OUTPUT_CLOSED

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["rooms"], ["rooms", "--json"], ["leases"]])
def test_output_to_a_closed_pipe_ends_quietly(
    tmp_path: Path, command: list[str]
) -> None:
    reader, writer = os.pipe()
    os.close(reader)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "mixer_console", *command],
            cwd=ROOT,
            env={**os.environ, "MIXER_DATA_DIR": str(tmp_path / "data")},
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(writer)

    assert process.stderr == ""
    assert process.returncode == EXIT_OUTPUT_CLOSED
