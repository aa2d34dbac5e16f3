"""The ``--relay URL`` option of the commands that reach a running relay over
HTTP (``login``, ``leases``, ``lease revoke``)."""

from typing import TextIO

from relay.config import parse_web_address


def relay_option(text: str, err: TextIO) -> str | None:
    """The relay's address from ``--relay``, or None after telling ``err`` why
    it is no usable address (checked before any request: the HTTP client would
    raise on a port out of range or bytes that are not UTF-8)."""
    try:
        return parse_web_address(text)
    except ValueError as exc:
        err.write(
            f"mixer-console: --relay must be an http(s) address; {text!r} {exc}\n"
        )
        return None
