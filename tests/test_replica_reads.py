"""Followers as Redis Cluster replicas: listed in CLUSTER SLOTS/SHARDS, read from after READONLY.

Three real nodes, RF 3: every node holds every shard, leading some and following
the rest. A follower answers a READONLY connection's reads from its own copy and
redirects its writes (and every command of a connection that did not send
READONLY) to the primary, as a Redis replica does; redis-py's
``RedisCluster`` with a load-balancing strategy (``read_from_replicas``) then spreads
reads over the copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import LoadBalancingStrategy, RedisCluster

from aegiskv.cluster.slots import key_slot
from aegiskv.protocols.resp.cluster import redis_node_id
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, wait_for_agreement
from tests.wire import resp_address_of, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalNode]]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("replica-reads")), shards=8)
    try:
        started = cluster.start_many(3)
        wait_for_agreement(started, {"n0", "n1", "n2"})
        yield started
    finally:
        cluster.close()


def slot_owners(node: LocalNode) -> list[tuple[int, int, list[tuple[str, int, str]]]]:
    """CLUSTER SLOTS as (first, last, [(host, port, id), ...]), primary first."""
    with redis.Redis(*resp_address_of(node)) as connection:
        reply: list[Any] = connection.execute_command("CLUSTER SLOTS")
    return [
        (first, last, [(host.decode(), port, node_id.decode()) for host, port, node_id in members])
        for first, last, *members in reply
    ]


def owners_of(node: LocalNode, key: str) -> list[tuple[str, int, str]]:
    slot = key_slot(key.encode())
    return next(members for first, last, members in slot_owners(node) if first <= slot <= last)


def by_address(nodes: list[LocalNode], host: str, port: int) -> LocalNode:
    return next(node for node in nodes if resp_address_of(node) == (host, port))


def test_cluster_slots_and_shards_list_each_range_primary_first_then_its_followers(nodes: list[LocalNode]) -> None:
    ids = {redis_node_id(f"n{index}") for index in range(3)}
    views = [slot_owners(node) for node in nodes]
    assert views[0] == views[1] == views[2]
    ranges = views[0]
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383
    for _first, _last, members in ranges:
        assert {node_id for _host, _port, node_id in members} == ids  # RF 3 of 3 nodes: all three
    with redis.Redis(*resp_address_of(nodes[0])) as connection:
        shards = connection.execute_command("CLUSTER SHARDS")
    for shard in shards:
        entry = dict(zip(shard[::2], shard[1::2])) if isinstance(shard, list) else shard
        roles = [
            (dict(zip(node[::2], node[1::2])) if isinstance(node, list) else node)[b"role"] for node in entry[b"nodes"]
        ]
        assert roles == [b"master", b"replica", b"replica"]


def test_a_follower_serves_reads_only_to_a_readonly_connection(nodes: list[LocalNode]) -> None:
    key = "replica-reads:one"
    primary_host, primary_port, _ = owners_of(nodes[0], key)[0]
    with redis.Redis(primary_host, primary_port) as primary:
        assert primary.set(key, b"v1")
    follower_host, follower_port, _ = owners_of(nodes[0], key)[1]
    with redis.Redis(follower_host, follower_port) as follower:
        with pytest.raises(redis.exceptions.ResponseError, match=f"{primary_host}:{primary_port}"):
            follower.get(key)  # no READONLY: redirected, as a Redis replica redirects
        assert follower.execute_command("READONLY") is True
        # The copy follows the primary within the replication lag.
        assert wait_until(lambda: follower.get(key), timeout=10, what="the follower's copy") == b"v1"
        assert follower.exists(key) == 1 and follower.strlen(key) == 2
        with pytest.raises(redis.exceptions.ResponseError, match=f"{primary_host}:{primary_port}"):
            follower.set(key, b"v2")  # writes always go to the primary
        assert follower.execute_command("READWRITE") is True
        with pytest.raises(redis.exceptions.ResponseError, match=f"{primary_host}:{primary_port}"):
            follower.get(key)
    with redis.Redis(primary_host, primary_port) as primary:
        assert primary.get(key) == b"v1"  # the refused SET changed nothing


def test_redis_py_read_from_replicas_reads_every_copy(nodes: list[LocalNode]) -> None:
    host, port = resp_address_of(nodes[0])
    keys = [f"replica-reads:{index}" for index in range(40)]
    with RedisCluster(host=host, port=port) as writer:
        for key in keys:
            assert writer.set(key, key.encode())
    key = keys[0]
    followers = [
        by_address(nodes, follower_host, follower_port)
        for follower_host, follower_port, _ in owners_of(nodes[0], key)[1:]
    ]

    def gets_served(node: LocalNode) -> int:
        with redis.Redis(*resp_address_of(node)) as connection:
            stats: dict[str, Any] = connection.info("stats")
        return int(stats["keyspace_hits"])  # a redirected GET reads nothing

    with RedisCluster(host=host, port=port, load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN) as reader:
        # Copies may trail the primary by the replication lag: wait until every key reads back.
        wait_until(lambda: all(reader.get(each) == each.encode() for each in keys), timeout=10, what="every key")
        # Then one key, read again and again: its followers lead other shards, so count only these reads.
        before = sum(gets_served(node) for node in followers)
        for _ in range(12):
            assert reader.get(key) == key.encode()
    assert sum(gets_served(node) for node in followers) > before  # some reads came from followers
