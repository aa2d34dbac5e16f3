"""Database files the relay must refuse, untouched, and a data directory in use."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from store.schema import (
    APPLICATION_ID,
    CHECKPOINT_BYTES,
    PAGE_SIZE,
    SCHEMA_VERSION,
    open_database,
    schema_version,
)
from store.store import DATABASE_NAME, LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 15.0
EXIT_STORE = 4
RELAY_COMMAND = [
    sys.executable,
    "-m",
    "mixer_console",
    "--no-ui",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
]


def run_relay(
    data_dir: Path, command: list[str] = RELAY_COMMAND
) -> subprocess.CompletedProcess[str]:
    """Run the headless relay (or ``command``) on ``data_dir`` until it exits
    (bounded)."""
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "MIXER_DATA_DIR": str(data_dir), "MIXER_LOG_FORMAT": "json"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def start_relay(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a relay that keeps running, its event log going to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            RELAY_COMMAND,
            cwd=ROOT,
            env={**os.environ, "MIXER_DATA_DIR": str(data_dir)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )


def first_event(process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    """Wait (bounded) for the relay's first event line and return it."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        lines = log.read_bytes().split(b"\n")
        if len(lines) > 1:
            event = json.loads(lines[0])
            assert isinstance(event, dict)
            return event

        assert process.poll() is None, "the relay ended without logging"
        time.sleep(0.02)

    raise TimeoutError("the relay logged nothing")


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[[Path], tuple[int, dict[str, object]]]]:
    """Starts relays that keep running; gives each one's pid and first event.
    Every one still running at the end is stopped, by its pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(data_dir: Path) -> tuple[int, dict[str, object]]:
        log = tmp_path / f"relay-{len(started)}.out"
        process = start_relay(data_dir, log)
        started.append(process)
        return process.pid, first_event(process, log)

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)

        process.wait(timeout=TIMEOUT)


def write_random(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def write_text(path: Path) -> None:
    path.write_text("rooms:\n  - name: not a database\n" * 200)


def write_fake_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))


def write_foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices (total) VALUES (12.5)")
        db.commit()


def write_foreign_with_rooms_table(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE rooms (name TEXT)")
        db.commit()


def write_other_application_id(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA application_id = 1234")
        db.commit()


def write_newer(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("PRAGMA user_version = 99")
        db.commit()


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (write_random, "not a readable SQLite database"),
        (write_text, "not a readable SQLite database"),
        (write_fake_header, "not a readable SQLite database"),
        (write_foreign, "another program"),
        (write_foreign_with_rooms_table, "another program"),
        (write_other_application_id, "another program"),
        (write_newer, "schema version 99"),
    ],
)
def test_schema_refuses_unusable_file_untouched(
    tmp_path: Path, write: Callable[[Path], None], words: str
) -> None:
    """A file at data_dir/rooms.sqlite that is not ours, or is from a newer
    version, stops the relay with status 4 and a message naming the file; the
    file is byte-for-byte unchanged and no journal file is left beside it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / DATABASE_NAME
    write(path)
    original = path.read_bytes()

    result = run_relay(data_dir)

    assert result.returncode == EXIT_STORE
    assert str(path) in result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert "relay.started" not in result.stdout
    assert path.read_bytes() == original
    assert sorted(p.name for p in data_dir.iterdir()) == [LOCK_NAME, DATABASE_NAME]


def test_schema_newer_message_says_what_to_do(tmp_path: Path) -> None:
    """The refusal of a newer file names both versions and says to upgrade."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_newer(data_dir / DATABASE_NAME)

    result = run_relay(data_dir)

    assert f"reads up to {SCHEMA_VERSION}" in result.stderr
    assert "upgrade" in result.stderr


def make_database_a_folder(data_dir: Path) -> None:
    (data_dir / DATABASE_NAME).mkdir()


def make_wal_a_folder(data_dir: Path) -> None:
    (data_dir / f"{DATABASE_NAME}-wal").mkdir()


@pytest.mark.parametrize(
    ("arrange", "words"),
    [
        (make_database_a_folder, "unable to open database file"),
        (make_wal_a_folder, "disk I/O error"),
    ],
)
def test_schema_database_that_cannot_be_opened_is_refused(
    tmp_path: Path, arrange: Callable[[Path], None], words: str
) -> None:
    """A database file (or its WAL) that SQLite cannot open stops the relay with
    status 4 and a message naming the file and SQLite's reason, without calling
    the file another program's."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    arrange(data_dir)

    result = run_relay(data_dir)

    assert result.returncode == EXIT_STORE
    assert f"{data_dir / DATABASE_NAME} cannot be opened" in result.stderr
    assert words in result.stderr
    assert "another program" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "relay.started" not in result.stdout


def test_schema_data_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    """A data folder that cannot be created (a file stands where one of its
    parents should be) stops the relay with status 4, saying it is the data
    folder that cannot be used."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data_dir = blocker / "data"

    result = run_relay(data_dir)

    assert result.returncode == EXIT_STORE
    assert f"cannot use data directory {data_dir}" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_full_disk_at_creation_is_refused(tmp_path: Path) -> None:
    """A new database on a disk with no room for it (a file size cap of 2 KiB:
    the lock file fits, SQLite's first pages do not) stops the relay with status
    4 and SQLite's reason."""
    data_dir = tmp_path / "data"
    command = [
        sys.executable,
        "-c",
        "import resource, signal, sys;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048));"
        "from mixer_console.cli import main;"
        "sys.exit(main(sys.argv[1:]))",
        *RELAY_COMMAND[3:],
    ]

    result = run_relay(data_dir, command)

    assert result.returncode == EXIT_STORE
    assert f"{data_dir / DATABASE_NAME} cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr
    assert "relay.started" not in result.stdout


def test_schema_fresh_directory_gets_our_identity(
    tmp_path: Path, relays: Callable[[Path], tuple[int, dict[str, object]]]
) -> None:
    """A relay on a new data directory creates a database that carries our
    application id and the current schema version."""
    data_dir = tmp_path / "fresh" / "nested"
    _, first = relays(data_dir)
    with closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]

    assert first["event"] == "relay.started"
    assert application_id == APPLICATION_ID
    assert version == SCHEMA_VERSION


def test_schema_second_relay_on_same_directory_is_refused(
    tmp_path: Path, relays: Callable[[Path], tuple[int, dict[str, object]]]
) -> None:
    """A second relay on a data directory in use exits with status 4, saying the
    directory is in use and by which process; the first relay keeps it."""
    data_dir = tmp_path / "data"
    first_pid, _ = relays(data_dir)
    database_before = (data_dir / DATABASE_NAME).read_bytes()
    lock_before = (data_dir / LOCK_NAME).read_bytes()

    result = run_relay(data_dir)

    assert result.returncode == EXIT_STORE
    assert str(data_dir) in result.stderr
    assert "in use" in result.stderr
    assert f"pid {first_pid}" in result.stderr
    assert "Traceback" not in result.stderr
    assert (data_dir / LOCK_NAME).read_bytes() == lock_before
    assert f"pid {first_pid}" in lock_before.decode()
    assert (data_dir / DATABASE_NAME).read_bytes() == database_before


def write_version_1(path: Path) -> None:
    """A database as the first schema wrote it: rooms and commands, no sender,
    no time, no audit or bans."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(
            "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "blender_version TEXT, mixer_version TEXT, ignore_version_check "
            "INTEGER, generic_protocol INTEGER, keep_open INTEGER, joinable "
            "INTEGER, custom TEXT NOT NULL, created_at FLOAT)"
        )
        db.execute("CREATE UNIQUE INDEX idx_rooms_name ON rooms (name)")
        db.execute(
            "CREATE TABLE commands (seq INTEGER PRIMARY KEY, room_id INTEGER NOT "
            "NULL REFERENCES rooms(id), kind INTEGER NOT NULL, size INTEGER NOT "
            "NULL, wire BLOB NOT NULL)"
        )
        db.execute(
            "INSERT INTO rooms VALUES (1, 'old', '3.4', '1.0', 0, 1, 1, 1, '{}', 0)"
        )
        db.execute("INSERT INTO commands VALUES (1, 1, 140, 3, x'010203')")
        db.execute("PRAGMA user_version = 1")
        db.commit()


def test_schema_version_1_is_migrated(tmp_path: Path) -> None:
    """A version 1 database gains the sender and time columns (NULL for old
    commands), the audit, bans and leases tables, the cluster's apply state and
    next number, and the runs' count, keeping its rooms and commands."""
    path = tmp_path / DATABASE_NAME
    write_version_1(path)

    db = open_database(path, cache_bytes=1 << 20)
    version = schema_version(db)
    tables = set(db.table_names())
    command = db.execute("SELECT seq, wire, sender, at, count FROM commands").fetchall()
    applied = db.table("raft_applied").columns_dict
    db.conn.close()

    assert version == SCHEMA_VERSION == 6
    assert "next_seq" in applied
    assert {"rooms", "commands", "audit", "bans", "leases", "raft_applied"} <= tables
    assert command == [(1, b"\x01\x02\x03", None, None, 1)]


def test_schema_new_file_gets_large_pages_old_file_keeps_its_own(
    tmp_path: Path,
) -> None:
    """A new database uses PAGE_SIZE pages; one written before keeps its 4 KiB
    pages (SQLite cannot change them in WAL mode), and both checkpoint about
    CHECKPOINT_BYTES of WAL at a time."""
    old_path = tmp_path / "old" / DATABASE_NAME
    old_path.parent.mkdir()
    write_version_1(old_path)

    new = open_database(tmp_path / DATABASE_NAME, cache_bytes=1 << 20)
    old = open_database(old_path, cache_bytes=1 << 20)
    settings = [
        (
            db.execute("PRAGMA page_size").fetchone()[0],
            db.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
        )
        for db in (new, old)
    ]
    new.conn.close()
    old.conn.close()

    assert settings == [
        (PAGE_SIZE, CHECKPOINT_BYTES // PAGE_SIZE),
        (4096, CHECKPOINT_BYTES // 4096),
    ]


OPEN_UNDER_FD_LIMITS = """
import json, os, resource, sys
from pathlib import Path
from store.errors import StoreError
from store.store import Store, StoreOptions

root = Path(sys.argv[1])
Store.open(root / "warm", StoreOptions()).close(timeout=5)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
base = len(os.listdir("/proc/self/fd"))
outcomes = []
for extra in range(24):
    resource.setrlimit(resource.RLIMIT_NOFILE, (base + extra, hard))
    try:
        store = Store.open(root / str(extra), StoreOptions())
    except (StoreError, OSError) as exc:
        outcomes.append([type(exc).__name__, len(os.listdir("/proc/self/fd"))])
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        store.close(timeout=5)
        outcomes.append(["opened", len(os.listdir("/proc/self/fd"))])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(json.dumps({"base": base, "outcomes": outcomes}))
"""


def test_store_open_out_of_file_descriptors_is_a_store_error(tmp_path: Path) -> None:
    """Opening the store with one more file descriptor allowed each time (a
    child process under RLIMIT_NOFILE) fails with the store's own error or the
    lock file's OSError until it succeeds, never with sqlite3's, and leaves no
    descriptor open behind a failure."""
    result = subprocess.run(
        [sys.executable, "-c", OPEN_UNDER_FD_LIMITS, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    kinds = [kind for kind, _ in report["outcomes"]]
    assert "Unopenable" in kinds
    assert kinds[-1] == "opened"
    assert all(count == report["base"] for _, count in report["outcomes"])
