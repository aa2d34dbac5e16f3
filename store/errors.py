"""The store's exceptions, rooted in :class:`StoreError`."""


class StoreError(Exception):
    """Root of every error the store raises on purpose."""


class NotOurDatabase(StoreError):
    """Raised when a file exists at the store's path but is not a mixer-console
    database (another application's SQLite file, or not SQLite at all)."""


class NewerSchema(StoreError):
    """Raised when the database was written by a newer mixer-console whose schema
    this version cannot read; the file is left untouched."""


class Unopenable(StoreError):
    """Raised when the data directory, its lock file, or the database file and
    the files SQLite keeps beside it cannot be made, opened or written (a file
    or folder in the way, a full disk, no file descriptor left)."""


class StoreLocked(StoreError):
    """Raised when another process (a running relay) holds the data directory."""


class NotFound(StoreError):
    """Raised when a room asked for does not exist in the store."""


class Conflict(StoreError):
    """Raised when a room to create already exists."""


class CorruptRun(StoreError):
    """Raised when a stored run of commands does not split into its count of
    frames (the database file was damaged)."""
