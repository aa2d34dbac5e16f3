"""The merge rule and rewinds against commands the store has already written:
their removal waits in the store's queue, and a reader of SQLite, arriving
meanwhile or reading while they happen, must not return what they removed
(found by wire7: 40 of 40 joiners got a replaced move, and break7)."""

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio.lowlevel
import anyio.to_thread
import pytest

from relay.config import Settings
from relay.history import History, LastCommand
from relay.protocol import FrameDecoder
from store.store import DATABASE_NAME, Store
from tests.mixer_client import MixerClient, room_command
from tests.relays import running_relay
from tests.store.stored_rows import command_rows

DRAG = 201  # a mergeable type: its payload starts with the object's path


def drag_to(position: bytes) -> bytes:
    """A move of one object: each replaces the one before in the history."""
    path = b"/Cube"
    return room_command(DRAG, len(path).to_bytes(4, "little") + path + position)


async def until_written(history: History) -> None:
    """Wait until the relay has let go of the commands its store wrote: only
    SQLite holds them then."""
    for _ in range(1000):
        if not history.has_unwritten:
            return

        await anyio.sleep(0.01)

    raise AssertionError("the store did not write the history in 10 s")


async def test_a_joiner_never_reads_a_command_merged_away_but_not_yet_removed(
    tmp_path: Path,
) -> None:
    """The store holds the first move; while another connection holds SQLite's
    write lock, the second move replaces it and a client joins: the joiner gets
    the second move only, once, as LIST_ROOMS counts one command; the store then
    ends with that one command."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        room_update_interval=0.01,
        data_dir=tmp_path / "data",
        store_flush_interval=0.01,
    )
    async with running_relay(settings) as server:
        mover = await MixerClient.connect(server.port)
        joiner = await MixerClient.connect(server.port)
        await mover.handshake("mover")
        await joiner.handshake("joiner")
        await mover.create_room("scene", commands=[drag_to(b"x=1")])
        history = server.broadcaster.rooms["scene"].history
        await until_written(history)

        writer = sqlite3.connect(settings.data_dir / DATABASE_NAME, timeout=10)
        try:
            writer.execute("BEGIN IMMEDIATE")  # the removal must wait for it
            await mover.send_raw(drag_to(b"x=2"))
            await mover.sync()
            replayed = await joiner.join_room("scene")
            rooms = await joiner.list_rooms()
        finally:
            writer.rollback()
            writer.close()

        assert [bytes(frame.wire) for frame in replayed] == [drag_to(b"x=2")]
        assert rooms["scene"]["command_count"] == 1
        store = server.broadcaster.store
        assert store is not None
        assert await anyio.to_thread.run_sync(store.journal.flush, 10)
        with sqlite3.connect(settings.data_dir / DATABASE_NAME) as reader:
            stored = [row[4] for row in command_rows(reader)]

        assert stored == [drag_to(b"x=2")]
        await mover.aclose()
        await joiner.aclose()


async def read_across(
    history: History, store: Store, meanwhile: Callable[[], Awaitable[object]]
) -> tuple[list[bytes], int]:
    """Read the whole stored history, paused inside SQLite (its view of the
    database taken) while ``meanwhile`` runs; return the frames and cursor."""
    reading, may_go_on = threading.Event(), threading.Event()

    def pause_once() -> int:
        # SQLite calls this on the store's read thread, mid-query.
        if not reading.is_set():
            reading.set()
            may_go_on.wait(10)

        return 0

    results: list[tuple[list[bytes], int]] = []

    async def read_all() -> None:
        frames, cursor = await history.read(0, history.last_seq, 1 << 20)
        results.append(([bytes(wire) for wire in frames], cursor))

    reader = store._reader.conn
    reader.set_progress_handler(pause_once, 1)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_all)
            assert await anyio.to_thread.run_sync(reading.wait, 10)
            await meanwhile()
            may_go_on.set()
    finally:
        reader.set_progress_handler(None, 0)
        may_go_on.set()

    [result] = results
    return result


@pytest.mark.parametrize("merges", [1, 200])
async def test_a_merge_during_a_history_read_drops_the_replaced_command(
    tmp_path: Path, merges: int
) -> None:
    """A read of the stored history that took its view before the merge rule
    replaced the newest command, and returns after the store wrote both the
    removal and the new command, does not return the replaced one (break7:
    8 of 8 joiners of a 60,000-command room got both moves), and is not thrown
    away however many merges came meanwhile (break8: a joiner of a big room
    waited as long as a fast drag went on)."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        store_flush_interval=0.01,
    )
    async with running_relay(settings) as server:
        mover = await MixerClient.connect(server.port)
        await mover.handshake("mover")
        first_moves = [drag_to(b"x=1"), room_command(DRAG + 1, b"other")]
        await mover.create_room("scene", commands=[*first_moves, drag_to(b"x=2")])
        store = server.broadcaster.store
        assert store is not None
        history = server.broadcaster.rooms["scene"].history
        await until_written(history)

        async def merge_and_write() -> None:
            for position in range(3, 3 + merges):
                history.append(
                    FrameDecoder(1 << 20).feed(drag_to(b"x=%d" % position))[0]
                )

            assert await anyio.to_thread.run_sync(store.journal.flush, 10)
            history.forget_written()  # the relay lets go of the written moves

        frames, cursor = await read_across(history, store, merge_and_write)
        assert frames == first_moves
        rest, _ = await history.read(cursor, history.last_seq, 1 << 20)
        assert [bytes(wire) for wire in rest] == [drag_to(b"x=%d" % (2 + merges))]
        await mover.aclose()


async def test_a_rewind_during_a_history_read_drops_what_it_cut(
    tmp_path: Path,
) -> None:
    """A read of the stored history that took its view before an operator's
    rewind does not return the commands the rewind cut."""
    settings = Settings(
        host="127.0.0.1", port=0, data_dir=tmp_path / "data", store_flush_interval=0.01
    )
    async with running_relay(settings) as server:
        mover = await MixerClient.connect(server.port)
        await mover.handshake("mover")
        moves = [room_command(DRAG + 1, b"%d" % index) for index in range(5)]
        await mover.create_room("scene", commands=moves)
        store = server.broadcaster.store
        assert store is not None
        history = server.broadcaster.rooms["scene"].history
        await until_written(history)
        first_seq = history.last_seq - len(moves) + 1
        kept = LastCommand(first_seq + 1, DRAG + 1, None, len(moves[1]))

        async def rewind() -> None:
            history.cut(kept, 2, len(moves[0]) + len(moves[1]))
            assert await anyio.to_thread.run_sync(store.journal.flush, 10)

        frames, _ = await read_across(history, store, rewind)

        assert frames == moves[:2]
        await mover.aclose()
