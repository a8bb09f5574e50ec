"""The string and keyspace writes of issue 25 reach the followers: they survive the primary's kill -9.

SETRANGE, INCRBYFLOAT, SETBIT, BITFIELD, BITOP, RENAME, COPY and RESTORE change values through
the node's operations, which tell the replication feed; with a write quorum of 2 an acknowledged
change is on a follower, so the new primary still has it after the old one is killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aegiskv.cluster.slots import ShardMapper
from aegiskv.node import dump_payload
from tests.cluster_harness import Cluster
from tests.test_replication import client_for, settled
from tests.wire import resp_address_of

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, shards=8, env={"AEGIS_WRITE_QUORUM": "2"})
    try:
        yield started
    finally:
        started.close()


def test_issue_25_writes_survive_the_primarys_kill(cluster: Cluster) -> None:
    nodes = cluster.start_many(3)
    layout = settled(nodes)
    tag = "{r}"  # every key in one slot, so one shard and one primary
    primary = cluster.nodes[layout[ShardMapper(8).shard_of_key(tag.encode())]]
    host, port = resp_address_of(primary)
    with redis.Redis(host=host, port=port, socket_timeout=10) as direct:
        direct.set(f"{tag}s", "Hello")
        direct.setrange(f"{tag}s", 5, " World")
        direct.incrbyfloat(f"{tag}f", 10.5)
        direct.setbit(f"{tag}b", 9, 1)
        direct.bitfield(f"{tag}bf").set("u8", 0, 200).execute()
        direct.bitop("OR", f"{tag}o", f"{tag}b", f"{tag}s")
        direct.set(f"{tag}moved", "value", ex=1000)
        direct.rename(f"{tag}moved", f"{tag}renamed")
        direct.copy(f"{tag}s", f"{tag}copied")
        direct.restore(f"{tag}restored", 0, dump_payload.encode(b"from a payload"))
        keys = ["s", "f", "b", "bf", "o", "renamed", "copied", "restored"]
        expected = {key: direct.get(f"{tag}{key}") for key in keys}
    primary.kill()
    survivors = [node for node in nodes if node is not primary]
    with client_for(survivors) as client:
        # The client rides out the election (TRYAGAIN and redirects are retried).
        found = dict(zip(keys, client.mget([f"{tag}{key}" for key in keys])))
        assert found == expected
        assert client.mget([f"{tag}moved"]) == [None]
        deadline = client.expire_time(f"{tag}renamed")
        assert deadline is not None  # the TTL moved with the value
