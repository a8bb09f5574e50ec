"""Helpers for functional tests that talk to a real node below the client: raw sockets, /proc, HTTP.

The Python client hides framing, retries and pooling; the tests that check what
the server does with a misbehaving peer (garbage, floods, readers that never
read) need to own the socket instead. Everything here uses real sockets to a
real ``aegis`` process; nothing is mocked.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, FrameDecoder, Opcode
from aegiskv.testing.localnode import LocalNode

T = TypeVar("T")

# Error replies that belong to no request (PROTOCOL_ERROR, BUSY) carry opcode 0,
# which the default decoder refuses; a test reader must accept them.
ANY_OPCODE = frozenset({0, *(int(opcode) for opcode in Opcode)})
# Replies can be larger than what a server accepts from clients (MGET of many keys).
_READER_LIMITS = native.FrameLimits(
    max_key_bytes=2**32 - 2, max_value_bytes=2**32 - 2, max_items=2**32 - 1, max_frame_bytes=2**40
)


def wait_until(predicate: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    The result is never None (None is not truthy): a predicate returning ``X | None`` gives an ``X``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class RawConnection:
    """A blocking socket speaking the native protocol frame by frame."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connect so the TCP window is negotiated small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.decoder = FrameDecoder(_READER_LIMITS, opcodes=ANY_OPCODE)
        self._next_id = 1

    def next_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def encode(self, opcode: int, **fields) -> tuple[int, bytes]:
        request_id = self.next_id()
        return request_id, native.encode_frame(opcode, request_id, **fields)

    def send(self, opcode: int, **fields) -> int:
        request_id, frame = self.encode(opcode, **fields)
        self.sock.sendall(frame)
        return request_id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> Frame:
        """The next frame; ``EOFError`` when the server closed the connection first."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("server closed the connection")
            self.decoder.receive_data(data)

    def request(self, opcode: int, **fields) -> Frame:
        request_id = self.send(opcode, **fields)
        frame = self.recv_frame()
        assert frame.request_id == request_id, (frame, request_id)
        return frame

    def read_until_closed(self) -> list[Frame]:
        """Every frame the server sends until it closes (fails on the socket timeout)."""
        frames = []
        while True:
            try:
                frames.append(self.recv_frame())
            except EOFError:
                return frames

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def error_code(frame: Frame) -> str:
    """The error name an error reply carries in its one item."""
    assert len(frame.items) == 1, frame
    return frame.items[0][0].decode()


def server_has_read_everything(sock: socket.socket, server_port: int) -> bool:
    """True once every byte sent on ``sock`` has been read by the server process.

    Two queues can still hold bytes after ``sendall`` returns: our send queue
    (TIOCOUTQ: unsent or unacknowledged) and the server socket's receive queue
    (its rx_queue in /proc/net/tcp: acknowledged but not yet read by the
    process). Both empty means the server's reactor has taken the bytes.
    """
    unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    if unsent:
        return False
    client_port = sock.getsockname()[1]
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                return int(fields[4].split(":")[1], 16) == 0
    return False


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far.

    What a stall costs the server, counted in its own CPU rather than in a client's wall
    clock: a loaded test machine delays replies, it does not make the server work more.
    """
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name (which may hold spaces, hence the rpartition).
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def resp_address_of(node: LocalNode) -> tuple[str, int]:
    """The node's RESP address; the node must serve RESP (LocalNode's is None with --resp-bind off)."""
    assert node.resp_address is not None, "the node does not serve RESP"
    return node.resp_address


def health_address_of(node: LocalNode) -> tuple[str, int]:
    """The node's health (HTTP) address; the node must serve one (None with health_addr=None)."""
    assert node.health_address is not None, "the node has no health port"
    return node.health_address


def http_request(
    address: tuple[str, int], path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the health port."""
    connection = http.client.HTTPConnection(address[0], address[1], timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
