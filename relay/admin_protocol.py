"""The admin protocol: how a console drives a relay over its admin socket.

Version 1. A Unix stream socket carrying JSON lines: each message is one JSON
object encoded as UTF-8 on one line ending with ``\\n``; the relay reads lines of
at most :data:`MAX_LINE_BYTES`, a console answers of at most
:data:`MAX_ANSWER_BYTES`.

1. The relay speaks first::

       {"hello": "mixer-console-admin", "version": 1, "relay_pid": 4242}

   A peer whose user id (SO_PEERCRED) is not the relay's gets instead one
   ``{"id": null, "error": {"code": "forbidden", "message": "..."}}`` line, and
   the connection closes.
2. The console answers with the version it speaks::

       {"hello": "mixer-console-admin", "version": 1}

   Any other version gets an ``unsupported_version`` error and the connection
   closes.
3. Then requests, each with an id of the console's choosing (a whole number or a
   string), answered in order, one at a time::

       {"id": 7, "method": "kick", "params": {"client_id": "10.0.0.5:50122",
        "operator": "olga", "ban_seconds": 3600}}
       {"id": 7, "result": null}
       {"id": 8, "method": "history_page", "params": {"room": "shot-010",
        "start": 1, "count": 50}}
       {"id": 8, "result": {"room": "shot-010", "total": 1234, "commands": [...]}}

   Methods and parameters are those of :class:`relay.control.RelayControl`, by
   name (``path`` is a string, ``ban_seconds`` may be null). Results are the
   views of :mod:`relay.control` as JSON objects with the same field names;
   tuples are lists and bytes (``CommandDetail.head``) are hex strings. There
   are no pushed messages: consoles poll ``snapshot`` and ``events``.

   Requests added within version 1 (a relay older than them answers
   ``bad_request``, unknown method, and stays attached, so a console tells the
   operator and carries on)::

       {"id": 9, "method": "leases", "params": {}}
       {"id": 9, "result": [{"address": "10.0.0.5", "login": "alice",
        "granted_at": 1764840000.0, "expires_at": 1764926400.0,
        "via": "browser"}]}
       {"id": 10, "method": "revoke_lease", "params": {"address": "10.0.0.5",
        "operator": "olga"}}
       {"id": 10, "result": null}

   ``leases`` is empty on a relay that requires no login; ``revoke_lease`` is
   ``refused`` there and for an address that holds no lease, and otherwise also
   closes that address's connections.

   A failed request gets ``{"id": 8, "error": {"code": ..., "message": ...}}``
   with code ``refused`` (the relay said no: no such room, ...),
   ``bad_request`` (not JSON, unknown method, wrong parameters; the connection
   stays open), ``too_large`` (a line over the limit; the connection closes) or
   ``internal`` (a bug in the relay, logged there).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cattrs

from relay.control import (
    AuditEntry,
    Ban,
    CommandDetail,
    HistoryPage,
    Lease,
    RelayEvent,
    RelaySnapshot,
)

PROTOCOL_NAME = "mixer-console-admin"
PROTOCOL_VERSION = 1

# The longest request line the relay reads; requests are small.
MAX_LINE_BYTES = 4 * 1024 * 1024

# The longest answer line a console reads: a snapshot takes about 350 bytes per
# artist, so this holds well over a hundred thousand of them.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class AdminProtocolError(Exception):
    """A message that does not follow the admin protocol."""


_converter = cattrs.Converter()
_converter.register_unstructure_hook(bytes, lambda value: value.hex())
_converter.register_structure_hook(bytes, lambda value, _type: bytes.fromhex(value))
_converter.register_unstructure_hook(Path, str)
_converter.register_structure_hook(Path, lambda value, _type: Path(value))

# Each method: its parameters and their types, and the type of its result.
METHODS: dict[str, tuple[dict[str, Any], Any]] = {
    "snapshot": ({}, RelaySnapshot),
    "events": ({"after": int, "limit": int}, list[RelayEvent]),
    "kick": (
        {"client_id": str, "operator": str, "ban_seconds": float | None},
        None,
    ),
    "bans": ({}, list[Ban]),
    "lift_ban": ({"subject": str, "operator": str}, None),
    "leases": ({}, list[Lease]),
    "revoke_lease": ({"address": str, "operator": str}, None),
    "delete_room": ({"room": str, "operator": str}, None),
    "set_keep_open": ({"room": str, "keep_open": bool, "operator": str}, None),
    "history_page": ({"room": str, "start": int, "count": int}, HistoryPage),
    "command": ({"room": str, "index": int}, CommandDetail),
    "fork_room": (
        {"room": str, "index": int, "new_room": str, "operator": str},
        None,
    ),
    "rewind_room": ({"room": str, "index": int, "operator": str}, None),
    "export_room": ({"room": str, "path": Path, "operator": str}, int),
    "audit_log": ({"limit": int}, list[AuditEntry]),
}

# Parameters a request may leave out, and their values then.
DEFAULTS: dict[str, dict[str, Any]] = {
    "events": {"limit": 500},
    "kick": {"ban_seconds": None},
    "audit_log": {"limit": 200},
}


def encode_line(message: dict[str, Any]) -> bytes:
    """Encode one message as a JSON line."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """Decode one JSON line (without its newline) into a message object.

    Raises:
        AdminProtocolError: the line is not UTF-8 JSON, or not an object.
    """
    try:
        message = json.loads(line)
    except ValueError as exc:
        # Also a number of more digits than Python parses (sys.int_info), which
        # is a plain ValueError, as UnicodeDecodeError and JSONDecodeError are.
        raise AdminProtocolError(f"not a JSON line: {exc}") from exc
    except RecursionError as exc:
        raise AdminProtocolError("the JSON is nested too deeply") from exc

    if not isinstance(message, dict):
        raise AdminProtocolError(
            f"a message is a JSON object, not {type(message).__name__}"
        )

    return message


def hello(**fields: Any) -> dict[str, Any]:
    """The hello message of this protocol version."""
    return {"hello": PROTOCOL_NAME, "version": PROTOCOL_VERSION, **fields}


def check_hello(message: dict[str, Any]) -> None:
    """Check the other side's hello.

    Raises:
        AdminProtocolError: it is not a hello, or not of this version.
    """
    if message.get("hello") != PROTOCOL_NAME:
        raise AdminProtocolError(
            f"expected the {PROTOCOL_NAME!r} hello first, got {_show(message)}"
        )

    if message.get("version") != PROTOCOL_VERSION:
        raise AdminProtocolError(
            f"admin protocol version {message.get('version')!r} is not supported; "
            f"this relay speaks version {PROTOCOL_VERSION}"
        )


def parse_params(method: str, params: object) -> dict[str, Any]:
    """Check and convert a request's parameters.

    Raises:
        AdminProtocolError: unknown method, missing, unknown or mistyped
            parameters.
    """
    if method not in METHODS:
        raise AdminProtocolError(
            f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}"
        )

    if params is None:
        params = {}

    if not isinstance(params, dict):
        raise AdminProtocolError("params must be a JSON object")

    types, _result = METHODS[method]
    unknown = set(params) - set(types)
    if unknown:
        raise AdminProtocolError(
            f"{method}: unknown parameter(s) {', '.join(sorted(unknown))}"
        )

    values = {**DEFAULTS.get(method, {}), **params}
    missing = set(types) - set(values)
    if missing:
        raise AdminProtocolError(
            f"{method}: missing parameter(s) {', '.join(sorted(missing))}"
        )

    converted: dict[str, Any] = {}
    for name, kind in types.items():
        converted[name] = _convert_param(method, name, kind, values[name])

    return converted


def encode_result(value: object) -> object:
    """A method's result as JSON-ready values."""
    return _converter.unstructure(value)


def decode_result(method: str, value: object) -> Any:
    """A method's result from its JSON form.

    Raises:
        AdminProtocolError: the value does not have the method's result type.
    """
    kind = METHODS[method][1]
    if kind is None:
        return None

    try:
        return _converter.structure(value, kind)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise AdminProtocolError(f"{method}: malformed result: {exc}") from exc


def encode_params(params: dict[str, Any]) -> dict[str, Any]:
    """Request parameters as JSON-ready values."""
    return {name: _converter.unstructure(value) for name, value in params.items()}


def _is_whole(value: object) -> bool:
    # JSON has one number type, and a bool is an int to Python: refuse it here.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_whole(value) or isinstance(value, float)


# Each parameter type: how a JSON value is checked, and what it must be.
_PARAM_CHECKS: dict[Any, tuple[Callable[[object], bool], str]] = {
    int: (_is_whole, "a whole number"),
    float | None: (lambda v: v is None or _is_number(v), "a number or null"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
    Path: (lambda v: isinstance(v, str), "a string (a path)"),
}


def _convert_param(method: str, name: str, kind: Any, value: Any) -> Any:
    is_valid, expected = _PARAM_CHECKS[kind]
    if not is_valid(value):
        raise AdminProtocolError(f"{method}: {name} must be {expected}")

    if kind is Path:
        return Path(value)

    if kind == float | None and value is not None:
        try:
            return float(value)
        except OverflowError:
            raise AdminProtocolError(f"{method}: {name} is out of range") from None

    return value


def _show(message: dict[str, Any]) -> str:
    text = json.dumps(message)
    return text if len(text) <= 200 else text[:200] + "..."
