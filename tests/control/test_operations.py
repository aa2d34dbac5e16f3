"""Operator actions in-process, against a real relay, store and TCP clients."""

import math
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from relay.config import Settings
from relay.control import OperationRefused
from relay.messages import MessageType
from relay.protocol import encode_json, encode_string
from relay.server import RelayServer
from store.errors import StoreLocked
from store.roomfile import iter_room_file_frames, scan_room_file
from store.store import LOCK_NAME, lock_directory
from tests.mixer_client import NOISE, MixerClient, join_payload, room_command
from tests.relay.flows import Connect
from tests.relays import running_relay

OPERATOR = "olga"


def commands(count: int) -> list[bytes]:
    """Distinct stored commands: a mergeable type with its own path each, and a
    plain type in between; each carries its index as command id."""
    wires = []
    for index in range(count):
        if index % 2:
            body = bytes([index]) * 40
            wires.append(room_command(MessageType.BLENDER_DATA_UPDATE, body, index))
        else:
            path = encode_string(f"/objects/cube{index}")
            wires.append(room_command(MessageType.TRANSFORM, path + bytes(64), index))
    return wires


async def room_with_history(
    connect: Connect, count: int
) -> tuple[MixerClient, list[bytes]]:
    creator = await connect()
    await creator.handshake("ada")
    wires = commands(count)
    await creator.create_room("studio", commands=wires)
    return creator, wires


async def test_kick_disconnects_and_is_audited(
    relay: RelayServer, connect: Connect
) -> None:
    """The kicked client's connection ends; the audit log names the operator."""
    creator, _ = await room_with_history(connect, 2)

    await relay.control.kick(creator.client_id, operator=OPERATOR)
    await creator.expect_closed()

    (entry,) = await relay.control.audit_log()
    assert (entry.operator, entry.action, entry.target) == (
        OPERATOR,
        "kick",
        creator.client_id,
    )
    kinds = [event.kind for event in await relay.control.events(0)]
    assert "drop" in kinds and "operator" in kinds
    assert creator.client_id not in relay.broadcaster.clients


async def test_kick_with_ban_refuses_the_address(
    relay: RelayServer, connect: Connect
) -> None:
    """A banned address's new connection gets SEND_ERROR saying until when, then
    ends; lifting the ban lets it in again."""
    creator, _ = await room_with_history(connect, 1)
    await relay.control.kick(creator.client_id, operator=OPERATOR, ban_seconds=600)
    await creator.expect_closed()

    again = await connect()
    await again.send(MessageType.CLIENT_ID)
    frames = await again.expect_closed()

    assert [frame.kind for frame in frames] == [MessageType.SEND_ERROR]
    message = bytes(frames[0].payload[4:]).decode()
    assert message.startswith("banned from this relay until 20")
    assert f"kicked by {OPERATOR}" in message
    (ban,) = await relay.control.bans()
    assert ban.subject == "address:127.0.0.1"
    assert ban.operator == OPERATOR

    await relay.control.lift_ban("address:127.0.0.1", operator=OPERATOR)
    welcome = await connect()
    assert await welcome.handshake()
    assert await relay.control.bans() == []


async def test_bans_survive_a_restart_and_expire(tmp_path: Path) -> None:
    """A ban is in force after a restart; one whose time passed is lifted."""
    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp_path / "data")
    async with running_relay(settings) as relay:
        assert relay.port is not None
        client = await MixerClient.connect(relay.port)
        await client.handshake()
        await relay.control.kick(client.client_id, operator=OPERATOR, ban_seconds=1.5)
        await client.expect_closed()
        await client.aclose()

    async with running_relay(settings) as relay:
        assert relay.port is not None
        (ban,) = await relay.control.bans()
        refused = await MixerClient.connect(relay.port)
        assert "banned" in (await refused.expect_closed())[0].payload.tobytes().decode()
        await refused.aclose()
        await anyio.sleep(1.6)
        accepted = await MixerClient.connect(relay.port)
        assert await accepted.handshake()
        await accepted.aclose()
        assert await relay.control.bans() == []
        audit = await relay.control.audit_log()

    assert ban.subject == "address:127.0.0.1"
    assert [entry.action for entry in audit] == ["kick"]


async def test_delete_room_disconnects_members(
    relay: RelayServer, connect: Connect
) -> None:
    """Members are disconnected, the room is gone and others see ROOM_DELETED."""
    creator, _ = await room_with_history(connect, 2)
    await relay.control.set_keep_open("studio", True, operator=OPERATOR)
    bystander = await connect()
    await bystander.handshake("bob")

    await relay.control.delete_room("studio", operator=OPERATOR)

    await creator.expect_closed()
    deleted = await bystander.expect(MessageType.ROOM_DELETED)
    assert bytes(deleted.payload[4:]) == b"studio"
    assert "studio" not in relay.broadcaster.rooms
    actions = [entry.action for entry in await relay.control.audit_log()]
    assert actions == ["delete_room", "set_keep_open"]


async def test_set_keep_open_sends_room_update(
    relay: RelayServer, connect: Connect
) -> None:
    """Clients see keep_open change as with SET_ROOM_KEEP_OPEN."""
    creator, _ = await room_with_history(connect, 1)

    await relay.control.set_keep_open("studio", True, operator=OPERATOR)

    await creator.wait_for_room_update("studio", "keep_open", True)
    assert (await relay.control.snapshot()).rooms[0].keep_open


async def test_history_page_and_inspect(relay: RelayServer, connect: Connect) -> None:
    """Pages list index, seq, type, size, sender and time; inspect shows the
    header's type, the leading path and the head of the bytes."""
    creator, wires = await room_with_history(connect, 5)

    page = await relay.control.history_page("studio", 2, 3)
    detail = await relay.control.command("studio", 3)
    plain = await relay.control.command("studio", 2)

    assert page.total == 5
    assert [c.index for c in page.commands] == [2, 3, 4]
    assert [c.type_name for c in page.commands] == [
        "BLENDER_DATA_UPDATE",
        "TRANSFORM",
        "BLENDER_DATA_UPDATE",
    ]
    assert [c.size for c in page.commands] == [len(w) for w in wires[1:4]]
    assert {c.sender for c in page.commands} == {creator.client_id}
    assert all(c.at is not None for c in page.commands)
    assert page.commands[0].seq < page.commands[1].seq < page.commands[2].seq
    assert detail.summary == page.commands[1]
    assert detail.leading_path == "/objects/cube2"
    assert detail.command_id == 2
    assert detail.head == wires[2]
    assert plain.leading_path is None


async def test_history_requests_out_of_range_are_refused(
    relay: RelayServer, connect: Connect
) -> None:
    """Unknown rooms and clients, bad indices and taken names get clear refusals."""
    await room_with_history(connect, 3)
    cases = [
        (relay.control.command("studio", 4), "index 4 is out of range"),
        (relay.control.command("studio", 0), "index 0 is out of range"),
        (relay.control.command("nowhere", 1), "no room named 'nowhere'"),
        (relay.control.history_page("studio", 0, 10), "starts at 1 to 4"),
        (relay.control.history_page("studio", 2**70, 10), "starts at 1 to 4"),
        (relay.control.history_page("studio", 1, 5000), "holds 0 to 1000"),
        (relay.control.fork_room("studio", 9, "b", operator=OPERATOR), "out of range"),
        (
            relay.control.fork_room("studio", 1, "studio", operator=OPERATOR),
            "exists already",
        ),
        (
            relay.control.fork_room("studio", 1, "", operator=OPERATOR),
            "must not be empty",
        ),
        (relay.control.rewind_room("studio", -1, operator=OPERATOR), "out of range"),
        (relay.control.kick("1.2.3.4:5", operator=OPERATOR), "no connected client"),
        (
            relay.control.kick("x", operator=OPERATOR, ban_seconds=-1),
            "no connected client",
        ),
        (
            relay.control.lift_ban("address:9.9.9.9", operator=OPERATOR),
            "no ban in force",
        ),
        (
            relay.control.export_room("studio", Path("rel.mixer"), operator=OPERATOR),
            "must be absolute",
        ),
    ]
    cases.append(
        (
            relay.control.export_room(
                "studio", Path("/nonexistent/dir/s.mixer"), operator=OPERATOR
            ),
            "cannot write room file /nonexistent/dir/s.mixer",
        )
    )
    for call, message in cases:
        with pytest.raises(OperationRefused, match=message):
            await call

    assert await relay.control.audit_log() == []


async def test_fork_gives_joiners_the_first_commands(
    relay: RelayServer, connect: Connect
) -> None:
    """A client joining the fork receives exactly the first N commands, byte for
    byte; the source room is unchanged."""
    creator, wires = await room_with_history(connect, 6)

    await relay.control.fork_room("studio", 4, "studio-take2", operator=OPERATOR)
    joiner = await connect()
    await joiner.handshake("bob")
    received = await joiner.join_room("studio-take2")
    source = await (await connect()).join_room("studio")

    assert [frame.wire for frame in received] == wires[:4]
    assert [frame.wire for frame in source] == wires
    fork = {room.name: room for room in (await relay.control.snapshot()).rooms}[
        "studio-take2"
    ]
    assert (fork.command_count, fork.byte_size) == (4, sum(map(len, wires[:4])))
    assert (fork.blender_version, fork.mixer_version) == ("3.4.1", "1.0.0")
    page = await relay.control.history_page("studio-take2", 1, 10)
    assert [c.sender for c in page.commands] == [creator.client_id] * 4


async def test_fork_and_rewind_while_an_artist_edits_the_newest_object(
    relay: RelayServer, connect: Connect
) -> None:
    """An artist dragging an object sends a stream of commands that each replace
    the newest (the merge rule): a fork and a rewind at an earlier command are
    not refused for it, and hold exactly the commands asked for."""
    creator, wires = await room_with_history(connect, 4)
    drag = encode_string("/objects/dragged")
    sent = 0

    async def drag_the_object() -> None:
        nonlocal sent
        for step in range(2000):
            frame = room_command(MessageType.TRANSFORM, drag + step.to_bytes(8, "big"))
            await creator.send_raw(frame)
            sent += 1
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(drag_the_object)
        await anyio.sleep(0.1)
        await relay.control.fork_room("studio", 3, "studio-at-3", operator=OPERATOR)
        await relay.control.rewind_room("studio", 2, operator=OPERATOR)
        tasks.cancel_scope.cancel()

    joiner = await connect()
    await joiner.handshake("bob")
    forked = await joiner.join_room("studio-at-3")

    assert sent > 0
    assert [frame.wire for frame in forked] == wires[:3]
    page = await relay.control.history_page("studio", 1, 10)
    assert [command.size for command in page.commands[:2]] == [
        len(wire) for wire in wires[:2]
    ]


async def test_fork_rewind_and_pages_cut_inside_a_stored_run(
    relay: RelayServer, connect: Connect
) -> None:
    """Commands that arrive in one read share a row in the store (a run); a fork,
    a page of the operator's history and a rewind at a command inside that row
    see exactly the commands up to it, each on its own."""
    creator = await connect()
    await creator.handshake("ada")
    wires = commands(12)
    await creator.create_room("studio", commands=[b"".join(wires)])
    store = relay.broadcaster.store
    assert store is not None
    assert await store.wait_written(10)
    with closing(sqlite3.connect(store.path)) as db:
        (rows,) = db.execute("SELECT count(*) FROM commands").fetchone()

    await relay.control.fork_room("studio", 7, "studio-take2", operator=OPERATOR)
    page = await relay.control.history_page("studio", 6, 3)
    await relay.control.rewind_room("studio", 5, operator=OPERATOR)
    forked = await (await connect()).join_room("studio-take2")
    rewound = await (await connect()).join_room("studio")

    assert rows < len(wires)
    assert [frame.wire for frame in forked] == wires[:7]
    assert [(c.index, c.size, c.sender) for c in page.commands] == [
        (index, len(wires[index - 1]), creator.client_id) for index in (6, 7, 8)
    ]
    assert [frame.wire for frame in rewound] == wires[:5]


async def test_fork_at_zero_and_custom_attributes(
    relay: RelayServer, connect: Connect
) -> None:
    """A fork at 0 is an empty joinable room with the source's custom attributes."""
    creator, _ = await room_with_history(connect, 2)
    await creator.send(
        MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
        encode_string("studio") + encode_json({"shot": "010"}),
    )
    await creator.sync()

    await relay.control.fork_room("studio", 0, "empty", operator=OPERATOR)

    rooms = await creator.list_rooms()
    assert rooms["empty"]["shot"] == "010"
    assert rooms["empty"]["command_count"] == 0
    assert rooms["empty"]["joinable"] is True
    assert await (await connect()).join_room("empty") == []


async def test_rewind_resynchronises_members(
    relay: RelayServer, connect: Connect
) -> None:
    """Members get CLEAR_CONTENT, the first N commands, then JOIN_ROOM; later
    joiners see the cut history, and new commands follow it."""
    creator, wires = await room_with_history(connect, 6)
    member = await connect()
    await member.handshake("bob")
    await member.join_room("studio")
    await member.sync()
    await creator.sync()

    await relay.control.rewind_room("studio", 3, operator=OPERATOR)

    for client in (creator, member):
        await client.expect(MessageType.CLEAR_CONTENT)
        frames = await client.receive_until(MessageType.JOIN_ROOM)
        assert [f.wire for f in frames if f.kind > 100] == wires[:3]
        assert bytes(frames[-1].payload[4:]) == b"studio"

    extra = room_command(MessageType.BLENDER_DATA_UPDATE, b"after the rewind")
    await member.send_raw(extra)
    await member.sync()
    late = await (await connect()).join_room("studio")
    assert [f.wire for f in late] == [*wires[:3], extra]
    room = (await relay.control.snapshot()).rooms[0]
    assert room.command_count == 4
    assert room.byte_size == sum(map(len, wires[:3])) + len(extra)
    (entry,) = await relay.control.audit_log()
    assert entry.detail == "to 3 commands (3 cut)"


async def test_rewind_survives_a_restart(tmp_path: Path) -> None:
    """The cut is written to the store: after a restart the room holds N commands."""
    settings = Settings(
        host="127.0.0.1", port=0, data_dir=tmp_path / "data", room_grace=60
    )
    wires = commands(5)
    async with running_relay(settings) as relay:
        assert relay.port is not None
        creator = await MixerClient.connect(relay.port)
        await creator.handshake()
        await creator.create_room("studio", commands=wires)
        await relay.control.rewind_room("studio", 2, operator=OPERATOR)
        await relay.control.set_keep_open("studio", True, operator=OPERATOR)
        await creator.aclose()

    async with running_relay(settings) as relay:
        assert relay.port is not None
        joiner = await MixerClient.connect(relay.port)
        received = await joiner.join_room("studio")
        await joiner.aclose()

    assert [f.wire for f in received] == wires[:2]


async def test_export_writes_the_room_file(
    relay: RelayServer, connect: Connect, tmp_path: Path
) -> None:
    """The export holds the room's attributes and its whole history."""
    _, wires = await room_with_history(connect, 4)
    path = tmp_path / "studio.mixer"

    size = await relay.control.export_room("studio", path, operator=OPERATOR)

    summary = scan_room_file(path, 1 << 20)
    assert size == path.stat().st_size
    assert list(iter_room_file_frames(path, 1 << 20)) == wires
    assert summary.attributes["command_count"] == 4
    assert (await relay.control.audit_log())[0].action == "export_room"


async def test_operations_without_a_store(connect: Connect) -> None:
    """A relay without a store pages, forks and rewinds from memory."""
    settings = replace(Settings(host="127.0.0.1", port=0))
    server = RelayServer(settings)
    wires = commands(4)
    async with anyio.create_task_group() as tasks:
        port = await tasks.start(server.serve)
        creator = await MixerClient.connect(port)
        await creator.handshake()
        await creator.create_room("studio", commands=wires)
        await server.control.fork_room("studio", 3, "fork", operator=OPERATOR)
        await server.control.rewind_room("studio", 2, operator=OPERATOR)
        page = await server.control.history_page("fork", 1, 10)
        joiner = await MixerClient.connect(port)
        forked = await joiner.join_room("fork")
        late = await MixerClient.connect(port)
        rewound = await late.join_room("studio")
        for client in (creator, joiner, late):
            await client.aclose()
        tasks.cancel_scope.cancel()

    assert [f.wire for f in forked] == wires[:3]
    assert [f.wire for f in rewound] == wires[:2]
    assert [c.size for c in page.commands] == [len(w) for w in wires[:3]]


async def test_ban_by_login_once_login_exists(
    relay: RelayServer, connect: Connect
) -> None:
    """A client granted a login is banned by that login, not its address: the
    address may connect again, and the login step's admission check refuses the
    login."""
    creator, _ = await room_with_history(connect, 1)
    relay.broadcaster.clients[creator.client_id].login = "octocat"

    await relay.control.kick(creator.client_id, operator=OPERATOR, ban_seconds=60)
    await creator.expect_closed()
    again = await connect()
    again_id = await again.handshake()
    client = relay.broadcaster.clients[again_id]
    before_login = relay.broadcaster.admission_refusal(client)
    client.login = "octocat"
    after_login = relay.broadcaster.admission_refusal(client)

    assert [ban.subject for ban in await relay.control.bans()] == ["login:octocat"]
    assert before_login is None
    assert after_login is not None and after_login.startswith("banned from this")


async def test_rewind_during_a_join_restarts_the_joiner(
    relay: RelayServer, connect: Connect
) -> None:
    """A member still receiving the history when the room is rewound ends with
    exactly the cut history: after its last CLEAR_CONTENT come the first N
    commands and one JOIN_ROOM."""
    creator = await connect()
    await creator.handshake("ada")
    big = [
        room_command(MessageType.BLENDER_DATA_UPDATE, bytes([i % 251]) * 65536, i)
        for i in range(200)
    ]
    await creator.create_room("studio", commands=big)
    joiner = await connect()
    await joiner.send(MessageType.JOIN_ROOM, join_payload("studio", "3.4.1", "1.0.0"))
    # The joiner reads nothing yet: its history is still on its way.
    await relay.control.rewind_room("studio", 5, operator=OPERATOR)

    frames = await joiner.receive_until(MessageType.JOIN_ROOM, timeout=30)
    frames += await joiner.sync()

    frames = [f for f in frames if f.kind not in NOISE]
    kinds = [frame.kind for frame in frames]
    last_clear = len(kinds) - 1 - kinds[::-1].index(MessageType.CLEAR_CONTENT)
    after = [f for f in frames[last_clear + 1 :] if f.kind > 100]
    assert kinds.count(MessageType.JOIN_ROOM) == 1
    assert [f.wire for f in after] == big[:5]
    assert MessageType.CLEAR_CONTENT in kinds[:last_clear]


async def test_export_refuses_a_path_with_a_nul_byte(
    relay: RelayServer, connect: Connect, tmp_path: Path
) -> None:
    """A path with a NUL byte is refused plainly; it used to raise ValueError out
    of the operation (an "internal" error attached, an exception in-process)."""
    await room_with_history(connect, 2)

    with pytest.raises(OperationRefused, match="NUL"):
        await relay.control.export_room(
            "studio", tmp_path / "a\0b.mixer", operator=OPERATOR
        )

    assert await relay.control.audit_log() == []


async def test_export_refuses_the_store_s_own_files(
    relay: RelayServer, connect: Connect
) -> None:
    """An export onto the relay's database (or its journal files, or a link to
    it) is refused and the database is untouched; it used to replace the live
    database with the room file, losing every room at the next start."""
    await room_with_history(connect, 2)
    store = relay.broadcaster.store
    assert store is not None
    database = store.path
    link = database.parent / "link-to-the-database"
    link.symlink_to(database)

    roundabout = database.parent / ".." / database.parent.name / database.name
    for target in (database, Path(f"{database}-wal"), link, roundabout):
        with pytest.raises(OperationRefused, match="the relay's own database"):
            await relay.control.export_room("studio", target, operator=OPERATOR)

    assert database.read_bytes().startswith(b"SQLite format 3\0")
    assert link.is_symlink()
    assert await relay.control.audit_log() == []


async def test_export_through_a_symlink_loop_is_refused(
    relay: RelayServer, connect: Connect, tmp_path: Path
) -> None:
    """A path through a loop of symbolic links is refused plainly (resolving it,
    to compare it with the database's, raises RuntimeError on Python 3.11)."""
    await room_with_history(connect, 2)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")

    for target in (tmp_path / "a", tmp_path / "a" / "studio.mixer"):
        with pytest.raises(OperationRefused, match="symbolic links"):
            await relay.control.export_room("studio", target, operator=OPERATOR)

    assert await relay.control.audit_log() == []


async def test_bans_of_unusable_durations_are_refused_before_the_kick(
    relay: RelayServer, connect: Connect
) -> None:
    """Zero, negative, NaN, infinite, too long and too large durations are refused
    and the client stays connected and unbanned; an int too large for a float
    used to raise OverflowError out of the kick."""
    creator, _ = await room_with_history(connect, 1)
    durations = [0, 0.0, -5, math.nan, math.inf, -math.inf, 1e12, 10**400, 10**5000]

    for seconds in durations:
        with pytest.raises(OperationRefused, match="a ban lasts more than 0"):
            await relay.control.kick(
                creator.client_id, operator=OPERATOR, ban_seconds=seconds
            )

    assert creator.client_id in relay.broadcaster.clients
    assert await creator.list_rooms()
    assert await relay.control.bans() == []
    assert await relay.control.audit_log() == []


async def test_actions_without_an_operator_name_are_refused(
    relay: RelayServer, connect: Connect, tmp_path: Path
) -> None:
    """Every action that changes something needs an operator name that is not
    blank, and nothing happens without one; actions used to run and be audited
    with an empty name, so the audit log could not say who did them."""
    creator, _ = await room_with_history(connect, 2)
    await relay.control.kick(creator.client_id, operator=OPERATOR, ban_seconds=60)
    await creator.expect_closed()
    await relay.control.lift_ban("address:127.0.0.1", operator=OPERATOR)
    member, _ = await room_with_history(connect, 2)
    audited = await relay.control.audit_log()
    control = relay.control
    for nobody in ("", "  \t"):
        calls = [
            control.kick(member.client_id, operator=nobody),
            control.lift_ban("address:127.0.0.1", operator=nobody),
            control.delete_room("studio", operator=nobody),
            control.set_keep_open("studio", True, operator=nobody),
            control.fork_room("studio", 1, "fork", operator=nobody),
            control.rewind_room("studio", 1, operator=nobody),
            control.export_room("studio", tmp_path / "s.mixer", operator=nobody),
        ]
        for call in calls:
            with pytest.raises(OperationRefused, match="operator's name"):
                await call

    assert await relay.control.audit_log() == audited
    assert member.client_id in relay.broadcaster.clients
    room = relay.broadcaster.rooms["studio"]
    assert (len(room.history), room.keep_open) == (2, False)
    assert "fork" not in relay.broadcaster.rooms
    assert not (tmp_path / "s.mixer").exists()


async def test_export_refuses_the_data_folder_s_lock(
    relay: RelayServer, connect: Connect
) -> None:
    """Regression: an export onto the data folder's lock file replaced it, so a
    second relay could lock the folder and run on the database of the first."""
    await room_with_history(connect, 2)
    store = relay.broadcaster.store
    assert store is not None
    data_dir = store.path.parent

    with pytest.raises(OperationRefused, match="lock"):
        await relay.control.export_room(
            "studio", data_dir / LOCK_NAME, operator=OPERATOR
        )

    with pytest.raises(StoreLocked):
        lock_directory(data_dir)

    assert await relay.control.audit_log() == []
