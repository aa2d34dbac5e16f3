"""The relay's state machine: clients, rooms, and what each message does to them.

Every method here runs to completion without awaiting, so each message is
applied atomically with respect to every other connection. Output goes into
client outboxes; sessions write them out.
"""

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from relay.audit import AUDIT_MEMORY_ENTRIES, AuditLog
from relay.bans import BanList
from relay.client import RESERVED_CLIENT_ATTRIBUTES, Client, drop_kind
from relay.cluster import ClusterLink
from relay.errors import MalformedPayload, RequestRefused
from relay.events import EventLog
from relay.history import (
    CommandStore,
    History,
    HistoryReplay,
    LastCommand,
    merge_key,
)
from relay.leases import LeaseBook, normalize_address
from relay.marks import RoomMarks
from relay.messages import (
    LAST_CONTROL_TYPE,
    MessageType,
    is_stored,
    type_name,
)
from relay.protocol import (
    Frame,
    FrameDecoder,
    PayloadReader,
    Wire,
    decode_text,
    encode_frame,
    encode_json,
    encode_string,
)
from relay.room import RESERVED_ROOM_ATTRIBUTES, Room
from store.apply import (
    Applied,
    AuditAppended,
    BanLifted,
    BanSet,
    CommandCommitted,
    LeaseGranted,
    LeaseRevoked,
    OperationSkipped,
    RoomDeleted,
    RoomForked,
    RoomRewound,
    RoomSaved,
)
from store.repository import HistorySummary, RoomRecord
from store.store import Store

log = logging.getLogger(__name__)

_MISSING = object()

# A client that keeps sending bad requests or errors must not flood the log: the
# first ones are logged, then every thousandth, each cut to a readable length.
LOGGED_PER_CLIENT = 20
LOGGED_TEXT_CHARS = 1024


class Broadcaster:
    """Groups clients into rooms, forwards room commands and keeps histories.

    Args:
        store: where rooms and histories are kept (None: in memory only).
        max_unwritten_bytes: room commands that may wait for the store (or the
            cluster) before room members stop being read.
        cluster: this node's link to its Raft cluster; then every change goes
            through the cluster, and room commands are forwarded on commit.
    """

    def __init__(
        self,
        store: Store | None = None,
        max_unwritten_bytes: int = 256 * 1024**2,
        cluster: ClusterLink | None = None,
    ) -> None:
        self.clients: dict[str, Client] = {}
        self.rooms: dict[str, Room] = {}
        self.cluster = cluster
        # While clustered the applier writes the database and the journal is
        # idle; the store is still where histories and rooms are read from.
        self.store = store if cluster is None else None
        self.database = store
        """Where rooms and histories are read from, clustered or not."""
        self._history_store: CommandStore | None = (
            cluster.history_store if cluster is not None else store
        )
        self.is_stopping = False
        self.drops: Counter[str] = Counter()
        """Connections ended by the relay, by kind of reason, since it started."""
        self.events = EventLog()
        self.bans = BanList(store, cluster)
        self.audit = AuditLog(store, self.events, cluster)
        self.leases: LeaseBook | None = None
        """The leases in force when a login is required (set by the builder),
        kept in step with other nodes' grants and revocations."""
        # Names of rooms an operator is creating (a fork being written).
        self.reserved_names: set[str] = set()
        self.awaited_operations: dict[
            tuple[str, str], Callable[[str | None], None]
        ] = {}
        """Forks and rewinds proposed here, by action and room, each told when
        the cluster applied it (None) or skipped it (why)."""
        self._max_unwritten_bytes = max_unwritten_bytes
        self._sequence = store.allocate_seq if store else itertools.count(1).__next__
        self._rooms_with_new_statistics = RoomMarks()
        self._rooms_with_unwritten = RoomMarks()
        self._handlers: dict[int, Callable[[Client, memoryview], None]] = {
            MessageType.JOIN_ROOM: self._join_room,
            MessageType.LEAVE_ROOM: self._leave_room,
            MessageType.LIST_ROOMS: self._list_rooms,
            MessageType.CONTENT: self._content,
            MessageType.DELETE_ROOM: self._delete_room,
            MessageType.SET_CLIENT_NAME: self._set_client_name,
            MessageType.SEND_ERROR: self._relay_error,
            MessageType.LIST_CLIENTS: self._list_clients,
            MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES: self._set_client_attributes,
            MessageType.SET_ROOM_CUSTOM_ATTRIBUTES: self._set_room_attributes,
            MessageType.SET_ROOM_KEEP_OPEN: self._set_room_keep_open,
            MessageType.CLIENT_ID: self._client_id,
        }

    def connect(self, client: Client) -> None:
        """Register a new connection and announce it to everyone, itself included.

        A client registered under the same address and port is a connection the
        peer already abandoned (the pair is unique among live connections): it
        is disconnected first.
        """
        stale = self.clients.get(client.id)
        if stale is not None:
            stale.drop("replaced by a new connection from the same address")
            self.disconnect(stale, "replaced by a new connection from the same address")

        self.clients[client.id] = client
        log.info("client.connected", extra={"client_id": client.id})
        self.events.record("connect", "connected", client_id=client.id)
        self._send_to_all(
            _json_frame(MessageType.CLIENT_UPDATE, {client.id: client.attributes()})
        )

    def disconnect(self, client: Client, reason: str, *, is_drop: bool = False) -> None:
        """Remove a connection: it leaves its room, then everyone is told.

        Args:
            client: the connection.
            reason: why it ended, for the log and the event log.
            is_drop: the relay ended it (too slow, kicked, ...), not the peer.
        """
        if client.is_gone:
            return

        client.is_gone = True
        del self.clients[client.id]
        if self.is_stopping:
            # The rooms stay as they are in the store: restored after a restart,
            # so that their artists can rejoin them.
            self._forget_membership(client)
        elif client.room is not None:
            self._leave(client, confirm=False)

        log.info(
            "client.disconnected", extra={"client_id": client.id, "reason": reason}
        )
        self.events.record(
            "drop" if is_drop else "disconnect", reason, client_id=client.id
        )
        if not self.is_stopping:
            self._send_to_all(
                encode_frame(MessageType.CLIENT_DISCONNECTED, encode_string(client.id))
            )

    def count_drop(self, reason: str) -> None:
        """Count a connection the relay ended, under its kind of reason."""
        self.drops[drop_kind(reason)] += 1

    def drop_address(self, ip: str, reason: str) -> int:
        """Disconnect every client connected from ``ip``; returns how many."""
        dropped = [
            client
            for client in self.clients.values()
            if normalize_address(client.ip) == normalize_address(ip)
        ]
        for client in dropped:
            client.drop(reason)

        return len(dropped)

    def admission_refusal(self, client: Client) -> str | None:
        """Return why a ban refuses this connection, or None.

        Checked at accept by the session; a login step must call it again once it
        has set ``client.login``, for bans by login identity to apply.
        """
        return self.bans.refusal(client.ip, client.login)

    def drop(self, client: Client, reason: str) -> None:
        """End a connection on the relay's side, now (an operator's kick)."""
        client.drop(reason)
        self.disconnect(client, reason, is_drop=True)

    @property
    def is_store_behind(self) -> bool:
        """Tell whether the store holds more unwritten commands than allowed; the
        sessions of room members then stop reading until it catches up."""
        if self.cluster is not None:
            return self.cluster.pending_bytes > self._max_unwritten_bytes

        store = self.store
        return store is not None and store.pending_bytes > self._max_unwritten_bytes

    def stop(self) -> None:
        """Mark the relay as stopping: disconnections from now on leave rooms as
        they are, for the next start to restore."""
        self.is_stopping = True

    def handle(
        self, client: Client, frame: Frame, received_at: float | None = None
    ) -> None:
        """Apply one message from a client; a bad request is answered with
        SEND_ERROR and the connection stays up.

        Args:
            client: who sent it.
            frame: the message.
            received_at: when it was read (time.time()), kept with stored
                commands; None for now.
        """
        kind = frame.kind
        client.frames_in += 1
        client.bytes_in += frame.size
        if kind > LAST_CONTROL_TYPE:
            self._room_command(client, frame, received_at or time.time())
            return

        handler = self._handlers.get(kind)
        try:
            if handler is None:
                raise RequestRefused(_refusal_for_type(kind))

            handler(client, frame.payload)
        except (RequestRefused, MalformedPayload) as exc:
            self._refuse(client, kind, str(exc))

    def handle_all(
        self, client: Client, frames: Sequence[Frame], received_at: float
    ) -> None:
        """Apply the messages of one read, in order, as :meth:`handle` one by
        one would; each stretch of room commands goes to its room at once.

        Args:
            client: who sent them.
            frames: the messages, in stream order.
            received_at: when they were read (time.time()).
        """
        start = 0
        for index, frame in enumerate(frames):
            if frame.kind <= LAST_CONTROL_TYPE:
                if start < index:
                    self._room_commands(client, frames[start:index], received_at)

                self.handle(client, frame, received_at)
                start = index + 1

        if start < len(frames):
            self._room_commands(
                client, frames[start:] if start else frames, received_at
            )

    def _refuse(self, client: Client, kind: int, reason: str) -> None:
        client.refusals += 1
        if _is_worth_logging(client.refusals):
            log.warning(
                "request.refused",
                extra={
                    "client_id": client.id,
                    "type": type_name(kind),
                    "error": reason[:LOGGED_TEXT_CHARS],
                    "refusals": client.refusals,
                },
            )
            self.events.record(
                "error",
                f"refused {type_name(kind)}: {reason[:LOGGED_TEXT_CHARS]}",
                client_id=client.id,
            )

        self.send_error(client, f"{type_name(kind)}: {reason}")

    def send_error(self, client: Client, message: str) -> None:
        """Send SEND_ERROR to one client."""
        client.send(encode_frame(MessageType.SEND_ERROR, encode_string(message)))

    def close_with_error(
        self, client: Client, message: str, reason: str | None = None
    ) -> None:
        """Send SEND_ERROR to one client, then close its connection once that is
        written; ``reason`` (default: the message) is what the log says."""
        self.send_error(client, message)
        client.close(reason or message)

    async def wait_for_unwritten(self) -> None:
        """Wait until some room holds commands its store has not written yet."""
        await self._rooms_with_unwritten.wait()

    def forget_written(self) -> bool:
        """Drop from memory every command the store has written since the last
        call; return whether some room still holds unwritten ones."""
        for room in self._rooms_with_unwritten.take():
            room.history.forget_written()
            if room.history.has_unwritten and self.rooms.get(room.name) is room:
                self._rooms_with_unwritten.mark(room)

        return bool(self._rooms_with_unwritten)

    async def wait_for_statistics(self) -> None:
        """Wait until some room's command_count or byte_size changed."""
        await self._rooms_with_new_statistics.wait()

    def _publish_statistics_of(self, room: Room) -> None:
        """Send the room's command_count and byte_size now, if they changed since
        the last update: before it becomes joinable, since the add-on of a
        joiner that reacts at once divides by byte_size for its progress bar."""
        if self._rooms_with_new_statistics.unmark(room):
            self._send_to_all(
                _json_frame(MessageType.ROOM_UPDATE, {room.name: room.statistics()})
            )

    def publish_statistics(self) -> None:
        """Send one ROOM_UPDATE with the latest command_count and byte_size of each
        room that changed since the last call."""
        update = {
            room.name: room.statistics()
            for room in self._rooms_with_new_statistics.take()
            if self.rooms.get(room.name) is room
        }
        if update:
            self._send_to_all(_json_frame(MessageType.ROOM_UPDATE, update))

    def _room_command(self, client: Client, frame: Frame, at: float) -> None:
        room = client.room
        if room is None:
            self._refuse(
                client, frame.kind, "room commands need a room; join one first"
            )
            return

        room.commands_in += 1
        room.bytes_in += frame.size
        cluster = self.cluster
        if cluster is not None:
            if cluster.is_available:
                cluster.propose_command(client.id, room.name, frame.kind, frame.wire)
            else:
                self._close_unavailable(client)

            return

        if is_stored(frame.kind):
            room.history.append(frame, client.id, at)
            self._rooms_with_new_statistics.mark(room)
            if self.store is not None:
                self._rooms_with_unwritten.mark(room)

        self._forward(room, frame.wire, client)

    def _room_commands(
        self, client: Client, frames: Sequence[Frame], at: float
    ) -> None:
        """Apply consecutive room commands of one read: counted, stored and
        forwarded together (a single one, or a clustered relay's, one by one)."""
        room = client.room
        if room is None or self.cluster is not None or len(frames) == 1:
            for frame in frames:
                self.handle(client, frame, at)

            return

        wires = [frame.wire for frame in frames]
        size = sum(map(len, wires))
        client.frames_in += len(wires)
        client.bytes_in += size
        room.commands_in += len(wires)
        room.bytes_in += size
        stored = [frame for frame in frames if is_stored(frame.kind)]
        if stored:
            room.history.extend(stored, client.id, at)
            self._rooms_with_new_statistics.mark(room)
            if self.store is not None:
                self._rooms_with_unwritten.mark(room)

        receivers = len(room.members) - int(client in room.members)
        room.commands_out += receivers * len(wires)
        room.bytes_out += receivers * size
        for member in room.members:
            if member is not client:
                member.send_all(wires, size)

    def _forward(self, room: Room, wire: Wire, sender: Client | None) -> None:
        """Send a room command to every member but its sender, counting it."""
        receivers = len(room.members) - int(sender in room.members)
        room.commands_out += receivers
        room.bytes_out += receivers * len(wire)
        for member in room.members:
            if member is not sender:
                member.send(wire)

    def _join_room(self, client: Client, payload: memoryview) -> None:
        reader = PayloadReader(payload)
        name = reader.read_string()
        blender_version = reader.read_optional_string()
        mixer_version = reader.read_optional_string()
        ignore_version_check = reader.read_optional_bool()
        generic_protocol = reader.read_optional_bool()
        if not name:
            raise RequestRefused("the room name must not be empty")

        if client.room is not None:
            raise RequestRefused(
                f"already in room {client.room.name!r}; leave it before joining "
                f"{name!r}"
            )

        if self.cluster is not None and not self.cluster.is_available:
            self._close_unavailable(client)
            return

        room = self.rooms.get(name)
        if room is None and name in self.reserved_names:
            raise RequestRefused(f"room {name!r} is being created by an operator")

        if room is None:
            # Known limit: of two artists creating the same room on two nodes at
            # the same instant, the one whose creation commits second is closed,
            # and what it sent before its node learnt of the first stays in it.
            store_id = self.store.allocate_room_id() if self.store else 0
            room = Room(
                name,
                blender_version,
                mixer_version,
                ignore_version_check,
                generic_protocol,
                creator=client,
                history=History(self._sequence, self._history_store, store_id),
                store_id=store_id,
                created_at=time.time(),
            )
            self._create_room(client, room)
        else:
            self._join_existing(client, room, blender_version, mixer_version)

    def _create_room(self, client: Client, room: Room) -> None:
        self.rooms[room.name] = room
        self._save(room)
        room.members[client] = None
        client.room = room
        client.send(encode_frame(MessageType.JOIN_ROOM, encode_string(room.name)))
        client.send(encode_frame(MessageType.CONTENT))
        log.info("room.created", extra={"room": room.name, "client_id": client.id})
        self.events.record("room", "created", room=room.name, client_id=client.id)
        self._send_to_all(
            _json_frame(MessageType.ROOM_UPDATE, {room.name: room.attributes()})
        )
        self._announce_room_of(client)

    def _join_existing(
        self, client: Client, room: Room, blender_version: str, mixer_version: str
    ) -> None:
        if not room.is_joinable:
            raise RequestRefused(
                f"room {room.name!r} is not joinable yet: its creator is still "
                "uploading the scene"
            )

        versions_differ = (blender_version, mixer_version) != (
            room.blender_version,
            room.mixer_version,
        )
        if versions_differ and not room.ignore_version_check:
            raise RequestRefused(
                f"room {room.name!r} needs Blender {room.blender_version} with Mixer "
                f"{room.mixer_version}; this client has Blender {blender_version} "
                f"with Mixer {mixer_version}"
            )

        room.members[client] = None
        room.grace_until = None
        client.room = room
        self.resync(client)
        log.info(
            "room.joined",
            extra={
                "room": room.name,
                "client_id": client.id,
                "command_count": len(room.history),
                "byte_size": room.history.byte_size,
            },
        )
        self.events.record("join", "joined", room=room.name, client_id=client.id)
        self._announce_room_of(client)

    def resync(self, client: Client) -> None:
        """Send a member its room's history from scratch: CLEAR_CONTENT, every
        command, then JOIN_ROOM (on joining, and after an operator's rewind)."""
        room = client.room
        assert room is not None
        client.outbox.cancel_replays()
        room.joiners.add(client)
        client.send(encode_frame(MessageType.CLEAR_CONTENT))
        confirmation = encode_frame(MessageType.JOIN_ROOM, encode_string(room.name))
        client.outbox.push_replay(
            HistoryReplay(
                room.history, confirmation, lambda: room.joiners.discard(client)
            )
        )

    def add_room(self, room: Room) -> None:
        """Register a room an operator made (a fork) and announce it."""
        self.rooms[room.name] = room
        self._save(room)
        log.info("room.created", extra={"room": room.name})
        self.events.record("room", "created", room=room.name)
        self._send_to_all(
            _json_frame(MessageType.ROOM_UPDATE, {room.name: room.attributes()})
        )

    def mark_statistics(self, room: Room) -> None:
        """Announce the room's command_count and byte_size with the next update."""
        self._rooms_with_new_statistics.mark(room)

    def _leave_room(self, client: Client, payload: memoryview) -> None:
        if client.room is None:
            raise RequestRefused("not in a room")

        self._leave(client, confirm=True)

    def _leave(self, client: Client, *, confirm: bool) -> None:
        room = client.room
        assert room is not None
        self._forget_membership(client)
        if confirm:
            client.send(encode_frame(MessageType.LEAVE_ROOM))

        log.info("room.left", extra={"room": room.name, "client_id": client.id})
        self.events.record("leave", "left", room=room.name, client_id=client.id)
        self._announce_room_of(client)
        if self.cluster is not None:
            # Known limit: a clustered room is not removed when its last member
            # on this node leaves (members elsewhere are not counted); it stays
            # until DELETE_ROOM.
            return

        # Nobody could ever join a room whose scene upload was abandoned.
        abandoned = room.creator is client and not room.is_joinable
        if abandoned or (not room.members and not room.keep_open):
            self.remove_room(room)

    def _forget_membership(self, client: Client) -> None:
        room = client.room
        if room is None:
            return

        del room.members[client]
        room.joiners.discard(client)
        client.outbox.cancel_replays()
        client.room = None

    def _content(self, client: Client, payload: memoryview) -> None:
        room = client.room
        if room is None:
            raise RequestRefused("CONTENT outside a room")

        if room.is_joinable:
            raise RequestRefused(f"room {room.name!r} already has its content")

        room.is_joinable = True
        room.creator = None  # only an unfinished upload needs to know its creator
        self._save(room)
        log.info(
            "room.joinable",
            extra={"room": room.name, "command_count": len(room.history)},
        )
        self._publish_statistics_of(room)
        self._send_to_all(
            _json_frame(MessageType.ROOM_UPDATE, {room.name: {"joinable": True}})
        )

    def _delete_room(self, client: Client, payload: memoryview) -> None:
        name = decode_text(payload)
        room = self._existing_room(name)
        if room.members or room.joiners:
            raise RequestRefused(
                f"room {name!r} still has {len(room.members)} member(s); it can only "
                "be deleted when empty"
            )

        self.remove_room(room)

    def remove_room(self, room: Room) -> None:
        """Delete a room and its history; every client gets ROOM_DELETED."""
        del self.rooms[room.name]
        if self.store is not None:
            self.store.delete_room(room.store_id)

        if self.cluster is not None:
            self.cluster.propose_delete(room.name)

        self._rooms_with_new_statistics.unmark(room)
        log.info("room.deleted", extra={"room": room.name})
        self.events.record("room", "deleted", room=room.name)
        self._send_to_all(
            encode_frame(MessageType.ROOM_DELETED, encode_string(room.name))
        )

    def _list_rooms(self, client: Client, payload: memoryview) -> None:
        rooms = {name: room.attributes() for name, room in self.rooms.items()}
        client.send(_json_frame(MessageType.LIST_ROOMS, rooms))

    def _list_clients(self, client: Client, payload: memoryview) -> None:
        clients = {cid: other.attributes() for cid, other in self.clients.items()}
        client.send(_json_frame(MessageType.LIST_CLIENTS, clients))

    def _client_id(self, client: Client, payload: memoryview) -> None:
        client.send(encode_frame(MessageType.CLIENT_ID, client.id.encode()))

    def _set_client_name(self, client: Client, payload: memoryview) -> None:
        self._update_client(client, {"user_name": decode_text(payload)})

    def _set_client_attributes(self, client: Client, payload: memoryview) -> None:
        self._update_client(client, PayloadReader(payload).read_json_object())

    def _update_client(self, client: Client, requested: dict[str, Any]) -> None:
        changed = _merge_custom(client.custom, requested, RESERVED_CLIENT_ATTRIBUTES)
        if changed:
            self._send_to_all(
                _json_frame(MessageType.CLIENT_UPDATE, {client.id: changed})
            )

    def _set_room_attributes(self, client: Client, payload: memoryview) -> None:
        reader = PayloadReader(payload)
        room = self._existing_room(reader.read_string())
        requested = reader.read_json_object()
        changed = _merge_custom(room.custom, requested, RESERVED_ROOM_ATTRIBUTES)
        if changed:
            self._save(room)
            self._send_to_all(
                _json_frame(MessageType.ROOM_UPDATE, {room.name: changed})
            )

    def _set_room_keep_open(self, client: Client, payload: memoryview) -> None:
        reader = PayloadReader(payload)
        room = self._existing_room(reader.read_string())
        self.set_keep_open(room, reader.read_bool())

    def set_keep_open(self, room: Room, keep_open: bool) -> None:
        """Set a room's keep_open; on a change every client gets ROOM_UPDATE."""
        if keep_open != room.keep_open:
            room.keep_open = keep_open
            self._save(room)
            self._send_to_all(
                _json_frame(
                    MessageType.ROOM_UPDATE, {room.name: {"keep_open": keep_open}}
                )
            )

    def _relay_error(self, client: Client, payload: memoryview) -> None:
        message = PayloadReader(payload).read_string()
        client.errors_sent += 1
        if _is_worth_logging(client.errors_sent):
            log.warning(
                "client.error",
                extra={
                    "client_id": client.id,
                    "text": message[:LOGGED_TEXT_CHARS],
                    "errors_sent": client.errors_sent,
                },
            )
            self.events.record(
                "error", message[:LOGGED_TEXT_CHARS], client_id=client.id
            )

        self._send_to_all(encode_frame(MessageType.SEND_ERROR, encode_string(message)))

    def restore(self, grace: float) -> None:
        """Bring back the rooms the store kept (at start-up, before serving).

        Rooms with keep_open come back for good. Others were live when the relay
        stopped: they come back for ``grace`` seconds so that artists can rejoin,
        and are deleted after it if still empty. A room whose scene upload never
        finished could never be joined, and is deleted at once.
        """
        store = self.database
        if store is None:
            return

        audit, bans = store.load_operator_records(AUDIT_MEMORY_ENTRIES)
        self.audit.load(audit)
        self.bans.load(bans)
        now = time.time()
        for record, summary in store.load():
            if self.cluster is not None:
                # Clustered rooms live as long as the cluster: no grace period,
                # and an unfinished upload may be going on through another node.
                self.rooms[record.name] = self._room_from_record(record, summary)
                continue

            if not record.joinable:
                store.delete_room(record.id)
                log.info("room.discarded", extra={"room": record.name})
                continue

            room = self._room_from_record(record, summary)
            room.grace_until = None if room.keep_open else now + grace
            self.rooms[room.name] = room
            log.info(
                "room.restored",
                extra={
                    "room": room.name,
                    "command_count": len(room.history),
                    "byte_size": room.history.byte_size,
                    "keep_open": room.keep_open,
                },
            )

    def next_grace_deadline(self) -> float | None:
        """When the next restored room's grace period ends, if one is pending."""
        deadlines = [r.grace_until for r in self.rooms.values() if r.grace_until]
        return min(deadlines) if deadlines else None

    def expire_restored_rooms(self, now: float) -> None:
        """Delete restored rooms whose grace period ended and that nobody rejoined."""
        for room in list(self.rooms.values()):
            if room.grace_until is not None and room.grace_until <= now:
                room.grace_until = None
                if not room.members and not room.keep_open:
                    log.info("room.grace_ended", extra={"room": room.name})
                    self.remove_room(room)

    def _room_from_record(self, record: RoomRecord, summary: HistorySummary) -> Room:
        last = None
        if summary.last_wire is not None:
            last_frame = FrameDecoder(len(summary.last_wire)).feed(summary.last_wire)[0]
            last = LastCommand(
                summary.last_seq,
                last_frame.kind,
                merge_key(last_frame.kind, last_frame.wire),
                last_frame.size,
            )

        return self._room_of(record, summary.command_count, summary.byte_size, last)

    def _room_of(
        self,
        record: RoomRecord,
        command_count: int,
        byte_size: int,
        last: LastCommand | None,
    ) -> Room:
        """The room of a stored row whose history is already in the store."""
        history = History(
            self._sequence,
            self._history_store,
            record.id,
            command_count=command_count,
            byte_size=byte_size,
            last=last,
        )
        return Room(
            record.name,
            record.blender_version,
            record.mixer_version,
            record.ignore_version_check,
            record.generic_protocol,
            creator=None,
            history=history,
            store_id=record.id,
            created_at=record.created_at,
            keep_open=record.keep_open,
            is_joinable=record.joinable,
            custom=dict(record.custom),
        )

    def _save(self, room: Room) -> None:
        if self.store is not None:
            self.store.save_room(room.record())

        if self.cluster is not None:
            self.cluster.propose_room(room.record())

    def _close_unavailable(self, client: Client) -> None:
        self.close_with_error(
            client,
            "this relay node has no quorum in its cluster and cannot accept room "
            "requests; reconnect to another node",
            "cluster unavailable",
        )

    def close_all(self, message: str) -> None:
        """Send SEND_ERROR to every client, then close each connection (the
        cluster lost its quorum: the add-on reconnects to a healthy node)."""
        for client in list(self.clients.values()):
            self.close_with_error(client, message)

    def close_clients(self, client_ids: set[str], message: str) -> None:
        """Send SEND_ERROR to these clients, then close their connections."""
        for client_id in client_ids:
            client = self.clients.get(client_id)
            if client is not None:
                self.close_with_error(client, message)

    def reload_rooms(self) -> None:
        """Rebuild every room from the store, which a snapshot replaced: members
        are closed (their histories changed under them) and rejoin."""
        self.close_all("this relay node caught up from a snapshot; reconnect")
        for room in self.rooms.values():
            for member in list(room.members):
                self._forget_membership(member)

        self.rooms.clear()
        self.restore(0.0)

    def apply_committed(self, events: Sequence[Applied]) -> None:
        """Apply what the cluster committed, in log order (clustered only)."""
        assert self.cluster is not None
        node_id = self.cluster.node_id
        # One clock reading per batch: the time is for the operator's history view.
        now = time.time()
        for event in events:
            if type(event) is CommandCommitted:
                self._deliver_command(event, node_id, now)
            elif isinstance(event, RoomSaved):
                self._apply_room(event)
            elif isinstance(event, RoomDeleted):
                self._apply_deletion(event)
            elif isinstance(event, RoomForked):
                self._apply_fork(event)
            elif isinstance(event, RoomRewound):
                self._apply_rewind(event)
            elif isinstance(event, OperationSkipped):
                self._settle(event.origin, event.action, event.room, event.reason)
            elif self.cluster is not None and event.origin != self.cluster.node_id:
                # This node's own change was made in memory when it was made.
                self._apply_access(event)

    def _apply_access(self, event: Applied) -> None:
        match event:
            case LeaseGranted(lease=lease) if self.leases is not None:
                self.leases.grant_replicated(lease)
            case LeaseRevoked(address=address) if self.leases is not None:
                self.leases.revoke_replicated(address)
            case BanSet(ban=ban):
                self.bans.set_replicated(ban)
                self._drop_banned()
            case BanLifted(subject=subject):
                self.bans.lift_replicated(subject)
            case AuditAppended(entry=entry):
                self.audit.add_replicated(entry)

    def _drop_banned(self) -> None:
        """Disconnect every client a ban in force now refuses."""
        for client in list(self.clients.values()):
            reason = self.bans.refusal(client.ip, client.login)
            if reason is not None:
                self.close_with_error(client, reason)

    def _deliver_command(
        self, event: CommandCommitted, node_id: str, now: float
    ) -> None:
        room = self.rooms.get(event.room)
        if room is None:
            return

        wire = event.wire
        if event.seq:
            if event.seq <= room.history.last_seq:
                return  # already in the history loaded at start-up

            frame = Frame(event.kind, 0, wire)
            room.history.append(frame, event.client_id, now, seq=event.seq)
            self._rooms_with_new_statistics.mark(room)
            self._rooms_with_unwritten.mark(room)

        # The sender already has its own command; it is connected here if ours.
        is_ours = event.origin == node_id
        self._forward(
            room, wire, self.clients.get(event.client_id) if is_ours else None
        )

    def _apply_room(self, event: RoomSaved) -> None:
        record = event.record
        room = self.rooms.get(record.name)
        if room is not None and room.created_at != record.created_at:
            # Another node's artist created it first: the cluster skips ours.
            self._give_up_room(room, "by an artist on another node")
            history = room.history
            room = self._room_of(record, len(history), history.byte_size, history.last)
            self.rooms[room.name] = room
            self._send_to_all(
                _json_frame(MessageType.ROOM_UPDATE, {room.name: room.attributes()})
            )
            return

        if room is None:
            room = self._room_from_record(record, HistorySummary(0, 0, 0, None))
            self.rooms[room.name] = room
            self._send_to_all(
                _json_frame(MessageType.ROOM_UPDATE, {room.name: room.attributes()})
            )
            return

        room.store_id = record.id
        room.history.attach(record.id)
        assert self.cluster is not None
        # Known limit: two nodes changing the same room attribute at the same
        # instant each keep the other's value in memory (the databases agree).
        if event.origin == self.cluster.node_id:
            return  # this node's own change, applied here when it was made

        changed: dict[str, Any] = {}
        if record.keep_open != room.keep_open:
            room.keep_open = changed["keep_open"] = record.keep_open

        if record.joinable != room.is_joinable:
            room.is_joinable = changed["joinable"] = record.joinable
            room.creator = None
            self._publish_statistics_of(room)

        changed.update(
            _merge_custom(room.custom, record.custom, RESERVED_ROOM_ATTRIBUTES)
        )

        if changed:
            self._send_to_all(
                _json_frame(MessageType.ROOM_UPDATE, {room.name: changed})
            )

    def _apply_fork(self, event: RoomForked) -> None:
        record = event.record
        lost = self.rooms.get(record.name)
        if lost is not None:
            self._give_up_room(lost, "by an operator's fork on another node")

        room = self._room_of(record, event.count, event.byte_size, event.last)
        self.rooms[room.name] = room
        log.info("room.created", extra={"room": room.name})
        self.events.record("room", "created", room=room.name)
        self._send_to_all(
            _json_frame(MessageType.ROOM_UPDATE, {room.name: room.attributes()})
        )
        self._settle(event.origin, "fork", record.name, None)

    # Known limit: the commands such an artist sent before its node learnt of
    # the other room are committed into that room's history, on every node alike.
    def _give_up_room(self, room: Room, by: str) -> None:
        """Close the members of a room an artist here created under the name of
        a room the cluster committed first (the applier skips this creation), so
        that they join that one.

        Args:
            room: the room this node made and the cluster did not keep.
            by: who created the room the cluster kept, for the members.
        """
        log.warning("cluster.room_lost", extra={"room": room.name, "to": by})
        for member in list(room.members):
            self.close_with_error(
                member,
                f"room {room.name!r} was created at the same moment {by}; join it "
                "again",
                f"room lost to one created {by}",
            )
            self._forget_membership(member)

        self._rooms_with_new_statistics.unmark(room)

    def _apply_rewind(self, event: RoomRewound) -> None:
        room = self.rooms.get(event.name)
        if room is not None:
            room.history.cut(event.last, event.count, event.byte_size)
            for member in list(room.members):
                self.resync(member)

            self.mark_statistics(room)

        self._settle(event.origin, "rewind", event.name, None)

    def _settle(self, origin: str, action: str, room: str, refusal: str | None) -> None:
        """Tell the operation waiting here for ``action`` on ``room`` that the
        cluster applied it (``refusal`` None) or skipped it."""
        assert self.cluster is not None
        if origin == self.cluster.node_id:
            settle = self.awaited_operations.pop((action, room), None)
            if settle is not None:
                settle(refusal)

    def _apply_deletion(self, event: RoomDeleted) -> None:
        room = self.rooms.get(event.name)
        assert self.cluster is not None
        if room is None or event.origin == self.cluster.node_id:
            return

        for member in list(room.members):
            self.close_with_error(
                member,
                f"room {room.name!r} was deleted on another node",
                "room deleted on another node",
            )
            self._forget_membership(member)

        del self.rooms[room.name]
        self._rooms_with_new_statistics.unmark(room)
        self._send_to_all(
            encode_frame(MessageType.ROOM_DELETED, encode_string(room.name))
        )

    def _existing_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise RequestRefused(f"no room named {name!r}")

        return room

    def _announce_room_of(self, client: Client) -> None:
        room = client.room.name if client.room is not None else None
        self._send_to_all(
            _json_frame(MessageType.CLIENT_UPDATE, {client.id: {"room": room}})
        )

    # Known limit: a huge attribute or client error is parsed on the event loop and
    # queued for every client, which can stall the relay and drop slow bystanders.
    def _send_to_all(self, wire: bytes) -> None:
        for client in self.clients.values():
            client.send(wire)


def _json_frame(kind: MessageType, value: dict[str, Any]) -> bytes:
    return encode_frame(kind, encode_json(value))


def _is_worth_logging(count: int) -> bool:
    return count <= LOGGED_PER_CLIENT or count % 1000 == 0


def _merge_custom(
    current: dict[str, Any], requested: dict[str, Any], reserved: frozenset[str]
) -> dict[str, Any]:
    """Store the requested custom attributes; return the ones whose value changed."""
    changed: dict[str, Any] = {}
    for key, value in requested.items():
        if key in reserved:
            continue

        old = current.get(key, _MISSING)
        # Compared as JSON: in Python 1 == True == 1.0, and NaN != NaN; with keys
        # sorted, as an object's key order means nothing.
        if old is _MISSING or _json_text(old) != _json_text(value):
            current[key] = value
            changed[key] = value

    return changed


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _refusal_for_type(kind: int) -> str:
    if kind == MessageType.COMMAND:
        return "type 100 is not a room command (room commands are above 100)"

    if kind in _RELAY_ONLY_TYPES:
        return f"type {kind} is only sent by the relay, never accepted from clients"

    return f"unknown message type {kind}"


_RELAY_ONLY_TYPES = frozenset(
    {
        MessageType.CLEAR_CONTENT,
        MessageType.CLIENT_UPDATE,
        MessageType.ROOM_UPDATE,
        MessageType.ROOM_DELETED,
        MessageType.CLIENT_DISCONNECTED,
    }
)
