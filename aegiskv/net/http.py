"""A minimal sans-IO HTTP/1.1 request reader, enough for /health, /ready and /metrics.

Only what a health checker or Prometheus sends: a request line and headers,
no body. Limits are fixed and small, so a misbehaving peer cannot make the
server buffer much. Every response closes the connection.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_HEAD_BYTES = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpRequest(NamedTuple):
    method: str
    path: str


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestReader:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_request(self) -> HttpRequest | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise HttpError(400, "request head too large")
            return None
        if end > MAX_HEAD_BYTES:
            raise HttpError(400, "request head too large")
        line = bytes(self._buffer[: self._buffer.find(b"\r\n")])
        del self._buffer[: end + 4]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise HttpError(400, "malformed request line")
        method = parts[0].decode("ascii", "replace")
        path = parts[1].decode("ascii", "replace").split("?", 1)[0]
        return HttpRequest(method, path)


def encode_response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", head_only: bool = False
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body
