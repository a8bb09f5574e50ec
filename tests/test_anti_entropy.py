"""Anti-entropy on real processes: a follower's copy damaged behind replication's back converges again.

Three ``aegis`` nodes (tests/cluster_harness.py), RF 3, eight shards, rounds
every second. DEBUG DIVERGE (on only with enable_debug_command) drops, changes
and adds keys in one follower's own copy without telling the stream; DEBUG
DIGEST hashes every entry a node holds, so with RF 3 on three nodes equal
digests mean equal copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, info, wait_for_agreement
from tests.wire import http_request, metric_samples, wait_until

pytestmark = pytest.mark.slow

MEMBERS = {"n0", "n1", "n2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = {"AEGIS_ANTI_ENTROPY_INTERVAL": "1s", "AEGIS_ENABLE_DEBUG_COMMAND": "true"}
    started = Cluster(tmp_path, shards=8, env=env)
    try:
        yield started
    finally:
        started.close()


def debug(node: LocalNode, *args: str | int) -> object:
    host, port = node.addresses["resp"]
    with redis.Redis(host=host, port=port) as connection:
        return connection.execute_command("DEBUG", *args)


def digests(nodes: list[LocalNode]) -> set[object]:
    return {debug(node, "DIGEST") for node in nodes}


def test_a_damaged_follower_copy_is_repaired(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    wait_for_agreement(nodes, MEMBERS)
    with Client(Config(seeds=[node.address_text for node in nodes], max_retries=20)) as client:
        for index in range(2000):
            if index % 7:
                client.set(f"ae:{index}", f"value-{index}")
            else:
                client.set_with_ttl(f"ae:{index}", f"value-{index}", 3600.0)
    wait_until(lambda: len(digests(nodes)) == 1, timeout=30, interval=0.2, what="the stream to settle")
    # A node leading no shard would damage nothing of its own (DIVERGE spares led shards): pick one that follows.
    victim = next(node for node in nodes if info(node, "replication")["aegis_shards_follower"] > 0)
    changed = debug(victim, "DIVERGE", 100)
    assert isinstance(changed, int) and changed > 0
    assert len(digests(nodes)) == 2, "the damaged copy should differ from the others"

    wait_until(lambda: len(digests(nodes)) == 1, timeout=30, interval=0.2, what="anti-entropy to repair the copy")
    section = info(victim, "replication")
    # Dropped, changed and added keys each count once on the follower that was repaired.
    assert section["aegis_anti_entropy_keys_repaired"] >= changed
    sent = sum(info(node, "replication")["aegis_anti_entropy_keys_sent"] for node in nodes)
    assert sent > 0
    samples = metric_samples(http_request(nodes[0].addresses["health"], "/metrics")[2].decode())
    assert samples[("aegis_anti_entropy_rounds_total", ())] > 0


def test_debug_is_refused_unless_enabled(tmp_path: Path) -> None:
    plain = Cluster(tmp_path, shards=8)
    try:
        node = plain.start(0)
        with pytest.raises(redis.ResponseError, match="enable_debug_command"):
            debug(node, "DIGEST")
    finally:
        plain.close()
