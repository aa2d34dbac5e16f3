"""The relay's side of a Raft cluster: proposing, retrying, and delivering.

The broadcaster hands this link every change it would otherwise write to the
journal (see :mod:`store.replication` for the design). The link batches them
into entries, proposes them without blocking the event loop, retries an entry
under the same number when its outcome is unknown, and gives up on it (telling
the clients whose commands it carried, and the cluster, which then releases the
entries held behind it) after :data:`GIVE_UP_SECONDS`. A command of
:data:`store.bulk.BULK_BYTES` or more is first shared with the peers beside the log
(:mod:`store.bulk`); the entry that names it, and every entry after it, waits
until a majority holds its bytes, so the node's commands still enter the log in
the order they came. Applied entries come back from pysyncobj's thread through
a wake-up that never blocks it (:mod:`relay.thread_wakeup`) and are delivered to
the broadcaster in log order.
"""

import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import sqlite_utils
from anyio.abc import TaskGroup, TaskStatus

from relay.config import Settings
from relay.protocol import Wire
from relay.thread_wakeup import ThreadWakeup
from store.access import LeaseRecord
from store.apply import ABANDON, Applied, AppliedEntry
from store.bulk import BULK_BYTES, BULK_FOLDER, BulkError, BulkPeers, digest_of
from store.operators import AuditRecord, BanRecord
from store.replication import (
    ENTRY_BYTES,
    ClusterStatus,
    Replica,
    ReplicaOptions,
    start_replica,
    starting_status,
    stop_replica,
)
from store.repository import RoomRecord, StoredCommand
from store.schema import open_database
from store.store import Store

log = logging.getLogger(__name__)

# Operations proposed within this window share one entry.
BATCH_SECONDS = 0.002
# An entry not applied this long after its proposal is proposed again, and one
# still not applied after GIVE_UP_SECONDS is abandoned.
RESUBMIT_SECONDS = 2.0
RETRY_DELAY_SECONDS = 0.2
GIVE_UP_SECONDS = 10.0
WATCH_INTERVAL = 0.1
# Seconds between two prunings of the bulk bytes kept for peers.
PRUNE_INTERVAL = 60.0
# How long the quorum must stay lost before clients are told and closed.
QUORUM_GRACE_SECONDS = 1.0


class ClusterReceiver(Protocol):
    """What the link delivers to (the broadcaster)."""

    def apply_committed(self, events: Sequence[Applied]) -> None: ...

    def close_all(self, message: str) -> None: ...

    def close_clients(self, client_ids: set[str], message: str) -> None: ...

    def reload_rooms(self) -> None: ...


@dataclass
class PendingEntry:
    """An entry proposed and not yet seen applied."""

    operations: list[tuple[Any, ...]]
    size: int
    client_ids: set[str]
    first_proposed: float
    last_proposed: float
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Failure:
    number: int
    code: int


@dataclass(frozen=True, slots=True)
class _Reset:
    pass


@dataclass
class _Batch:
    operations: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 0
    client_ids: set[str] = field(default_factory=set)
    sharing: int = 0
    """Its bulk commands whose bytes have not yet reached a majority."""


class ClusterLink:
    """Proposes the relay's changes to Raft and delivers committed ones.

    Args:
        node_id: this node's Raft address, recorded as each operation's origin.
        store: the node's store, read for histories (never written by the relay
            while clustered: the applier writes).
    """

    def __init__(self, node_id: str, store: Store) -> None:
        self.node_id = node_id
        self._replica: Replica | None = None
        # A new stream at every start: numbers then never collide with those
        # of an earlier run of this node still in the log.
        self._stream = f"{node_id}/{uuid.uuid4().hex[:12]}"
        self._numbers = itertools.count(1)
        self._bulk: BulkPeers | None = None
        self._batch = _Batch()
        # Batches waiting, in order, for bulk bytes to reach a majority.
        self._held: deque[_Batch] = deque()
        self._held_bytes = 0
        self._tasks: TaskGroup | None = None
        self._receiver: ClusterReceiver | None = None
        self._batch_ready = anyio.Event()
        self._pending: dict[int, PendingEntry] = {}
        self._abandoning: dict[int, float] = {}
        self._leader: str | None = None
        self._quorum_lost_at: float | None = None
        self._pending_bytes = 0
        # Filled on pysyncobj's thread, drained on the event loop.
        self._inbox: deque[AppliedEntry | _Failure | _Reset] = deque()
        # Made by run(), so that a link never run holds no sockets.
        self._wakeup: ThreadWakeup | None = None
        self.is_available = False
        self.history_store = ClusterHistoryStore(self, store)

    def attach(self, replica: Replica, bulk: BulkPeers | None = None) -> None:
        """Use this node's replica (created after the link, which it calls) and
        its side of the bulk channel."""
        self._replica = replica
        self._bulk = bulk

    @property
    def status(self) -> ClusterStatus:
        """The node's latest sampled Raft state."""
        if self._replica is None:
            return starting_status(self.node_id)

        return self._replica.status

    @property
    def last_seq(self) -> int:
        """The newest command sequence number applied on this node."""
        return self._replica.last_seq if self._replica is not None else 0

    @property
    def pending_bytes(self) -> int:
        """Command bytes proposed and not yet applied."""
        return self._pending_bytes + self._held_bytes + self._batch.size

    # pysyncobj's thread

    def on_applied(self, entry: AppliedEntry) -> None:
        """Receive an applied entry (pysyncobj's thread)."""
        self._inbox.append(entry)
        self._wake()

    def on_reset(self) -> None:
        """Receive word that a snapshot replaced the database (pysyncobj's thread)."""
        self._inbox.append(_Reset())
        self._wake()

    def _on_failure(self, number: int, code: int) -> None:
        self._inbox.append(_Failure(number, code))
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.wake()

    # The event loop

    def propose_room(self, record: RoomRecord) -> None:
        """Propose a room's row (created or changed here)."""
        self._add(
            (
                "room",
                self.node_id,
                record.name,
                record.blender_version,
                record.mixer_version,
                record.ignore_version_check,
                record.generic_protocol,
                record.keep_open,
                record.joinable,
                json.dumps(record.custom),
                record.created_at,
            ),
            0,
            None,
        )

    def propose_delete(self, name: str) -> None:
        """Propose deleting a room and its history."""
        self._add(("delete", self.node_id, name), 0, None)

    def propose_fork(
        self, source: str, count: int, fork: str, created_at: float
    ) -> None:
        """Propose an operator's fork: every node copies the first ``count``
        commands of ``source`` into the new room ``fork`` in its own database."""
        self._add(("fork", self.node_id, source, count, fork, created_at), 0, None)

    def propose_rewind(self, room: str, count: int) -> None:
        """Propose an operator's rewind of ``room`` to its first ``count``
        commands, which every node applies to its own database and members."""
        self._add(("rewind", self.node_id, room, count), 0, None)

    # Known limit: a lease, ban or audit entry proposed while the cluster cannot
    # commit for GIVE_UP_SECONDS is abandoned, and then holds on this node only
    # until it restarts.
    def propose_lease(self, lease: LeaseRecord) -> None:
        """Propose a lease granted here (its times are this node's)."""
        self._add(
            (
                "lease",
                self.node_id,
                lease.address,
                lease.login,
                lease.granted_at,
                lease.expires_at,
                lease.via,
            ),
            0,
            None,
        )

    def propose_revoke(self, address: str) -> None:
        """Propose ending an address's lease (every node closes its connections)."""
        self._add(("unlease", self.node_id, address), 0, None)

    def propose_ban(self, ban: BanRecord) -> None:
        """Propose a ban set here (every node closes the matching connections)."""
        self._add(
            ("ban", self.node_id, ban.subject, ban.until, ban.reason, ban.operator),
            0,
            None,
        )

    def propose_lift(self, subject: str) -> None:
        """Propose lifting the ban on a subject."""
        self._add(("unban", self.node_id, subject), 0, None)

    def propose_audit(self, entry: AuditRecord) -> None:
        """Propose an audit entry recorded here (at this node's time)."""
        self._add(
            (
                "audit",
                self.node_id,
                entry.at,
                entry.operator,
                entry.action,
                entry.target,
                entry.detail,
            ),
            0,
            None,
        )

    def propose_command(self, client_id: str, room: str, kind: int, wire: Wire) -> None:
        """Propose a room command; it is forwarded once committed."""
        size = len(wire)
        # Known limit: smaller commands still travel in the log, where pysyncobj
        # encodes incompressible bytes at about 5 MB/s per hop (4 KiB random
        # commands: 7.5 MB/s across the cluster).
        if size < BULK_BYTES or self._bulk is None:
            command = ("command", self.node_id, client_id, room, kind, bytes(wire))
            self._add(command, size, client_id)
            return

        data = bytes(wire)
        operation = ("bulk", self.node_id, client_id, room, kind, digest_of(data), size)
        batch = self._batch
        batch.operations.append(operation)
        batch.size += size
        batch.client_ids.add(client_id)
        batch.sharing += 1
        self._submit_batch()
        assert self._tasks is not None
        self._tasks.start_soon(self._share, batch, operation, data)

    async def _share(
        self, batch: _Batch, operation: tuple[Any, ...], data: bytes
    ) -> None:
        """Get a bulk command's bytes to a majority, then let its batch go."""
        assert self._bulk is not None
        is_shared = await anyio.to_thread.run_sync(
            self._bulk.share, operation[5], data, abandon_on_cancel=True
        )
        batch.sharing -= 1
        if not is_shared:
            log.warning("bulk.share_failed", extra={"bytes": len(data)})
            self._drop_commands_of(operation[2])
            if self._receiver is not None:
                self._receiver.close_clients(
                    {operation[2]},
                    "the cluster could not take your command's bytes in time; "
                    "reconnect to another node",
                )

        self._release_held()

    def _drop_commands_of(self, client_id: str) -> None:
        """Drop a client's commands not yet proposed: after one of them failed,
        the others must not reach the room without it."""
        for batch in (*self._held, self._batch):
            batch.operations = [
                operation
                for operation in batch.operations
                if not (
                    operation[0] in ("command", "bulk") and operation[2] == client_id
                )
            ]

    def _release_held(self) -> None:
        while self._held and self._held[0].sharing == 0:
            batch = self._held.popleft()
            self._held_bytes -= batch.size
            if batch.operations:
                self._submit(batch.operations, batch.size, batch.client_ids)

    def _add(
        self, operation: tuple[Any, ...], size: int, client_id: str | None
    ) -> None:
        batch = self._batch
        batch.operations.append(operation)
        batch.size += size
        if client_id is not None:
            batch.client_ids.add(client_id)

        if batch.size >= ENTRY_BYTES:
            self._submit_batch()
        elif len(batch.operations) == 1:
            self._batch_ready.set()

    def _submit_batch(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.operations:
            return

        if batch.sharing or self._held:
            self._held.append(batch)
            self._held_bytes += batch.size
            return

        self._submit(batch.operations, batch.size, batch.client_ids)

    def _submit(
        self, operations: list[tuple[Any, ...]], size: int, client_ids: set[str]
    ) -> None:
        number = next(self._numbers)
        now = time.monotonic()
        self._pending[number] = PendingEntry(operations, size, client_ids, now, now)
        self._pending_bytes += size
        self._propose(number, operations)

    def _propose(self, number: int, operations: list[tuple[Any, ...]]) -> None:
        assert self._replica is not None
        self._replica.propose(self._stream, number, operations, self._on_failure)

    async def run(
        self,
        receiver: ClusterReceiver,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver, batch, retry and watch the quorum until cancelled."""
        wakeup = self._wakeup = ThreadWakeup()
        self._receiver = receiver
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._deliver, receiver, wakeup)
                tasks.start_soon(self._flush_batches)
                tasks.start_soon(self._watch, receiver)
                wakeup.wake()  # entries applied before the wake-up existed
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._wakeup = None
            self._tasks = None
            wakeup.close()

    async def _deliver(self, receiver: ClusterReceiver, wakeup: ThreadWakeup) -> None:
        while True:
            await wakeup.wait()
            events: list[Applied] = []
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, AppliedEntry):
                    if item.stream == self._stream:
                        self._acknowledge(item)

                    events.extend(item.events)
                elif isinstance(item, _Failure):
                    self._retry_soon(item)
                else:
                    receiver.apply_committed(events)
                    events = []
                    receiver.reload_rooms()

            receiver.apply_committed(events)
            await anyio.lowlevel.checkpoint()

    def _acknowledge(self, entry: AppliedEntry) -> None:
        if entry.abandoned is not None:
            self._abandoning.pop(entry.abandoned, None)
            return

        self._forget(entry.number)

    def _forget(self, number: int) -> None:
        pending = self._pending.pop(number, None)
        if pending is not None:
            self._pending_bytes -= pending.size

    def _retry_soon(self, failure: _Failure) -> None:
        pending = self._pending.get(failure.number)
        if pending is not None and pending.retry_at is None:
            log.info(
                "raft.proposal_failed",
                extra={"number": failure.number, "code": failure.code},
            )
            pending.retry_at = time.monotonic() + RETRY_DELAY_SECONDS

    async def _flush_batches(self) -> None:
        while True:
            await self._batch_ready.wait()
            self._batch_ready = anyio.Event()
            await anyio.sleep(BATCH_SECONDS)
            self._submit_batch()

    async def _watch(self, receiver: ClusterReceiver) -> None:
        next_prune = time.monotonic() + PRUNE_INTERVAL
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            self._watch_quorum(receiver)
            self._watch_pending(receiver)
            if self._bulk is not None and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL
                await anyio.to_thread.run_sync(self._bulk.store.prune)

    def _watch_quorum(self, receiver: ClusterReceiver) -> None:
        status = self.status
        now = time.monotonic()
        if status.is_available:
            self._quorum_lost_at = None
            if not self.is_available:
                self.is_available = True
                log.info("cluster.available", extra={"cluster": status.summary()})

            return

        # A failover makes the survivors' quorum flicker for a moment while
        # connections are re-made: only a loss that lasts counts.
        if self._quorum_lost_at is None:
            self._quorum_lost_at = now

        if not self.is_available or now - self._quorum_lost_at < QUORUM_GRACE_SECONDS:
            return

        self.is_available = False
        log.warning("cluster.unavailable", extra={"cluster": status.summary()})
        receiver.close_all(
            "this relay node lost contact with its cluster; reconnect to another node"
        )

    def _watch_pending(self, receiver: ClusterReceiver) -> None:
        now = time.monotonic()
        # A new leader never saw what was sent to the old one: propose again
        # everything in flight, oldest first, at once.
        leader = self.status.leader
        is_new_leader = leader is not None and leader != self._leader
        self._leader = leader
        abandoned: set[str] = set()
        for number, pending in list(self._pending.items()):
            if now - pending.first_proposed > GIVE_UP_SECONDS:
                self._forget(number)
                self._abandoning[number] = 0.0
                abandoned |= pending.client_ids
                log.warning(
                    "raft.proposal_abandoned",
                    extra={"number": number, "clients": len(pending.client_ids)},
                )
            elif (
                is_new_leader
                or (pending.retry_at is not None and now >= pending.retry_at)
                or now - pending.last_proposed > RESUBMIT_SECONDS
            ):
                pending.retry_at = None
                pending.last_proposed = now
                self._propose(number, pending.operations)

        # Entries after an abandoned one wait for it on every node until the
        # abandonment is committed, so it is proposed until it is.
        for number, last in list(self._abandoning.items()):
            if is_new_leader or now - last > RESUBMIT_SECONDS:
                self._abandoning[number] = now
                self._propose(ABANDON, [("abandon", number)])

        if abandoned:
            receiver.close_clients(
                abandoned,
                "the cluster could not commit your commands in time; reconnect to "
                "another node",
            )

    def state_line(self) -> str:
        """The cluster's state in one line (role, leader, quorum, lag)."""
        status = self.status
        lag = max(0, status.commit_index - status.applied_index)
        return f"{status.summary()}, lag {lag}, {len(self._pending)} entries in flight"


class ClusterHistoryStore:
    """What a room's history needs from the store while clustered: the applier
    has already written every command it is given, and reads go to the store."""

    def __init__(self, link: ClusterLink, store: Store) -> None:
        self._link = link
        self._store = store

    @property
    def durable_seq(self) -> int:
        """Every command up to this number is in this node's database."""
        return self._link.last_seq

    def allocate_seq(self) -> int:
        """Never called: the applier numbers commands."""
        raise RuntimeError("a clustered history does not number its commands")

    def append(
        self,
        seq: int,
        room_id: int,
        kind: int,
        wire: Wire,
        sender: str | None,
        at: float | None,
    ) -> None:
        """Nothing to do: the applier wrote the command."""

    def remove(self, seq: int) -> None:
        """Nothing to do: the applier applied the merge rule."""

    def truncate_history(self, room_id: int, after_seq: int) -> None:
        """Nothing to do: the applier cut the rows of a committed rewind."""

    async def read(
        self, room_id: int, after_seq: int, until_seq: int, max_bytes: int
    ) -> list[StoredCommand]:
        """Read stored commands from this node's database."""
        return await self._store.read(room_id, after_seq, until_seq, max_bytes)


# Seconds pysyncobj gets to bind its port, and a starting node to catch up with
# the cluster before it serves what it has.
START_SECONDS = 10.0
CATCH_UP_SECONDS = 5.0
STOP_SECONDS = 2.0


@dataclass
class ClusterNode:
    """This node's Raft member, its link, and the connection it writes with."""

    link: ClusterLink
    replica: Replica
    db: sqlite_utils.Database
    bulk: BulkPeers

    def close(self) -> None:
        """Stop Raft (bounded), the bulk channel, and the writing connection."""
        if not stop_replica(self.replica, STOP_SECONDS):
            log.error("raft.stop_timed_out", extra={"seconds": STOP_SECONDS})

        self.bulk.close()
        self.db.conn.close()


def open_cluster(settings: Settings, store: Store) -> ClusterNode:
    """Start this node's Raft member and wait (bounded) until it caught up.

    Raises:
        StoreError: Raft could not start, or the database cannot be opened.
    """
    assert settings.raft_self is not None
    link = ClusterLink(settings.raft_self, store)
    db = open_database(store.path, settings.store_cache_bytes)
    options = ReplicaOptions(
        self_address=settings.raft_self,
        peers=settings.raft_peers,
        secret=settings.raft_secret,
        data_dir=store.data_dir,
        database=store.path,
        compaction_entries=settings.raft_compaction_entries,
        snapshot_pace=settings.raft_snapshot_pace,
    )
    try:
        bulk = BulkPeers(
            settings.raft_self,
            settings.raft_peers,
            settings.raft_secret,
            store.data_dir / BULK_FOLDER,
        )
    except OSError as exc:
        db.conn.close()
        raise BulkError(
            f"cannot listen for bulk bytes next to {settings.raft_self}: {exc}"
        ) from exc

    try:
        replica = start_replica(
            options, db, link.on_applied, link.on_reset, START_SECONDS, bulk.obtain
        )
    except BaseException:
        bulk.close()
        db.conn.close()
        raise

    link.attach(replica, bulk)
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while not replica.isReady() and time.monotonic() < deadline:
        time.sleep(0.05)

    log.info(
        "raft.started",
        extra={
            "node": settings.raft_self,
            "peers": ",".join(settings.raft_peers),
            "caught_up": replica.isReady(),
        },
    )
    return ClusterNode(link, replica, db, bulk)


def cluster_state(link: ClusterLink | None) -> str | None:
    """The cluster's state for the console (None on a single node)."""
    return link.state_line() if link is not None else None
