"""The relay's settings, read once from ``MIXER_*`` environment variables."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from relay.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the relay can be told; each field names its variable."""

    host: str = "0.0.0.0"
    """``MIXER_HOST``: address to listen on (all interfaces, like the original)."""

    port: int = 12800
    """``MIXER_PORT``: TCP port for Mixer clients."""

    max_frame_bytes: int = 1024 * MIB
    """``MIXER_MAX_FRAME_BYTES``: largest payload accepted in one frame."""

    client_buffer_bytes: int = 256 * MIB
    """``MIXER_CLIENT_BUFFER_BYTES``: outgoing bytes one client may fall behind
    before it is disconnected (one frame larger than this still passes alone)."""

    send_timeout: float = 60.0
    """``MIXER_SEND_TIMEOUT``: seconds a send may make no progress before the
    client is disconnected (a peer that acknowledges but no longer reads)."""

    frame_timeout: float = 120.0
    """``MIXER_FRAME_TIMEOUT``: seconds a partly received frame may wait for its
    next bytes before the client is disconnected."""

    keepalive_idle: int = 30
    """``MIXER_KEEPALIVE_IDLE``: seconds of silence before TCP keepalive probes;
    an unreachable peer is dropped about this plus 30 seconds later."""

    room_update_interval: float = 0.05
    """``MIXER_ROOM_UPDATE_INTERVAL``: seconds over which a room's command_count
    and byte_size updates are coalesced into one ROOM_UPDATE."""

    data_dir: Path = field(
        default_factory=lambda: platformdirs.user_data_path("mixer-console")
    )
    """``MIXER_DATA_DIR``: where the rooms database lives (created if missing)."""

    store_flush_interval: float = 0.05
    """``MIXER_STORE_FLUSH_INTERVAL``: seconds a stored command may wait before it
    is written; a crash loses at most this much."""

    store_batch_size: int = 2000
    """``MIXER_STORE_BATCH_SIZE``: changes written in one transaction at most;
    a full batch is written at once."""

    store_cache_bytes: int = 32 * MIB
    """``MIXER_STORE_CACHE_BYTES``: SQLite page cache, per connection."""

    store_max_bytes: int = 0
    """``MIXER_STORE_MAX_BYTES``: cap on the database file (0: none); past it the
    store is degraded as if the disk were full."""

    store_max_unwritten_bytes: int = 256 * MIB
    """``MIXER_STORE_MAX_UNWRITTEN_BYTES``: room commands the store may hold in
    memory before writing them; past it, room members are not read until the
    store catches up (TCP holds the senders back)."""

    room_grace: float = 600.0
    """``MIXER_ROOM_GRACE``: seconds a room that was live when the relay stopped
    waits, after a restart, for its artists to rejoin."""

    raft_self: str | None = None
    """``MIXER_RAFT_SELF``: this node's Raft address, host:port (clustered only)."""

    raft_peers: tuple[str, ...] = ()
    """``MIXER_RAFT_PEERS``: the other nodes' Raft addresses, comma-separated;
    none (the default) runs a single relay with no Raft at all."""

    raft_secret: str = field(default="", repr=False)
    """``MIXER_RAFT_SECRET``: shared by every node, required with peers; it
    encrypts and authenticates all Raft traffic, and is never logged."""

    raft_compaction_entries: int = 5000
    """``MIXER_RAFT_COMPACTION_ENTRIES``: Raft log entries kept before the log is
    compacted into a snapshot of the database."""

    log_level: str = "INFO"
    """``MIXER_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR."""

    log_format: str = "auto"
    """``MIXER_LOG_FORMAT``: json, text, or auto (text on a terminal, else json)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Build settings from an environment mapping.

        Raises:
            ConfigError: listing every variable whose value is unusable.
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        for item in fields(cls):
            variable = "MIXER_" + item.name.upper()
            if variable not in env:
                continue

            try:
                values[item.name] = _PARSERS[item.name](env[variable])
            except ValueError as exc:
                problems.append(f"{variable}={env[variable]!r}: {exc}")

        problems.extend(_cluster_problems(values))
        if problems:
            raise ConfigError(problems)

        return cls(**values)

    @property
    def is_clustered(self) -> bool:
        """Tell whether this relay is one node of a Raft cluster."""
        return bool(self.raft_peers)


# Below this length a shared secret can be guessed offline from captured traffic.
MIN_SECRET_CHARS = 16


def _cluster_problems(values: Mapping[str, Any]) -> list[str]:
    """The settings that only make sense together (never quoting the secret)."""
    peers = values.get("raft_peers", ())
    own = values.get("raft_self")
    secret = values.get("raft_secret", "")
    problems: list[str] = []
    if peers and own is None:
        problems.append("MIXER_RAFT_PEERS needs MIXER_RAFT_SELF (this node's address)")

    if own is not None and not peers:
        problems.append("MIXER_RAFT_SELF needs MIXER_RAFT_PEERS (the other nodes)")

    if own is not None and own in peers:
        problems.append(f"MIXER_RAFT_PEERS lists this node itself ({own})")

    if peers and not secret:
        problems.append(
            "MIXER_RAFT_SECRET is required with MIXER_RAFT_PEERS: without it anyone "
            "who reaches a Raft port could run code on the node"
        )
    elif peers and len(secret) < MIN_SECRET_CHARS:
        problems.append(
            f"MIXER_RAFT_SECRET must be at least {MIN_SECRET_CHARS} characters"
        )

    return problems


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None

    if value != value:  # NaN compares unequal to itself
        raise ValueError("must be a number")

    return value


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise ValueError("must be a positive integer")

    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")

    return value


def _seconds(maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text)
        if not 0 < value <= maximum:
            raise ValueError(
                f"must be a number of seconds above 0, at most {maximum:.0f}"
            )

        return value

    return parse


def _whole_seconds(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _integer(text)
        if not 0 < value <= maximum:
            raise ValueError(f"must be a whole number of seconds from 1 to {maximum}")

        return value

    return parse


# The kernel's limits: TCP_KEEPIDLE is at most 32767 s, and TCP_USER_TIMEOUT takes
# the send timeout in milliseconds as a signed 32-bit integer.
MAX_KEEPALIVE_IDLE = 32767
MAX_SEND_TIMEOUT = 2_147_483.0
MAX_TIMEOUT = 7 * 24 * 3600.0


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")

    return value


def _directory(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")

    return Path(text).expanduser()


def _host(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")

    return text.strip()


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        for option in allowed:
            if value.lower() == option.lower():
                return option

        raise ValueError("must be one of " + ", ".join(allowed))

    return parse


def _address(text: str) -> str:
    host, separator, port = text.strip().rpartition(":")
    if not separator or not host:
        raise ValueError("must be host:port")

    number = _port(port)
    if number == 0:
        raise ValueError("must name a port from 1 to 65535")

    return f"{host}:{number}"


def _addresses(text: str) -> tuple[str, ...]:
    items = [item for item in text.split(",") if item.strip()]
    addresses = tuple(_address(item) for item in items)
    if len(set(addresses)) != len(addresses):
        raise ValueError("lists an address twice")

    return addresses


def _secret(text: str) -> str:
    # Never fails, so a ConfigError never quotes the secret's value.
    return text


def _compaction_entries(text: str) -> int:
    value = _integer(text)
    if value < 2:
        raise ValueError("must be a whole number of at least 2")

    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": _host,
    "port": _port,
    "max_frame_bytes": _positive_int,
    "client_buffer_bytes": _positive_int,
    "send_timeout": _seconds(MAX_SEND_TIMEOUT),
    "frame_timeout": _seconds(MAX_TIMEOUT),
    "keepalive_idle": _whole_seconds(MAX_KEEPALIVE_IDLE),
    "room_update_interval": _seconds(60.0),
    "data_dir": _directory,
    "store_flush_interval": _seconds(60.0),
    "store_batch_size": _positive_int,
    "store_cache_bytes": _positive_int,
    "store_max_bytes": _non_negative_int,
    "store_max_unwritten_bytes": _positive_int,
    "room_grace": _seconds(MAX_TIMEOUT),
    "raft_self": _address,
    "raft_peers": _addresses,
    "raft_secret": _secret,
    "raft_compaction_entries": _compaction_entries,
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "log_format": _choice("auto", "json", "text"),
}
