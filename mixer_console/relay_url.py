"""The ``--relay URL`` option of the commands that reach a running relay over
HTTP (``login``, ``leases``, ``lease revoke``)."""

import argparse

from relay.config import parse_web_address


def relay_url(text: str) -> str:
    """An argparse type: the relay's address, checked before any request (the
    HTTP client would raise on a port out of range or bytes that are not UTF-8).

    Raises:
        argparse.ArgumentTypeError: it is no usable http(s) address (argparse
            then exits 2, naming the option).
    """
    try:
        return parse_web_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None
