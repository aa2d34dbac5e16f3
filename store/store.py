"""The store as the relay uses it: one database file in a data directory, written
through the journal, read through a connection of its own."""

import contextlib
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import sqlite_utils

from store.access import LeaseRecord, load_leases
from store.checkpointer import Checkpointer
from store.errors import StoreLocked, Unopenable
from store.journal import (
    CopyHistory,
    DeleteBan,
    DeleteLease,
    DeleteRoom,
    Journal,
    RemoveCommand,
    SaveAudit,
    SaveBan,
    SaveLease,
    SaveRoom,
    TruncateHistory,
)
from store.operators import AuditRecord, BanRecord, load_audit, load_bans
from store.repository import (
    Blob,
    CommandRecord,
    HistorySummary,
    RoomRecord,
    StoredCommand,
    iter_commands,
    load_rooms,
    next_ids,
    prefix_size,
    read_page,
    summarize_history,
)
from store.roomfile import write_room_file
from store.schema import database_error, open_database

log = logging.getLogger(__name__)

DATABASE_NAME = "rooms.sqlite"
LOCK_NAME = "relay.lock"
# The writer appends to the WAL up to this size while the checkpointer copies it
# into the database; past it, the writer waits up to CHECKPOINT_WAIT_SECONDS for
# the copy to catch up, and SQLite then starts the WAL over.
WAL_LIMIT_BYTES = 32 * 1024 * 1024
CHECKPOINT_WAIT_SECONDS = 2.0
# The WAL file is cut down to this many times WAL_LIMIT_BYTES when it starts
# over; in steady use it stays below, so it is not cut and grown again each time.
WAL_FILE_LIMIT_FACTOR = 2


@dataclass(frozen=True)
class StoreOptions:
    """How the store writes and caches; see relay.config for each variable."""

    flush_interval: float = 0.05
    batch_size: int = 2000
    cache_bytes: int = 8 * 1024 * 1024
    max_bytes: int = 0


class Store:
    """Rooms and histories in ``data_dir/rooms.sqlite``, held by one process.

    Use :meth:`open`; the store takes an exclusive lock on the data directory so
    that a second relay, or an admin command, cannot change it underneath.
    """

    def __init__(
        self,
        data_dir: Path,
        lock: IO[bytes],
        journal: Journal,
        reader: sqlite_utils.Database,
    ) -> None:
        self.data_dir = data_dir
        self._lock = lock
        self.journal = journal
        self._submit = journal.submit  # bound once: append() runs per command
        self._reader = reader
        self._read_limiter = anyio.CapacityLimiter(1)
        self._next_room_id = 1
        self._next_seq = 1

    @classmethod
    def open(cls, data_dir: Path, options: StoreOptions) -> "Store":
        """Lock the data directory and open (or create) its database.

        Raises:
            StoreLocked: another process holds the data directory.
            NotOurDatabase, NewerSchema: the file cannot be used; it is untouched.
            Unopenable: the data directory, its lock file or the database cannot
                be made, opened or written (a file in the way, a full disk).
        """
        lock = lock_directory(data_dir)
        path = data_dir / DATABASE_NAME
        writer = reader = None
        try:
            writer = open_database(path, options.cache_bytes)
            reader = open_database(path, options.cache_bytes)
            return cls._start(data_dir, lock, writer, reader, options)
        except BaseException as exc:
            for db in (writer, reader):
                if db is not None:
                    db.conn.close()

            lock.close()
            if isinstance(exc, sqlite3.Error):
                raise database_error(path, exc) from exc

            raise

    @classmethod
    def _start(
        cls,
        data_dir: Path,
        lock: IO[bytes],
        writer: sqlite_utils.Database,
        reader: sqlite_utils.Database,
        options: StoreOptions,
    ) -> "Store":
        # The writer leaves checkpoints to the checkpointer's thread. A WAL that
        # grew while a reader held frames back is cut down when SQLite starts it
        # over: otherwise the file kept its largest size until the relay stopped.
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute(
            f"PRAGMA journal_size_limit = {WAL_FILE_LIMIT_FACTOR * WAL_LIMIT_BYTES}"
        )
        path = data_dir / DATABASE_NAME
        checkpointer = Checkpointer(path, WAL_LIMIT_BYTES, CHECKPOINT_WAIT_SECONDS)
        journal = Journal(
            writer, options.flush_interval, options.batch_size, checkpointer
        )
        store = cls(data_dir, lock, journal, reader)
        store._next_room_id, store._next_seq = next_ids(writer)
        journal.durable_seq = store._next_seq - 1
        if options.max_bytes:
            journal.limit_size(options.max_bytes)

        journal.start()
        return store

    @property
    def pending_bytes(self) -> int:
        """Bytes of commands queued and not yet written."""
        return self.journal.pending_bytes

    @property
    def last_error(self) -> str:
        """Why the store is degraded, while it is ("" otherwise): its writes fail,
        or the copies of its WAL into the database file do (the WAL then grows,
        and what it holds is not synced)."""
        if self.journal.is_degraded:
            return self.journal.last_error

        return self.journal.checkpoint_failure

    @property
    def durable_seq(self) -> int:
        """Every command up to this sequence number is written."""
        return self.journal.durable_seq

    @property
    def path(self) -> Path:
        """The database file."""
        return self.data_dir / DATABASE_NAME

    def load(self) -> list[tuple[RoomRecord, HistorySummary]]:
        """Return every stored room with a summary of its history (at start-up,
        before the journal has written anything)."""
        db = self._reader
        return [(room, summarize_history(db, room.id)) for room in load_rooms(db)]

    def allocate_room_id(self) -> int:
        """Return a new room id (no disk access)."""
        room_id = self._next_room_id
        self._next_room_id += 1
        return room_id

    def allocate_seq(self) -> int:
        """Return the next command sequence number (no disk access)."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def save_room(self, room: RoomRecord) -> None:
        """Queue a room's row to be written."""
        self.journal.submit(SaveRoom(room))

    def delete_room(self, room_id: int) -> None:
        """Queue a room's deletion, with its history."""
        self.journal.submit(DeleteRoom(room_id))

    def append(
        self,
        seq: int,
        room_id: int,
        kind: int,
        wire: Blob,
        sender: str | None = None,
        at: float | None = None,
    ) -> None:
        """Queue a command to be appended to a room's history."""
        self._submit((seq, room_id, kind, len(wire), [wire], sender, at))

    def append_block(
        self,
        seq: int,
        room_id: int,
        kind: int,
        size: int,
        wires: Sequence[Blob],
        sender: str | None,
        at: float | None,
    ) -> None:
        """Queue commands to be appended to a room's history, in one change.

        Args:
            seq: the first one's number; the others follow it consecutively.
            room_id: their room.
            kind: the first one's type.
            size: the sum of their wire lengths.
            wires: their wire bytes, in order (the store's from now on: the
                caller must not change the sequence).
            sender: the id of the client that sent them all.
            at: when the relay received them (one read).
        """
        self._submit((seq, room_id, kind, size, wires, sender, at))

    def remove(self, seq: int) -> None:
        """Queue the removal of a stored command (the merge rule replaced it)."""
        self.journal.submit(RemoveCommand(seq))

    def load_leases(self, now: float) -> list[LeaseRecord]:
        """Return the leases still valid at ``now`` (at start-up)."""
        return load_leases(self._reader, now)

    def save_lease(self, lease: LeaseRecord) -> None:
        """Queue a lease to be written, replacing its address's previous one."""
        self.journal.submit(SaveLease(lease))

    def delete_lease(self, address: str) -> None:
        """Queue the removal of an address's lease."""
        self.journal.submit(DeleteLease(address))

    def truncate_history(self, room_id: int, after_seq: int) -> None:
        """Queue the removal of a room's commands after ``after_seq``."""
        self.journal.submit(TruncateHistory(room_id, after_seq))

    def copy_history(
        self, source_id: int, until_seq: int, target_id: int, first_seq: int
    ) -> None:
        """Queue a copy of a room's commands up to ``until_seq`` into another
        room, numbered from ``first_seq`` (allocated with :meth:`allocate_seqs`)."""
        self.journal.submit(CopyHistory(source_id, until_seq, target_id, first_seq))

    def allocate_seqs(self, count: int) -> int:
        """Return the first of ``count`` consecutive new sequence numbers."""
        first = self._next_seq
        self._next_seq += count
        return first

    def save_audit(self, entry: AuditRecord) -> None:
        """Queue an entry for the audit log."""
        self.journal.submit(SaveAudit(entry))

    def save_ban(self, ban: BanRecord) -> None:
        """Queue a ban to be written (replacing one on the same subject)."""
        self.journal.submit(SaveBan(ban))

    def delete_ban(self, subject: str) -> None:
        """Queue the removal of a ban."""
        self.journal.submit(DeleteBan(subject))

    def load_operator_records(
        self, audit_limit: int
    ) -> tuple[list[AuditRecord], list[BanRecord]]:
        """Return the newest audit entries (oldest first) and every ban, at
        start-up."""
        return load_audit(self._reader, audit_limit), load_bans(self._reader)

    async def wait_written(self, seconds: float) -> bool:
        """Wait until everything queued so far is written; False when ``seconds``
        passed first (the store is degraded or far behind)."""
        return await anyio.to_thread.run_sync(self.journal.flush, seconds)

    async def read_page(
        self, room_id: int, offset: int, limit: int, head_bytes: int
    ) -> tuple[int, list[CommandRecord]]:
        """Read a room's command count and a page of its written commands."""
        return await anyio.to_thread.run_sync(
            read_page,
            self._reader,
            room_id,
            offset,
            limit,
            head_bytes,
            limiter=self._read_limiter,
        )

    async def prefix_size(self, room_id: int, until_seq: int) -> int:
        """Read the wire bytes of a room's written commands up to ``until_seq``."""
        return await anyio.to_thread.run_sync(
            prefix_size, self._reader, room_id, until_seq, limiter=self._read_limiter
        )

    async def export_history(
        self, room_id: int, until_seq: int, attributes: dict[str, Any], path: Path
    ) -> None:
        """Write a room file from a room's written commands up to ``until_seq``.

        Runs on a thread with a connection of its own, so joiners' reads do not
        wait for the export.

        Raises:
            RoomFileError: the file cannot be written.
        """
        await anyio.to_thread.run_sync(
            self._export_sync, room_id, until_seq, attributes, path
        )

    def _export_sync(
        self, room_id: int, until_seq: int, attributes: dict[str, Any], path: Path
    ) -> None:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            db = sqlite_utils.Database(connection)
            db.execute("BEGIN")
            commands = iter_commands(db, room_id, 0, until_seq)
            with contextlib.closing(commands):
                write_room_file(path, attributes, (c.wire for c in commands))
        finally:
            connection.close()

    def limit_size(self, max_bytes: int) -> None:
        """Cap the database file's size (0 lifts the cap); appends that would pass
        it fail, and the store reports itself degraded until there is room."""
        self.journal.limit_size(max_bytes)

    async def read(
        self, room_id: int, after_seq: int, until_seq: int, max_bytes: int
    ) -> list[StoredCommand]:
        """Read a room's next stored commands, about ``max_bytes`` of them."""
        return await anyio.to_thread.run_sync(
            self._read_sync,
            room_id,
            after_seq,
            until_seq,
            max_bytes,
            limiter=self._read_limiter,
        )

    def _read_sync(
        self, room_id: int, after_seq: int, until_seq: int, max_bytes: int
    ) -> list[StoredCommand]:
        batch: list[StoredCommand] = []
        batch_bytes = 0
        commands = iter_commands(self._reader, room_id, after_seq, until_seq)
        with contextlib.closing(commands):
            for command in commands:
                batch.append(command)
                batch_bytes += len(command.wire)
                if batch_bytes >= max_bytes:
                    break

        return batch

    def close(self, timeout: float) -> bool:
        """Write everything queued (waiting at most ``timeout``) and release the
        data directory.

        Returns:
            False when some changes could not be written (logged as an error).
        """
        is_flushed = self.journal.close(timeout)
        if not is_flushed:
            log.error(
                "store.unflushed",
                extra={
                    "backlog": self.journal.backlog,
                    "error": self.journal.last_error,
                },
            )

        self._reader.conn.close()
        self.journal.close_connection()
        self._lock.close()
        return is_flushed


def lock_directory(data_dir: Path, holder: str = "a running relay") -> IO[bytes]:
    """Create the data directory if it is missing and take its exclusive lock,
    held until the returned file is closed (the relay's store and the admin
    commands both take it).

    Args:
        data_dir: the directory to lock.
        holder: who takes it, as others will be told ("a running relay").

    Raises:
        StoreLocked: another process holds it; the message names that process.
        Unopenable: the directory or its lock file cannot be made or written,
            or the lock is not a regular file.
    """
    failure = f"cannot use data directory {data_dir}"
    path = data_dir / LOCK_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise Unopenable(f"{failure}: {exc}") from exc

    if not stat.S_ISREG(os.fstat(fd).st_mode):
        # A named pipe opens all the same and fails at its first seek with no
        # word of which file it is; a link to a device fails as oddly, or has
        # relays of different folders lock one another out.
        os.close(fd)
        raise Unopenable(
            f"{path} is not a regular file; remove it (it is made again at start)"
        )

    lock = open(fd, "a+b")  # held until the store closes
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        current = lock.read().decode(errors="replace").strip() or "another process"
        lock.close()
        raise StoreLocked(f"{data_dir} is in use by {current}; stop it first") from None

    try:
        lock.seek(0)
        lock.truncate()
        lock.write(f"{holder} (pid {os.getpid()})".encode())
        lock.flush()
    except OSError as exc:
        lock.close()
        raise Unopenable(f"{failure}: {exc}") from exc

    return lock
