"""``room export`` into a folder that does not exist: found by following the
README as a new engineer (readme6): the error named the hidden temporary file
the export writes first, not the missing folder."""

from pathlib import Path

import pytest

from mixer_console.cli import main
from store.admin import AdminStore

ROOT = Path(__file__).resolve().parents[2]
ROOM_FILE = ROOT / "tests" / "data" / "capture-file2.mixer"
LIMIT = 1 << 30


def test_room_export_into_a_missing_folder_names_the_folder(
    isolated_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exporting into a folder that does not exist says which folder is
    missing, not the name of the hidden temporary file the export writes
    first."""
    with AdminStore.open(isolated_data_dir) as admin:
        admin.import_room(ROOM_FILE, None, LIMIT)
    target = tmp_path / "no-such-folder" / "shot.mixer"

    status = main(["room", "export", "capture-file2", str(target)])
    errors = capsys.readouterr().err

    assert status == 5, errors
    assert ".tmp" not in errors
    assert str(target.parent) in errors
