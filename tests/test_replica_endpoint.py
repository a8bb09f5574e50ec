"""Replica endpoints on real processes: redis-py reads from followers, and primaries stay primaries.

Three nodes, RF 3, each with ``--resp-replica-bind``: every node leads some
shards and follows the rest. CLUSTER SLOTS lists each range's primary (its
main RESP port) and the followers' replica endpoints, so redis-py's
``RedisCluster`` with a load-balancing strategy sends reads to the endpoints
while ``get_primaries()`` still finds all three nodes and broadcasts reach
them all. The routing rules themselves are tests/test_replica_endpoint_routing.py.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import LoadBalancingStrategy, RedisCluster

from aegiskv.cluster.slots import key_slot
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, gossip_address, key_count, wait_for_agreement
from tests.wire import resp_address_of, wait_until

pytestmark = pytest.mark.slow

LEASE = 1.0  # --lease-duration of the cut-off test: a follower stops answering within about this


def start_cluster(root: Path, env: dict[str, str] | None = None) -> tuple[Cluster, list[LocalNode]]:
    cluster = Cluster(root, shards=8, env=env)
    nodes: list[LocalNode] = []
    for index in range(3):
        seeds = [gossip_address(nodes[0])] if nodes else []
        nodes.append(cluster.start(index, seeds, extra=["--resp-replica-bind", f"127.0.0.{index + 1}:0"]))
    wait_for_agreement(nodes, {"n0", "n1", "n2"})
    # Followers are listed once gossip says their copies are complete: every range, two replicas.
    wait_until(lambda: all(len(entry) == 5 for entry in cluster_slots(nodes[0])), timeout=20, what="replicas listed")
    return cluster, nodes


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalNode]]:
    cluster, started = start_cluster(Path(tmp_path_factory.mktemp("replica-endpoint")))
    try:
        yield started
    finally:
        cluster.close()


def cluster_slots(node: LocalNode) -> list[Any]:
    with redis.Redis(*resp_address_of(node)) as connection:
        reply: list[Any] = connection.execute_command("CLUSTER SLOTS")
    return reply


def replica_of(node: LocalNode) -> tuple[str, int]:
    return node.addresses["resp_replica"]


def roles_of(nodes: list[LocalNode], key: str) -> tuple[LocalNode, list[LocalNode]]:
    """The primary of ``key``'s slot and its followers whose replica endpoints are listed, by CLUSTER SLOTS."""
    slot = key_slot(key.encode())
    entry = next(entry for entry in cluster_slots(nodes[0]) if entry[0] <= slot <= entry[1])
    by_main = {resp_address_of(node): node for node in nodes}
    by_replica = {replica_of(node): node for node in nodes}
    primary = by_main[(entry[2][0].decode(), entry[2][1])]
    return primary, [by_replica[(host.decode(), port)] for host, port, _id in entry[3:]]


def answered(reader: redis.Redis, key: str) -> bytes | None:
    """The value a READONLY connection reads, None while the endpoint redirects (the copy is not readable)."""
    try:
        value = reader.get(key)
    except (redis.exceptions.MovedError, redis.exceptions.TryAgainError):
        return None
    assert value is None or isinstance(value, bytes)
    return value


def calls_of(node: LocalNode, command: str) -> int:
    """Calls of a command family the node ran to an answer (a redirect is not one), on either RESP port."""
    with redis.Redis(*resp_address_of(node)) as connection:
        stats: dict[str, Any] = connection.info("commandstats")
    counts = stats.get(f"cmdstat_{command}", {})
    return int(counts.get("calls", 0)) - int(counts.get("failed_calls", 0))


def test_primaries_keep_their_main_ports_and_followers_are_listed_at_their_endpoints(nodes: list[LocalNode]) -> None:
    mains = {resp_address_of(node) for node in nodes}
    replicas = {replica_of(node) for node in nodes}
    for entry in cluster_slots(nodes[0]):
        listed = [(host.decode(), port) for host, port, _id in entry[2:]]
        assert listed[0] in mains and set(listed[1:]) <= replicas and len(set(listed)) == 3
    host, port = resp_address_of(nodes[0])
    with RedisCluster(host=host, port=port, load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN) as client:
        # One role per host:port: every node stays a primary (what the reverted listing broke).
        assert {(node.host, node.port) for node in client.get_primaries()} == mains
        assert {(node.host, node.port) for node in client.get_replicas()} == replicas
    with redis.Redis(host, port) as connection:
        described: dict[str, dict[str, Any]] = connection.execute_command("CLUSTER NODES")  # parsed by address
    masters = {address for address, node in described.items() if "master" in node["flags"]}
    slaves = {address: node["master_id"] for address, node in described.items() if "slave" in node["flags"]}
    assert masters == {f"{host}:{port}" for host, port in mains}
    assert set(slaves) == {f"{host}:{port}" for host, port in replicas}
    assert set(slaves.values()) <= {described[address]["node_id"] for address in masters}


def test_redis_py_reads_from_followers_and_broadcasts_reach_every_primary(nodes: list[LocalNode]) -> None:
    host, port = resp_address_of(nodes[0])
    keys = [f"replica-endpoint:{index}" for index in range(60)]
    with RedisCluster(host=host, port=port) as writer:
        for key in keys:
            assert writer.set(key, key.encode())
    key = keys[0]
    primary, followers = roles_of(nodes, key)
    assert len(followers) == 2
    with RedisCluster(host=host, port=port, load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN) as reader:
        # Copies trail the primary by the replication lag: wait until every key reads back.
        wait_until(lambda: all(reader.get(each) == each.encode() for each in keys), timeout=10, what="every key")
        before = {node.pid: calls_of(node, "get") for node in nodes}
        for _ in range(12):
            assert reader.get(key) == key.encode()
        served = {node.pid: calls_of(node, "get") - before[node.pid] for node in nodes}
        # The key's followers lead other shards, but only reads of this key ran meanwhile: theirs
        # came through their replica endpoints, and round-robin spread the 12 over three copies.
        assert all(served[follower.pid] > 0 for follower in followers)
        assert served[primary.pid] < 12
        flushes = {node.pid: calls_of(node, "flush") for node in nodes}
        reader.flushall()  # redis-py sends it to every node it knows as a primary
        assert all(calls_of(node, "flush") == flushes[node.pid] + 1 for node in nodes)
    # Each primary flushed the shards it leads; the followers' copies follow by replication.
    wait_until(lambda: all(key_count(node) == 0 for node in nodes), timeout=10, what="every copy flushed")


def test_a_replica_endpoint_redirects_what_a_redis_replica_would(nodes: list[LocalNode]) -> None:
    key = "replica-endpoint:redirects"
    primary, followers = roles_of(nodes, key)
    with redis.Redis(*resp_address_of(primary)) as connection:
        assert connection.set(key, b"v1")
    primary_text = "{}:{}".format(*resp_address_of(primary))
    with redis.Redis(*replica_of(followers[0])) as follower:
        with pytest.raises(redis.exceptions.ResponseError, match=f"^{key_slot(key.encode())} {primary_text}$"):
            follower.get(key)  # no READONLY: to the primary, as a Redis replica answers
        assert follower.execute_command("READONLY")
        assert wait_until(lambda: answered(follower, key), timeout=10, what="the follower's copy") == b"v1"
        with pytest.raises(redis.exceptions.ResponseError, match=f"^{key_slot(key.encode())} {primary_text}$"):
            follower.set(key, b"v2")  # writes always go to the primary
        with pytest.raises(redis.exceptions.ReadOnlyError):
            follower.flushall()
        assert follower.execute_command("READWRITE")
        with pytest.raises(redis.exceptions.ResponseError, match=primary_text):
            follower.get(key)
    with redis.Redis(*resp_address_of(primary)) as connection:
        assert connection.get(key) == b"v1"  # the refused SET and FLUSHALL changed nothing


def test_a_follower_cut_off_from_its_primary_stops_answering_reads(tmp_path: Path) -> None:
    # Failure detection slowed far past the wait below: the membership keeps the paused nodes, the
    # links stay up, and only the lapsed lease can tell the follower its primary is gone.
    env = {"AEGIS_LEASE_DURATION": f"{LEASE:g}s", "AEGIS_GOSSIP_SUSPICION_MULT": "100"}
    cluster, nodes = start_cluster(tmp_path, env=env)
    try:
        key = "replica-endpoint:cut-off"
        primary, followers = roles_of(nodes, key)
        follower = followers[0]
        other = next(node for node in nodes if node is not primary and node is not follower)
        with redis.Redis(*resp_address_of(primary)) as connection:
            assert connection.set(key, b"v1")
        with redis.Redis(*replica_of(follower), socket_timeout=5) as reader:
            assert reader.execute_command("READONLY")
            assert wait_until(lambda: answered(reader, key), timeout=10, what="the follower's copy") == b"v1"
            # The primary and the third node paused: nobody can be elected in their place.
            for node in (primary, other):
                node.process.send_signal(signal.SIGSTOP)
            try:
                # Ten times the lease: the bound under test, with room for a loaded machine.
                wait_until(lambda: answered(reader, key) is None, timeout=10 * LEASE, what="the follower to refuse")
                assert answered(reader, key) is None  # and it stays so while the primary is away
            finally:
                for node in (primary, other):
                    node.process.send_signal(signal.SIGCONT)
            assert wait_until(lambda: answered(reader, key), timeout=20, what="reads again once back") == b"v1"
    finally:
        cluster.close()
