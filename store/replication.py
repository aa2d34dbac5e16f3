"""Replicating the store through Raft (pysyncobj): the node's side.

Theory of operation
-------------------
A clustered relay orders every change to rooms, attributes and histories in one
Raft log, and each node applies the log to its own SQLite file. The relay never
forwards a room command when it arrives: it proposes it, and every node
(the sender's included) forwards it to its local room members when the entry
that carries it is applied. Every member on every node therefore sees the
room's commands in log order, and a command that any client received is in a
majority of the nodes' logs: it survives the loss of any one node.

Entries. One entry is a batch of operations (tuples of plain values) proposed
by one node: ``room`` (a room's row, by name), ``delete``, ``command`` (room,
type, wire bytes, the sending client), and ``bulk`` (the same for a command of
:data:`store.bulk.BULK_BYTES` or more, whose bytes travel beside the log and
which the entry names by its digest: see :mod:`store.bulk`). The relay collects
operations for a few milliseconds, or until the batch holds :data:`ENTRY_BYTES`,
so thousands of small commands cost tens of entries. pysyncobj 0.3.17 cannot
send one entry larger than its append batch (``appendEntriesBatchSizeBytes``):
the follower's unpickling fails and replication stalls, so an entry is kept
well below :data:`APPEND_BATCH_BYTES`.

Numbers and retries. Each entry carries its proposer's stream (node and
process start) and a number counting up. A proposal whose outcome is unknown
(the leader died, the callback never came) is proposed again under the same
number; the applier applies each number once and in order, holding entries
that overtook a missing one, so a retry can neither duplicate nor reorder a
client's commands. A proposer that gives up on a number says so in an entry of
its own, which releases what was held behind it.

Applying (:mod:`store.apply`). pysyncobj calls :meth:`Replica.apply_entry` on
its own thread, in log order; the applier writes the entry's rows in one
transaction together with the entry's Raft index, hands out room ids and
sequence numbers itself (so every node writes equal rows), and skips an index it
has already applied (pysyncobj replays its journal after a restart). The events
it returns travel to the event loop through the callback the relay gave.

Snapshots carry the database. When pysyncobj compacts its log it calls our
serializer, which starts a SQLite backup of the whole database, plus
pysyncobj's own state in a side table, into the dump file; the copy runs on a
thread of its own, paced, and the log is truncated once it is whole (see
:mod:`store.snapshots`). A lagging or new node
receives that file and our deserializer copies it over its own database with
SQLite's backup API, so its rows end up equal to the leader's, not only the
replicated object's attributes.

Single node. Without peers none of this runs: the relay keeps its journal path
with no Raft round trip.

Durability. pysyncobj writes its journal through a memory map and does not
sync it: a killed process loses nothing, but a power cut on a majority of the
nodes at once can lose entries that were committed.
"""

import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from pysyncobj import (  # type: ignore[import-untyped]
    SERIALIZER_STATE,
    SyncObj,
    SyncObjConf,
    replicated,
)
from pysyncobj.journal import FileJournal  # type: ignore[import-untyped]

from store.apply import AppliedEntry, EntryApplier
from store.errors import StoreError
from store.snapshots import (
    PACE_BYTES_PER_SECOND,
    SNAPSHOT_STATE_TABLE,
    BackgroundSnapshot,
    install_snapshot,
    verify_snapshot,
)

log = logging.getLogger(__name__)

# Bytes of command data per entry, and pysyncobj's append batch: a batch must
# hold at least one whole entry (see the module docstring).
ENTRY_BYTES = 192 * 1024
APPEND_BATCH_BYTES = 1024 * 1024

JOURNAL_NAME = "raft.journal"
SNAPSHOT_NAME = "raft.snapshot"

# Seconds between two samples of the node's state on pysyncobj's thread.
STATUS_INTERVAL = 0.2

# A gap between two of pysyncobj's ticks that is worth a warning: half the
# shortest election timeout (raftMinTimeout below).
STALL_SECONDS = 0.4

# Seconds to wait for a snapshot being written to stop (its copy checks between
# steps of a few MB, so it stops within milliseconds on a working disk).
ABANDON_SECONDS = 5.0

ROLES = {0: "follower", 1: "candidate", 2: "leader"}


@dataclass(frozen=True)
class ReplicaOptions:
    """Where the node is and how it talks to its peers."""

    self_address: str
    peers: tuple[str, ...]
    secret: str
    data_dir: Path
    database: Path
    """The node's SQLite file, which ``db`` (see :class:`Replica`) writes."""
    compaction_entries: int = 5000
    snapshot_pace: int = PACE_BYTES_PER_SECOND
    """Bytes per second a snapshot's copy may read and write."""


@dataclass(frozen=True)
class PeerStatus:
    """What this node knows about one peer."""

    address: str
    is_connected: bool
    match_index: int | None
    """The peer's last replicated index, known on the leader only."""


@dataclass(frozen=True)
class ClusterStatus:
    """One node's view of the cluster, sampled on pysyncobj's thread."""

    node: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    has_quorum: bool
    peers: tuple[PeerStatus, ...]
    sampled_at: float

    @property
    def is_available(self) -> bool:
        """Tell whether the node can commit: it reaches a majority of the nodes.

        A missing leader alone does not count: during an election proposals
        wait (and are retried), and closing every client at each failover would
        be worse than the delay.
        """
        return self.has_quorum

    def summary(self) -> str:
        """One line for the console and the logs."""
        leader = self.leader or "none"
        quorum = "quorum" if self.has_quorum else "NO QUORUM"
        return (
            f"{self.role} term {self.term}, leader {leader}, {quorum}, "
            f"commit {self.commit_index}, applied {self.applied_index}"
        )


def starting_status(node: str) -> ClusterStatus:
    """The status before pysyncobj has run a tick."""
    return ClusterStatus(node, "starting", None, 0, 0, 0, False, (), time.time())


class Replica(SyncObj):  # type: ignore[misc]
    """This node's member of the Raft cluster, applying entries to ``db``.

    Args:
        options: addresses, secret and files.
        db: a writing connection used only on pysyncobj's thread.
        on_applied: called on pysyncobj's thread with each applied entry.
        on_reset: called on pysyncobj's thread after a snapshot replaced the
            database (the relay must reload its rooms).
        owner_stopping: set to let the thread that created the replica end.
        obtain_bulk: gives the bytes a committed digest names (store.bulk).
    """

    def __init__(
        self,
        options: ReplicaOptions,
        db: sqlite_utils.Database,
        on_applied: Callable[[AppliedEntry], None],
        on_reset: Callable[[], None],
        owner_stopping: threading.Event,
        obtain_bulk: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._db = db
        self.owner_stopping = owner_stopping
        self._applier = EntryApplier(db, obtain_bulk)
        self._on_applied = on_applied
        self._on_reset = on_reset
        self._next_sample = 0.0
        self._last_tick: float | None = None
        self._snapshots = BackgroundSnapshot(
            options.database, options.data_dir / SNAPSHOT_NAME, options.snapshot_pace
        )
        self.status = starting_status(options.self_address)
        conf = SyncObjConf(
            password=options.secret,
            bindAddress=options.self_address,
            journalFile=str(options.data_dir / JOURNAL_NAME),
            fullDumpFile=str(options.data_dir / SNAPSHOT_NAME),
            serializer=self._write_snapshot,
            serializeChecker=self._snapshot_state,
            deserializer=self._read_snapshot,
            appendEntriesBatchSizeBytes=APPEND_BATCH_BYTES,
            logCompactionMinEntries=options.compaction_entries,
            dynamicMembershipChange=True,
            # A node cut off from its peers must notice within seconds: the
            # defaults keep a leader without followers for 30 s. Shorter than
            # this, a loaded machine (2 cores, three nodes) saw needless
            # elections, each one a pause for every room.
            connectionTimeout=3.5,
            leaderFallbackTimeout=4.0,
            raftMinTimeout=0.8,
            raftMaxTimeout=1.6,
            connectionRetryTime=1.0,
            onStateChanged=self._state_changed,
            # Without batching, pysyncobj wakes its thread when an entry is
            # proposed and sends appends at once: as soon as the leader adds an
            # entry, and as soon as it commits one (so followers learn the commit
            # index then, not at the next heartbeat). With batching, a command
            # waited for the next append twice, about 35 ms of the 46 ms median
            # that benchmarks/raft_trace.py measured. The period is now the
            # heartbeat only; our entries are already batches of commands.
            autoTickPeriod=0.005,
            appendEntriesPeriod=0.02,
            appendEntriesUseBatch=False,
        )
        super().__init__(options.self_address, list(options.peers), conf)
        self._receive_message = self._SyncObj__onMessageReceived
        self._SyncObj__transport.setOnMessageReceivedCallback(self._receive)
        self.addOnTickCallback(self._sample_status)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest command written (any thread)."""
        return self._applier.last_seq

    def propose(
        self,
        stream: str,
        number: int,
        operations: list[tuple[Any, ...]],
        on_failure: Callable[[int, int], None],
    ) -> None:
        """Queue an entry for the leader (never blocks).

        Args:
            stream: the proposer's stream (see :mod:`store.apply`).
            number: the entry's number in it; proposing it again is safe.
            operations: the entry's operations.
            on_failure: called on pysyncobj's thread with the number and
                pysyncobj's failure code when the proposal failed (it may
                never be called).
        """

        def report(_result: Any, error: int) -> None:
            if error != 0:
                on_failure(number, error)

        self.apply_entry(stream, number, operations, callback=report)

    @replicated  # type: ignore[untyped-decorator]
    def apply_entry(
        self, stream: str, number: int, operations: list[tuple[Any, ...]]
    ) -> None:
        """Apply one committed entry (pysyncobj's thread, in log order)."""
        # pysyncobj counts an entry as applied once this returns, so the entry
        # being applied is the one after the last applied.
        raft_index = self.raftLastApplied + 1
        applied = self._applier.apply(raft_index, stream, number, operations)
        self._on_applied(applied)

    # Known limit: once a copy is done, pysyncobj rewrites the entries that came
    # during it into its journal on its own thread (0.6-0.85 s after a 501 MB
    # copy in cluster_bench), and it keeps its whole log in memory until then.
    def _write_snapshot(self, file_name: str, raft_state: Any) -> None:
        """pysyncobj's serializer: start a snapshot of the whole database plus
        pysyncobj's state, written in the background (store.snapshots)."""
        self._snapshots.begin(file_name, raft_state, self._applier.applied_index)

    def _snapshot_state(self) -> int:
        """pysyncobj's serialize checker (store.snapshots), letting pysyncobj send
        its last whole snapshot to lagging peers while the next one is copied."""
        state = self._snapshots.state()
        if state == SERIALIZER_STATE.SERIALIZING:
            # pysyncobj 0.3.17 sends no snapshot while the process id it keeps
            # for a forked serializer is set, and it sets one for ours too: a
            # lagging peer waited for every copy to end, so with copies back to
            # back under steady traffic it never caught up. The snapshot file is
            # only ever replaced whole (renamed), so sending it meanwhile is safe.
            # Known limit: a transfer begun before a copy is installed goes on
            # with the older file, and the peer then needs one more transfer.
            self._SyncObj__serializer._Serializer__pid = 0

        return state

    def abandon_snapshot(self, timeout: float) -> None:
        """Drop a snapshot being written, waiting at most ``timeout``."""
        self._snapshots.abandon(timeout)

    # Known limit: installing a snapshot copies the whole database on
    # pysyncobj's thread, so a node catching up from a large one does not take
    # part in the cluster until the copy is done.
    def _read_snapshot(self, file_name: str) -> Any:
        """pysyncobj's deserializer: copy the snapshot's database over ours when it
        is newer, and give pysyncobj back its state."""
        verify_snapshot(Path(file_name))
        # pysyncobj resets its log to a received snapshot even when our rows are
        # newer: a copy of ours begun before may be older than it, and must not
        # replace it once whole.
        self._snapshots.abandon(ABANDON_SECONDS)
        source = sqlite3.connect(file_name)
        try:
            (state,) = source.execute(
                f"SELECT state FROM {SNAPSHOT_STATE_TABLE}"
            ).fetchone()
            row = source.execute(
                "SELECT raft_index FROM raft_applied WHERE id = 1"
            ).fetchone()
            snapshot_index = int(row[0]) if row else 0
            if snapshot_index > self._applier.applied_index:
                install_snapshot(Path(file_name), source, self._db.conn)
                self._db.execute(f"DROP TABLE IF EXISTS {SNAPSHOT_STATE_TABLE}")
                self._applier.reload()
                log.info(
                    "raft.snapshot_installed", extra={"applied_index": snapshot_index}
                )
                self._on_reset()
        finally:
            source.close()

        # The file comes from a peer that knows the secret (pysyncobj encrypts and
        # authenticates every message with it).
        return pickle.loads(state)

    # pysyncobj 0.3.17 (pinned) sets a follower's next index to the one in each
    # successful reply. With appends sent as soon as entries are added, a reply
    # to an earlier append arrives after later ones went out, and moved the
    # index back: the leader sent those entries again, and the follower dropped
    # the rest of its log to take them (logged as "truncating already-applied
    # log entries", then reset storms). A follower that lost entries still says
    # so with a reset, which moves the index back as before.
    def _receive(self, node: Any, message: Any) -> None:
        """pysyncobj's message handler, keeping next indexes from going back on
        an acknowledgement (pysyncobj's thread)."""
        next_index = self._SyncObj__raftNextIndex
        before = next_index.get(node)
        self._receive_message(node, message)
        if (
            before is not None
            and isinstance(message, dict)
            and message.get("type") == "next_node_idx"
            and message.get("success")
            and not message.get("reset")
            and next_index.get(node, before) < before
        ):
            next_index[node] = before

    def _report_stall(self, now: float) -> None:
        """Log a tick that came long after the previous one: the node heard
        nothing and sent nothing meanwhile, and its peers may elect a new leader."""
        previous, self._last_tick = self._last_tick, now
        if previous is not None and now - previous > STALL_SECONDS:
            log.warning(
                "raft.thread_stalled", extra={"seconds": round(now - previous, 3)}
            )

    def _state_changed(self, old: int, new: int) -> None:
        log.info(
            "raft.role_changed",
            extra={
                "from": ROLES.get(old, str(old)),
                "to": ROLES.get(new, str(new)),
                "term": self.raftCurrentTerm,
            },
        )

    def _sample_status(self) -> None:
        now = time.monotonic()
        self._report_stall(now)
        if now < self._next_sample:
            return

        self._next_sample = now + STATUS_INTERVAL
        raw = self.getStatus()
        leader = raw["leader"]
        peers = tuple(
            PeerStatus(
                node.id,
                self.isNodeConnected(node),
                raw.get("match_idx_server_" + node.id),
            )
            for node in sorted(self.otherNodes, key=lambda node: node.id)
        )
        status = ClusterStatus(
            node=self.selfNode.id,
            role=ROLES.get(raw["state"], str(raw["state"])),
            leader=leader.id if leader is not None else None,
            term=raw["raft_term"],
            commit_index=raw["commit_idx"],
            applied_index=raw["last_applied"],
            has_quorum=raw["has_quorum"],
            peers=peers,
            sampled_at=time.time(),
        )
        previous, self.status = self.status, status
        if status.leader != previous.leader:
            log.info(
                "raft.leader_changed",
                extra={"leader": status.leader, "term": status.term},
            )

        if status.is_available != previous.is_available:
            log.info(
                "raft.quorum_regained" if status.is_available else "raft.quorum_lost",
                extra={"cluster": status.summary()},
            )


class ReplicaStartFailed(StoreError):
    """Raised when this node's Raft member cannot start (its port is taken, or
    pysyncobj did not come up in time)."""


def start_replica(
    options: ReplicaOptions,
    db: sqlite_utils.Database,
    on_applied: Callable[[AppliedEntry], None],
    on_reset: Callable[[], None],
    timeout: float,
    obtain_bulk: Callable[[bytes], bytes] | None = None,
) -> Replica:
    """Create this node's replica without waiting on pysyncobj for ever.

    pysyncobj's constructor waits, with no timeout, for its thread to bind the
    Raft port, so it runs on a helper thread that is given ``timeout``. That
    thread then stays alive until :func:`stop_replica`: pysyncobj's tick thread
    ends as soon as the thread that created the object ends.

    Raises:
        ReplicaStartFailed: the Raft journal cannot be read, it did not start
            within ``timeout``, or its thread ended at once (the port could not
            be bound).
    """
    journal = options.data_dir / JOURNAL_NAME
    try:
        clamp_commit_index(journal)
    except Exception as exc:
        # pysyncobj reads the file without any check of its own: a folder, an
        # empty file or a torn journal raise whatever its parsing meets first.
        raise ReplicaStartFailed(
            f"the Raft journal {journal} cannot be read "
            f"({type(exc).__name__}: {exc}); this node cannot start until it is "
            "repaired or restored"
        ) from exc

    created: list[Replica] = []
    failures: list[BaseException] = []
    is_created = threading.Event()
    stopping = threading.Event()

    def create_and_hold() -> None:
        try:
            created.append(
                Replica(options, db, on_applied, on_reset, stopping, obtain_bulk)
            )
        except Exception as exc:
            failures.append(exc)
        finally:
            is_created.set()

        stopping.wait()

    threading.Thread(target=create_and_hold, name="raft-owner", daemon=True).start()
    is_created.wait(timeout)
    if failures:
        raise ReplicaStartFailed(
            f"Raft on {options.self_address} failed to start: {failures[0]}"
        ) from failures[0]

    if not created:
        stopping.set()
        raise ReplicaStartFailed(
            f"Raft on {options.self_address} did not start within {timeout:g} s"
        )

    replica = created[0]
    time.sleep(0.2)  # pysyncobj's thread gives up at once when binding fails
    if not replica.tick_thread_alive():
        stopping.set()
        raise ReplicaStartFailed(
            f"Raft could not listen on {options.self_address} (address in use?)"
        )

    return replica


def clamp_commit_index(journal_path: Path) -> None:
    """Bring a commit index saved past the journal's end back to its last entry.

    pysyncobj saves the commit index beside its journal once a second and the
    journal's entries through a memory map: after a crash of the machine the
    saved index can name entries the journal never got, and the node then
    waits for ever for entries it will never apply. The installed 0.3.17 only
    clamps it when a snapshot exists; this clamps it in every case before the
    node starts (https://github.com/bakwc/PySyncObj/pull/197).
    """
    if not journal_path.exists():
        return

    journal = FileJournal(str(journal_path))
    try:
        if len(journal) == 0:
            return

        last_index = journal[len(journal) - 1][1]
        saved = journal.getRaftCommitIndex()
        if saved > last_index:
            log.warning(
                "raft.commit_index_clamped",
                extra={"saved": saved, "journal_end": last_index},
            )
            journal.setRaftCommitIndex(last_index)
            journal.onOneSecondTimer()  # writes the journal's meta file now
    finally:
        journal._destroy()


def stop_replica(replica: Replica, timeout: float) -> bool:
    """Stop pysyncobj's thread, waiting at most ``timeout``; False if it lingers."""
    replica.destroy()
    replica.abandon_snapshot(timeout)
    replica.owner_stopping.set()
    deadline = time.monotonic() + timeout
    while replica.tick_thread_alive() and time.monotonic() < deadline:
        time.sleep(0.05)

    return not replica.tick_thread_alive()
