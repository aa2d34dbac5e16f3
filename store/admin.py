"""One-off administration of a data directory: list, export, import, delete rooms.

:class:`AdminStore` takes the data directory's lock, the one a running relay
holds, so it refuses to start while a relay runs and a relay refuses to start
while it works. It has its own connection and writes directly, without the
relay's journal: each change is one SQLite transaction, all or nothing.

Room files are read and written with :mod:`store.roomfile`. An exported file
holds the attributes in the order LIST_ROOMS reports them (custom attributes
first, then :data:`ROOM_ATTRIBUTE_ORDER`), so a room imported from a file saved
by the original relay exports back to the very same bytes.
"""

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import sqlite_utils

from store.access import LeaseRecord, delete_lease, load_leases
from store.errors import Conflict, NotFound, StoreError
from store.operators import AuditRecord, save_audit
from store.own_files import own_file_problem
from store.repository import (
    ROOM_ATTRIBUTE_ORDER,
    CommandRow,
    RoomRecord,
    delete_room,
    history_statistics,
    insert_commands,
    iter_commands,
    load_rooms,
    next_ids,
    room_attributes,
    save_room,
)
from store.roomfile import (
    FRAME_HEADER,
    RoomFileError,
    RoomFileSummary,
    iter_room_file_frames,
    scan_room_file,
    write_room_file,
)
from store.schema import open_database
from store.store import DATABASE_NAME, lock_directory

# Commands are inserted in batches of about this many bytes, so that a huge
# room file never sits in memory whole.
IMPORT_BATCH_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RoomInfo:
    """A stored room and the size of its history."""

    record: RoomRecord
    command_count: int
    byte_size: int

    @property
    def name(self) -> str:
        return self.record.name

    def attributes(self) -> dict[str, Any]:
        """The room's attributes as LIST_ROOMS reports them and room files hold
        them: custom ones first, then :data:`ROOM_ATTRIBUTE_ORDER`."""
        return room_attributes(self.record, self.command_count, self.byte_size)


class AdminStore:
    """The rooms of a data directory, held exclusively for admin commands.

    Use :meth:`open`, as a context manager::

        with AdminStore.open(data_dir) as admin:
            rooms = admin.list_rooms()
    """

    def __init__(
        self, data_dir: Path, lock: IO[bytes], db: sqlite_utils.Database
    ) -> None:
        self.data_dir = data_dir
        self._lock = lock
        self._db = db

    @classmethod
    def open(
        cls, data_dir: Path, cache_bytes: int = 32 * 1024 * 1024, max_bytes: int = 0
    ) -> "AdminStore":
        """Lock the data directory and open (or create) its database.

        Args:
            data_dir: the relay's data directory (created if missing).
            cache_bytes: SQLite's page cache for the connection.
            max_bytes: the relay's cap on the database file (0: none); an import
                that would pass it fails and changes nothing.

        Raises:
            StoreLocked: a running relay (or another admin command) holds it.
            NotOurDatabase, NewerSchema: the file cannot be used; it is untouched.
            StoreError: the directory cannot be created or opened.
        """
        lock = lock_directory(data_dir, holder="an admin command")

        try:
            db = open_database(data_dir / DATABASE_NAME, cache_bytes)
        except OSError as exc:
            lock.close()
            raise StoreError(f"cannot open {data_dir / DATABASE_NAME}: {exc}") from exc
        except BaseException:
            lock.close()
            raise

        if max_bytes:
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
            db.execute(f"PRAGMA max_page_count = {max(max_bytes // page_size, 1)}")

        return cls(data_dir, lock, db)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.data_dir / DATABASE_NAME

    def close(self) -> None:
        """Close the connection and release the data directory."""
        try:
            self._db.conn.close()
        finally:
            self._lock.close()

    def __enter__(self) -> "AdminStore":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def list_rooms(self) -> list[RoomInfo]:
        """Return every stored room with its history's size, oldest first."""
        with self._sqlite_errors("cannot read the rooms"):
            return self._list_rooms()

    def find_room(self, name: str) -> RoomInfo:
        """Return the room called ``name``.

        Raises:
            NotFound: there is no such room.
        """
        for room in self.list_rooms():
            if room.name == name:
                return room

        raise NotFound(f"no room named {name!r} in {self.path}")

    def export_room(self, name: str, path: Path) -> RoomInfo:
        """Write a room, attributes and history, to a room file.

        The file is replaced atomically, and only once complete.

        Raises:
            NotFound: there is no such room; no file is written.
            RoomFileError: the file cannot be written, or is one of the data
                folder's own (the database, the lock, Raft files).
        """
        problem = own_file_problem(path, self.data_dir)
        if problem is not None:
            raise RoomFileError(problem)

        with self._sqlite_errors(f"cannot export room {name!r}"):
            with self._transaction("BEGIN"):
                room = self.find_room(name)
                frames = (
                    command.wire
                    for command in iter_commands(
                        self._db, room.record.id, 0, _max_seq(self._db)
                    )
                )
                write_room_file(path, room.attributes(), frames)

        return room

    def import_room(
        self, path: Path, name: str | None, max_frame_bytes: int
    ) -> RoomInfo:
        """Create a room from a room file, with its whole history.

        The whole file is validated first; the room and its commands are then
        written in one transaction, so that any failure leaves the database as it
        was. The room keeps the file's keep_open, versions, flags and custom
        attributes, and is joinable.

        Args:
            path: the room file.
            name: the new room's name; the file's name without its extension
                when None.
            max_frame_bytes: the largest payload accepted in one frame.

        Raises:
            ValueError: the name is empty.
            RoomFileError: the file is not a valid room file.
            Conflict: a room of that name exists already.
            StoreError: the database cannot be written (full, say).
        """
        room_name = path.stem if name is None else name
        if not room_name:
            raise ValueError("the room name must not be empty")

        self._check_free(room_name)
        summary = scan_room_file(path, max_frame_bytes)
        with self._sqlite_errors(f"cannot import room {room_name!r}"):
            with self._transaction("BEGIN IMMEDIATE"):
                self._check_free(room_name)
                room = self._insert_room(room_name, path, summary, max_frame_bytes)

        return room

    def delete_room(self, name: str) -> RoomInfo:
        """Delete a room and its whole history; return what was deleted.

        Raises:
            NotFound: there is no such room.
        """
        with self._sqlite_errors(f"cannot delete room {name!r}"):
            with self._transaction("BEGIN IMMEDIATE"):
                room = self.find_room(name)
                delete_room(self._db, room.record.id)

        return room

    def list_leases(self, now: float) -> list[LeaseRecord]:
        """Return the leases still valid at ``now``, oldest first."""
        with self._sqlite_errors("cannot read the leases"):
            return load_leases(self._db, now)

    def revoke_lease(self, address: str, operator: str, now: float) -> LeaseRecord:
        """Remove an address's lease and record who did it in the audit log, in
        one transaction.

        Raises:
            NotFound: the address holds no valid lease.
        """
        with self._sqlite_errors(f"cannot revoke the lease of {address}"):
            with self._transaction("BEGIN IMMEDIATE"):
                lease = next(
                    (
                        lease
                        for lease in load_leases(self._db, now)
                        if lease.address == address
                    ),
                    None,
                )
                if lease is None:
                    raise NotFound(f"no lease for address {address} in {self.path}")

                delete_lease(self._db, address)
                save_audit(
                    self._db,
                    AuditRecord(
                        now,
                        operator,
                        "lease.revoke",
                        address,
                        f"lease of {lease.login}",
                    ),
                )

        return lease

    def _list_rooms(self) -> list[RoomInfo]:
        statistics = history_statistics(self._db)
        return [
            RoomInfo(record, *statistics.get(record.id, (0, 0)))
            for record in load_rooms(self._db)
        ]

    def _check_free(self, name: str) -> None:
        with self._sqlite_errors("cannot read the rooms"):
            existing = [room for room in load_rooms(self._db) if room.name == name]

        if existing:
            raise Conflict(
                f"a room named {name!r} already exists in {self.path}; delete it "
                "first or choose another name with --name"
            )

    def _insert_room(
        self,
        name: str,
        path: Path,
        summary: RoomFileSummary,
        max_frame_bytes: int,
    ) -> RoomInfo:
        attributes = summary.attributes
        room_id, seq = next_ids(self._db)
        record = RoomRecord(
            id=room_id,
            name=name,
            blender_version=attributes.get("blender_version", ""),
            mixer_version=attributes.get("mixer_version", ""),
            ignore_version_check=attributes.get("ignore_version_check", False),
            generic_protocol=attributes.get("generic_protocol", False),
            keep_open=attributes.get("keep_open", False),
            joinable=True,
            custom={
                key: value
                for key, value in attributes.items()
                if key not in ROOM_ATTRIBUTE_ORDER
            },
            created_at=time.time(),
        )
        save_room(self._db, record)
        batch: list[CommandRow] = []
        batch_bytes = 0
        command_count = 0
        byte_size = 0
        # The file is validated again as it streams: one changed since the scan
        # raises here, and the transaction is rolled back.
        for frame in iter_room_file_frames(path, max_frame_bytes):
            kind = FRAME_HEADER.unpack_from(frame)[2]
            batch.append((seq, room_id, kind, len(frame), frame, None, None))
            seq += 1
            batch_bytes += len(frame)
            command_count += 1
            byte_size += len(frame)
            if batch_bytes >= IMPORT_BATCH_BYTES:
                insert_commands(self._db, batch)
                batch = []
                batch_bytes = 0

        insert_commands(self._db, batch)
        return RoomInfo(record, command_count, byte_size)

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        """Run the block in one transaction: committed if it ends normally,
        rolled back on any exception."""
        self._db.execute(begin)
        try:
            yield
        except BaseException:
            # SQLite may have rolled back already (after a full disk, say).
            if self._db.conn.in_transaction:
                self._db.execute("ROLLBACK")

            raise

        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _sqlite_errors(self, message: str) -> Iterator[None]:
        """Turn a SQLite failure in the block into a StoreError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            hint = ""
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                hint = " (MIXER_STORE_MAX_BYTES, or the disk, is too small)"
            raise StoreError(f"{message}: {self.path}: {exc}{hint}") from exc


def _max_seq(db: sqlite_utils.Database) -> int:
    return next_ids(db)[1] - 1
