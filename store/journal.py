"""The journal: changes queued by the relay, written by one background thread.

The relay never waits on the disk. Each change is queued in order; a thread takes
what has accumulated (after the flush interval, or as soon as a batch is full) and
applies it in one transaction, which the checkpointer (store/checkpointer.py)
then copies from the WAL into the database file. When a transaction fails (the
disk is full, the file is locked) the batch stays queued, the store reports
itself degraded, and the thread retries until it succeeds; nothing queued is
dropped. The relay reads :attr:`Journal.durable_seq` to know which commands are
safely on disk. One exception to the order: while the database is full, the
room deletions waiting behind a failing batch are written ahead of it, since
deleting rooms is how an operator makes room; what was queued for those rooms
is then moot and left out.

Appended commands are gathered into runs as a batch is written (store/runs.py),
so a stream of small commands costs SQLite a row per run, not per command.
"""

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from store.access import LeaseRecord, delete_lease, save_lease
from store.checkpointer import Checkpointer
from store.operators import AuditRecord, BanRecord, delete_ban, save_audit, save_ban
from store.repository import (
    RoomRecord,
    copy_history,
    delete_commands,
    delete_room,
    insert_runs,
    save_room,
    truncate_history,
)
from store.runs import CommandBlock, RunBuilder

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
# Appends past this many bytes wait for the next transaction: a transaction
# larger than SQLite's page cache spills pages to the WAL mid-way, and a batch
# of a backlog could otherwise reach hundreds of MB.
TRANSACTION_BYTES = 2 * 1024 * 1024

# Known limit: every stored MB costs this thread and the checkpointer's about
# 2.2-2.6 ms of CPU together, mostly in the kernel (each page written to the WAL,
# copied into the database file and synced twice), so on 2 cores a relay
# streaming 4 KiB commands to one or a few receivers forwards up to a quarter
# fewer of them than without a store (benchmarks/journal_bench.py and
# store_bench.py measure both).


@dataclass(frozen=True, slots=True)
class SaveRoom:
    room: RoomRecord


@dataclass(frozen=True, slots=True)
class DeleteRoom:
    room_id: int


@dataclass(frozen=True, slots=True)
class RemoveCommand:
    seq: int


@dataclass(frozen=True, slots=True)
class TruncateHistory:
    room_id: int
    after_seq: int


@dataclass(frozen=True, slots=True)
class CopyHistory:
    source_id: int
    until_seq: int
    target_id: int
    first_seq: int


@dataclass(frozen=True, slots=True)
class SaveAudit:
    entry: AuditRecord


@dataclass(frozen=True, slots=True)
class SaveBan:
    ban: BanRecord


@dataclass(frozen=True, slots=True)
class DeleteBan:
    subject: str


@dataclass(frozen=True, slots=True)
class SaveLease:
    lease: LeaseRecord


@dataclass(frozen=True, slots=True)
class DeleteLease:
    address: str


# Appended commands travel as bare tuples (see CommandBlock): there is one per
# client read of room commands, so it is kept as cheap as possible.
AppendBlock = CommandBlock
Change = (
    SaveRoom
    | DeleteRoom
    | RemoveCommand
    | TruncateHistory
    | CopyHistory
    | SaveAudit
    | SaveBan
    | DeleteBan
    | SaveLease
    | DeleteLease
    | AppendBlock
)


class Journal:
    """Queues changes and applies them in batches on its own thread.

    Args:
        db: the writing connection (used only by the journal's thread), with
            SQLite's auto-checkpoint off.
        flush_interval: seconds a change may wait before it is written.
        batch_size: changes that trigger a write at once.
        checkpointer: copies what the journal commits into the database file.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        flush_interval: float,
        batch_size: int,
        checkpointer: Checkpointer,
    ) -> None:
        self._db = db
        self._checkpointer = checkpointer
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._changes: deque[Change] = deque()
        self._condition = threading.Condition()
        self._is_stopping = False
        self._flush_requested = False
        # Counters with a single writer each: the relay's thread counts what it
        # queues, the journal's thread what it wrote; neither needs the lock.
        self._queued = 0
        self._queued_bytes = 0
        self._applied = 0
        self._written_bytes = 0
        self._is_idle = False
        self._size_limit: int | None = None
        # A daemon: a relay that dies without closing its store still exits (and
        # loses at most the unwritten changes, as a crash would).
        self._thread = threading.Thread(
            target=self._run, name="store-journal", daemon=True
        )
        self.durable_seq = 0
        self.is_degraded = False
        self.last_error = ""
        # Rooms deleted ahead of their turn (the database was full): their changes
        # still queued are left out. Ids are never handed out twice by a process.
        self._deleted_rooms: set[int] = set()

    def start(self) -> None:
        """Start the writing thread and the checkpointer."""
        self._checkpointer.start()
        self._thread.start()

    def submit(self, change: Change) -> None:
        """Queue one change (never blocks on the disk; takes no lock unless the
        writing thread is asleep or a batch is full)."""
        self._changes.append(change)
        self._queued += 1
        fills_transaction = False
        if type(change) is tuple:
            pending = self._queued_bytes - self._written_bytes
            self._queued_bytes += change[3]
            fills_transaction = pending < TRANSACTION_BYTES <= pending + change[3]

        # The first change starts the flush interval; a full batch ends it.
        if self._is_idle or fills_transaction or len(self._changes) == self._batch_size:
            with self._condition:
                self._condition.notify()

    @property
    def pending_bytes(self) -> int:
        """Bytes of appended commands queued and not yet written."""
        return self._queued_bytes - self._written_bytes

    def limit_size(self, max_bytes: int) -> None:
        """Cap the database file (SQLite's max_page_count, a setting of the writing
        connection); 0 lifts the cap. Applied before the next write attempt, even
        while a batch keeps failing for want of space."""
        with self._condition:
            self._size_limit = max_bytes
            self._condition.notify()

    @property
    def checkpoint_failure(self) -> str:
        """Why copying the WAL into the database file fails, while it does."""
        return self._checkpointer.failure

    @property
    def backlog(self) -> int:
        """Changes queued and not yet written."""
        return self._queued - self._applied

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written.

        Returns:
            False when the timeout passed first (the store is degraded).
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            target = self._queued
            self._flush_requested = True
            self._condition.notify()
            while self._applied < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False

                self._condition.wait(remaining)

        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued (waiting at most ``timeout``), then stop the thread.

        Returns:
            False when some changes could not be written in time.
        """
        is_flushed = self.flush(timeout) if self._thread.is_alive() else False
        with self._condition:
            self._is_stopping = True
            self._condition.notify()

        if self._thread.is_alive():
            self._thread.join(timeout=max(timeout, RETRY_SECONDS * 2))

        self._checkpointer.close()
        return is_flushed

    def close_connection(self) -> None:
        """Close the writing connection, once the thread has stopped."""
        if not self._thread.is_alive():
            self._db.conn.close()

    def _run(self) -> None:
        self._apply_size_limit()
        while self._write_next_batch():
            pass

    def _write_next_batch(self) -> bool:
        # A function of its own so that the batch is released as soon as it is
        # written: held while the thread sleeps, a batch of 1 MiB commands kept
        # tens of MB of the relay's memory.
        batch = self._next_batch()
        return batch is not None and self._write(batch)

    def _next_batch(self) -> list[Change] | None:
        with self._condition:
            while True:
                if self._changes and (
                    self._flush_requested
                    or self._is_stopping
                    or len(self._changes) >= self._batch_size
                    or self.pending_bytes >= TRANSACTION_BYTES
                ):
                    break

                if self._is_stopping:
                    return None

                if self._changes:
                    self._condition.wait(self._flush_interval)
                    break

                # Announce the sleep, then look again: a change queued in between
                # is either seen now or wakes the thread (submit() sees the flag).
                self._is_idle = True
                if not self._changes:
                    self._condition.wait()

                self._is_idle = False

            self._flush_requested = False
            return self._take_batch()

    def _take_batch(self) -> list[Change]:
        batch: list[Change] = []
        size = 0
        changes = self._changes
        while changes and len(batch) < self._batch_size and size < TRANSACTION_BYTES:
            change = changes.popleft()
            batch.append(change)
            if type(change) is tuple:
                size += change[3]

        return self._without_deleted_rooms(batch) if self._deleted_rooms else batch

    def _without_deleted_rooms(self, batch: list[Change]) -> list[Change]:
        """The batch without the changes of rooms deleted ahead of their turn,
        which count as written.

        A room's own deletion is its last change: once it is met here, the
        room is forgotten, so that later batches go without this pass.
        """
        kept: list[Change] = []
        moot: list[Change] = []
        for change in batch:
            is_moot = _room_of(change) in self._deleted_rooms
            (moot if is_moot else kept).append(change)

        self._applied += len(moot)
        self._written_bytes += sum(c[3] for c in moot if type(c) is tuple)
        self._deleted_rooms -= {c.room_id for c in moot if type(c) is DeleteRoom}
        return kept

    def _delete_rooms_first(self, batch: list[Change]) -> list[Change]:
        """Write the room deletions queued in ``batch`` or after it, in a
        transaction of their own; return the batch without what they made moot.

        A room that a queued fork copies from is not deleted early, since the
        copy needs its commands, unless that fork is deleted early too.
        """
        # One C-level copy: the relay's thread may append meanwhile.
        waiting = [*batch, *list(self._changes)]
        copies = [change for change in waiting if type(change) is CopyHistory]
        early = {
            change.room_id for change in waiting if type(change) is DeleteRoom
        } - self._deleted_rooms
        # Sparing a room spares the rooms its own forks copy from: settle it.
        for _ in range(len(early) + 1):
            needed = {
                copy.source_id
                for copy in copies
                if copy.target_id not in early | self._deleted_rooms
            }
            if not early & needed:
                break

            early -= needed

        if not early:
            return batch

        try:
            self._apply([DeleteRoom(room_id) for room_id in sorted(early)])
        except sqlite3.Error:
            return batch  # the batch's next attempt reports why

        self._deleted_rooms |= early
        log.warning("store.rooms_deleted_first", extra={"rooms": sorted(early)})
        return self._without_deleted_rooms(batch)

    def _write(self, batch: list[Change]) -> bool:
        """Apply a batch, retrying until it is written; False when the journal
        stops first (the batch is then queued again, for close() to report)."""
        while True:
            try:
                self._apply_size_limit()
                self._apply(batch)
            except sqlite3.IntegrityError:
                # Retrying cannot help a change the schema refuses: write the
                # others one by one and leave that one out, loudly.
                self._apply_each(batch)
            except sqlite3.Error as exc:
                self._report_failure(exc)
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    batch = self._delete_rooms_first(batch)

                with self._condition:
                    if self._is_stopping:
                        self._changes.extendleft(reversed(batch))
                        return False

                    self._condition.wait(RETRY_SECONDS)

                continue

            self._report_success(batch)
            return True

    def _apply_each(self, batch: list[Change]) -> None:
        for change in batch:
            try:
                self._apply([change])
            except sqlite3.IntegrityError as exc:
                log.error(
                    "store.change_dropped",
                    extra={"change": type(change).__name__, "error": str(exc)},
                )

    def _apply_size_limit(self) -> None:
        with self._condition:
            max_bytes, self._size_limit = self._size_limit, None

        if max_bytes is not None:
            _limit_size(self._db, max_bytes)

    def _apply(self, batch: Sequence[Change]) -> None:
        db = self._db
        runs = RunBuilder()
        size = 0
        self._checkpointer.make_room()
        db.execute("BEGIN IMMEDIATE")
        try:
            for change in batch:
                if type(change) is tuple:
                    runs.add_block(change)
                    size += change[3]
                    continue

                # A command merged away before it was written is not written.
                if type(change) is RemoveCommand and runs.discard(change.seq):
                    continue

                if runs:
                    insert_runs(db, runs.take())

                _apply_one(db, change)

            if runs:
                insert_runs(db, runs.take())

            db.execute("COMMIT")
            self._checkpointer.committed(size)
        except BaseException:
            # SQLite may already have rolled back (a full disk does that).
            if db.conn.in_transaction:
                db.execute("ROLLBACK")

            raise

    def _report_failure(self, exc: sqlite3.Error) -> None:
        self.last_error = str(exc)
        if not self.is_degraded:
            self.is_degraded = True
            log.error(
                "store.degraded",
                extra={"error": str(exc), "backlog": self.backlog},
            )

    def _report_success(self, batch: list[Change]) -> None:
        written_bytes = 0
        last_seq = 0
        for change in batch:
            if type(change) is tuple:
                written_bytes += change[3]
                last_seq = change[0] + len(change[4]) - 1

        with self._condition:
            self._applied += len(batch)
            self._written_bytes += written_bytes
            if last_seq:
                self.durable_seq = last_seq

            self._condition.notify_all()

        if self.is_degraded:
            self.is_degraded = False
            log.warning("store.recovered", extra={"backlog": self.backlog})


def _room_of(change: Change) -> int | None:
    """The room a change writes to, if it writes to one."""
    if type(change) is tuple:
        return change[1]

    if isinstance(change, SaveRoom):
        return change.room.id

    if isinstance(change, DeleteRoom | TruncateHistory):
        return change.room_id

    if isinstance(change, CopyHistory):
        return change.target_id

    return None


def _apply_one(db: sqlite_utils.Database, change: Change) -> None:
    if isinstance(change, SaveRoom):
        save_room(db, change.room)
    elif isinstance(change, DeleteRoom):
        delete_room(db, change.room_id)
    elif isinstance(change, RemoveCommand):
        delete_commands(db, [change.seq])
    elif isinstance(change, TruncateHistory):
        truncate_history(db, change.room_id, change.after_seq)
    elif isinstance(change, CopyHistory):
        copy_history(
            db, change.source_id, change.until_seq, change.target_id, change.first_seq
        )
    elif isinstance(change, SaveAudit):
        save_audit(db, change.entry)
    elif isinstance(change, SaveBan):
        save_ban(db, change.ban)
    elif isinstance(change, DeleteBan):
        delete_ban(db, change.subject)
    elif isinstance(change, SaveLease):
        save_lease(db, change.lease)
    elif isinstance(change, DeleteLease):
        delete_lease(db, change.address)


def _limit_size(db: sqlite_utils.Database, max_bytes: int) -> None:
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    # SQLite's own maximum stands for "no cap".
    pages = max_bytes // page_size if max_bytes else 4294967294
    db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
