"""Asking running cluster nodes about their Raft state, and adding a node.

This talks to each node's Raft port with pysyncobj's utility protocol,
encrypted and authenticated with the cluster's secret; it never touches a data
directory, so it works while the relays run.
"""

from dataclasses import dataclass
from typing import Any

from pysyncobj.utility import TcpUtility, UtilityException  # type: ignore[import-untyped]

from store.errors import StoreError
from store.replication import ROLES


class NodeUnreachable(StoreError):
    """Raised when a node does not answer (down, wrong address or secret)."""


@dataclass(frozen=True)
class NodeReport:
    """One node's Raft state as it reports it."""

    address: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    has_quorum: bool
    log_entries: int


def query_node(address: str, secret: str, timeout: float) -> NodeReport:
    """Ask one node for its state.

    Raises:
        NodeUnreachable: no answer within ``timeout`` (a wrong secret looks
            the same: the node closes the connection).
    """
    status = _execute(address, ["status"], secret, timeout)
    if not isinstance(status, dict):
        raise NodeUnreachable(f"{address} answered {status!r}")

    leader = status.get("leader")
    return NodeReport(
        address=address,
        role=ROLES.get(status.get("state", -1), "unknown"),
        leader=getattr(leader, "id", None),
        term=int(status.get("raft_term", 0)),
        commit_index=int(status.get("commit_idx", 0)),
        applied_index=int(status.get("last_applied", 0)),
        has_quorum=bool(status.get("has_quorum", False)),
        log_entries=int(status.get("log_len", 0)),
    )


def add_node(via: str, new_node: str, secret: str, timeout: float) -> str:
    """Ask the cluster, through node ``via``, to add ``new_node`` as a member.

    Returns:
        pysyncobj's answer ("SUCCESS ADD <node>" or "FAIL ADD <node>").

    Raises:
        NodeUnreachable: ``via`` did not answer within ``timeout``.
    """
    return str(_execute(via, ["add", new_node], secret, timeout))


def _execute(address: str, command: list[str], secret: str, timeout: float) -> Any:
    try:
        return TcpUtility(password=secret, timeout=timeout).executeCommand(
            address, command
        )
    except UtilityException as exc:
        # pysyncobj drops a wrong password's connection without a word, so the
        # two causes look alike from here.
        raise NodeUnreachable(
            f"{address} did not answer ({exc}): the node is down, or its "
            "MIXER_RAFT_SECRET is not this one"
        ) from None
