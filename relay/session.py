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
from relay.client import Client
from relay.config import Settings
from relay.errors import FrameTooLarge
from relay.messages import MessageType, type_name
from relay.outbox import MAX_BATCH_BUFFERS, MAX_BATCH_BYTES, Outbox
from relay.protocol import FrameDecoder, Wire, encode_frame, encode_string

log = logging.getLogger(__name__)

# A reader hands at most this much to the broadcaster before letting others run.
READ_CHUNK_BYTES = 128 * 1024

# How long a connection that is being closed on purpose may take to send its last
# frames (the SEND_ERROR that explains why).
CLOSING_FLUSH_SECONDS = 1.0

# Reads of a refused peer's requests before its connection is closed regardless.
REFUSAL_READS = 16


class Session:
    """Serves one accepted connection until either side ends it.

    Args:
        sock: the accepted socket, already non-blocking.
        broadcaster: the relay's shared state.
        settings: limits and timeouts.
    """

    def __init__(
        self, sock: socket.socket, broadcaster: Broadcaster, settings: Settings
    ) -> None:
        ip, port = sock.getpeername()[:2]
        self._sock = sock
        self._broadcaster = broadcaster
        self._settings = settings
        self._scope = anyio.CancelScope()
        self._drop_reason: str | None = None
        # What ended the session when nothing inside it did: the relay stopping.
        self._end_reason = "relay stopping"
        self.client = Client(ip, port, Outbox(settings.client_buffer_bytes), self._drop)

    async def run(self) -> None:
        """Serve the connection, then clean up whatever ended it."""
        client = self.client
        try:
            refusal = self._broadcaster.admission_refusal(client)
        except Exception:
            # Contained, and closed rather than let in unchecked.
            log.exception("session.admission_failed", extra={"client_id": client.id})
            refusal = "the relay could not check this connection; try again later"

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
                log.warning(
                    "client.dropped", extra={"client_id": client.id, "reason": reason}
                )

            self._close(reason or self._end_reason, is_drop)

    async def _refuse(self, message: str) -> None:
        """Tell a peer the relay will not serve why, then close the connection."""
        client_id = self.client.id
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

    def _end(self, reason: str) -> None:
        self._end_reason = reason
        self._scope.cancel()

    async def _serve(self) -> str:
        async with anyio.create_task_group() as tasks:
            writer_done = anyio.Event()
            tasks.start_soon(self._write_loop, writer_done)
            reason, must_flush = await self._read_loop()
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
            received_at = time.time()
            for frame in frames:
                self._broadcaster.handle(self.client, frame, received_at)

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
