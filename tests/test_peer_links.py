"""Cluster links between PeerNetworks on one reactor: handshake, messages both ways, refusals, reconnects."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from aegiskv.cluster.peer_wire import Kind, frame
from aegiskv.net.reactor import Reactor
from aegiskv.server.peer_links import PeerNetwork, PeerSecurity, Reply


class Node:
    """A PeerNetwork that records what it receives and answers LEASE frames with an echo."""

    def __init__(
        self, reactor: Reactor, node_id: str, key: bytes | None, address: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.received: list[tuple[str, int, bytes]] = []
        self.ups: list[str] = []
        self.network = PeerNetwork(
            reactor, node_id, PeerSecurity(key), self.on_message, max_frame=1 << 20, on_link_up=self.ups.append
        )
        self.listener = self.network.listen(address)

    def on_message(self, peer: str, kind: int, payload: bytes, reply: Reply) -> None:
        self.received.append((peer, kind, payload))
        if kind == Kind.LEASE:
            reply(Kind.ACK, payload.upper())

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address


def run_until(reactor: Reactor, condition: Callable[[], object], limit: float = 10.0) -> None:
    deadline = reactor.now + limit
    reactor.run(until=lambda: bool(condition()) or reactor.now > deadline)
    assert condition(), "the condition did not become true"


@pytest.fixture
def reactor():
    loop = Reactor(worker_threads=1)
    yield loop
    loop.close()


def test_a_link_comes_up_and_carries_requests_and_replies(reactor: Reactor) -> None:
    a, b = Node(reactor, "a", b"secret" * 4), Node(reactor, "b", b"secret" * 4)
    a.network.set_peers({"b": b.address})
    run_until(reactor, lambda: a.network.is_up("b"))
    assert a.ups == ["b"]
    assert a.network.send("b", Kind.LEASE, b"ping")
    run_until(reactor, lambda: a.received)
    assert b.received == [("a", Kind.LEASE, b"ping")]  # b knows who dialled it
    assert a.received == [("b", Kind.ACK, b"PING")]  # the reply came back on a's own link
    assert not b.network.send("a", Kind.LEASE, b"x")  # b has no link of its own to a


def test_a_peer_without_the_key_is_refused_and_gets_no_message_through(reactor: Reactor) -> None:
    a, b = Node(reactor, "a", b"right-key" * 3), Node(reactor, "b", b"wrong-key" * 3)
    a.network.set_peers({"b": b.address})
    run_until(reactor, lambda: a.network._backoff)  # the link failed and a retry is scheduled
    assert not a.network.is_up("b")
    assert b.received == [] and a.received == []


def test_a_link_to_the_wrong_node_is_refused(reactor: Reactor) -> None:
    a, b = Node(reactor, "a", None), Node(reactor, "b", None)
    a.network.set_peers({"not-b": b.address})
    run_until(reactor, lambda: a.network._backoff)
    assert not a.network.is_up("not-b")


def test_a_stranger_cannot_make_the_node_buffer_before_the_handshake(reactor: Reactor) -> None:
    b = Node(reactor, "b", b"k" * 32)
    with socket.create_connection(b.address, timeout=5) as stranger:
        stranger.sendall(frame(Kind.HELLO, b"x" * 4096))  # over the 512-byte handshake limit
        stranger.setblocking(False)
        got = b""

        def closed() -> bool:
            nonlocal got
            try:
                chunk = stranger.recv(4096)
            except BlockingIOError:
                return False
            got += chunk
            return chunk == b""

        run_until(reactor, closed)
    assert b"limit" in got  # REFUSED names the reason before closing
    assert b.received == []


def test_a_link_comes_back_after_the_peer_restarts(reactor: Reactor) -> None:
    a, b = Node(reactor, "a", None), Node(reactor, "b", None)
    address = b.address
    a.network.set_peers({"b": address})
    run_until(reactor, lambda: a.network.is_up("b"))
    # b goes away: its listener and sessions close.
    b.network.close()
    reactor.stop_accepting()
    for transport in list(reactor.connections.values()):
        transport.close(flush=False)
    run_until(reactor, lambda: not a.network.is_up("b"))
    # A new b on the same address.
    Node(reactor, "b", None, address)
    run_until(reactor, lambda: a.network.is_up("b"))
    assert a.ups == ["b", "b"]
