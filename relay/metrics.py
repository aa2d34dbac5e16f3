"""The relay's state in the Prometheus text format, read at scrape time.

Nothing is counted twice: the collector reads the counters the relay keeps
anyway (on clients, rooms, the broadcaster, the store and the login service)
each time ``/metrics`` is asked for.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.broadcaster import Broadcaster
from relay.leases import LeaseBook
from relay.login import LoginService


@dataclass(frozen=True)
class ClusterStatus:
    """A clustered relay's place in its cluster."""

    role: str
    """"leader", "follower" or "candidate"."""
    commit_index: int
    has_quorum: bool


ClusterProbe = Callable[[], ClusterStatus]
"""Reports the cluster's state; given only to a clustered relay."""


class RelayCollector(Collector):
    """Metrics of one relay.

    Args:
        broadcaster: clients, rooms, drops.
        leases: the leases in force (None without login).
        logins: login outcomes (None without login).
        cluster: the Raft state (None on a single node).
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        leases: LeaseBook | None = None,
        logins: LoginService | None = None,
        cluster: ClusterProbe | None = None,
    ) -> None:
        self._broadcaster = broadcaster
        self._leases = leases
        self._logins = logins
        self._cluster = cluster

    def collect(self) -> Iterable[Metric]:
        """Read the relay's state now."""
        broadcaster = self._broadcaster
        clients = list(broadcaster.clients.values())
        yield _gauge("mixer_connections", "Connected clients.", len(clients))
        yield _gauge(
            "mixer_outgoing_backlog_bytes",
            "Bytes queued for clients and not yet sent.",
            sum(client.outbox.queued_bytes for client in clients),
        )
        yield from self._rooms()

        drops = CounterMetricFamily(
            "mixer_drops",
            "Connections the relay ended or refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(broadcaster.drops.items()):
            drops.add_metric([reason], count)

        yield drops
        yield from self._store()
        yield from self._login()
        yield from self._raft()

    def _rooms(self) -> Iterable[Metric]:
        rooms = list(self._broadcaster.rooms.values())
        yield _gauge("mixer_rooms", "Rooms, open or kept.", len(rooms))
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "members": GaugeMetricFamily(
                "mixer_room_members", "Clients in the room.", labels=["room"]
            ),
            "history_commands": GaugeMetricFamily(
                "mixer_room_history_commands",
                "Commands in the room's history.",
                labels=["room"],
            ),
            "history_bytes": GaugeMetricFamily(
                "mixer_room_history_bytes",
                "Bytes of the room's history.",
                labels=["room"],
            ),
            "commands_in": CounterMetricFamily(
                "mixer_room_commands_in",
                "Room commands received from members.",
                labels=["room"],
            ),
            "bytes_in": CounterMetricFamily(
                "mixer_room_bytes_in",
                "Payload bytes of room commands received.",
                labels=["room"],
            ),
            "commands_out": CounterMetricFamily(
                "mixer_room_commands_out",
                "Room commands forwarded, one per receiving member.",
                labels=["room"],
            ),
            "bytes_out": CounterMetricFamily(
                "mixer_room_bytes_out",
                "Payload bytes of room commands forwarded.",
                labels=["room"],
            ),
        }
        # Known limit: every room is one series per metric, so a relay keeping
        # thousands of rooms exposes thousands of series.
        for room in rooms:
            label = [room.name]
            families["members"].add_metric(label, len(room.members))
            families["history_commands"].add_metric(label, len(room.history))
            families["history_bytes"].add_metric(label, room.history.byte_size)
            families["commands_in"].add_metric(label, room.commands_in)
            families["bytes_in"].add_metric(label, room.bytes_in)
            families["commands_out"].add_metric(label, room.commands_out)
            families["bytes_out"].add_metric(label, room.bytes_out)

        yield from families.values()

    def _store(self) -> Iterable[Metric]:
        store = self._broadcaster.store
        if store is None:
            return

        yield _gauge(
            "mixer_store_unwritten_bytes",
            "Bytes of room commands queued for the store and not yet written.",
            store.pending_bytes,
        )
        yield _gauge(
            "mixer_store_backlog_changes",
            "Changes queued for the store and not yet written.",
            store.journal.backlog,
        )
        yield _gauge(
            "mixer_store_degraded",
            "1 while the store is degraded (its writes or WAL copies fail).",
            1 if store.last_error else 0,
        )

    def _login(self) -> Iterable[Metric]:
        if self._leases is not None:
            yield _gauge(
                "mixer_leases",
                "Addresses allowed to connect.",
                len(self._leases.leases()),
            )

        if self._logins is not None:
            outcomes = CounterMetricFamily(
                "mixer_logins", "Finished logins, by outcome.", labels=["outcome"]
            )
            for outcome, count in sorted(self._logins.outcomes.items()):
                outcomes.add_metric([outcome], count)

            yield outcomes

    def _raft(self) -> Iterable[Metric]:
        if self._cluster is None:
            return

        status = self._cluster()
        role = GaugeMetricFamily(
            "mixer_raft_role", "1 for this node's Raft role.", labels=["role"]
        )
        role.add_metric([status.role], 1)
        yield role
        yield _gauge(
            "mixer_raft_commit_index", "Raft commit index.", status.commit_index
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def relay_registry(collector: RelayCollector) -> CollectorRegistry:
    """A registry holding the relay's metrics only (none of the process's
    defaults, which would be shared by every relay in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
