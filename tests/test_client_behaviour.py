"""The Python client's own behaviour against real nodes: retries, the server list, close, threads.

"Down" servers are real sockets too: a port bound without listening refuses
connections (ECONNREFUSED), and a listener that never accepts completes the
TCP handshake but never answers (a hung server, for timeouts).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from aegiskv.client import (
    AegisTimeoutError,
    Client,
    ConditionNotMetError,
    Config,
    ConnectionClosedError,
    NotFoundError,
    RetriesExhaustedError,
)
from aegiskv.testing.localnode import LocalNode


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("client-node")))
    yield node
    assert node.stop() == 0


@pytest.fixture
def refused() -> Iterator[str]:
    """host:port of a bound port nobody listens on (held, so no one else can take it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def hung() -> Iterator[str]:
    """host:port of a listener that never accepts: connects succeed, replies never come."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_retries_on_the_next_server_when_the_first_is_down(live: LocalNode, refused: str) -> None:
    with Client(Config(seeds=[refused, live.address_text])) as client:
        client.set("retry:k", "v")  # unconditional SET is idempotent: retried on the live server
        assert client.get("retry:k") == b"v"
        assert client.mget(["retry:k"]) == [b"v"]


def test_a_conditional_set_that_never_left_is_retried(live: LocalNode, refused: str) -> None:
    # The first attempt cannot connect: nothing was sent, so even a conditional set goes to the next server.
    with Client(Config(seeds=[refused, live.address_text])) as client:
        version = client.set("retry:cond", "v", only_if_absent=True)
        assert client.get_with_ttl("retry:cond").version == version
        # Applied once: the same condition now fails, and says so.
        with pytest.raises(ConditionNotMetError):
            client.set("retry:cond", "w", only_if_absent=True)


def test_a_conditional_set_with_an_unknown_outcome_is_not_retried(live: LocalNode, hung: str) -> None:
    # Sent to a server that never answers: it may have been applied, so it is not repeated elsewhere.
    config = Config(seeds=[hung, live.address_text], read_timeout=0.3)
    with Client(config) as client, pytest.raises(AegisTimeoutError):
        client.set("retry:unknown", "v", only_if_absent=True)
    with Client(Config(seeds=[live.address_text])) as direct, pytest.raises(NotFoundError):
        direct.get("retry:unknown")
    # An unconditional set is idempotent: after the same timeout it goes to the live server.
    with Client(config) as client:
        client.set("retry:unknown", "v")
    with Client(Config(seeds=[live.address_text])) as direct:
        assert direct.get("retry:unknown") == b"v"


def test_all_servers_down_exhausts_retries(refused: str, hung: str) -> None:
    config = Config(seeds=[refused, hung], max_retries=3, conn_timeout=0.3, read_timeout=0.3)
    with Client(config) as client, pytest.raises(RetriesExhaustedError) as raised:
        client.get("k")
    assert "4 attempts" in str(raised.value)
    # __cause__ is the last failure (attempt 4 goes to the hung server: a timeout).
    assert isinstance(raised.value.__cause__, AegisTimeoutError)


def test_without_retries_the_failure_itself_is_raised(refused: str, hung: str) -> None:
    with Client(Config(seeds=[refused], max_retries=0)) as client, pytest.raises(ConnectionClosedError):
        client.get("k")
    config = Config(seeds=[hung], max_retries=0, read_timeout=0.3)
    with Client(config) as client, pytest.raises(AegisTimeoutError):
        client.get("k")


def test_server_list_management(live: LocalNode, refused: str) -> None:
    with Client(Config(seeds=[refused], max_retries=0)) as client:
        assert client.servers() == [refused]
        with pytest.raises(ConnectionClosedError):
            client.ping()

        client.add_server(live.address_text)
        client.add_server(live.address_text)  # adding twice is a no-op
        assert client.servers() == [refused, live.address_text]

        client.remove_server(refused)
        assert client.servers() == [live.address_text]
        # With the dead server gone, even a call that may not be retried reaches the live one.
        client.set("list:k", "v", only_if_absent=True)
        assert client.get("list:k") == b"v"

        with pytest.raises(ValueError):
            client.remove_server(refused)
        with pytest.raises(ValueError):
            client.add_server("no-port")

        client.remove_server(live.address_text)
        assert client.servers() == []
        with pytest.raises(ConnectionClosedError):
            client.get("list:k")


def test_use_after_close_raises_connection_closed(live: LocalNode) -> None:
    client = Client(Config(seeds=[live.address_text]))
    client.set("closed:k", "v")
    client.close()
    with pytest.raises(ConnectionClosedError):
        client.get("closed:k")
    with pytest.raises(ConnectionClosedError):
        client.pipeline().get("closed:k").execute()
    client.close()  # closing twice is harmless

    with Client(Config(seeds=[live.address_text])) as managed:
        assert managed.get("closed:k") == b"v"
    with pytest.raises(ConnectionClosedError):
        managed.ping()


def test_one_client_shared_by_many_threads(start_node) -> None:
    # A node of its own, so its connection count is this client's alone.
    node = start_node()
    threads_count, rounds, max_conns = 16, 150, 4
    failures: list[BaseException] = []
    start = threading.Barrier(threads_count, timeout=10)
    with Client(Config(seeds=[node.address_text], max_conns=max_conns)) as client:

        def work(thread_index: int) -> None:
            try:
                start.wait()
                for round_index in range(rounds):
                    key = f"thread:{thread_index}:{round_index % 10}"
                    value = f"{thread_index}-{round_index}"
                    client.set(key, value)
                    assert client.get(key) == value.encode()
                    if round_index % 25 == 0:
                        results = client.pipeline().set(key, "p").get(key).execute()
                        assert results[1] == b"p"
            except BaseException as error:
                failures.append(error)

        workers = [threading.Thread(target=work, args=(index,)) for index in range(threads_count)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert not failures, failures[:3]
        # The pool bounds the connections however many threads share the client.
        assert int(client.info("clients")["clients"]["connected_clients"]) <= max_conns
        values = client.mget([f"thread:{index}:9" for index in range(threads_count)])
        assert values == [f"{index}-{rounds - 1}".encode() for index in range(threads_count)]


def test_conditional_failure_does_not_break_the_connection(live: LocalNode) -> None:
    # A refused conditional set is an answer, not a transport failure: the pooled connection stays usable.
    with Client(Config(seeds=[live.address_text], max_conns=1)) as client:
        client.set("cond:k", "v")
        opened = client.info("stats")["stats"]["total_connections_received"]
        for _ in range(3):
            with pytest.raises(ConditionNotMetError):
                client.set("cond:k", "w", only_if_absent=True)
        assert client.get("cond:k") == b"v"
        assert client.info("stats")["stats"]["total_connections_received"] == opened
