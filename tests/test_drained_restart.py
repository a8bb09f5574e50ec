"""A node started again after a drain that handed every shard over claims no shard as recovering.

In-process (no sockets): the replica manager on a real data dir, as the
daemon builds it. A restarted node normally keeps what its log brought back
as the shard's copy ("recovering": no move is staged through it); after a
full drain that copy is stale, so the node must learn its shards back like a
new member. The real-process run is tests/test_faults.py (rolling restart).
"""

from __future__ import annotations

import random
from pathlib import Path

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from aegiskv.cluster.leases import FileVoteStore, LeaseTiming
from aegiskv.cluster.placement import RingPlacement
from aegiskv.cluster.shard_map import Endpoint, Member, Topology
from aegiskv.cluster.slots import ShardMapper
from aegiskv.node.operations import KeyspaceLimits, Node
from aegiskv.server.replicas import DRAINED_MARKER, ReplicaManager, ReplicationOptions

SHARDS = 8


class Links:
    """A peer network that sends nowhere."""

    def is_up(self, peer: str) -> bool:
        return True

    def up_since(self, peer: str) -> float | None:
        return 0.0

    def pending_bytes(self, peer: str) -> int:
        return 0

    def set_peers(self, peers: dict[str, tuple[str, int]]) -> None:
        pass

    def send(self, peer: str, kind: int, payload: bytes) -> None:
        pass


def start(data_dir: Path) -> ReplicaManager:
    """The manager as node n0 started on ``data_dir`` builds it, given the map of n0 and n1 at RF 2
    (every shard on both: not alone, so a copy it does not trust stays recovering)."""
    node = Node(
        MemoryBackend(BackendOptions(max_memory_bytes=1 << 26)),
        KeyspaceLimits(1024, 1 << 20, 1000),
        ShardMapper(SHARDS),
        "n0",
    )
    options = ReplicationOptions(write_quorum=0, read_quorum=1, quorum_timeout=5.0, timing=LeaseTiming())
    replicas = ReplicaManager(node, None, "n0", options, str(data_dir), rng=random.Random(1))  # type: ignore[arg-type]
    replicas.peers = Links()  # type: ignore[assignment]
    members = [Member(name, Endpoint("127.0.0.1", port), None) for name, port in (("n0", 1), ("n1", 2))]
    shard_map = Topology(RingPlacement(), ShardMapper(SHARDS), 2).update(members)
    replicas.set_shard_map(shard_map, {})
    return replicas


def recovering(replicas: ReplicaManager) -> int:
    return int.from_bytes(bytes.fromhex(replicas.recovering_bitmap()), "little")


def test_a_restart_claims_its_shards_as_recovering_unless_the_last_drain_handed_them_over(tmp_path: Path) -> None:
    FileVoteStore(tmp_path / "leases").save(0, 1, "n0")  # votes on disk: this start is a restart
    crashed = start(tmp_path)
    assert crashed.restarted and recovering(crashed) == (1 << SHARDS) - 1

    crashed.mark_drained()
    assert (tmp_path / "leases" / DRAINED_MARKER).exists()
    after_drain = start(tmp_path)
    assert after_drain.restarted and recovering(after_drain) == 0
    # The marker speaks of one start: the next (say after a kill -9) keeps its log's copy again.
    assert not (tmp_path / "leases" / DRAINED_MARKER).exists()
    assert recovering(start(tmp_path)) == (1 << SHARDS) - 1


def test_a_first_start_claims_nothing_as_recovering(tmp_path: Path) -> None:
    first = start(tmp_path)
    assert not first.restarted and recovering(first) == 0
