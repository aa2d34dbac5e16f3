"""Copying the WAL into the database file on a thread of its own.

SQLite writes every committed page twice: once into the WAL, then again into the
database file at a checkpoint, with a sync of each file. Done by the writing
connection (SQLite's auto-checkpoint), the copy and the syncs stop the journal
from writing anything else meanwhile, and the writer's pace is what a room of
fast senders is held to. Here a second connection copies what the journal has
committed, a step of several MB at a time (each copy syncs both files), while
the journal goes on appending to the WAL.

SQLite starts the WAL over only at a write that finds every frame already
copied. A writer that never pauses would grow the WAL for ever, so the journal
asks :meth:`Checkpointer.make_room` before each transaction: past
``wal_limit_bytes`` it waits until the copy has caught up with its commits.
Until a copy has synced them, committed pages are in the WAL but not on disk
(SQLite's synchronous=NORMAL): a killed process loses none of them, a power cut
at most the last STEP_SECONDS.
"""

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
BLOCKED_RETRY_SECONDS = 0.05
# A copy waits for this many committed bytes, or this long after a commit, or
# a writer waiting for room: each copy costs two syncs.
STEP_BYTES = 8 * 1024 * 1024
STEP_SECONDS = 0.2
# A WAL held back past this many times its limit is logged: it grows with
# every command until the reader is done.
HELD_BACK_WARNING_FACTOR = 4


class Checkpointer:
    """Runs SQLite's passive checkpoint on its own connection and thread.

    Args:
        path: the database file, in WAL mode.
        wal_limit_bytes: WAL size past which the writer waits for the copy.
        wait_seconds: longest such wait. While copies fail (a full disk) the
            writer does not wait at all: the WAL grows rather than the store
            stop, and the copy is retried about once a second.
    """

    def __init__(self, path: Path, wal_limit_bytes: int, wait_seconds: float) -> None:
        self._path = path
        self._wal_limit_bytes = wal_limit_bytes
        self._wait_seconds = wait_seconds
        self._condition = threading.Condition()
        self._commits = 0
        self._committed_bytes = 0
        self._attempted_commits = 0
        self._attempted_bytes = 0
        self._is_writer_waiting = False
        self._copied_commits = 0
        self._wal_bytes = 0
        # A reader's snapshot holds frames back; waiting for them would stop the
        # writer for as long as the reader reads.
        self._is_held_back = False
        self._is_stopping = False
        self._is_failing = False
        self._failure = ""
        self._is_held_back_reported = False
        # Made by start(), which hands it the connection it opened.
        self._thread = threading.Thread()

    def start(self) -> None:
        """Open the connection, then start the thread that uses it.

        Opened here rather than on the thread, so that the store's files are all
        open once the store is: a test counting the relay's file descriptors saw
        one more appear after it had started.

        Raises:
            sqlite3.Error: the connection cannot be opened (Store.open turns it
                into one of the store's errors).
        """
        connection = sqlite3.connect(
            self._path, isolation_level=None, timeout=10, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA synchronous = NORMAL")
            page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        except BaseException:
            connection.close()
            raise

        self._thread = threading.Thread(
            target=self._run,
            args=(connection, page_size),
            name="store-checkpoint",
            daemon=True,
        )
        self._thread.start()

    @property
    def failure(self) -> str:
        """Why copies fail, while they do ("" otherwise)."""
        return self._failure

    def committed(self, size: int) -> None:
        """Tell the checkpointer that the writer committed a transaction of about
        ``size`` bytes."""
        with self._condition:
            self._commits += 1
            self._committed_bytes += size
            # The first commit after a copy starts the step's wait; a full step
            # ends it.
            if (
                self._commits == self._attempted_commits + 1
                or self._committed_bytes - self._attempted_bytes >= STEP_BYTES
            ):
                self._condition.notify_all()

    def make_room(self) -> None:
        """Before a transaction: wait while the WAL is past its limit and the copy
        is behind the writer's commits (at most ``wait_seconds``)."""
        # Known limit: the WAL size is the one the last copy saw, so a fast writer
        # passes the limit by what it commits meanwhile (57-61 MiB of WAL file
        # measured at a 32 MiB limit on a shared 2-core machine).
        with self._condition:
            # Waiting cannot help while copies fail (a full disk): the WAL then
            # grows, as it does while a reader holds frames back.
            if (
                self._wal_bytes <= self._wal_limit_bytes
                or self._is_held_back
                or self._is_failing
                or not self._thread.is_alive()
            ):
                return

            self._is_writer_waiting = True
            self._condition.notify_all()
            self._condition.wait_for(
                lambda: (
                    self._copied_commits == self._commits
                    or self._is_held_back
                    or self._is_failing
                    or self._is_stopping
                ),
                timeout=self._wait_seconds,
            )
            self._is_writer_waiting = False

    def close(self) -> None:
        """Stop the thread (after its current checkpoint)."""
        with self._condition:
            self._is_stopping = True
            self._condition.notify_all()

        # Known limit: this waits for a copy in progress without a timeout, so a
        # disk that stops answering stops the relay's shutdown with it.
        if self._thread.is_alive():
            self._thread.join()

    def _run(self, connection: sqlite3.Connection, page_size: int) -> None:
        try:
            # A WAL that a killed relay left behind is copied now: a quiet
            # relay would otherwise keep it, unsynced, until its first commit.
            self._copy(connection, page_size, commits=0)
            while self._copy_next(connection, page_size):
                pass
        finally:
            connection.close()

    def _copy_next(self, connection: sqlite3.Connection, page_size: int) -> bool:
        with self._condition:
            # Held back or failing, the copy is tried again without a new commit:
            # a quiet store would otherwise leave its last commits in the WAL.
            self._condition.wait_for(
                lambda: self._commits > self._attempted_commits or self._is_stopping,
                timeout=self._retry_seconds(),
            )
            self._condition.wait_for(
                lambda: (
                    self._committed_bytes - self._attempted_bytes >= STEP_BYTES
                    or self._is_writer_waiting
                    or self._is_stopping
                ),
                timeout=STEP_SECONDS,
            )
            if self._is_stopping:
                return False

            commits = self._attempted_commits = self._commits
            self._attempted_bytes = self._committed_bytes

        self._copy(connection, page_size, commits)
        return True

    def _copy(
        self, connection: sqlite3.Connection, page_size: int, commits: int
    ) -> None:
        """Copy what the WAL holds; ``commits`` were committed before it began."""
        try:
            busy, wal_frames, copied_frames = connection.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        except sqlite3.Error as exc:
            self._report_failure(exc)
            # A pause that commits do not cut short: each failed copy rewrites
            # pages into the database file before it fails.
            with self._condition:
                self._condition.wait_for(lambda: self._is_stopping, RETRY_SECONDS)

            return

        self._report_success()
        with self._condition:
            if wal_frames >= 0:  # -1 when a reader kept the copy from starting
                self._wal_bytes = wal_frames * page_size

            self._is_held_back = bool(busy) or copied_frames < wal_frames
            if not self._is_held_back:
                self._copied_commits = commits

            self._condition.notify_all()

        self._report_held_back()

    def _retry_seconds(self) -> float | None:
        if self._is_held_back:
            return BLOCKED_RETRY_SECONDS

        return RETRY_SECONDS if self._is_failing else None

    def _report_held_back(self) -> None:
        wal_bytes = self._wal_bytes
        if self._is_held_back and not self._is_held_back_reported:
            if wal_bytes > HELD_BACK_WARNING_FACTOR * self._wal_limit_bytes:
                self._is_held_back_reported = True
                log.warning("store.wal_held_back", extra={"wal_bytes": wal_bytes})
        elif not self._is_held_back and self._is_held_back_reported:
            self._is_held_back_reported = False
            log.info("store.wal_caught_up", extra={"wal_bytes": wal_bytes})

    def _report_failure(self, exc: sqlite3.Error) -> None:
        with self._condition:
            was_failing, self._is_failing = self._is_failing, True
            self._failure = f"copying the WAL into the database file failed: {exc}"
            # Lets a waiting writer go on at once.
            self._condition.notify_all()

        if not was_failing:
            log.error("store.checkpoint_failed", extra={"error": str(exc)})

    def _report_success(self) -> None:
        with self._condition:
            was_failing, self._is_failing = self._is_failing, False
            self._failure = ""

        if was_failing:
            log.warning("store.checkpoint_recovered")
