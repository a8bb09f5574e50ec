"""Bounded memory before authentication and per client, against real processes (issue 28).

* Clients that each send most of a large request: the node's client buffer
  budget (``max_client_memory``) disconnects the largest, RSS stays within
  max-memory + the budget + the idle RSS, and a small client keeps its answers.
* Strangers on the gossip TCP port (garbage, the old 4 MiB length prefix, half
  a header that never finishes): the node buffers nothing for them, RSS stays
  flat, and a real node with the gossip secret still joins although the
  strangers took every connection slot.
* The unauthenticated budget across ports: many half-sent requests before AUTH
  are capped by ``max_unauthenticated_memory``, oldest first.

RSS is read from /proc while the load runs (tests/wire.py); nothing asserts
elapsed time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode
from tests.wire import rss_bytes, wait_until

MIB = 1024 * 1024
TOKEN = "budget-test-token-0123456789"
SECRET = "budget-gossip-secret-0123456789"


class _RssPeak:
    """Samples a process's RSS in a thread until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(AssertionError, OSError):
                self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _resp_call(sock: socket.socket, *arguments: bytes) -> bytes:
    """Send one RESP command and return the first reply line (enough for +OK, +PONG, -ERR)."""
    sock.sendall(b"*%d\r\n" % len(arguments) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in arguments))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("the node closed the connection")
        reply += chunk
    return reply


def _info(node: LocalNode, section: str) -> dict[str, Any]:
    config = Config(seeds=[node.address_text], auth_token=TOKEN, cluster_routing=False)
    with Client(config) as client:
        return client.info(section)[section]


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return sock


@pytest.fixture
def budget_node(tmp_path) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path / "node"), ["--max-memory", "64", "--auth-token", TOKEN], gossip=None)
    try:
        yield node
    finally:
        node.kill()


def test_large_clients_are_disconnected_and_rss_stays_bounded(budget_node: LocalNode) -> None:
    node = budget_node
    assert node.resp_address is not None
    clients = _info(node, "clients")
    budget = clients["aegis_max_client_memory"]
    # The default: a quarter of 64 MB is below one client's worth, so the floor
    # (max_value_bytes 64 MiB + output_high_water 4 MiB + 1 MiB) applies.
    assert budget == 69 * MIB
    idle = rss_bytes(node.pid)
    bulk, sent_each, senders = 64 * MIB, 60 * MIB, 8
    header = b"*3\r\n$3\r\nSET\r\n$5\r\nlarge\r\n$%d\r\n" % bulk
    chunk = os.urandom(MIB)
    closed_by_node = []

    def send_most_of_a_bulk(sock: socket.socket) -> None:
        try:
            sock.sendall(header)
            for _ in range(sent_each // len(chunk)):
                sock.sendall(chunk)
        except OSError:  # reset or broken pipe: the node disconnected us
            closed_by_node.append(sock)
            return
        # Everything went out: the node may still close us once it has read it all.
        try:
            sock.settimeout(30)
            if sock.recv(1) == b"":
                closed_by_node.append(sock)
        except OSError:
            closed_by_node.append(sock)

    sockets = []
    for _ in range(senders):
        sock = _connect(node.resp_address)
        assert _resp_call(sock, b"AUTH", TOKEN.encode()) == b"+OK\r\n"
        sockets.append(sock)
    small = _connect(node.resp_address)
    assert _resp_call(small, b"AUTH", TOKEN.encode()) == b"+OK\r\n"
    pongs = 0
    with _RssPeak(node.pid) as rss:
        threads = [threading.Thread(target=send_most_of_a_bulk, args=(sock,)) for sock in sockets]
        for thread in threads:
            thread.start()
        # A small client is served all along.
        while any(thread.is_alive() for thread in threads):
            assert _resp_call(small, b"PING") == b"+PONG\r\n"
            pongs += 1
        for thread in threads:
            thread.join()
    assert pongs > 0
    assert _resp_call(small, b"PING") == b"+PONG\r\n"
    # Two senders already hold 120 MiB, over the 69 MiB budget: at most one can be left.
    assert len(closed_by_node) >= senders - budget // sent_each
    bound = 64 * MIB + budget + idle
    assert rss.peak <= bound, f"peak RSS {rss.peak / MIB:.0f} MiB over {bound / MIB:.0f} MiB (idle {idle / MIB:.0f})"
    clients = _info(node, "clients")
    assert clients["aegis_client_memory_evictions"] >= senders - budget // sent_each
    assert clients["client_recent_max_input_buffer"] > 8 * MIB
    line = node.wait_for_log(r"closing resp connection \d+ from .* holding \d+ bytes: client buffers total")
    assert "max_client_memory" in line
    for sock in [*sockets, small]:
        sock.close()
    # Once the large clients are gone their buffers are no longer counted.
    wait_until(lambda: _info(node, "clients")["aegis_client_input_buffer_bytes"] == 0, what="buffers released")


def test_half_sent_requests_before_auth_are_capped_oldest_first(tmp_path) -> None:
    limit = 256 * 1024
    node = LocalNode(
        str(tmp_path / "node"),
        ["--auth-token", TOKEN],
        gossip=None,
        env={**os.environ, "AEGIS_MAX_UNAUTHENTICATED_MEMORY": str(limit)},
    )
    try:
        assert node.resp_address is not None
        assert _info(node, "clients")["aegis_max_unauthenticated_memory"] == limit
        # Each stranger sends most of a 4 KiB request (under unauthenticated_max_frame) and waits.
        half = b"*2\r\n$4\r\nECHO\r\n$4000\r\n" + b"x" * 3900
        strangers = []
        for _ in range(150):  # 150 x ~3.9 KiB: more than twice the 256 KiB budget
            sock = _connect(node.resp_address)
            sock.sendall(half)
            strangers.append(sock)
        clients = wait_until(
            lambda: (info := _info(node, "clients"))["aegis_unauthenticated_evictions"] >= 150 - limit // 3900 and info,
            what="the oldest strangers closed",
        )
        assert clients["aegis_unauthenticated_buffer_bytes"] <= limit
        # The oldest went first: the first stranger is closed, the last one is still open.
        strangers[0].settimeout(10)
        assert strangers[0].recv(1) == b""
        newest = strangers[-1]
        newest.sendall(b"x" * 100 + b"\r\n")  # the rest of its request: answered, not closed
        newest.settimeout(10)
        assert newest.recv(1) in (b"+", b"-", b"$")
        node.wait_for_log(r"closing resp connection \d+ from .* unauthenticated buffers total")
        for sock in strangers:
            sock.close()
    finally:
        node.kill()


class _HalfHeaderFlood:
    """Keeps ``count`` connections open on a gossip port, each holding the start of a signed header.

    As an attacker would, it reconnects whenever the node closes one (the request
    timeout, or displacement by a newcomer), so the port stays full while it runs.
    """

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.address = address
        self.sockets = [self._open() for _ in range(count)]
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket:
        sock = _connect(self.address)
        sock.sendall(b"\x01" + os.urandom(30))
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for index, sock in enumerate(self.sockets):
                try:
                    closed = sock.recv(1) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    sock.close()
                    with contextlib.suppress(OSError):
                        self.sockets[index] = self._open()
                        self.reopened += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_gossip_strangers_buffer_nothing_and_a_real_node_still_joins(tmp_path) -> None:
    common = ["--auth-token", TOKEN, "--gossip-secret", SECRET, "--max-memory", "64"]
    seed = LocalNode(str(tmp_path / "seed"), ["--node-id", "seed", *common])
    joiner: LocalNode | None = None
    flood: _HalfHeaderFlood | None = None
    try:
        gossip = seed.addresses["gossip"]
        idle = rss_bytes(seed.pid)
        garbage = os.urandom(MIB)
        with _RssPeak(seed.pid) as rss:
            # 32 send what used to be buffered whole: a 4 MiB length prefix, then 4 MiB.
            for _ in range(32):
                sock = _connect(gossip)
                with contextlib.suppress(OSError):
                    sock.sendall((4 * MIB - 1).to_bytes(4, "big"))
                    for _ in range(4):
                        sock.sendall(garbage)
                sock.close()
            # 64 send the start of a signed header and never finish it: they take every slot.
            flood = _HalfHeaderFlood(gossip, 64)
        assert rss.peak <= idle + 8 * MIB, f"RSS went from {idle / MIB:.0f} to {rss.peak / MIB:.0f} MiB"
        cluster = wait_until(
            lambda: (info := _info(seed, "cluster"))["aegis_gossip_header_refused"] >= 32 and info,
            what="the length-prefix strangers refused",
        )
        assert cluster["aegis_gossip_dropped_malformed"] >= 32
        # A real node joins although the strangers keep every slot taken: it displaces the oldest.
        joiner = LocalNode(
            str(tmp_path / "joiner"), ["--node-id", "joiner", "--seeds", f"127.0.0.1:{gossip[1]}", *common]
        )
        # A state exchange over TCP with the seed worked (the join's, or a periodic one).
        wait_until(lambda: _info(joiner, "cluster")["aegis_gossip_exchanges"] >= 1, timeout=30, what="an exchange")
        wait_until(lambda: _info(seed, "cluster")["aegis_members"] == 2, timeout=30, what="two members")
        assert _info(seed, "clients")["aegis_unauthenticated_displaced"] >= 1
    finally:
        if flood is not None:
            flood.close()
        if joiner is not None:
            joiner.kill()
        seed.kill()
