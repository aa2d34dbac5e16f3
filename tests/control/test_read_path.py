"""The operator's read path in-process: snapshot, rates and the event log."""

import json
import time

import anyio

from relay.admin_protocol import encode_result
from relay.messages import MessageType
from relay.server import RelayServer
from tests.mixer_client import MixerClient, join_payload, room_command
from tests.relay.flows import Connect

COMMAND = room_command(MessageType.BLENDER_DATA_UPDATE, b"x" * 986)  # 1000 bytes


async def send_steadily(
    client: MixerClient, per_second: int, seconds: float, wire: bytes = COMMAND
) -> int:
    """Send ``wire`` on a fixed schedule (catching up after a late wake-up)."""
    began = time.monotonic()
    sent = 0
    with anyio.fail_after(seconds + 10):
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * per_second)
            if due > sent:
                await client.send_raw(wire * (due - sent))
                sent = due

            await anyio.sleep(0.02)

    return sent


async def test_snapshot_shows_rooms_artists_and_totals(
    relay: RelayServer, connect: Connect
) -> None:
    """A room with two members appears with its attributes, members and totals."""
    creator = await connect()
    await creator.handshake("ada")
    await creator.create_room("studio", commands=[COMMAND, COMMAND])
    joiner = await connect()
    await joiner.handshake("bob")
    await joiner.join_room("studio")

    snapshot = await relay.control.snapshot()

    (room,) = snapshot.rooms
    assert (room.name, room.members, room.command_count) == ("studio", 2, 2)
    assert room.byte_size == 2 * len(COMMAND)
    assert room.joinable and not room.keep_open
    assert (room.blender_version, room.mixer_version) == ("3.4.1", "1.0.0")
    by_id = {artist.client_id: artist for artist in snapshot.artists}
    assert by_id[creator.client_id].user_name == "ada"
    assert by_id[joiner.client_id].room == "studio"
    assert by_id[joiner.client_id].address == "127.0.0.1"
    assert by_id[joiner.client_id].login is None
    assert snapshot.totals.connections == 2
    assert snapshot.totals.rooms == 1
    assert snapshot.totals.store_state == "ok"
    assert snapshot.totals.rss_bytes > 10 * 1024 * 1024
    assert snapshot.totals.cluster_state is None


async def test_rates_match_the_traffic_sent(
    relay: RelayServer, connect: Connect
) -> None:
    """200 commands/s of 1000 bytes from one artist to another show as such."""
    sender = await connect()
    await sender.handshake("ada")
    await sender.create_room("studio")
    receiver = await connect()
    await receiver.handshake("bob")
    await receiver.join_room("studio")

    async with anyio.create_task_group() as tasks:

        async def drain() -> None:
            with anyio.move_on_after(20):
                while True:
                    await receiver.receive()

        tasks.start_soon(drain)
        await send_steadily(sender, 200, 3.5)
        snapshot = await relay.control.snapshot()
        tasks.cancel_scope.cancel()

    # Wide bounds: the machine's cores are shared with other test runs.
    (room,) = snapshot.rooms
    by_id = {artist.client_id: artist for artist in snapshot.artists}
    assert 100 <= room.commands_per_second <= 300
    assert 2 <= len(room.rate_history) <= 5
    assert 100 <= by_id[sender.client_id].commands_in_per_second <= 300
    assert 100_000 <= by_id[sender.client_id].bytes_in_per_second <= 300_000
    assert 100 <= by_id[receiver.client_id].commands_out_per_second <= 300
    assert 100_000 <= by_id[receiver.client_id].bytes_out_per_second <= 300_000
    assert 100 <= snapshot.totals.commands_per_second <= 300
    assert 200_000 <= snapshot.totals.bytes_per_second <= 600_000


async def test_idle_relay_shows_no_traffic(
    relay: RelayServer, connect: Connect
) -> None:
    """Once traffic stops, the next samples show zero rates."""
    sender = await connect()
    await sender.handshake("ada")
    await sender.create_room("studio", commands=[COMMAND] * 50)
    await anyio.sleep(2.5)

    snapshot = await relay.control.snapshot()

    assert snapshot.rooms[0].commands_per_second == 0
    assert snapshot.artists[0].bytes_in_per_second == 0
    assert snapshot.rooms[0].rate_history[-1] == 0


async def test_events_follow_a_session(relay: RelayServer, connect: Connect) -> None:
    """Connect, room creation, join, leave and disconnect are logged in order."""
    first = await connect()
    await first.handshake()
    await first.create_room("studio")
    await first.send(MessageType.LEAVE_ROOM)
    await first.expect(MessageType.LEAVE_ROOM)
    second = await connect()
    await second.handshake()
    await second.send(MessageType.JOIN_ROOM, b"\x00")
    await second.expect_error()
    await second.aclose()
    for _ in range(250):
        if any(e.kind == "disconnect" for e in await relay.control.events(0)):
            break

        await anyio.sleep(0.02)

    events = await relay.control.events(0)

    assert [(e.kind, e.text, e.room) for e in events] == [
        ("connect", "connected", None),
        ("room", "created", "studio"),
        ("leave", "left", "studio"),
        ("room", "deleted", "studio"),
        ("connect", "connected", None),
        ("error", "refused JOIN_ROOM: payload ends before its string length", None),
        ("disconnect", "closed by peer", None),
    ]
    first_seq = events[0].seq
    assert [e.seq for e in events] == list(range(first_seq, first_seq + len(events)))
    assert events[0].client_id == first.client_id
    assert await relay.control.events(events[-2].seq) == [events[-1]]
    assert await relay.control.events(0, limit=2) == events[:2]


async def test_store_state_shows_degraded_then_ok(
    relay: RelayServer, connect: Connect
) -> None:
    """A store that cannot write (its file capped) shows as degraded with the
    reason; once it can write again, as ok."""
    store = relay.broadcaster.store
    assert store is not None
    creator = await connect()
    await creator.handshake()
    await creator.create_room("studio")
    store.limit_size(1)  # no page beyond those the file already has
    big = room_command(MessageType.BLENDER_DATA_UPDATE, bytes(256 * 1024))
    states = []
    for _ in range(200):
        await creator.send_raw(big)
        states.append((await relay.control.snapshot()).totals.store_state)
        if states[-1] != "ok":
            break

        await anyio.sleep(0.05)

    store.limit_size(0)
    for _ in range(200):
        if (await relay.control.snapshot()).totals.store_state == "ok":
            break

        await anyio.sleep(0.05)

    assert states[-1] is not None and states[-1].startswith("degraded: ")
    assert "full" in states[-1]
    assert (await relay.control.snapshot()).totals.store_state == "ok"


async def test_events_after_a_number_past_the_newest(
    relay: RelayServer, connect: Connect
) -> None:
    """Asking for events after a number far past the newest, or for a huge limit,
    answers plainly; it used to raise ValueError from islice (an "internal" error
    over the admin socket)."""
    client = await connect()
    await client.handshake()
    newest = (await relay.control.events(0))[-1].seq

    assert await relay.control.events(2**64) == []
    assert await relay.control.events(newest) == []
    assert len(relay.broadcaster.events.after(0, 2**64)) >= 1
    assert relay.broadcaster.events.after(newest - 1, 2**64)[-1].seq == newest


async def test_artist_text_is_shortened_in_the_snapshot(
    relay: RelayServer, connect: Connect
) -> None:
    """A user name and room versions of a megabyte each are shown shortened: the
    snapshot used to carry them whole, so an add-on sending tens of megabytes
    made every answer too large for attached consoles (64 MiB) to read."""
    artist = await connect()
    await artist.handshake("n" * 1_000_000)
    await artist.send(
        MessageType.JOIN_ROOM,
        join_payload("studio", blender_version="b" * 1_000_000, mixer_version="1"),
    )
    await artist.expect(MessageType.JOIN_ROOM)

    snapshot = await relay.control.snapshot()

    (view,) = snapshot.artists
    (room,) = snapshot.rooms
    assert view.user_name is not None
    assert view.user_name.startswith("nnn") and len(view.user_name) <= 256
    assert room.blender_version.startswith("bbb") and len(room.blender_version) <= 256
    assert room.mixer_version == "1"
    assert len(json.dumps(encode_result(snapshot))) < 10_000


async def test_a_joiner_s_replayed_history_counts_as_commands_out(
    relay: RelayServer, connect: Connect
) -> None:
    """The commands a joiner receives from the history count in its commands out,
    as their bytes count in its bytes out; they used to be left out, so a joiner
    streaming a large history showed megabytes per second and no commands."""
    creator = await connect()
    await creator.handshake()
    await creator.create_room("studio", commands=[COMMAND] * 50)
    joiner = await connect()
    await joiner.handshake()
    before = relay.broadcaster.clients[joiner.client_id].frames_out

    received = await joiner.join_room("studio")

    client = relay.broadcaster.clients[joiner.client_id]
    assert len(received) == 50
    assert client.frames_out - before >= 50
    assert client.bytes_out >= 50 * len(COMMAND)
