"""A minimal sans-IO HTTP/1.1 request reader, enough for the operations port.

Only what a health checker, Prometheus or a browser sends for a GET: a
request line and headers, no body. Limits are fixed and small, so a
misbehaving peer cannot make the server buffer much. Every response closes
the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl

MAX_HEAD_BYTES = 8192
_REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HttpRequest(NamedTuple):
    method: str
    path: str
    query: Mapping[str, str] = {}  # the last value of each name
    headers: Mapping[str, str] = {}  # names in lower case; a repeated header keeps its last value


class HttpResponse(NamedTuple):
    """A response to encode (:func:`encode_response`), for handlers that answer later."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = {}


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
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise HttpError(400, "malformed request line")
        method = parts[0].decode("ascii", "replace")
        path, _, query = parts[1].decode("ascii", "replace").partition("?")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise HttpError(400, "malformed header line")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        return HttpRequest(method, path, dict(parse_qsl(query)), headers)


def encode_response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (extra_headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body
