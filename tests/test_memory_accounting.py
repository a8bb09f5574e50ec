"""MemoryBackend's byte accounting against what CPython really allocates (tracemalloc).

``used_bytes`` is what ``--max-memory`` is enforced against, so it must track
the real allocation: charged too little and the process outgrows its limit,
charged too much and the cache holds fewer keys than it could.
``tools/calibrate_memory.py`` prints the per-entry figures. The backend charges
allocator-rounded object sizes plus the tables' ``sys.getsizeof``; tracemalloc
sees requested sizes without pymalloc's 16-byte rounding, so the charge may
exceed the traced figure by that rounding but must never fall below it.

How the allocation is measured, and why so:

* tracemalloc is started after the empty backend exists and stopped after the
  fill, so the traced total is exactly what the fill made the backend allocate
  (its tables, entries, key objects), minus what was freed meanwhile.
* Each key is created inside the traced region and handed to ``put`` without
  the test keeping it. The backend is then the key object's only owner, as in
  the server, which builds the key from the request and drops its own
  reference after the write. So the key's bytes (33-byte header + its length)
  are part of what an entry costs and are counted. Keys built in a list before
  tracing would be invisible to tracemalloc, yet the backend keeps them alive:
  that would under-measure by about 49 bytes per 16-byte key (~15%).
* One value object is reused for every put: the backend copies it into its own
  ``version + value`` blob, and that blob is what gets counted.
* tracemalloc sees requested sizes, not pymalloc's 16-byte size classes; the
  ~15-40 bytes of rounding per entry are not in these figures, while the
  backend charges them (RSS does include them).
* CPython's hash tables grow in doublings, so per-entry table cost moves in a
  sawtooth with the fill level. 20_000 entries sits just below a resize (tables
  ~92% full, the cheapest point per entry); after every key has been read once
  the keys live in the protected segment's table while probation keeps its
  emptied table (dicts do not shrink), the dearer side. Both states are checked.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

import pytest

from aegiskv.backends.base import NO_EXPIRY, BackendOptions
from aegiskv.backends.memory import MemoryBackend
from tests.fake_clock import START_MS, FakeClock

ENTRIES = 20_000
KEY_LENGTH = 16
# Never under-charge by more than measurement noise; over-charge at most by the
# allocator rounding that tracemalloc cannot see (and a second key object that a
# TTL entry is charged for but does not always hold).
UNDER_TOLERANCE = 0.02
OVER_TOLERANCE = 0.30
# A realistic wall-clock deadline: the index packs it with the list position into
# one int, whose size (and so the TTL cost) depends on the deadline's magnitude.
DEADLINE = START_MS + 3_600_000


def make_key(index: int) -> bytes:
    return b"%016d" % index


def traced_fill(value_length: int, ttl: bool, read_all: bool) -> tuple[int, int]:
    """Fill a new backend under tracemalloc; returns (bytes allocated, used_bytes)."""
    backend = MemoryBackend(BackendOptions(max_memory_bytes=1 << 40), FakeClock())
    value = b"v" * value_length
    deadline = DEADLINE if ttl else NO_EXPIRY
    already_tracing = tracemalloc.is_tracing()  # e.g. python -X tracemalloc: keep it running
    gc.collect()
    if not already_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for index in range(ENTRIES):
            backend.put(make_key(index), value, deadline)
        if read_all:
            # A server reads with key objects parsed from the request: equal, not identical.
            for index in range(ENTRIES):
                backend.get(make_key(index))
        allocated = tracemalloc.get_traced_memory()[0] - base
    finally:
        if not already_tracing:
            tracemalloc.stop()
    assert len(backend) == ENTRIES
    return allocated, backend.stats().used_bytes


@pytest.mark.parametrize("read_all", [False, True], ids=["written", "read"])
@pytest.mark.parametrize("ttl", [False, True], ids=["no-ttl", "ttl"])
@pytest.mark.parametrize("value_length", [100, 1000])
def test_used_bytes_covers_the_real_allocation(value_length: int, ttl: bool, read_all: bool) -> None:
    allocated, used = traced_fill(value_length, ttl, read_all)
    ratio = used / allocated
    assert 1 - UNDER_TOLERANCE <= ratio <= 1 + OVER_TOLERANCE, (
        f"used_bytes {used} vs {allocated} allocated ({ratio - 1:+.1%}); "
        f"{(used - allocated) / ENTRIES:+.0f} bytes per entry"
    )


def test_churn_is_charged_for_the_tables_it_leaves_behind() -> None:
    # Writing far more keys than fit makes the dicts keep deleted slots until
    # they resize; the tables then cost more per live key than a fresh fill.
    # The charge must follow (tables are measured with getsizeof), or the
    # process outgrows --max-memory under eviction churn.
    limit = 4 * 2**20
    backend = MemoryBackend(BackendOptions(max_memory_bytes=limit), FakeClock())
    value = b"v" * 100
    for index in range(5 * limit // 150):
        backend.put(make_key(index), value)
    stats = backend.stats()
    assert stats.evictions > 0
    tables = sys.getsizeof(backend._probation) + sys.getsizeof(backend._protected)
    objects = sum(sys.getsizeof(key) + sys.getsizeof(blob) for key, blob in backend._probation.items())
    assert stats.used_bytes >= tables + objects
    assert stats.used_bytes <= limit
