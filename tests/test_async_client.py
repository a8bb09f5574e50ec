"""The asyncio client against real ``aegis`` processes: the API, pools, cancellation, TLS, auth, a cluster.

Plain test functions that run their coroutine with ``asyncio.run`` (no
pytest plugin). Its routing and retry decisions are the threaded client's
(``aegiskv.client.rounds``, tested in test_client_retry.py); these tests check
that the asyncio driver carries them out over real sockets, and what only it
does: asyncio timeouts, a connection pool shared by tasks, cancellation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from aegiskv.client import (
    AegisError,
    AegisTimeoutError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConditionNotMetError,
    Config,
    ConnectionClosedError,
    NotFoundError,
    RetriesExhaustedError,
    VersionMismatchError,
)
from aegiskv.client.aio import _ServerPool
from aegiskv.client.aio_connection import AsyncConnection
from aegiskv.protocols.native.codec import Frame, Opcode, Status
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, wait_for_agreement
from tests.wire import wait_until

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("async-client-node")))
    yield node
    assert node.stop() == 0


@pytest.fixture
def stopped_node(start_node) -> Iterator[LocalNode]:
    """A node of its own, for tests that SIGSTOP it; continued at the end whatever happened."""
    node = start_node()
    yield node
    if node.process.poll() is None:
        os.kill(node.pid, signal.SIGCONT)


def _pool(client: AsyncClient, node: LocalNode) -> _ServerPool:
    return client._pools[node.address]


def _process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def _stop(node: LocalNode) -> None:
    os.kill(node.pid, signal.SIGSTOP)
    wait_until(lambda: _process_state(node.pid) == "T", what="the node to be stopped")


# -- the API against one node ---------------------------------------------------------


def test_every_operation_against_a_real_node(live: LocalNode) -> None:
    async def scenario() -> None:
        async with AsyncClient(Config(seeds=[live.address_text])) as client:
            version = await client.set("async:a", "1")
            assert await client.get("async:a") == b"1"
            assert await client.get(b"async:a") == b"1"
            with pytest.raises(NotFoundError):
                await client.get("async:missing")
            assert await client.set_with_ttl("async:t", b"x", timedelta(seconds=100)) > 0
            with_ttl = await client.get_with_ttl("async:t")
            assert with_ttl.value == b"x" and with_ttl.ttl is not None
            assert timedelta(seconds=90) < with_ttl.ttl <= timedelta(seconds=100)
            assert (await client.get_with_ttl("async:a")).ttl is None
            assert await client.persist("async:t") is True
            assert (await client.get_with_ttl("async:t")).ttl is None
            assert await client.expire("async:t", 50) is True
            assert await client.expire("async:missing", 50) is False
            assert await client.persist("async:missing") is False
            with pytest.raises(ConditionNotMetError):
                await client.set("async:a", "2", only_if_absent=True)
            with pytest.raises(VersionMismatchError) as mismatch:
                await client.set("async:a", "2", if_version=version + 100)
            assert mismatch.value.current_version == version
            assert await client.set("async:a", "3", if_version=version) > version
            assert await client.mset({"async:m1": "v1", "async:m2": "v2"}) > 0
            assert await client.mget(["async:m1", "async:missing", "async:m2"]) == [b"v1", None, b"v2"]
            assert await client.delete("async:m1") is True
            assert await client.delete("async:m1") is False
            results = await client.pipeline().set("async:p", "pv").get("async:p").get("async:none").execute()
            assert results[0] > 0 and results[1] == b"pv" and isinstance(results[2], NotFoundError)
            with pytest.raises(NotFoundError):
                await client.pipeline().get("async:none").execute(raise_on_error=True)
            assert 0 < await client.ping() < 5
            assert await client.ping(live.address_text) > 0
            info = await client.info("keyspace")
            assert info["keyspace"]["db0"]["keys"] >= 4
            assert "shards" in await client.topology()
        # What the threaded client reads back is what the asyncio one wrote: one server, one protocol.
        with Client(Config(seeds=[live.address_text])) as threaded:
            assert threaded.get("async:a") == b"3"

    run(scenario())


def test_server_list_and_use_after_close(live: LocalNode) -> None:
    async def scenario() -> None:
        client = AsyncClient(Config(seeds=[live.address_text]))
        client.add_server("127.0.0.1:1")
        client.add_server(live.address_text)  # already there: listed once
        assert client.servers() == [live.address_text, "127.0.0.1:1"]
        client.remove_server("127.0.0.1:1")
        with pytest.raises(ValueError, match="not in the server list"):
            client.remove_server("127.0.0.1:1")
        await client.set("async:closed", "v")
        await client.close()
        with pytest.raises(ConnectionClosedError):
            await client.get("async:closed")

    run(scenario())


def test_a_refused_server_is_retried_on_the_next_and_a_hung_one_times_out(live: LocalNode) -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # connects complete in the kernel; nothing ever answers

    async def scenario() -> None:
        refused_at = f"127.0.0.1:{refused.getsockname()[1]}"
        hung_at = f"127.0.0.1:{hung.getsockname()[1]}"
        async with AsyncClient(Config(seeds=[refused_at, live.address_text])) as client:
            await client.set("async:retry", "v")  # not applied on the refused server: tried on the next
            assert await client.get("async:retry") == b"v"
        config = Config(seeds=[hung_at], read_timeout=0.2, max_retries=0)
        async with AsyncClient(config) as client:
            with pytest.raises(AegisTimeoutError, match="no reply"):
                await client.get("async:retry")
        config = Config(seeds=[hung_at], read_timeout=0.1, max_retries=2, retry_budget=5)
        async with AsyncClient(config) as client:
            with pytest.raises(AegisError) as failed:
                await client.set("async:x", "v", only_if_absent=True)  # unknown outcome: not retried
            assert isinstance(failed.value, AegisTimeoutError)
            with pytest.raises(RetriesExhaustedError):
                await client.get("async:x")  # idempotent: retried, then given up

    try:
        run(scenario())
    finally:
        refused.close()
        hung.close()


# -- the pool and cancellation --------------------------------------------------------


def test_tasks_share_a_bounded_pool(start_node) -> None:
    node = start_node()  # its own node, so the connection count is this client's alone
    tasks_count, rounds, max_conns = 64, 40, 4

    async def worker(client: AsyncClient, index: int) -> None:
        for round_index in range(rounds):
            key = f"task:{index}:{round_index % 5}"
            await client.set(key, f"{index}-{round_index}")
            assert await client.get(key) == f"{index}-{round_index}".encode()

    async def scenario() -> None:
        # 60 tasks queue for 4 connections: on a busy machine a turn can take longer than the default 1 s.
        config = Config(seeds=[node.address_text], max_conns=max_conns, conn_timeout=30)
        async with AsyncClient(config) as client:
            await asyncio.gather(*(worker(client, index) for index in range(tasks_count)))
            pool = _pool(client, node)
            assert pool.lent == 0 and 1 <= len(pool.idle) <= max_conns
            connected = (await client.info("clients"))["clients"]["connected_clients"]
            assert int(connected) <= max_conns
            values = await client.mget([f"task:{index}:4" for index in range(tasks_count)])
            assert values == [f"{index}-{rounds - 1}".encode() for index in range(tasks_count)]

    run(scenario())


class CountingClient(AsyncClient):
    """Notes each exchange cancelled while its connection owed replies (the case the pool must not keep)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cancelled_owing = 0

    async def _attempt(self, action: Callable[[AsyncConnection], Awaitable[T]], idempotent: bool, address: Any) -> T:
        async def noted(connection: AsyncConnection) -> T:
            try:
                return await action(connection)
            except asyncio.CancelledError:
                self.cancelled_owing += connection.owed > 0
                raise

        return await super()._attempt(noted, idempotent, address)


async def _check_every_pooled_connection(client: AsyncClient, node: LocalNode, keys: int) -> None:
    """Every task gets its own key's value, then each idle connection answers a fresh GET with its own reply."""
    got = await asyncio.gather(*(client.get(f"cancel:{index}") for index in range(keys)))
    assert got == [f"value-cancel:{index}".encode() for index in range(keys)]
    pool = _pool(client, node)
    assert pool.lent == 0
    connections = list(pool.idle)
    assert connections, "the pool kept no connection at all"
    for number, connection in enumerate(connections):
        assert connection.reusable() and connection.owed == 0
        key = f"cancel:{number % keys}".encode()
        frame = await connection.call(Opcode.GET, items=((key, b""),))
        assert frame.status == Status.OK and frame.items[0][1] == b"value-" + key


def test_cancelled_requests_never_leave_a_reply_in_the_pool(stopped_node: LocalNode) -> None:
    node, keys, max_conns = stopped_node, 50, 8

    async def scenario() -> None:
        async with CountingClient(Config(seeds=[node.address_text], max_conns=max_conns, read_timeout=30)) as client:
            await client.mset({f"cancel:{index}": f"value-cancel:{index}" for index in range(keys)})
            pool = _pool(client, node)
            # Stopped, the node reads nothing: every lent connection holds a request whose reply will
            # come only after SIGCONT, long after its task was cancelled.
            _stop(node)
            tasks = [asyncio.ensure_future(client.get(f"cancel:{index % keys}")) for index in range(200)]
            while not (pool.lent == max_conns and pool.waiters):
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # the lent ones are waiting for replies
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(result, asyncio.CancelledError) for result in results)
            assert client.cancelled_owing == max_conns
            assert pool.lent == 0 and not pool.waiters and not pool.idle
            os.kill(node.pid, signal.SIGCONT)
            # The replies the node now sends go to closed sockets; the pool connects afresh.
            await _check_every_pooled_connection(client, node, keys)

    run(scenario())


def test_cancellation_under_load_keeps_every_pooled_connection_correct(start_node) -> None:
    node, keys = start_node(), 50

    async def scenario() -> None:
        async with CountingClient(Config(seeds=[node.address_text], max_conns=6)) as client:
            await client.mset({f"cancel:{index}": f"value-cancel:{index}" for index in range(keys)})
            for wave in range(20):
                tasks = [asyncio.ensure_future(client.get(f"cancel:{index % keys}")) for index in range(300)]
                # Cancel each wave part-way: some gets answered, some waiting for a reply, some for a connection.
                while sum(task.done() for task in tasks) < 30 + wave * 5:
                    await asyncio.sleep(0)
                # Right after replies were read, the freed connections are handed to waiting tasks that
                # have not run yet; a turn or two later those tasks have sent and wait for replies.
                # Both moments are cancelled in, in turn.
                for _ in range(wave % 3):
                    await asyncio.sleep(0)
                for task in tasks[::2]:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for index, result in enumerate(results):
                    assert isinstance(result, (asyncio.CancelledError, bytes)), result
                    if isinstance(result, bytes):
                        assert result == f"value-cancel:{index % keys}".encode()
            assert client.cancelled_owing > 0  # the case under test did occur
            await _check_every_pooled_connection(client, node, keys)

    run(scenario())


def test_waiting_for_a_connection_times_out_and_a_cancelled_waiter_leaves_the_queue(stopped_node: LocalNode) -> None:
    node = stopped_node

    async def scenario() -> None:
        config = Config(seeds=[node.address_text], max_conns=1, conn_timeout=0.3, read_timeout=30, max_retries=0)
        async with AsyncClient(config) as client:
            await client.set("turn", "v")
            pool = _pool(client, node)
            _stop(node)
            holder = asyncio.ensure_future(client.get("turn"))  # takes the only connection, waits for a reply
            while pool.lent != 1:
                await asyncio.sleep(0.005)
            with pytest.raises(AegisTimeoutError, match="no free connection"):
                await client.get("turn")
            cancelled = asyncio.ensure_future(client.get("turn"))
            patient = asyncio.ensure_future(client.get("turn"))
            while len(pool.waiters) != 2:
                await asyncio.sleep(0.005)
            cancelled.cancel()
            os.kill(node.pid, signal.SIGCONT)
            assert await holder == b"v"
            assert await patient == b"v"  # served although the waiter ahead of it was cancelled
            with pytest.raises(asyncio.CancelledError):
                await cancelled

    run(scenario())


def test_waiting_tasks_are_served_first_come_first_served(stopped_node: LocalNode) -> None:
    node = stopped_node

    async def scenario() -> None:
        config = Config(seeds=[node.address_text], max_conns=1, read_timeout=30, conn_timeout=30)
        async with AsyncClient(config) as client:
            await client.set("turn", "v")
            pool = _pool(client, node)
            served: list[str] = []

            async def twice() -> None:
                await client.get("turn")
                served.append("first of two")
                await client.get("turn")  # must queue behind the task that waited meanwhile
                served.append("second of two")

            async def once() -> None:
                await client.get("turn")
                served.append("waiting one")

            _stop(node)
            first = asyncio.ensure_future(twice())
            while pool.lent != 1:
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(once())
            while len(pool.waiters) != 1:
                await asyncio.sleep(0.005)
            os.kill(node.pid, signal.SIGCONT)
            await asyncio.gather(first, second)
            assert served == ["first of two", "waiting one", "second of two"]

    run(scenario())


# -- TLS and auth ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    directory: Path = tmp_path_factory.mktemp("async-pki")
    ca = trustme.CA()
    files = {}
    for name, leaf in (("server", ca.issue_cert("127.0.0.1")), ("client", ca.issue_cert("client@aegis.test"))):
        files[name] = str(directory / f"{name}.pem")
        files[f"{name}_key"] = str(directory / f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(files[name])
        leaf.private_key_pem.write_to_path(files[f"{name}_key"])
    files["ca"] = str(directory / "ca.pem")
    ca.cert_pem.write_to_path(files["ca"])
    other = directory / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    files["other_ca"] = str(other)
    return files


def test_tls_and_mutual_tls(start_node, pki: dict[str, str]) -> None:
    node = start_node("--tls-cert", pki["server"], "--tls-key", pki["server_key"], "--tls-ca", pki["ca"])

    async def scenario() -> None:
        config = Config(seeds=[node.address_text], tls_ca=pki["ca"], tls_cert=pki["client"], tls_key=pki["client_key"])
        async with AsyncClient(config) as client:
            await client.set("tls:k", "secret")
            assert await client.get("tls:k") == b"secret"
            assert await client.pipeline().get("tls:k").execute() == [b"secret"]
        # A client that does not trust the server's CA, or presents no certificate, gets nowhere.
        for bad in (
            Config(seeds=[node.address_text], tls_ca=pki["other_ca"], max_retries=0),
            Config(seeds=[node.address_text], tls_ca=pki["ca"], max_retries=0),
        ):
            async with AsyncClient(bad) as client:
                with pytest.raises(ConnectionClosedError):
                    await client.get("tls:k")

    run(scenario())


def test_token_auth(start_node) -> None:
    node = start_node("--auth-token", "s3cret-token")

    async def scenario() -> None:
        async with AsyncClient(Config(seeds=[node.address_text], auth_token="s3cret-token")) as client:
            await client.set("auth:k", "v")
            assert await client.get("auth:k") == b"v"
        for token in (None, "wrong"):
            async with AsyncClient(Config(seeds=[node.address_text], auth_token=token, max_retries=0)) as client:
                with pytest.raises(AuthenticationError):
                    await client.get("auth:k")
                assert _pool(client, node).lent == 0  # the failed borrow gave its slot back

    run(scenario())


# -- a real three-node cluster ---------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # A majority write quorum: the kill test checks that no acknowledged write is lost, which
    # only W >= 2 of RF 3 promises (at W = 0 a write the killed primary had not streamed is gone).
    started = Cluster(tmp_path, env={"AEGIS_WRITE_QUORUM": "2"})
    yield started
    started.close()


class RecordingClient(AsyncClient):
    """Notes every server an exchange went to, and every redirect it got back."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.asked: set[tuple[str, int]] = set()
        self.redirects = 0

    async def _attempt(self, action: Callable[[AsyncConnection], Awaitable[T]], idempotent: bool, address: Any) -> T:
        self.asked.add(address)
        result = await super()._attempt(action, idempotent, address)
        if isinstance(result, list):
            self.redirects += sum(isinstance(f, Frame) and f.status == Status.MOVED for f in result)
        return result


def test_redirects_are_followed_and_a_node_killed_mid_run_is_ridden_out(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    wait_for_agreement(nodes, {"n0", "n1", "n2"})
    keys = [f"cluster:{index}" for index in range(200)]

    async def redirected() -> None:
        # Without the map the client sends everything to n0: the other nodes' keys come back MOVED.
        # (Single-key operations: a batch is split by the map, so MGET/MSET need cluster_routing.)
        config = Config(seeds=[nodes[0].address_text], cluster_routing=False)
        async with RecordingClient(config) as client:
            for key in keys[:60]:
                await client.set(key, f"w-{key}")
            results = await client.pipeline().get(keys[0]).get(keys[1]).get(keys[2]).execute()
            assert results == [f"w-{key}".encode() for key in keys[:3]]
            for key in keys[:60]:
                assert await client.get(key) == f"w-{key}".encode()
            assert client.redirects > 0
            assert client.asked == {node.address for node in nodes}

    async def through_a_kill() -> None:
        # The default 5 s budget covers a failover on an idle machine (about 2 s); on a shared one the
        # election itself can take longer, and how long is the cluster's business, tested elsewhere
        # (test_faults.py). This test is about the client: it must keep retrying and then succeed.
        config = Config(seeds=[node.address_text for node in nodes], retry_budget=60, max_retries=1000)
        async with RecordingClient(config) as client:
            await client.mset({key: f"v-{key}" for key in keys})
            assert client.asked == {node.address for node in nodes}  # routed by the map, no redirect needed
            assert client.redirects == 0
            written: dict[str, str] = {}
            killed = asyncio.Event()
            after_kill = 0

            async def writer(task_index: int) -> None:
                nonlocal after_kill
                for round_index in range(60):
                    key = keys[task_index * 25 + round_index % 25]  # keys of its own: reads see its writes
                    value = f"{task_index}-{round_index}"
                    await client.set(key, value)  # retried through the failover
                    written[key] = value
                    assert await client.get(key) == value.encode()
                    after_kill += killed.is_set()
                    await asyncio.sleep(0.02)

            async def killer() -> None:
                while len(written) < 40:
                    await asyncio.sleep(0.01)
                await asyncio.get_running_loop().run_in_executor(None, nodes[1].kill)
                killed.set()

            await asyncio.gather(killer(), *(writer(index) for index in range(8)))
            assert after_kill > 0
            assert nodes[1].address in client._unreachable  # the kill did meet the client's requests
            # Every acknowledged write is there, with the last value written.
            expected = {key: f"v-{key}".encode() for key in keys}
            expected.update({key: value.encode() for key, value in written.items()})
            assert await client.mget(keys) == [expected[key] for key in keys]

    run(redirected())
    run(through_a_kill())
