"""``mixer-console leases --relay URL`` and ``lease revoke ADDRESS --relay URL``:
the same commands, on a running relay, as one of its operators.

The operator's GitHub token comes from ``MIXER_OPERATOR_TOKEN`` (never from the
command line, where other users of the machine can read it); ``gh auth token``
prints one. Revoking on a running relay also closes the address's connections.

Exit status: 0 done; 2 no token, or a --relay that is no http(s) address; 6 the
relay says that address holds no lease (lease revoke); 7 refused (not an
operator, unknown token), the relay cannot be reached, or the answer is not
one a relay gives (another server at that address).
"""

import argparse
import json
from collections.abc import Mapping
from typing import Any, TextIO

import httpx2

from mixer_console.listing import format_leases, parse_timestamp
from store.access import LeaseRecord

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

    relay = arguments.relay
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
        leases = _leases(body)
        if leases is None:
            err.write(f"mixer-console: {relay} did not answer with leases\n")
            return EXIT_REFUSED

        # Checked leases, in the same JSON as the local ``leases --json``: the
        # answer as received could be any JSON, or {} for a web page.
        if arguments.json:
            out.write(json.dumps([vars(lease) for lease in leases], indent=2) + "\n")
        else:
            out.write(format_leases(leases))
    else:
        revoked = _revoked(body)
        if revoked is None:
            err.write(f"mixer-console: {relay} did not answer with a revocation\n")
            return EXIT_REFUSED

        if not revoked:
            err.write(f"mixer-console: no lease for {arguments.address}\n")
            return EXIT_NO_LEASE

        login, address = revoked
        out.write(
            f"revoked the lease of {login} on {address}; its connections are closed\n"
        )

    return EXIT_OK


def _json(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def _revoked(body: Any) -> tuple[str, str] | tuple[()] | None:
    """The login and address of the lease the relay says it revoked, () when it
    says there was none, or None when the answer is not a revocation."""
    # Only the relay's own answer, {"address": ..., "revoked": null}, means no
    # lease: an operator reads exit 6 as "that address could not connect anyway".
    if not isinstance(body, dict) or not {"address", "revoked"} <= body.keys():
        return None

    lease = body["revoked"]
    if lease is None:
        return ()

    if not isinstance(lease, dict) or not {"login", "address"} <= lease.keys():
        return None

    return str(lease["login"]), str(lease["address"])


def _leases(body: Any) -> list[LeaseRecord] | None:
    """The leases in the relay's answer, or None when it is not a list of them."""
    if not isinstance(body, list):
        return None

    try:
        return [
            LeaseRecord(
                address=str(lease["address"]),
                login=str(lease["login"]),
                granted_at=parse_timestamp(lease["granted_at"]),
                expires_at=parse_timestamp(lease["expires_at"]),
                via=str(lease["via"]),
            )
            for lease in body
        ]
    except (KeyError, TypeError, ValueError):
        return None
