"""Request counters and latency histograms, cheap enough for the hot path.

Each thread that executes commands (the reactor, every worker) owns one
:class:`RequestStats`, so counting needs no lock and loses no update; the
metrics endpoint sums them when scraped. Counters are lists indexed by
``Command.index``; latency goes into power-of-two buckets found with
``int.bit_length`` (no bisect, no float math): bucket ``b`` holds requests that
took less than ``2**b`` microseconds.
"""

from __future__ import annotations

import threading
from typing import Final

from aegiskv.commands import COMMAND_LIST

LATENCY_BUCKETS: Final = 24  # up to 2**23 us = 8.4 s; slower requests land in the last bucket
BUCKET_BOUNDS_SECONDS = [2**bucket / 1e6 for bucket in range(LATENCY_BUCKETS)]


class RequestStats:
    """Counters for one thread. Only that thread writes; anyone may read."""

    __slots__ = ("calls", "errors", "rejected", "latency", "latency_sum_ns")

    def __init__(self) -> None:
        count = len(COMMAND_LIST)
        self.calls = [0] * count
        self.errors = [0] * count
        self.rejected = [0] * count  # refused before running: auth required, rate limited
        self.latency = [[0] * LATENCY_BUCKETS for _ in range(count)]
        self.latency_sum_ns = [0] * count

    # Spelled "a[i] = a[i] + n": compiled, that is integer arithmetic, where
    # "a[i] += n" is a generic in-place add on objects (measured with callgrind).

    def record(self, index: int, elapsed_ns: int) -> None:
        calls = self.calls
        calls[index] = calls[index] + 1
        latency_sum = self.latency_sum_ns
        latency_sum[index] = latency_sum[index] + elapsed_ns
        bucket = (elapsed_ns // 1000).bit_length()
        if bucket >= LATENCY_BUCKETS:
            bucket = LATENCY_BUCKETS - 1
        buckets = self.latency[index]
        buckets[bucket] = buckets[bucket] + 1

    def count_error(self, index: int) -> None:
        errors = self.errors
        errors[index] = errors[index] + 1

    def count_rejected(self, index: int) -> None:
        rejected = self.rejected
        rejected[index] = rejected[index] + 1


class StatsRegistry:
    """All the per-thread stats of one server, for summing at scrape time. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[RequestStats] = []
        self._local = threading.local()

    def for_this_thread(self) -> RequestStats:
        stats: RequestStats | None = getattr(self._local, "stats", None)
        if stats is None:
            stats = RequestStats()
            self._local.stats = stats
            with self._lock:
                self._all.append(stats)
        return stats

    def totals(self) -> RequestStats:
        total = RequestStats()
        with self._lock:
            parts = list(self._all)
        for part in parts:
            for index in range(len(COMMAND_LIST)):
                total.calls[index] += part.calls[index]
                total.errors[index] += part.errors[index]
                total.rejected[index] += part.rejected[index]
                total.latency_sum_ns[index] += part.latency_sum_ns[index]
                bucket_totals = total.latency[index]
                for bucket, count in enumerate(part.latency[index]):
                    bucket_totals[bucket] += count
        return total
