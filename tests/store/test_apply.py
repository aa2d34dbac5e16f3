"""The applier: committed entries become the same rows on every node, once."""

from pathlib import Path

import pytest

from relay.protocol import HEADER, encode_frame, encode_string
from store.access import LeaseRecord
from store.apply import (
    AuditAppended,
    BanLifted,
    BanSet,
    CommandCommitted,
    EntryApplier,
    LeaseGranted,
    LeaseRevoked,
    OperationSkipped,
    RoomForked,
    RoomRewound,
    RoomSaved,
)
from store.operators import AuditRecord, BanRecord
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


# Leases, bans and the audit log: rows carry the proposer's times.


def lease_op(address: str = "10.0.0.5", origin: str = "n1") -> tuple[object, ...]:
    return ("lease", origin, address, "octocat", 100.0, 3700.0, "browser")


def access_rows(db) -> dict[str, list[tuple[object, ...]]]:
    return {
        "leases": db.execute("SELECT * FROM leases ORDER BY address").fetchall(),
        "bans": db.execute("SELECT * FROM bans ORDER BY subject").fetchall(),
        "audit": db.execute("SELECT * FROM audit ORDER BY id").fetchall(),
    }


def test_apply_lease_grant_and_revoke(db) -> None:
    """A granted lease is written as proposed; a revocation deletes it and tells
    the relay which address to close."""
    applier = EntryApplier(db)
    granted = applier.apply(1, "s", 1, [lease_op()])

    assert granted.events == (
        LeaseGranted(
            "n1", LeaseRecord("10.0.0.5", "octocat", 100.0, 3700.0, "browser")
        ),
    )
    assert access_rows(db)["leases"] == [
        ("10.0.0.5", "octocat", 100.0, 3700.0, "browser")
    ]

    revoked = applier.apply(2, "s", 2, [("unlease", "n2", "10.0.0.5")])

    assert revoked.events == (LeaseRevoked("n2", "10.0.0.5"),)
    assert access_rows(db)["leases"] == []


def test_apply_ban_set_replace_and_lift(db) -> None:
    """A ban on a subject replaces the previous one; a lift deletes it."""
    applier = EntryApplier(db)
    applier.apply(1, "s", 1, [("ban", "n1", "address:10.0.0.5", 500.0, "a", "ops")])
    again = applier.apply(
        2, "s", 2, [("ban", "n1", "address:10.0.0.5", 900.0, "b", "ops")]
    )

    assert again.events == (
        BanSet("n1", BanRecord("address:10.0.0.5", 900.0, "b", "ops")),
    )
    assert access_rows(db)["bans"] == [("address:10.0.0.5", 900.0, "b", "ops")]

    lifted = applier.apply(3, "s", 3, [("unban", "n1", "address:10.0.0.5")])

    assert lifted.events == (BanLifted("n1", "address:10.0.0.5"),)
    assert access_rows(db)["bans"] == []


def test_apply_audit_rows_equal_on_two_nodes(tmp_path: Path) -> None:
    """Two nodes applying the same entries write the same audit rows, with the
    proposer's time, not their own."""
    entries = [
        (1, "s", 1, [("audit", "n1", 12.5, "ops", "kick", "c1", "banned")]),
        (2, "t", 1, [("audit", "n2", 13.0, "ops", "lift_ban", "address:x", "")]),
    ]
    tables = []
    for name in ("a", "b"):
        node_db = open_database(tmp_path / f"{name}.sqlite", 1 << 20)
        applier = EntryApplier(node_db)
        events = [applier.apply(*entry).events for entry in entries]
        tables.append(access_rows(node_db)["audit"])
        node_db.conn.close()

    assert events[0] == (
        AuditAppended("n1", AuditRecord(12.5, "ops", "kick", "c1", "banned")),
    )
    assert tables[0] == tables[1]
    assert [row[1:] for row in tables[0]] == [
        (12.5, "ops", "kick", "c1", "banned"),
        (13.0, "ops", "lift_ban", "address:x", ""),
    ]


def test_apply_access_replays_and_retries_write_once(db) -> None:
    """A replayed index and a retried number write no second audit row or ban."""
    applier = EntryApplier(db)
    operations = [
        ("audit", "n1", 1.0, "ops", "kick", "c1", ""),
        ("ban", "n1", "login:octocat", 50.0, "kicked", "ops"),
        lease_op(),
    ]
    first = applier.apply(4, "s", 1, operations)
    replayed = applier.apply(4, "s", 1, operations)
    retried = applier.apply(5, "s", 1, operations)

    assert len(first.events) == 3
    assert replayed.events == retried.events == ()
    rows_now = access_rows(db)
    assert len(rows_now["audit"]) == 1
    assert len(rows_now["bans"]) == 1
    assert len(rows_now["leases"]) == 1


def test_apply_access_survives_a_restarted_applier(tmp_path: Path) -> None:
    """After a restart the applier skips what it applied: a lease revoked later
    in the log is not brought back by a replay of its grant."""
    path = tmp_path / "rooms.sqlite"
    first_db = open_database(path, 1 << 20)
    applier = EntryApplier(first_db)
    applier.apply(1, "s", 1, [lease_op()])
    applier.apply(2, "s", 2, [("unlease", "n1", "10.0.0.5")])
    first_db.conn.close()

    second_db = open_database(path, 1 << 20)
    restarted = EntryApplier(second_db)
    replayed = restarted.apply(1, "s", 1, [lease_op()])

    assert replayed.events == ()
    assert access_rows(second_db)["leases"] == []
    second_db.conn.close()


@pytest.mark.parametrize(
    "operation",
    [
        ("lease", "n1", "10.0.0.5", "octocat", "soon", 3700.0, "browser"),
        ("lease", "n1", "10.0.0.5"),
        ("ban", "n1", "address:x", True, "r", "ops"),
        ("audit", "n1", 1.0, "ops", ["kick"], "c1", ""),
        ("unban", "n1", None),
    ],
)
def test_apply_malformed_access_operation_is_skipped(db, operation) -> None:
    """A malformed operation writes nothing and does not stop the entry: the
    operation after it is applied."""
    applier = EntryApplier(db)
    applied = applier.apply(1, "s", 1, [operation, lease_op("10.0.0.9")])

    assert [type(event) for event in applied.events] == [LeaseGranted]
    rows_now = access_rows(db)
    assert rows_now["bans"] == rows_now["audit"] == []
    assert [row[0] for row in rows_now["leases"]] == ["10.0.0.9"]


def seeded(db, count: int) -> EntryApplier:
    """An applier whose room "r" holds ``count`` commands /p0, /p1, ..."""
    applier = EntryApplier(db)
    operations: list[tuple[object, ...]] = [room_op()]
    for index in range(count):
        wire = encode_frame(300, encode_string(f"/p{index}") + bytes(10))
        operations.append(command_op(wire, kind=300))

    applier.apply(2, "s", 1, operations)
    return applier


def history(db, room: str) -> list[bytes]:
    return [
        row[0]
        for row in db.execute(
            "SELECT wire FROM commands WHERE room_id = "
            "(SELECT id FROM rooms WHERE name = ?) ORDER BY seq",
            [room],
        )
    ]


def test_apply_fork_copies_the_first_commands_into_a_new_room(db) -> None:
    """Every node copies the same prefix with the same new numbers; the event
    says what the relay needs to serve the fork without reading it."""
    applier = seeded(db, 5)
    entry = applier.apply(3, "s", 2, [("fork", "n2", "r", 3, "r-at-3", 7.5)])

    (forked,) = entry.events
    assert isinstance(forked, RoomForked)
    assert (forked.origin, forked.source, forked.count) == ("n2", "r", 3)
    assert forked.record.name == "r-at-3" and forked.record.joinable
    assert forked.record.created_at == 7.5
    assert history(db, "r-at-3") == history(db, "r")[:3]
    assert forked.byte_size == sum(len(wire) for wire in history(db, "r")[:3])
    assert forked.last is not None and forked.last.merge_key == b"/p2"
    assert forked.last.seq == max(
        row[0] for row in db.execute("SELECT seq FROM commands")
    )

    later = encode_frame(300, encode_string("/new") + b"x")
    applier.apply(4, "s", 3, [command_op(later, room="r-at-3", kind=300)])
    assert history(db, "r-at-3")[-1] == later


def test_apply_rewind_cuts_the_history_and_the_merge_rule_follows(db) -> None:
    applier = seeded(db, 5)
    entry = applier.apply(3, "s", 2, [("rewind", "n2", "r", 2)])

    (rewound,) = entry.events
    assert isinstance(rewound, RoomRewound)
    assert (rewound.name, rewound.count) == ("r", 2)
    assert len(history(db, "r")) == 2
    assert rewound.last is not None and rewound.last.merge_key == b"/p1"

    # The newest command is /p1 again, so a new /p1 replaces it.
    again = encode_frame(300, encode_string("/p1") + b"y")
    applier.apply(4, "s", 3, [command_op(again, kind=300)])
    assert history(db, "r")[-1] == again and len(history(db, "r")) == 2


@pytest.mark.parametrize(
    "operation, reason",
    [
        (("fork", "n2", "r", 9, "r-at-9", 1.0), "no longer has 9 commands"),
        (("fork", "n2", "gone", 1, "other", 1.0), "no longer has 1 commands"),
        (("fork", "n2", "r", 1, "r", 1.0), "was created meanwhile"),
        (("rewind", "n2", "r", 9), "no longer has 9 commands"),
    ],
)
def test_apply_fork_or_rewind_the_log_outran_is_skipped(
    db, operation: tuple[object, ...], reason: str
) -> None:
    """What the operator measured can be gone once the entry commits (merges,
    a deletion, another room of that name): every node skips it alike."""
    applier = seeded(db, 5)
    before = rows(db)

    (skipped,) = applier.apply(3, "s", 2, [operation]).events

    assert isinstance(skipped, OperationSkipped)
    assert reason in skipped.reason and skipped.origin == "n2"
    assert rows(db) == before


def test_apply_rewind_of_a_room_gone_is_skipped_with_its_reason(db) -> None:
    """Regression: a rewind whose room was deleted before it committed was
    dropped without a word, so the operator who asked waited the whole timeout
    and was told it might still take effect later."""
    applier = seeded(db, 5)
    applier.apply(3, "s", 2, [("delete", "n1", "r")])

    (skipped,) = applier.apply(4, "s", 3, [("rewind", "n2", "r", 1)]).events

    assert isinstance(skipped, OperationSkipped)
    assert (skipped.action, skipped.room, skipped.origin) == ("rewind", "r", "n2")
    assert "no room named 'r'" in skipped.reason


@pytest.mark.parametrize(
    "cut",
    [("rewind", "n2", "r", 2), ("delete", "n2", "r")],
    ids=["rewind", "delete"],
)
def test_apply_restarted_node_numbers_commands_as_the_others(
    tmp_path: Path, cut: tuple[object, ...]
) -> None:
    """Regression: a node restarted after a rewind (or a deletion) cut the newest
    commands numbered its next commands from what was left, lower than the nodes
    that kept running, so their rows never matched again."""
    later = [
        (4, 3, [room_op("b"), command_op(encode_frame(150, b"after"), "b")]),
        (5, 4, [command_op(encode_frame(150, b"again"), "b")]),
    ]
    results = []
    for name in ("running", "restarted"):
        path = tmp_path / f"{name}.sqlite"
        database = open_database(path, 1 << 20)
        applier = seeded(database, 5)
        applier.apply(3, "s", 2, [cut])
        if name == "restarted":
            database.conn.close()
            database = open_database(path, 1 << 20)
            applier = EntryApplier(database)

        for index, number, operations in later:
            applier.apply(index, "s", number, operations)

        results.append(rows(database))
        database.conn.close()

    assert results[0] == results[1]


def test_apply_fork_keeps_its_row_when_an_artist_created_the_name_meanwhile(
    db,
) -> None:
    """Regression: an artist on another node creating the fork's name while the
    fork was being committed had its room's row committed after the fork's, which
    overwrote the fork's versions and made it unjoinable; that creation is now
    skipped and the fork's row and commands stay as copied."""
    applier = seeded(db, 5)
    applier.apply(3, "s", 2, [("fork", "n2", "r", 3, "f", 7.5)])
    fork_rows = rows(db)
    artists_room = (
        "room",
        "n1",
        "f",
        "4.0",
        "2.0",
        False,
        True,
        False,
        False,
        "{}",
        9.0,
    )

    applied = applier.apply(4, "s", 3, [artists_room])

    assert applied.events == ()
    assert rows(db) == fork_rows


def test_apply_room_changed_on_its_own_node_is_saved(db) -> None:
    """A change to an existing room (same creation time) is still written."""
    applier = seeded(db, 1)
    changed = ("room", "n2", "r", "3.4", "1.0", False, True, True, True, "{}", 1.0)

    (saved,) = applier.apply(3, "s", 2, [changed]).events

    assert isinstance(saved, RoomSaved) and saved.record.keep_open


@pytest.mark.parametrize("count", [0, 5], ids=["nothing", "everything"])
def test_apply_fork_and_rewind_at_either_end(db, count: int) -> None:
    """A fork of no command is an empty room and one of every command a whole
    copy; a rewind to 0 empties the room and one to its length keeps it whole."""
    applier = seeded(db, 5)
    whole = history(db, "r")

    (forked,) = applier.apply(3, "s", 2, [("fork", "n2", "r", count, "f", 2.0)]).events
    (rewound,) = applier.apply(4, "s", 3, [("rewind", "n2", "r", count)]).events

    assert isinstance(forked, RoomForked) and isinstance(rewound, RoomRewound)
    assert history(db, "f") == history(db, "r") == whole[:count]
    assert forked.count == rewound.count == count
    assert (forked.last is None) == (rewound.last is None) == (count == 0)
