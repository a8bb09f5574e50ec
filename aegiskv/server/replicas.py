"""This node's part in replication: per-shard leases, the stream to followers, applying a primary's stream.

The pieces it drives are sans-IO and live in ``aegiskv.cluster``: leases
(:mod:`~aegiskv.cluster.leases`: who may accept writes for a shard), the
backlog and sync plans (:mod:`~aegiskv.cluster.replication`), the cluster
port's messages (:mod:`~aegiskv.cluster.peer_wire`). Links to peers are
:mod:`aegiskv.server.peer_links`. Here they meet the node's keyspace and the
request pipeline:

* **Changes.** The node tells :class:`ReplicaManager` of each change a command
  makes (it is the node's ``feed``), under the node lock, on whatever thread
  runs the command. A change to a shard this node leads gets the shard's next
  sequence number in its backlog; the request's thread remembers it, so the
  pipeline can hold the reply until enough copies have it.
* **Primary.** On winning a shard's lease for an epoch the node appends a no-op
  change at that epoch (every follower's position then shows the epoch, which
  elections compare), and offers its stream to each follower. A follower
  answers with its position; the backlog decides between streaming on from
  there and sending the whole shard again (a resync). Changes stream in
  batches of at most ``BATCH_BYTES``, no more than ``WINDOW_BYTES`` unsent on a
  link. Followers acknowledge what they applied; acknowledgements count
  towards write quorums.
* **Follower.** Changes from a primary whose epoch is below this node's term
  for the shard (the newest epoch it voted for or followed) are refused with
  FENCED: a deposed primary can never reach a quorum. A follower acknowledges
  a batch once it applied it and, in fsync mode, once its own log is durable.
* **Quorums.** A write's reply waits until ``write_quorum`` copies hold its
  change, and leaves only if this node still holds the shard's lease at that
  moment; past ``quorum_timeout`` the client is told the outcome is unknown.
  W = 0 replies at once, after the same lease check.
* **WAIT.** ``WAIT n timeout`` is held the same way until every write the
  connection made has ``n`` followers' acknowledgements (the least over the
  shards it wrote), or the timeout; it answers the count reached.
* **Quorum reads.** With ``read_quorum`` N > 1, a GET on a shard's primary asks
  every follower whose link is up for its copy of the key (READ) and is held
  until N - 1 answered (READ_REPLY; the primary's copy is the Nth) or
  ``quorum_timeout`` passed (then the client is told to try again). The newest
  copy is the answer (:class:`~aegiskv.cluster.replication.ReadRound`); a
  follower's newer copy is written back here (``Node.repair``) and streamed to
  the others, and followers that answered an older one catch up through the
  stream, which is already bringing them the primary's.

Reactor thread only, except :meth:`put`, :meth:`delete`, :meth:`expire`,
:meth:`flush_shard` (the feed: any thread, node lock held),
:meth:`take_writes` (the thread that ran the command), and :meth:`readable` and
:meth:`copy_generation` (the replica endpoint's reads, on whichever thread runs them:
plain reads of fields the reactor sets).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from loguru import logger

from aegiskv.cluster.copy_queue import CopyQueue
from aegiskv.cluster.key_scan import ShardKeyScan
from aegiskv.cluster.leases import (
    FileHighWater,
    FileVoteStore,
    LeaseTiming,
    MemberHighWater,
    ShardLeases,
    VoteStore,
)
from aegiskv.cluster.peer_wire import Kind, PeerProtocolError, ShardMessage
from aegiskv.cluster.replication import (
    Backlog,
    Change,
    Copy,
    LagHistogram,
    LagMarks,
    Op,
    QuorumTracker,
    ReadRound,
    writer_tag,
)
from aegiskv.cluster.shard_map import ShardMap
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.net.reactor import Reactor
from aegiskv.node.operations import Node
from aegiskv.protocols.session import QuorumRead, WaitRequest
from aegiskv.server.peer_links import PeerNetwork, Reply

TICK_SECONDS = 0.05
BATCH_BYTES = 256 * 1024  # changes in one APPEND
WINDOW_BYTES = 4 * 1024 * 1024  # unsent bytes on a link before a primary stops adding more
SNAPSHOT_KEYS = 512  # keys per SNAPSHOT_ITEMS chunk
# A primary that is not its shard's preferred one (placement's first member: primaries spread
# evenly) hands the lease over once the preferred one has every change, after leading this long,
# a few shards per tick so a node that comes back does not stall every shard at once.
HANDOFF_AFTER = 1.0
# An OFFER unanswered this long is sent again: the follower may not have known the shard yet (its map
# lagged), or the link dropped it; both answer the next one.
REOFFER_AFTER = 1.0
HANDOFFS_PER_TICK = 4
COPY_REPORT_EVERY = 1.0  # seconds between progress lines of a shard copy in the log
# In the leases directory: this node's last drain handed every shard over (see mark_drained).
DRAINED_MARKER = "drained"
# Longest the reactor sorts keys for shard copies in one go (aegiskv.cluster.key_scan) before it
# serves requests again.
SCAN_SLICE_SECONDS = 0.002
# Most snapshot bytes one call of _pump_copies sends (a few ms of building chunks) before it lets the
# reactor serve requests and comes back in the next turn: the bandwidth's burst alone (a tenth of a
# second of it) took a turn of over 100 ms at the default 32 MiB/s.
COPY_TURN_BYTES = 256 * 1024

# shard -> (the last seq a request or a connection wrote to it, the epoch it was written in); seq -1:
# written on a shard this node did not lead (never streamed: its reply fails).
Writes = dict[int, tuple[int, int]]
# A request's entry for a shard it wrote while not leading it: its reply fails (seq -1).
_UNREPLICATED: Final = (-1, 0)
Written = Writes


@dataclass(frozen=True)
class ReplicationOptions:
    write_quorum: int = 0  # 0 = primary only, N = N copies, -1 = every current replica
    read_quorum: int = 0  # 0 or 1 = the primary answers alone, N = N copies answer, the newest wins
    quorum_timeout: float = 2.0
    backlog_bytes: int = 64 * 1024 * 1024  # all shards together
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    replication_factor: int = 3  # the configured one: with the members seen, it sets the leases' quorum floor
    copy_bandwidth: int = 0  # bytes/s over every shard copy this node sends (0 = unlimited)
    copy_slots: int = 2  # shard copies this node sends at once; the others wait their turn


@dataclass
class _Stream:
    """The primary's view of one follower of one shard."""

    # offered (waiting for its position), streaming, queued (a copy waiting for its turn or its key
    # list), snapshot (a copy under way)
    state: str = "offered"
    offered_at: float = 0.0  # when the last OFFER left (it is sent again until answered)
    sent_seq: int = 0
    # Where the follower said it was when streaming began: it holds that much before its first ACK
    # of this term (the quorum tracker starts every term at 0 and counts only acknowledgements).
    reported_seq: int = 0
    snapshot_keys: list[bytes] = field(default_factory=list)
    snapshot_at: int = 0  # the seq the snapshot's key list was taken at
    scanned: bool = False  # queued: snapshot_keys and snapshot_at are taken
    copy: CopyProgress | None = None  # the shard copy under way to this follower, for the log


class CopyProgress:
    """One shard copy (a snapshot sent or received): what the log says at its start, progress and end."""

    __slots__ = ("shard", "peer", "sending", "keys_total", "keys", "bytes", "started", "reported")

    def __init__(self, shard: int, peer: str, sending: bool, keys_total: int = 0) -> None:
        self.shard = shard
        self.peer = peer
        self.sending = sending
        self.keys_total = keys_total  # sending: the keys to send; receiving: not known
        self.keys = 0
        self.bytes = 0
        self.started = self.reported = time.monotonic()

    def add(self, items: Iterable[Change]) -> None:
        for item in items:
            self.keys += 1
            self.bytes += len(item.key) + len(item.value)
        now = time.monotonic()
        if now - self.reported >= COPY_REPORT_EVERY:
            self.reported = now
            of = f"/{self.keys_total}" if self.sending else ""
            logger.info(
                "shard {}: copy {} {}: {}{} keys, {} bytes, {}",
                self.shard,
                "to" if self.sending else "from",
                self.peer,
                self.keys,
                of,
                self.bytes,
                self._rate(now),
            )

    def finished(self, at_seq: int) -> None:
        logger.info(
            "shard {}: copy {} {} done at seq {}: {} keys, {} bytes in {:.2f}s, {}",
            self.shard,
            "to" if self.sending else "from",
            self.peer,
            at_seq,
            self.keys,
            self.bytes,
            time.monotonic() - self.started,
            self._rate(time.monotonic()),
        )

    def _rate(self, now: float) -> str:
        seconds = max(now - self.started, 1e-6)
        return f"{self.keys / seconds:.0f} keys/s, {self.bytes / seconds / 1e6:.2f} MB/s"


class _Shard:
    """One shard this node holds a copy of."""

    def __init__(self, shard: int, members: tuple[str, ...], backlog_bytes: int) -> None:
        self.shard = shard
        self.members = members
        self.learners: frozenset[str] = frozenset()  # members still copying it (no vote, no quorum)
        # Placement moved the shard away from this node: it hands over, then withdraws its copy.
        self.leaving = False
        self.targets: frozenset[str] = frozenset()  # the members placement wants to hold it
        self.leaving_members: frozenset[str] = frozenset()  # the members placement moved it away from
        self.backlog = Backlog(backlog_bytes)
        self.leading_epoch = 0  # > 0 while this node is the primary
        self.led_since = 0.0
        self.tracker = QuorumTracker()
        self.streams: dict[str, _Stream] = {}
        self.following = ""  # the primary this node takes changes from
        self.followed_epoch = 0
        self.receiving_snapshot = False
        self.receiving: CopyProgress | None = None  # the copy this node is receiving, for the log
        self.caught_up_to = 0  # a restarted copy is trusted again once it applied up to here
        self.lag_marks = LagMarks()  # while leading: when sampled changes were applied (node lock)


class ShardRepairer(Protocol):
    """Anti-entropy (aegiskv.server.anti_entropy): told of its messages, links back up and copies replaced."""

    def on_message(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None: ...

    def link_up(self, peer: str) -> None: ...

    def shard_reset(self, shard: int) -> None: ...

    def info(self) -> dict[str, int | str]: ...


class ReplicaManager:
    """See the module docstring."""

    def __init__(
        self,
        node: Node,
        reactor: Reactor,
        node_id: str,
        options: ReplicationOptions,
        data_dir: str | None,
        log_durable: Callable[[], tuple[bool, int, int]] | None = None,
        store: VoteStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``log_durable()`` says (fsync mode, appended seq, durable seq) of the node's log, when it keeps one."""
        self.node = node
        self.reactor = reactor
        self.node_id = node_id
        self._writer = writer_tag(node_id)
        self.options = options
        self.peers: PeerNetwork | None = None  # set by the server once the cluster port is bound
        self._log_durable = log_durable
        restarted = False
        high_water_store = None
        self._drained_marker: str | None = None
        drained = False
        if store is None:
            if data_dir is None:
                raise ValueError("leases need a data dir for their votes (or a store)")
            store = FileVoteStore(f"{data_dir}/leases", deferred=True)
            restarted = bool(store.load())
            high_water_store = FileHighWater(f"{data_dir}/leases")
            self._drained_marker = os.path.join(data_dir, "leases", DRAINED_MARKER)
            drained = _consume(self._drained_marker)
        self.restarted = restarted
        # Whether what this node holds from before a restart may be a shard's best copy (its log):
        # not after a drain that handed every shard over, since the members it handed them to
        # took writes after it left; it must copy them back like a new member.
        self._copies_from_before = restarted and not drained
        self._store = store
        self.leases = ShardLeases(node_id, options.timing, store, time.monotonic(), rng or random.Random(), restarted)
        # How many members the cluster had (lowered only by graceful leaves): a node whose view
        # shrank because the others were declared dead (a partition) must not lead alone.
        self._members = MemberHighWater(options.replication_factor, high_water_store)
        self.leases.set_quorum_floor(self._members.floor)
        self._shards: dict[int, _Shard] = {}
        self._led: list[_Shard | None] = [None] * node.shards.shards  # by shard: set while leading
        self._shard_of_key = node.shards.shard_of_key
        self._request = threading.local()
        self._waiting: set[_Holder] = set()
        self._acks_held: list[tuple[int, Callable[[], None]]] = []  # fsync mode: (log seq needed, send the ack)
        self._primaries_changed: Callable[[dict[int, str], frozenset[int]], None] = lambda primaries, electing: None
        self._published: dict[int, str] | None = None
        self._published_electing: frozenset[int] = frozenset()
        # Grows whenever this node starts or stops leading a shard: what gossip publishes of it
        # (led_bitmap) must be sent again even when the known primaries look the same.
        self._led_version = 0
        self._published_led_version = -1
        # Grows whenever this node's copy of a shard becomes complete or stops being so: what gossip
        # publishes of it (ready_bitmap) stages moves (aegiskv.cluster.shard_map).
        self._ready_version = 0
        self._published_ready_version = -1
        # Shards this node was moved away from and no longer offers as ready: every target member
        # holds a complete copy and this node leads it no more (aegiskv.cluster.shard_map).
        self._withdrawn: set[int] = set()
        # Shards this node held before it restarted and has not caught up on since: no move is
        # staged through them (aegiskv.cluster.shard_map), so a restart behaves as before staging.
        self._recovering: set[int] = set()
        # Shards with changes not yet streamed; set by the feed (any thread), drained at the end of
        # each reactor turn, so a change leaves in the turn that made it, not on the next tick.
        self._unsent: set[int] = set()
        # Time from applying a change here to a follower's acknowledgement of it, over every shard
        # this node leads and every follower (sampled: see LagMarks). Recorded on the reactor.
        self.lag = LagHistogram()
        # Lease messages of this reactor turn, sent by _end_of_turn: (the link to answer on, or
        # None for this node's own link to the peer; the peer; the message).
        self._lease_out: list[tuple[Reply | None, str, bytes]] = []
        self._lease_heard = False  # a lease message arrived this turn (see _end_of_turn)
        self._routing_seen = 0  # leases.routing_changes when routing was last recomputed for it
        self._gossip_leads: dict[int, str] = {}
        # What set_shard_map last acted on: its sets, members, peers' addresses and graceful leaves.
        self._map_seen: tuple[object, ...] | None = None
        self.counters = {
            "changes_replicated": 0,
            "changes_applied": 0,
            "resyncs_sent": 0,
            "resyncs_received": 0,
            "changes_discarded": 0,
            "fenced": 0,
            "quorum_failures": 0,
            "quorum_timeouts": 0,
            "lease_lost_replies": 0,
            "unreplicated_writes": 0,
            "handoffs": 0,
            "read_quorum_reads": 0,
            "read_quorum_failures": 0,
            "read_repairs": 0,
            "read_stale_copies": 0,
            "copies_abandoned_received": 0,  # a copy under way when another primary took the shard
        }
        self._reads: dict[int, ReadTicket] = {}  # quorum reads waiting for READ_REPLY, by request id
        self._next_read = 0
        # Per shard, grows before this node's copy is emptied (a resync) or dropped: a replica endpoint
        # read that ran meanwhile is redirected, not answered (aegiskv.cluster.replica_reads).
        self._copy_generations = [0] * node.shards.shards
        self.anti_entropy: ShardRepairer | None = None  # set by the server (aegiskv.server.anti_entropy)
        # Shard copies sent from here: a few at a time, at a bounded rate (aegiskv.cluster.copy_queue),
        # their key lists sorted from one scan of the keyspace in slices (aegiskv.cluster.key_scan).
        self.copies = CopyQueue(options.copy_bandwidth, options.copy_slots, time.monotonic)
        self._scan: ShardKeyScan | None = None
        self._scan_for: list[tuple[_Shard, str, _Stream, int, int]] = []  # state, member, stream, epoch, seq
        self._pump_soon = False  # a call of _pump_copies is scheduled for the next reactor turn

    # -- wiring ------------------------------------------------------------------------------

    def start(self, on_primaries: Callable[[dict[int, str], frozenset[int]], None]) -> None:
        """Start the timers; ``on_primaries`` gets the known primary of every shard whenever it changes.

        With it come the shards whose election this node takes part in and
        knows no winner of (see _publish_primaries): requests for those are
        answered TRYAGAIN, not redirected.
        """
        self._primaries_changed = on_primaries
        self.node.feed = self
        self.reactor.call_every(TICK_SECONDS, self.tick)
        self.reactor.end_of_turn.append(self._end_of_turn)

    def set_shard_map(  # noqa: C901 - a map change's cases for every shard, in one pass
        self, shard_map: ShardMap, peer_addresses: Mapping[str, tuple[str, int]], left: Iterable[str] = ()
    ) -> None:
        """Membership changed: the shards this node holds a copy of, their members, the links to keep.

        ``left``: members the membership says left gracefully (not declared dead); only they
        lower the quorum floor (aegiskv.cluster.leases, "The quorum floor").
        """
        seen = (
            shard_map.placement_sets,
            shard_map.learners,
            shard_map.leaving,
            frozenset(shard_map.members),
            dict(peer_addresses),
            frozenset(left),
        )
        if seen == self._map_seen:
            # Only what members lead changed (gossip news of every election and hand-off): nothing
            # here reads it, and set_gossip_leads already republished the primaries. The pass over
            # every shard below cost each election tens of ms of every node's event loop.
            return
        self._map_seen = seen
        now = time.monotonic()
        self._set_quorum_floor(shard_map.members, left)
        mine: dict[int, tuple[str, ...]] = {}
        voting: dict[int, tuple[str, ...]] = {}  # what the leases see: learners do not vote
        for shard, members in enumerate(shard_map.placement_sets):
            if self.node_id in members:
                mine[shard] = members
                voters = shard_map.voters(shard)
                if self.node_id in voters:
                    voting[shard] = voters
        for shard in list(self._shards):
            if shard not in mine:
                self._copy_generations[shard] += 1
                self._stop_leading(self._shards.pop(shard), "the shard moved away")
                self._withdrawn.discard(shard)
                self._recovering.discard(shard)
                self._ready_version += 1
        for shard, members in mine.items():
            state = self._shards.get(shard)
            if state is None:
                state = self._shards[shard] = _Shard(shard, members, self._backlog_bytes())
                self._ready_version += 1
                if self._copies_from_before:
                    self._recovering.add(shard)
                if self.restarted or _copy_elsewhere(shard_map, shard, self.node_id):
                    # What this node held before it restarted is not known to be complete, and a
                    # shard it gains (a join, a rebalance) is held elsewhere: until it copied the
                    # shard its vote must not help elect a primary missing acknowledged writes,
                    # and it is a learner (aegiskv.cluster.shard_map) the map does not switch to.
                    self._set_trusted(shard, False, now)
            before, learned_before = state.members, state.learners
            state.members = members
            state.learners = shard_map.learners[shard]
            state.leaving = self.node_id in shard_map.leaving[shard]
            state.targets = frozenset(members) - shard_map.leaving[shard]
            state.leaving_members = shard_map.leaving[shard]
            if not state.leaving and shard in self._withdrawn:
                self._withdrawn.discard(shard)  # wanted here again (a target member went away)
                self._ready_version += 1
            if members == (self.node_id,) and self.leases.quorum_floor <= 1:
                # Alone in the replica set of a cluster that is one node (or shrank to one by graceful
                # leaves): its own copy is the shard, there is no other to wait for. Alone because the
                # others were declared dead, it may be the copy that lost writes: no such shortcut.
                self._set_trusted(shard, True, now)
            if state.leading_epoch:
                state.tracker.set_followers((member for member in members if member != self.node_id), state.learners)
                for member in members:
                    # A member that became a learner (new here, or back after it dropped the shard)
                    # is offered afresh: its offer is what tells it where catching up ends.
                    relearning = member in state.learners and (member not in learned_before or member not in before)
                    if member != self.node_id and (member not in state.streams or relearning):
                        state.streams[member] = _Stream()
                        self._offer(state, member)
        self._send_all(self.leases.set_replica_sets(voting, now))
        self._withdraw_copies()
        self._end_recovery()
        if self.peers is not None:
            wanted = {peer for members in mine.values() for peer in members if peer != self.node_id}
            self.peers.set_peers({peer: peer_addresses[peer] for peer in wanted if peer in peer_addresses})
        self._publish_primaries()

    def _set_quorum_floor(self, live: Iterable[str], left: Iterable[str]) -> None:
        before = self.leases.quorum_floor
        if self._members.observe(live, left) and self._members.floor != before:
            self.leases.set_quorum_floor(self._members.floor)
            logger.info(
                "quorum floor {} -> {}: {} members at most seen at once (graceful leaves deducted)",
                before,
                self._members.floor,
                self._members.high_water,
            )

    def set_gossip_leads(self, leads: Mapping[int, str]) -> None:
        """Who other nodes say leads the shards this node holds no copy of (gossip metadata)."""
        self._gossip_leads = dict(leads)
        self._publish_primaries()

    def led_bitmap(self) -> str:
        """The shards this node leads, as the hex bitmap gossip publishes."""
        bits = 0
        for shard, state in enumerate(self._led):
            if state is not None:
                bits |= 1 << shard
        width = (len(self._led) + 7) // 8
        return bits.to_bytes(width, "little").hex()

    def ready_bitmap(self) -> str:
        """The shards this node holds a complete copy of (trusted, not mid-copy, not withdrawn), as gossip
        publishes them."""
        bits = 0
        withdrawn = self._withdrawn
        for shard, state in list(self._shards.items()):
            if not state.receiving_snapshot and shard not in withdrawn and self.leases.trusted(shard):
                bits |= 1 << shard
        width = (len(self._led) + 7) // 8
        return bits.to_bytes(width, "little").hex()

    def _withdraw_copies(self) -> None:
        """Withdraw the copies of shards moved away that every target member holds and one of them leads.

        A separate step from the learner's becoming ready (aegiskv.cluster.shard_map): the map
        then drops this node from the shard, and this node drops the shard. Until a target member
        leads, this copy keeps its vote: a primary elected without it must have won the votes of
        copies as far along as this one (the voter rule), and once a target member leads, its
        lease was granted by a majority that held every acknowledged write.
        """
        leads = self._gossip_leads
        now = time.monotonic()
        for shard, state in self._shards.items():
            if (
                state.leaving
                and not state.learners
                and not state.leading_epoch
                and shard not in self._withdrawn
                and (leads.get(shard) in state.targets or self.leases.known_holder(shard, now) in state.targets)
            ):
                self._withdrawn.add(shard)
                self._ready_version += 1

    def holds_shards(self) -> bool:
        """Whether any shard's replica set still lists this node (a drain waits until none does)."""
        return bool(self._shards)

    def mark_drained(self) -> None:
        """Note in the data dir that the drain handed every shard over: started again, this node
        claims none of its old shards as its own to recover (else at RF 1 its stale or empty copy
        would lead again, over the writes its stand-ins took meanwhile)."""
        if self._drained_marker is None:
            return
        with open(self._drained_marker, "wb") as marker:
            os.fsync(marker.fileno())

    def recovering_bitmap(self) -> str:
        """The shards this node holds from before its restart and has not caught up on, as gossip publishes them."""
        bits = 0
        for shard in list(self._recovering):
            bits |= 1 << shard
        width = (len(self._led) + 7) // 8
        return bits.to_bytes(width, "little").hex()

    def _end_recovery(self) -> None:
        """Shards held from before the restart stop being recovering once trusted again and led by a
        member of their set (or by nobody yet): a member that stood in for this node while it was
        down (RF 1: the shard's only other copy) must have let go first, or the staging would make
        this node copy the stand-in's shard over what its log brought back."""
        leads = self._gossip_leads
        for shard in list(self._recovering):
            state = self._shards.get(shard)
            if state is None or not self.leases.trusted(shard):
                continue
            leader = leads.get(shard)
            if leader is None or leader in state.members:
                self._recovering.discard(shard)
                self._ready_version += 1

    def _set_trusted(self, shard: int, trusted: bool, now: float) -> None:
        if self.leases.trusted(shard) != trusted:
            self._ready_version += 1
        self.leases.set_trusted(shard, trusted, now)

    def _backlog_bytes(self) -> int:
        return max(64 * 1024, self.options.backlog_bytes // max(1, len(self._led)))

    # -- the feed (any thread, node lock held) -------------------------------------------------

    def put(self, key: bytes, value: bytes, version: int, expires_at_ms: int, op: int = Op.PUT) -> None:
        """A change to ``key``: a write, or the ``op`` delete and expire pass.

        Runs once per write, interpreted, called from the compiled node: one call
        here rather than three, measurably cheaper per SET.
        """
        shard = self._shard_of_key(key)
        state = self._led[shard]
        request = self._request
        writes: Writes | None = getattr(request, "writes", None)
        if writes is None:
            writes = request.writes = {}
        if state is None:
            # Routing sends writes only to the primary; one that lost its lease while a
            # batch ran in a worker lands here and is not streamed (its reply fails).
            self.counters["unreplicated_writes"] += 1
            writes[shard] = _UNREPLICATED
            return
        # A batch that wrote to this shard while it was not led (a lapsed lease between chunks)
        # fails whatever it writes there after: a lease won again in between must not make the
        # reply acknowledge the write no follower was sent.
        failed = writes.get(shard) is _UNREPLICATED
        # The epoch is read here, under the node lock, with the seq: a reply checks the shard is
        # still led in the epoch its change was numbered in, whichever thread asks and when.
        if state.streams:
            seq = state.backlog.append(op, key, value, version, expires_at_ms).seq
            if not failed:
                writes[shard] = (seq, state.leading_epoch)
            unsent = self._unsent  # streamed at the end of this reactor turn
            if shard not in unsent:
                state.lag_marks.mark(seq, time.monotonic())  # the turn's first change of a shard: a lag sample
                unsent.add(shard)
        else:
            # No follower to stream to (a lone node's every shard): the change is numbered, not
            # kept. One that arrives later is sent a snapshot taken under the node lock, then
            # the changes after it, which are kept from the moment its stream exists (set on
            # the reactor before its offer leaves; this check is under the node lock).
            seq = state.backlog.advance()
            if not failed:
                writes[shard] = (seq, state.leading_epoch)

    def delete(self, key: bytes) -> None:
        self.put(key, b"", 0, 0, Op.DELETE)

    def expire(self, key: bytes, expires_at_ms: int) -> None:
        self.put(key, b"", 0, expires_at_ms, Op.EXPIRE)

    def flush_shard(self, shard: int) -> None:
        state = self._led[shard]
        if state is not None:
            change = state.backlog.append(Op.FLUSH, b"", b"", 0, 0)
            self._remember(shard, change.seq, state.leading_epoch)
            if state.streams:
                self._mark_unsent(state, change.seq)

    # -- the replica endpoint (aegiskv.cluster.replica_reads; any thread) ----------------------------

    def readable(self, shard: int) -> bool:
        """Whether this node's follower copy of ``shard`` may answer replica endpoint reads now.

        It must be complete (trusted, not receiving a snapshot, caught up to where the primary
        was when it offered the stream), follow the epoch this node last granted, over a link
        that is up, from the primary this node has promised a live lease to. The promise is
        renewed by each of the primary's lease renewals and lapses ``lease_duration`` after the
        last: a follower cut off from its primary (paused, partitioned) stops answering within
        that, and its answers trail the primary by at most the replication lag until then.
        """
        state = self._shards.get(shard)
        if state is None or state.leading_epoch or not state.following:
            return False
        if state.receiving_snapshot or state.caught_up_to or shard in self._withdrawn:
            return False
        leases = self.leases
        if not leases.trusted(shard) or state.followed_epoch != leases.epoch(shard):
            return False
        peers = self.peers
        if peers is None or not peers.is_up(state.following):
            return False
        return leases.known_holder(shard, time.monotonic()) == state.following

    def copy_generation(self, shard: int) -> int:
        return self._copy_generations[shard]

    def led_shards(self) -> set[int]:
        return {shard for shard, state in enumerate(self._led) if state is not None}

    def _mark_unsent(self, state: _Shard, seq: int) -> None:
        """A change to stream at the end of this turn; the turn's first for the shard is a lag sample."""
        unsent = self._unsent
        if state.shard not in unsent:
            state.lag_marks.mark(seq, time.monotonic())
            unsent.add(state.shard)

    def _remember(self, shard: int, seq: int, epoch: int) -> None:
        writes: Writes | None = getattr(self._request, "writes", None)
        if writes is None:
            writes = self._request.writes = {}
        if writes.get(shard) is not _UNREPLICATED:  # a failure sticks (see put)
            writes[shard] = (seq, epoch)

    # -- the pipeline: what a reply waits for ----------------------------------------------------

    def take_writes(self) -> Writes | None:
        """The shards (and seqs) the command just run on this thread wrote to; None for none."""
        writes: Writes | None = getattr(self._request, "writes", None)
        if writes:
            self._request.writes = None
            return writes
        return None

    def ticket(self, writes: Writes) -> Ticket:
        """What the reply to a command with these writes waits for."""
        return Ticket(writes, time.monotonic() + self.options.quorum_timeout)

    def settle_writes(self, written: Written) -> Ticket | CommandError | bool:
        """For a reply about to leave with nothing held before it: the command just run on this thread.

        Does what take_writes, ticket, note_writes and verdict do together, in one call: False when
        the command wrote nothing; True when it did and its reply may leave now (this node leads
        every shard it wrote in the same epoch and holds the lease, read now); the error to send
        instead; or, when a write quorum above one copy must be waited for, the ticket to hold the
        reply on. With W <= 1 (the default, and every lone node) no ticket is made at all.
        """
        request = self._request
        writes: Writes | None = getattr(request, "writes", None)
        if not writes:
            return False
        request.writes = None
        written.update(writes)
        quorum = self.options.write_quorum
        if 0 <= quorum <= 1:
            # Never waits: _write_verdict's checks without its quorum count, inline (this runs
            # per write; a call more costs a lone node's SET measurably).
            now = time.monotonic()  # read after the write ran: a lease that lapsed since fails it
            led = self._led
            for shard, (seq, epoch) in writes.items():
                state = led[shard]
                if seq < 0 or state is None or state.leading_epoch != epoch:
                    self.counters["quorum_failures"] += 1
                    return _lost_leadership(shard)
                if not self.leases.holds_lease(shard, now):
                    self.counters["lease_lost_replies"] += 1
                    return _lost_leadership(shard)
            return True
        ticket = Ticket(writes, time.monotonic() + self.options.quorum_timeout)
        verdict = self._write_verdict(writes, ticket.deadline)
        return ticket if verdict is False else verdict

    @property
    def read_quorum(self) -> int:
        return self.options.read_quorum

    def note_writes(self, written: Written, ticket: Ticket) -> None:
        """Add a write's shards (seq and epoch) to what a connection wrote (WAIT counts copies of them)."""
        written.update(ticket.writes)

    def hold_ticket(self, hold: WaitRequest | QuorumRead, written: Written) -> WaitTicket | ReadTicket | None:
        """What a reply a handler asked to hold waits for (None: nothing, the handler's reply stands).

        WAIT with ``written`` (the connection's writes) empty answers at once: the
        followers this node streams to with their link up, the least over the
        shards it leads (0 when it leads none), as Redis answers its connected
        replicas for a connection that wrote nothing.
        """
        if isinstance(hold, WaitRequest):
            deadline = time.monotonic() + hold.timeout_ms / 1000 if hold.timeout_ms else float("inf")
            return WaitTicket(hold, dict(written), deadline)
        shard = self._shard_of_key(hold.key)
        state = self._led[shard]
        if self.options.read_quorum <= 1 or state is None:
            return None  # not this node's shard to answer for (a follower's read): the local copy
        return ReadTicket(hold, shard, state.leading_epoch)

    def verdict(self, ticket: Ticket | WaitTicket | ReadTicket) -> CommandError | bool | bytes:
        """True: the reply may leave; False: it waits; an error or a reply: send that instead."""
        if isinstance(ticket, WaitTicket):
            return self._wait_verdict(ticket)
        if isinstance(ticket, ReadTicket):
            return self._read_verdict(ticket)
        return self._write_verdict(ticket.writes, ticket.deadline)

    def _write_verdict(self, writes: Writes, deadline: float) -> CommandError | bool:
        now = time.monotonic()  # read after the write ran: a lease that lapsed since fails it
        quorum = self.options.write_quorum
        led = self._led
        for shard, (seq, epoch) in writes.items():
            state = led[shard]
            if seq < 0 or state is None or state.leading_epoch != epoch:
                # Not led, or led again in a later epoch: the change may not be in the new log.
                self.counters["quorum_failures"] += 1
                return _lost_leadership(shard)
            if not self.leases.holds_lease(shard, now):
                self.counters["lease_lost_replies"] += 1
                return _lost_leadership(shard)
            need = state.tracker.replicas() if quorum < 0 else quorum
            if need > 1 and state.tracker.copies(seq) < need:
                if now >= deadline:
                    self.counters["quorum_timeouts"] += 1
                    return CommandError(
                        ErrorKind.TRYAGAIN,
                        f"write quorum of {need} not reached within {self.options.quorum_timeout:g}s for shard "
                        f"{shard}; the write may or may not have been applied",
                    )
                return False
        return True

    def _wait_verdict(self, ticket: WaitTicket) -> bytes | bool:
        count = self._wait_count(ticket.written)
        if count >= ticket.hold.replicas or time.monotonic() >= ticket.deadline or not ticket.written:
            return ticket.hold.answer(count)
        return False

    def _wait_count(self, written: Written) -> int:
        """Followers holding every write in ``written``: the least over its shards (see hold_ticket)."""
        if not written:
            peers = self.peers
            counts = [
                sum(
                    1
                    for member, stream in state.streams.items()
                    if stream.state == "streaming" and peers is not None and peers.is_up(member)
                )
                for state in self._led
                if state is not None
            ]
            return min(counts, default=0)
        least: int | None = None
        for shard, (seq, epoch) in written.items():
            state = self._shards.get(shard)
            if seq < 0 or state is None or not state.leading_epoch or state.leading_epoch != epoch:
                count = 0  # not streamed, or this node no longer leads the shard: no acknowledgement to count
            else:
                count = state.tracker.copies(seq) - 1
            least = count if least is None else min(least, count)
        return least or 0

    def _read_verdict(self, ticket: ReadTicket) -> CommandError | bytes | bool:
        now = time.monotonic()
        state = self._shards.get(ticket.shard)
        if state is None or not state.leading_epoch or state.leading_epoch != ticket.epoch:
            self._reads.pop(ticket.request_id, None)
            self.counters["read_quorum_failures"] += 1
            return CommandError(
                ErrorKind.TRYAGAIN,
                f"this node stopped being the primary of shard {ticket.shard} before the read quorum answered",
            )
        hold = ticket.hold
        if ticket.round is None:
            self._ask_copies(ticket, state, now)
        round_ = ticket.round
        assert round_ is not None
        if not round_.complete:
            # Waits while enough asked copies may still answer; with too few links up, fails now.
            if now < ticket.deadline and len(round_.copies) + len(round_.asked) >= round_.need:
                return False
            self._reads.pop(ticket.request_id, None)
            self.counters["read_quorum_failures"] += 1
            return CommandError(
                ErrorKind.TRYAGAIN,
                f"read quorum of {round_.need} not reached for shard {ticket.shard}: {len(round_.copies)} copies "
                f"answered, {len(round_.asked)} more asked without an answer (quorum_timeout "
                f"{self.options.quorum_timeout:g}s)",
            )
        self._reads.pop(ticket.request_id, None)
        self.counters["read_quorum_reads"] += 1
        newest = round_.newest()
        if newest.holder != self.node_id and self.node.repair(
            hold.key, newest.value, newest.version, newest.expires_at_ms
        ):
            self.counters["read_repairs"] += 1  # a follower held a newer copy: written back, streamed on
        self.counters["read_stale_copies"] += sum(1 for holder in round_.stale() if holder != self.node_id)
        if not newest.version:
            return hold.answer(None, 0, 0)
        return hold.answer(newest.value, newest.version, newest.expires_at_ms)

    def _ask_copies(self, ticket: ReadTicket, state: _Shard, now: float) -> None:
        """Send READ to every follower of the shard whose link is up; the round completes at read_quorum copies."""
        hold = ticket.hold
        local = Copy(self.node_id, hold.version, hold.value, hold.expires_at_ms)
        peers = self.peers
        asked = [
            member
            for member in state.members
            if member != self.node_id and member not in state.learners and peers is not None and peers.is_up(member)
        ]
        self._next_read += 1
        ticket.request_id = self._next_read
        ticket.round = ReadRound(self.options.read_quorum, local, asked)
        ticket.deadline = now + self.options.quorum_timeout
        self._reads[ticket.request_id] = ticket
        message = ShardMessage(
            Kind.READ,
            state.shard,
            state.leading_epoch,
            ticket.request_id,
            changes=[Change(0, Op.NOOP, hold.key, b"", 0, 0)],
        )
        for member in asked:
            self._send(member, message)

    def wait(self, holder: _Holder) -> None:
        self._waiting.add(holder)

    def forget(self, holder: _Holder) -> None:
        self._waiting.discard(holder)

    def _release_waiting(self) -> None:
        for holder in list(self._waiting):
            holder.release()

    # -- timers -----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Lease rounds, streaming, quorum deadlines, hand-overs: every TICK_SECONDS (and once at start)."""
        now = time.monotonic()
        for state in self._led:
            if state is not None:
                # A holder's lease requests carry where it is now, not where it was when it
                # took the lease: a voter that missed the election (restarted, cut off) checks
                # the candidate is at least as far as itself, and has copied changes since.
                self.leases.set_position(state.shard, state.backlog.position, self._writer)
        self._send_all(self.leases.tick(now))
        for state in self._led:
            if state is not None:
                self._stream(state)
        if self._waiting:
            self._release_waiting()  # quorum deadlines and lapsed leases
        if self._reads:
            # A read whose connection went away never asks for its verdict again.
            for request_id in [key for key, read in self._reads.items() if read.deadline < now - 1.0]:
                del self._reads[request_id]
        self._release_acks()
        self._pump_copies()
        self._hand_over(now)
        self._withdraw_copies()
        self._end_recovery()
        self._publish_primaries()  # a holder this node learned of from lease traffic

    def _hand_over(self, now: float) -> None:
        """Give leases back to the preferred primaries that have caught up (see HANDOFF_AFTER)."""
        peers = self.peers
        if peers is None:
            return
        budget = HANDOFFS_PER_TICK
        for state in self._led:
            if state is None or budget == 0:
                continue
            preferred = state.members[0]
            if preferred == self.node_id or now - state.led_since < HANDOFF_AFTER:
                continue
            if not self._may_lead_soon(preferred, now):
                continue
            stream = state.streams.get(preferred)
            progress = state.tracker.followers.get(preferred)
            if stream is None or stream.state != "streaming" or progress is None:
                continue
            if progress.acked_seq < state.backlog.last_seq:
                continue
            budget -= 1
            self.counters["handoffs"] += 1
            self._send_all(self.leases.release(state.shard, now))
            self._stop_leading(state, f"handing over to {preferred}, the preferred primary")

    def _may_lead_soon(self, peer: str, now: float) -> bool:
        """Whether ``peer`` could win an election now, as far as this node can tell from its link.

        A restarted node grants no election, its own included, for one lease duration
        (aegiskv.cluster.leases): a lease released to it sooner is won by another member
        after the election delay, which hands it back a second later, and so on, each
        time leaving clients a TRYAGAIN window longer than redis-py's retry budget
        (about 0.4 s). The link was dialled after the peer's process started, so once
        it has been up for one lease duration (on the slowest clock within the drift
        bound) the peer's restart wait is over.
        """
        assert self.peers is not None
        up_since = self.peers.up_since(peer)
        if up_since is None:
            return False
        timing = self.leases.timing
        return now - up_since >= timing.lease_duration * (1 + timing.max_clock_drift)

    def settle(self) -> None:
        """One tick and its end of turn now, before the reactor runs (start-up)."""
        self.tick()
        self._end_of_turn()

    def _stream_unsent(self) -> None:
        unsent = self._unsent
        while unsent:
            state = self._led[unsent.pop()]
            if state is not None:
                self._stream(state)

    def _handle_lease_events(self) -> None:
        events = self.leases.events
        if not events:
            return
        changed = False
        for event in list(events):
            state = self._shards.get(event.shard)
            if state is None:
                continue
            if event.kind == "acquired":
                self._start_leading(state, event.epoch)
                changed = True
            elif event.kind == "lost" and state.leading_epoch:
                self._stop_leading(state, "lease lost")
                changed = True
        events.clear()
        if changed:
            self._publish_primaries()

    def _start_leading(self, state: _Shard, epoch: int) -> None:
        node = self.node
        with node.lock:
            backlog = state.backlog
            if backlog.history and backlog.history[-1][0] >= epoch:
                # The lease core picks epochs above this node's position, so this is a bug or a
                # replica set that changed without overlap: give the lease back, never write under it.
                logger.error("shard {}: lease for epoch {} not above the log's {}", state.shard, epoch, backlog.history)
                self._send_all(self.leases.release(state.shard, time.monotonic()))
                return
            backlog.start_epoch(epoch, self._writer)
            backlog.append(Op.NOOP, b"", b"", 0, 0)
            state.leading_epoch = epoch
            state.led_since = time.monotonic()
            state.lag_marks.clear()
            state.following = ""
            state.tracker = QuorumTracker()
            state.tracker.set_followers((member for member in state.members if member != self.node_id), state.learners)
            # Before the shard is published as led: a worker's write that sees it led must also
            # see its streams, or it numbers the change without keeping it (a needless resync).
            state.streams = {member: _Stream() for member in state.members if member != self.node_id}
            self._led[state.shard] = state
            self._led_version += 1
        self.leases.set_position(state.shard, backlog.position, self._writer)
        logger.info("shard {}: primary for epoch {} from seq {}", state.shard, epoch, backlog.last_seq)
        for member in state.streams:
            self._offer(state, member)

    def _stop_leading(self, state: _Shard, why: str) -> None:
        if not state.leading_epoch:
            return
        logger.info("shard {}: no longer primary (epoch {}): {}", state.shard, state.leading_epoch, why)
        with self.node.lock:
            state.leading_epoch = 0
            self._led[state.shard] = None
            self._led_version += 1
            state.lag_marks.clear()
        state.streams = {}
        self._release_waiting()

    # -- primary: streaming ---------------------------------------------------------------------

    def _offer(self, state: _Shard, member: str) -> None:
        stream = state.streams.get(member)
        if stream is not None:
            stream.offered_at = time.monotonic()
        backlog = state.backlog
        self._send(
            member,
            ShardMessage(Kind.OFFER, state.shard, state.leading_epoch, backlog.last_seq, 0, backlog.history[-8:]),
        )

    def link_up(self, peer: str) -> None:
        """A link to ``peer`` came (back) up: offer it every stream this node owes it."""
        for state in self._led:
            if state is not None and peer in state.streams:
                state.streams[peer] = _Stream()
                self._offer(state, peer)
        if self.anti_entropy is not None:
            self.anti_entropy.link_up(peer)  # copies may have drifted while it was away: compare soon

    def _stream(self, state: _Shard) -> None:
        peers = self.peers
        if peers is None:
            return
        now = time.monotonic()
        for member, stream in state.streams.items():
            if not peers.is_up(member) or peers.pending_bytes(member) > WINDOW_BYTES:
                continue
            if stream.state == "offered" and now - stream.offered_at >= REOFFER_AFTER:
                self._offer(state, member)
            elif stream.state == "streaming":
                self._send_changes(state, member, stream)
            # queued and snapshot: _pump_copies sends the copies, a few at a time

    def _send_changes(self, state: _Shard, member: str, stream: _Stream) -> None:
        node = self.node
        while self.peers is not None and self.peers.pending_bytes(member) <= WINDOW_BYTES:
            with node.lock:
                backlog = state.backlog
                if stream.sent_seq >= backlog.last_seq:
                    return
                try:
                    changes = backlog.changes_after(stream.sent_seq, BATCH_BYTES)
                except LookupError:
                    changes = None
                history = backlog.history_since(stream.sent_seq)
            if changes is None:
                self._start_snapshot(state, member, stream)  # it fell behind the backlog
                return
            message = ShardMessage(Kind.APPEND, state.shard, state.leading_epoch, stream.sent_seq, 0, history, changes)
            self._send(member, message)
            stream.sent_seq = changes[-1].seq
            self.counters["changes_replicated"] += len(changes)

    def _start_snapshot(self, state: _Shard, member: str, stream: _Stream) -> None:
        """``member`` needs the whole shard: queue the copy (a copy under way keeps its slot)."""
        stream.state = "queued"
        stream.scanned = False
        stream.snapshot_keys = []
        stream.copy = None
        self.copies.request((state.shard, member))
        self._wake_copies()

    def _wake_copies(self) -> None:
        """Run _pump_copies in the next reactor turn, even with no request or tick to end one."""
        if not self._pump_soon:
            self._pump_soon = True
            self.reactor.call_later(0.0, self._pump_copies)

    def _copy_stream(self, key: tuple[int, str]) -> tuple[_Shard, _Stream] | None:
        """The shard and stream a copy in the queue serves, while this node leads it and the copy is wanted."""
        state = self._led[key[0]]
        stream = state.streams.get(key[1]) if state is not None else None
        if state is None or stream is None or stream.state not in ("queued", "snapshot"):
            return None
        return state, stream

    def _pump_copies(self) -> None:
        """Move the shard copies along: sort keys, admit waiting copies, send chunks within the bandwidth."""
        self._pump_soon = False
        copies = self.copies
        if not copies.in_flight and not copies.queued:
            return
        self._advance_scan()
        copies.admit()
        peers = self.peers
        if peers is None:
            return
        budget = COPY_TURN_BYTES
        moved = True
        while moved:
            moved = False
            for key in copies.turn_order():
                assert isinstance(key, tuple)
                found = self._copy_stream(key)
                if found is None:
                    copies.abandoned(key)  # a lost lease, a link reset, the member went away
                    moved = True
                    continue
                state, stream = found
                member = key[1]
                if stream.state == "queued":
                    if stream.scanned:
                        self._begin_copy(state, member, stream)
                        moved = True
                    continue
                if not peers.is_up(member) or peers.pending_bytes(member) > WINDOW_BYTES:
                    continue
                if copies.allowance() <= 0:
                    return  # the next tick has more to spend
                budget -= self._send_snapshot_chunk(state, member, stream)
                moved = True
                if budget <= 0:
                    self._wake_copies()  # more in the next turn, after the requests waiting
                    return
            moved = bool(copies.admit()) or moved

    def _advance_scan(self) -> None:
        """Sort keys for the copies that wait for their key lists, one slice per call (aegiskv.cluster.key_scan)."""
        if self._scan is None:
            waiting = []
            for key in self.copies.pending():
                assert isinstance(key, tuple)
                found = self._copy_stream(key)
                if found is not None and found[1].state == "queued" and not found[1].scanned:
                    waiting.append((found[0], key[1], found[1]))
            if not waiting:
                return
            node = self.node
            with node.lock:
                keys = node.backend.key_snapshot()
                self._scan_for = [
                    (state, member, stream, state.leading_epoch, state.backlog.last_seq)
                    for state, member, stream in waiting
                ]
            self._scan = ShardKeyScan(keys, {state.shard for state, _, _ in waiting}, self._shard_of_key)
        if not self._scan.step(SCAN_SLICE_SECONDS):
            self._wake_copies()
            return
        buckets = self._scan.buckets
        for state, member, stream, epoch, at in self._scan_for:
            if state.streams.get(member) is stream and stream.state == "queued" and state.leading_epoch == epoch:
                stream.snapshot_keys = list(buckets[state.shard])
                stream.snapshot_at = at
                stream.scanned = True
        self._scan = None
        self._scan_for = []
        self._wake_copies()  # copies holding a slot begin now

    def _begin_copy(self, state: _Shard, member: str, stream: _Stream) -> None:
        with self.node.lock:
            gone = state.backlog.first_seq > stream.snapshot_at + 1
        if gone:
            # It waited so long that the changes since its key list was taken are no longer held.
            stream.scanned = False
            self._wake_copies()
            return
        at = stream.snapshot_at
        stream.state = "snapshot"
        stream.copy = CopyProgress(state.shard, member, True, len(stream.snapshot_keys))
        self.counters["resyncs_sent"] += 1
        logger.info(
            "shard {}: copy to {} begins: {} keys (at seq {})", state.shard, member, len(stream.snapshot_keys), at
        )
        self._send(member, ShardMessage(Kind.SNAPSHOT_BEGIN, state.shard, state.leading_epoch, at))

    def _send_snapshot_chunk(self, state: _Shard, member: str, stream: _Stream) -> int:
        """One chunk of the copy under way to ``member``, or its end; returns the key and value bytes sent."""
        if stream.snapshot_keys:
            chunk = stream.snapshot_keys[-SNAPSHOT_KEYS:]
            del stream.snapshot_keys[-SNAPSHOT_KEYS:]
            items = [
                Change(0, Op.PUT, key, bytes(entry.value), entry.version, entry.expires_at_ms)
                for key, entry in self.node.entries(chunk)
            ]
            sent = 0
            if items:
                self._send(member, ShardMessage(Kind.SNAPSHOT_ITEMS, state.shard, state.leading_epoch, 0, 0, [], items))
                sent = sum(len(item.key) + len(item.value) for item in items)
                self.copies.spend(sent, len(items))
                if stream.copy is not None:
                    stream.copy.add(items)
            return sent
        with self.node.lock:
            backlog = state.backlog
            if backlog.first_seq > stream.snapshot_at + 1:
                gone = True  # the changes since the snapshot began are no longer held: start over
            else:
                gone = False
                history = backlog.history_since(stream.snapshot_at)
        if gone:
            self._start_snapshot(state, member, stream)
            return 0
        end = ShardMessage(Kind.SNAPSHOT_END, state.shard, state.leading_epoch, stream.snapshot_at, 0, history)
        self._send(member, end)
        stream.state = "streaming"
        stream.sent_seq = stream.snapshot_at
        copy = stream.copy
        stream.copy = None
        if copy is not None:
            copy.finished(stream.snapshot_at)
            self.copies.finished((state.shard, member), copy.bytes, time.monotonic() - copy.started)
        else:
            self.copies.release((state.shard, member))
        self._stream(state)  # the changes since the key list was taken
        return 0

    # -- messages ---------------------------------------------------------------------------------

    def on_message(self, peer: str, kind: int, payload: bytes, reply: Reply) -> None:
        """A frame from ``peer`` (on either link with it); answers go back through ``reply``."""
        now = time.monotonic()
        if kind == Kind.LEASE:
            for target, answer in self.leases.receive(peer, payload, now):
                self._lease_out.append((reply if target == peer else None, target, answer))
            self._lease_heard = True
            return
        message = ShardMessage.decode(kind, payload)  # PeerProtocolError closes the link
        state = self._shards.get(message.shard)
        if state is None:
            return  # not a shard this node holds a copy of (any more)
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise PeerProtocolError(f"unexpected frame kind {kind}")
        handler(self, peer, state, message, reply)

    def _stand_in(self, peer: str, state: _Shard) -> bool:
        """Whether ``peer`` only stood in for this node while it was down (RF 1: it took the shard over
        with nothing to copy): what this node's log brought back is not to be replaced by its copy.

        Any peer outside the members placement wants for the shard counts: right after a restart
        this node's map may not list the stand-in as leaving yet (gossip has not told it), and a
        copy taken from it then would replace the log's writes."""
        return state.shard in self._recovering and (peer in state.leaving_members or peer not in state.targets)

    def _on_offer(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self._stand_in(peer, state) or self._fence(peer, state, message, reply):
            return
        if state.receiving_snapshot:
            # Any offer means the primary has given up the copy under way (a new primary, or
            # the same one after its link came back, whose stream was replaced).
            self._abandon_copy(state, peer)
        state.following = peer
        state.followed_epoch = message.epoch
        if state.caught_up_to == 0 or message.seq > state.caught_up_to:
            state.caught_up_to = message.seq
        reply(Kind.POSITION, self._position(state, message.epoch).encode())

    def _on_position(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        stream = state.streams.get(peer)
        if stream is None or message.epoch != state.leading_epoch:
            return
        with self.node.lock:
            plan = state.backlog.plan_sync((message.position_epoch, message.seq), message.position_writer)
        if plan.resync:
            self._start_snapshot(state, peer, stream)
        else:
            stream.state = "streaming"
            stream.sent_seq = stream.reported_seq = plan.from_seq - 1
            with self.node.lock:
                backlog = state.backlog
                current = stream.sent_seq >= backlog.last_seq
                history = backlog.history_since(stream.sent_seq) if current else []
            if current:
                # Already holds every change (an idle shard): an empty APPEND confirms it, so a
                # member still copying the shard (a learner, a restarted copy) knows it caught up
                # without waiting for the next write, which an idle shard may never get.
                empty = ShardMessage(Kind.APPEND, state.shard, state.leading_epoch, stream.sent_seq, 0, history, [])
                self._send(peer, empty)
            self._stream(state)

    def _on_append(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self._fence(peer, state, message, reply):
            return
        backlog = state.backlog
        if state.following != peer or state.followed_epoch != message.epoch or message.seq != backlog.last_seq:
            # Out of step (a batch lost to a broken link, or a new primary without an offer yet): say where we are.
            reply(Kind.POSITION, self._position(state, message.epoch).encode())
            return
        self.node.apply_replicated(state.shard, message.changes)
        backlog.merge_history(message.history)
        for change in message.changes:
            backlog.record(change)
        self.counters["changes_applied"] += len(message.changes)
        self._applied(state, message.epoch, reply)

    def _on_snapshot_begin(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self._stand_in(peer, state) or self._fence(peer, state, message, reply):
            return
        state.following = peer
        state.followed_epoch = message.epoch
        state.receiving_snapshot = True
        if self.anti_entropy is not None:
            self.anti_entropy.shard_reset(state.shard)
        held = state.backlog.last_seq
        self._copy_generations[state.shard] += 1  # before the drop: a read racing it sees the change
        dropped = self.node.drop_shard(state.shard)
        self._forget_position(state)
        self.counters["resyncs_received"] += 1
        if held > message.seq:
            self.counters["changes_discarded"] += held - message.seq
        self._set_trusted(state.shard, False, time.monotonic())
        self._ready_version += 1  # mid-copy: not ready, whatever the trust
        state.receiving = CopyProgress(state.shard, peer, False)
        logger.info("shard {}: copy from {} begins (dropped {} keys held)", state.shard, peer, dropped)

    def _forget_position(self, state: _Shard) -> None:
        """The copy was emptied: from now on it says it holds nothing (position 0), not where its dropped
        keys had reached. A new primary asking before the copy ends would otherwise stream from that old
        position, and the dropped keys would never be sent again."""
        state.backlog.restart_at(0, [])
        self.leases.set_position(state.shard, state.backlog.position, 0)

    def _abandon_copy(self, state: _Shard, new_primary: str) -> None:
        """An offer of the shard while a copy is under way: that copy ends here (any chunks of it still
        on their way are ignored), what arrived of it is dropped, and the shard starts empty for the
        primary that offered to send whole."""
        self._copy_generations[state.shard] += 1
        self.node.drop_shard(state.shard)
        self._forget_position(state)
        state.receiving_snapshot = False
        self._ready_version += 1
        state.receiving = None
        self.counters["copies_abandoned_received"] += 1
        logger.info(
            "shard {}: copy from {} abandoned: {} offered the shard and will send it again",
            state.shard,
            state.following,
            new_primary,
        )

    def _on_snapshot_items(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self._fence(peer, state, message, reply):
            return
        if state.receiving_snapshot and state.following == peer:
            self.node.apply_replicated(state.shard, message.changes)
            if state.receiving is not None:
                state.receiving.add(message.changes)

    def _on_snapshot_end(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self._fence(peer, state, message, reply) or not state.receiving_snapshot or state.following != peer:
            return
        state.receiving_snapshot = False
        self._ready_version += 1
        state.backlog.restart_at(message.seq, message.history)
        if state.receiving is not None:
            state.receiving.finished(message.seq)
            state.receiving = None
        self._applied(state, message.epoch, reply)

    def _on_ack(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        tracker = state.tracker
        progress = tracker.followers.get(peer)
        before = progress.acked_seq if progress is not None else 0
        if message.epoch == state.leading_epoch and tracker.acknowledge(peer, message.seq):
            now = time.monotonic()
            with self.node.lock:  # the feed marks changes on any thread, under it
                marks = state.lag_marks
                marks.acknowledged(before, message.seq, now, self.lag)
                marks.trim(min(follower.acked_seq for follower in tracker.followers.values()))
            self._release_waiting()

    def _on_read(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        """A primary's quorum read: this copy's entry of the key, and where this copy of the shard is."""
        if len(message.changes) != 1:
            raise PeerProtocolError("READ names one key")
        key = message.changes[0].key
        found = self.node.entries([key])
        with self.node.lock:
            epoch, seq = state.backlog.position
            writer = state.backlog.writer
        if found:
            entry = found[0][1]
            change = Change(seq, Op.PUT, key, bytes(entry.value), entry.version, entry.expires_at_ms)
        else:
            change = Change(seq, Op.DELETE, key, b"", 0, 0)
        answer = ShardMessage(
            Kind.READ_REPLY, state.shard, message.epoch, message.seq, epoch, changes=[change], position_writer=writer
        )
        reply(Kind.READ_REPLY, answer.encode())

    def _on_read_reply(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        ticket = self._reads.get(message.seq)
        if ticket is None or ticket.round is None or ticket.shard != state.shard or len(message.changes) != 1:
            return  # answered too late (the read was settled), or not ours
        change = message.changes[0]
        with self.node.lock:
            # On this node's own log, at or before its end: an earlier state of this copy, never newer.
            plan = state.backlog.plan_sync((message.position_epoch, change.seq), message.position_writer)
        version = change.version if change.op == Op.PUT else 0
        copy = Copy(peer, version, change.value, change.expires_at_ms, behind=not plan.diverged)
        if ticket.round.answer(copy) and ticket.round.complete:
            self._release_waiting()

    def _on_anti_entropy(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if self.anti_entropy is not None:
            self.anti_entropy.on_message(peer, state, message, reply)

    def _on_fenced(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if state.leading_epoch and message.epoch > state.leading_epoch:
            self.counters["fenced"] += 1
            logger.warning("shard {}: {} follows epoch {} now; stepping down", state.shard, peer, message.epoch)
            self._send_all(self.leases.release(state.shard, time.monotonic()))
            self._stop_leading(state, "fenced by a newer epoch")
            self._publish_primaries()

    def _fence(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> bool:
        """Refuse a message from a primary of an epoch older than this node's term; True when refused."""
        term = max(self.leases.epoch(state.shard), state.followed_epoch)
        if message.epoch < term or state.leading_epoch:
            answer = ShardMessage(Kind.FENCED, state.shard, max(term, state.leading_epoch))
            reply(Kind.FENCED, answer.encode())
            return True
        return False

    def _position(self, state: _Shard, epoch: int) -> ShardMessage:
        """POSITION: where this copy of the shard is, and which primary wrote its last change."""
        backlog = state.backlog
        epoch_of_last, seq = backlog.position
        return ShardMessage(Kind.POSITION, state.shard, epoch, seq, epoch_of_last, position_writer=backlog.writer)

    def _applied(self, state: _Shard, epoch: int, reply: Reply) -> None:
        position = state.backlog.position
        self.leases.set_position(state.shard, position, state.backlog.writer)
        if state.caught_up_to and position[1] >= state.caught_up_to:
            state.caught_up_to = 0
            self._set_trusted(state.shard, True, time.monotonic())
        ack = ShardMessage(Kind.ACK, state.shard, epoch, position[1]).encode()
        log = self._log_durable() if self._log_durable is not None else None
        if log is not None and log[0] and log[1] > log[2]:
            needed = log[1]  # fsync mode: acknowledge what the disk holds, not what memory does
            self._acks_held.append((needed, lambda: reply(Kind.ACK, ack)))
        else:
            reply(Kind.ACK, ack)

    def _release_acks(self) -> None:
        if not self._acks_held or self._log_durable is None:
            return
        durable = self._log_durable()[2]
        still = []
        for needed, send in self._acks_held:
            if needed <= durable:
                send()
            else:
                still.append((needed, send))
        self._acks_held = still

    # -- sending ---------------------------------------------------------------------------------

    def _send(self, peer: str, message: ShardMessage) -> None:
        if self.peers is not None:
            self.peers.send(peer, message.kind, message.encode())

    def _send_lease(self, peer: str, payload: bytes) -> None:
        if self.peers is not None:
            self.peers.send(peer, Kind.LEASE, payload)

    def _send_all(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Lease messages leave at the end of the reactor turn, once the votes behind them are on disk."""
        self._lease_out.extend((None, peer, payload) for peer, payload in messages)

    def _end_of_turn(self) -> None:
        """Make this turn's votes durable in one write, then send the lease messages and act on the events.

        Lease rounds for many shards arrive in one turn; saving each grant apart cost
        a file write and two fsyncs per shard on the reactor, enough to stall it past
        the leases it was renewing.
        """
        out = self._lease_out
        if out or self.leases.events:
            self._store.flush()  # no grant leaves and no lease is acted on before it is on disk
            self._lease_out = []
            for reply, peer, payload in out:
                if reply is not None:
                    reply(Kind.LEASE, payload)
                else:
                    self._send_lease(peer, payload)
            self._handle_lease_events()
        if self._lease_heard:
            # A grant or a release heard this turn changes who this node knows leads a shard:
            # route by it now. Waiting for the next tick left a voter redirecting clients to a
            # holder that had released, and the holder redirecting them back, for up to a tick.
            # Renewals change nothing routing reads, and are most of the traffic: skip those turns.
            self._lease_heard = False
            if self.leases.routing_changes != self._routing_seen:
                self._routing_seen = self.leases.routing_changes
                self._publish_primaries()
        self._stream_unsent()
        self._pump_copies()

    # -- what others should know -------------------------------------------------------------------

    def _publish_primaries(self) -> None:
        now = time.monotonic()
        primaries = dict(self._gossip_leads)
        electing: set[int] = set()
        leases = self.leases
        for shard, state in self._shards.items():
            # What lease traffic says beats gossip; without it (this node's last grant went to a
            # candidate that lost, so the winner's renewals are refused here) gossip's word stands.
            if state.leading_epoch and leases.holds_lease(shard, now):
                primaries[shard] = self.node_id
                continue
            holder = leases.known_holder(shard, now)
            if holder is not None:
                primaries[shard] = holder
                continue
            claimed = primaries.get(shard)
            stale = claimed is not None and claimed in (self.node_id, leases.released_holder(shard))
            if stale:
                # Gossip lags behind this node's own leadership, or behind a release this node saw:
                # without the entry, the redirect names placement's preferred primary.
                del primaries[shard]
            if leases.campaigning(shard) or (state.members[:1] == (self.node_id,) and (claimed is None or stale)):
                # This node is running the election, or is the preferred primary with no one else
                # named, which campaigns as soon as it knows of no live lease: the primary is being
                # decided here. Redirecting by gossip's older word sent clients between two nodes
                # that each named the other (a candidate and the voter that granted it) until
                # redis-py gave up.
                electing.add(shard)
        # The lease core may name this node the holder (known_holder) a turn before it starts
        # leading; comparing the primaries alone would then never publish the shard in its lead
        # bitmap, and nodes without a copy of the shard (RF 1: all others) would never learn its primary.
        frozen = frozenset(electing)
        if (
            primaries != self._published
            or frozen != self._published_electing
            or self._led_version != self._published_led_version
            or self._ready_version != self._published_ready_version
        ):
            self._published = primaries
            self._published_electing = frozen
            self._published_led_version = self._led_version
            self._published_ready_version = self._ready_version
            self._primaries_changed(primaries, frozen)

    def info(self) -> dict[str, int | str]:
        """INFO replication: roles, positions, lag (reactor thread, or any thread for a rough view)."""
        # list() copies each dict in one step under the GIL: /metrics reads this from the
        # ops thread while the reactor may add or drop a shard or a follower.
        shards = list(self._shards.values())
        leading = [state for state in shards if state.leading_epoch]
        following = [state for state in shards if not state.leading_epoch]
        lag = 0
        for state in leading:
            last = state.backlog.last_seq
            for progress in list(state.tracker.followers.values()):
                lag = max(lag, last - progress.acked_seq)
        result: dict[str, int | str] = {
            "role": "primary" if leading else "follower",
            "shards_primary": len(leading),
            "shards_follower": len(following),
            "write_quorum": self.options.write_quorum,
            "read_quorum": self.options.read_quorum,
            "max_follower_lag_changes": lag,
            "links_up": sum(
                1 for peer in _peer_ids(shards, self.node_id) if self.peers is not None and self.peers.is_up(peer)
            ),
            # Grants every lease needs at least, and the member count it comes from (leases.py).
            "quorum_floor": self.leases.quorum_floor,
            "members_high_water": self._members.high_water,
            # Changes numbered in the backlogs of every shard held here, led or followed: it only
            # grows while the shards stay (INFO replication's master_repl_offset).
            "repl_offset": sum(state.backlog.last_seq for state in shards),
            "repl_backlog_size": self.options.backlog_bytes,
        }
        states = [stream.state for state in leading for stream in list(state.streams.values())]
        names = ("offered", "queued", "snapshot", "streaming")
        result.update({f"streams_{name}": states.count(name) for name in names})
        result.update(self.counters)
        result.update({f"lease_{name}": value for name, value in self.leases.counters.items()})
        histogram = self.lag
        # Microseconds (INFO values are integers); quantiles are bucket bounds, at most 19% high.
        result["lag_samples"] = histogram.samples
        result["lag_p50_us"] = round(histogram.quantile(0.5) * 1e6)
        result["lag_p99_us"] = round(histogram.quantile(0.99) * 1e6)
        result["lag_max_us"] = round(histogram.max * 1e6)
        result.update({f"follower_gap_changes_{peer}": gap for peer, gap in sorted(self.follower_gaps().items())})
        if self.anti_entropy is not None:
            result.update(self.anti_entropy.info())
        result.update(self.copy_info(shards))
        return result

    def copy_info(self, shards: list[_Shard]) -> dict[str, int | str]:
        """INFO replication's shard copies: counters, then one line per copy sent or received now."""
        copies = self.copies
        totals = copies.totals
        receiving = [state for state in shards if state.receiving_snapshot and state.receiving is not None]
        result: dict[str, int | str] = {
            "copies_sending": copies.in_flight,
            "copies_queued": copies.queued,
            "copies_receiving": len(receiving),
            "copies_completed": totals.completed,
            "copies_abandoned": totals.abandoned,
            "copy_keys": totals.keys,
            "copy_bytes": totals.bytes,
            "copy_last_rate_bytes_per_sec": round(totals.last_rate),
            "move_bandwidth": copies.rate,
            "move_concurrency": copies.slots,
        }
        for index, move in enumerate(self.moves()):
            result[f"move_out_{index}"] = ",".join(f"{name}={value}" for name, value in move.items())
        for index, state in enumerate(receiving):
            copy = state.receiving
            assert copy is not None
            result[f"move_in_{index}"] = f"shard={state.shard},from={copy.peer},keys={copy.keys},bytes={copy.bytes}"
        return result

    def moves(self) -> list[dict[str, int | str]]:
        """The shard copies this node sends now or has queued, under way first (INFO, the dashboard)."""
        moves: list[dict[str, int | str]] = []
        for key in self.copies.pending():
            assert isinstance(key, tuple)
            found = self._copy_stream(key)
            if found is None:
                continue
            copy = found[1].copy
            keys, total, sent = (copy.keys, copy.keys_total, copy.bytes) if copy is not None else (0, 0, 0)
            moves.append(
                {
                    "shard": key[0],
                    "to": key[1],
                    "state": "copying" if copy is not None else "queued",
                    "keys": keys,
                    "keys_total": total,
                    "bytes": sent,
                }
            )
        return moves

    def follower_gaps(self) -> dict[str, int]:
        """Per follower: the changes to the shards this node leads that it has yet to acknowledge (all shards).

        A follower not yet answered this term (its position unknown) counts nothing for that shard;
        one being sent a snapshot counts every change it acknowledged none of.
        """
        gaps: dict[str, int] = {}
        for state in list(self._shards.values()):
            if not state.leading_epoch:
                continue
            last = state.backlog.last_seq
            streams = state.streams
            for peer, progress in list(state.tracker.followers.items()):
                stream = streams.get(peer)
                if stream is None or stream.state == "offered":
                    held = last
                elif stream.state == "streaming":
                    held = max(progress.acked_seq, stream.reported_seq)
                else:
                    held = progress.acked_seq
                gaps[peer] = gaps.get(peer, 0) + max(0, last - held)
        return gaps


def _copy_elsewhere(shard_map: ShardMap, shard: int, node_id: str) -> bool:
    """Whether ``shard`` has data elsewhere that this node, gaining it, must copy first.

    It does when the map makes this node a learner of it (enough other members hold a complete
    copy), or another member leads it. Not when other copies are too few to stage a move (a new
    cluster whose members are still meeting): an untrusted member there would only keep the
    shard from electing a primary.
    """
    if node_id in shard_map.learners[shard]:
        return True
    return any(shard in member.lead for name, member in shard_map.members.items() if name != node_id)


def _peer_ids(shards: list[_Shard], node_id: str) -> set[str]:
    """The other members of these shards' replica sets."""
    return {peer for state in shards for peer in state.members if peer != node_id}


class _Holder:
    """What waits for replication: a pipeline holding replies (aegiskv.server.pipeline)."""

    def release(self) -> None:
        raise NotImplementedError


class Ticket:
    """A write's held reply: the shards it wrote (seq and epoch), and until when its quorum may take.

    A plain class with slots, not a dataclass: one is made per write that waits for a quorum."""

    __slots__ = ("deadline", "writes")

    def __init__(self, writes: Writes, deadline: float) -> None:
        self.writes = writes
        self.deadline = deadline


@dataclass(frozen=True)
class WaitTicket:
    """WAIT's held reply: the connection's writes when it ran, and until when it waits."""

    hold: WaitRequest
    written: Written
    deadline: float


@dataclass
class ReadTicket:
    """A quorum read's held reply; ``round`` is set once the followers were asked."""

    hold: QuorumRead
    shard: int
    epoch: int
    request_id: int = 0
    round: ReadRound | None = None
    deadline: float = 0.0


def _lost_leadership(shard: int) -> CommandError:
    return CommandError(
        ErrorKind.TRYAGAIN,
        f"this node stopped being the primary of shard {shard} before the write was confirmed; "
        "it may or may not have been applied",
    )


def _consume(path: str) -> bool:
    """Whether the marker file ``path`` existed; it is removed (it speaks of one start only)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


_Handler = Callable[[ReplicaManager, str, _Shard, ShardMessage, Reply], None]
_HANDLERS: dict[int, _Handler] = {
    Kind.OFFER: ReplicaManager._on_offer,
    Kind.POSITION: ReplicaManager._on_position,
    Kind.APPEND: ReplicaManager._on_append,
    Kind.ACK: ReplicaManager._on_ack,
    Kind.FENCED: ReplicaManager._on_fenced,
    Kind.SNAPSHOT_BEGIN: ReplicaManager._on_snapshot_begin,
    Kind.SNAPSHOT_ITEMS: ReplicaManager._on_snapshot_items,
    Kind.SNAPSHOT_END: ReplicaManager._on_snapshot_end,
    Kind.READ: ReplicaManager._on_read,
    Kind.READ_REPLY: ReplicaManager._on_read_reply,
    Kind.AE_DIGEST: ReplicaManager._on_anti_entropy,
    Kind.AE_DIFF: ReplicaManager._on_anti_entropy,
    Kind.AE_REPAIR: ReplicaManager._on_anti_entropy,
}
