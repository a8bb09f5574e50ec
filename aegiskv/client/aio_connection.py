"""One asyncio client connection speaking the native protocol.

The asyncio twin of :mod:`aegiskv.client.connection`: the same sans-IO codec
(``aegiskv.protocols.native.codec``) on an asyncio stream pair. One task uses
a connection at a time (the pool lends it). ``owed`` counts the replies sent
for and not yet read: the pool takes a connection back only when it owes
nothing, so a request cancelled while it waited for its reply never leaves
that reply for the next borrower to read as its own; such a connection is
closed instead (draining it would keep a task alive for a reply nobody wants,
and cost a round trip before the connection could be lent again).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from aegiskv.client.connection import _CLIENT_LIMITS
from aegiskv.client.errors import AegisTimeoutError, ConnectionClosedError, ProtocolViolationError
from aegiskv.client.rounds import show
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, FrameDecoder

T = TypeVar("T")
_RECV_SIZE = 262144


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``, or ``asyncio.TimeoutError`` after ``seconds``; cancelling the caller cancels it.

    ``asyncio.timeout`` (3.11+) runs it in the calling task; ``wait_for`` on
    3.10 wraps it in a task of its own, which costs more per call.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


class AsyncConnection:
    """A connected stream pair; make one with :meth:`open`."""

    def __init__(
        self,
        address: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        read_timeout: float,
        write_timeout: float,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._decoder = FrameDecoder(_CLIENT_LIMITS, native.RESPONSE_OPCODES)
        self._next_id = 1
        self.owed = 0  # replies sent for and not read yet
        self.broken = False

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncConnection:
        """Connect (and shake hands for TLS) within ``connect_timeout`` seconds."""
        host, port = address
        what = "TLS handshake with" if ssl_context is not None else "connecting to"
        try:
            # asyncio sets TCP_NODELAY on TCP streams itself.
            reader, writer = await within(
                connect_timeout,
                asyncio.open_connection(
                    host, port, ssl=ssl_context, server_hostname=host if ssl_context is not None else None
                ),
            )
        except asyncio.TimeoutError as error:
            raise AegisTimeoutError(f"{what} {show(address)} timed out after {connect_timeout}s") from error
        except (ssl.SSLError, OSError) as error:
            detail = getattr(error, "strerror", None) or error
            raise ConnectionClosedError(f"{what} {show(address)} failed: {detail}") from error
        return cls(address, reader, writer, read_timeout, write_timeout)

    def send_many(self, requests: Sequence[tuple[int, dict[str, object]]]) -> list[int]:
        """Queue every request in one write; returns their ids, for :meth:`receive` in this order.

        Not a coroutine: the bytes go to the transport's buffer at once; :meth:`flush`
        waits for them to leave when the buffer is full.
        """
        ids = []
        payload = []
        for opcode, fields in requests:
            request_id = self._next_id
            self._next_id = request_id + 1 if request_id < 0xFFFFFFFF else 1
            ids.append(request_id)
            payload.append(native.encode_frame(opcode, request_id, **fields))  # type: ignore[arg-type]
        if self.broken:
            raise ConnectionClosedError(f"connection to {show(self.address)} is closed")
        self.owed += len(ids)
        self._writer.write(b"".join(payload))
        return ids

    async def flush(self) -> None:
        """Wait, up to the write timeout, while the transport holds more than its high-water mark."""
        try:
            if not self._writer.transport.get_write_buffer_size():
                return  # all written already: no coroutine, no timer
        except AttributeError:
            # Python 3.10's TLS transport, once the connection is lost, has no transport beneath it
            # to ask; drain() below, or the read that follows, reports the loss.
            pass
        try:
            await within(self._write_timeout, self._writer.drain())
        except asyncio.TimeoutError as error:
            self.close()
            raise AegisTimeoutError(f"sending to {show(self.address)} timed out") from error
        except OSError as error:
            self.close()
            raise ConnectionClosedError(f"connection to {show(self.address)} lost while sending: {error}") from error

    async def receive(self, request_id: int) -> Frame:
        """The reply to ``request_id`` (replies arrive in request order), within the read timeout."""
        frame = self._buffered_frame(request_id)
        if frame is None:
            try:
                frame = await within(self._read_timeout, self._read_frame(request_id))
            except asyncio.TimeoutError as error:
                self.close()
                raise AegisTimeoutError(f"no reply from {show(self.address)} within {self._read_timeout}s") from error
        self.owed -= 1
        return frame

    async def _read_frame(self, request_id: int) -> Frame:
        while True:
            try:
                data = await self._reader.read(_RECV_SIZE)
            except OSError as error:  # ssl.SSLError is one too
                self.close()
                raise ConnectionClosedError(f"connection to {show(self.address)} lost: {error}") from error
            if not data:
                self.close()
                raise ConnectionClosedError(f"connection closed by {show(self.address)}")
            self._decoder.receive_data(data)
            frame = self._buffered_frame(request_id)
            if frame is not None:
                return frame

    def _buffered_frame(self, request_id: int) -> Frame | None:
        """The reply if the bytes read so far hold it; checks it answers ``request_id``."""
        decoder = self._decoder
        try:
            frame = decoder.next_frame() if decoder.buffered else None
        except native.ProtocolError as error:
            self.close()
            raise ProtocolViolationError(f"bad reply from {show(self.address)}: {error}") from error
        if frame is None:
            return None
        if frame.status == native.Status.PROTOCOL_ERROR or frame.status == native.Status.BUSY:
            self.close()  # the server closes after these
            if frame.request_id in (0, request_id):
                return frame
        if frame.request_id != request_id:
            self.close()
            raise ProtocolViolationError(
                f"reply for request {frame.request_id} from {show(self.address)} while waiting for {request_id}"
            )
        return frame

    async def call(self, opcode: int, **fields: object) -> Frame:
        (request_id,) = self.send_many([(opcode, fields)])
        await self.flush()
        return await self.receive(request_id)

    def reusable(self) -> bool:
        """True when the pool may lend it again: open, owing no reply, nothing unread.

        Asked when it is given back and again before it is lent: the event loop
        notices an end of stream (or a BUSY refusal) that arrived while it sat
        idle, so a request is not sent into a connection the server already
        closed (see ``NativeConnection.stale`` for why that matters to retries).
        """
        return not (
            self.broken
            or self.owed
            or self._decoder.buffered
            or self._reader.at_eof()
            or self._reader.exception() is not None
            or self._writer.is_closing()
        )

    def close(self) -> None:
        """Close at once (the transport drops what it has not sent); safe to call again."""
        self.broken = True
        self._writer.close()
