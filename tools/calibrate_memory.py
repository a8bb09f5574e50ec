"""Measure what one MemoryBackend entry really costs, against what the backend charges for it.

Usage: ``python3 tools/calibrate_memory.py [--entries N]``

For each key/value size (with and without a TTL) the script fills an empty
backend under tracemalloc and reports, per entry, the bytes allocated beyond
``len(key) + len(value)``, next to what the backend charges per entry
(``used_bytes`` over the entry count, beyond the same lengths: rounded object
sizes from ``entry_cost()`` plus the tables' ``sys.getsizeof``).

What is counted and why:

* The key objects are created inside the traced region, one per put, and kept
  alive by the backend only; they are part of what a stored entry costs (a
  server builds them from the request), so they are counted.
* The value passed to ``put`` is created once before tracing: the backend copies
  it into its own ``version + value`` blob, and that blob is what is counted.
* Hash tables grow in steps (a dict doubles when 2/3 full), so the per-entry
  cost of the tables swings with the fill level. The script samples many fill
  levels between ``--entries / 8`` and ``--entries`` and prints min/mean/max,
  so the constant can be chosen against the whole sawtooth, not one lucky point.
* CPython never shrinks a dict's table when keys leave it. Once keys have been
  read they move to the protected segment's table while the probation table
  keeps its size, so a cache in use pays for two tables. ``promoted`` is the
  overhead after every key was read once.
* tracemalloc records the sizes *requested* from the allocator. pymalloc serves
  small requests (<= 512 bytes) in 16-byte size classes, so the process really
  uses a little more; ``+round`` is that extra per entry, computed exactly from
  a snapshot of the traced allocations.
* Deadlines are realistic wall-clock milliseconds (~1.7e12): the packed
  ``deadline << 32 | position`` integer then needs three 30-bit digits. Tiny
  fake-clock deadlines would under-measure the TTL cost.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tracemalloc
from dataclasses import dataclass

from aegiskv.backends.base import NO_EXPIRY, BackendOptions
from aegiskv.backends.memory import MemoryBackend

NOW_MS = 1_700_000_000_000
TTL_MS = 3_600_000
SIZES = [(16, 100), (16, 1000), (64, 10), (32, 300)]
_PYMALLOC_MAX = 512
_PYMALLOC_ALIGN = 16


@dataclass
class Measurement:
    key_length: int
    value_length: int
    ttl: bool
    per_entry: list[float]  # overhead per entry at each sampled fill level of a fresh fill
    rounding: float  # pymalloc size-class rounding per entry, at the last fill level
    promoted: float  # overhead per entry once every key was read (moved to the protected segment)
    charged: float  # what the backend charged per entry beyond the lengths, after the fresh fill

    @property
    def label(self) -> str:
        return f"{self.key_length}/{self.value_length}{' ttl' if self.ttl else ''}"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_entry)


def make_key(index: int, key_length: int) -> bytes:
    """A distinct key of exactly ``key_length`` bytes (zero-padded decimal)."""
    return (b"%0*d" % (key_length, index))[-key_length:]


def pymalloc_rounding(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes pymalloc adds on top of the traced (requested) sizes by serving them in 16-byte size classes."""
    return sum(-trace.size % _PYMALLOC_ALIGN for trace in snapshot.traces if trace.size <= _PYMALLOC_MAX)


def measure(key_length: int, value_length: int, ttl: bool, entries: int) -> Measurement:
    backend = MemoryBackend(BackendOptions(max_memory_bytes=1 << 62), clock=lambda: NOW_MS)
    value = b"v" * value_length
    deadline = NOW_MS + TTL_MS if ttl else NO_EXPIRY
    checkpoints = set(range(entries // 8, entries + 1, max(1, entries // 64)))
    samples: list[float] = []
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for index in range(1, entries + 1):
            backend.put(make_key(index, key_length), value, deadline)
            if index in checkpoints:
                allocated = tracemalloc.get_traced_memory()[0] - base
                samples.append(allocated / index - key_length - value_length)
        rounding = pymalloc_rounding(tracemalloc.take_snapshot()) / entries
        charged = backend.stats().used_bytes / entries - key_length - value_length
        for index in range(1, entries + 1):
            backend.get(make_key(index, key_length))
        promoted = (tracemalloc.get_traced_memory()[0] - base) / entries - key_length - value_length
    finally:
        tracemalloc.stop()
    assert len(backend) == entries, "keys collided: make_key is too short for this many entries"
    return Measurement(key_length, value_length, ttl, samples, rounding, promoted, charged)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000, help="entries per configuration (default 50000)")
    args = parser.parse_args(argv)

    print(f"CPython {sys.version.split()[0]}, {args.entries} entries per row")
    print("bytes per entry beyond len(key) + len(value), as tracemalloc sees them:")
    print("  min/mean/max: over fill levels of a fresh fill   promoted: after every key was read once")
    print("  +round: pymalloc size-class rounding (not seen by tracemalloc)")
    print("  charged: what used_bytes charges per entry   error: charged vs last fill level + rounding")
    print(f"{'key/value':<14}{'min':>8}{'mean':>8}{'max':>8}{'promoted':>10}{'+round':>8}{'charged':>9}{'error':>8}")
    for key_length, value_length in SIZES:
        for ttl in (False, True):
            result = measure(key_length, value_length, ttl, args.entries)
            real = result.per_entry[-1] + result.rounding
            error = (result.charged - real) / (real + key_length + value_length)
            print(
                f"{result.label:<14}{min(result.per_entry):8.1f}{result.mean:8.1f}{max(result.per_entry):8.1f}"
                f"{result.promoted:10.1f}{result.rounding:8.1f}{result.charged:9.1f}{error:+8.1%}"
            )


if __name__ == "__main__":
    main()
