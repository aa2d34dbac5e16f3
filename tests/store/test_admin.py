"""The admin commands: rooms, room export, room import, room delete."""

import argparse
import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mixer_console import admin_cli
from mixer_console.cli import main
from relay.config import Settings
from store import admin as admin_module
from store.admin import AdminStore
from store.errors import Conflict, NotFound, StoreError
from store.roomfile import RoomFileError, encode_room_attributes, write_room_file
from store.store import DATABASE_NAME, Store, StoreOptions
from tests.mixer_client import MixerClient
from tests.relays import running_relay
from tests.store.stored_rows import command_rows

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CAPTURES = ["capture-basic", "capture-file2", "capture-curve"]
LIMIT = 1 << 30
WAIT = 10.0


def read_room_file(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """Split a room file into its attributes (in file order) and frames."""
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data)
    attributes = json.loads(data[4 : 4 + length])
    frames = []
    offset = 4 + length
    while offset < len(data):
        (payload_size,) = struct.unpack_from("<Q", data, offset)
        frames.append(data[offset : offset + 14 + payload_size])
        offset += 14 + payload_size

    return attributes, frames


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run mixer-console in-process; return its status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def database_rows(data_dir: Path) -> tuple[list[Any], list[Any]]:
    """Every row of the rooms and commands tables, read with a plain connection."""
    path = data_dir / DATABASE_NAME
    if not path.exists():
        return [], []

    with sqlite3.connect(path) as connection:
        rooms = connection.execute("SELECT * FROM rooms ORDER BY id").fetchall()
        commands = command_rows(connection)

    connection.close()
    return rooms, commands


@pytest.fixture
def data_dir(isolated_data_dir: Path) -> Path:
    """The data directory MIXER_DATA_DIR names in this test."""
    return isolated_data_dir


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    """A data directory that already holds the room capture-file2."""
    with AdminStore.open(data_dir) as admin:
        admin.import_room(DATA / "capture-file2.mixer", None, LIMIT)

    return data_dir


@pytest.fixture
def relay_lock(data_dir: Path) -> Iterator[Store]:
    """A relay's store holding the data directory, as a running relay does."""
    store = Store.open(data_dir, StoreOptions())
    try:
        yield store
    finally:
        store.close(timeout=5)


@pytest.mark.parametrize("capture", CAPTURES)
def test_room_export_after_import_is_byte_identical(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, capture: str
) -> None:
    """A room imported from an original relay's file exports to the same bytes."""
    original = DATA / f"{capture}.mixer"
    exported = tmp_path / "exported.mixer"

    imported = run_cli("room", "import", str(original), capsys=capsys)
    result = run_cli("room", "export", capture, str(exported), capsys=capsys)

    assert imported[0] == 0, imported[2]
    assert result[0] == 0, result[2]
    assert exported.read_bytes() == original.read_bytes()


@pytest.mark.parametrize("capture", CAPTURES)
async def test_room_import_replays_to_joiner_on_real_relay(
    capsys: pytest.CaptureFixture[str], data_dir: Path, capture: str
) -> None:
    """A relay started on the data directory lists the imported room with the
    file's attributes, in order, and replays exactly the file's frames."""
    original = DATA / f"{capture}.mixer"
    attributes, frames = read_room_file(original)
    status, _, errors = run_cli("room", "import", str(original), capsys=capsys)
    assert status == 0, errors
    settings = Settings(
        host="127.0.0.1", port=0, room_update_interval=0.01, data_dir=data_dir
    )
    with anyio.fail_after(WAIT):
        async with running_relay(settings) as server:
            assert server.port is not None
            client = await MixerClient.connect(server.port)
            try:
                listed = await client.list_rooms()
                history = await client.join_room(
                    capture,
                    attributes["blender_version"],
                    attributes["mixer_version"],
                )
            finally:
                await client.aclose()

    assert list(listed) == [capture]
    assert list(listed[capture].items()) == list(attributes.items())
    assert [bytes(frame.wire) for frame in history] == frames


def test_room_import_truncated_file_changes_nothing(
    capsys: pytest.CaptureFixture[str], seeded: Path, tmp_path: Path
) -> None:
    """A room file cut in its last frame is refused with status 5, naming the
    truncation, and the database keeps exactly its rows."""
    before = database_rows(seeded)
    cut = tmp_path / "cut.mixer"
    cut.write_bytes((DATA / "capture-basic.mixer").read_bytes()[:-100])

    status, output, errors = run_cli("room", "import", str(cut), capsys=capsys)

    assert status == admin_cli.EXIT_ROOM_FILE == 5
    assert "truncated" in errors
    assert str(cut) in errors
    assert output == ""
    assert database_rows(seeded) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("control-type", "type 20 is a control message"),
        ("count", "command_count 99 but"),
        ("json", "not valid JSON"),
        ("garbage", "not a room file"),
    ],
)
def test_room_import_corrupt_file_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    seeded: Path,
    tmp_path: Path,
    damage: str,
    message: str,
) -> None:
    """A corrupt room file is refused with status 5 and a message saying what is
    wrong, and nothing is imported."""
    attributes, frames = read_room_file(DATA / "capture-basic.mixer")
    if damage == "control-type":
        frames[10] = frames[10][:12] + struct.pack("<H", 20) + frames[10][14:]
        data = encode_room_attributes(attributes) + b"".join(frames)
    elif damage == "count":
        attributes["command_count"] = 99
        data = encode_room_attributes(attributes) + b"".join(frames)
    elif damage == "json":
        data = struct.pack("<I", 7) + b'{"keep_' + b"".join(frames)
    else:
        data = struct.pack("<I", 1 << 30) + b"\x00" * 64
    corrupt = tmp_path / "corrupt.mixer"
    corrupt.write_bytes(data)
    before = database_rows(seeded)

    status, _, errors = run_cli("room", "import", str(corrupt), capsys=capsys)

    assert status == 5
    assert message in errors
    assert "Traceback" not in errors
    assert database_rows(seeded) == before


def test_room_import_file_changed_after_scan_rolls_back(
    monkeypatch: pytest.MonkeyPatch, seeded: Path, tmp_path: Path
) -> None:
    """A file truncated between the validation and the insert fails midway, and
    the transaction leaves no room row and no command behind."""
    path = tmp_path / "changing.mixer"
    path.write_bytes((DATA / "capture-basic.mixer").read_bytes())
    scan = admin_module.scan_room_file

    def scan_then_truncate(target: Path, max_frame_bytes: int) -> Any:
        summary = scan(target, max_frame_bytes)
        with target.open("r+b") as handle:
            handle.truncate(target.stat().st_size - 5000)

        return summary

    monkeypatch.setattr(admin_module, "scan_room_file", scan_then_truncate)
    before = database_rows(seeded)

    with AdminStore.open(seeded) as admin:
        with pytest.raises(RoomFileError, match="truncated"):
            admin.import_room(path, None, LIMIT)

    assert database_rows(seeded) == before


def test_room_import_database_full_rolls_back(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seeded: Path,
) -> None:
    """An import that fills the database cap midway fails with status 4 and
    leaves the database unchanged."""
    before = database_rows(seeded)
    size = (seeded / DATABASE_NAME).stat().st_size
    monkeypatch.setenv("MIXER_STORE_MAX_BYTES", str(size + 40_000))
    path = str(DATA / "capture-basic.mixer")

    status, _, errors = run_cli("room", "import", path, capsys=capsys)

    assert status == admin_cli.EXIT_STORE == 4
    assert "full" in errors
    assert database_rows(seeded) == before


def test_room_import_name_conflict_changes_nothing(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """Importing over an existing room's name fails with status 6, naming the
    room, and leaves the existing room as it was."""
    before = database_rows(seeded)
    path = str(DATA / "capture-file2.mixer")

    status, _, errors = run_cli("room", "import", path, capsys=capsys)

    assert status == admin_cli.EXIT_ROOM == 6
    assert "'capture-file2' already exists" in errors
    assert database_rows(seeded) == before


def test_room_import_name_option_and_increasing_seqs(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """--name imports the same file under another name, with commands numbered
    after every stored one."""
    path = str(DATA / "capture-file2.mixer")
    _, first = database_rows(seeded)

    status, output, _ = run_cli("room", "import", path, "--name", "copy", capsys=capsys)

    rooms, commands = database_rows(seeded)
    assert status == 0
    assert "imported room 'copy'" in output
    assert [room[1] for room in rooms] == ["capture-file2", "copy"]
    added = commands[len(first) :]
    assert commands[: len(first)] == first
    assert [row[4] for row in added] == [row[4] for row in first]
    assert min(row[0] for row in added) > max(row[0] for row in first)
    assert {row[1] for row in added} == {rooms[1][0]}


def test_room_import_empty_name_is_usage_error(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """An empty --name is refused with status 2 and nothing is imported."""
    before = database_rows(seeded)
    path = str(DATA / "capture-basic.mixer")

    status, _, errors = run_cli("room", "import", path, "--name", "", capsys=capsys)

    assert status == 2
    assert "must not be empty" in errors
    assert database_rows(seeded) == before


def test_room_import_keeps_attributes_and_makes_joinable(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    """An imported room keeps the file's flags, versions and custom attributes in
    order, and is joinable even if the file said otherwise."""
    _, frames = read_room_file(DATA / "capture-curve.mixer")
    attributes = {
        "zeta": [1, {"b": None}],
        "alpha": "é",
        "keep_open": False,
        "blender_version": "2.93.0",
        "mixer_version": "0.9.1",
        "ignore_version_check": False,
        "generic_protocol": False,
        "joinable": False,
    }
    path = tmp_path / "odd room.v2.mixer"
    write_room_file(path, attributes, frames[:5])

    status, output, _ = run_cli("room", "import", str(path), capsys=capsys)

    with AdminStore.open(data_dir) as admin:
        room = admin.find_room("odd room.v2")
    assert status == 0
    assert "keep_open is false" in output
    assert list(room.attributes().items()) == [
        ("zeta", [1, {"b": None}]),
        ("alpha", "é"),
        ("keep_open", False),
        ("blender_version", "2.93.0"),
        ("mixer_version", "0.9.1"),
        ("ignore_version_check", False),
        ("generic_protocol", False),
        ("command_count", 5),
        ("byte_size", sum(len(frame) for frame in frames[:5])),
        ("joinable", True),
    ]


def test_room_import_missing_file(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    """A room file that does not exist is reported with status 5."""
    path = tmp_path / "absent.mixer"

    status, _, errors = run_cli("room", "import", str(path), capsys=capsys)

    assert status == 5
    assert "cannot open room file" in errors
    assert database_rows(data_dir)[0] == []


def test_room_delete_removes_room_and_history(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """Deleting a room removes its row and every one of its commands."""
    path = str(DATA / "capture-basic.mixer")
    assert run_cli("room", "import", path, capsys=capsys)[0] == 0

    status, output, _ = run_cli("room", "delete", "capture-file2", capsys=capsys)

    rooms, commands = database_rows(seeded)
    assert status == 0
    assert "deleted room 'capture-file2': 27 commands" in output
    assert [room[1] for room in rooms] == ["capture-basic"]
    assert {row[1] for row in commands} == {rooms[0][0]}
    assert len(commands) == 23


def test_room_delete_missing_room(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """Deleting a room that does not exist fails with status 6, changing nothing."""
    before = database_rows(seeded)

    status, _, errors = run_cli("room", "delete", "nope", capsys=capsys)

    assert status == 6
    assert "no room named 'nope'" in errors
    assert database_rows(seeded) == before


def test_room_export_missing_room_writes_nothing(
    capsys: pytest.CaptureFixture[str], seeded: Path, tmp_path: Path
) -> None:
    """Exporting a room that does not exist fails with status 6 and no file."""
    target = tmp_path / "out.mixer"

    status, _, errors = run_cli("room", "export", "nope", str(target), capsys=capsys)

    assert status == 6
    assert "no room named 'nope'" in errors
    assert not target.exists()


def test_room_export_unwritable_target(
    capsys: pytest.CaptureFixture[str], seeded: Path, tmp_path: Path
) -> None:
    """Exporting into a folder that does not exist fails with status 5."""
    target = tmp_path / "absent" / "out.mixer"

    status, _, errors = run_cli(
        "room", "export", "capture-file2", str(target), capsys=capsys
    )

    assert status == 5
    assert "cannot write room file" in errors


@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_room_export_onto_the_database_is_refused(
    capsys: pytest.CaptureFixture[str], seeded: Path, suffix: str
) -> None:
    """Exporting onto rooms.sqlite (or its journal) must be refused: the atomic
    rename would put a room file in place of the database and lose every room."""
    before = database_rows(seeded)
    target = seeded / (DATABASE_NAME + suffix)

    status, _, errors = run_cli(
        "room", "export", "capture-file2", str(target), capsys=capsys
    )

    assert status == 5
    assert "own database" in errors
    assert database_rows(seeded) == before


@pytest.mark.parametrize(
    "name, says",
    [
        ("relay.lock", "the lock that keeps a second relay off"),
        ("raft.journal", "own Raft file"),
        ("raft.snapshot.tmp", "own Raft file"),
        ("bulk/0123abcd", "a large command's bytes"),
        # Replaced, a running console logged on into the unlinked file; left, the
        # next console appended its log lines to the room file.
        ("console.log", "the console's log"),
        ("console-attached.log", "the console's log"),
    ],
)
def test_room_export_onto_the_folders_other_files_is_refused(
    capsys: pytest.CaptureFixture[str], seeded: Path, name: str, says: str
) -> None:
    """The lock and a cluster node's Raft files are the data folder's too, also
    when reached through a link from elsewhere."""
    link = seeded.parent / f"elsewhere-{name.replace('/', '-')}"
    link.symlink_to(seeded / name)

    for target in (seeded / name, link):
        status, _, errors = run_cli(
            "room", "export", "capture-file2", str(target), capsys=capsys
        )

        assert status == 5
        assert says in errors


@pytest.mark.parametrize(
    "argv",
    [
        ["rooms"],
        ["rooms", "--json"],
        ["room", "export", "capture-file2", "{tmp}/out.mixer"],
        ["room", "import", str(DATA / "capture-basic.mixer")],
        ["room", "delete", "capture-file2"],
    ],
    ids=["rooms", "rooms-json", "export", "import", "delete"],
)
def test_admin_commands_refuse_while_relay_runs(
    capsys: pytest.CaptureFixture[str],
    seeded: Path,
    tmp_path: Path,
    argv: list[str],
) -> None:
    """While a relay's store holds the data directory, every command fails with
    status 4, naming the relay's process, and changes nothing."""
    before = database_rows(seeded)
    argv = [item.replace("{tmp}", str(tmp_path)) for item in argv]
    store = Store.open(seeded, StoreOptions())
    try:
        status, output, errors = run_cli(*argv, capsys=capsys)
    finally:
        assert store.close(timeout=5)

    assert status == 4
    assert output == ""
    assert f"in use by a running relay (pid {os.getpid()})" in errors
    assert str(seeded) in errors
    assert database_rows(seeded) == before
    assert not (tmp_path / "out.mixer").exists()


def test_admin_store_open_while_relay_runs(relay_lock: Store, data_dir: Path) -> None:
    """AdminStore.open raises StoreLocked (a StoreError) while a relay holds the
    directory, and the relay's lock is kept."""
    with pytest.raises(StoreError, match="running relay"):
        AdminStore.open(data_dir)

    with pytest.raises(StoreError, match="running relay"):
        Store.open(data_dir, StoreOptions())


def test_admin_store_lock_blocks_relay_start(data_dir: Path) -> None:
    """A relay cannot open the store while an admin command holds it, and can
    once the command is done."""
    with AdminStore.open(data_dir), pytest.raises(StoreError, match="in use"):
        Store.open(data_dir, StoreOptions())

    store = Store.open(data_dir, StoreOptions())
    assert store.close(timeout=5)


def test_admin_store_errors_are_typed(seeded: Path, tmp_path: Path) -> None:
    """The API raises NotFound for a missing room and Conflict for a taken name."""
    with AdminStore.open(seeded) as admin:
        with pytest.raises(NotFound):
            admin.export_room("nope", tmp_path / "out.mixer")
        with pytest.raises(NotFound):
            admin.delete_room("nope")
        with pytest.raises(Conflict):
            admin.import_room(DATA / "capture-file2.mixer", None, LIMIT)


def test_rooms_json_from_real_process(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """`python -m mixer_console rooms --json` prints every room's counts, flags,
    versions and custom attributes as a JSON array."""
    path = str(DATA / "capture-basic.mixer")
    assert run_cli("room", "import", path, "--name", "b", capsys=capsys)[0] == 0

    process = subprocess.run(
        [sys.executable, "-m", "mixer_console", "rooms", "--json"],
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(seeded)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )

    assert process.returncode == 0, process.stderr
    rooms = json.loads(process.stdout)
    assert [
        {key: value for key, value in room.items() if key != "created_at"}
        for room in rooms
    ] == [
        {
            "name": "capture-file2",
            "command_count": 27,
            "byte_size": 122050,
            "keep_open": True,
            "joinable": True,
            "blender_version": "3.4.1",
            "mixer_version": "1.0.0",
            "ignore_version_check": True,
            "generic_protocol": True,
            "custom": {"vrtist_protocol": False},
        },
        {
            "name": "b",
            "command_count": 23,
            "byte_size": 115764,
            "keep_open": True,
            "joinable": True,
            "blender_version": "3.4.1",
            "mixer_version": "1.0.0",
            "ignore_version_check": True,
            "generic_protocol": True,
            "custom": {"vrtist_protocol": False},
        },
    ]
    assert all(isinstance(room["created_at"], float) for room in rooms)


def test_rooms_table_lists_each_room(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    """`mixer-console rooms` prints a header and one aligned line per room, with
    control characters in names escaped."""
    path = str(DATA / "capture-basic.mixer")
    assert run_cli("room", "import", path, "--name", "a\nb", capsys=capsys)[0] == 0

    status, output, _ = run_cli("rooms", capsys=capsys)

    lines = output.splitlines()
    assert status == 0
    assert lines[0].split() == [
        *("ROOM", "COMMANDS", "SIZE", "KEEP", "OPEN", "JOINABLE", "BLENDER", "MIXER")
    ]
    assert lines[1].split() == [
        *("capture-file2", "27", "122.0", "kB", "yes", "yes", "3.4.1", "1.0.0")
    ]
    assert lines[2].split()[:2] == ["'a\\nb'", "23"]
    assert len(lines) == 3
    end = lines[0].index("COMMANDS") + len("COMMANDS")
    assert lines[1][:end].endswith(" 27")


def test_rooms_empty_store(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """With no rooms, the table says so and the JSON is an empty array."""
    assert (
        run_cli("rooms", capsys=capsys)[1] == f"no rooms in {data_dir}/rooms.sqlite\n"
    )
    assert json.loads(run_cli("rooms", "--json", capsys=capsys)[1]) == []


def test_admin_not_our_database(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    """A data directory whose database is not ours is refused with status 4 and
    left untouched."""
    data_dir.mkdir(parents=True)
    (data_dir / DATABASE_NAME).write_bytes(b"not a database" * 100)

    status, _, errors = run_cli("rooms", capsys=capsys)

    assert status == 4
    assert "not a readable SQLite database" in errors
    assert (data_dir / DATABASE_NAME).read_bytes() == b"not a database" * 100


def test_admin_bad_config_is_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad MIXER_* variable fails every admin command with status 2."""
    monkeypatch.setenv("MIXER_MAX_FRAME_BYTES", "lots")

    status, _, errors = run_cli("rooms", capsys=capsys)

    assert status == 2
    assert "MIXER_MAX_FRAME_BYTES='lots'" in errors


def test_admin_relay_options_are_refused(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    """--host, --port and --no-ui with an admin command are a usage error."""
    with pytest.raises(SystemExit) as exited:
        main(["--port", "1", "rooms"])

    assert exited.value.code == 2
    assert "apply to running the relay" in capsys.readouterr().err


def test_admin_run_writes_to_given_streams(seeded: Path) -> None:
    """admin_cli.run takes its environment and output streams as arguments."""
    parser = admin_cli_parser()
    out, err = io.StringIO(), io.StringIO()

    status = admin_cli.run(
        parser.parse_args(["rooms", "--json"]),
        env={"MIXER_DATA_DIR": str(seeded)},
        out=out,
        err=err,
    )

    assert status == 0
    assert [room["name"] for room in json.loads(out.getvalue())] == ["capture-file2"]
    assert err.getvalue() == ""


def admin_cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    admin_cli.add_commands(parser)
    return parser
