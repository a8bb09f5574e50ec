"""The replication stream of a shard, as sans-IO state: what a primary sends and what a follower applies.

Each shard has one primary at a time (the holder of its lease, see
aegiskv.cluster.leases). Every change the primary makes to a shard's keys gets
the shard's next *sequence number* and goes into the shard's :class:`Backlog`
(a shard with no follower only numbers it: :meth:`Backlog.advance`);
followers receive the changes in order and acknowledge what they applied. A
replica's *position* is ``(epoch, seq)``: the last change it applied and the
epoch (lease term) in which that change was written. Sequence numbers keep
growing across epochs: a new primary continues at its last seq + 1 under its
new epoch, and records the switch in its backlog's *history*.

Whether a follower can continue from its position (an *incremental* sync) or
must be sent the whole shard (a *resync*) is decided by the primary
(:meth:`Backlog.plan_sync`), Redis PSYNC-style: the position must lie on the
primary's own history (the change at that seq was written in that epoch) and
the changes after it must still be in the backlog. A follower that applied
changes the new primary never had (an old primary's last writes that reached
no majority) is not on the history: it is resynced, and what it held of the
shard is discarded (counted, never merged back).

No sockets, clocks or locks here: aegiskv.server.replication drives it.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

Position = tuple[int, int]  # (epoch, seq); (0, 0) is an empty replica
# One entry of a log's history: (epoch, first seq written in it, writer), where the writer is
# a 64-bit tag of the primary's node id (writer_tag). Epochs are unique within one cluster's
# elections, but every node starts alone and elects itself before it joins the others: two
# nodes then each wrote "epoch 1", and only the writer tells those two logs apart.
HistoryEntry = tuple[int, int, int]


def writer_tag(node_id: str) -> int:
    """The 64-bit tag a primary's history entries carry (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(node_id.encode(), digest_size=8).digest(), "big")


class Op(enum.IntEnum):
    """What one replicated change does."""

    PUT = 1  # store value, version and deadline (a write, or a TTL change that rewrote the entry)
    DELETE = 2  # remove the key; ``version`` is the delete's (a tombstone's) version
    EXPIRE = 3  # change the deadline only (``expires_at_ms``; 0 drops it)
    FLUSH = 4  # remove every key of the shard
    NOOP = 5  # changes nothing: a new primary's first change, so its epoch shows in every follower's position
    # APPEND or SETRANGE of a large value: ``value`` is RANGE_HEADER (the key's version before the
    # write, 0: absent; the offset), then the bytes written there; ``version`` is the new one. A
    # follower whose copy is not at that version drops the key (a miss, never a wrong value).
    RANGE = 6


RANGE_HEADER: Final = struct.Struct(">QQ")


class Change(NamedTuple):
    seq: int
    op: int
    key: bytes
    value: bytes
    version: int
    expires_at_ms: int

    def size(self) -> int:
        """Bytes it costs in a backlog and on the wire (its encoding's length)."""
        return _CHANGE_SIZE + len(self.key) + len(self.value)


# seq, op, version, expires_at_ms, key length, value length; then key and value.
_CHANGE = struct.Struct(">QBQqII")
_CHANGE_SIZE = _CHANGE.size


def encode_changes(changes: Iterable[Change]) -> bytes:
    parts = []
    for change in changes:
        parts.append(
            _CHANGE.pack(
                change.seq, change.op, change.version, change.expires_at_ms, len(change.key), len(change.value)
            )
        )
        parts.append(change.key)
        parts.append(change.value)
    return b"".join(parts)


def decode_changes(data: bytes | memoryview, max_items: int = 1 << 20) -> list[Change]:
    """The changes in ``data``; raises ValueError on anything malformed (a peer broke the protocol)."""
    view = memoryview(data)
    changes: list[Change] = []
    offset = 0
    while offset < len(view):
        if len(changes) >= max_items:
            raise ValueError(f"more than {max_items} changes in one batch")
        if len(view) - offset < _CHANGE.size:
            raise ValueError("truncated change header")
        seq, op, version, expires_at_ms, key_length, value_length = _CHANGE.unpack_from(view, offset)
        offset += _CHANGE.size
        if op not in _OPS:
            raise ValueError(f"unknown change op {op}")
        if len(view) - offset < key_length + value_length:
            raise ValueError("truncated change body")
        if op == Op.RANGE and value_length < RANGE_HEADER.size:
            raise ValueError(f"range change of {value_length} bytes, shorter than its header")
        key = bytes(view[offset : offset + key_length])
        offset += key_length
        value = bytes(view[offset : offset + value_length])
        offset += value_length
        changes.append(Change(seq, op, key, value, version, expires_at_ms))
    return changes


_OPS = frozenset(int(op) for op in Op)


class SyncPlan(NamedTuple):
    """How the primary brings a follower at some position up to date."""

    resync: bool  # True: send the whole shard (and the follower discards what it holds of it)
    from_seq: int  # the first seq to stream (after the snapshot, when resync)
    diverged: bool  # the follower held changes the primary never had (discarded on resync)


@dataclass
class Backlog:
    """A primary's recent changes to one shard, bounded in bytes, and the epochs its log went through.

    ``history`` lists ``(epoch, first seq written in it, writer)`` in order. Not thread-safe:
    the caller (the node, under its lock) serialises appends and reads.
    """

    max_bytes: int
    last_seq: int = 0
    history: list[HistoryEntry] = field(default_factory=list)
    _changes: deque[Change] = field(default_factory=deque)
    _bytes: int = 0

    @property
    def first_seq(self) -> int:
        """The oldest seq still held (last_seq + 1 when empty)."""
        return self._changes[0].seq if self._changes else self.last_seq + 1

    @property
    def position(self) -> Position:
        return (self.epoch_of(self.last_seq), self.last_seq)

    @property
    def writer(self) -> int:
        """The writer tag of the last change held (0 for none): with ``position``, its lineage."""
        return self.entry_of(self.last_seq)[2]

    def start_epoch(self, epoch: int, writer: int) -> None:
        """This node (whose tag is ``writer``) becomes primary for ``epoch``: later changes are written in it."""
        if self.history and epoch <= self.history[-1][0]:
            raise ValueError(f"epoch {epoch} does not grow past {self.history[-1][0]}")
        self.history.append((epoch, self.last_seq + 1, writer))

    def restart_at(self, seq: int, history: Iterable[HistoryEntry]) -> None:
        """A follower resynchronised up to ``seq`` of a primary with ``history``: nothing older is held."""
        self._changes.clear()
        self._bytes = 0
        self.last_seq = seq
        self.history = []
        self.merge_history(history)

    def merge_history(self, entries: Iterable[HistoryEntry]) -> None:
        """Take in a primary's history entries (a follower learns of the epochs its changes were written in).

        An entry starting at or before a known one replaces it and everything after:
        the primary's word is the log.
        """
        for epoch, first_seq, writer in sorted(entries, key=lambda entry: entry[1]):
            if self.history and self.history[-1] == (epoch, first_seq, writer):
                continue
            while self.history and self.history[-1][1] >= first_seq:
                self.history.pop()
            if self.history and self.history[-1][0] >= epoch:
                raise ValueError(f"history epoch {epoch} at seq {first_seq} does not grow past {self.history[-1]}")
            self.history.append((epoch, first_seq, writer))

    def history_since(self, seq: int) -> list[HistoryEntry]:
        """The entries a follower at ``seq`` needs to place changes after it: the one covering it and later ones."""
        index = max(bisect_right(self.history, seq, key=lambda entry: entry[1]) - 1, 0)
        return self.history[index:]

    def append(self, op: int, key: bytes, value: bytes, version: int, expires_at_ms: int) -> Change:
        if not self.history:
            raise ValueError("append before start_epoch")
        seq = self.last_seq + 1
        change = Change(seq, op, key, value, version, expires_at_ms)
        changes = self._changes
        changes.append(change)
        # Change.size() inlined: this runs once per write on the primary, under the node lock.
        held = self._bytes + _CHANGE_SIZE + len(key) + len(value)
        self.last_seq = seq
        if held > self.max_bytes:
            while held > self.max_bytes and len(changes) > 1:
                held -= changes.popleft().size()
        self._bytes = held
        return change

    def advance(self) -> int:
        """Number a change no follower needs kept (its shard has none); returns its seq.

        The changes held so far go too, so what is held stays one run ending at
        ``last_seq``: a follower that arrives later at an older position is
        resynchronised (plan_sync: its changes are no longer held), snapshot then tail.
        """
        if self._changes:
            self._changes.clear()
            self._bytes = 0
        self.last_seq += 1
        return self.last_seq

    def record(self, change: Change) -> None:
        """A follower keeps what it applied (in order), so it can serve as primary's backlog after a failover."""
        if change.seq != self.last_seq + 1:
            raise ValueError(f"change {change.seq} after {self.last_seq}")
        self._changes.append(change)
        self._bytes += change.size()
        self.last_seq = change.seq
        while self._bytes > self.max_bytes and len(self._changes) > 1:
            self._bytes -= self._changes.popleft().size()

    def epoch_of(self, seq: int) -> int:
        """The epoch in which change ``seq`` was written (0 for seq 0, before any)."""
        return self.entry_of(seq)[0]

    def entry_of(self, seq: int) -> HistoryEntry:
        """The history entry change ``seq`` was written under ((0, 0, 0) for seq 0, before any)."""
        if seq <= 0 or not self.history:
            return (0, 0, 0)
        index = bisect_right(self.history, seq, key=lambda entry: entry[1]) - 1
        return self.history[index] if index >= 0 else (0, 0, 0)

    def changes_after(self, seq: int, max_bytes: int) -> list[Change]:
        """Changes from ``seq + 1`` on, at most about ``max_bytes`` (always at least one when any)."""
        if seq < self.first_seq - 1:
            raise LookupError(f"changes after {seq} are gone (the backlog starts at {self.first_seq})")
        found: list[Change] = []
        size = 0
        start = seq + 1 - self.first_seq
        for index in range(max(start, 0), len(self._changes)):
            change = self._changes[index]
            if found and size + change.size() > max_bytes:
                break
            found.append(change)
            size += change.size()
        return found

    def plan_sync(self, follower: Position, writer: int) -> SyncPlan:
        """Incremental from the follower's position (written by ``writer``) when it lies on this log and is
        still held, else resync."""
        epoch, seq = follower
        if seq > self.last_seq:
            return SyncPlan(True, self.last_seq + 1, True)  # it has changes beyond ours: an old primary's
        entry = self.entry_of(seq)
        on_history = seq == 0 or (entry[0] == epoch and entry[2] == writer)
        if not on_history:
            return SyncPlan(True, self.last_seq + 1, True)
        if seq >= self.first_seq - 1:
            return SyncPlan(False, seq + 1, False)
        return SyncPlan(True, self.last_seq + 1, False)  # on our log, but too far behind the backlog


@dataclass
class FollowerProgress:
    """What a primary knows of one follower of one shard."""

    acked_seq: int = 0  # the follower applied (and made durable, per its --wal) every change up to here
    sent_seq: int = 0  # streamed up to here (sent, maybe not yet acknowledged)
    syncing: bool = False  # a snapshot is on its way: nothing is streamed until it ends
    connected: bool = False


class QuorumTracker:
    """Which changes of one shard enough replicas acknowledged (the primary counts itself)."""

    def __init__(self) -> None:
        self.followers: dict[str, FollowerProgress] = {}
        # Followers still copying the shard (aegiskv.cluster.shard_map, learners): their progress
        # is kept, so a hand-off can tell when one caught up, but they count towards no quorum.
        self.learners: frozenset[str] = frozenset()

    def set_followers(self, node_ids: Iterable[str], learners: Iterable[str] = ()) -> None:
        wanted = set(node_ids)
        for gone in set(self.followers) - wanted:
            del self.followers[gone]
        for node_id in wanted:
            self.followers.setdefault(node_id, FollowerProgress())
        self.learners = frozenset(learners) & wanted

    def acknowledge(self, node_id: str, seq: int) -> bool:
        """Record an acknowledgement; True when it moved the follower forward."""
        progress = self.followers.get(node_id)
        if progress is None or seq <= progress.acked_seq:
            return False
        progress.acked_seq = seq
        return True

    def copies(self, seq: int) -> int:
        """How many replicas (the primary included) hold change ``seq``."""
        learners = self.learners
        return 1 + sum(
            1 for node_id, progress in self.followers.items() if progress.acked_seq >= seq and node_id not in learners
        )

    def replicas(self) -> int:
        return 1 + len(self.followers) - len(self.learners)


class Copy(NamedTuple):
    """One replica's answer to a quorum read of a key: what it holds, and whether that can be newer.

    ``version`` 0 means the key is absent there (no tombstone is kept: a deleted
    key and a key never written look alike). ``behind`` is True when the copy's
    shard position lies on the primary's own log, at or before its end: that copy
    is an earlier state of the primary's, so it can never be the newer one, even
    where the primary deleted the key (an absent key has no version to compare).
    """

    holder: str
    version: int
    value: bytes = b""
    expires_at_ms: int = 0
    behind: bool = False


class ReadRound:
    """A quorum read of one key on its shard's primary: collect copies until ``need`` answered, pick the newest.

    The primary's own copy counts as one. The newest is the copy with the highest
    version among the primary's and those not ``behind`` it (see :class:`Copy`);
    ties go to the primary. Sans-IO: aegiskv.server.replicas asks the followers,
    feeds their answers to :meth:`answer` and repairs what :meth:`stale` names.
    """

    def __init__(self, need: int, local: Copy, asked: Iterable[str]) -> None:
        self.need = need
        self.copies: list[Copy] = [local]
        self.asked = set(asked)

    def answer(self, copy: Copy) -> bool:
        """Take a follower's answer; True when it counted (asked, and its first answer)."""
        if copy.holder not in self.asked:
            return False
        self.asked.discard(copy.holder)
        self.copies.append(copy)
        return True

    @property
    def complete(self) -> bool:
        return len(self.copies) >= self.need

    def newest(self) -> Copy:
        best = self.copies[0]
        for copy in self.copies[1:]:
            if not copy.behind and copy.version > best.version:
                best = copy
        return best

    def stale(self) -> list[str]:
        """The holders whose copy is older than the newest (the primary's own included, by its holder name)."""
        newest = self.newest()
        return [copy.holder for copy in self.copies if copy is not newest and copy.version != newest.version]


# Lag histogram buckets: upper bounds growing by 2**(1/4) (19% apart) from 1 us to about 67 s, so a
# quantile read off a bucket bound is at most 19% above the true value.
LAG_BUCKET_BOUNDS = [2 ** (index / 4) / 1e6 for index in range(105)]


class LagHistogram:
    """Replication lag samples (seconds) in fixed buckets: recording allocates nothing.

    Not thread-safe: one thread records (the reactor); readers (INFO, /metrics) copy ``counts``.
    """

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKET_BOUNDS) + 1)  # the last bucket: slower than every bound
        self.samples = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bisect_left(LAG_BUCKET_BOUNDS, seconds)] += 1
        self.samples += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, fraction: float) -> float:
        """The bound of the bucket holding the ``fraction`` quantile (0.0 with no samples; ``max`` past the bounds)."""
        return quantile_of(self.counts, fraction, self.max)


def quantile_of(counts: list[int], fraction: float, beyond: float = float("inf")) -> float:
    """The bucket bound at which ``counts`` (per LAG_BUCKET_BOUNDS bucket) reach ``fraction`` of their total.

    ``beyond`` stands for the last bucket's (unbounded) value. Used on a node's counts, and by a
    benchmark on the difference of two scrapes of them.
    """
    samples = sum(counts)
    if samples == 0:
        return 0.0
    wanted = max(1, math.ceil(fraction * samples))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            return LAG_BUCKET_BOUNDS[index] if index < len(LAG_BUCKET_BOUNDS) else beyond
    return beyond


class LagMarks:
    """When a primary applied sampled changes of one shard, until every follower acknowledged them.

    The replication lag of a change is the time from the primary applying it to a follower
    acknowledging it (which a follower does once it applied it, and made it durable in fsync mode).
    Stamping every change would cost a clock read and a tuple per write; instead the node marks
    one change per shard per reactor turn, the first of the turn (the one that waits longest for
    the turn's batch), so each sample is the exact lag of that change and an upper bound for the
    others streamed with it. ``MAX_MARKS`` bounds the memory while a follower is away; its oldest
    marks are dropped (that follower's lag then shows in the seq gap, not in samples).

    Not thread-safe: the caller serialises (the node lock).
    """

    MAX_MARKS = 4096

    def __init__(self) -> None:
        self._marks: list[tuple[int, float]] = []  # (seq, applied at), seqs growing; live from _start on
        self._start = 0

    def __len__(self) -> int:
        return len(self._marks) - self._start

    def mark(self, seq: int, applied_at: float) -> None:
        marks = self._marks
        if len(marks) > self._start and marks[-1][0] >= seq:
            return  # already marked (seqs only grow while the node leads the shard)
        if len(self) >= self.MAX_MARKS:
            self._start += 1
        marks.append((seq, applied_at))
        self._compact()

    def acknowledged(self, before: int, acked: int, now: float, histogram: LagHistogram) -> None:
        """A follower's acknowledgement moved from ``before`` to ``acked``: one sample per mark it covers."""
        marks = self._marks
        index = bisect_right(marks, before, lo=self._start, key=_mark_seq)
        while index < len(marks) and marks[index][0] <= acked:
            histogram.record(now - marks[index][1])
            index += 1

    def trim(self, acked_by_all: int) -> None:
        """Forget the marks every follower acknowledged."""
        self._start = bisect_right(self._marks, acked_by_all, lo=self._start, key=_mark_seq)
        self._compact()

    def clear(self) -> None:
        self._marks = []
        self._start = 0

    def _compact(self) -> None:
        # Dropping from the front of a list moves the rest: do it once half of it is dead.
        if self._start > 64 and self._start * 2 > len(self._marks):
            del self._marks[: self._start]
            self._start = 0


def _mark_seq(mark: tuple[int, float]) -> int:
    return mark[0]
