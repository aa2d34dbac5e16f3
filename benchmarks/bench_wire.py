"""A small, independent client codec for the Mixer wire format, tuned for load.

It is deliberately separate from ``relay.protocol`` so that the benchmark drives
the original broadcaster and ours with exactly the same bytes.

Framing: a 14-byte header ``<QIH`` (payload length, command id, type) then the
payload. Benchmark room commands carry a stamp at the start of their payload:
``<dI`` = send time (``time.monotonic()`` seconds, 0.0 for bulk frames that are
only counted) and a sequence number. The rest of the payload is zero padding.

:class:`FrameScanner` reads a socket into one large reusable buffer and walks the
stream by length. It never copies a room command's payload: it peeks at the
12-byte stamp and skips the rest, so a 1 MiB frame costs one header parse.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

HEADER = struct.Struct("<QIH")
STAMP = struct.Struct("<dI")
U32 = struct.Struct("<I")

JOIN_ROOM = 1
LEAVE_ROOM = 3
LIST_ROOMS = 4
CONTENT = 5
CLEAR_CONTENT = 6
SEND_ERROR = 12
LIST_CLIENTS = 14
CLIENT_ID = 18
CLIENT_UPDATE = 19
ROOM_UPDATE = 20

BENCH_COMMAND = 140  # BLENDER_DATA_UPDATE: stored in history, never merged
ROOM_COMMAND_MIN = 101
BLENDER_VERSION = "bench-blender"
MIXER_VERSION = "bench-mixer"

RECV_BUFFER = 4 * 1024 * 1024
SOCKET_BUFFER = 4 * 1024 * 1024


def frame(kind: int, payload: bytes = b"", command_id: int = 0) -> bytes:
    """One whole frame: header and payload."""
    return HEADER.pack(len(payload), command_id, kind) + payload


def encode_string(text: str) -> bytes:
    """A u32 LE byte count followed by UTF-8 bytes."""
    data = text.encode("utf-8")
    return U32.pack(len(data)) + data


def encode_bool(value: bool) -> bytes:
    """A u32 LE, 1 for true."""
    return U32.pack(1 if value else 0)


def join_room_frame(room: str) -> bytes:
    """JOIN_ROOM with the benchmark's fixed versions (same for every client)."""
    payload = (
        encode_string(room)
        + encode_string(BLENDER_VERSION)
        + encode_string(MIXER_VERSION)
        + encode_bool(False)
        + encode_bool(True)
    )
    return frame(JOIN_ROOM, payload)


def stamped_frame(payload_size: int, sent_at: float, seq: int) -> bytes:
    """A benchmark room command whose payload starts with its stamp."""
    stamp = STAMP.pack(sent_at, seq)
    return frame(BENCH_COMMAND, stamp + bytes(payload_size - STAMP.size))


def bulk_block(payload_size: int, count: int) -> bytes:
    """``count`` identical unstamped room commands, back to back."""
    return stamped_frame(payload_size, 0.0, 0) * count


def history_bytes(payload_size: int, count: int) -> bytes:
    """``count`` room commands with sequence numbers 0..count-1 (a history)."""
    padding = bytes(payload_size - STAMP.size)
    header = HEADER.pack(payload_size, 0, BENCH_COMMAND)
    parts = [header + STAMP.pack(0.0, seq) + padding for seq in range(count)]
    return b"".join(parts)


def history_chunks(payload_size: int, count: int, max_bytes: int) -> Iterator[bytes]:
    """The bytes of ``history_bytes(payload_size, count)``, in whole frames of at
    most ``max_bytes`` per chunk (at least one frame), so that a large history is
    never built in memory at once."""
    frame_size = HEADER.size + payload_size
    per_chunk = max(1, max_bytes // frame_size)
    for first in range(0, count, per_chunk):
        frames = min(per_chunk, count - first)
        chunk = bytearray(frames * frame_size)
        for index in range(frames):
            at = index * frame_size
            HEADER.pack_into(chunk, at, payload_size, 0, BENCH_COMMAND)
            STAMP.pack_into(chunk, at + HEADER.size, 0.0, first + index)
        yield bytes(chunk)


def tune_socket(sock: socket.socket) -> None:
    """Large kernel buffers and no Nagle delay for small frames."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A tuned TCP connection to 127.0.0.1 (the only address the bench uses)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    tune_socket(sock)
    return sock


class FrameScanner:
    """Parses one connection's stream by length, counting rather than copying.

    Args:
        keep_control: keep the payloads of control frames (types up to 100) in
            :attr:`controls`; off under load, where they are only counted.
        check_seq: verify that room command sequence numbers increase by one.
        buffer_size: the size of the reusable receive buffer.
    """

    def __init__(
        self,
        keep_control: bool = True,
        check_seq: bool = False,
        buffer_size: int = RECV_BUFFER,
    ) -> None:
        self.keep_control = keep_control
        self.check_seq = check_seq
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._skip = 0
        self.room_count = 0
        self.room_bytes = 0
        self.bulk_count = 0
        self.first_room_time = 0.0
        self.last_room_time = 0.0
        self.last_bulk_time = 0.0
        self.latencies_ms = array("d")
        self.next_seq = 0
        self.seq_errors = 0
        self.control_count = 0
        self.errors = 0
        self.controls: list[tuple[int, bytes]] = []
        self.first_seen: dict[int, tuple[float, int]] = {}

    def recv_from(self, sock: socket.socket) -> int:
        """Read once from ``sock`` and parse; returns the byte count (0 at EOF)."""
        if len(self._buf) - self._end < 65536:
            self._compact()
        n = sock.recv_into(self._view[self._end :])
        if n:
            self._end += n
            self._parse(time.monotonic())
        return n

    def _compact(self) -> None:
        pending = self._end - self._start
        if pending > len(self._buf) // 2:
            raise ValueError("control frame larger than the receive buffer")
        self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _parse(self, now: float) -> None:
        buf, pos, end = self._buf, self._start, self._end
        if self._skip:
            take = min(self._skip, end - pos)
            pos += take
            self._skip -= take
        while end - pos >= 14:
            size, _, kind = HEADER.unpack_from(buf, pos)
            avail = end - pos - 14
            if kind > 100:
                if avail < min(size, 12):
                    break
                self._room(buf, pos + 14, size, now)
            elif not self._control(buf, pos + 14, size, kind, avail, now):
                break
            if avail >= size:
                pos += 14 + size
            else:
                self._skip = size - avail
                pos = end
        if pos == end:
            pos = end = 0
        self._start, self._end = pos, end

    def _room(self, buf: bytearray, at: int, size: int, now: float) -> None:
        self.room_count += 1
        self.room_bytes += 14 + size
        if not self.first_room_time:
            self.first_room_time = now
        self.last_room_time = now
        if size < 12:
            return
        sent_at, seq = STAMP.unpack_from(buf, at)
        if sent_at:
            self.latencies_ms.append((now - sent_at) * 1000.0)
        else:
            self.bulk_count += 1
            self.last_bulk_time = now
        if self.check_seq:
            if seq != self.next_seq:
                self.seq_errors += 1
            self.next_seq = seq + 1

    def _control(
        self, buf: bytearray, at: int, size: int, kind: int, avail: int, now: float
    ) -> bool:
        """Account one control frame; False when its payload is still incomplete."""
        if self.keep_control:
            if avail < size:
                return False
            self.controls.append((kind, bytes(buf[at : at + size])))
        self.control_count += 1
        if kind == SEND_ERROR:
            self.errors += 1
        if kind not in self.first_seen:
            self.first_seen[kind] = (now, self.room_count)
        return True

    def take_controls(self) -> list[tuple[int, bytes]]:
        """The control frames kept since the last call."""
        kept, self.controls = self.controls, []
        return kept


def decode_string(payload: bytes, offset: int = 0) -> tuple[str, int]:
    """A length-prefixed string and the offset after it."""
    (length,) = U32.unpack_from(payload, offset)
    start = offset + 4
    return payload[start : start + length].decode("utf-8", "replace"), start + length


def decode_json(payload: bytes) -> Any:
    """A json value (a string holding JSON text); None when it does not parse."""
    try:
        return json.loads(decode_string(payload)[0])
    except (ValueError, struct.error):
        return None


def pump(
    sock: socket.socket,
    scanner: FrameScanner,
    outgoing: bytes | memoryview,
    until: Callable[[], bool],
    deadline: float,
) -> bool:
    """Send ``outgoing`` while reading, until ``until()`` holds after the send.

    The socket is read all along, so a relay that answers every command (the
    original sends a ROOM_UPDATE per stored command) never blocks on us.
    Returns False at the deadline; raises ConnectionError at EOF.
    """
    view = memoryview(outgoing).cast("B")
    sock.setblocking(False)
    try:
        while view.nbytes or not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            writers = [sock] if view.nbytes else []
            readable, writable, _ = select.select([sock], writers, [], remaining)
            if readable and scanner.recv_from(sock) == 0:
                raise ConnectionError("relay closed the connection")
            if writable:
                view = view[_send_some(sock, view) :]
        return True
    finally:
        sock.setblocking(True)


def _send_some(sock: socket.socket, view: memoryview) -> int:
    try:
        return sock.send(view[: 1024 * 1024])
    except BlockingIOError:
        return 0


def error_texts(controls: list[tuple[int, bytes]]) -> list[str]:
    """The messages of the SEND_ERROR frames among ``controls``."""
    texts = []
    for kind, payload in controls:
        if kind == SEND_ERROR:
            try:
                texts.append(decode_string(payload)[0])
            except struct.error:
                texts.append(repr(payload[:80]))
    return texts


def room_is_joinable(controls: list[tuple[int, bytes]], room: str) -> bool:
    """Whether a ROOM_UPDATE among ``controls`` says ``room`` is joinable."""
    for kind, payload in controls:
        if kind != ROOM_UPDATE:
            continue
        update = decode_json(payload)
        if isinstance(update, dict):
            attrs = update.get(room)
            if isinstance(attrs, dict) and attrs.get("joinable") is True:
                return True
    return False
