"""One blocking client connection speaking the native protocol.

Not thread-safe on its own: the pool hands a connection to one thread at a
time. Supports pipelining (send several frames, then read their replies in
order); a reply whose request id does not match is a protocol violation and
the connection is discarded.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Sequence

from aegiskv.client.errors import AegisTimeoutError, ConnectionClosedError, ProtocolViolationError
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, FrameDecoder

_RECV_SIZE = 262144
# A client accepts whatever the server sends back (up to 4 GiB frames); limits
# protect servers from clients, and the client chose to talk to this server.
_CLIENT_LIMITS = native.FrameLimits(
    max_key_bytes=2**32 - 2, max_value_bytes=2**32 - 2, max_items=2**32 - 1, max_frame_bytes=2**40
)


class NativeConnection:
    def __init__(
        self,
        address: tuple[str, int],
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._decoder = FrameDecoder(_CLIENT_LIMITS, native.RESPONSE_OPCODES)
        self._next_id = 1
        self.broken = False
        self.created = time.monotonic()
        try:
            sock = socket.create_connection(address, timeout=connect_timeout)
        except TimeoutError as error:
            raise AegisTimeoutError(f"connecting to {_show(address)} timed out after {connect_timeout}s") from error
        except OSError as error:
            raise ConnectionClosedError(f"cannot connect to {_show(address)}: {error.strerror or error}") from error
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=address[0])
            except TimeoutError as error:
                sock.close()
                raise AegisTimeoutError(f"TLS handshake with {_show(address)} timed out") from error
            except (ssl.SSLError, OSError) as error:
                sock.close()
                raise ConnectionClosedError(f"TLS handshake with {_show(address)} failed: {error}") from error
        self._sock = sock
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timeout: float | None = connect_timeout
        # For stale(): registered once, so the check before each reuse is the poll(2) call alone.
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN | select.POLLPRI)

    def next_request_id(self) -> int:
        request_id = self._next_id
        self._next_id = request_id + 1 if request_id < 0xFFFFFFFF else 1
        return request_id

    def _set_timeout(self, timeout: float) -> None:
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def send(self, payload: bytes) -> None:
        try:
            self._set_timeout(self._write_timeout)
            self._sock.sendall(payload)
        except TimeoutError as error:
            self.close()
            raise AegisTimeoutError(f"sending to {_show(self.address)} timed out") from error
        except OSError as error:
            self.close()
            raise ConnectionClosedError(f"connection to {_show(self.address)} lost while sending: {error}") from error

    def receive(self, request_id: int) -> Frame:
        """The reply to ``request_id`` (replies arrive in request order)."""
        decoder = self._decoder
        deadline = time.monotonic() + self._read_timeout
        while True:
            try:
                frame = decoder.next_frame() if decoder.buffered else None
            except native.ProtocolError as error:
                self.close()
                raise ProtocolViolationError(f"bad reply from {_show(self.address)}: {error}") from error
            if frame is not None:
                if frame.status == native.Status.PROTOCOL_ERROR or frame.status == native.Status.BUSY:
                    self.close()  # the server closes after these
                    if frame.request_id in (0, request_id):
                        return frame
                if frame.request_id != request_id:
                    self.close()
                    raise ProtocolViolationError(
                        f"reply for request {frame.request_id} from {_show(self.address)} "
                        f"while waiting for {request_id}"
                    )
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise AegisTimeoutError(f"no reply from {_show(self.address)} within {self._read_timeout}s")
            try:
                # Re-arm the timeout only when a previous wait used part of it.
                self._set_timeout(self._read_timeout if remaining >= self._read_timeout * 0.999 else remaining)
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError as error:
                self.close()
                raise AegisTimeoutError(f"no reply from {_show(self.address)} within {self._read_timeout}s") from error
            except OSError as error:
                self.close()
                raise ConnectionClosedError(f"connection to {_show(self.address)} lost: {error}") from error
            if not data:
                self.close()
                raise ConnectionClosedError(f"connection closed by {_show(self.address)}")
            decoder.receive_data(data)

    def call(self, opcode: int, **fields: object) -> Frame:
        request_id = self.next_request_id()
        self.send(native.encode_frame(opcode, request_id, **fields))  # type: ignore[arg-type]
        return self.receive(request_id)

    def call_many(self, requests: Sequence[tuple[int, dict[str, object]]]) -> list[Frame]:
        """Pipelining: send every request in one write, then read the replies in order."""
        return [self.receive(request_id) for request_id in self.send_many(requests)]

    def send_many(self, requests: Sequence[tuple[int, dict[str, object]]]) -> list[int]:
        """Send every request in one write; returns their ids, for :meth:`receive` in this order."""
        ids = []
        payload = []
        for opcode, fields in requests:
            request_id = self.next_request_id()
            ids.append(request_id)
            payload.append(native.encode_frame(opcode, request_id, **fields))  # type: ignore[arg-type]
        self.send(b"".join(payload))
        return ids

    def stale(self) -> bool:
        """True when the connection cannot be used any more: the server closed it while it sat idle.

        An idle connection owes nothing and is owed nothing, so anything to read
        (an end of stream, a reset, a BUSY refusal) means the server is gone or
        gave up on it. Asked before a pooled connection is reused, so a request
        is not sent into a connection the server already closed: a failure to
        connect afresh says the request was not applied, where a request lost on
        a dead connection has an unknown outcome (the server may still close it
        between this check and the send: that loss is an unknown outcome too).
        One poll(2) with no wait (POLLHUP and POLLERR count: poll reports them
        unasked).
        """
        if self.broken:
            return True
        if self._decoder.buffered or (isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()):
            return True
        try:
            return bool(self._poller.poll(0))
        except OSError:
            return True

    def close(self) -> None:
        self.broken = True
        try:
            self._sock.close()
        except OSError:
            pass


def _show(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
