"""``mixer-console leases --relay URL`` and ``lease revoke ADDRESS --relay URL``:
the same commands, on a running relay, as one of its operators.

The operator's GitHub token comes from ``MIXER_OPERATOR_TOKEN`` (never from the
command line, where other users of the machine can read it); ``gh auth token``
prints one. Revoking on a running relay also closes the address's connections.

Exit status: 0 done; 2 no token, or a --relay that is no http(s) address; 6 no
lease for that address (lease revoke); 7 refused (not an operator, unknown
token) or the relay cannot be reached.
"""

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any, TextIO

import httpx2

from mixer_console.relay_option import relay_option

TOKEN_VARIABLE = "MIXER_OPERATOR_TOKEN"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_LEASE = 6
EXIT_REFUSED = 7

REQUEST_TIMEOUT = 30.0


def run(
    arguments: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """Run ``leases`` or ``lease revoke`` against ``arguments.relay``."""
    token = env.get(TOKEN_VARIABLE, "").strip()
    if not token:
        err.write(
            f"mixer-console: set {TOKEN_VARIABLE} to an operator's GitHub token "
            "(for example: export MIXER_OPERATOR_TOKEN=$(gh auth token))\n"
        )
        return EXIT_USAGE

    relay = relay_option(arguments.relay, err)
    if relay is None:
        return EXIT_USAGE

    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx2.Client(
            base_url=relay, headers=headers, timeout=REQUEST_TIMEOUT
        ) as http:
            if arguments.command == "leases":
                response = http.get("/admin/leases")
            else:
                response = http.post(
                    "/admin/leases/revoke", json={"address": arguments.address}
                )
    except httpx2.HTTPError as exc:
        err.write(f"mixer-console: the relay at {relay} cannot be reached: {exc}\n")
        return EXIT_REFUSED

    body = _json(response)
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        error = error or f"the relay answered HTTP {response.status_code}"
        err.write(f"mixer-console: {error}\n")
        return EXIT_REFUSED

    if arguments.command == "leases":
        if arguments.json:
            out.write(json.dumps(body, indent=2) + "\n")
        else:
            out.write(_lines(body if isinstance(body, list) else []))
    elif body.get("revoked"):
        lease = body["revoked"]
        out.write(
            f"revoked the lease of {lease['login']} on {lease['address']}; its "
            "connections are closed\n"
        )
    else:
        err.write(f"mixer-console: no lease for {arguments.address}\n")
        return EXIT_NO_LEASE

    return EXIT_OK


def _json(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def _lines(leases: list[dict[str, Any]]) -> str:
    if not leases:
        return "no lease in force\n"

    return "".join(
        f"{lease['address']:<40} {lease['login']:<39} until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(lease['expires_at']))}\n"
        for lease in leases
    )
