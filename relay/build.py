"""Puts a relay together from its settings: state, restored rooms and leases,
the login machinery when a login is required, and the HTTP surface."""

import socket

from relay.access import AccessPolicy
from relay.broadcaster import Broadcaster
from relay.cluster import ClusterLink
from relay.config import Settings
from relay.gate import Gate
from relay.http import (
    LOGIN_REQUESTS_PER_MINUTE,
    POLL_REQUESTS_PER_MINUTE,
    HttpSurface,
    LoginSurface,
    ReadinessCheck,
    create_app,
)
from relay.leases import LeaseBook
from relay.login import LoginService
from relay.metrics import ClusterProbe, ClusterStatus, RelayCollector
from relay.ratelimit import AddressLimiter
from relay.server import RelayServer
from store.store import Store

# Tokens one address may present over TCP in a minute; each costs GitHub calls.
TOKENS_PER_MINUTE = 20


def build_relay(
    settings: Settings,
    store: Store | None,
    cluster: ClusterProbe | None = None,
    http_listener: socket.socket | None = None,
    cluster_link: ClusterLink | None = None,
) -> RelayServer:
    """A relay ready to bind and serve, its rooms and leases restored.

    Args:
        settings: everything configurable.
        store: where rooms and leases persist (None: memory only).
        cluster: the Raft state, for a clustered relay (its quorum then counts
            for readiness).
        http_listener: a bound listening socket for the HTTP surface (None: it
            binds ``MIXER_HTTP_PORT``).
        cluster_link: this node's link to its Raft cluster (clustered only); it
            also stands for ``cluster`` when that is not given.
    """
    if cluster is None and cluster_link is not None:
        cluster = _probe(cluster_link)

    broadcaster = Broadcaster(store, settings.store_max_unwritten_bytes, cluster_link)
    broadcaster.restore(settings.room_grace)
    gate: Gate | None = None
    login: LoginSurface | None = None
    leases: LeaseBook | None = None
    service: LoginService | None = None
    if settings.is_login_required:
        leases = LeaseBook(
            store,
            settings.lease_ttl,
            on_revoke=lambda address: _close_address(broadcaster, address),
            audit=broadcaster.audit,
            cluster=cluster_link,
        )
        leases.restore()
        broadcaster.leases = leases
        # Imported here: authlib is only loaded by a relay that requires login.
        from relay.github import GitHub

        github = GitHub(settings)
        policy = AccessPolicy(settings, github)
        service = LoginService(github, policy, leases)
        gate = Gate(
            settings, leases, policy, AddressLimiter("tcp-token", TOKENS_PER_MINUTE)
        )
        login = LoginSurface(
            service,
            leases,
            policy,
            AddressLimiter("login", LOGIN_REQUESTS_PER_MINUTE),
            AddressLimiter("poll", POLL_REQUESTS_PER_MINUTE),
        )

    collector = RelayCollector(broadcaster, leases, service, cluster)
    readiness: dict[str, ReadinessCheck] = {}
    app = create_app(settings, collector, readiness, login)
    http = HttpSurface(settings, app, http_listener)
    server = RelayServer(settings, broadcaster, gate=gate, http=http)
    readiness["listening"] = lambda: None if server.is_listening else "not listening"
    readiness["store"] = lambda: _store_problem(store)
    if cluster is not None:
        readiness["cluster"] = lambda: None if cluster().has_quorum else "no quorum"

    return server


def _probe(link: ClusterLink) -> ClusterProbe:
    def probe() -> ClusterStatus:
        status = link.status
        return ClusterStatus(status.role, status.commit_index, status.has_quorum)

    return probe


def _close_address(broadcaster: Broadcaster, address: str) -> None:
    broadcaster.drop_address(address, "lease revoked by an operator")


def _store_problem(store: Store | None) -> str | None:
    if store is None or not store.last_error:
        return None

    return "the store is degraded: " + store.last_error
