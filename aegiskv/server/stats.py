"""Request counters and latency histograms, cheap enough for the hot path.

Each thread that executes commands (the reactor, every worker) owns one
:class:`RequestStats`, so counting needs no lock and loses no update; the
metrics endpoint sums them when scraped. Counters are kept per command
family (SETEX counts as SET), indexed by ``Command.index``; latency goes into
power-of-two buckets found with ``int.bit_length`` (no bisect, no float math):
bucket ``b`` holds requests that took less than ``2**b`` microseconds.
"""

from __future__ import annotations

import threading
from typing import Final

from mypy_extensions import i64

from aegiskv.errors import ErrorKind
from aegiskv.node.commands import FAMILIES

LATENCY_BUCKETS: Final = 24  # up to 2**23 us = 8.4 s; slower requests land in the last bucket
BUCKET_BOUNDS_SECONDS = [2**bucket / 1e6 for bucket in range(LATENCY_BUCKETS)]
# Error replies are counted by kind (INFO errorstats), at these positions.
ERROR_KINDS: Final = tuple(ErrorKind)
_ERROR_KIND_INDEX: Final = {kind: position for position, kind in enumerate(ERROR_KINDS)}


def latency_bucket(elapsed_ns: int) -> int:
    """The histogram bucket of a request that took ``elapsed_ns``; the slowest share the last."""
    bucket = (elapsed_ns // 1000).bit_length()
    return bucket if bucket < LATENCY_BUCKETS else LATENCY_BUCKETS - 1


class CommandCounts:
    """One command's counters on one thread.

    Native integer fields (compiled): counting a request is three integer
    additions and one list update, where three list updates each boxed a new
    Python integer once the counts passed 256.
    """

    __slots__ = ("calls", "errors", "rejected", "latency_sum_ns", "latency", "unfinished")

    def __init__(self) -> None:
        self.calls: i64 = 0
        self.errors: i64 = 0
        self.rejected: i64 = 0  # refused before running: auth required, rate limited
        self.latency_sum_ns: i64 = 0
        self.latency = [0] * LATENCY_BUCKETS
        self.unfinished: i64 = 0  # run in the current loop turn, counted when it ends


class RequestStats:
    """Counters for one thread. Only that thread writes; anyone may read."""

    __slots__ = ("by_command", "error_kinds", "_turn_counts", "_turn_commands")

    def __init__(self) -> None:
        self.by_command = [CommandCounts() for _ in FAMILIES]  # indexed by Command.index
        self.error_kinds = [0] * len(ERROR_KINDS)  # error replies by kind, indexed as ERROR_KINDS
        # The commands with unfinished counts are the first _turn_commands items.
        # The list is never cleared: emptied, a list frees its storage, and the
        # next turn's first append would allocate it again.
        self._turn_counts: list[CommandCounts] = []
        self._turn_commands: i64 = 0

    def ran(self, index: int) -> None:
        """One request has run on the reactor thread; :meth:`finish_turn` counts it.

        The reactor answers a loop turn's requests together: their replies
        leave in the sends at the end of the turn, so each one's latency is the
        turn's, from the poll that found its bytes to the replies being ready
        (a request waits for the ones read before it in the same turn, and its
        reply for the ones after). The reactor reads the clock twice per turn,
        however many reads and requests the turn holds: reading it per request
        cost a pipelined GET a tenth of its instructions, and per read about 4%
        of an unpipelined one (callgrind).
        """
        counts = self.by_command[index]
        if counts.unfinished == 0:
            counted = self._turn_counts
            position = self._turn_commands
            if position < len(counted):
                counted[position] = counts
            else:
                counted.append(counts)
            self._turn_commands = position + 1
        counts.unfinished += 1

    def finish_turn(self, elapsed_ns: i64) -> None:
        """Count the requests run since the last call, each as taking ``elapsed_ns``.

        A reactor turn observer (Reactor.turn_observers)."""
        commands = self._turn_commands
        if commands == 0:
            return
        self._turn_commands = 0
        bucket = latency_bucket(int(elapsed_ns))
        counted = self._turn_counts
        for position in range(commands):
            counts = counted[position]
            ran = counts.unfinished
            counts.unfinished = 0
            counts.calls += ran
            counts.latency_sum_ns += elapsed_ns * ran
            buckets = counts.latency
            buckets[bucket] = buckets[bucket] + ran

    def record(self, index: int, elapsed_ns: int) -> None:
        counts = self.by_command[index]
        counts.calls += 1
        counts.latency_sum_ns += elapsed_ns
        bucket = latency_bucket(elapsed_ns)
        # Spelled "a[i] = a[i] + 1": compiled, that is integer arithmetic, where
        # "a[i] += 1" is a generic in-place add on objects (measured with callgrind).
        buckets = counts.latency
        buckets[bucket] = buckets[bucket] + 1

    def count_error(self, index: int, kind: ErrorKind) -> None:
        """A command ran and failed: its error reply counts for it and for its kind."""
        self.by_command[index].errors += 1
        self.count_error_reply(kind)

    def count_rejected(self, index: int, kind: ErrorKind) -> None:
        """A command was refused before it ran (authentication, rate limit, failed log)."""
        self.by_command[index].rejected += 1
        self.count_error_reply(kind)

    def count_error_reply(self, kind: ErrorKind) -> None:
        """An error reply of no command (unknown command, wrong arity, MOVED): counted by kind only."""
        position = _ERROR_KIND_INDEX[kind]
        self.error_kinds[position] = self.error_kinds[position] + 1


class StatsTotals:
    """The sum over every thread's counters: lists indexed by ``Command.index``."""

    __slots__ = ("calls", "errors", "rejected", "latency", "latency_sum_ns", "error_kinds")

    def __init__(self) -> None:
        count = len(FAMILIES)
        self.error_kinds = [0] * len(ERROR_KINDS)
        self.calls = [0] * count
        self.errors = [0] * count
        self.rejected = [0] * count
        self.latency = [[0] * LATENCY_BUCKETS for _ in range(count)]
        self.latency_sum_ns = [0] * count

    def add(self, stats: RequestStats) -> None:
        for position, count in enumerate(stats.error_kinds):
            self.error_kinds[position] += count
        for index, counts in enumerate(stats.by_command):
            self.calls[index] += counts.calls
            self.errors[index] += counts.errors
            self.rejected[index] += counts.rejected
            self.latency_sum_ns[index] += counts.latency_sum_ns
            bucket_totals = self.latency[index]
            for bucket, count in enumerate(counts.latency):
                bucket_totals[bucket] += count


class StatsRegistry:
    """All the per-thread stats of one server, for summing at scrape time. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[RequestStats] = []
        self._local = threading.local()
        self._baseline: StatsTotals | None = None  # the totals at the last reset (CONFIG RESETSTAT)

    def for_this_thread(self) -> RequestStats:
        stats: RequestStats | None = getattr(self._local, "stats", None)
        if stats is None:
            stats = RequestStats()
            self._local.stats = stats
            with self._lock:
                self._all.append(stats)
        return stats

    def totals(self) -> StatsTotals:
        """Every count since the server started (/metrics: Prometheus counters never go down)."""
        total = StatsTotals()
        with self._lock:
            parts = list(self._all)
        for part in parts:
            total.add(part)
        return total

    def totals_since_reset(self) -> StatsTotals:
        """The counts since the last :meth:`reset` (INFO, as Redis's CONFIG RESETSTAT zeroes it)."""
        total = self.totals()
        base = self._baseline
        if base is None:
            return total
        for index in range(len(FAMILIES)):
            total.calls[index] -= base.calls[index]
            total.errors[index] -= base.errors[index]
            total.rejected[index] -= base.rejected[index]
            total.latency_sum_ns[index] -= base.latency_sum_ns[index]
            buckets, base_buckets = total.latency[index], base.latency[index]
            for bucket in range(LATENCY_BUCKETS):
                buckets[bucket] -= base_buckets[bucket]
        for position in range(len(ERROR_KINDS)):
            total.error_kinds[position] -= base.error_kinds[position]
        return total

    def reset(self) -> None:
        """Start INFO's counts again from zero. The threads' own counters are left alone:
        only their owners write them, so a reset from another thread would lose or undo updates."""
        self._baseline = self.totals()
