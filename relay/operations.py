"""What an operator does to a running relay: kick, ban, delete, keep_open, and
the history actions (inspect, fork, rewind, export).

Every action that changes something is written to the audit log with the
operator's name. Requests the relay cannot honour raise OperationRefused with a
plain reason.
"""

import math
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from relay.bans import address_subject, login_subject
from relay.broadcaster import Broadcaster
from relay.client import Client
from relay.cluster import ClusterLink
from relay.control import (
    Ban,
    CommandDetail,
    HistoryPage,
    OperationRefused,
)
from relay.history import History, LastCommand
from relay.protocol import HEADER
from relay.room import Room
from relay.room_history import (
    STORE_WAIT_SECONDS,
    Prefix,
    check_unchanged,
    leading_path,
    read_page,
    read_prefix,
    summary_of,
)
from store.own_files import own_file_problem
from store.roomfile import RoomFileError, write_room_file

# The longest ban an operator can set: ten years.
MAX_BAN_SECONDS = 10 * 365 * 24 * 3600.0

# The most commands one history page holds.
MAX_PAGE_COMMANDS = 1000

# The bytes of a command shown in its hex view.
HEAD_BYTES = 256


class Operations:
    """Operator actions on one relay's state.

    Args:
        broadcaster: the relay's state.
    """

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster

    def kick(self, client_id: str, operator: str, ban_seconds: float | None) -> None:
        """Disconnect a client, and ban its login (or else its address) for
        ``ban_seconds`` when given."""
        _check_operator(operator)
        client = self._client(client_id)
        detail = ""
        if ban_seconds is not None:
            if not _is_ban_duration(ban_seconds):
                raise OperationRefused(
                    f"a ban lasts more than 0 and at most {MAX_BAN_SECONDS:.0f} "
                    f"seconds, not {_shown_number(ban_seconds)}"
                )

            subject = (
                login_subject(client.login)
                if client.login is not None
                else address_subject(client.ip)
            )
            ban = Ban(
                subject, time.time() + ban_seconds, f"kicked by {operator}", operator
            )
            self._broadcaster.bans.add(ban)
            detail = f"banned {subject} for {ban_seconds:g} s"

        self._broadcaster.drop(client, f"kicked by operator {operator}")
        self._broadcaster.audit.record(
            operator, "kick", client_id, detail, client_id=client_id
        )

    def lift_ban(self, subject: str, operator: str) -> None:
        """Lift a ban before it expires."""
        _check_operator(operator)
        if self._broadcaster.bans.lift(subject) is None:
            raise OperationRefused(f"no ban in force on {subject!r}")

        self._broadcaster.audit.record(operator, "lift_ban", subject)

    def delete_room(self, name: str, operator: str) -> None:
        """Disconnect a room's members, then delete it with its history."""
        _check_operator(operator)
        broadcaster = self._broadcaster
        room = self._room(name)
        members = list(room.members)
        for member in members:
            broadcaster.drop(member, f"room {name!r} deleted by operator {operator}")

        # Their leaving may have deleted it already (a room without keep_open).
        if broadcaster.rooms.get(name) is room:
            broadcaster.remove_room(room)

        broadcaster.audit.record(
            operator,
            "delete_room",
            name,
            f"{len(members)} member(s) disconnected",
            room=name,
        )

    def set_keep_open(self, name: str, keep_open: bool, operator: str) -> None:
        """Set a room's keep_open; clients see ROOM_UPDATE."""
        _check_operator(operator)
        room = self._room(name)
        self._broadcaster.set_keep_open(room, keep_open)
        self._broadcaster.audit.record(
            operator, "set_keep_open", name, f"keep_open={keep_open}", room=name
        )

    async def history_page(self, name: str, start: int, count: int) -> HistoryPage:
        """Commands ``start`` to ``start + count - 1`` of a room (from 1)."""
        room = self._room(name)
        last_start = len(room.history) + 1
        if not (1 <= start <= last_start and 0 <= count <= MAX_PAGE_COMMANDS):
            raise OperationRefused(
                f"a page of room {name!r} starts at 1 to {last_start} and holds 0 "
                f"to {MAX_PAGE_COMMANDS} commands (asked: start {start}, count "
                f"{count})"
            )

        total, records = await read_page(
            room, self._broadcaster.database, start - 1, count
        )
        summaries = tuple(
            summary_of(start + offset, record) for offset, record in enumerate(records)
        )
        return HistoryPage(name, total, summaries)

    async def command(self, name: str, index: int) -> CommandDetail:
        """Inspect the command at ``index`` (from 1) of a room's history."""
        room = self._room(name)
        self._check_index(room, index, lowest=1)
        database = self._broadcaster.database
        _total, records = await read_page(room, database, index - 1, 1)
        if not records:
            raise OperationRefused(
                f"room {name!r} has no command {index} any more (it has "
                f"{len(room.history)})"
            )

        record = records[0]
        return CommandDetail(
            summary_of(index, record),
            leading_path(record),
            record.head[:HEAD_BYTES],
            command_id=HEADER.unpack_from(record.head)[1],
        )

    async def fork_room(
        self, name: str, index: int, new_name: str, operator: str
    ) -> None:
        """Create ``new_name`` with the first ``index`` commands of ``name``, the
        same versions and attributes; artists can join it at once."""
        _check_operator(operator)
        broadcaster = self._broadcaster
        room = self._joinable_room(name)
        self._check_index(room, index, lowest=0)
        self._check_free(new_name)
        if broadcaster.cluster is not None:
            await self._through_cluster(
                "fork",
                new_name,
                lambda cluster: cluster.propose_fork(
                    name, index, new_name, time.time()
                ),
            )
        else:
            await self._fork_here(room, index, new_name)

        broadcaster.audit.record(
            operator,
            "fork_room",
            name,
            f"first {index} commands into {new_name!r}",
            room=new_name,
        )

    async def _fork_here(self, room: Room, index: int, new_name: str) -> None:
        """Fork on a relay of its own: in memory, or copied inside its store."""
        broadcaster = self._broadcaster
        prefix = await read_prefix(room, broadcaster.store, index)
        check_unchanged(self._joinable_room(room.name), room, prefix, "fork")
        self._check_free(new_name)

        store = broadcaster.store
        store_id = store.allocate_room_id() if store is not None else 0
        fork = Room(
            new_name,
            room.blender_version,
            room.mixer_version,
            room.ignore_version_check,
            room.generic_protocol,
            creator=None,
            history=History(room.history.sequence, store, store_id),
            store_id=store_id,
            created_at=time.time(),
            keep_open=room.keep_open,
            is_joinable=True,
            custom=dict(room.custom),
        )
        if store is None:
            fork.history.copy_entries(list(room.history.recent)[:index])
        elif prefix.last is not None:
            fork.history = await self._copy_in_store(room, fork, prefix)

        # Known limit: a fork without keep_open that nobody joins stays until the
        # relay restarts (rooms are otherwise deleted when their last member leaves).
        broadcaster.add_room(fork)

    async def _copy_in_store(self, room: Room, fork: Room, prefix: Prefix) -> History:
        """Copy the prefix of ``room`` into ``fork``'s new rows, inside the
        database; return the fork's history once the store has written it.

        Raises:
            OperationRefused: the store did not write the copy in time; nothing
                of the fork is kept.
        """
        broadcaster = self._broadcaster
        store = broadcaster.store
        last = prefix.last
        assert store is not None and last is not None
        # Queued after everything before it, so the copy holds exactly the
        # commands measured (none was removed since, see check_unchanged).
        first_seq = store.allocate_seqs(prefix.count)
        store.save_room(fork.record())
        store.copy_history(room.store_id, last.seq, fork.store_id, first_seq)
        broadcaster.reserved_names.add(fork.name)
        try:
            is_written = await store.wait_written(STORE_WAIT_SECONDS)
        finally:
            broadcaster.reserved_names.discard(fork.name)

        if not is_written:
            store.delete_room(fork.store_id)
            raise OperationRefused(
                f"the store did not write the fork within {STORE_WAIT_SECONDS:g} s "
                "(it is behind or degraded); nothing was created"
            )

        return History(
            room.history.sequence,
            store,
            fork.store_id,
            command_count=prefix.count,
            byte_size=prefix.byte_size,
            last=LastCommand(
                first_seq + prefix.count - 1, last.kind, last.merge_key, last.size
            ),
        )

    async def rewind_room(self, name: str, index: int, operator: str) -> None:
        """Cut a room back to its first ``index`` commands and resynchronise its
        members (CLEAR_CONTENT, the history, JOIN_ROOM)."""
        _check_operator(operator)
        broadcaster = self._broadcaster
        room = self._joinable_room(name)
        self._check_index(room, index, lowest=0)
        cut = len(room.history) - index
        if broadcaster.cluster is not None:
            # Every node cuts its own rows and resynchronises its own members.
            await self._through_cluster(
                "rewind", name, lambda cluster: cluster.propose_rewind(name, index)
            )
        else:
            prefix = await read_prefix(room, broadcaster.store, index)
            check_unchanged(self._joinable_room(name), room, prefix, "rewind")
            room.history.cut(prefix.last, prefix.count, prefix.byte_size)
            for member in list(room.members):
                broadcaster.resync(member)

            broadcaster.mark_statistics(room)

        broadcaster.audit.record(
            operator, "rewind_room", name, f"to {index} commands ({cut} cut)", room=name
        )

    async def _through_cluster(
        self, action: str, room: str, propose: Callable[[ClusterLink], None]
    ) -> None:
        """Propose an operator's fork or rewind through the Raft log and wait
        until this node applied it.

        Raises:
            OperationRefused: this node has no quorum, the log skipped the
                change (the rooms changed meanwhile), or it was not committed
                in time (it may still be, later).
        """
        broadcaster = self._broadcaster
        cluster = broadcaster.cluster
        assert cluster is not None
        if not cluster.is_available:
            raise OperationRefused(
                f"this cluster node has no quorum, so the {action} cannot be "
                "committed; use a console on a healthy node"
            )

        key = (action, room)
        if key in broadcaster.awaited_operations:
            raise OperationRefused(
                f"a {action} of room {room!r} is already waiting for the cluster"
            )

        settled = anyio.Event()
        refusals: list[str] = []

        def settle(refusal: str | None) -> None:
            if refusal is not None:
                refusals.append(refusal)

            settled.set()

        broadcaster.awaited_operations[key] = settle
        # A fork's name is kept from artists here until the cluster decides.
        reserved = action == "fork" and room not in broadcaster.reserved_names
        if reserved:
            broadcaster.reserved_names.add(room)

        try:
            propose(cluster)
            with anyio.move_on_after(STORE_WAIT_SECONDS):
                await settled.wait()
        finally:
            broadcaster.awaited_operations.pop(key, None)
            if reserved:
                broadcaster.reserved_names.discard(room)

        if not settled.is_set():
            raise OperationRefused(
                f"the cluster did not commit the {action} within "
                f"{STORE_WAIT_SECONDS:g} s; it may still take effect later"
            )

        if refusals:
            raise OperationRefused(f"the cluster skipped the {action}: {refusals[0]}")

    async def export_room(self, name: str, path: Path, operator: str) -> int:
        """Write a room file of the room as it is now; returns its size."""
        _check_operator(operator)
        if not path.is_absolute():
            raise OperationRefused(
                f"the export path must be absolute (the relay's working directory "
                f"is not the console's): {str(path)!r}"
            )

        if "\0" in str(path):
            raise OperationRefused(
                f"the export path holds a NUL byte, which no file name can: "
                f"{str(path)!r}"
            )

        broadcaster = self._broadcaster
        database = broadcaster.database
        if database is not None:
            problem = await anyio.to_thread.run_sync(
                own_file_problem, path, database.path.parent
            )
            if problem is not None:
                raise OperationRefused(problem)

        room = self._room(name)
        attributes = room.attributes()
        history = room.history
        removals = history.removals
        try:
            if database is None:
                wires = [bytes(entry.wire) for entry in history.recent]
                await anyio.to_thread.run_sync(write_room_file, path, attributes, wires)
            else:
                until_seq = history.last_seq
                if not await database.wait_written(STORE_WAIT_SECONDS):
                    raise OperationRefused(
                        f"the store has not written room {name!r} within "
                        f"{STORE_WAIT_SECONDS:g} s; try again later"
                    )

                await database.export_history(
                    room.store_id, until_seq, attributes, path
                )
        except RoomFileError as exc:
            if history.removals != removals:
                raise OperationRefused(
                    f"room {name!r} changed during the export; try again"
                ) from exc

            raise OperationRefused(str(exc)) from exc

        size = (await anyio.Path(path).stat()).st_size
        broadcaster.audit.record(
            operator, "export_room", name, f"{size} bytes to {path}", room=name
        )
        return size

    def _client(self, client_id: str) -> Client:
        client = self._broadcaster.clients.get(client_id)
        if client is None:
            raise OperationRefused(f"no connected client {client_id!r}")

        return client

    def _room(self, name: str) -> Room:
        room = self._broadcaster.rooms.get(name)
        if room is None:
            raise OperationRefused(f"no room named {name!r}")

        return room

    def _joinable_room(self, name: str) -> Room:
        room = self._room(name)
        if not room.is_joinable:
            raise OperationRefused(
                f"room {name!r} is still being uploaded by its creator"
            )

        return room

    def _check_free(self, name: str) -> None:
        if not name:
            raise OperationRefused("the new room's name must not be empty")

        if name in self._broadcaster.rooms or name in self._broadcaster.reserved_names:
            raise OperationRefused(f"a room named {name!r} exists already")

    def _check_index(self, room: Room, index: int, lowest: int) -> None:
        count = len(room.history)
        if not lowest <= index <= count:
            raise OperationRefused(
                f"index {index} is out of range: room {room.name!r} has {count} "
                f"command(s), so it must be from {lowest} to {count}"
            )


def _check_operator(operator: str) -> None:
    """Refuse an action whose operator is not named: the audit log says who.

    Raises:
        OperationRefused: ``operator`` is empty or blank.
    """
    if not operator.strip():
        raise OperationRefused(
            "an action needs the operator's name, for the audit log; it is blank"
        )


def _is_ban_duration(seconds: float) -> bool:
    """Tell whether ``seconds`` is a ban's duration an operator may set."""
    try:
        return math.isfinite(seconds) and 0 < seconds <= MAX_BAN_SECONDS
    except OverflowError:
        # An int too large for a float (a float annotation admits any int).
        return False


def _shown_number(value: float) -> str:
    """``value`` as a message shows it; an int of more digits than Python turns
    into text (sys.int_info) is described instead."""
    try:
        return repr(value)
    except ValueError:
        return "a number of thousands of digits"
