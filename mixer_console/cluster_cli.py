"""``mixer-console cluster status`` and ``mixer-console cluster add``.

::

    mixer-console cluster status [--json]
    mixer-console cluster add HOST:PORT

Both read ``MIXER_RAFT_SELF``, ``MIXER_RAFT_PEERS`` and ``MIXER_RAFT_SECRET``
like the relay and talk to the nodes' Raft ports while they run. ``status``
asks every node (this one and its peers) for its role, term, commit and applied
index; the lag is the leader's commit index minus the node's applied index.
``add`` asks the cluster, through this node, to take a new member (start the
new node first, with the existing nodes as its peers): a member that never
answers would count against the quorum for good, so ``add`` refuses an address
that cannot be a node's and a node that does not answer.

Exit status: 0 done; 2 not configured as a cluster, or not a Raft address; 7 a
node did not answer (``status`` still prints the others; ``add``: this node, or
the new one) or the cluster refused the change.
"""

import argparse
import json
from dataclasses import asdict
from typing import TextIO

from relay.config import Settings, parse_raft_address
from store.cluster_admin import NodeReport, NodeUnreachable, add_node, query_node

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 7

QUERY_SECONDS = 3.0
ADD_SECONDS = 10.0


def add_commands(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``cluster status`` and ``cluster add`` to the admin commands."""
    cluster = commands.add_parser(
        "cluster",
        help="show the Raft state of every node, or add a node",
        description="Ask the running cluster nodes (MIXER_RAFT_SELF and "
        "MIXER_RAFT_PEERS) for their state, or add a node.",
    )
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", help="role, term, commit and applied index, lag of each node"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    add = actions.add_parser("add", help="add a node (already started) to the cluster")
    add.add_argument("address", metavar="HOST:PORT", help="the new node's Raft address")


def run(
    arguments: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO
) -> int:
    """Run ``cluster status`` or ``cluster add``; return the exit status."""
    if not settings.is_clustered or settings.raft_self is None:
        err.write(
            "mixer-console: not a cluster node: set MIXER_RAFT_SELF, "
            "MIXER_RAFT_PEERS and MIXER_RAFT_SECRET as for the relay\n"
        )
        return EXIT_USAGE

    if arguments.action == "add":
        return _add(arguments.address, settings, out, err)

    addresses = (settings.raft_self, *settings.raft_peers)
    reports: list[NodeReport] = []
    missing: list[str] = []
    for address in addresses:
        try:
            reports.append(query_node(address, settings.raft_secret, QUERY_SECONDS))
        except NodeUnreachable as exc:
            missing.append(address)
            err.write(f"mixer-console: {exc}\n")

    if arguments.json:
        out.write(json.dumps(_as_json(reports, missing), indent=2) + "\n")
    else:
        out.write(format_status(reports, missing))

    return EXIT_UNREACHABLE if missing else EXIT_OK


def _add(address: str, settings: Settings, out: TextIO, err: TextIO) -> int:
    assert settings.raft_self is not None
    try:
        address = parse_raft_address(address)
    except ValueError as exc:
        err.write(f"mixer-console: not adding {address!r}: it {exc}\n")
        return EXIT_USAGE

    # pysyncobj would take a node nobody runs as a member all the same, and the
    # cluster could then lose its quorum with one node fewer than before.
    try:
        query_node(address, settings.raft_secret, QUERY_SECONDS)
    except NodeUnreachable as exc:
        err.write(
            f"mixer-console: not adding {address}: {exc}; start it first (its "
            "peers: the existing nodes), then add it\n"
        )
        return EXIT_UNREACHABLE

    try:
        answer = add_node(
            settings.raft_self, address, settings.raft_secret, ADD_SECONDS
        )
    except NodeUnreachable as exc:
        err.write(f"mixer-console: {exc}\n")
        return EXIT_UNREACHABLE

    if answer.startswith("SUCCESS"):
        out.write(f"{address} is a member of the cluster now\n")
        return EXIT_OK

    err.write(
        f"mixer-console: the cluster did not add {address} ({answer}): is "
        f"{settings.raft_self} up and in a cluster with quorum?\n"
    )
    return EXIT_UNREACHABLE


def lag_of(report: NodeReport, reports: list[NodeReport]) -> int:
    """Entries the node has still to apply, against the highest commit index."""
    commit = max((other.commit_index for other in reports), default=0)
    return max(0, commit - report.applied_index)


def format_status(reports: list[NodeReport], missing: list[str]) -> str:
    """One aligned line per node."""
    header = ("NODE", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "QUORUM", "LEADER")
    rows = [header] + [
        (
            r.address,
            r.role,
            str(r.term),
            str(r.commit_index),
            str(r.applied_index),
            str(lag_of(r, reports)),
            "yes" if r.has_quorum else "NO",
            r.leader or "-",
        )
        for r in reports
    ]
    rows += [
        (address, "unreachable", "-", "-", "-", "-", "-", "-") for address in missing
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        + "\n"
        for row in rows
    )


def _as_json(reports: list[NodeReport], missing: list[str]) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = [
        {**asdict(report), "lag": lag_of(report, reports), "reachable": True}
        for report in reports
    ]
    nodes += [{"address": address, "reachable": False} for address in missing]
    return nodes
