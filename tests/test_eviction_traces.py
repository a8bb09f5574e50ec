"""MemoryBackend's hit ratio on seeded traces, replayed cache-aside (GET; SET on a miss) in process.

The figures the assertions stand on were measured on this trace set with four
hash seeds (slots in the ghost table follow the key's hash, which Python seeds
per process), against an exact LRU holding as many keys as the backend, and
against the backend before its protected segment was counted in the bytes
max-memory charges (5d7faf7). The budget is small (128 KiB, about 300-400
keys of 100 bytes) so that a run shows the collapse in a few tens of thousands
of requests: each test replays 60,000, about a second interpreted.
``bench/eviction_sim.py`` and ``bench/hit_ratio.py`` run the same shapes at
full size.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterable

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from tests.fake_clock import FakeClock

MAX_MEMORY = 128 * 1024
KEYSPACE = 4_000
REQUESTS = 60_000
WINDOWS = 6
VALUE = b"v" * 100
SCAN_BASE = 10**9  # scan keys: ids no Zipf draw reaches


def zipf_draw(rng: random.Random, keys: int, alpha: float = 0.99) -> Callable[[], int]:
    """Zipf(alpha) ranks 0..keys-1 (rank r weighs 1/(r+1)^alpha)."""
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** alpha for rank in range(keys)))
    total = cumulative[-1]
    return lambda: min(bisect.bisect(cumulative, rng.random() * total), keys - 1)


def replay(ids: Iterable[int], on_window: Callable[[MemoryBackend], None] | None = None) -> list[float]:
    """Hit ratio per window of REQUESTS / WINDOWS requests; ``on_window`` sees the backend after each."""
    backend = MemoryBackend(BackendOptions(max_memory_bytes=MAX_MEMORY), FakeClock())
    window = REQUESTS // WINDOWS
    ratios: list[float] = []
    hits = 0
    for index, number in enumerate(ids, 1):
        key = b"k:%014d" % number
        if backend.get(key) is None:
            backend.put(key, VALUE)
        else:
            hits += 1
        if index % window == 0:
            ratios.append(hits / window)
            hits = 0
            if on_window is not None:
                on_window(backend)
    backend.check()
    return ratios


def test_hit_ratio_recovers_when_the_hot_set_drifts_onto_new_keys() -> None:
    # The hot set slides onto keys that were cold: key = Zipf rank + a shift
    # that grows by one every 8 requests, so a key warms up, is hottest at
    # rank 0, and is never asked for again. Before the fix, protected counted
    # its entries but not its tables, could hold every key and froze on the
    # first hot set: windows 0.19, then 0.03-0.04. Measured since: 0.50-0.52
    # in every window, an exact LRU of the same size 0.50-0.52. 0.42 leaves a
    # margin of 0.08 for other hash seeds and Python versions, and is ten
    # times what the frozen cache gets.
    draw = zipf_draw(random.Random(7), KEYSPACE)
    ratios = replay(draw() + request // 8 for request in range(REQUESTS))
    assert min(ratios[1:]) >= 0.42, f"hit ratio per window {ratios}"


def test_one_off_scans_do_not_flush_the_hot_set() -> None:
    # Zipf(0.99) with a run of 250 never-repeated keys after every 1,000
    # requests (20% of the requests, each run most of the cache). After every
    # run the 10 hottest keys must still be stored, and the hit ratio stays
    # where it was: measured 0.55-0.57 per window after the first, where an
    # exact LRU of the same size, which the runs flush, gets 0.45. 0.50
    # leaves half that lead as margin.
    rng = random.Random(7)
    draw = zipf_draw(rng, KEYSPACE)
    period, run = KEYSPACE // 4, KEYSPACE // 16

    def trace() -> Iterable[int]:
        scan_key = SCAN_BASE
        for request in range(REQUESTS):
            if request % (period + run) < period:
                yield draw()
            else:
                yield scan_key
                scan_key += 1

    hot = [b"k:%014d" % rank for rank in range(10)]
    lost: list[bytes] = []

    def hot_keys_stored(backend: MemoryBackend) -> None:
        probation, protected = backend.segments()
        stored = set(probation) | set(protected)
        lost.extend(key for key in hot if key not in stored)

    # Windows of 10,000 requests end just after a scan run (10,000 = 8 periods of 1,250).
    ratios = replay(trace(), on_window=hot_keys_stored)
    assert not lost, f"hot keys evicted by scans: {lost}"
    assert min(ratios[1:]) >= 0.50, f"hit ratio per window {ratios}"


def test_stationary_zipf_beats_lru() -> None:
    # Stationary Zipf(0.99): measured 0.67-0.71 per window after the first
    # (0.69 overall), exact LRU of the same size 0.58-0.64, the pre-fix
    # backend 0.69-0.71. Keeping keys read twice in protected is what the
    # SLRU is for; 0.64 overall is above every LRU figure and 0.05 under ours.
    draw = zipf_draw(random.Random(7), KEYSPACE)
    ratios = replay(draw() for _ in range(REQUESTS))
    assert sum(ratios) / len(ratios) >= 0.64, f"hit ratio per window {ratios}"
