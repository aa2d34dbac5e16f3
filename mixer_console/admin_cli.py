"""The admin commands of ``mixer-console``: list, export, import and delete rooms.

::

    mixer-console rooms [--json]
    mixer-console room export NAME FILE
    mixer-console room import FILE [--name NEW]
    mixer-console room delete NAME
    mixer-console leases [--json]
    mixer-console lease revoke ADDRESS

They read the relay's settings from the same ``MIXER_*`` variables (the data
directory is ``MIXER_DATA_DIR``) and take the data directory's lock, so they
refuse to run while a relay uses it, and a relay cannot start while one works.

Exit status:

- 0: done;
- 2: bad usage or configuration (an option, a ``MIXER_*`` variable, an empty
  room name);
- 4: the store is unavailable: a running relay holds the data directory, the
  database is another program's or from a newer mixer-console, or it cannot be
  read or written (full, say);
- 5: the room file is invalid (truncated, corrupt, not a room file), cannot be
  read, or cannot be written;
- 6: no room of that name (export, delete), or one exists already (import);
  no lease for that address (lease revoke).

A lease revoked here is gone when the relay next starts. On a running relay,
``--relay URL`` does it as an operator (see :mod:`mixer_console.remote_leases`),
and the address's connections are closed too; so does the console.

A failed import or delete changes nothing; a failed export leaves no file.
"""

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from mixer_console import cluster_cli, remote_leases
from mixer_console.console.format import format_bytes
from mixer_console.listing import format_leases, printable
from mixer_console.relay_url import relay_url
from relay.config import Settings
from relay.errors import ConfigError
from store.admin import AdminStore, RoomInfo
from store.errors import Conflict, NotFound, StoreError
from store.replication import JOURNAL_NAME
from store.roomfile import RoomFileError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_STORE = 4
EXIT_ROOM_FILE = 5
EXIT_ROOM = 6
EXIT_INTERRUPTED = 130

# Room commands that write the database: a cluster node's database is written
# only by applying the Raft log.
CHANGES = frozenset({"import", "delete"})


def add_commands(parser: argparse.ArgumentParser) -> "argparse._SubParsersAction[Any]":
    """Add the admin subcommands to the ``mixer-console`` parser; with none given,
    ``arguments.command`` is None (run the relay). Returns the subcommands, for
    others to add theirs."""
    commands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        title="admin commands (rooms and room run while no relay uses the data "
        "directory; cluster talks to running nodes)",
    )
    rooms = commands.add_parser(
        "rooms",
        help="list the stored rooms",
        description="List the rooms stored in MIXER_DATA_DIR with their command "
        "counts, sizes, flags and versions.",
    )
    rooms.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array, one object per room (for scripts)",
    )

    room = commands.add_parser(
        "room",
        help="export, import or delete one room",
        description="Move one room between the store and a room file (the "
        "format the Mixer add-on downloads and uploads), or delete it.",
    )
    actions = room.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write a room to a room file",
        description="Write a room's attributes and history to FILE (replaced "
        "if it exists, only once complete).",
    )
    export.add_argument("name", metavar="NAME", help="the room to export")
    export.add_argument("file", metavar="FILE", type=Path, help="the file to write")

    load = actions.add_parser(
        "import",
        help="create a room from a room file",
        description="Validate FILE whole, then create the room and its history "
        "in one transaction. The room keeps the file's attributes and is joinable.",
    )
    load.add_argument("file", metavar="FILE", type=Path, help="the room file")
    load.add_argument(
        "--name", help="the room's name (default: FILE's name without extension)"
    )

    delete = actions.add_parser(
        "delete",
        help="delete a room and its history",
        description="Delete a room and its whole history from the store.",
    )
    delete.add_argument("name", metavar="NAME", help="the room to delete")
    cluster_cli.add_commands(commands)

    leases = commands.add_parser(
        "leases",
        help="list the addresses a GitHub login lets connect",
        description="List the leases in force: address, GitHub login, how it "
        "was granted and until when.",
    )
    leases.add_argument("--json", action="store_true", help="print a JSON array")
    leases.add_argument(
        "--relay",
        metavar="URL",
        type=relay_url,
        help="ask this running relay instead, as an operator (token in "
        "MIXER_OPERATOR_TOKEN)",
    )
    lease = commands.add_parser(
        "lease",
        help="revoke a lease",
        description="Revoke an address's lease; the revocation goes to the "
        "audit log under your user name.",
    )
    lease_actions = lease.add_subparsers(dest="action", metavar="ACTION", required=True)
    revoke = lease_actions.add_parser("revoke", help="revoke an address's lease")
    revoke.add_argument("address", metavar="ADDRESS", help="the leased address")
    revoke.add_argument(
        "--relay",
        metavar="URL",
        type=relay_url,
        help="revoke on this running relay, as an operator (token in "
        "MIXER_OPERATOR_TOKEN); its connections from ADDRESS are closed",
    )
    return commands


def run(
    arguments: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the admin command that ``arguments`` hold; return the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    env = os.environ if env is None else env
    if getattr(arguments, "relay", None):
        return remote_leases.run(arguments, env, out, err)

    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_USAGE

    if arguments.command == "cluster":
        # Talks to the running nodes: no data directory, no lock.
        return cluster_cli.run(arguments, settings, out, err)

    if getattr(arguments, "action", None) in CHANGES:
        if settings.is_clustered:
            err.write(
                f"mixer-console: room {arguments.action} would change this node's "
                "database alone, and the cluster's nodes would then differ; run it "
                "against a single relay (without MIXER_RAFT_PEERS)\n"
            )
            return EXIT_USAGE

        if (settings.data_dir / JOURNAL_NAME).exists():
            err.write(
                f"mixer-console: {settings.data_dir} is a cluster node's data folder "
                f"(it holds {JOURNAL_NAME}): room {arguments.action} would change "
                "this node's database alone, and the cluster's nodes would then "
                "differ\n"
            )
            return EXIT_USAGE

    try:
        with AdminStore.open(
            settings.data_dir,
            cache_bytes=settings.store_cache_bytes,
            max_bytes=settings.store_max_bytes,
        ) as admin:
            return _dispatch(admin, arguments, settings, out)
    except RoomFileError as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_ROOM_FILE
    except (NotFound, Conflict) as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_ROOM
    except StoreError as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_STORE
    except ValueError as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("mixer-console: interrupted; nothing was changed\n")
        return EXIT_INTERRUPTED


def _dispatch(
    admin: AdminStore, arguments: argparse.Namespace, settings: Settings, out: TextIO
) -> int:
    if arguments.command == "rooms":
        rooms = admin.list_rooms()
        if arguments.json:
            out.write(json.dumps([_room_json(room) for room in rooms], indent=2))
            out.write("\n")
        else:
            out.write(format_table(rooms, admin.path))

        return EXIT_OK

    if arguments.command == "leases":
        held = admin.list_leases(time.time())
        if arguments.json:
            out.write(json.dumps([vars(lease) for lease in held], indent=2) + "\n")
        else:
            out.write(format_leases(held))

        return EXIT_OK

    if arguments.command == "lease":
        revoked = admin.revoke_lease(
            arguments.address, f"local:{getpass.getuser()}", time.time()
        )
        out.write(f"revoked the lease of {revoked.login} on {revoked.address}\n")
        return EXIT_OK

    action = arguments.action
    if action == "export":
        room = admin.export_room(arguments.name, arguments.file)
        out.write(
            f"exported room {_show(room.name)} to {arguments.file}: "
            f"{_commands(room.command_count)}, {format_bytes(room.byte_size)}\n"
        )
    elif action == "import":
        room = admin.import_room(
            arguments.file, arguments.name, settings.max_frame_bytes
        )
        out.write(
            f"imported room {_show(room.name)} from {arguments.file}: "
            f"{_commands(room.command_count)}, {format_bytes(room.byte_size)}\n"
        )
        if not room.record.keep_open:
            out.write(
                "note: keep_open is false: the relay will delete the room if "
                f"nobody joins it within {settings.room_grace:g} s of starting "
                "(MIXER_ROOM_GRACE)\n"
            )
    else:
        room = admin.delete_room(arguments.name)
        out.write(
            f"deleted room {_show(room.name)}: {_commands(room.command_count)}, "
            f"{format_bytes(room.byte_size)}\n"
        )

    return EXIT_OK


def format_table(rooms: list[RoomInfo], database: Path) -> str:
    """The rooms as an aligned text table, one line per room."""
    if not rooms:
        return f"no rooms in {database}\n"

    header = ("ROOM", "COMMANDS", "SIZE", "KEEP OPEN", "JOINABLE", "BLENDER", "MIXER")
    rows = [header] + [
        (
            printable(room.name),
            str(room.command_count),
            format_bytes(room.byte_size),
            _yes(room.record.keep_open),
            _yes(room.record.joinable),
            printable(room.record.blender_version) or "-",
            printable(room.record.mixer_version) or "-",
        )
        for room in rooms
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    right = {1, 2}
    lines = [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _room_json(room: RoomInfo) -> dict[str, Any]:
    record = room.record
    return {
        "name": room.name,
        "command_count": room.command_count,
        "byte_size": room.byte_size,
        "keep_open": record.keep_open,
        "joinable": record.joinable,
        "blender_version": record.blender_version,
        "mixer_version": record.mixer_version,
        "ignore_version_check": record.ignore_version_check,
        "generic_protocol": record.generic_protocol,
        "custom": record.custom,
        "created_at": record.created_at,
    }


def _show(name: str) -> str:
    return repr(name) if name.isprintable() else ascii(name)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _commands(count: int) -> str:
    return f"{count} command" + ("" if count == 1 else "s")
