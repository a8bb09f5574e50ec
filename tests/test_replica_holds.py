"""WAIT: the replica manager's side, in-process.

The manager runs without sockets or a reactor: its peer network is a recorder,
and a test hands each message to the node it was sent to. The real-process
tests (3 nodes, SIGSTOP) are in tests/test_replication.py.
"""

from __future__ import annotations

import random
from typing import Any

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from aegiskv.cluster.leases import MemoryVoteStore
from aegiskv.cluster.slots import ShardMapper
from aegiskv.node.operations import KeyspaceLimits, Node
from aegiskv.protocols.session import WaitRequest
from aegiskv.server.replicas import ReplicaManager, ReplicationOptions, _Shard

SHARDS = 8
MEMBERS = ("p", "f1", "f2")

# -- the replica manager ------------------------------------------------------------------------


class Links:
    """A peer network that records what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []
        self.down: set[str] = set()

    def is_up(self, peer: str) -> bool:
        return peer not in self.down

    def pending_bytes(self, peer: str) -> int:
        return 0

    def send(self, peer: str, kind: int, payload: bytes) -> None:
        self.sent.append((peer, kind, payload))

    def taken(self, kind: int) -> list[tuple[str, bytes]]:
        found = [(peer, payload) for peer, sent_kind, payload in self.sent if sent_kind == kind]
        self.sent = [item for item in self.sent if item[1] != kind]
        return found


def manager(node_id: str) -> ReplicaManager:
    node = Node(
        MemoryBackend(BackendOptions(max_memory_bytes=1 << 26)),
        KeyspaceLimits(1024, 1 << 20, 1000),
        ShardMapper(SHARDS),
        node_id,
    )
    options = ReplicationOptions(write_quorum=0, quorum_timeout=5.0)
    replicas = ReplicaManager(node, None, node_id, options, None, store=MemoryVoteStore(), rng=random.Random(1))  # type: ignore[arg-type]
    replicas.peers = Links()  # type: ignore[assignment]
    node.feed = replicas
    return replicas


def links(replicas: ReplicaManager) -> Links:
    assert isinstance(replicas.peers, Links)
    return replicas.peers


def shard_of(key: bytes) -> int:
    return ShardMapper(SHARDS).shard_of_key(key)


def leading(replicas: ReplicaManager, shard: int, epoch: int = 3) -> _Shard:
    state = replicas._shards[shard] = _Shard(shard, MEMBERS, 1 << 20)
    replicas._start_leading(state, epoch)
    links(replicas).sent.clear()  # the offers
    return state


def following(replicas: ReplicaManager, shard: int) -> _Shard:
    state = replicas._shards[shard] = _Shard(shard, MEMBERS, 1 << 20)
    return state


KEY = b"quorum-key"


def cluster() -> dict[str, ReplicaManager]:
    nodes = {node_id: manager(node_id) for node_id in MEMBERS}
    leading(nodes["p"], shard_of(KEY))
    for follower in ("f1", "f2"):
        following(nodes[follower], shard_of(KEY))
    return nodes


# -- WAIT ---------------------------------------------------------------------------------------


def count(replicas: int) -> bytes:
    return b"%d" % replicas


def write(primary: ReplicaManager, written: dict[int, Any], key: bytes) -> int:
    primary.node.set(key, b"v")
    writes = primary.take_writes()
    assert writes is not None
    primary.note_writes(written, primary.ticket(writes))
    return writes[shard_of(key)]


def test_wait_counts_the_followers_holding_the_connections_writes() -> None:
    nodes = cluster()
    primary = nodes["p"]
    tracker = primary._shards[shard_of(KEY)].tracker
    written: dict[int, Any] = {}
    seq = write(primary, written, KEY)
    ticket = primary.hold_ticket(WaitRequest(2, 0, count), written)
    assert primary.verdict(ticket) is False
    tracker.acknowledge("f1", seq)
    assert primary.verdict(ticket) is False
    tracker.acknowledge("f2", seq)
    assert primary.verdict(ticket) == b"2"


def test_wait_answers_the_count_reached_at_its_timeout_the_least_over_the_shards_written() -> None:
    nodes = cluster()
    primary = nodes["p"]
    other = next(b"other-%d" % index for index in range(1000) if shard_of(b"other-%d" % index) != shard_of(KEY))
    leading(primary, shard_of(other))
    written: dict[int, Any] = {}
    seq = write(primary, written, KEY)
    other_seq = write(primary, written, other)
    primary._shards[shard_of(KEY)].tracker.acknowledge("f1", seq)
    primary._shards[shard_of(KEY)].tracker.acknowledge("f2", seq)
    primary._shards[shard_of(other)].tracker.acknowledge("f1", other_seq)
    ticket = primary.hold_ticket(WaitRequest(2, 50, count), written)
    assert primary.verdict(ticket) is False
    object.__setattr__(ticket, "deadline", 0.0)  # the timeout passed
    assert primary.verdict(ticket) == b"1"


def test_wait_without_writes_answers_at_once_with_the_streaming_followers() -> None:
    nodes = cluster()
    primary = nodes["p"]
    assert primary.verdict(primary.hold_ticket(WaitRequest(5, 0, count), {})) == b"0"  # none streaming yet
    for stream in primary._shards[shard_of(KEY)].streams.values():
        stream.state = "streaming"
    assert primary.verdict(primary.hold_ticket(WaitRequest(5, 0, count), {})) == b"2"
    links(primary).down.add("f2")
    assert primary.verdict(primary.hold_ticket(WaitRequest(5, 0, count), {})) == b"1"
