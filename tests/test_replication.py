"""Replication on real processes: copies that survive a kill -9, a pause and a restart.

Three ``aegis`` nodes on 127.0.0.x (tests/cluster_harness.py), RF 3, eight
shards, fast gossip. Writes go through the native client with cluster routing;
every acknowledged write is checked after the fault. The fault suites with
partitions and long runs are in tests/faults/; these are the quick ones.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aegiskv.client import Client, Config, MovedError, NotFoundError
from aegiskv.cluster.slots import ShardMapper
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, gossip_address, info, key_count, topology, wait_for_agreement
from tests.wire import http_request, metric_samples, wait_until

pytestmark = pytest.mark.slow

MEMBERS = {"n0", "n1", "n2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, shards=8, env={"AEGIS_WRITE_QUORUM": "2"})
    try:
        yield started
    finally:
        started.close()


def primaries(node: LocalNode) -> list[str]:
    return [shard["replicas"][0] for shard in topology(node)["shards"]]


def settled(nodes: list[LocalNode]) -> list[str]:
    """Wait until every node names the same primaries, each one placement's preferred (hand-offs done)."""
    wait_for_agreement(nodes, {node_id for node_id in MEMBERS if any(n.process.poll() is None for n in nodes)})

    def agreed() -> list[str] | None:
        views = {tuple(primaries(node)) for node in nodes}
        if len(views) != 1:
            return None
        leading = [info(node, "replication")["aegis_shards_primary"] for node in nodes]
        return list(views.pop()) if sum(leading) == 8 else None

    return wait_until(agreed, timeout=30, interval=0.1, what="every shard to have one agreed primary")


def write_keys(client: Client, prefix: str, count: int) -> dict[str, str]:
    acknowledged = {}
    for index in range(count):
        key, value = f"{prefix}:{index}", f"value-{index}"
        client.set(key, value)
        acknowledged[key] = value
    return acknowledged


def missing(client: Client, expected: dict[str, str]) -> list[str]:
    lost = []
    for key, value in expected.items():
        try:
            if client.get(key) != value.encode():
                lost.append(key)
        except NotFoundError:
            lost.append(key)
    return lost


def client_for(nodes: list[LocalNode]) -> Client:
    return Client(Config(seeds=[node.address_text for node in nodes], max_retries=20))


def test_a_killed_primary_loses_no_write_acknowledged_by_a_majority(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    layout = settled(nodes)
    with client_for(nodes) as client:
        written = write_keys(client, "before", 300)
    victim_id = layout[0]
    victim = cluster.nodes[victim_id]
    victim.kill()
    survivors = [node for node in nodes if node is not victim]
    with client_for(survivors) as client:
        # The client rides out the failover (TRYAGAIN and moves are retried), then writes succeed.
        written.update(write_keys(client, "after", 100))
        assert missing(client, written) == []
    for node in survivors:
        assert victim_id not in primaries(node)


def test_a_paused_primary_acknowledges_nothing_after_its_lease_lapsed(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    layout = settled(nodes)
    victim_id = layout[0]
    victim = cluster.nodes[victim_id]
    mapper = ShardMapper(8)
    key = next(f"paused:{index}" for index in range(10_000) if mapper.shard_of_key(f"paused:{index}".encode()) == 0)
    # No retries, no redirects: the test is about what the old primary answers, not where a client goes next.
    config = Config(seeds=[victim.address_text], cluster_routing=False, read_timeout=30, max_retries=0, max_redirects=0)
    with Client(config) as direct:
        direct.set(key, "before")
        victim.process.send_signal(signal.SIGSTOP)
        try:
            # Four lease durations: the others elect a new primary of shard 0 meanwhile.
            survivors = [node for node in nodes if node is not victim]
            wait_until(
                lambda: all(primaries(node)[0] != victim_id for node in survivors),
                timeout=30,
                what="a new primary for shard 0",
            )
            with client_for(survivors) as client:
                client.set(key, "while-paused")
        finally:
            victim.process.send_signal(signal.SIGCONT)
        # The write sent to the old primary now: it wakes with its lease lapsed and must refuse it.
        with pytest.raises(Exception) as refused:
            direct.set(key, "stale")
        message = str(refused.value)
        assert isinstance(refused.value, MovedError) or "TRYAGAIN" in message or "primary" in message, message
    with client_for(nodes) as client:
        assert client.get(key) == b"while-paused"


def test_a_restarted_node_catches_up_and_serves_again(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    settled(nodes)
    with client_for(nodes) as client:
        written = write_keys(client, "first", 200)
    victim = nodes[1]
    victim.kill()
    survivors = [nodes[0], nodes[2]]
    with client_for(survivors) as client:
        written.update(write_keys(client, "while-down", 200))
    restarted = cluster.start(1, seeds=[gossip_address(nodes[0])])
    everyone = [nodes[0], restarted, nodes[2]]
    settled(everyone)

    # The restarted node (wal off: it came back empty, at position 0) is sent every shard again: the
    # whole log while the primaries' backlogs still hold it from the first change (as with these few
    # writes), else a copy (a resync). Either way it applies changes; it may start after settling.
    def caught_up() -> bool:
        section = info(restarted, "replication")
        return section["aegis_changes_applied"] + section["aegis_resyncs_received"] > 0

    wait_until(caught_up, timeout=30, what="the restarted node to be sent the shards again")
    with client_for(everyone) as client:
        assert missing(client, written) == []
    # It holds a full copy: with one of the others gone it still serves every key.
    nodes[0].kill()
    with client_for([restarted, nodes[2]]) as client:
        assert missing(client, written) == []


def test_info_reports_roles_and_streams(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    settled(nodes)
    with client_for(nodes) as client:
        write_keys(client, "info", 50)
    sections = [info(node, "replication") for node in nodes]
    assert sum(section["aegis_shards_primary"] for section in sections) == 8
    assert all(section["aegis_shards_follower"] == 8 - section["aegis_shards_primary"] for section in sections)
    assert sum(section["aegis_changes_applied"] for section in sections) >= 2 * 50  # two followers per write
    assert all(section["connected_slaves"] == 2 for section in sections)
    assert all(section["aegis_links_up"] == 2 for section in sections)
    assert {section["aegis_write_quorum"] for section in sections} == {2}
    assert all(section["role"] == "master" for section in sections)  # each leads some shards
    # W = 2: every write waited for a follower's acknowledgement, so each primary sampled lag.
    for node_id, section in zip(sorted(MEMBERS), sections):
        assert section["aegis_lag_samples"] > 0
        assert 0 < section["aegis_lag_p50_us"] <= section["aegis_lag_p99_us"]
        # Quantiles are the upper bounds of buckets 2**(1/4) wide; the maximum is exact.
        assert section["aegis_lag_max_us"] >= section["aegis_lag_p99_us"] / 2 ** (1 / 4) - 1
        followers = {name for name in section if name.startswith("aegis_follower_gap_changes_")}
        assert followers == {f"aegis_follower_gap_changes_{peer}" for peer in MEMBERS - {node_id}}

    def caught_up() -> bool:
        """Every follower acknowledged every change (W = 2 waits for one of the two only)."""
        sections = [info(node, "replication") for node in nodes]
        gaps = [value for section in sections for name, value in section.items() if "follower_gap" in name]
        return len(gaps) == 6 and not any(gaps)

    wait_until(caught_up, timeout=30, interval=0.1, what="followers to acknowledge every change")


def test_metrics_report_what_info_replication_reports(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    settled(nodes)
    with client_for(nodes) as client:
        write_keys(client, "metrics", 40)
    for node in nodes:
        assert node.health_address is not None
        status, _headers, body = http_request(node.health_address, "/metrics")
        assert status == 200
        samples = metric_samples(body.decode())
        section = info(node, "replication")  # after the scrape: counters only grow
        primary = samples[("aegis_replication_shards", (("role", "primary"),))]
        assert primary == section["aegis_shards_primary"]
        assert samples[("aegis_replication_shards", (("role", "follower"),))] == 8 - primary
        assert samples[("aegis_replication_links_up", ())] == 2
        assert 0 < samples[("aegis_replication_changes_applied_total", ())] <= section["aegis_changes_applied"]
        # Every shard this node leads was won in an election and renewed since.
        assert samples[("aegis_replication_lease_elections_won_total", ())] >= primary
        assert samples[("aegis_replication_quorum_failures_total", ())] == 0
        lag_count = samples[("aegis_replication_lag_seconds_count", ())]
        assert 0 < lag_count <= section["aegis_lag_samples"]
        assert samples[("aegis_replication_lag_seconds_bucket", (("le", "+Inf"),))] == lag_count
        gaps = {labels for name, labels in samples if name == "aegis_replication_follower_gap_changes"}
        assert len(gaps) == 2


# -- WAIT and quorum reads ------------------------------------------------------------------------


def key_in_shard(shard: int, prefix: str) -> str:
    mapper = ShardMapper(8)
    return next(
        f"{prefix}:{index}" for index in range(10_000) if mapper.shard_of_key(f"{prefix}:{index}".encode()) == shard
    )


def resp_client(node: LocalNode) -> redis.Redis:
    """One RESP connection to ``node`` (WAIT counts what this connection wrote)."""
    assert node.resp_address is not None
    host, port = node.resp_address
    return redis.Redis(host=host, port=port, single_connection_client=True, socket_timeout=30)


@pytest.fixture
def async_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, shards=8, env={"AEGIS_WRITE_QUORUM": "0"})
    try:
        yield started
    finally:
        started.close()


def test_wait_counts_the_followers_holding_the_connections_writes(async_cluster: Cluster) -> None:
    nodes = async_cluster.start_many(3)
    layout = settled(nodes)
    primary = async_cluster.nodes[layout[0]]
    followers = topology(primary)["shards"][0]["replicas"][1:]
    key = key_in_shard(0, "wait")
    with resp_client(primary) as connection:
        # Nothing written on this connection yet: the followers streamed to, at once.
        wait_until(lambda: connection.execute_command("WAIT", 2, 0) == 2, timeout=30, what="both followers streaming")
        connection.set(key, "one")
        assert connection.execute_command("WAIT", 2, 10_000) == 2
        victim = async_cluster.nodes[followers[1]]
        victim.process.send_signal(signal.SIGSTOP)
        try:
            connection.set(key, "two")  # W = 0: answered by the primary alone
            assert connection.execute_command("WAIT", 1, 10_000) == 1
            # The paused follower cannot acknowledge: WAIT answers what it reached when its timeout ran out.
            assert connection.execute_command("WAIT", 2, 300) == 1
        finally:
            victim.process.send_signal(signal.SIGCONT)
        assert connection.execute_command("WAIT", 2, 0) == 2  # it catches up once it runs again


@pytest.fixture
def read_quorum_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, shards=8, env={"AEGIS_READ_QUORUM": "2"})
    try:
        yield started
    finally:
        started.close()


def test_reads_consult_a_second_copy_and_are_refused_without_one(read_quorum_cluster: Cluster) -> None:
    nodes = read_quorum_cluster.start_many(3)
    layout = settled(nodes)
    primary = read_quorum_cluster.nodes[layout[0]]
    followers = [read_quorum_cluster.nodes[node_id] for node_id in topology(primary)["shards"][0]["replicas"][1:]]
    key = key_in_shard(0, "quorum-read")
    with client_for(nodes) as client:
        client.set(key, "value")
        assert client.get(key) == b"value"  # the native GET
    before = info(primary, "replication")
    assert before["aegis_read_quorum"] == 2
    assert before["aegis_read_quorum_reads"] >= 1
    with resp_client(primary) as connection:
        assert connection.get(key) == b"value"
        followers[1].process.send_signal(signal.SIGSTOP)
        try:
            assert connection.get(key) == b"value"  # one follower answering is enough for 2 copies
            followers[0].process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(redis.RedisError) as refused:
                    connection.get(key)
                assert "read quorum" in str(refused.value)
            finally:
                followers[0].process.send_signal(signal.SIGCONT)
        finally:
            followers[1].process.send_signal(signal.SIGCONT)
    after = info(primary, "replication")
    assert after["aegis_read_quorum_reads"] >= before["aegis_read_quorum_reads"] + 2
    assert after["aegis_read_quorum_failures"] >= 1


def test_with_one_copy_every_node_learns_who_took_a_dead_nodes_shards(tmp_path: Path) -> None:
    # RF 1: nodes hold no copy of each other's shards, so they learn every primary but their own
    # from the lead bitmap each node gossips. A node that takes over a dead node's shard must
    # publish it there even though its lease core named it the holder a turn before it led.
    cluster = Cluster(tmp_path, shards=8, env={"AEGIS_REPLICATION_FACTOR": "1"})
    try:
        nodes = cluster.start_many(3)
        wait_for_agreement(nodes, MEMBERS)
        cluster.nodes["n1"].kill()
        survivors = [cluster.nodes["n0"], cluster.nodes["n2"]]
        described = wait_for_agreement(survivors, MEMBERS - {"n1"})
        assert all(shard["primary"] in ("n0", "n2") for shard in described["shards"])
    finally:
        cluster.close()


def test_a_lone_node_that_gains_a_member_while_written_to_gives_it_every_key(tmp_path: Path) -> None:
    # Alone, n0 numbers its changes but keeps none (no follower to stream to): n1, joining while
    # writes run, must get the keys written before by snapshot and every later one after it.
    cluster = Cluster(tmp_path, shards=8, env={"AEGIS_REPLICATION_FACTOR": "2"})
    try:
        first = cluster.start(0)
        wait_for_agreement([first], {"n0"})
        with client_for([first]) as client:
            acknowledged = write_keys(client, "alone", 200)
            second = cluster.start(1, seeds=[gossip_address(first)])
            written = iter(range(1_000_000))

            def copied_while_writing() -> bool:
                for index in itertools.islice(written, 10):
                    client.set(f"joining:{index}", f"value-{index}")
                    acknowledged[f"joining:{index}"] = f"value-{index}"
                return key_count(second) > 0

            wait_until(copied_while_writing, timeout=60, interval=0, what="n1 to hold copies")
            acknowledged.update(write_keys(client, "joined", 200))
            wait_for_agreement([first, second], {"n0", "n1"})
            # RF 2 on two nodes: each holds every shard. n1 leads the shards it is preferred for
            # once it caught up, so reads through the cluster check its copies too.
            wait_until(
                lambda: key_count(second) == len(acknowledged) == key_count(first),
                timeout=30,
                what=f"{len(acknowledged)} keys on both nodes",
            )
            assert missing(client, acknowledged) == []
    finally:
        cluster.close()
