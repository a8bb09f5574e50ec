"""Connections the reactor opens itself (Reactor.connect): plain, TLS, refused."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from aegiskv.net.reactor import ConnectionHandler, ListenerOptions, Reactor, Transport
from aegiskv.net.tls import client_context, server_context


class Echo(ConnectionHandler):
    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


class Caller(ConnectionHandler):
    """Sends one message, collects the answer, records how it ended."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.received = b""
        self.failed: OSError | None = None
        self.lost = False

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self) -> None:
        self.lost = True

    def connection_failed(self, error: OSError) -> None:
        self.failed = error


def options(name: str, factory: type[ConnectionHandler] = ConnectionHandler) -> ListenerOptions:
    return ListenerOptions(
        name=name, protocol_factory=factory, max_connections=8, idle_timeout=0, output_high_water=1 << 20
    )


def run_until(reactor: Reactor, condition: Callable[[], object], limit: float = 10.0) -> None:
    deadline = reactor.now + limit
    reactor.run(until=lambda: bool(condition()) or reactor.now > deadline)
    assert condition(), "the condition did not become true"


def test_a_plain_connection_exchanges_bytes() -> None:
    reactor = Reactor(worker_threads=1)
    try:
        listener = reactor.listen(("127.0.0.1", 0), options("echo", Echo))
        caller = Caller(b"hello")
        reactor.connect(listener.address, options("peer"), caller)
        run_until(reactor, lambda: caller.received == b"HELLO")
        outbound = [transport for transport in reactor.connections.values() if transport.listener is None]
        assert len(outbound) == 1 and outbound[0].options.name == "peer"
        assert reactor.client_connections == 1  # the accepted side; the dialled side never counts
        outbound[0].close()
        run_until(reactor, lambda: caller.lost)
    finally:
        reactor.close()


def test_a_refused_connection_is_reported_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()  # bound, never listening: connections are refused
        reactor = Reactor(worker_threads=1)
        try:
            caller = Caller(b"x")
            reactor.connect(address, options("peer"), caller)
            run_until(reactor, lambda: caller.failed is not None)
            assert caller.failed is not None and caller.failed.errno == errno.ECONNREFUSED
            assert not reactor.connections and not caller.lost
        finally:
            reactor.close()


def test_a_tls_connection_verifies_the_server_and_exchanges_bytes(tmp_path: Path) -> None:
    authority = trustme.CA()
    server_cert = authority.issue_cert("127.0.0.1")
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(cert)
    server_cert.private_key_pem.write_to_path(key)
    authority.cert_pem.write_to_path(ca)
    reactor = Reactor(worker_threads=1)
    try:
        listener_options = options("echo", Echo)
        listener_options.ssl_context = server_context(str(cert), str(key))
        listener = reactor.listen(("127.0.0.1", 0), listener_options)
        caller = Caller(b"secret")
        reactor.connect(listener.address, options("peer"), caller, client_context(str(ca)), "127.0.0.1")
        run_until(reactor, lambda: caller.received == b"SECRET")
    finally:
        reactor.close()


def test_a_tls_server_the_client_does_not_trust_fails_the_handshake(tmp_path: Path) -> None:
    stranger = trustme.CA().issue_cert("127.0.0.1")
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    stranger.cert_chain_pems[0].write_to_path(cert)
    stranger.private_key_pem.write_to_path(key)
    trustme.CA().cert_pem.write_to_path(ca)
    reactor = Reactor(worker_threads=1)
    try:
        listener_options = options("echo", Echo)
        listener_options.ssl_context = server_context(str(cert), str(key))
        listener = reactor.listen(("127.0.0.1", 0), listener_options)
        caller = Caller(b"secret")
        reactor.connect(listener.address, options("peer"), caller, client_context(str(ca)), "127.0.0.1")
        run_until(reactor, lambda: caller.lost)
        assert caller.received == b""
    finally:
        reactor.close()


def test_options_are_required_for_a_connection_without_listener() -> None:
    reactor = Reactor(worker_threads=1)
    try:
        with pytest.raises(ValueError, match="given its options"):
            Transport(reactor, socket.socket(), None, None, 1)
    finally:
        reactor.close()
