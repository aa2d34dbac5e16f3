"""The data folder's own files, which an exported room file must never replace.

A room file is renamed over its target once complete. Over the database (or a
file SQLite keeps beside it) the relay would write on into an unlinked file and
start with no rooms next time; over the lock a second relay could take the
folder; over a cluster node's Raft journal, snapshot or the bytes of a large
command the node would lose its log or a command; over a console's log a
running console would log on into the unlinked file, and the next one append
its lines to the room file. The console's export and
``mixer-console room export`` both ask here.
"""

from pathlib import Path

from relay.config import ATTACHED_CONSOLE_LOG_NAME, CONSOLE_LOG_NAME
from store.bulk import BULK_FOLDER
from store.replication import JOURNAL_NAME, SNAPSHOT_NAME
from store.store import DATABASE_NAME, LOCK_NAME

# The files SQLite keeps next to a database, by the suffix of their names.
DATABASE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def own_file_problem(path: Path, data_dir: Path) -> str | None:
    """Why writing a room file at ``path`` would replace one of the files of the
    data folder ``data_dir``, by name or through links; None when it would not.
    """
    try:
        target = path.resolve()
        folder = data_dir.resolve()
    except (OSError, RuntimeError):
        # Python 3.11 raises RuntimeError on a loop of links, later ones OSError.
        return (
            f"the export path {str(path)!r} goes through a loop of symbolic links "
            "or cannot be resolved"
        )

    if target.parent == folder / BULK_FOLDER:
        return (
            f"{str(path)!r} holds a large command's bytes for this cluster node; "
            "export elsewhere"
        )

    if target.parent != folder:
        return None

    name = target.name
    if name == LOCK_NAME:
        return (
            f"{str(path)!r} is the lock that keeps a second relay off this data "
            "folder; export elsewhere"
        )

    if name in (CONSOLE_LOG_NAME, ATTACHED_CONSOLE_LOG_NAME):
        return f"{str(path)!r} is the console's log ({name}); export elsewhere"

    if name in (DATABASE_NAME + suffix for suffix in DATABASE_COMPANIONS):
        return f"{str(path)!r} is the relay's own database ({name}); export elsewhere"

    # pysyncobj also writes temporary files beside these, named after them.
    if name.startswith((JOURNAL_NAME, SNAPSHOT_NAME)):
        return (
            f"{str(path)!r} is a cluster node's own Raft file ({name}); export "
            "elsewhere"
        )

    return None
