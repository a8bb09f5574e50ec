"""A deterministic simulation of the lease core (aegiskv/cluster/leases.py) with a replication model.

Test support for tests/test_leases.py and bench/lease_failover.py. Every node
is a real :class:`ShardLeases`, exchanging real encoded lease messages over a
simulated network. Time is *real* time, a float stepped through a queue of
events; each node reads its own clock, ``real * (1 + drift) + offset``, so
rates differ (the offsets only make sure nothing depends on clocks agreeing).

Faults (each scheduled at a real time, for a duration):

* ``Partition``: directed links that deliver nothing (asymmetric when only
  one direction is listed);
* ``Pause``: a node processes nothing (SIGSTOP); what arrives meanwhile waits
  in its inbox, and on resume its clock has moved on;
* ``Crash``: the node's volatile state goes (its :class:`MemoryVoteStore`
  stays: the votes are durable); its replication log stays or goes
  (``keep_log``); it restarts with ``restarted=True``, untrusted for the
  shards whose log it lost until a holder resynchronises it;
* ``ViewSplit``: a partition the membership notices: the links between
  ``side`` and the other nodes deliver nothing, and every node's replica sets
  shrink to the members on its own side, as gossip declaring the others dead
  does (the placement of a cluster with RF = N). No node's quorum floor
  changes: dead is not departed (aegiskv.cluster.leases, "The quorum floor").
  With RF < N a real placement would also *add* members from its own side,
  which this does not model (and which the floor does not cover);
* ``Lossy``: a loss rate on every link; ``Slow``: extra delay on some
  directed links (a reply path slower than the request path is what exposes
  a lease counted from when a reply arrived instead of when the request left).

Lease messages are datagrams: one still in flight when its receiver restarts
reaches the new process. Replication travels on connections, as the real
stream will: what was sent to a previous incarnation of a node is dropped.

Replication, simply: the holder appends each write ``(epoch, write id)`` to
its log and sends followers ``Append``\\ s (Raft's: a follower takes them only
from an epoch at least its own term and the newest epoch it took appends from,
in order, after a matching previous entry) or, once one refuses, the whole log
(``Resync``). A write is
acknowledged when a majority of the replica set has it *and* the holder holds
its lease at that moment. A new holder first appends a no-op of its epoch, so
positions show who has heard from it.

The invariants are checked as the run goes, and every violation is recorded
in :attr:`LeaseSim.violations` with the real time at which it happened:

1. no two nodes hold a lease for the same shard at the same real time (after
   every event, each node asked at its own clock's reading);
2. epochs only grow: each node's term per shard, across restarts, and the
   epochs of successive holders of a shard;
3. every write acknowledged is in the log of every later holder.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aegiskv.cluster.leases import (
    LeaseTiming,
    MemoryVoteStore,
    Position,
    ShardLeases,
    majority_of,
    majority_of_count,
)
from aegiskv.cluster.replication import writer_tag

Entry = tuple[int, int]  # (epoch, write id); write id 0 .. for no-ops is negative


# -- faults ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    start: float
    duration: float
    blocked: frozenset[tuple[str, str]]  # (sender, receiver) pairs that deliver nothing


@dataclass(frozen=True)
class Pause:
    start: float
    duration: float
    node: str


@dataclass(frozen=True)
class Crash:
    start: float
    duration: float  # down for this long, then restarted
    node: str
    keep_log: bool


@dataclass(frozen=True)
class Lossy:
    start: float
    duration: float
    loss: float


@dataclass(frozen=True)
class Slow:
    start: float
    duration: float
    extra_delay: float
    links: frozenset[tuple[str, str]]  # (sender, receiver) pairs slowed down


@dataclass(frozen=True)
class ViewSplit:
    start: float
    duration: float
    side: frozenset[str]  # these nodes on one side, the others on the other


@dataclass(frozen=True)
class Handoff:
    """At ``start`` ``node`` releases every lease it holds (a drain, a hand-over to a caught-up
    member: aegiskv.server.replicas); ``duration`` is unused, as for any one-off act."""

    start: float
    duration: float
    node: str


Fault = Partition | Pause | Crash | Lossy | Slow | ViewSplit | Handoff


# -- replication messages (Python objects: only the lease messages are bytes) ---------------


@dataclass(frozen=True)
class Append:
    shard: int
    epoch: int
    previous_index: int  # entries before this one must match ...
    previous: Entry | None  # ... ending with this entry
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Resync:
    shard: int
    epoch: int
    log: tuple[Entry, ...]


@dataclass(frozen=True)
class AppendReply:
    shard: int
    epoch: int  # the epoch of the append answered
    ok: bool
    match: int  # entries the follower now shares with the holder (when ok)
    resync: bool  # the follower could not take it: send the whole log


Message = bytes | Append | Resync | AppendReply


@dataclass
class AckedWrite:
    shard: int
    epoch: int
    index: int  # 1-based position in the log
    write_id: int
    at: float  # real time


@dataclass
class _Holding:
    """What a holder keeps to replicate one shard."""

    epoch: int
    match: dict[str, int]  # follower -> entries known to be on it
    resync: set[str] = field(default_factory=set)
    pending: list[tuple[int, int]] = field(default_factory=list)  # (index, write id) waiting for a majority


@dataclass
class SimNode:
    node_id: str
    drift: float
    offset: float
    store: MemoryVoteStore = field(default_factory=MemoryVoteStore)
    leases: ShardLeases | None = None  # None while crashed
    logs: dict[int, list[Entry]] = field(default_factory=dict)
    holding: dict[int, _Holding] = field(default_factory=dict)
    paused: bool = False
    inbox: list[tuple[str, Message]] = field(default_factory=list)
    incarnation: int = 0
    # Newest epoch each shard took appends from: an older holder's append still
    # in flight must not cut what a newer one wrote. (Not stored: after a
    # restart the log's last entry gives it back.)
    followed: dict[int, int] = field(default_factory=dict)
    terms: dict[int, int] = field(default_factory=dict)  # last term seen, for the epochs-grow check
    acquired: dict[int, int] = field(default_factory=dict)  # last epoch held per shard

    def clock(self, real: float) -> float:
        return real * (1 + self.drift) + self.offset

    @property
    def up(self) -> bool:
        return self.leases is not None


class LeaseSim:
    """N nodes, S shards, RF replicas per shard, stepped in real time. The same arguments give the same run."""

    def __init__(
        self,
        nodes: int = 3,
        shards: int = 3,
        replication_factor: int = 3,
        timing: LeaseTiming | None = None,
        seed: int = 1,
        drifts: list[float] | None = None,
        faults: list[Fault] | tuple[Fault, ...] = (),
        tick: float = 0.01,
        delay: float = 0.001,
        jitter: float = 0.002,
        write_interval: float | None = 0.05,
        leases_factory: Callable[..., ShardLeases] = ShardLeases,
        restarted_at_start: bool = False,
        idle_shards: frozenset[int] = frozenset(),
        quorum_floor: int | None = None,
    ) -> None:
        """``quorum_floor``: every node's (default: from the replication factor and all N nodes seen)."""
        self.timing = timing or LeaseTiming()
        self.rng = random.Random(seed)
        self.tick_interval = tick
        self.delay = delay
        self.jitter = jitter
        self.write_interval = write_interval
        self.leases_factory = leases_factory
        self.now = 0.0
        self._queue: list[tuple[float, int, str, tuple[object, ...]]] = []
        self._sequence = itertools.count()
        self._write_ids = itertools.count(1)
        self._noop_ids = itertools.count(-1, -1)
        self.blocked: list[frozenset[tuple[str, str]]] = []
        self.loss: list[float] = []
        self.slow: list[Slow] = []
        self.splits: list[ViewSplit] = []
        self.epoch_writers: dict[tuple[int, int], str] = {}  # (shard, epoch) -> the node that acquired it
        if quorum_floor is None:
            quorum_floor = majority_of_count(min(replication_factor, nodes))
        self.quorum_floor = quorum_floor
        self.violations: list[str] = []
        self.acked: list[AckedWrite] = []
        self.acquisitions: list[tuple[float, int, str, int]] = []  # (real time, shard, node, epoch)
        self.losses: list[tuple[float, int, str, int]] = []
        self.unserved_writes = 0
        self.delivered = 0
        self.dropped = 0
        self.lease_messages = 0
        ids = [f"n{index}" for index in range(nodes)]
        max_drift = self.timing.max_clock_drift / 2
        if drifts is None:
            drifts = [self.rng.uniform(-max_drift, max_drift) for _ in ids]
        assert len(drifts) == nodes and all(abs(d) <= max_drift for d in drifts)
        self.nodes = {
            node_id: SimNode(node_id, drift, self.rng.uniform(0, 1000)) for node_id, drift in zip(ids, drifts)
        }
        # R(s): consecutive nodes from a shard-dependent start, so every node is
        # some shard's preferred primary.
        self.replica_sets = {
            shard: tuple(ids[(shard + k) % nodes] for k in range(min(replication_factor, nodes)))
            for shard in range(shards)
        }
        for node in self.nodes.values():
            node.logs = {shard: [] for shard, replicas in self.replica_sets.items() if node.node_id in replicas}
            self._start(node, restarted=restarted_at_start)
            self._schedule(self.rng.uniform(0, tick), "tick", node.node_id)
        if write_interval is not None:
            # Idle shards get no writes: positions stay equal there, so the
            # up-to-date rule does not hide a voter rule that went wrong.
            for shard in set(self.replica_sets) - idle_shards:
                self._schedule(self.rng.uniform(0, write_interval), "write", shard)
        for fault in faults:
            self._schedule(fault.start, "fault_start", fault)
            self._schedule(fault.start + fault.duration, "fault_end", fault)

    # -- nodes ----------------------------------------------------------------------------------

    def my_shards(self, node: SimNode) -> dict[int, tuple[str, ...]]:
        """The replica sets as ``node`` sees them: without the members a ViewSplit put on the other side."""
        return {
            shard: tuple(peer for peer in replicas if self._sees(node.node_id, peer))
            for shard, replicas in self.replica_sets.items()
            if node.node_id in replicas
        }

    def _sees(self, node_id: str, peer: str) -> bool:
        return all((node_id in split.side) == (peer in split.side) for split in self.splits)

    def _start(self, node: SimNode, restarted: bool, untrusted: tuple[int, ...] = ()) -> None:
        now = node.clock(self.now)
        leases = self.leases_factory(
            node.node_id, self.timing, node.store, now, random.Random(self.rng.random()), restarted=restarted
        )
        leases.set_quorum_floor(self.quorum_floor)
        leases.set_replica_sets(self.my_shards(node), now)
        for shard, log in node.logs.items():
            leases.set_position(shard, position_of(log), self._writer_of(shard, log))
            node.followed[shard] = position_of(log)[0]
        for shard in untrusted:
            leases.set_trusted(shard, False, now)
        node.leases = leases
        self._check_terms(node)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.leases = None
        node.holding.clear()
        node.inbox.clear()
        node.paused = False

    def restart(self, node_id: str, keep_log: bool = True) -> None:
        node = self.nodes[node_id]
        if node.up:
            return
        lost: tuple[int, ...] = ()
        if not keep_log:
            lost = tuple(node.logs)
            node.logs = {shard: [] for shard in node.logs}
        node.incarnation += 1
        self._start(node, restarted=True, untrusted=lost)

    def holder(self, shard: int) -> str | None:
        """The node holding ``shard``'s lease now (the first found; the invariant says there is at most one)."""
        for node in self.nodes.values():
            if node.leases is not None and node.leases.holds_lease(shard, node.clock(self.now)):
                return node.node_id
        return None

    # -- the event loop -----------------------------------------------------------------------------

    def _schedule(self, at: float, kind: str, *args: object) -> None:
        heapq.heappush(self._queue, (at, next(self._sequence), kind, args))

    def run_until(self, time: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= time:
            at, _, kind, args = heapq.heappop(queue)
            self.now = at
            self._dispatch(kind, args)
            self._check_one_holder()
        self.now = max(self.now, time)

    def run_while(self, condition: Callable[[], bool], limit: float, step: float = 0.01) -> bool:
        """Run until ``condition()`` is false (True) or ``limit`` more seconds passed (False)."""
        deadline = self.now + limit
        while condition():
            if self.now >= deadline:
                return False
            self.run_until(min(deadline, self.now + step))
        return True

    def _dispatch(self, kind: str, args: tuple[object, ...]) -> None:
        if kind == "deliver":
            source, target, message, incarnation = args
            assert isinstance(source, str) and isinstance(target, str) and isinstance(incarnation, int)
            self._deliver(source, target, message, incarnation)  # type: ignore[arg-type]
        elif kind == "tick":
            (node_id,) = args
            assert isinstance(node_id, str)
            node = self.nodes[node_id]
            self._schedule(self.now + self.tick_interval, "tick", node_id)
            if node.up and not node.paused:
                self._tick(node)
        elif kind == "write":
            (shard,) = args
            assert isinstance(shard, int) and self.write_interval is not None
            self._schedule(self.now + self.write_interval, "write", shard)
            self._write(shard)
        elif kind == "fault_start":
            self._fault(args[0], starting=True)  # type: ignore[arg-type]
        elif kind == "fault_end":
            self._fault(args[0], starting=False)  # type: ignore[arg-type]
        else:
            raise AssertionError(kind)

    def _fault(self, fault: Fault, starting: bool) -> None:
        if isinstance(fault, Partition):
            if starting:
                self.blocked.append(fault.blocked)
            else:
                self.blocked.remove(fault.blocked)
        elif isinstance(fault, Lossy):
            if starting:
                self.loss.append(fault.loss)
            else:
                self.loss.remove(fault.loss)
        elif isinstance(fault, Slow):
            if starting:
                self.slow.append(fault)
            else:
                self.slow.remove(fault)
        elif isinstance(fault, Pause):
            node = self.nodes[fault.node]
            if starting:
                node.paused = node.up
            elif node.paused:
                self._resume(node)
        elif isinstance(fault, Crash):
            if starting:
                self.crash(fault.node)
            else:
                self.restart(fault.node, keep_log=fault.keep_log)
        elif isinstance(fault, Handoff):
            node = self.nodes[fault.node]
            if starting and node.up and not node.paused:
                leases = node.leases
                assert leases is not None
                for shard in list(node.holding):
                    for target, payload in leases.release(shard, node.clock(self.now)):
                        self._send(node.node_id, target, payload)
                self._after_lease_work(node)
        elif isinstance(fault, ViewSplit):
            cut = frozenset((a, b) for a in self.nodes for b in self.nodes if (a in fault.side) != (b in fault.side))
            if starting:
                self.blocked.append(cut)
                self.splits.append(fault)
            else:
                self.blocked.remove(cut)
                self.splits.remove(fault)
            for node in self.nodes.values():
                if node.up and not node.paused:  # a paused node sees the change when it resumes
                    self._see_view(node)

    def _see_view(self, node: SimNode) -> None:
        """Membership changed what ``node`` sees: its replica sets follow (a holder dropped from one steps down)."""
        leases = node.leases
        assert leases is not None
        for target, payload in leases.set_replica_sets(self.my_shards(node), node.clock(self.now)):
            self._send(node.node_id, target, payload)
        self._after_lease_work(node)

    def _resume(self, node: SimNode) -> None:
        """SIGCONT: the loop runs its timers and reads what queued up, in either order."""
        node.paused = False
        if node.up:
            self._see_view(node)
        waiting, node.inbox = node.inbox, []
        tick_first = self.rng.random() < 0.5
        if tick_first:
            self._tick(node)
        for source, message in waiting:
            if node.up and not node.paused:
                self._handle(node, source, message)
        if not tick_first and node.up:
            self._tick(node)

    # -- network ------------------------------------------------------------------------------------

    def _send(self, source: str, target: str, message: Message) -> None:
        if isinstance(message, bytes):
            self.lease_messages += 1
        loss = max(self.loss, default=0.0)
        if loss and self.rng.random() < loss:
            self.dropped += 1
            return
        extra = max((slow.extra_delay for slow in self.slow if (source, target) in slow.links), default=0.0)
        at = self.now + self.delay + self.rng.random() * self.jitter + extra
        self._schedule(at, "deliver", source, target, message, self.nodes[target].incarnation)

    def _deliver(self, source: str, target: str, message: Message, incarnation: int) -> None:
        if any((source, target) in blocked for blocked in self.blocked):
            self.dropped += 1
            return
        node = self.nodes[target]
        if not node.up or (incarnation != node.incarnation and not isinstance(message, bytes)):
            self.dropped += 1
            return
        if node.paused:
            node.inbox.append((source, message))
            return
        self.delivered += 1
        self._handle(node, source, message)

    def _handle(self, node: SimNode, source: str, message: Message) -> None:
        leases = node.leases
        assert leases is not None
        if isinstance(message, bytes):
            for target, payload in leases.receive(source, message, node.clock(self.now)):
                self._send(node.node_id, target, payload)
            self._after_lease_work(node)
        elif isinstance(message, (Append, Resync)):
            self._follow(node, source, message)
        else:
            self._on_append_reply(node, source, message)

    def _tick(self, node: SimNode) -> None:
        leases = node.leases
        assert leases is not None
        for target, payload in leases.tick(node.clock(self.now)):
            self._send(node.node_id, target, payload)
        self._after_lease_work(node)
        self._replicate(node)

    def _after_lease_work(self, node: SimNode) -> None:
        leases = node.leases
        assert leases is not None
        for event in leases.events:
            if event.kind == "acquired":
                self._acquired(node, event.shard, event.epoch)
            else:
                node.holding.pop(event.shard, None)
                self.losses.append((self.now, event.shard, node.node_id, event.epoch))
        leases.events.clear()
        self._check_terms(node)

    # -- replication --------------------------------------------------------------------------------

    def _writer_of(self, shard: int, log: list[Entry]) -> int:
        """The writer tag of a log's last entry, as a real node's backlog knows it."""
        if not log:
            return 0
        writer = self.epoch_writers.get((shard, log[-1][0]))
        return writer_tag(writer) if writer is not None else 0

    def _acquired(self, node: SimNode, shard: int, epoch: int) -> None:
        leases = node.leases
        assert leases is not None
        last = node.acquired.get(shard, 0)
        if epoch <= last:
            self._violation(f"{node.node_id} acquired shard {shard} at epoch {epoch} after holding {last}")
        node.acquired[shard] = epoch
        self.epoch_writers[(shard, epoch)] = node.node_id
        previous = [a for a in self.acquisitions if a[1] == shard]
        if previous and previous[-1][3] >= epoch:
            self._violation(f"shard {shard}: epoch {epoch} acquired by {node.node_id} after epoch {previous[-1][3]}")
        self.acquisitions.append((self.now, shard, node.node_id, epoch))
        log = node.logs[shard]
        missing = [w for w in self.acked if w.shard == shard and not _has(log, w)]
        if missing:
            self._violation(
                f"{node.node_id} acquired shard {shard} at epoch {epoch} without acknowledged writes "
                f"{[(w.epoch, w.index, w.write_id) for w in missing[:5]]}"
            )
        followers = [peer for peer in self.replica_sets[shard] if peer != node.node_id]
        # Optimistic: assume followers hold our log up to its end; a follower
        # that does not refuses the first append and is resynchronised.
        node.holding[shard] = _Holding(epoch, dict.fromkeys(followers, len(log)))
        log.append((epoch, next(self._noop_ids)))
        leases.set_position(shard, position_of(log), self._writer_of(shard, log))

    def _write(self, shard: int) -> None:
        holder_id = self.holder(shard)
        node = self.nodes[holder_id] if holder_id is not None else None
        if node is None or node.paused or shard not in node.holding:
            self.unserved_writes += 1
            return
        leases = node.leases
        assert leases is not None
        holding = node.holding[shard]
        log = node.logs[shard]
        write_id = next(self._write_ids)
        log.append((holding.epoch, write_id))
        leases.set_position(shard, position_of(log), self._writer_of(shard, log))
        holding.pending.append((len(log), write_id))
        self._acknowledge(node, shard)

    def _replicate(self, node: SimNode) -> None:
        leases = node.leases
        assert leases is not None
        now = node.clock(self.now)
        for shard, holding in node.holding.items():
            if not leases.holds_lease(shard, now):
                continue
            log = node.logs[shard]
            for follower, match in holding.match.items():
                if follower in holding.resync:
                    self._send(node.node_id, follower, Resync(shard, holding.epoch, tuple(log)))
                elif match < len(log) or self.rng.random() < 0.1:  # now and then an empty one: a heartbeat
                    previous = log[match - 1] if match else None
                    entries = tuple(log[match : match + 64])
                    self._send(node.node_id, follower, Append(shard, holding.epoch, match, previous, entries))

    def _follow(self, node: SimNode, source: str, message: Append | Resync) -> None:
        leases = node.leases
        assert leases is not None
        shard = message.shard
        log = node.logs.get(shard)
        if log is None:
            return
        if message.epoch < max(leases.epoch(shard), node.followed.get(shard, 0)):
            # We voted for, or follow, a newer holder: nothing from an older one may land.
            self._send(node.node_id, source, AppendReply(shard, message.epoch, False, 0, False))
            return
        node.followed[shard] = message.epoch
        if isinstance(message, Resync):
            # Keep our log when it already extends theirs (a reordered, older resync).
            if log[: len(message.log)] != list(message.log):
                log[:] = message.log
            leases.set_trusted(shard, True, node.clock(self.now))
            match = len(message.log)
        else:
            start = message.previous_index
            if start > len(log) or (start and log[start - 1] != message.previous):
                self._send(node.node_id, source, AppendReply(shard, message.epoch, False, 0, True))
                return
            for offset, entry in enumerate(message.entries):
                index = start + offset
                if index < len(log):
                    if log[index] == entry:
                        continue
                    del log[index:]  # a conflicting suffix from an older epoch
                log.append(entry)
            match = start + len(message.entries)
        leases.set_position(shard, position_of(log), self._writer_of(shard, log))
        self._send(node.node_id, source, AppendReply(shard, message.epoch, True, match, False))

    def _on_append_reply(self, node: SimNode, source: str, reply: AppendReply) -> None:
        holding = node.holding.get(reply.shard)
        if holding is None or holding.epoch != reply.epoch:
            return  # for an earlier time we held this shard: its match means nothing now
        if reply.ok:
            holding.match[source] = max(holding.match.get(source, 0), reply.match)
            holding.resync.discard(source)
            self._acknowledge(node, reply.shard)
        elif reply.resync:
            holding.resync.add(source)

    def _acknowledge(self, node: SimNode, shard: int) -> None:
        """Acknowledge pending writes that a majority has, if (checked now) we still hold the lease."""
        leases = node.leases
        holding = node.holding[shard]
        assert leases is not None
        if not holding.pending or not leases.holds_lease(shard, node.clock(self.now)):
            return
        majority = majority_of(self.replica_sets[shard])
        counts = sorted(holding.match.values(), reverse=True)
        # The highest index a majority (the holder being one) has.
        safe = counts[majority - 2] if majority >= 2 else len(node.logs[shard])
        while holding.pending and holding.pending[0][0] <= safe:
            index, write_id = holding.pending.pop(0)
            self.acked.append(AckedWrite(shard, holding.epoch, index, write_id, self.now))

    # -- invariants ---------------------------------------------------------------------------------

    def _violation(self, text: str) -> None:
        self.violations.append(f"t={self.now:.4f}: {text}")

    def _check_one_holder(self) -> None:
        for shard in self.replica_sets:
            holders = [
                node.node_id
                for node in self.nodes.values()
                if node.leases is not None and node.leases.holds_lease(shard, node.clock(self.now))
            ]
            if len(holders) > 1:
                self._violation(f"shard {shard} held by {holders} at once")

    def _check_terms(self, node: SimNode) -> None:
        leases = node.leases
        assert leases is not None
        for shard in self.replica_sets:
            term = leases.epoch(shard)
            if term < node.terms.get(shard, 0):
                self._violation(f"{node.node_id}'s term for shard {shard} went from {node.terms[shard]} to {term}")
            node.terms[shard] = term

    def check_final(self) -> None:
        """At the end: every current holder has every acknowledged write."""
        for shard in self.replica_sets:
            holder_id = self.holder(shard)
            if holder_id is None:
                continue
            log = self.nodes[holder_id].logs[shard]
            missing = [w for w in self.acked if w.shard == shard and not _has(log, w)]
            if missing:
                self._violation(f"holder {holder_id} of shard {shard} lacks acknowledged writes {missing[:3]}")


def position_of(log: list[Entry]) -> Position:
    return (log[-1][0], len(log)) if log else (0, 0)


def _has(log: list[Entry], write: AckedWrite) -> bool:
    return len(log) >= write.index and log[write.index - 1][1] == write.write_id


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def failover_time(
    timing: LeaseTiming, seed: int, nodes: int = 3, settle: float = 5.0, limit: float = 30.0, **options: object
) -> tuple[float, float]:
    """Kill shard 0's holder at a random moment after ``settle`` s; seconds until (another holds it,
    a write is acknowledged again). ``math.inf`` when that never happened within ``limit``."""
    sim = LeaseSim(nodes=nodes, shards=1, timing=timing, seed=seed, **options)  # type: ignore[arg-type]
    sim.run_until(settle + sim.rng.uniform(0, timing.lease_duration))
    victim = sim.holder(0)
    assert victim is not None, "no holder before the kill"
    sim.crash(victim)
    killed = sim.now
    acked_before = len(sim.acked)
    sim.run_while(lambda: sim.holder(0) in (None, victim), limit)
    held = sim.now - killed if sim.holder(0) not in (None, victim) else math.inf
    sim.run_while(lambda: len(sim.acked) == acked_before, limit)
    acked = sim.now - killed if len(sim.acked) > acked_before else math.inf
    assert not sim.violations, sim.violations
    return held, acked
