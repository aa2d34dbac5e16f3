"""Reading what a store wrote, with a plain connection, one entry per command."""

import sqlite3

from store.runs import split_run


def command_rows(
    connection: sqlite3.Connection,
) -> list[tuple[int, int, int, int, bytes]]:
    """Every stored command as (seq, room_id, kind, size, wire), in seq order,
    the runs that share a row split into their commands."""
    rows = connection.execute(
        "SELECT seq, room_id, kind, size, wire, count FROM commands ORDER BY seq"
    ).fetchall()
    commands: list[tuple[int, int, int, int, bytes]] = []
    for seq, room_id, kind, size, wire, count in rows:
        if count == 1:
            commands.append((seq, room_id, kind, size, bytes(wire)))
            continue

        for number, frame in enumerate(split_run(wire, count), start=seq):
            kind = int.from_bytes(frame[12:14], "little")
            commands.append((number, room_id, kind, len(frame), bytes(frame)))

    return commands
