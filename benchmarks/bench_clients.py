"""Load-generating client processes for each scenario.

Every entry point here (``*_main``) runs in its own forked process and sends a
picklable dict of results back through a pipe. Clients speak the add-on's side
of the protocol only as far as each scenario needs: create a room (JOIN_ROOM,
wait for CONTENT, send CONTENT, wait for ``joinable``), join one (JOIN_ROOM,
retried while the relay says it is not joinable yet), or the add-on's opening
handshake (CLIENT_ID, LIST_CLIENTS, LIST_ROOMS). Everything else the relay
sends (CLIENT_UPDATE, ROOM_UPDATE, ...) is read and skipped.

Against the bare forwarder (``bare=True``) a client sends a one-byte role
instead, since the forwarder has no rooms.
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import bench_wire as wire

Result = dict[str, Any]

SETUP_TIMEOUT = 20.0
WINDOW_BYTES = 8 * 1024 * 1024
BATCH_BYTES = 256 * 1024
# A history is uploaded in chunks of whole frames of at most this many bytes.
UPLOAD_CHUNK_BYTES = 128 * 1024 * 1024
RESUME_TIMEOUT = 600.0


class SetupError(Exception):
    """A client could not get into the state the scenario needs."""


class Session:
    """One client connection with its stream scanner."""

    def __init__(
        self, port: int, check_seq: bool = False, keep_control: bool = True
    ) -> None:
        self.sock = wire.connect(port)
        self.scanner = wire.FrameScanner(keep_control, check_seq)
        self.controls: list[tuple[int, bytes]] = []

    @classmethod
    def bare(cls, port: int, role: bytes) -> Session:
        """A connection to the bare forwarder, announced by its role byte."""
        session = cls(port, keep_control=False)
        session.sock.sendall(role)
        return session

    def _collect(self) -> list[tuple[int, bytes]]:
        self.controls += self.scanner.take_controls()
        return self.controls

    def exchange(
        self, outgoing: bytes, until: Any, timeout: float = SETUP_TIMEOUT
    ) -> None:
        """Send and read until ``until()``; SetupError on timeout or EOF."""
        deadline = time.monotonic() + timeout
        try:
            done = wire.pump(self.sock, self.scanner, outgoing, until, deadline)
        except OSError as exc:
            raise SetupError(f"connection lost: {exc}") from exc
        if not done:
            raise SetupError(f"timeout; errors {wire.error_texts(self._collect())}")

    def create_room(self, room: str) -> None:
        """Create ``room``, send an empty scene, wait until it is joinable."""
        seen = self.scanner.first_seen
        self.exchange(
            wire.join_room_frame(room),
            lambda: wire.CONTENT in seen or wire.SEND_ERROR in seen,
        )
        if wire.CONTENT not in seen:
            raise SetupError(f"create refused: {wire.error_texts(self._collect())}")
        self.exchange(
            wire.frame(wire.CONTENT),
            lambda: wire.room_is_joinable(self._collect(), room),
        )

    def join_room(self, room: str, attempts: int = 50) -> None:
        """Join ``room``, retrying while the relay refuses (not joinable yet)."""
        seen = self.scanner.first_seen
        for _ in range(attempts):
            errors = self.scanner.errors
            self.exchange(
                wire.join_room_frame(room),
                lambda before=errors: (
                    wire.JOIN_ROOM in seen or self.scanner.errors > before
                ),
            )
            if wire.JOIN_ROOM in seen:
                return
            time.sleep(0.05)
        raise SetupError(f"join refused: {wire.error_texts(self._collect())[-1:]}")

    def handshake(self) -> float:
        """The add-on's opening requests; returns the time to get all answers."""
        seen = self.scanner.first_seen
        kinds = (wire.CLIENT_ID, wire.LIST_CLIENTS, wire.LIST_ROOMS)
        outgoing = b"".join(wire.frame(kind) for kind in kinds)
        started = time.monotonic()
        self.exchange(outgoing, lambda: all(kind in seen for kind in kinds))
        return max(seen[kind][0] for kind in kinds) - started

    def under_load(self) -> None:
        """Stop keeping control payloads; they are only counted from now on."""
        self._collect()
        self.scanner.keep_control = False


def send_result(conn: Connection, work: Any, *args: Any) -> None:
    """Run ``work(*args)`` and send its dict, or the error, through ``conn``."""
    try:
        result = work(*args)
    except Exception as exc:  # reported in the table, never raised further
        result = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(result)
    conn.close()


# ---------------------------------------------------------------- fan-out


@dataclass(frozen=True)
class FanoutConfig:
    port: int
    bare: bool
    room: str
    payload_size: int
    receivers: int
    duration: float
    cap_bytes: int
    probe_count: int
    probe_rate: float
    drain_timeout: float

    @property
    def frame_size(self) -> int:
        return wire.HEADER.size + self.payload_size

    @property
    def window_frames(self) -> int:
        return max(2, min(4096, WINDOW_BYTES // self.frame_size))

    @property
    def batch_frames(self) -> int:
        return max(1, min(self.window_frames // 4, BATCH_BYTES // self.frame_size))


class Drainer:
    """Reads and discards what the relay sends to a sender, in a thread."""

    def __init__(self, sock: socket.socket) -> None:
        import threading

        self.sock = sock
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(wire.RECV_BUFFER)
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                n = self.sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                return
            if not n:
                return
            self.bytes += n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3.0)


def wait_delivered(delivered: Any, target: int, deadline: float) -> bool:
    """Wait until every receiver's count reaches ``target``."""
    while time.monotonic() < deadline:
        if min(delivered) >= target:
            return True
        time.sleep(0.002)
    return False


def sender_main(
    cfg: FanoutConfig, delivered: Any, ready: Any, go: Any, conn: Connection
) -> None:
    send_result(conn, _run_sender, cfg, delivered, ready, go)


def _run_sender(cfg: FanoutConfig, delivered: Any, ready: Any, go: Any) -> Result:
    if cfg.bare:
        sock = Session.bare(cfg.port, b"S").sock
    else:
        session = Session(cfg.port)
        session.create_room(cfg.room)
        session.under_load()
        sock = session.sock
    ready.set()
    if not go.wait(SETUP_TIMEOUT * 3):
        return {"error": "never started"}
    sock.settimeout(0.5)
    drainer = Drainer(sock)
    try:
        return _blast_and_probe(cfg, sock, delivered)
    finally:
        drainer.stop()


def _blast(cfg: FanoutConfig, sock: socket.socket, delivered: Any) -> int:
    """Send bulk frames within a window of frames not yet delivered to all."""
    fsize, window = cfg.frame_size, cfg.window_frames
    view = memoryview(wire.bulk_block(cfg.payload_size, cfg.batch_frames))
    max_frames = max(1, cfg.cap_bytes // fsize)
    stop_at = time.monotonic() + cfg.duration
    sent = low = 0
    while sent < max_frames and time.monotonic() < stop_at:
        allowed = low + window - sent
        if allowed <= 0:
            low = min(delivered)
            if low + window - sent <= 0:
                time.sleep(0.0002)
            continue
        count = min(allowed, cfg.batch_frames, max_frames - sent)
        _sendall(sock, view[: count * fsize], stop_at + cfg.drain_timeout)
        sent += count
    return sent


def _sendall(sock: socket.socket, data: memoryview, deadline: float) -> None:
    """sendall with a bound on the total time (the socket has a short timeout)."""
    while data.nbytes:
        if time.monotonic() > deadline:
            raise TimeoutError("relay stopped reading")
        try:
            data = data[sock.send(data) :]
        except TimeoutError:
            continue


def _blast_and_probe(cfg: FanoutConfig, sock: socket.socket, delivered: Any) -> Result:
    started = time.monotonic()
    sent = _blast(cfg, sock, delivered)
    sent_done = time.monotonic()
    drained = wait_delivered(delivered, sent, sent_done + cfg.drain_timeout)
    drained_at = time.monotonic()
    probes = 0
    probes_drained = False
    if drained:
        probes = _probe(cfg, sock)
        deadline = time.monotonic() + cfg.drain_timeout
        probes_drained = wait_delivered(delivered, sent + probes, deadline)
    return {
        "started": started,
        "sent_done": sent_done,
        "drained_at": drained_at,
        "sent": sent,
        "drained": drained,
        "probes": probes,
        "probes_drained": probes_drained,
    }


def _probe(cfg: FanoutConfig, sock: socket.socket) -> int:
    """Send timestamped frames at a fixed modest rate (latency, not load)."""
    period = 1.0 / cfg.probe_rate
    padding = bytes(cfg.payload_size - wire.STAMP.size)
    header = wire.HEADER.pack(cfg.payload_size, 0, wire.BENCH_COMMAND)
    first = time.monotonic()
    for seq in range(cfg.probe_count):
        delay = first + seq * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = wire.STAMP.pack(time.monotonic(), seq)
        data = memoryview(header + stamp + padding)
        _sendall(sock, data, time.monotonic() + cfg.drain_timeout)
    return cfg.probe_count


def receivers_main(
    cfg: FanoutConfig,
    indices: list[int],
    delivered: Any,
    ready: Any,
    stop: Any,
    conn: Connection,
) -> None:
    send_result(conn, _run_receivers, cfg, indices, delivered, ready, stop)


def _connect_receiver(cfg: FanoutConfig) -> Session:
    if cfg.bare:
        return Session.bare(cfg.port, b"R")
    session = Session(cfg.port)
    session.join_room(cfg.room)
    session.under_load()
    return session


def _run_receivers(
    cfg: FanoutConfig, indices: list[int], delivered: Any, ready: Any, stop: Any
) -> Result:
    sessions = {index: _connect_receiver(cfg) for index in indices}
    bases = {index: s.scanner.room_count for index, s in sessions.items()}
    ready.put(len(sessions))
    selector = selectors.DefaultSelector()
    for index, session in sessions.items():
        selector.register(session.sock, selectors.EVENT_READ, index)
    eof = _receive_until(selector, sessions, bases, delivered, stop)
    return _receiver_report(sessions, bases, eof)


def _receive_until(
    selector: selectors.BaseSelector,
    sessions: dict[int, Session],
    bases: dict[int, int],
    delivered: Any,
    stop: Any,
    limit: float = 900.0,
) -> list[int]:
    eof: list[int] = []
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        for key, _ in selector.select(0.05):
            index = key.data
            scanner = sessions[index].scanner
            if not _read(scanner, sessions[index].sock):
                selector.unregister(key.fileobj)
                eof.append(index)
            delivered[index] = scanner.room_count - bases[index]
    return eof


def _read(scanner: wire.FrameScanner, sock: socket.socket) -> bool:
    """One read; False when the connection is closed or broken."""
    try:
        return scanner.recv_from(sock) > 0
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def _receiver_report(
    sessions: dict[int, Session], bases: dict[int, int], eof: list[int]
) -> Result:
    latencies = array("d")
    for session in sessions.values():
        latencies += session.scanner.latencies_ms
    scanners = [s.scanner for s in sessions.values()]
    return {
        "bulk": sum(s.bulk_count for s in scanners),
        "last_bulk": max((s.last_bulk_time for s in scanners), default=0.0),
        "latencies": latencies.tobytes(),
        "errors": sum(s.errors for s in scanners),
        "controls": sum(s.control_count for s in scanners),
        "eof": eof,
    }


# ---------------------------------------------------------------- join


@dataclass(frozen=True)
class JoinConfig:
    port: int
    bare: bool
    room: str
    payload_size: int
    count: int
    joins: int
    timeout: float
    # With a ``stored`` counter (join_after_main), the upload keeps at most this
    # many bytes sent and not yet counted as stored; 0 sends without pause.
    upload_window: int = 0


def join_main(cfg: JoinConfig, conn: Connection) -> None:
    send_result(conn, _run_join, cfg)


def _upload(cfg: JoinConfig, stored: Any = None) -> tuple[Session, float]:
    """Create the room and upload the history; the creator stays connected.

    With ``stored`` (a shared count of the commands the caller has seen stored)
    and ``cfg.upload_window``, each chunk waits until sending it keeps at most
    the window's bytes not yet stored.
    """
    creator = Session(cfg.port)
    started = time.monotonic()
    creator.exchange(
        wire.join_room_frame(cfg.room),
        lambda: wire.CONTENT in creator.scanner.first_seen,
    )
    creator.under_load()
    frame_size = wire.HEADER.size + cfg.payload_size
    paced = stored is not None and cfg.upload_window > 0
    chunk_bytes = cfg.upload_window // 2 if paced else UPLOAD_CHUNK_BYTES
    window = max(1, cfg.upload_window // frame_size)
    sent = 0
    for chunk in wire.history_chunks(cfg.payload_size, cfg.count, chunk_bytes):
        frames = len(chunk) // frame_size
        if paced:
            _wait_stored(creator, stored, sent + frames - window, cfg.timeout)
        creator.exchange(chunk, lambda: True, cfg.timeout)
        sent += frames
    creator.scanner.keep_control = True
    creator.exchange(
        wire.frame(wire.CONTENT),
        lambda: wire.room_is_joinable(creator._collect(), cfg.room),
        cfg.timeout,
    )
    return creator, time.monotonic() - started


def _wait_stored(session: Session, stored: Any, target: int, timeout: float) -> None:
    """Read the connection until ``stored.value`` reaches ``target``."""
    deadline = time.monotonic() + timeout
    while stored.value < target:
        if time.monotonic() > deadline:
            raise SetupError(f"store stuck at {stored.value}/{target} commands")
        readable, _, _ = select.select([session.sock], [], [], 0.02)
        if readable and not _read(session.scanner, session.sock):
            raise SetupError("relay closed the connection")


def _one_join(cfg: JoinConfig) -> Result:
    joiner = Session(cfg.port, check_seq=True)
    try:
        started = time.monotonic()
        joiner.exchange(
            wire.join_room_frame(cfg.room),
            lambda: (
                wire.JOIN_ROOM in joiner.scanner.first_seen or joiner.scanner.errors > 0
            ),
            cfg.timeout,
        )
        scanner = joiner.scanner
        if wire.JOIN_ROOM not in scanner.first_seen:
            return {"error": f"refused: {wire.error_texts(joiner._collect())}"}
        joined_at, frames = scanner.first_seen[wire.JOIN_ROOM]
        ok = (
            frames == cfg.count
            and scanner.seq_errors == 0
            and wire.CLEAR_CONTENT in scanner.first_seen
        )
        return {
            "started": started,
            "joined_at": joined_at,
            "seconds": joined_at - started,
            "frames": frames,
            "seq_errors": scanner.seq_errors,
            "ok": ok,
        }
    finally:
        joiner.sock.close()


def join_after_main(
    cfg: JoinConfig, uploaded: Any, resume: Any, stored: Any, conn: Connection
) -> None:
    """Like join_main, but sets ``uploaded`` once the room is joinable and joins
    only when ``resume`` is set (so the caller can wait, e.g. for the store);
    ``stored`` (or None) paces the upload, see _upload."""
    send_result(conn, _run_join, cfg, uploaded, resume, stored)


def _run_join(
    cfg: JoinConfig, uploaded: Any = None, resume: Any = None, stored: Any = None
) -> Result:
    creator, upload_seconds = (None, 0.0) if cfg.bare else _upload(cfg, stored)
    joins = []
    try:
        if uploaded is not None:
            uploaded.set()
        if resume is not None and not resume.wait(RESUME_TIMEOUT):
            return {"error": "never told to join"}
        for _ in range(cfg.joins):
            joins.append(_one_join(cfg))
            if "error" in joins[-1] or not joins[-1]["ok"]:
                break
            time.sleep(0.2)
    finally:
        if creator is not None:
            creator.sock.close()
    upload_errors = creator.scanner.errors if creator is not None else 0
    return {
        "upload_seconds": upload_seconds,
        "upload_errors": upload_errors,
        "joins": joins,
    }


# ---------------------------------------------------------------- rooms


@dataclass(frozen=True)
class RoomsConfig:
    port: int
    artists_per_room: int
    rate: float
    payload_size: int
    duration: float
    grace: float


class Artist:
    """One member of a room sending stamped commands at a fixed rate."""

    def __init__(self, session: Session, first_due: float, payload_size: int) -> None:
        self.session = session
        self.sock = session.sock
        self.due = first_due
        self.sent = 0
        self.pending = bytearray()
        self._header = wire.HEADER.pack(payload_size, 0, wire.BENCH_COMMAND)
        self._padding = bytes(payload_size - wire.STAMP.size)

    def send_one(self, now: float, period: float) -> None:
        """Queue one stamped command and try to send what is queued."""
        stamp = wire.STAMP.pack(now, self.sent)
        self.pending += self._header + stamp + self._padding
        self.sent += 1
        self.due += period
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.pending.clear()
            return
        del self.pending[:sent]


def rooms_main(
    cfg: RoomsConfig,
    rooms: list[str],
    ready: Any,
    start_at: Any,
    go: Any,
    conn: Connection,
) -> None:
    send_result(conn, _run_rooms, cfg, rooms, ready, start_at, go)


def _open_rooms(cfg: RoomsConfig, rooms: list[str]) -> list[Session]:
    sessions = []
    for room in rooms:
        creator = Session(cfg.port)
        creator.create_room(room)
        sessions.append(creator)
        for _ in range(cfg.artists_per_room - 1):
            member = Session(cfg.port)
            member.join_room(room)
            sessions.append(member)
    for session in sessions:
        session.under_load()
        session.sock.setblocking(False)
    return sessions


def _run_rooms(
    cfg: RoomsConfig, rooms: list[str], ready: Any, start_at: Any, go: Any
) -> Result:
    sessions = _open_rooms(cfg, rooms)
    ready.put(len(sessions))
    if not go.wait(SETUP_TIMEOUT * 6):
        return {"error": "never started"}
    started = start_at.value
    period = 1.0 / cfg.rate
    artists = [
        Artist(s, started + period * i / len(sessions), cfg.payload_size)
        for i, s in enumerate(sessions)
    ]
    eof = _rooms_loop(cfg, artists, started)
    return _rooms_report(artists, eof)


def _rooms_loop(cfg: RoomsConfig, artists: list[Artist], started: float) -> int:
    """Send on schedule (artists are due in list order, cyclically) and read."""
    selector = selectors.DefaultSelector()
    for artist in artists:
        selector.register(artist.sock, selectors.EVENT_READ, artist)
    period = 1.0 / cfg.rate
    stop_at = started + cfg.duration
    end_at = stop_at + cfg.grace
    turn, eof = 0, 0
    while time.monotonic() < end_at:
        now = time.monotonic()
        for _ in range(len(artists)):
            artist = artists[turn]
            if artist.due > now or artist.due >= stop_at:
                break
            artist.send_one(now, period)
            turn = (turn + 1) % len(artists)
        for artist in artists:
            if artist.pending:
                artist.flush()
        wait = artists[turn].due - time.monotonic() if now < stop_at else 0.05
        for key, _ in selector.select(max(0.0, min(wait, 0.05))):
            if not _read(key.data.session.scanner, key.data.sock):
                selector.unregister(key.fileobj)
                eof += 1
    return eof


def _rooms_report(artists: list[Artist], eof: int) -> Result:
    latencies = array("d")
    for artist in artists:
        latencies += artist.session.scanner.latencies_ms
    scanners = [a.session.scanner for a in artists]
    return {
        "sent": sum(a.sent for a in artists),
        "unsent_bytes": sum(len(a.pending) for a in artists),
        "delivered": sum(s.room_count for s in scanners),
        "delivered_bytes": sum(s.room_bytes for s in scanners),
        "latencies": latencies.tobytes(),
        "errors": sum(s.errors for s in scanners),
        "controls": sum(s.control_count for s in scanners),
        "eof": eof,
    }


# ---------------------------------------------------------------- idle


def idle_main(port: int, count: int, ready: Any, stop: Any, conn: Connection) -> None:
    send_result(conn, _run_idle, port, count, ready, stop)


def _run_idle(port: int, count: int, ready: Any, stop: Any) -> Result:
    sessions, handshakes = [], array("d")
    for _ in range(count):
        session = Session(port)
        handshakes.append(session.handshake() * 1000.0)
        session.under_load()
        sessions.append(session)
    ready.put(len(sessions))
    selector = selectors.DefaultSelector()
    for index, session in enumerate(sessions):
        selector.register(session.sock, selectors.EVENT_READ, index)
    eof = _receive_until(
        selector,
        dict(enumerate(sessions)),
        dict.fromkeys(range(count), 0),
        [0] * count,
        stop,
    )
    return {
        "handshakes": handshakes.tobytes(),
        "errors": sum(s.scanner.errors for s in sessions),
        "controls": sum(s.scanner.control_count for s in sessions),
        "eof": len(eof),
    }
