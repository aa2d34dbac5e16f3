"""The TCP listener: accepts Mixer clients and gives each one a session."""

import logging
import socket
import time
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from relay.accept_failures import AcceptFailures
from relay.admin_server import AdminEndpointError, AdminServer
from relay.broadcaster import Broadcaster
from relay.config import Settings
from relay.gate import Gate
from relay.http import HttpSurface
from relay.leases import LeaseBook
from relay.local_control import LocalControl
from relay.session import Session
from relay.supervision import supervised
from relay.traffic import TrafficMeter
from store.store import Store, StoreOptions

log = logging.getLogger(__name__)

# Connections accepted per wake-up before the listener lets sessions run.
ACCEPT_BURST = 64

# Keepalive probes start after the idle time and repeat at most this far apart; the
# kernel gives up on a silent peer once TCP_USER_TIMEOUT (the send timeout) has
# passed without an answer.
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 3

# How long a stopping cluster node waits for the commands it accepted to commit,
# and how often it looks.
DRAIN_SECONDS = 5.0
DRAIN_POLL_SECONDS = 0.02

STOPPING_MESSAGE = "this relay node is stopping; reconnect to another node"


class RelayServer:
    """The relay: a listener, its sessions, and the room statistics publisher.

    Args:
        settings: where to listen, limits and timeouts.
        broadcaster: the relay's state (a new one when omitted).
        gate: admits connections when a login is required (None: all are).
        http: the HTTP surface, served alongside (None: no HTTP).

    Attributes:
        control: the operator's hands on this relay, in-process (its rates are
            sampled while :meth:`serve` runs).
    """

    def __init__(
        self,
        settings: Settings,
        broadcaster: Broadcaster | None = None,
        *,
        gate: Gate | None = None,
        http: HttpSurface | None = None,
    ) -> None:
        self.settings = settings
        self.broadcaster = broadcaster or Broadcaster()
        self.gate = gate
        self.http = http
        self.traffic = TrafficMeter(self.broadcaster)
        self.control = LocalControl(
            self.broadcaster,
            self.traffic,
            gate.leases if gate is not None else None,
        )
        self.port: int | None = None
        self.admin_socket: Path | None = None
        """Where consoles attach while the relay serves; None without one."""
        self.cluster_drained: bool | None = None
        """Whether a stopped cluster node committed every command it accepted;
        None on a single node or before :meth:`prepare_stop`."""
        self._listener: socket.socket | None = None

    @property
    def leases(self) -> LeaseBook | None:
        """The leases in force, when login is required: the operator's console
        lists and revokes them here."""
        return self.gate.leases if self.gate is not None else None

    @property
    def is_listening(self) -> bool:
        """Tell whether the Mixer port is open."""
        return self._listener is not None

    def started_fields(self, port: int, mode: str) -> dict[str, object]:
        """What the ``relay.started`` event says, whichever process runs the relay
        (``mode``: headless, console)."""
        settings = self.settings
        login = (
            f"github: artists log in at {settings.login_url}"
            if settings.is_login_required
            else "none: anyone who reaches the port can join"
        )
        return {
            "host": settings.host,
            "port": port,
            "http_port": self.http.port if self.http else None,
            "login": login,
            "mode": mode,
            "store": str(settings.data_dir),
            "admin_socket": str(self.admin_socket or "off"),
            "rooms": len(self.broadcaster.rooms),
            "cluster": settings.raft_self or "none: a single node",
        }

    def bind(self) -> int:
        """Open the listening sockets (Mixer's, and HTTP's when served) now, so
        that a bad address or a port in use fails early.

        Returns:
            The bound port (useful when the settings ask for port 0).

        Raises:
            OSError: the address cannot be bound (in use, not local, ...).
        """
        if self._listener is None:
            self._listener = open_listener(self.settings.host, self.settings.port)
            self.port = self._listener.getsockname()[1]

        if self.http is not None:
            try:
                self.http.bind(open_listener)
            except OSError:
                self._listener.close()
                self._listener = None
                raise

        assert self.port is not None
        return self.port

    async def prepare_stop(self) -> None:
        """Make the relay ready to be cancelled: rooms stay as they are, for the
        next start to restore, and a cluster node commits what it accepted.

        A cluster node forwards a command only once it is committed, so one it
        accepted and had not committed would be lost with the node. It closes
        its clients (SEND_ERROR: the add-on reconnects to another node), then
        waits at most :data:`DRAIN_SECONDS` for its proposals to commit; without
        a quorum nothing can commit, and it does not wait.
        """
        self.broadcaster.stop()
        cluster = self.broadcaster.cluster
        if cluster is None:
            return

        self.broadcaster.close_all(STOPPING_MESSAGE)
        for _ in range(round(DRAIN_SECONDS / DRAIN_POLL_SECONDS)):
            if cluster.pending_bytes == 0 or not cluster.status.is_available:
                break

            await anyio.sleep(DRAIN_POLL_SECONDS)

        self.cluster_drained = cluster.pending_bytes == 0
        if not self.cluster_drained:
            log.warning(
                "cluster.drain_incomplete",
                extra={
                    "pending_bytes": cluster.pending_bytes,
                    "cluster": cluster.status.summary(),
                },
            )

    def close(self) -> None:
        """Close the listening socket that :meth:`bind` opened if :meth:`serve`
        never ran (a console that quits before its relay started); serving
        closes it by itself."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def serve(
        self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; reports the bound port when ready."""
        port = self.bind()
        listener = self._listener
        assert listener is not None
        admin = await self._open_admin()
        try:
            async with anyio.create_task_group() as tasks:
                # Supervised: inside the console the relay shares the app's loop,
                # and a background task's exception would end the whole process.
                for name, task in (
                    ("publish_statistics", self._publish_statistics),
                    ("expire_restored_rooms", self._expire_restored_rooms),
                    ("forget_written", self._forget_written),
                    ("sample_traffic", self.traffic.run),
                ):
                    tasks.start_soon(supervised, name, task)

                if admin is not None:
                    tasks.start_soon(self._serve_admin, admin)

                if self.http is not None:
                    await tasks.start(self.http.serve)

                cluster = self.broadcaster.cluster
                if cluster is not None:
                    await tasks.start(cluster.run, self.broadcaster)

                task_status.started(port)
                await self._accept_loop(listener, tasks)
        finally:
            self._listener = None
            anyio.notify_closing(listener)
            listener.close()

    async def _accept_loop(
        self, listener: socket.socket, tasks: anyio.abc.TaskGroup
    ) -> None:
        failures = AcceptFailures("relay")
        while True:
            await anyio.wait_readable(listener)
            for _ in range(ACCEPT_BURST):
                try:
                    sock, _address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    # Out of file descriptors, say: keep serving the others.
                    failures.failed(exc)
                    await anyio.sleep(0.1)
                    break

                failures.accepted()
                self._start_session(sock, tasks)

            await anyio.lowlevel.checkpoint()

    def _start_session(self, sock: socket.socket, tasks: anyio.abc.TaskGroup) -> None:
        # A method of its own, so that no local keeps the session alive after it ends.
        try:
            configure_client_socket(sock, self.settings)
            session = Session(sock, self.broadcaster, self.settings, self.gate)
        except OSError as exc:
            # The peer can be gone already (getpeername fails).
            log.info("client.lost_at_accept", extra={"error": str(exc)})
            sock.close()
            return
        except Exception:
            # One connection that cannot be set up must not end the listener.
            log.exception("client.setup_failed")
            sock.close()
            return

        tasks.start_soon(session.run)

    async def _open_admin(self) -> AdminServer | None:
        path = self.settings.admin_socket_path()
        if path is None:
            return None

        admin = AdminServer(
            self.control, path, is_default=self.settings.admin_socket is None
        )
        try:
            await admin.open()
        except AdminEndpointError as exc:
            # The artists' relay matters more than the console: it keeps serving.
            log.error("admin.unavailable", extra={"error": str(exc)})
            self.broadcaster.events.record("error", f"no admin socket: {exc}")
            return None

        self.admin_socket = path
        return admin

    async def _serve_admin(self, admin: AdminServer) -> None:
        try:
            await admin.serve()
        except Exception:
            log.exception("admin.failed")
        finally:
            self.admin_socket = None

    async def _expire_restored_rooms(self) -> None:
        while (deadline := self.broadcaster.next_grace_deadline()) is not None:
            await anyio.sleep(max(0.0, deadline - time.time()))
            self.broadcaster.expire_restored_rooms(time.time())

    async def _forget_written(self) -> None:
        # Histories shed what the store has written even when their room goes
        # quiet, so an idle room holds no command in memory.
        broadcaster = self.broadcaster
        interval = self.settings.store_flush_interval
        while True:
            await broadcaster.wait_for_unwritten()
            # Polled: the store's progress is made on another thread.
            while True:
                if not broadcaster.forget_written():
                    break

                await anyio.sleep(interval)

    async def _publish_statistics(self) -> None:
        interval = self.settings.room_update_interval
        while True:
            await self.broadcaster.wait_for_statistics()
            await anyio.sleep(interval)
            self.broadcaster.publish_statistics()


def open_store(settings: Settings) -> Store:
    """Open the store in the configured data directory.

    Raises:
        StoreError: the directory is in use, or its database cannot be used.
    """
    return Store.open(
        settings.data_dir,
        StoreOptions(
            flush_interval=settings.store_flush_interval,
            batch_size=settings.store_batch_size,
            cache_bytes=settings.store_cache_bytes,
            max_bytes=settings.store_max_bytes,
        ),
    )


def open_listener(host: str, port: int) -> socket.socket:
    """Bind a non-blocking listening socket, reusable at once after a crash.

    Raises:
        OSError: the address cannot be bound (in use, not local, ...).
    """
    # Known limit: a host name that resolves to several addresses is bound on the
    # first one only.
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise

    return listener


def configure_client_socket(sock: socket.socket, settings: Settings) -> None:
    """Make an accepted socket non-blocking and bound its silent failures.

    Keepalive finds peers whose machine vanished while idle; TCP_USER_TIMEOUT
    drops a connection whose sent data stays unacknowledged for the send timeout.
    """
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_idle)
    sock.setsockopt(
        socket.IPPROTO_TCP,
        socket.TCP_KEEPINTVL,
        min(KEEPALIVE_INTERVAL, settings.keepalive_idle),
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(
        socket.IPPROTO_TCP,
        socket.TCP_USER_TIMEOUT,
        int(settings.send_timeout * 1000),
    )
