"""Newline-delimited messages over a non-blocking Unix socket (the admin socket).

Built on the raw socket and ``anyio.wait_readable`` / ``wait_writable``, as the
relay's sessions are: anyio's own Unix socket streams, on asyncio, can raise
InvalidStateError from a loop callback when a task waiting to read is cancelled
just as the socket becomes readable (a console closing as the relay stops).
A related report, on aclose: https://github.com/agronholm/anyio/issues/1267
"""

import socket

import anyio

READ_BYTES = 64 * 1024


class LineTooLong(Exception):
    """Raised when a peer sends more than the limit without a newline."""


class LineSocket:
    """Reads and writes whole lines on one connected socket.

    Args:
        sock: a connected stream socket; it is made non-blocking.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._buffer = bytearray()

    @classmethod
    async def connect_unix(cls, path: str) -> "LineSocket":
        """Connect to a Unix socket.

        Raises:
            OSError: nobody listens there, or the path cannot be used.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                sock.connect(path)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, f"cannot connect to {path}") from None
        except BaseException:
            sock.close()
            raise

        return cls(sock)

    async def receive_line(self, max_bytes: int) -> bytes:
        """Return the next line, without its newline.

        Raises:
            EOFError: the peer closed the connection before a whole line.
            LineTooLong: ``max_bytes`` arrived without a newline.
            OSError: the connection broke.
        """
        # Bounded: each pass reads more bytes, and max_bytes ends the line.
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line

            if len(self._buffer) > max_bytes:
                raise LineTooLong(f"more than {max_bytes} bytes without a newline")

            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue

            if not data:
                raise EOFError("the peer closed the connection")

            self._buffer += data

    def is_closed_by_peer(self) -> bool:
        """Tell, without waiting, whether the peer has closed its end (nothing
        unread is consumed)."""
        if self._buffer:
            return False

        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    async def send(self, data: bytes) -> None:
        """Send all of ``data``.

        Raises:
            OSError: the connection broke.
        """
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue

            view = view[sent:]

    def close(self) -> None:
        """Close the socket (waking any task waiting on it)."""
        anyio.notify_closing(self.sock)
        self.sock.close()
