"""Shard copies a node sends: how many at once, in what order, how fast (sans-IO).

A node gaining a shard copies it from the primary before the map switches to it
(aegiskv.cluster.shard_map). A join or a rebalance starts dozens of those copies
on one primary at once; sent all together they would fill every link and the
reactor with snapshot chunks, and the foreground requests would wait behind them.
:class:`CopyQueue` keeps the copies under way to ``slots`` and the bytes they send
to ``rate`` per second over all of them; the rest wait in the order they asked
(first come, first served). Among the copies under way, :meth:`CopyQueue.turn_order`
rotates who sends first, so one copy does not take every byte the bucket allows.

A copy is named by a key (the shard, the follower). The owner asks for a slot
with :meth:`request`, sends while :meth:`allowance` is positive and reports what
it sent with :meth:`spend`, and calls :meth:`release` when the copy ended or was
abandoned. Time comes from the ``clock`` given (a fake one in tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

UNLIMITED = 1 << 62  # what allowance() says when no rate is set
# The bucket holds at most this many seconds of the rate: a copy idle for a while (its link was
# full) may not then send a burst that stalls the link for longer.
BURST_SECONDS = 0.1
MIN_BURST = 64 * 1024  # and at least this, so a rate below one chunk per tick still moves


@dataclass
class CopyTotals:
    """What the copies sent so far (counters: they only grow) and the rate of the last one finished."""

    completed: int = 0
    abandoned: int = 0
    keys: int = 0
    bytes: int = 0
    last_rate: float = 0.0  # bytes per second of the last copy completed


class CopyQueue:
    """See the module docstring."""

    def __init__(self, rate: int, slots: int, clock: Callable[[], float]) -> None:
        """``rate``: bytes per second over every copy (0 = unlimited); ``slots``: copies under way at once."""
        if rate < 0:
            raise ValueError(f"copy rate must be >= 0 bytes/s, not {rate}")
        if slots < 1:
            raise ValueError(f"copy slots must be >= 1, not {slots}")
        self.rate = rate
        self.slots = slots
        self._clock = clock
        self._burst = max(MIN_BURST, int(rate * BURST_SECONDS))
        self._tokens = float(self._burst)
        self._filled_at = clock()
        self._active: dict[Hashable, None] = {}  # insertion-ordered: the copies under way
        self._waiting: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self.totals = CopyTotals()

    # -- slots -----------------------------------------------------------------------------------

    def request(self, key: Hashable) -> bool:
        """Ask for a slot for ``key``; True if it holds one now (it may already have), else it waits its turn."""
        if key in self._active:
            return True
        if not self._waiting and len(self._active) < self.slots:
            self._active[key] = None
            return True
        if key not in self._queued:
            self._queued.add(key)
            self._waiting.append(key)
        return False

    def holds_slot(self, key: Hashable) -> bool:
        return key in self._active

    def admit(self) -> list[Hashable]:
        """Give free slots to the copies waiting longest; returns those admitted now."""
        admitted = []
        while self._waiting and len(self._active) < self.slots:
            key = self._waiting.popleft()
            self._queued.discard(key)
            self._active[key] = None
            admitted.append(key)
        return admitted

    def release(self, key: Hashable) -> None:
        """``key`` ended or was given up (a lost lease, a link reset): free its slot or its place in line."""
        self._active.pop(key, None)
        if key in self._queued:
            self._queued.discard(key)
            self._waiting.remove(key)

    def turn_order(self) -> list[Hashable]:
        """The copies under way, the first one moved to the back each call (round robin)."""
        order = list(self._active)
        if len(order) > 1:
            first = order[0]
            del self._active[first]
            self._active[first] = None
        return order

    def pending(self) -> list[Hashable]:
        """Every copy under way or waiting, those under way first."""
        return [*self._active, *self._waiting]

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    # -- bandwidth -------------------------------------------------------------------------------

    def allowance(self) -> int:
        """Bytes the copies may send now; a chunk may overshoot it (spend() then goes into debt)."""
        if self.rate == 0:
            return UNLIMITED
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        return int(self._tokens) if self._tokens > 0 else 0

    def spend(self, sent: int, keys: int) -> None:
        """``sent`` bytes (``keys`` keys) left for some copy: taken from the bucket, below zero if a chunk
        overshot."""
        if self.rate:
            self._tokens -= sent
        self.totals.bytes += sent
        self.totals.keys += keys

    # -- totals ----------------------------------------------------------------------------------

    def finished(self, key: Hashable, sent: int, seconds: float) -> None:
        """``key`` completed (its keys and bytes were counted by spend): count it and free its slot."""
        totals = self.totals
        totals.completed += 1
        totals.last_rate = sent / seconds if seconds > 0 else 0.0
        self.release(key)

    def abandoned(self, key: Hashable) -> None:
        """``key`` stopped short of the end (the stream it served went away): count it and free its slot."""
        if key in self._active or key in self._queued:
            self.totals.abandoned += 1
        self.release(key)
