"""Seeded key traces for the eviction benchmarks (eviction_sim.py in-process, hit_ratio.py against servers).

Not a test. A trace is a sequence of integer key ids, handed out in chunks
(``array('q')``) so that a 10M-request trace never sits in memory as Python
ints; the same name, size and seed give the same ids on every machine
(``random.Random`` is specified to be reproducible across platforms).

Every trace is sized by ``keyspace``, the number of distinct keys its Zipf
part draws from; the benchmarks choose it against the cache's capacity.
The shapes:

* ``zipf``: stationary Zipf(0.99) over ``keyspace`` keys (rank r has weight
  1/r^0.99; key id = rank, ids carry no order that a cache could exploit).
* ``scan``: the same, with one-off scans mixed in: every ``keyspace // 4``
  requests a run of ``keyspace // 16`` keys never seen before nor after (a
  report, a backup, a crawler). About 20% of requests are scan keys.
* ``drift``: the hot set slides onto keys that were cold and never comes
  back: key id = rank + shift, the shift growing by one every 8 requests, so a
  key's rank falls (it warms up) until it passes rank 0 and is never asked for
  again. Over a run of ``keyspace * 4`` requests the whole popular head has
  been replaced many times. This is the trace that made the SLRU's protected
  segment, sized without its tables, hold every key and freeze.
* ``daily``: shaped after a real cache's day (no public trace ships in a
  package on PyPI): 60% of requests from a stationary long tail (Zipf(0.8)
  over ``keyspace * 2`` keys), 30% from four regional catalogues (Zipf(1.0)
  over ``keyspace // 4`` keys each) whose weights follow phase-shifted
  sinusoids over a "day" of ``keyspace * 2`` requests, 10% from trending items
  born at a steady rate, popular while new (Zipf(1.0) over age) and never
  read again once old.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from array import array
from collections.abc import Iterator

TRACES = ("zipf", "scan", "drift", "daily")
CHUNK = 65_536  # ids per chunk handed out
# Every id below fits in 14 digits: keys of 16 bytes, as in the other benchmarks.
KEY_FORMAT = b"k:%014d"

# Id ranges kept apart so that the parts of a trace never share keys.
_SCAN_BASE = 1 << 40
_REGION_BASE = 1 << 42
_TRENDING_BASE = 1 << 44
_TAIL_BASE = 1 << 46


def _cumulative(count: int, alpha: float) -> list[float]:
    """Cumulative Zipf(alpha) weights of ranks 0..count-1 (rank r weighs 1/(r+1)^alpha)."""
    return list(itertools.accumulate(1.0 / (rank + 1) ** alpha for rank in range(count)))


class _Zipf:
    """Draws Zipf ranks by bisecting the cumulative weights (C bisect; about 1 us per draw)."""

    def __init__(self, count: int, alpha: float, rng: random.Random) -> None:
        self._cumulative = _cumulative(count, alpha)
        self._total = self._cumulative[-1]
        self._random = rng.random
        self._last = count - 1

    def draw(self) -> int:
        return min(bisect.bisect(self._cumulative, self._random() * self._total), self._last)


def generate(name: str, requests: int, keyspace: int, seed: int = 1) -> Iterator[array[int]]:
    """Chunks of key ids for ``requests`` requests of trace ``name`` (one of :data:`TRACES`)."""
    rng = random.Random(f"{name}:{keyspace}:{seed}")
    if name == "zipf":
        produce = _zipf(rng, keyspace)
    elif name == "scan":
        produce = _scan(rng, keyspace)
    elif name == "drift":
        produce = _drift(rng, keyspace)
    elif name == "daily":
        produce = _daily(rng, keyspace)
    else:
        raise ValueError(f"unknown trace {name!r}: expected one of {', '.join(TRACES)}")
    left = requests
    while left > 0:
        size = min(CHUNK, left)
        yield array("q", itertools.islice(produce, size))
        left -= size


def _zipf(rng: random.Random, keyspace: int) -> Iterator[int]:
    draw = _Zipf(keyspace, 0.99, rng).draw
    while True:
        yield draw()


def _scan(rng: random.Random, keyspace: int) -> Iterator[int]:
    draw = _Zipf(keyspace, 0.99, rng).draw
    period, length = max(1, keyspace // 4), max(1, keyspace // 16)
    next_scan_key = _SCAN_BASE
    while True:
        for _ in range(period):
            yield draw()
        for _ in range(length):
            yield next_scan_key
            next_scan_key += 1


def _drift(rng: random.Random, keyspace: int) -> Iterator[int]:
    draw = _Zipf(keyspace, 0.99, rng).draw
    for request in itertools.count():
        yield draw() + request // 8


def _daily(rng: random.Random, keyspace: int) -> Iterator[int]:
    tail = _Zipf(keyspace * 2, 0.8, rng).draw
    regions = max(1, keyspace // 4)
    region = _Zipf(regions, 1.0, rng).draw
    trending = _Zipf(max(1, keyspace // 16), 1.0, rng).draw
    day = keyspace * 2
    phases = [index * math.pi / 2 for index in range(4)]
    uniform = rng.random
    born = 0  # trending items born so far: one every 8 requests
    for request in itertools.count():
        if request % 8 == 0:
            born += 1
        pick = uniform()
        if pick < 0.6:
            yield _TAIL_BASE + tail()
        elif pick < 0.9:
            angle = 2 * math.pi * request / day
            weights = [1.0 + math.sin(angle + phase) for phase in phases]
            choice = uniform() * sum(weights)
            index = 0
            while index < 3 and choice >= weights[index]:
                choice -= weights[index]
                index += 1
            yield _REGION_BASE + index * regions + region()
        else:
            age = trending()
            yield _TRENDING_BASE + max(0, born - age)
