"""The replica endpoint's rules, in process: what it answers, where it redirects, and the copy checked as the read runs.

The processes and redis-py are in tests/test_replica_endpoint.py; here the
routing (aegiskv.cluster.replica_reads through the RESP adapter) and the
CLUSTER replies are driven directly, including the race no real cluster
shows on demand: a resync that empties the copy while a read runs.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
import pytest

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from aegiskv.cluster.redirect import Moved, Routing
from aegiskv.cluster.replica_reads import ReplicaReads
from aegiskv.cluster.shard_map import Endpoint, Member, ShardMap
from aegiskv.cluster.slots import ShardMapper
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.operations import KeyspaceLimits, Node
from aegiskv.protocols.resp.adapter import RespAdapter
from aegiskv.protocols.resp.cluster import cluster_nodes, cluster_slots, redis_node_id, redis_replica_id
from aegiskv.protocols.resp.reader import RespLimits
from aegiskv.protocols.session import Session
from aegiskv.server.settings import ConfigError, build

MAPPER = ShardMapper(4)
PLACEMENT: list[tuple[str, ...]] = [("a", "b", "c")] * MAPPER.shards


def member(index: int, name: str, replica: bool = True, ready: frozenset[int] = frozenset(range(4))) -> Member:
    return Member(
        name,
        Endpoint("127.0.0.1", 7000 + index),
        Endpoint("127.0.0.1", 8000 + index),
        ready=ready,
        replica=Endpoint("127.0.0.1", 9000 + index) if replica else None,
    )


MEMBERS = {name: member(index, name) for index, name in enumerate(("a", "b", "c"))}
# "c" leads shard 1, "b" the others; "c" follows 0, 2 and 3.
PRIMARIES = {0: "b", 1: "c", 2: "b", 3: "b"}


def key_of_shard(shard: int) -> bytes:
    return next(key for key in (f"k{index}".encode() for index in range(1000)) if MAPPER.shard_of_key(key) == shard)


class Copies:
    """A follower's copies: readable shards, and a resync that may begin right after a check."""

    def __init__(self, readable: set[int]) -> None:
        self.readable_shards = readable
        self.generations = [0] * MAPPER.shards
        self.resync_after_check: set[int] = set()

    def readable(self, shard: int) -> bool:
        if shard in self.resync_after_check:
            self.generations[shard] += 1  # the copy is emptied right after it was judged readable
        return shard in self.readable_shards

    def copy_generation(self, shard: int) -> int:
        return self.generations[shard]


@pytest.fixture
def node() -> Node:
    node = Node(MemoryBackend(BackendOptions(max_memory_bytes=64 << 20)), KeyspaceLimits(1024, 1 << 20, 1000), MAPPER)
    for shard in range(MAPPER.shards):
        node.set(key_of_shard(shard), b"v%d" % shard)
    return node


def endpoint(copies: Copies) -> RespAdapter:
    routing = Routing()
    routing.update(ShardMap(1, MAPPER, PLACEMENT, MEMBERS, primaries=PRIMARIES), "c", leased=True)
    return RespAdapter(RespLimits(), True, routing, ReplicaReads(routing, copies))


def parse_reply(data: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(data)
    return reader.gets()


def run(adapter: RespAdapter, session: Session, *args: bytes) -> bytes:
    """Route and run one request as the pipeline does (the check when routed, the guard when run)."""
    _command, handler = adapter.route(list(args))
    return handler(cast(Any, None), session, list(args))


def test_a_readonly_connection_reads_a_readable_copy_and_a_led_shard(node: Node) -> None:
    adapter = endpoint(Copies(readable={0}))
    session = Session(node, authenticated=True, rate=None)
    session.readonly = True
    assert run(adapter, session, b"GET", key_of_shard(0)) == b"$2\r\nv0\r\n"  # followed, readable
    assert run(adapter, session, b"GET", key_of_shard(1)) == b"$2\r\nv1\r\n"  # led here
    with pytest.raises(Moved) as moved:
        run(adapter, session, b"GET", key_of_shard(2))  # followed, not readable (cut off, copying)
    assert moved.value.resp == MEMBERS["b"].resp  # the primary's main RESP port


def test_writes_and_connections_without_readonly_are_redirected_to_the_primary(node: Node) -> None:
    adapter = endpoint(Copies(readable={0}))
    session = Session(node, authenticated=True, rate=None)
    with pytest.raises(Moved) as moved:
        run(adapter, session, b"GET", key_of_shard(0))  # no READONLY: as a Redis replica answers
    assert moved.value.resp == MEMBERS["b"].resp
    session.readonly = True
    with pytest.raises(Moved) as moved:
        run(adapter, session, b"SET", key_of_shard(0), b"x")
    assert moved.value.resp == MEMBERS["b"].resp
    with pytest.raises(Moved) as moved:
        run(adapter, session, b"SET", key_of_shard(1), b"x")  # led here: to this node's own main port
    assert moved.value.resp == MEMBERS["c"].resp
    with pytest.raises(CommandError) as refused:
        run(adapter, session, b"FLUSHALL")  # no key to redirect by
    assert refused.value.kind is ErrorKind.READONLY
    assert run(adapter, session, b"DBSIZE") == b":4\r\n"  # keyless reads are answered
    assert node.get(key_of_shard(0)) == b"v0" and node.get(key_of_shard(1)) == b"v1"


def test_a_read_that_ran_while_a_resync_emptied_the_copy_is_redirected(node: Node) -> None:
    copies = Copies(readable={0})
    adapter = endpoint(copies)
    session = Session(node, authenticated=True, rate=None)
    session.readonly = True
    _command, handler = adapter.route([b"GET", key_of_shard(0)])  # routed while the copy was whole
    copies.resync_after_check.add(0)
    node.drop_shard(0)  # what the resync does to the copy before the read runs
    with pytest.raises(Moved):
        handler(cast(Any, None), session, [b"GET", key_of_shard(0)])
    copies.resync_after_check.clear()
    copies.readable_shards.clear()  # receiving the snapshot: not readable when the request runs
    with pytest.raises(Moved):
        handler(cast(Any, None), session, [b"GET", key_of_shard(0)])


def test_cluster_replies_list_replica_endpoints_of_ready_followers_only() -> None:
    members = dict(MEMBERS)
    members["a"] = member(0, "a", ready=frozenset({1}))  # copying shards 0, 2 and 3
    members["c"] = member(2, "c", replica=False)  # no replica endpoint
    shard_map = ShardMap(1, MAPPER, PLACEMENT, members, primaries=PRIMARIES)
    slots = parse_reply(cluster_slots(shard_map))
    by_first = {entry[0]: [(host, port, node_id.decode()) for host, port, node_id in entry[2:]] for entry in slots}
    first_of_shard = {shard: MAPPER.slot_range(shard)[0] for shard in range(MAPPER.shards)}
    assert by_first[first_of_shard[0]] == [(b"127.0.0.1", 8001, redis_node_id("b"))]
    assert by_first[first_of_shard[1]] == [
        (b"127.0.0.1", 8002, redis_node_id("c")),
        (b"127.0.0.1", 9000, redis_replica_id("a")),
        (b"127.0.0.1", 9001, redis_replica_id("b")),
    ]
    lines = cluster_nodes(shard_map, "b").decode().splitlines()
    masters = [line for line in lines if " master" in line or "myself,master" in line]
    slaves = [line.split() for line in lines if " slave " in line]
    assert len(masters) == 3
    # Each follows shard 1 only among the listed copies, so "c" is the master of both.
    assert sorted(slaves) == sorted(
        [endpoint_id, f"127.0.0.1:{port}@0", "slave", redis_node_id("c"), "0", "0", "1", "connected"]
        for endpoint_id, port in ((redis_replica_id("a"), 9000), (redis_replica_id("b"), 9001))
    )


def test_a_replica_endpoint_without_a_cluster_or_a_resp_port_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"resp_replica_bind = 127.0.0.1:7380: gossip is off \(flag\)"):
        build(environ={}, flags={"resp_replica_bind": "127.0.0.1:7380", "gossip": "off"})
    with pytest.raises(ConfigError, match=r"resp_bind is off \(environment\)"):
        build(environ={"AEGIS_RESP_BIND": "off"}, flags={"resp_replica_bind": "127.0.0.1:7380"})
    settings = build(environ={}, flags={"resp_replica_bind": "127.0.0.1:7380"})
    assert settings.resp_replica_bind == "127.0.0.1:7380" and build(environ={}).resp_replica_bind is None
