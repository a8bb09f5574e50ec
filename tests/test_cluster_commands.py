"""The shard map as clients see it: native TOPOLOGY, RESP CLUSTER *, redis-py RedisCluster, redis-cli -c.

A single node owns every shard; these tests pin the shapes and the addresses
that multi-node clusters will fill with more members.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import crcmod.predefined
import pytest
import redis
from redis.cluster import RedisCluster

from aegiskv.client import Client, Config
from aegiskv.protocols.resp.cluster import redis_node_id
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of

REDIS_CLI = shutil.which("redis-cli")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("cluster-single")), ["--node-id", "solo", "--shards", "64"])
    yield node
    assert node.stop() == 0


@pytest.fixture
def r(single: LocalNode) -> Iterator[redis.Redis]:
    connection = redis.Redis(*resp_address_of(single))
    yield connection
    connection.close()


def test_native_topology_lists_the_node_for_every_shard(single: LocalNode) -> None:
    with Client(Config(seeds=[single.address_text])) as client:
        topology = client.topology()
    assert topology["epoch"] >= 1
    assert len(topology["shards"]) == 64
    assert all(shard["replicas"] == ["solo"] for shard in topology["shards"])
    host, port = single.address
    resp_host, resp_port = resp_address_of(single)
    assert topology["nodes"] == {"solo": {"client": f"{host}:{port}", "resp": f"{resp_host}:{resp_port}"}}
    # The shards' slot ranges tile 0..16383 in order.
    bounds = [tuple(shard["slots"]) for shard in topology["shards"]]
    assert bounds[0][0] == 0 and bounds[-1][1] == 16383
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(bounds))


def as_map(reply: Any) -> Any:
    """A RESP2 flat map as a dict: redis-py 8 converts CLUSTER SHARDS' maps itself, 7.x leaves them lists."""
    return dict(zip(reply[::2], reply[1::2])) if isinstance(reply, list) else reply


def test_cluster_slots_shards_nodes_info_myid(single: LocalNode, r: redis.Redis) -> None:
    host, port = resp_address_of(single)
    my_id = redis_node_id("solo")
    # One node, one merged range.
    assert r.execute_command("CLUSTER SLOTS") == [[0, 16383, [host.encode(), port, my_id.encode()]]]
    shards = r.execute_command("CLUSTER SHARDS")
    assert len(shards) == 1
    shard = as_map(shards[0])
    assert shard[b"slots"] == [0, 16383]
    node = as_map(shard[b"nodes"][0])
    assert node[b"id"] == my_id.encode() and node[b"port"] == port and node[b"role"] == b"master"
    nodes = r.execute_command("CLUSTER NODES")
    assert nodes[f"{host}:{port}"]["node_id"] == my_id
    assert nodes[f"{host}:{port}"]["flags"] == "myself,master"
    assert nodes[f"{host}:{port}"]["slots"] == [["0", "16383"]]
    info = r.execute_command("CLUSTER INFO")
    assert info["cluster_state"] == "ok" and info["cluster_slots_assigned"] == "16384"
    assert info["cluster_known_nodes"] == "1"
    assert r.execute_command("CLUSTER MYID") == my_id.encode()
    assert r.execute_command("READONLY") is True and r.execute_command("READWRITE") is True


def test_cluster_keyslot_matches_redis(r: redis.Redis) -> None:
    # Values from the Redis Cluster specification and redis-server 7.
    assert r.execute_command("CLUSTER KEYSLOT", "somekey") == 11058
    assert r.execute_command("CLUSTER KEYSLOT", "{user1000}.following") == 3443
    # Hash tags as the specification defines them, against crcmod's CRC16-XMODEM (an independent
    # implementation): an empty first {} means the whole key; only the first {...} counts.
    xmodem = crcmod.predefined.mkCrcFun("xmodem")
    for key, hashed in [("foo{}{bar}", "foo{}{bar}"), ("{}x", "{}x"), ("foo{bar}{zap}", "bar"), ("{a", "{a")]:
        assert r.execute_command("CLUSTER KEYSLOT", key) == xmodem(hashed.encode()) % 16384, key


@pytest.mark.parametrize(
    "command, message",
    [
        (("CLUSTER", "FOO"), "unknown subcommand 'FOO'. Try CLUSTER HELP."),
        (("CLUSTER", "KEYSLOT"), "wrong number of arguments for 'cluster|keyslot' command"),
        (("CLUSTER", "SLOTS", "extra"), "wrong number of arguments for 'cluster|slots' command"),
        (("CLUSTER",), "wrong number of arguments for 'cluster' command"),
    ],
)
def test_cluster_errors(r: redis.Redis, command: tuple[str, ...], message: str) -> None:
    with pytest.raises(redis.ResponseError, match=message.replace("(", r"\(").replace(".", r"\.")):
        r.execute_command(*command)


def test_redis_py_cluster_client_reads_and_writes(single: LocalNode) -> None:
    host, port = resp_address_of(single)
    cluster = RedisCluster(host=host, port=port)
    try:
        pairs = {f"rc:{index}": f"value-{index}" for index in range(200)}
        for key, value in pairs.items():
            assert cluster.set(key, value)
        assert cluster.mget_nonatomic(list(pairs)) == [value.encode() for value in pairs.values()]
        assert cluster.get("rc:missing") is None
        assert cluster.delete("rc:0") == 1
        assert cluster.keyslot("somekey") == 11058
    finally:
        cluster.close()


@pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed")
def test_redis_cli_cluster_mode(single: LocalNode) -> None:
    host, port = resp_address_of(single)

    def cli(*args: str) -> str:
        assert REDIS_CLI is not None  # the skipif above
        result = subprocess.run(
            [REDIS_CLI, "-c", "-h", host, "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert cli("set", "cli-c:k", "v") == "OK\n"
    assert cli("get", "cli-c:k") == "v\n"
    assert "cluster_state:ok" in cli("cluster", "info")


@pytest.mark.parametrize("gossip", [None, "127.0.0.1:0"], ids=["lone", "gossip"])
def test_advertised_addresses(tmp_path, gossip) -> None:
    node = LocalNode(
        str(tmp_path / "advertised"),
        ["--node-id", "adv", "--client-advertise", "10.9.8.7:7700"],
        resp_bind="0.0.0.0:0",
        gossip=gossip,
    )
    try:
        with Client(Config(seeds=[node.address_text])) as client:
            nodes = client.topology()["nodes"]
        # A wildcard bind advertises an empty host, "where you reached me", to clients of a lone
        # node; in a cluster the other nodes must name it, so the gossip address's host stands in.
        resp_host = "127.0.0.1" if gossip else ""
        resp_port = resp_address_of(node)[1]
        assert nodes == {"adv": {"client": "10.9.8.7:7700", "resp": f"{resp_host}:{resp_port}"}}
        connection = redis.Redis("127.0.0.1", resp_port)
        assert connection.execute_command("CLUSTER SLOTS")[0][2][:2] == [resp_host.encode(), resp_port]
        # With or without gossip the node answers as a cluster, and INFO agrees with CLUSTER INFO.
        cluster = connection.info("cluster")
        assert cluster["cluster_enabled"] == 1
        assert connection.execute_command("CLUSTER INFO")["cluster_enabled"] == "1"
        # The gossip counters are in INFO cluster on this port too.
        assert cluster["aegis_gossip"] == ("on" if gossip else "off")
        assert ("aegis_gossip_members_alive" in cluster) == bool(gossip)
        connection.close()
    finally:
        assert node.stop() == 0
