"""One client connection: a reader feeding the broadcaster, a writer draining the
client's outbox, both on the raw non-blocking socket.

The socket is read only when the reader asks for bytes, into the decoder's own
buffer, so a peer that floods the relay is held back by TCP flow control instead
of being buffered in memory. The writer hands whole batches of queued frames to
one ``sendmsg`` call: frames shared by many receivers are never joined or copied.
"""

import logging
import socket
import time

import anyio
from anyio.lowlevel import checkpoint

from relay.broadcaster import Broadcaster
from relay.client import TOKEN_ATTRIBUTE, Client
from relay.config import Settings
from relay.errors import AuthError, FrameTooLarge, MalformedPayload
from relay.gate import Gate
from relay.messages import MessageType, type_name
from relay.outbox import MAX_BATCH_BUFFERS, MAX_BATCH_BYTES, Outbox
from relay.protocol import (
    HEADER,
    Frame,
    FrameDecoder,
    PayloadReader,
    Wire,
    encode_frame,
    encode_string,
)

log = logging.getLogger(__name__)

# A reader hands at most this much to the broadcaster before letting others run.
READ_CHUNK_BYTES = 128 * 1024

# How long a connection that is being closed on purpose may take to send its last
# frames (the SEND_ERROR that explains why).
CLOSING_FLUSH_SECONDS = 1.0

# Reads of a refused peer's requests before its connection is closed regardless.
REFUSAL_READS = 16

# A connection that needs a login must send its first message this soon, and no
# larger than this: nothing big is read from a peer nobody vouched for.
ADMISSION_SECONDS = 10.0
ADMISSION_MAX_PAYLOAD = 64 * 1024

# Seconds GitHub may take to vouch for a token presented over TCP.
TOKEN_CHECK_SECONDS = 30.0


class Session:
    """Serves one accepted connection until either side ends it.

    Args:
        sock: the accepted socket, already non-blocking.
        broadcaster: the relay's shared state.
        settings: limits and timeouts.
        gate: admits connections when a login is required (None: all are).
    """

    def __init__(
        self,
        sock: socket.socket,
        broadcaster: Broadcaster,
        settings: Settings,
        gate: Gate | None = None,
    ) -> None:
        ip, port = sock.getpeername()[:2]
        self._sock = sock
        self._broadcaster = broadcaster
        self._settings = settings
        self._gate = gate
        # The message a connection was admitted with, handled once it is a client.
        self._first_frame: Frame | None = None
        self._scope = anyio.CancelScope()
        self._read_scope = anyio.CancelScope()
        self._drop_reason: str | None = None
        self._closing_reason: str | None = None
        # What ended the session when nothing inside it did: the relay stopping.
        self._end_reason = "relay stopping"
        self.client = Client(
            ip,
            port,
            Outbox(settings.client_buffer_bytes),
            self._drop,
            self._close_after_flush,
        )

    async def run(self) -> None:
        """Serve the connection, then clean up whatever ended it."""
        client = self.client
        try:
            refusal = await self._admission()
        except Exception:
            # Contained, as below: a failing login must not end the relay.
            log.exception("session.admission_failed", extra={"client_id": client.id})
            refusal = "the relay could not check this connection; try again later"
        except BaseException:
            # Cancelled (the relay is stopping) before the connection was served.
            anyio.notify_closing(self._sock)
            self._sock.close()
            raise

        if refusal is not None:
            await self._refuse(refusal)
            return

        reason: str | None = None
        is_drop = False
        try:
            with self._scope:
                self._broadcaster.connect(client)
                reason = await self._serve()
        except Exception:
            # Contained here: inside the console the relay shares the app's loop,
            # and an exception leaving this task would end the whole process.
            log.exception("session.failed", extra={"client_id": client.id})
            self._broadcaster.events.record(
                "error", "internal error: connection closed", client_id=client.id
            )
            reason = "internal error"
            is_drop = True
        finally:
            # Nothing here awaits, so the cleanup cannot be cancelled halfway.
            if self._drop_reason is not None:
                reason = self._drop_reason
                is_drop = True
                self._broadcaster.count_drop(reason)
                log.warning(
                    "client.dropped", extra={"client_id": client.id, "reason": reason}
                )

            self._close(reason or self._end_reason, is_drop)

    async def _admission(self) -> str | None:
        """Why the connection is refused, or None to serve it (with its login set
        when one is required). The peer is told nothing until then."""
        client = self.client
        refusal = self._broadcaster.admission_refusal(client)
        if refusal is not None or self._gate is None:
            return refusal

        login, error = await self._log_in(self._gate)
        if login is None:
            return self._gate.refusal(error)

        client.login = login
        # Bans by login apply once the login is known.
        return self._broadcaster.admission_refusal(client)

    async def _log_in(self, gate: Gate) -> tuple[str | None, AuthError | None]:
        """The login a lease or a presented token admits, or why there is none."""
        login = gate.leased_login(self.client.ip)
        if login is not None:
            return login, None

        ip = self.client.ip
        if not gate.begin_admission(ip):
            return None, AuthError("too many connections are waiting to log in; retry")

        try:
            return await self._admit_by_token(gate)
        finally:
            gate.end_admission(ip)

    async def _admit_by_token(self, gate: Gate) -> tuple[str | None, AuthError | None]:
        """Read the first message and check the token it presents, if any."""
        with anyio.move_on_after(ADMISSION_SECONDS):
            self._first_frame = await self._receive_first_frame()

        token = _presented_token(self._first_frame)
        if not token:
            return None, None

        with anyio.move_on_after(TOKEN_CHECK_SECONDS):
            try:
                return await gate.admit_token(self.client.ip, token), None
            except AuthError as exc:
                return None, exc

        return None, AuthError("GitHub took too long to answer")

    async def _receive_first_frame(self) -> Frame | None:
        """Read exactly one small frame, leaving what follows in the socket; None
        when the peer closes first or declares a large payload."""
        header = await self._receive_exactly(HEADER.size)
        if header is None:
            return None

        size, command_id, kind = HEADER.unpack(header)
        if size > ADMISSION_MAX_PAYLOAD:
            return None

        payload = await self._receive_exactly(size)
        if payload is None:
            return None

        return Frame(kind, command_id, header + payload)

    async def _receive_exactly(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            try:
                chunk = self._sock.recv(count - len(data))
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            except OSError:
                return None

            if not chunk:
                return None

            data += chunk

        return bytes(data)

    async def _refuse(self, message: str) -> None:
        """Tell a peer the relay will not serve why, then close the connection."""
        client_id = self.client.id
        self._broadcaster.count_drop(message)
        log.warning("client.refused", extra={"client_id": client_id, "reason": message})
        self._broadcaster.events.record(
            "drop", f"refused: {message}", client_id=client_id
        )
        sock = self._sock
        try:
            with anyio.move_on_after(CLOSING_FLUSH_SECONDS):
                # A few hundred bytes: they fit in a fresh socket's send buffer.
                sock.send(encode_frame(MessageType.SEND_ERROR, encode_string(message)))
                sock.shutdown(socket.SHUT_WR)
                # Closing with unread bytes would reset the connection, which can
                # destroy the error before the peer reads it: read until it closes.
                for _ in range(REFUSAL_READS):
                    await anyio.wait_readable(sock)
                    if not sock.recv(READ_CHUNK_BYTES):
                        break
        except OSError:
            pass  # the peer is gone already: nothing left to tell it
        finally:
            anyio.notify_closing(sock)
            sock.close()

    def _close(self, reason: str, is_drop: bool) -> None:
        try:
            self._broadcaster.disconnect(self.client, reason, is_drop=is_drop)
        except Exception:
            log.exception("session.cleanup_failed", extra={"client_id": self.client.id})
        finally:
            self.client.outbox.discard()
            anyio.notify_closing(self._sock)
            self._sock.close()

    def _drop(self, reason: str) -> None:
        if self._drop_reason is None:
            self._drop_reason = reason

        self._scope.cancel()

    def _close_after_flush(self, reason: str) -> None:
        if self._closing_reason is None:
            self._closing_reason = reason

        self._read_scope.cancel()

    def _end(self, reason: str) -> None:
        self._end_reason = reason
        self._scope.cancel()

    async def _serve(self) -> str:
        async with anyio.create_task_group() as tasks:
            writer_done = anyio.Event()
            tasks.start_soon(self._write_loop, writer_done)
            outcome = ("", False)
            with self._read_scope:
                outcome = await self._read_loop()

            if self._closing_reason is not None:
                outcome = (self._closing_reason, True)

            reason, must_flush = outcome
            if must_flush:
                self.client.outbox.close()
                with anyio.move_on_after(CLOSING_FLUSH_SECONDS):
                    await writer_done.wait()

            tasks.cancel_scope.cancel()

        return reason

    async def _read_loop(self) -> tuple[str, bool]:
        """Read frames until the stream ends; return why, and whether the queued
        frames should still be flushed before closing."""
        sock = self._sock
        decoder = FrameDecoder(self._settings.max_frame_bytes)
        if self._first_frame is not None:
            frame, self._first_frame = self._first_frame, None
            self._broadcaster.handle(self.client, frame)

        while True:
            # Known limit: every room member stops being read, not only senders,
            # so members' other requests wait for the store too.
            if self.client.room is not None and self._broadcaster.is_store_behind:
                await self._wait_for_store()

            buffer = decoder.receive_buffer()[:READ_CHUNK_BYTES]
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:
                if not decoder.has_partial_frame:
                    await anyio.wait_readable(sock)
                    continue

                with anyio.move_on_after(self._settings.frame_timeout) as waiting:
                    await anyio.wait_readable(sock)

                if waiting.cancelled_caught:
                    self._drop_reason = (
                        f"a partial frame got no bytes for "
                        f"{self._settings.frame_timeout:g} s"
                    )
                    return self._drop_reason, False

                continue
            except OSError as exc:
                return f"connection lost: {exc.strerror or exc}", False

            if count == 0:
                return "closed by peer", False

            try:
                frames = decoder.received(count)
            except FrameTooLarge as exc:
                self._broadcaster.handle_all(self.client, exc.frames, time.time())
                self._broadcaster.send_error(self.client, f"frame refused: {exc}")
                self._drop_reason = f"frame too large: {exc}"
                return self._drop_reason, True

            if log.isEnabledFor(logging.DEBUG):
                for frame in frames:
                    log.debug(
                        "frame.received",
                        extra={
                            "client_id": self.client.id,
                            "type": type_name(frame.kind),
                            "size": frame.size,
                        },
                    )

            # One clock reading per read, not per frame: the time is for the
            # operator's history view, and the hot path stays cheap.
            self._broadcaster.handle_all(self.client, frames, time.time())

            await checkpoint()

    async def _wait_for_store(self) -> None:
        """Stop reading this room member until the store has written its backlog:
        TCP holds the sender back, and no command is lost or refused."""
        log.info(
            "client.paused",
            extra={"client_id": self.client.id, "reason": "the store is behind"},
        )
        # Polled: the store makes its progress on another thread.
        while True:
            await anyio.sleep(self._settings.store_flush_interval)
            if not self._broadcaster.is_store_behind:
                break

        log.info("client.resumed", extra={"client_id": self.client.id})

    async def _write_loop(self, done: anyio.Event) -> None:
        outbox = self.client.outbox
        while True:
            item = outbox.take()
            if item is None:
                if outbox.is_closed:
                    done.set()
                    return

                await outbox.wait()
            elif isinstance(item, list):
                await self._send(item)
            else:
                batch = await item.next_batch(MAX_BATCH_BYTES)
                if batch:
                    # Replayed frames are counted here; queued ones in Client.send.
                    self.client.frames_out += len(batch)
                    await self._send(batch)
                else:
                    outbox.finish_replay(item)

    async def _send(self, buffers: list[Wire]) -> None:
        sock = self._sock
        pending: list[Wire | memoryview] = list(buffers)
        while pending:
            try:
                sent = sock.sendmsg(pending[:MAX_BATCH_BUFFERS])
            except BlockingIOError:
                with anyio.move_on_after(self._settings.send_timeout) as waiting:
                    await anyio.wait_writable(sock)

                if waiting.cancelled_caught:
                    self._drop(
                        f"send stalled: no progress for "
                        f"{self._settings.send_timeout:g} s"
                    )
                    await checkpoint()

                continue
            except OSError as exc:
                # The add-on closes right after LEAVE_ROOM: a lost peer is normal.
                self._end(f"connection lost: {exc.strerror or exc}")
                await checkpoint()
                continue

            self.client.bytes_out += sent
            done = 0
            while done < len(pending) and sent >= len(pending[done]):
                sent -= len(pending[done])
                done += 1

            del pending[:done]
            if sent:
                pending[0] = memoryview(pending[0])[sent:]


def _presented_token(frame: Frame | None) -> str:
    """The ``mixer_token`` a first SET_CLIENT_CUSTOM_ATTRIBUTES carries, or ""."""
    if frame is None or frame.kind != MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES:
        return ""

    try:
        attributes = PayloadReader(frame.payload).read_json_object()
    except MalformedPayload:
        return ""

    token = attributes.get(TOKEN_ATTRIBUTE)
    return token if isinstance(token, str) else ""
