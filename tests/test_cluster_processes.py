"""Clusters of real ``aegis`` processes: join, agree, route, leave, die, come back.

Each node binds its own 127.0.0.x address; gossip runs on fast timing
(tests/cluster_harness.py). Keys are not copied between nodes yet
(replication and migration come later), so these tests check placement,
routing and membership, not data surviving a node.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from aegiskv.client import Client, Config, MovedError, NotFoundError, TryAgainError
from aegiskv.cluster.slots import ShardMapper
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, gossip_address, info, key_count, topology, wait_for_agreement
from tests.wire import resp_address_of, wait_until

REDIS_CLI = shutil.which("redis-cli")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    yield started
    started.close()


def _owner_of(topology_answer: dict, key: bytes) -> str:
    shard = ShardMapper(len(topology_answer["shards"])).shard_of_key(key)
    return topology_answer["shards"][shard]["replicas"][0]


@pytest.mark.parametrize("size", [3, 5])
def test_nodes_agree_on_one_map_and_serve_keys_through_it(cluster: Cluster, size: int) -> None:
    nodes = cluster.start_many(size)
    members = {f"n{index}" for index in range(size)}
    agreed = wait_for_agreement(nodes, members)
    # Every shard has min(RF, N) distinct replicas, and every node is primary of some.
    assert all(len(set(shard["replicas"])) == min(3, size) for shard in agreed["shards"])
    assert {shard["replicas"][0] for shard in agreed["shards"]} == members

    pairs = {f"key:{index}".encode(): b"value-%d" % index for index in range(300)}
    with Client(Config(seeds=[nodes[-1].address_text])) as client:
        for key, value in list(pairs.items())[:150]:
            client.set(key, value)
        client.mset(dict(list(pairs.items())[150:]))
        assert client.mget(list(pairs)) == list(pairs.values())
        assert client.get(b"key:7") == b"value-7"
        # A pipeline over keys of every node: split by owner, results in queue order.
        pipe = client.pipeline()
        for key in list(pairs)[:60]:
            pipe.get(key)
        pipe.set(b"key:0", b"changed").get(b"key:0").delete(b"key:0").get(b"key:0")
        results = pipe.execute()
        assert results[:60] == list(pairs.values())[:60]
        assert results[61:63] == [b"changed", True]
        assert isinstance(results[63], NotFoundError)
        client.set(b"key:0", pairs[b"key:0"])
    # Each key lives on every member of its shard's replica set (the primary streamed it on).
    expected: dict[str, int] = dict.fromkeys(members, 0)
    mapper = ShardMapper(len(agreed["shards"]))
    for key in pairs:
        for member in agreed["shards"][mapper.shard_of_key(key)]["replicas"]:
            expected[member] += 1

    def counts() -> dict[str, int]:
        return {node_id: key_count(node) for node_id, node in cluster.nodes.items()}

    wait_until(lambda: counts() == expected, timeout=10, what=f"copies on every replica: {expected}")

    # A client that neither routes, follows redirects nor retries (a redirect past max_redirects
    # is retried like a refusal) sees the redirect itself, naming the owner's client address and
    # the map's epoch.
    key = next(key for key in pairs if _owner_of(agreed, key) != "n0")
    owner = cluster.nodes[_owner_of(agreed, key)]
    blind_config = Config(seeds=[nodes[0].address_text], cluster_routing=False, max_redirects=0, max_retries=0)
    with Client(blind_config) as blind, pytest.raises(MovedError) as moved:
        blind.get(key)
    assert moved.value.code == "MOVED"
    assert moved.value.address == owner.address
    # The map's epoch when it redirected: no newer than the map now (a lease renewed late under
    # load can move primaries, and with them the epoch, between the two calls).
    assert 0 < moved.value.epoch <= topology(nodes[0])["epoch"]
    # With redirects allowed (the default) the same client follows it.
    with Client(Config(seeds=[nodes[0].address_text], cluster_routing=False)) as follower:
        assert follower.get(key) == pairs[key]


def test_redis_cluster_clients_follow_redirects(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    wait_for_agreement(nodes, {"n0", "n1", "n2"})
    host, port = resp_address_of(nodes[1])
    client = RedisCluster(host=host, port=port)
    try:
        for index in range(100):
            assert client.set(f"rc:{index}", index)
        assert [client.get(f"rc:{index}") for index in range(100)] == [b"%d" % index for index in range(100)]
        assert client.mget_nonatomic([f"rc:{index}" for index in range(100)])[:3] == [b"0", b"1", b"2"]
        # Every node serves some of the slots.
        assert len({str(node) for node in client.get_primaries()}) == 3
        assert all((client.memory_usage(f"rc:{index}") or 0) > 0 for index in range(10))  # routed by its key
    finally:
        client.close()
    # A plain client sees the raw -MOVED.
    plain = redis.Redis(host, port)
    slots = plain.execute_command("CLUSTER SLOTS")
    foreign = next(entry for entry in slots if entry[2][1] != port)
    key = next(
        f"k{index}" for index in range(10_000) if foreign[0] <= plain.cluster("KEYSLOT", f"k{index}") <= foreign[1]
    )
    # (redis-py turns "-MOVED <slot> <host:port>" into MovedError("<slot> <host:port>").)
    with pytest.raises(redis.exceptions.MovedError, match=rf"^\d+ {foreign[2][0].decode()}:{foreign[2][1]}$"):
        plain.get(key)
    with pytest.raises(redis.exceptions.MovedError):
        plain.memory_usage(key)
    # Only MEMORY USAGE names a key: other subcommands are answered where they are sent.
    with pytest.raises(redis.ResponseError, match=r"wrong number of arguments for 'memory\|help'"):
        plain.execute_command("MEMORY", "HELP", key)
    plain.close()
    if REDIS_CLI is not None:
        result = subprocess.run(
            [REDIS_CLI, "-c", "-h", host, "-p", str(port), "set", key, "via-cli"], capture_output=True, text=True
        )
        assert result.stdout == "OK\n", result
        with Client(Config(seeds=[nodes[0].address_text])) as routed:
            assert routed.get(key) == b"via-cli"


def test_leave_kill_and_restart_with_the_same_id(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    first, second, third = nodes
    wait_for_agreement(nodes, {"n0", "n1", "n2"})

    # Graceful leave: the others drop it, as departed rather than dead.
    assert third.stop() == 0
    wait_for_agreement([first, second], {"n0", "n1"})
    assert info(first, "cluster")["aegis_gossip_members_left"] == 1
    # A graceful leave lowers the member high water (a death would not).
    wait_until(lambda: info(first, "replication")["aegis_members_high_water"] == 2, what="the leave deducted")

    # kill -9: found by the failure detector. Dead is not departed: for all n0 knows, n1 is
    # alive on the far side of a partition and leads there, so n0 alone (one of the two members
    # it still counts) leads nothing once its leases ran out, and refuses writes.
    second.kill()
    wait_for_agreement([first], {"n0"}, leased=False)
    assert info(first, "cluster")["aegis_gossip_members_dead"] == 1

    def leads_nothing() -> bool:
        replication = info(first, "replication")
        return (
            replication["aegis_shards_primary"] == 0
            and replication["aegis_quorum_floor"] == 2
            and replication["aegis_members_high_water"] == 2
        )

    wait_until(leads_nothing, timeout=30, what="n0 to lead nothing alone")
    with (
        Client(Config(seeds=[first.address_text], max_retries=0)) as client,
        pytest.raises(TryAgainError, match="no primary yet"),
    ):
        client.set("alone", b"x")
    assert leads_nothing()

    # Back with the same id (new ports, new incarnation): it supersedes its tombstone, and the
    # two of them make the floor again.
    restarted = cluster.start(1, seeds=[gossip_address(first)])
    agreed = wait_for_agreement([first, restarted], {"n0", "n1"}, timeout=90)
    assert agreed["nodes"]["n1"]["client"] == restarted.address_text
    with Client(Config(seeds=[first.address_text])) as client:
        for index in range(50):
            client.set(f"after:{index}", b"x")
        assert client.mget([f"after:{index}" for index in range(50)]) == [b"x"] * 50
    assert key_count(restarted) > 0


def _unused_gossip_address() -> str:
    """A loopback address and port nothing holds, on an address of its own in 127/8.

    Not on 127.0.0.1: a port freed there can be handed to the next process that binds
    port 0 (the joiner started before the seed did, in one CI run), while nothing
    else binds this address.
    """
    for _ in range(20):
        host = f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 2}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if _ports_free([(host, port)]):
            return f"{host}:{port}"
    raise AssertionError("no free loopback address and port found")


def test_a_node_started_before_its_seed_still_joins(cluster: Cluster) -> None:
    seed_gossip = _unused_gossip_address()
    joiner = cluster.start(1, seeds=[seed_gossip])
    seed = cluster.start(0, extra=["--gossip", seed_gossip])
    wait_for_agreement([seed, joiner], {"n0", "n1"})


def test_gossip_secret_keeps_strangers_out(cluster: Cluster) -> None:
    secret = {"AEGIS_GOSSIP_SECRET": "the-cluster-secret-0123"}
    first = cluster.start(0, **secret)
    second = cluster.start(1, seeds=[gossip_address(first)], **secret)
    wait_for_agreement([first, second], {"n0", "n1"})
    stranger = cluster.start(2, seeds=[gossip_address(first)], AEGIS_GOSSIP_SECRET="a-different-secret-98765")
    unsigned = cluster.start(3, seeds=[gossip_address(first)])

    # The strangers' pings and state exchanges are refused, counted, and change nothing.
    def both_refused() -> dict[str, str] | None:
        seen = info(first, "cluster")
        return seen if seen["aegis_gossip_dropped_forged"] and seen["aegis_gossip_dropped_unsigned"] else None

    wait_until(both_refused, timeout=10, what="the seed to refuse forged and unsigned gossip")
    assert set(topology(first)["nodes"]) == {"n0", "n1"}
    assert set(topology(stranger)["nodes"]) == {"n2"}
    assert set(topology(unsigned)["nodes"]) == {"n3"}


def _ports_free(addresses: list[tuple[str, int]]) -> bool:
    for host, port in addresses:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    return False
    return True


def test_the_example_cluster_configs_form_a_cluster(tmp_path: Path) -> None:
    # conf/cluster/node-{a,b,c}.toml use fixed ports (7700, 7379, 7701, 7702 on 127.0.0.1-3), as a user would.
    examples = Path(__file__).resolve().parent.parent / "conf" / "cluster"
    hosts = {"a": "127.0.0.1", "b": "127.0.0.2", "c": "127.0.0.3"}
    if not _ports_free([(host, port) for host in hosts.values() for port in (7700, 7379, 7701, 7702)]):
        pytest.skip("the example configs' fixed ports are in use on this machine")
    nodes = []
    try:
        for name, host in hosts.items():
            nodes.append(
                LocalNode(
                    str(tmp_path / name),
                    ["--config", str(examples / f"node-{name}.toml")],
                    bind=f"{host}:7700",
                    resp_bind=f"{host}:7379",
                    gossip=f"{host}:7701",
                    cluster_bind=f"{host}:7702",
                    health_addr=None,
                )
            )
        wait_for_agreement(nodes, {"node-a", "node-b", "node-c"})
        client = RedisCluster(host="127.0.0.1", port=7379)
        try:
            client.set("example", "works")
            assert client.get("example") == b"works"
        finally:
            client.close()
    finally:
        for node in nodes:
            node.kill()
