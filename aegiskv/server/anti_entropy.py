"""Anti-entropy rounds between this node and the other copies of its shards: schedule, rounds, repairs.

The digests and their comparison are sans-IO (aegiskv.cluster.anti_entropy,
whose docstring gives the protocol's reasoning); the replication stream is
aegiskv.server.replicas, which hands this module the AE_* messages. Here they
meet the node's keyspace and the reactor:

* **Cycle.** Every ``interval`` seconds (the first at a random point of it, so
  the nodes of a cluster do not cycle together) the node sweeps its keys: the
  key list is copied under the node lock (C speed) with each shard's log
  position, then grouped by shard ``SWEEP_SLICE`` keys per reactor turn.
* **Rounds.** Then, as the primary, it runs one round per shard it leads,
  spread over the first half of the interval. A round's digest is computed
  under the node lock at the shard's log position S, once every change up to
  S was sent to the followers it goes to (the others wait for a later try),
  and sent on the same ordered link. Learners and followers whose stream is
  not running (an offer or a snapshot under way) are skipped. The follower
  computes its digest on receipt, at S (a copy that is elsewhere, recovering,
  or mid-copy answers "not compared"), and answers the buckets that differ.
* **Repairs.** The primary sends each differing bucket's entries as of its
  log position then, again only when the stream to that follower is flushed,
  capped by ``bandwidth`` bytes per second over all repairs; the follower
  replaces what it holds in those buckets. A link that comes back (a
  partition healed, a node restarted) starts a cycle ``LINK_UP_DELAY`` later.

Reactor thread only, except :meth:`info` (any thread, a rough view).
"""

from __future__ import annotations

import random
import time
from binascii import crc_hqx
from collections.abc import Callable
from dataclasses import dataclass, field
from zlib import crc32

from loguru import logger

from aegiskv.backends.base import ValueTooLarge
from aegiskv.cluster import anti_entropy as ae
from aegiskv.cluster.peer_wire import Kind, PeerProtocolError, ShardMessage
from aegiskv.cluster.replication import Change, Op
from aegiskv.cluster.slots import SLOTS
from aegiskv.net.reactor import Reactor
from aegiskv.node.operations import Node
from aegiskv.server.peer_links import Reply
from aegiskv.server.replicas import BATCH_BYTES, WINDOW_BYTES, ReplicaManager, _Shard

TICK_SECONDS = 0.1
SLOT_MASK = SLOTS - 1
SWEEP_SLICE = 4096  # keys grouped per reactor turn: about 5 ms, so clients wait no longer than that
ROUNDS_SPREAD = 0.5  # a cycle's rounds start within this share of the interval
LINK_UP_DELAY = 2.0  # a link back up: the stream's catch-up runs first, then a cycle
ROUND_TIMEOUT = 10.0  # a digest unanswered this long is forgotten (the link dropped it)
ROUND_TRIES = 3  # a shard whose followers' streams are never flushed at a try is left to the next cycle
REPORT_EVERY = 5.0  # seconds between progress lines of a long repair


@dataclass(frozen=True)
class AntiEntropyOptions:
    interval: float = 60.0  # seconds per cycle (every shard this node leads once); 0 = no rounds started here
    bandwidth: int = 8 * 1024 * 1024  # repair bytes per second, all followers together; 0 = no cap
    buckets: int = ae.BUCKETS


@dataclass
class _Index:
    """What this node knows of its copy of one shard as of its log position ``seq``.

    ``keys``: the keys it may hold (see ae.keys_at). ``sums``: each bucket's digest
    over its entries without a deadline. Entries with one (``expiring``) count or not
    by a round's cutoff, so their buckets are hashed afresh in every round, as are
    the buckets of keys the log changed since ``seq`` and the ``dirty`` ones (a repair
    wrote them). Every other bucket's sum stands: a round costs what changed since
    the last, not the shard's size. A change behind the log's back (what anti-entropy
    is for) is seen by the next sweep, which hashes every entry again.
    """

    keys: set[bytes]
    seq: int
    sums: list[int]
    expiring: set[bytes] = field(default_factory=set)
    dirty: set[int] = field(default_factory=set)


@dataclass
class _Round:
    round_id: int
    seq: int
    started: float


@dataclass
class _Repair:
    """Buckets of one shard still to send to one follower, and what was sent so far (for the log)."""

    buckets: list[int]
    total: int
    started: float = field(default_factory=time.monotonic)
    reported: float = field(default_factory=time.monotonic)
    keys: int = 0
    bytes: int = 0


class AntiEntropy:
    """See the module docstring."""

    def __init__(
        self,
        node: Node,
        replicas: ReplicaManager,
        reactor: Reactor,
        options: AntiEntropyOptions,
        rng: random.Random | None = None,
    ) -> None:
        ae.check_buckets(options.buckets)
        self.node = node
        self.replicas = replicas
        self.reactor = reactor
        self.options = options
        self._rng = rng or random.Random()
        now = time.monotonic()
        self._budget = ae.ByteBudget(options.bandwidth, now)
        self._next_cycle = now + self._rng.uniform(0.1, 1.0) * options.interval
        self._index: dict[int, _Index] = {}
        # The sweep under way: the keys (and, from a memory backend, their blobs and deadlines) copied,
        # how far hashing got, each shard's log position then, and what it found so far.
        self._sweep_keys: list[bytes] | None = None
        self._sweep_blobs: list[bytes | memoryview] | None = None
        self._sweep_deadline: Callable[[bytes], int] = _no_deadline
        self._sweep_at = 0
        self._sweep_positions: dict[int, int] = {}
        self._sweep_groups: dict[int, _Index] = {}
        self._shard_of_slot = [node.shards.shard_of_slot(slot) for slot in range(SLOTS)]
        self._queue: list[tuple[int, int]] = []  # (shard, tries) of this cycle's rounds not started yet
        self._queued = 0  # rounds this cycle queued in all
        self._rounds_since = 0.0  # when this cycle's rounds began
        self._rounds: dict[tuple[int, str], _Round] = {}  # digests sent, by (shard, follower)
        self._repairs: dict[tuple[int, str], _Repair] = {}
        self._next_round_id = 0
        self.counters = {
            "cycles": 0,
            "rounds": 0,
            "rounds_skipped": 0,
            "buckets_compared": 0,
            "buckets_differing": 0,
            "keys_sent": 0,
            "bytes_sent": 0,
            "keys_repaired": 0,
            # CPU this module used on the reactor thread (thread_time: what a round costs, apart from the rest).
            "cpu_ms": 0,
        }
        self._cpu_started = 0.0

    def start(self) -> None:
        if self.options.interval > 0:
            self.reactor.call_every(TICK_SECONDS, self.tick)

    # -- hooks from the replica manager ---------------------------------------------------------

    def link_up(self, peer: str) -> None:
        """A link came back: a cycle soon, so what was missed while it was down is compared."""
        if self.options.interval > 0 and self._sweep_keys is None:
            self._next_cycle = min(self._next_cycle, time.monotonic() + LINK_UP_DELAY)

    def shard_reset(self, shard: int) -> None:
        """The copy of ``shard`` is being replaced (a snapshot): what the index knew of it is void."""
        self._index.pop(shard, None)
        self._sweep_positions.pop(shard, None)

    def on_message(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        if not message.changes or message.changes[0].op != Op.NOOP:
            raise PeerProtocolError(f"anti-entropy message of kind {message.kind} without its header")
        started = time.thread_time()
        try:
            if message.kind == Kind.AE_DIGEST:
                self._on_digest(peer, state, message, reply)
            elif message.kind == Kind.AE_DIFF:
                self._on_diff(peer, state, message)
            else:
                self._on_repair(peer, state, message)
        finally:
            self._count_cpu(started)

    def info(self) -> dict[str, int | str]:
        """INFO replication's anti_entropy_* fields."""
        result: dict[str, int | str] = {f"anti_entropy_{name}": value for name, value in self.counters.items()}
        result["anti_entropy_interval_s"] = round(self.options.interval)
        result["anti_entropy_repairs_in_flight"] = len(self._repairs)
        return result

    # -- the schedule --------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        started = time.thread_time()
        if self._sweep_keys is None and now >= self._next_cycle:
            self._begin_sweep(now)
        if self._queue:
            self._start_due_rounds(now)
        if self._rounds:
            for key in [key for key, round_ in self._rounds.items() if now - round_.started > ROUND_TIMEOUT]:
                del self._rounds[key]
        if self._repairs:
            self._send_repairs(now)
        self._count_cpu(started)

    def _count_cpu(self, started: float) -> None:
        self.counters["cpu_ms"] += round((time.thread_time() - started) * 1000)

    def _begin_sweep(self, now: float) -> None:
        self._next_cycle = now + self.options.interval
        shards = self.replicas._shards
        if not any(len(state.members) > 1 for state in shards.values()):
            return  # no shard held here has another copy (a lone node, RF 1): nothing to compare
        memory = self.node.memory
        with self.node.lock:
            # C-speed copies under the lock (a memory backend's blobs: 0.1 s for 1M keys), hashed
            # outside it in slices. With each shard's position read in the same hold: a primary
            # numbers its changes under the lock (a worker's write).
            if memory is not None:
                keys, blobs, deadline = memory.export()
                self._sweep_keys, self._sweep_blobs, self._sweep_deadline = keys, blobs, deadline
            else:
                self._sweep_keys, self._sweep_blobs = self.node.backend.key_snapshot(), None
            self._sweep_positions = {
                shard: state.backlog.last_seq for shard, state in shards.items() if not state.receiving_snapshot
            }
        buckets = self.options.buckets
        self._sweep_groups = {
            shard: _Index(set(), position, [0] * buckets) for shard, position in self._sweep_positions.items()
        }
        self._sweep_at = 0
        self.counters["cycles"] += 1
        self.reactor.call_soon(self._sweep_slice)

    def _sweep_slice(self) -> None:
        keys = self._sweep_keys
        if keys is None:
            return
        started = time.thread_time()
        try:
            end = min(self._sweep_at + SWEEP_SLICE, len(keys))
            if self._sweep_blobs is not None:
                self._hash_blobs(keys, self._sweep_blobs, self._sweep_at, end)
            else:
                self._hash_entries(keys[self._sweep_at : end])
            self._sweep_at = end
            if end < len(keys):
                self.reactor.call_soon(self._sweep_slice)
            else:
                self._end_sweep()
        finally:
            self._count_cpu(started)

    def _hash_blobs(self, keys: list[bytes], blobs: list[bytes | memoryview], start: int, end: int) -> None:
        """The sweep's hot loop over a memory backend's copy: about 1 us a key here."""
        groups = self._sweep_groups
        shard_of_slot = self._shard_of_slot
        shard_of_key = self.node.shards.shard_of_key
        deadline_of = self._sweep_deadline
        mask = self.options.buckets - 1
        no_deadline = ae.NO_DEADLINE_BYTES
        for index in range(start, end):
            key = keys[index]
            group = groups.get(shard_of_key(key) if b"{" in key else shard_of_slot[crc_hqx(key, 0) & SLOT_MASK])
            if group is None:
                continue
            group.keys.add(key)
            if deadline_of(key):
                group.expiring.add(key)  # counted by each round's cutoff: hashed then
                continue
            key_crc = crc32(key)
            group.sums[key_crc & mask] ^= (key_crc << 32) | crc32(no_deadline, crc32(blobs[index], key_crc))

    def _hash_entries(self, keys: list[bytes]) -> None:
        """The sweep over any other backend: its entries read through the Backend interface."""
        groups = self._sweep_groups
        shard_of_key = self.node.shards.shard_of_key
        mask = self.options.buckets - 1
        for key, entry in self.node.entries(keys):
            group = groups.get(shard_of_key(key))
            if group is None:
                continue
            group.keys.add(key)
            if entry.expires_at_ms:
                group.expiring.add(key)
                continue
            group.sums[ae.bucket_of(key, mask + 1)] ^= ae.entry_hash(key, entry.value, entry.version, 0)

    def _end_sweep(self) -> None:
        self._sweep_keys = self._sweep_blobs = None
        self._sweep_deadline = _no_deadline
        held = self.replicas._shards
        for shard, group in self._sweep_groups.items():
            if shard in self._sweep_positions and shard in held:
                self._index[shard] = group
        for shard in [shard for shard in self._index if shard not in held]:
            del self._index[shard]
        self._sweep_groups = {}
        led = sorted(shard for shard, state in held.items() if state.leading_epoch and state.streams)
        self._rng.shuffle(led)  # a shard late in one cycle is early in another
        self._queue = [(shard, 0) for shard in led]
        self._queued = len(led)
        self._rounds_since = time.monotonic()

    def _start_due_rounds(self, now: float) -> None:
        share = min(1.0, (now - self._rounds_since) / max(self.options.interval * ROUNDS_SPREAD, 1e-3))
        due = int(self._queued * share) + 1 - (self._queued - len(self._queue))
        retry: list[tuple[int, int]] = []
        while due > 0 and self._queue:
            shard, tries = self._queue.pop(0)
            due -= 1
            if not self._start_round(shard, now) and tries + 1 < ROUND_TRIES:
                retry.append((shard, tries + 1))
        self._queue.extend(retry)  # retried ones are due already: the next tick tries them again

    # -- primary: a round -------------------------------------------------------------------------

    def _start_round(self, shard: int, now: float) -> bool:
        """Send the shard's digest to its followers whose streams are flushed; False: try again later."""
        replicas = self.replicas
        state = replicas._led[shard]
        peers = replicas.peers
        if state is None or peers is None:
            return True  # not led any more: nothing to do this cycle
        candidates = [
            member
            for member, stream in state.streams.items()
            if member not in state.learners
            and stream.state == "streaming"
            and peers.is_up(member)
            and (shard, member) not in self._rounds
            and (shard, member) not in self._repairs
        ]
        if not candidates:
            return False
        node = self.node
        with node.lock:
            seq = state.backlog.last_seq
            flushed = [member for member in candidates if state.streams[member].sent_seq == seq]
            if not flushed:
                return False
            cutoff = node.now_ms() + ae.EXPIRY_MARGIN_MS
            sums = self._digest_locked(state, seq, cutoff)
            if sums is None:
                self.counters["rounds_skipped"] += 1
                return True  # the log no longer reaches back to the sweep: the next cycle's sweep
        self._next_round_id += 1
        header = Change(0, Op.NOOP, b"", ae.encode_digest(sums), self._next_round_id, cutoff)
        message = ShardMessage(Kind.AE_DIGEST, shard, state.leading_epoch, seq, changes=[header])
        for member in flushed:
            self._rounds[(shard, member)] = _Round(self._next_round_id, seq, now)
            replicas._send(member, message)
        return len(flushed) == len(candidates)

    def _on_diff(self, peer: str, state: _Shard, message: ShardMessage) -> None:
        header = message.changes[0]
        round_ = self._rounds.get((state.shard, peer))
        if round_ is None or round_.round_id != header.version or not state.leading_epoch:
            return  # answered too late (forgotten), or this node no longer leads the shard
        del self._rounds[(state.shard, peer)]
        if not header.expires_at_ms:
            self.counters["rounds_skipped"] += 1
            return
        try:
            wanted = ae.decode_bucket_ids(header.value, self.options.buckets)
        except ValueError as error:
            raise PeerProtocolError(str(error)) from None
        self.counters["rounds"] += 1
        self.counters["buckets_compared"] += self.options.buckets
        self.counters["buckets_differing"] += len(wanted)
        if wanted:
            self._repairs[(state.shard, peer)] = _Repair(wanted, len(wanted))
            logger.info(
                "shard {}: anti-entropy repair of {} begins: {} of {} buckets differ at seq {}",
                state.shard,
                peer,
                len(wanted),
                self.options.buckets,
                round_.seq,
            )

    def _send_repairs(self, now: float) -> None:
        replicas = self.replicas
        peers = replicas.peers
        for (shard, peer), repair in list(self._repairs.items()):
            state = replicas._led[shard]
            stream = state.streams.get(peer) if state is not None else None
            if state is None or stream is None or stream.state != "streaming" or peers is None:
                logger.info("shard {}: anti-entropy repair of {} abandoned: the stream to it ended", shard, peer)
                del self._repairs[(shard, peer)]
                continue
            while repair.buckets and peers.is_up(peer) and peers.pending_bytes(peer) <= WINDOW_BYTES:
                if not self._budget.allows(BATCH_BYTES, now):
                    return  # the bandwidth cap: the next tick goes on
                sent = self._send_repair_chunk(state, peer, stream.sent_seq, repair)
                if sent is None:
                    break  # the stream has changes to send first, or the index is stale
                self._budget.spend(sent)
            if not repair.buckets:
                del self._repairs[(shard, peer)]
                self._log_repair(shard, peer, repair, now, done=True)
            elif now - repair.reported >= REPORT_EVERY:
                repair.reported = now
                self._log_repair(shard, peer, repair, now, done=False)

    def _send_repair_chunk(self, state: _Shard, peer: str, sent_seq: int, repair: _Repair) -> int | None:
        """Send whole buckets of ``repair`` as of the shard's position now, up to about BATCH_BYTES; bytes sent."""
        buckets = self.options.buckets
        with self.node.lock:
            seq = state.backlog.last_seq
            if sent_seq != seq:
                return None  # changes up to now must precede the repair on the link (see the module docstring)
            keys = self._keys_locked(state, seq)
            if keys is None:
                logger.info("shard {}: anti-entropy repair of {} left to the next cycle", state.shard, peer)
                repair.buckets.clear()
                return None
            wanted = set(repair.buckets)
            by_bucket: dict[int, list[Change]] = {}
            get_entry = self.node.backend.get_entry
            for key in keys:
                bucket = ae.bucket_of(key, buckets)
                if bucket in wanted:
                    entry = get_entry(key, touch=False)
                    if entry is not None:
                        by_bucket.setdefault(bucket, []).append(
                            Change(0, Op.PUT, key, bytes(entry.value), entry.version, entry.expires_at_ms)
                        )
        chosen: list[int] = []
        puts: list[Change] = []
        size = 0
        while repair.buckets and (not chosen or size < BATCH_BYTES):
            bucket = repair.buckets.pop()
            chosen.append(bucket)
            for change in by_bucket.get(bucket, ()):
                puts.append(change)
                size += change.size()
        header = Change(0, Op.NOOP, b"", ae.encode_bucket_ids(chosen), 0, 0)
        message = ShardMessage(Kind.AE_REPAIR, state.shard, state.leading_epoch, seq, changes=[header, *puts])
        payload = message.encode()
        if self.replicas.peers is not None:
            self.replicas.peers.send(peer, Kind.AE_REPAIR, payload)
        repair.keys += len(puts)
        repair.bytes += len(payload)
        self.counters["keys_sent"] += len(puts)
        self.counters["bytes_sent"] += len(payload)
        return len(payload)

    def _log_repair(self, shard: int, peer: str, repair: _Repair, now: float, done: bool) -> None:
        seconds = max(now - repair.started, 1e-6)
        logger.info(
            "shard {}: anti-entropy repair of {} {}: {}/{} buckets, {} keys, {} bytes in {:.2f}s, {:.0f} keys/s",
            shard,
            peer,
            "done" if done else "under way",
            repair.total - len(repair.buckets),
            repair.total,
            repair.keys,
            repair.bytes,
            seconds,
            repair.keys / seconds,
        )

    # -- follower ------------------------------------------------------------------------------------

    def _at(self, peer: str, state: _Shard, message: ShardMessage) -> bool:
        """Whether this copy is exactly where the primary's message was sent from: following it, at its seq."""
        replicas = self.replicas
        return (
            state.following == peer
            and state.followed_epoch == message.epoch
            and not state.leading_epoch
            and not state.receiving_snapshot
            and state.backlog.last_seq == message.seq
            and state.shard not in replicas._recovering
            and replicas.leases.trusted(state.shard)
        )

    def _on_digest(self, peer: str, state: _Shard, message: ShardMessage, reply: Reply) -> None:
        header = message.changes[0]
        try:
            theirs = ae.decode_digest(header.value)
        except ValueError as error:
            raise PeerProtocolError(str(error)) from None
        wanted: list[int] = []
        compared = False
        if len(theirs) == self.options.buckets and self._at(peer, state, message):
            with self.node.lock:
                ours = self._digest_locked(state, message.seq, header.expires_at_ms)
            if ours is not None:
                wanted = ae.differing(ours, theirs)
                compared = True
        answer = Change(0, Op.NOOP, b"", ae.encode_bucket_ids(wanted), header.version, int(compared))
        reply(
            Kind.AE_DIFF, ShardMessage(Kind.AE_DIFF, state.shard, message.epoch, message.seq, changes=[answer]).encode()
        )

    def _on_repair(self, peer: str, state: _Shard, message: ShardMessage) -> None:
        if not self._at(peer, state, message):
            return  # moved on (or back) since: the next cycle compares again
        buckets = self.options.buckets
        try:
            repaired = ae.decode_bucket_ids(message.changes[0].value, buckets)
        except ValueError as error:
            raise PeerProtocolError(str(error)) from None
        puts = message.changes[1:]
        if any(change.op != Op.PUT for change in puts):
            raise PeerProtocolError("an anti-entropy repair holds entries only")
        changed = 0
        with self.node.lock:
            backend = self.node.backend
            index = self._index.get(state.shard)
            held = self._keys_locked(state, message.seq)
            if held is not None:
                for key in ae.keys_to_drop(held, repaired, buckets, (change.key for change in puts)):
                    changed += backend.delete(key)
            for change in puts:
                current = backend.get_entry(change.key, touch=False)
                if (
                    current is not None
                    and current.version == change.version
                    and current.expires_at_ms == change.expires_at_ms
                    and current.value == change.value
                ):
                    continue
                changed += 1
                try:
                    backend.apply(change.key, change.value, change.expires_at_ms, change.version)
                except ValueTooLarge:
                    backend.delete(change.key)  # cannot hold it here: a miss, never a stale value
            # Written outside the log: the index must list them and hash those buckets afresh,
            # and so must a sweep under way, whose record of the shard replaces the index when it
            # ends (it may have passed these keys before the repair wrote them).
            for record in (index, self._sweep_groups.get(state.shard)):
                if record is not None:
                    record.keys.update(change.key for change in puts)
                    record.dirty.update(repaired)
        self.counters["keys_repaired"] += changed

    # -- the keys of a shard at a log position (node lock held) -----------------------------------------

    def _keys_locked(self, state: _Shard, seq: int) -> set[bytes] | None:
        """The keys this copy of the shard may hold at ``seq`` (its position now); None when not known.

        Brings the index to ``seq``: the buckets of keys the log changed since become dirty.
        """
        index = self._index.get(state.shard)
        if index is None or index.seq > seq:
            return None
        if index.seq < seq:
            try:
                changes = state.backlog.changes_after(index.seq, 1 << 62)
            except LookupError:
                return None  # the log no longer holds every change since the index was made
            buckets = self.options.buckets
            for change in changes:
                if change.op == Op.FLUSH:
                    index.dirty.update(range(buckets))
                elif change.op != Op.NOOP:
                    index.keys.add(change.key)
                    index.dirty.add(ae.bucket_of(change.key, buckets))
            index.seq = seq
        return index.keys

    def _digest_locked(self, state: _Shard, seq: int, cutoff_ms: int) -> list[int] | None:
        """This copy's digest of the shard at ``seq`` (its position now) with ``cutoff_ms``; None when not known.

        Hashes afresh only the dirty buckets and those holding entries with a deadline
        (see _Index); the node lock is held.
        """
        keys = self._keys_locked(state, seq)
        index = self._index.get(state.shard)
        if keys is None or index is None:
            return None
        buckets = self.options.buckets
        stale = index.dirty | {ae.bucket_of(key, buckets) for key in index.expiring}
        if stale:
            mask = buckets - 1
            fresh = dict.fromkeys(stale, 0)
            cutoff = {bucket: 0 for bucket in stale}  # the same buckets' sums with the round's cutoff
            get_entry = self.node.backend.get_entry
            gone: list[bytes] = []
            for key in keys:
                bucket = crc32(key) & mask
                if bucket not in fresh:
                    continue
                entry = get_entry(key, touch=False)
                if entry is None:
                    gone.append(key)
                    index.expiring.discard(key)
                    continue
                hashed = ae.entry_hash(key, entry.value, entry.version, entry.expires_at_ms)
                if entry.expires_at_ms:
                    index.expiring.add(key)
                    if entry.expires_at_ms > cutoff_ms:
                        cutoff[bucket] ^= hashed
                else:
                    index.expiring.discard(key)
                    fresh[bucket] ^= hashed
                    cutoff[bucket] ^= hashed
            keys.difference_update(gone)
            for bucket, value in fresh.items():
                index.sums[bucket] = value  # entries without a deadline: stands until they change
            index.dirty.clear()
            sums = list(index.sums)
            for bucket, value in cutoff.items():
                sums[bucket] = value
            return sums
        return list(index.sums)


def _no_deadline(key: bytes) -> int:
    return 0
