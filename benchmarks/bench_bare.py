"""The bare limit: trivial loopback servers with no relay logic at all.

``--mode fanout``: accepts one sender and N receivers (each connection first
sends one byte, ``S`` or ``R``; a connection that sends nothing, such as the
bench's readiness probe, is dropped), then copies every byte read from the
sender to every receiver with ``sendall``. No framing, no history, no updates.

``--mode join``: holds a prebuilt history (the same frames the relays store)
and answers each connection's first frame with CLEAR_CONTENT, the history and
a JOIN_ROOM reply, in one ``sendall``.

Both listen on 127.0.0.1 only and stop after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import socket
import time

import bench_wire as wire


def listen(port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(512)
    server.settimeout(1.0)
    return server


def accept_role(server: socket.socket) -> tuple[socket.socket, bytes] | None:
    """One connection and its role byte; None on timeout or a silent peer."""
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return None
    wire.tune_socket(conn)
    conn.settimeout(5.0)
    try:
        role = conn.recv(1)
    except OSError:
        role = b""
    if role not in (b"S", b"R"):
        conn.close()
        return None
    conn.settimeout(None)
    return conn, role


def fanout(server: socket.socket, receivers: int, deadline: float) -> None:
    sender: socket.socket | None = None
    outs: list[socket.socket] = []
    while (sender is None or len(outs) < receivers) and time.monotonic() < deadline:
        accepted = accept_role(server)
        if accepted is None:
            continue
        conn, role = accepted
        if role == b"S":
            sender = conn
        else:
            outs.append(conn)
    if sender is None:
        return
    buf = bytearray(wire.RECV_BUFFER)
    view = memoryview(buf)
    sender.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            n = sender.recv_into(buf)
        except TimeoutError:
            continue
        if not n:
            break
        chunk = view[:n]
        for out in outs:
            out.sendall(chunk)
    linger(outs, deadline)


def linger(outs: list[socket.socket], deadline: float) -> None:
    """Keep the receivers' connections open until each receiver closes its end."""
    for out in outs:
        while time.monotonic() < deadline:
            out.settimeout(1.0)
            try:
                if not out.recv(65536):
                    break
            except TimeoutError:
                continue
            except OSError:
                break


def join_answer(count: int, payload_size: int) -> bytes:
    """CLEAR_CONTENT, the history and the JOIN_ROOM reply, built once."""
    return (
        wire.frame(wire.CLEAR_CONTENT)
        + wire.history_bytes(payload_size, count)
        + wire.frame(wire.JOIN_ROOM, wire.encode_string("bench-join"))
    )


def join(server: socket.socket, answer: bytes, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            wire.tune_socket(conn)
            conn.settimeout(10.0)
            try:
                if read_one_frame(conn):
                    conn.sendall(answer)
            except OSError:
                continue


def read_one_frame(conn: socket.socket) -> bool:
    """Read a whole frame from ``conn``; False when the peer closed first."""
    data = b""
    need = wire.HEADER.size
    while len(data) < need and len(data) < 1 << 20:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
        if len(data) >= wire.HEADER.size:
            need = wire.HEADER.size + wire.HEADER.unpack_from(data)[0]
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("fanout", "join"), required=True)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--history-count", type=int, default=0)
    parser.add_argument("--payload-size", type=int, default=1024)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    answer = b""
    if args.mode == "join":  # built before listening, so readiness means ready
        answer = join_answer(args.history_count, args.payload_size)
    with listen(args.port) as server:
        if args.mode == "fanout":
            fanout(server, args.receivers, deadline)
        else:
            join(server, answer, deadline)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
