"""The ``--relay URL`` option of the commands that talk to a running relay's HTTP
surface (login, leases, lease revoke)."""

import argparse


def relay_url(text: str) -> str:
    """An argparse type: an http(s) address, without its trailing slash.

    Raises:
        argparse.ArgumentTypeError: the text is no http(s) address (argparse
            then exits 2, naming the option).
    """
    url = text.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"must be an http(s) address, such as http://relay.studio:12801: {text}"
        )

    return url
