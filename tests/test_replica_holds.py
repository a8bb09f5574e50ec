"""Quorum reads and WAIT: the replica manager's side of both, in-process.

The manager runs without sockets or a reactor: its peer network is a recorder,
and a test hands each message to the node it was sent to. The real-process
tests (3 nodes, SIGSTOP) are in tests/test_replication.py, the read round's
own in tests/test_replication_stream.py.
"""

from __future__ import annotations

import random
import time
from typing import Any

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from aegiskv.cluster.leases import LeaseTiming, MemoryVoteStore
from aegiskv.cluster.peer_wire import Kind, ShardMessage
from aegiskv.cluster.placement import RingPlacement
from aegiskv.cluster.replication import Change, Op, writer_tag
from aegiskv.cluster.shard_map import Endpoint, Member, ShardMap, Topology
from aegiskv.cluster.slots import ShardMapper
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.operations import KeyspaceLimits, Node
from aegiskv.protocols.session import QuorumRead, WaitRequest
from aegiskv.server.replicas import ReadTicket, ReplicaManager, ReplicationOptions, WaitTicket, _Shard, _Stream
from tests.wire import wait_until

SHARDS = 8
MEMBERS = ("p", "f1", "f2")

# -- the replica manager ------------------------------------------------------------------------


class Links:
    """A peer network that records what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []
        self.down: set[str] = set()
        self.up_at: dict[str, float] = {}  # when a link came up (monotonic); absent: long ago

    def is_up(self, peer: str) -> bool:
        return peer not in self.down

    def up_since(self, peer: str) -> float | None:
        return None if peer in self.down else self.up_at.get(peer, 0.0)

    def pending_bytes(self, peer: str) -> int:
        return 0

    def set_peers(self, peers: dict[str, tuple[str, int]]) -> None:
        pass

    def send(self, peer: str, kind: int, payload: bytes) -> None:
        self.sent.append((peer, kind, payload))

    def taken(self, kind: int) -> list[tuple[str, bytes]]:
        found = [(peer, payload) for peer, sent_kind, payload in self.sent if sent_kind == kind]
        self.sent = [item for item in self.sent if item[1] != kind]
        return found


class Turns:
    """The reactor, as far as the manager uses it here: the test runs ticks and turns itself."""

    def call_later(self, delay: float, callback: Any) -> None:
        pass


def manager(node_id: str, read_quorum: int = 2, timing: LeaseTiming | None = None) -> ReplicaManager:
    node = Node(
        MemoryBackend(BackendOptions(max_memory_bytes=1 << 26)),
        KeyspaceLimits(1024, 1 << 20, 1000),
        ShardMapper(SHARDS),
        node_id,
    )
    options = ReplicationOptions(
        write_quorum=0, read_quorum=read_quorum, quorum_timeout=5.0, timing=timing or LeaseTiming()
    )
    replicas = ReplicaManager(node, Turns(), node_id, options, None, store=MemoryVoteStore(), rng=random.Random(1))  # type: ignore[arg-type]
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


def answers(value: bytes | None, version: int, expires_at_ms: int) -> bytes:
    return b"none" if value is None else b"%s@%d" % (value, version)


def read(replicas: ReplicaManager, key: bytes) -> QuorumRead:
    entry = replicas.node.get_entry(key)
    if entry is None:
        return QuorumRead(key, b"", 0, 0, answers)
    return QuorumRead(key, bytes(entry.value), entry.version, entry.expires_at_ms, answers)


def held_read(replicas: ReplicaManager, key: bytes) -> ReadTicket:
    """The ticket a quorum read of ``key`` is held on (the primary holds every one)."""
    ticket = replicas.hold_ticket(read(replicas, key), {})
    assert isinstance(ticket, ReadTicket), ticket
    return ticket


def held_wait(replicas: ReplicaManager, request: WaitRequest, written: dict[int, Any]) -> WaitTicket:
    """The ticket a WAIT is held on."""
    ticket = replicas.hold_ticket(request, written)
    assert isinstance(ticket, WaitTicket), ticket
    return ticket


def deliver(replicas: dict[str, ReplicaManager], sender: str, kind: int) -> None:
    """Hand every message of ``kind`` ``sender`` sent to the node it was sent to, and their replies back."""
    for target, payload in links(replicas[sender]).taken(kind):
        replies: list[tuple[int, bytes]] = []

        def reply(kind: int, data: bytes, into: list[tuple[int, bytes]] = replies) -> None:
            into.append((kind, data))

        replicas[target].on_message(sender, kind, payload, reply)
        for reply_kind, reply_payload in replies:
            replicas[sender].on_message(target, reply_kind, reply_payload, lambda kind, data: None)


KEY = b"quorum-key"


def cluster() -> dict[str, ReplicaManager]:
    nodes = {node_id: manager(node_id) for node_id in MEMBERS}
    leading(nodes["p"], shard_of(KEY))
    for follower in ("f1", "f2"):
        following(nodes[follower], shard_of(KEY))
    return nodes


def test_a_read_is_held_until_a_follower_answered_then_gets_the_primarys_newest_copy() -> None:
    nodes = cluster()
    primary = nodes["p"]
    version = primary.node.set(KEY, b"fresh").version
    ticket = held_read(primary, KEY)
    assert primary.verdict(ticket) is False
    asked = {peer for peer, kind, _ in links(primary).sent if kind == Kind.READ}
    assert asked == {"f1", "f2"}
    # f1 lags: it holds nothing yet (its empty copy lies on the primary's log).
    deliver(nodes, "p", Kind.READ)
    assert primary.verdict(ticket) == b"fresh@%d" % version
    assert primary.counters["read_quorum_reads"] == 1
    assert primary.counters["read_stale_copies"] == 2  # both answered; the stream brings them the key
    assert primary.counters["read_repairs"] == 0


def test_a_followers_newer_copy_from_another_lineage_is_returned_and_written_back() -> None:
    nodes = cluster()
    primary, f1 = nodes["p"], nodes["f1"]
    old = primary.node.set(KEY, b"old").version
    # f1 holds a newer version written under an old primary's lineage the new primary never had.
    state = f1._shards[shard_of(KEY)]
    state.backlog.start_epoch(2, writer_tag("an-old-primary"))
    change = state.backlog.append(Op.PUT, KEY, b"newer", old + 10, 0)
    f1.node.apply_replicated(shard_of(KEY), [change])
    links(primary).down.add("f2")
    ticket = held_read(primary, KEY)
    assert primary.verdict(ticket) is False
    deliver(nodes, "p", Kind.READ)
    assert primary.verdict(ticket) == b"newer@%d" % (old + 10)
    assert primary.counters["read_repairs"] == 1
    entry = primary.node.get_entry(KEY)
    assert entry is not None and (bytes(entry.value), entry.version) == (b"newer", old + 10)
    # Written back through the feed: the stream carries it to every follower.
    last = primary._shards[shard_of(KEY)].backlog.changes_after(0, 1 << 20)[-1]
    assert (last.op, last.key, last.value, last.version) == (Op.PUT, KEY, b"newer", old + 10)


def test_a_lagging_followers_copy_of_a_deleted_key_does_not_come_back() -> None:
    nodes = cluster()
    primary, f1 = nodes["p"], nodes["f1"]
    version = primary.node.set(KEY, b"doomed").version
    f1.node.apply_replicated(shard_of(KEY), [Change(1, Op.PUT, KEY, b"doomed", version, 0)])
    primary.node.delete(KEY)
    links(primary).down.add("f2")
    ticket = held_read(primary, KEY)
    assert primary.verdict(ticket) is False
    deliver(nodes, "p", Kind.READ)
    assert primary.verdict(ticket) == b"none"
    assert primary.node.get_entry(KEY) is None


def test_a_read_without_its_quorum_is_refused_with_tryagain() -> None:
    nodes = cluster()
    primary = nodes["p"]
    primary.node.set(KEY, b"v")
    ticket = held_read(primary, KEY)
    assert primary.verdict(ticket) is False
    links(primary).sent.clear()  # the followers never answer
    ticket.deadline = 0.0  # quorum_timeout passed
    verdict = primary.verdict(ticket)
    assert isinstance(verdict, CommandError) and verdict.kind == ErrorKind.TRYAGAIN
    assert "read quorum of 2 not reached" in str(verdict)
    assert primary.counters["read_quorum_failures"] == 1
    assert primary._reads == {}


def test_a_read_fails_at_once_when_too_few_links_are_up_for_its_quorum() -> None:
    nodes = cluster()
    primary = nodes["p"]
    links(primary).down.update({"f1", "f2"})
    ticket = held_read(primary, KEY)
    verdict = primary.verdict(ticket)
    assert isinstance(verdict, CommandError) and "read quorum of 2 not reached" in str(verdict)
    assert links(primary).sent == []


def test_reads_need_no_quorum_below_two_or_off_the_primary() -> None:
    nodes = cluster()
    assert nodes["f1"].hold_ticket(read(nodes["f1"], KEY), {}) is None  # a follower answers from its copy
    single = manager("p", read_quorum=1)
    leading(single, shard_of(KEY))
    assert single.hold_ticket(read(single, KEY), {}) is None


# -- WAIT ---------------------------------------------------------------------------------------


def count(replicas: int) -> bytes:
    return b"%d" % replicas


def write(primary: ReplicaManager, written: dict[int, Any], key: bytes) -> int:
    primary.node.set(key, b"v")
    writes = primary.take_writes()
    assert writes is not None
    primary.note_writes(written, primary.ticket(writes))
    return writes[shard_of(key)][0]


def test_wait_counts_the_followers_holding_the_connections_writes() -> None:
    nodes = cluster()
    primary = nodes["p"]
    tracker = primary._shards[shard_of(KEY)].tracker
    written: dict[int, Any] = {}
    seq = write(primary, written, KEY)
    ticket = held_wait(primary, WaitRequest(2, 0, count), written)
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
    ticket = held_wait(primary, WaitRequest(2, 50, count), written)
    assert primary.verdict(ticket) is False
    object.__setattr__(ticket, "deadline", 0.0)  # the timeout passed
    assert primary.verdict(ticket) == b"1"


def test_wait_without_writes_answers_at_once_with_the_streaming_followers() -> None:
    nodes = cluster()
    primary = nodes["p"]
    assert primary.verdict(held_wait(primary, WaitRequest(5, 0, count), {})) == b"0"  # none streaming yet
    for stream in primary._shards[shard_of(KEY)].streams.values():
        stream.state = "streaming"
    assert primary.verdict(held_wait(primary, WaitRequest(5, 0, count), {})) == b"2"
    links(primary).down.add("f2")
    assert primary.verdict(held_wait(primary, WaitRequest(5, 0, count), {})) == b"1"


# -- the quorum floor ---------------------------------------------------------------------------


def test_a_view_shrunk_by_failures_keeps_the_floor_and_graceful_leaves_lower_it() -> None:
    replicas = manager("p")
    topology = Topology(RingPlacement(), ShardMapper(SHARDS), 3)

    def view(*names: str) -> ShardMap:
        return topology.update(Member(name, Endpoint("127.0.0.1", 1 + index), None) for index, name in enumerate(names))

    replicas.set_shard_map(view("p", "f1", "f2"), {})
    assert replicas.info()["quorum_floor"] == 2 and replicas.info()["members_high_water"] == 3
    replicas.leases.set_trusted(0, False, 0.0)  # say this copy lost writes
    # The others declared dead (a partition): p alone in every replica set, but the floor stays,
    # and its copy is not taken for the whole shard.
    replicas.set_shard_map(view("p"), {})
    assert replicas.info()["quorum_floor"] == 2
    assert not replicas.leases._shards[0].trusted
    # They left gracefully: a single-node cluster now, whose copy is the shard.
    replicas.set_shard_map(view("p"), {}, left={"f1", "f2"})
    assert replicas.info()["quorum_floor"] == 1 and replicas.info()["members_high_water"] == 1
    assert replicas.leases._shards[0].trusted


def test_a_lease_is_handed_to_a_peer_only_once_its_link_has_been_up_for_a_lease() -> None:
    """A peer that just came back may have restarted: it wins no election before its restart wait ends."""
    replicas = manager("p")
    timing = replicas.leases.timing
    restart_wait = timing.lease_duration * (1 + timing.max_clock_drift)
    now = time.monotonic()
    links(replicas).up_at["f1"] = now - 0.1
    assert not replicas._may_lead_soon("f1", now)
    links(replicas).up_at["f1"] = now - restart_wait - 0.01
    assert replicas._may_lead_soon("f1", now)
    links(replicas).down.add("f1")
    assert not replicas._may_lead_soon("f1", now)


# -- a lone primary's writes (settle_writes: no ticket at W <= 1) ---------------------------------


def view(*names: str) -> ShardMap:
    topology = Topology(RingPlacement(), ShardMapper(SHARDS), len(names))
    return topology.update(Member(name, Endpoint("127.0.0.1", 1 + index), None) for index, name in enumerate(names))


def alone(timing: LeaseTiming | None = None) -> ReplicaManager:
    """A one-node cluster's manager that won every shard's lease (by its own vote, at once)."""
    replicas = manager("p", timing=timing)
    replicas.set_shard_map(view("p"), {})
    replicas.settle()
    assert replicas.led_shards() == set(range(SHARDS))
    return replicas


def test_a_lone_primarys_write_is_settled_at_once_and_counted_for_wait() -> None:
    replicas = alone()
    written: dict[int, Any] = {}
    assert replicas.settle_writes(written) is False  # nothing written: nothing to settle
    replicas.node.set(KEY, b"v")
    assert replicas.settle_writes(written) is True
    state = replicas._shards[shard_of(KEY)]
    assert written == {shard_of(KEY): (state.backlog.last_seq, state.leading_epoch)}
    assert replicas.settle_writes(written) is False  # taken once
    assert replicas._unsent == set()  # no follower: nothing to stream at the end of the turn
    assert state.backlog.first_seq == state.backlog.last_seq + 1  # numbered, not kept


def test_a_lone_primary_whose_lease_lapsed_mid_batch_acknowledges_nothing_after() -> None:
    replicas = alone(LeaseTiming(lease_duration=0.2, round_timeout=0.05))
    written: dict[int, Any] = {}
    replicas.node.set(b"before", b"v")
    assert replicas.settle_writes(written) is True
    # The floor rises above one (a member was seen, then declared dead): the lease may no longer
    # renew itself alone, and lapses while the batch runs on (no tick in between).
    replicas.leases.set_quorum_floor(2)
    shards = {shard_of(b"before"), shard_of(KEY)}
    wait_until(
        lambda: not any(replicas.leases.holds_lease(shard, time.monotonic()) for shard in shards),
        timeout=5,
        interval=0.01,
        what="the lease to lapse",
    )
    for key in (b"before", KEY):
        replicas.node.set(key, b"after")
        verdict = replicas.settle_writes(written)
        assert isinstance(verdict, CommandError) and verdict.kind == ErrorKind.TRYAGAIN, verdict
        # The same write through the pool's path (take_writes, ticket, verdict) fails the same way.
        replicas.node.set(key, b"again")
        writes = replicas.take_writes()
        assert writes is not None
        assert isinstance(replicas.verdict(replicas.ticket(writes)), CommandError)
    assert replicas.counters["lease_lost_replies"] == 4


def test_a_follower_that_joins_a_lone_primary_gets_every_change_by_snapshot_then_stream() -> None:
    primary = alone()
    follower = manager("f1")
    nodes = {"p": primary, "f1": follower}
    written: dict[int, Any] = {}
    expected: dict[bytes, bytes] = {}

    def write(index: int) -> None:
        key, value = b"key:%d" % index, b"value:%d" % index
        primary.node.set(key, value)
        assert primary.settle_writes(written) is True
        expected[key] = value

    for index in range(200):
        write(index)  # alone: numbered, neither kept nor queued for streaming
    assert primary._unsent == set()
    assert all(state.backlog.first_seq == state.backlog.last_seq + 1 for state in primary._shards.values())
    # f1 joins: p (still holding every lease, f1 has granted nothing) offers it each shard.
    primary.set_shard_map(view("p", "f1"), {})
    follower.set_shard_map(view("p", "f1"), {})
    links(follower).sent.clear()  # its lease traffic: not what this test is about
    for index in range(200, 250):
        write(index)  # offered, not yet answered: kept in the backlog from now on
    deliver(nodes, "p", Kind.OFFER)  # f1 answers (0, 0): those changes are gone, so a snapshot
    copies = primary.copies
    assert (copies.in_flight, copies.queued) == (2, SHARDS - 2)  # two at a time, the others wait
    for index in range(250, 300):
        write(index)  # while the snapshots are on their way or waiting: kept, streamed after them
    for _ in range(100):
        primary.tick()  # the key lists, the snapshots' keys and their ends
        primary._end_of_turn()  # the changes after them
        for kind in (Kind.SNAPSHOT_BEGIN, Kind.SNAPSHOT_ITEMS, Kind.SNAPSHOT_END, Kind.APPEND):
            deliver(nodes, "p", kind)
        if not copies.in_flight and not copies.queued:
            break
    assert primary.counters["resyncs_sent"] == copies.totals.completed == SHARDS
    assert copies.totals.keys == 300  # the key lists are taken at the first tick, after every write
    held = {key: bytes(entry.value) for key, entry in follower.node.entries(list(expected))}
    assert held == expected


def test_a_write_made_while_the_shard_was_not_led_fails_the_reply_whatever_follows() -> None:
    """A batch whose lease lapsed between chunks and was won again: the write in between was never streamed."""
    replicas = manager("p")
    shard = shard_of(KEY)
    replicas.put(KEY, b"lost", 1, 0)  # not led: stored here, streamed nowhere
    state = leading(replicas, shard)
    state.streams = {"f1": _Stream()}
    replicas.put(KEY, b"later", 2, 0)  # led again (a new epoch) by the time the batch goes on
    writes = replicas.take_writes()
    assert writes is not None and writes[shard][0] < 0  # the reply fails: the first write is not on any follower


def test_a_copy_cut_short_by_a_new_primary_is_sent_again_whole() -> None:
    # A follower empties its copy when a snapshot begins. If another primary takes the shard
    # before the snapshot ends, the follower must tell it "nothing held" (position 0), not the
    # position its dropped keys had reached: streaming from there would never resend them.
    follower = manager("f1")
    shard = shard_of(KEY)
    state = following(follower, shard)
    follower.node.set(KEY, b"old")  # a key the follower held before the copy
    state.backlog.restart_at(50, [(1, 1, 7)])  # and where its changes had reached
    replies: list[tuple[int, bytes]] = []

    def reply(kind: int, data: bytes) -> None:
        replies.append((kind, data))

    begin = ShardMessage(Kind.SNAPSHOT_BEGIN, shard, 3, 100)
    follower.on_message("p", Kind.SNAPSHOT_BEGIN, begin.encode(), reply)
    copied = next(key for key in (b"copied:%d" % index for index in range(10_000)) if shard_of(key) == shard)
    item = Change(0, Op.PUT, copied, b"v", 9, 0)
    items = ShardMessage(Kind.SNAPSHOT_ITEMS, shard, 3, 0, 0, [], [item])
    follower.on_message("p", Kind.SNAPSHOT_ITEMS, items.encode(), reply)
    assert state.receiving_snapshot
    follower.on_message("f2", Kind.OFFER, ShardMessage(Kind.OFFER, shard, 4, 120).encode(), reply)
    payload, *_ = [payload for kind, payload in replies if kind == Kind.POSITION]
    position = ShardMessage.decode(Kind.POSITION, payload)
    assert position.seq == 0  # nothing held: the new primary sends the shard whole
    assert not state.receiving_snapshot  # the old copy is over: the shard can become ready again
    assert follower.node.get_entry(copied) is None  # half a copy from another primary is not kept
    assert follower.counters["copies_abandoned_received"] == 1
    late = ShardMessage(Kind.SNAPSHOT_END, shard, 3, 100)
    follower.on_message("p", Kind.SNAPSHOT_END, late.encode(), reply)  # the old primary's end: ignored
    assert state.backlog.last_seq == 0
    # The same primary offering again mid-copy (its link came back, its stream was replaced) has
    # given that copy up too: the flag must not stay set, or the shard never becomes ready.
    follower.on_message("f2", Kind.SNAPSHOT_BEGIN, ShardMessage(Kind.SNAPSHOT_BEGIN, shard, 4, 130).encode(), reply)
    assert state.receiving_snapshot
    follower.on_message("f2", Kind.OFFER, ShardMessage(Kind.OFFER, shard, 4, 140).encode(), reply)
    assert not state.receiving_snapshot
    assert follower.counters["copies_abandoned_received"] == 2
