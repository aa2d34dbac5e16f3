"""The applier: committed entries become the same rows on every node, once."""

from pathlib import Path

import pytest

from relay.protocol import HEADER, encode_frame, encode_string
from store.apply import CommandCommitted, EntryApplier, RoomSaved
from store.schema import open_database


def room_op(name: str = "r", origin: str = "n1") -> tuple[object, ...]:
    return ("room", origin, name, "3.4", "1.0", False, True, False, True, "{}", 1.0)


def command_op(wire: bytes, room: str = "r", kind: int = 150) -> tuple[object, ...]:
    return ("command", "n1", "c1", room, kind, wire)


def rows(applier_db) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return (
        applier_db.execute("SELECT * FROM rooms ORDER BY id").fetchall(),
        applier_db.execute("SELECT * FROM commands ORDER BY seq").fetchall(),
    )


@pytest.fixture
def db(tmp_path: Path):
    database = open_database(tmp_path / "rooms.sqlite", 1 << 20)
    yield database
    database.conn.close()


def test_apply_replayed_index_changes_nothing(db) -> None:
    """pysyncobj replays its journal after a restart: an index already applied
    is skipped, so no command is stored twice."""
    applier = EntryApplier(db)
    first = applier.apply(2, "s", 1, [room_op(), command_op(encode_frame(150, b"a"))])
    again = applier.apply(2, "s", 1, [room_op(), command_op(encode_frame(150, b"a"))])

    assert len(first.events) == 2
    assert again.events == ()
    assert len(rows(db)[1]) == 1


def test_apply_retried_entry_counts_once(db) -> None:
    """A proposal retried after a lost answer can be committed twice, at two
    indexes: the second copy is recognised by its id and skipped."""
    applier = EntryApplier(db)
    applier.apply(2, "s", 1, [room_op(), command_op(encode_frame(150, b"a"))])
    retried = applier.apply(3, "s", 1, [room_op(), command_op(encode_frame(150, b"a"))])

    assert retried.events == ()
    assert retried.raft_index == 3
    assert len(rows(db)[1]) == 1
    assert applier.applied_index == 3


def test_apply_merge_rule_replaces_newest(db) -> None:
    """Two mergeable commands on the same object leave only the newer one, as in
    a single relay's history."""
    applier = EntryApplier(db)
    first = encode_frame(300, encode_string("/obj") + b"1")
    second = encode_frame(300, encode_string("/obj") + b"2")
    applier.apply(2, "s", 1, [room_op(), command_op(first, kind=300)])
    applier.apply(3, "s", 2, [command_op(second, kind=300)])

    stored = rows(db)[1]
    assert [row[4] for row in stored] == [second]


def test_apply_parts_assemble_in_any_order(db) -> None:
    """A large command travels in parts; it is stored once all are in, whole,
    even when a retried part is committed last."""
    applier = EntryApplier(db)
    wire = encode_frame(150, b"x" * 1000)
    parts = [wire[:400], wire[400:800], wire[800:]]
    applier.apply(2, "s", 1, [room_op()])
    events = []
    for raft_index, part in zip((3, 4, 5), (2, 0, 1), strict=True):
        op = ("part", "n1", "c1", "r", 150, "k1", part, 3, parts[part])
        events.extend(applier.apply(raft_index, "s", raft_index - 1, [op]).events)

    assert len(events) == 1
    assert isinstance(events[0], CommandCommitted)
    assert events[0].wire == wire
    assert [row[4] for row in rows(db)[1]] == [wire]
    assert db.execute("SELECT count(*) FROM raft_parts").fetchone()[0] == 0


def test_apply_skips_malformed_operation_only(db) -> None:
    """A malformed operation is skipped and logged; the rest of its entry is
    applied and the index still advances (every node skips it alike)."""
    applier = EntryApplier(db)
    entry = [
        ("bogus",),
        ("room", "n1"),
        room_op(),
        ("command", "n1", "c1", "r", 150, b"short"),
        command_op(encode_frame(150, b"ok")),
    ]
    applied = applier.apply(2, "s", 1, entry)

    assert [type(event) for event in applied.events] == [RoomSaved, CommandCommitted]
    assert applier.applied_index == 2
    assert applier.apply(3, "s", 2, "not a list").events == ()
    assert applier.applied_index == 3


def test_apply_same_entries_same_rows(tmp_path: Path) -> None:
    """Two nodes applying the same entries end with identical rows, ids and
    sequence numbers included."""
    entries = [
        (2, 1, [room_op("a"), command_op(encode_frame(150, b"1"), "a")]),
        (3, 2, [room_op("b", "n2"), command_op(encode_frame(150, b"2"), "b")]),
        (4, 3, [("delete", "n1", "a"), command_op(encode_frame(150, b"3"), "b")]),
    ]
    results = []
    for name in ("one", "two"):
        database = open_database(tmp_path / f"{name}.sqlite", 1 << 20)
        applier = EntryApplier(database)
        for index, number, ops in entries:
            applier.apply(index, "s", number, ops)

        results.append(rows(database))
        database.conn.close()

    assert results[0] == results[1]
    assert [row[1] for row in results[0][0]] == ["b"]
    assert len(results[0][1]) == 2


def bodies(events) -> list[bytes]:
    return [
        event.wire[HEADER.size :] for event in events if type(event) is CommandCommitted
    ]


def test_apply_holds_entry_that_overtook_a_missing_one(db) -> None:
    """An entry committed ahead of its proposer's earlier one (lost with a
    leader, retried later) waits, and both are applied in proposer order."""
    applier = EntryApplier(db)
    applier.apply(2, "s", 1, [room_op()])
    held = applier.apply(3, "s", 3, [command_op(encode_frame(150, b"third"))])
    filled = applier.apply(4, "s", 2, [command_op(encode_frame(150, b"second"))])

    assert held.events == ()
    assert bodies(filled.events) == [b"second", b"third"]
    assert [row[4][HEADER.size :] for row in rows(db)[1]] == [b"second", b"third"]


def test_apply_abandonment_releases_what_was_held(db) -> None:
    """When the proposer gives up on a missing entry, what waited behind it is
    applied; the missing entry, if it is committed after all, is skipped."""
    applier = EntryApplier(db)
    applier.apply(2, "s", 1, [room_op()])
    applier.apply(3, "s", 3, [command_op(encode_frame(150, b"third"))])
    released = applier.apply(4, "s", 0, [("abandon", 2)])
    late = applier.apply(5, "s", 2, [command_op(encode_frame(150, b"second"))])

    assert released.abandoned == 2
    assert bodies(released.events) == [b"third"]
    assert late.events == ()
    assert db.execute("SELECT count(*) FROM raft_held").fetchone()[0] == 0


def test_apply_streams_are_independent(db) -> None:
    """A gap in one proposer's stream does not hold back another's entries."""
    applier = EntryApplier(db)
    applier.apply(2, "s", 1, [room_op()])
    applier.apply(3, "s", 3, [command_op(encode_frame(150, b"held"))])
    other = applier.apply(4, "t", 1, [command_op(encode_frame(150, b"other"))])

    assert bodies(other.events) == [b"other"]
