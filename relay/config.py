"""The relay's settings, read once from ``MIXER_*`` environment variables."""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs

from relay.errors import ConfigError

MIB = 1024 * 1024

ADMIN_SOCKET_NAME = "admin.sock"

# The logs of the console hosting the relay, and of a console attached to one, in
# the data folder (they log apart).
CONSOLE_LOG_NAME = "console.log"
ATTACHED_CONSOLE_LOG_NAME = "console-attached.log"

# Linux's sun_path holds 108 bytes, the final NUL included.
MAX_SOCKET_PATH_BYTES = 107


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
    """``MIXER_STORE_BATCH_SIZE``: changes written in one transaction at most
    (the room commands of one client read count as one), and at most 2 MiB of
    commands; a full batch is written at once."""

    # Small on purpose: the store appends and reads histories in order, so a
    # large cache mostly held the pages of big commands, and the relay's memory.
    store_cache_bytes: int = 8 * MIB
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

    admin_socket: Path | Literal["off"] | None = None
    """``MIXER_ADMIN_SOCKET``: the Unix socket consoles attach to (default
    ``<MIXER_DATA_DIR>/admin.sock``), or ``off``; its directory must be one only
    the relay's user can enter."""

    raft_self: str | None = None
    """``MIXER_RAFT_SELF``: this node's Raft address, host:port (clustered only)."""

    raft_peers: tuple[str, ...] = ()
    """``MIXER_RAFT_PEERS``: the other nodes' Raft addresses, comma-separated;
    none (the default) runs a single relay with no Raft at all."""

    raft_secret: str = field(default="", repr=False, metadata={"secret": True})
    """``MIXER_RAFT_SECRET``: shared by every node, required with peers; it
    encrypts and authenticates all Raft traffic, and is never logged."""

    raft_compaction_entries: int = 5000
    """``MIXER_RAFT_COMPACTION_ENTRIES``: Raft log entries kept before the log is
    compacted into a snapshot of the database."""

    raft_snapshot_pace: int = 96_000_000
    """``MIXER_RAFT_SNAPSHOT_PACE``: bytes per second a snapshot's copy of the
    database may read and write, so that the copy leaves the disk to commits."""

    log_level: str = "INFO"
    """``MIXER_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR."""

    log_format: str = "auto"
    """``MIXER_LOG_FORMAT``: json, text, or auto (text on a terminal, else json)."""

    http_port: int = 12801
    """``MIXER_HTTP_PORT``: TCP port of the HTTP surface (health, metrics, login),
    on the same address as the relay."""

    auth: str = "none"
    """``MIXER_AUTH``: ``none`` (anyone who reaches the port joins) or ``github``
    (a GitHub login is required)."""

    github_client_id: str = field(default="", metadata={"env": "GITHUB_CLIENT_ID"})
    """``GITHUB_CLIENT_ID``: the OAuth app's client id."""

    github_client_secret: str = field(
        default="", repr=False, metadata={"env": "GITHUB_CLIENT_SECRET", "secret": True}
    )
    """``GITHUB_CLIENT_SECRET``: the OAuth app's client secret."""

    github_url: str = "https://github.com"
    """``MIXER_GITHUB_URL``: where GitHub's login pages are (GitHub Enterprise:
    its own address)."""

    github_api_url: str = "https://api.github.com"
    """``MIXER_GITHUB_API_URL``: GitHub's REST API (GitHub Enterprise:
    ``https://HOST/api/v3``)."""

    public_url: str = ""
    """``MIXER_PUBLIC_URL``: the HTTP surface as artists' browsers reach it, such
    as ``http://relay.studio:12801``; the OAuth callback is under it."""

    allow_users: frozenset[str] = frozenset()
    """``MIXER_ALLOW_USERS``: GitHub logins allowed in, comma separated (``*``:
    any GitHub account)."""

    allow_orgs: frozenset[str] = frozenset()
    """``MIXER_ALLOW_ORGS``: GitHub organisations whose active members are allowed
    in, comma separated."""

    operators: frozenset[str] = frozenset()
    """``MIXER_OPERATORS``: GitHub logins of the relay's operators, comma
    separated (operators are allowed in too)."""

    lease_ttl: float = 12 * 3600.0
    """``MIXER_LEASE_TTL``: seconds a login lets its address connect."""

    @property
    def is_login_required(self) -> bool:
        """Tell whether connections need a GitHub login."""
        return self.auth == "github"

    @property
    def login_url(self) -> str:
        """The page artists open to log in."""
        return self.public_url + "/login"

    def admin_socket_path(self) -> Path | None:
        """Where the admin endpoint listens; None when it is off."""
        if self.admin_socket == "off":
            return None

        return self.admin_socket or self.data_dir / ADMIN_SOCKET_NAME

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Build settings from an environment mapping.

        Raises:
            ConfigError: listing every variable whose value is unusable.
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        for item in fields(cls):
            variable = variable_name(item.name)
            if variable not in env:
                continue

            try:
                values[item.name] = _PARSERS[item.name](env[variable])
            except ValueError as exc:
                # A secret's value is never repeated, not even a wrong one.
                shown = "" if item.metadata.get("secret") else repr(env[variable])
                problems.append(f"{variable}={shown}: {exc}")

        # A variable that was set but refused would read as missing here.
        if not problems:
            problems = _cluster_problems(values)

        if problems:
            raise ConfigError(problems)

        settings = cls(**values)
        problems = settings._login_problems()
        if problems:
            raise ConfigError(problems)

        return settings

    @property
    def is_clustered(self) -> bool:
        """Tell whether this relay is one node of a Raft cluster."""
        return bool(self.raft_peers)

    def _login_problems(self) -> list[str]:
        """What a GitHub login needs and is not given."""
        if not self.is_login_required:
            return []

        needed = {
            "GITHUB_CLIENT_ID": self.github_client_id,
            "GITHUB_CLIENT_SECRET": self.github_client_secret,
            "MIXER_PUBLIC_URL": self.public_url,
        }
        problems = [
            f"{variable} is required with MIXER_AUTH=github"
            for variable, value in needed.items()
            if not value
        ]
        if not (self.allow_users or self.allow_orgs):
            problems.append(
                "MIXER_AUTH=github needs MIXER_ALLOW_USERS or MIXER_ALLOW_ORGS "
                "(MIXER_ALLOW_USERS=* lets any GitHub account in)"
            )

        return problems


def variable_name(field_name: str) -> str:
    """The environment variable that sets a :class:`Settings` field."""
    item = next(item for item in fields(Settings) if item.name == field_name)
    return str(item.metadata.get("env", "MIXER_" + field_name.upper()))


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

    problems.extend(_bulk_port_problems((own, *peers) if own is not None else ()))
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


def _bulk_port_problems(addresses: tuple[str, ...]) -> list[str]:
    """Each node also listens on its Raft port + 1 (store.bulk), on its host."""
    taken = set(addresses)
    problems = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if int(port) == 65535:
            problems.append(f"{address}: a Raft port must be below 65535")
        elif f"{host}:{int(port) + 1}" in taken:
            problems.append(
                f"{address}: the next port is another node's Raft port, but each "
                "node also listens on its Raft port + 1 for large commands"
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


def _admin_socket(text: str) -> Path | Literal["off"]:
    value = text.strip()
    if value.lower() == "off":
        return "off"

    if not value:
        raise ValueError("must be a socket path, or off")

    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError("must be an absolute path, or off")

    if len(bytes(path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"is {len(bytes(path))} bytes long; a Unix socket path holds at most "
            f"{MAX_SOCKET_PATH_BYTES}"
        )

    return path


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


def _text(text: str) -> str:
    return text.strip()


def parse_web_address(text: str) -> str:
    """An http(s) address as the relay and the commands that reach it take it,
    without its trailing slash.

    Raises:
        ValueError: saying what is wrong with it.
    """
    value = text.strip().rstrip("/")
    # Bytes that are not UTF-8 (a surrogate escape from the environment) fail
    # only when a request or a redirection is made, as a traceback.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be UTF-8 text") from None

    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("must be an http:// or https:// address") from None

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// address")

    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or a fragment")

    # urlsplit reads the port only when asked: a bad one would otherwise surface
    # as a failing request at each login.
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise ValueError("must name a port from 0 to 65535, if any") from None

    return value


def parse_raft_address(text: str) -> str:
    """A node's Raft address as MIXER_RAFT_SELF takes it, as host:port.

    Raises:
        ValueError: saying what is wrong with it.
    """
    host, separator, port = text.strip().rpartition(":")
    if not separator or not host:
        raise ValueError("must be host:port")

    number = _integer(port)
    if not 1 <= number <= 65535:
        raise ValueError("must name a port from 1 to 65535")

    return f"{host}:{number}"


def _addresses(text: str) -> tuple[str, ...]:
    items = [item for item in text.split(",") if item.strip()]
    addresses = tuple(parse_raft_address(item) for item in items)
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


# GitHub logins and organisation names: letters, digits and single hyphens, at
# most 39 characters; GitHub compares them without regard to case.
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")


def _github_names(*, allow_anyone: bool) -> Callable[[str], frozenset[str]]:
    def parse(text: str) -> frozenset[str]:
        names = {name.strip() for name in text.split(",") if name.strip()}
        bad = [
            name
            for name in names
            if not _GITHUB_NAME.match(name) and not (allow_anyone and name == "*")
        ]
        if bad:
            raise ValueError(
                "must be GitHub names separated by commas; not names: "
                + ", ".join(sorted(bad))
            )

        return frozenset(name.lower() for name in names)

    return parse


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
    "admin_socket": _admin_socket,
    "raft_self": parse_raft_address,
    "raft_peers": _addresses,
    "raft_secret": _secret,
    "raft_compaction_entries": _compaction_entries,
    "raft_snapshot_pace": _positive_int,
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "log_format": _choice("auto", "json", "text"),
    "http_port": _port,
    "auth": _choice("none", "github"),
    "github_client_id": _text,
    "github_client_secret": _text,
    "github_url": parse_web_address,
    "github_api_url": parse_web_address,
    "public_url": parse_web_address,
    "allow_users": _github_names(allow_anyone=True),
    "allow_orgs": _github_names(allow_anyone=False),
    "operators": _github_names(allow_anyone=False),
    "lease_ttl": _seconds(MAX_TIMEOUT * 52),
}
