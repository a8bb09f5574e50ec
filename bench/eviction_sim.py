"""Simulation: hit ratio of the memory backend's eviction against reference policies, in process.

Not a test. Replays the seeded traces of ``bench/traces.py`` through a
cache-aside client (GET; on a miss SET) against:

* ``backend``: the real :class:`aegiskv.backends.memory.MemoryBackend` of
  this checkout, under ``--max-memory`` bytes with its real byte accounting
  (entries and tables), 100-byte values;
* ``backend@REF`` (``--against REF``, repeatable): the same file at a git
  ref, for before/after comparisons;
* reference policies sized in *keys*, at the number of keys the backend held
  on the same trace (the mean over the run's second half), so that what is
  compared is the policy, not the bytes per key:

  - ``lru``: exact LRU (Redis's allkeys-lru approximates it with samples);
  - ``redis-lfu``: Redis's allkeys-lfu as its source describes it: an 8-bit
    logarithmic counter (lfu-log-factor 10, new keys at 5), decremented once
    per lfu-decay-time (1 minute, taken as ``--lfu-minute`` requests), and
    eviction from a pool of 16 candidates refilled with 5 sampled keys;
  - ``arc``: Megiddo and Modha's adaptive replacement cache;
  - ``s3-fifo``: Yang et al. 2023: a 10% FIFO for new keys, a 90% main FIFO
    with 2-bit use counters, a ghost FIFO of keys evicted from the small one;
  - ``w-tinylfu``: Caffeine's: a 1% LRU window, an 80/20 SLRU main cache and
    a count-min sketch (4-bit counters, halved every 10x capacity accesses)
    with a doorkeeper, admitting a window victim only if it was used more
    often than the main cache's victim.

For each trace: the overall hit ratio, the hit ratio in each of ``--windows``
equal windows (a slow collapse shows there) and the keys held. Writes
bench/results/eviction_sim.txt and .json.

    python bench/eviction_sim.py [--requests 2000000] [--max-memory 4194304] [--keyspace 150000]
                                 [--traces zipf,scan,drift,daily] [--against 5d7faf7] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py
from traces import KEY_FORMAT, TRACES, generate

from aegiskv.backends.base import BackendOptions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VALUE = b"v" * 100


class Policy:
    """A cache under test: ``run(ids)`` replays key ids cache-aside and returns the hits."""

    name = "abstract"

    def run(self, ids: Iterable[int]) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class BackendPolicy(Policy):
    """A MemoryBackend (the class given) under a byte budget, driven as the server drives it."""

    def __init__(self, name: str, backend_class: type, max_memory: int, value: bytes = VALUE) -> None:
        self.name = name
        self.backend = backend_class(BackendOptions(max_memory_bytes=max_memory), clock=lambda: 0)
        self._value = value

    def run(self, ids: Iterable[int]) -> int:
        get, put, value = self.backend.get, self.backend.put, self._value
        hits = 0
        for number in ids:
            key = KEY_FORMAT % number
            if get(key) is None:
                put(key, value)
            else:
                hits += 1
        return hits

    def __len__(self) -> int:
        return len(self.backend)


class Lru(Policy):
    name = "lru"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._table: OrderedDict[int, None] = OrderedDict()

    def run(self, ids: Iterable[int]) -> int:
        table, capacity, hits = self._table, self.capacity, 0
        move, pop = table.move_to_end, table.popitem
        for key in ids:
            if key in table:
                move(key)
                hits += 1
            else:
                table[key] = None
                if len(table) > capacity:
                    pop(last=False)
        return hits

    def __len__(self) -> int:
        return len(self._table)


class RedisLfu(Policy):
    """Redis 7.0 allkeys-lfu (evict.c, db.c): log counter, decay per minute, pooled sampled eviction."""

    name = "redis-lfu"
    LOG_FACTOR = 10
    INIT = 5
    SAMPLES = 5
    POOL = 16

    def __init__(self, capacity: int, minute: int, seed: int = 1) -> None:
        self.capacity = capacity
        self.minute = minute  # requests per lfu-decay-time
        self._counters: dict[int, tuple[int, int]] = {}  # key -> (counter, minute of last decrement)
        self._keys: list[int] = []
        self._position: dict[int, int] = {}
        self._pool: list[tuple[int, int]] = []  # (score, key); higher score evicted first
        self._rng = random.Random(seed)
        self._now = 0

    def _decayed(self, counter: int, last: int) -> int:
        periods = self._now // self.minute - last
        return max(0, counter - periods) if periods > 0 else counter

    def _touch(self, key: int, counter: int, last: int) -> None:
        counter = self._decayed(counter, last)
        if counter < 255:
            base = max(0, counter - self.INIT)
            if self._rng.random() < 1.0 / (base * self.LOG_FACTOR + 1):
                counter += 1
        self._counters[key] = (counter, self._now // self.minute)

    def _evict(self) -> None:
        keys, counters, pool = self._keys, self._counters, self._pool
        for _ in range(self.SAMPLES):
            key = keys[int(self._rng.random() * len(keys))]
            counter, last = counters[key]
            score = 255 - self._decayed(counter, last)
            if any(pooled == key for _score, pooled in pool):
                continue
            if len(pool) < self.POOL:
                pool.append((score, key))
            elif score > pool[0][0]:
                pool[0] = (score, key)
            pool.sort()
        while pool:
            _score, victim = pool.pop()
            if victim in counters:
                self._remove(victim)
                return
        self._remove(keys[int(self._rng.random() * len(keys))])

    def _remove(self, key: int) -> None:
        del self._counters[key]
        position = self._position.pop(key)
        last = self._keys.pop()
        if position < len(self._keys):
            self._keys[position] = last
            self._position[last] = position

    def run(self, ids: Iterable[int]) -> int:
        counters, hits = self._counters, 0
        for key in ids:
            self._now += 1
            found = counters.get(key)
            if found is not None:
                self._touch(key, *found)
                hits += 1
                continue
            if len(counters) >= self.capacity:
                self._evict()
            counters[key] = (self.INIT, self._now // self.minute)
            self._position[key] = len(self._keys)
            self._keys.append(key)
        return hits

    def __len__(self) -> int:
        return len(self._counters)


class Arc(Policy):
    """Adaptive replacement cache (Megiddo & Modha, FAST 2003), in keys."""

    name = "arc"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.target = 0.0  # p: the share of the cache T1 (seen once recently) aims for
        self.t1: OrderedDict[int, None] = OrderedDict()
        self.t2: OrderedDict[int, None] = OrderedDict()
        self.b1: OrderedDict[int, None] = OrderedDict()
        self.b2: OrderedDict[int, None] = OrderedDict()

    def _replace(self, in_b2: bool) -> None:
        if self.t1 and (len(self.t1) > self.target or (in_b2 and len(self.t1) == self.target)):
            key, _ = self.t1.popitem(last=False)
            self.b1[key] = None
        else:
            key, _ = self.t2.popitem(last=False)
            self.b2[key] = None

    def run(self, ids: Iterable[int]) -> int:
        t1, t2, b1, b2, capacity, hits = self.t1, self.t2, self.b1, self.b2, self.capacity, 0
        for key in ids:
            if key in t1:
                del t1[key]
                t2[key] = None
                hits += 1
            elif key in t2:
                t2.move_to_end(key)
                hits += 1
            elif key in b1:
                self.target = min(capacity, self.target + max(1.0, len(b2) / len(b1)))
                self._replace(False)
                del b1[key]
                t2[key] = None
            elif key in b2:
                self.target = max(0.0, self.target - max(1.0, len(b1) / len(b2)))
                self._replace(True)
                del b2[key]
                t2[key] = None
            else:
                if len(t1) + len(b1) == capacity:
                    if len(t1) < capacity:
                        b1.popitem(last=False)
                        self._replace(False)
                    else:
                        t1.popitem(last=False)
                elif len(t1) + len(t2) + len(b1) + len(b2) >= capacity:
                    if len(t1) + len(t2) + len(b1) + len(b2) >= 2 * capacity:
                        b2.popitem(last=False)
                    if len(t1) + len(t2) >= capacity:
                        self._replace(False)
                t1[key] = None
        return hits

    def __len__(self) -> int:
        return len(self.t1) + len(self.t2)


class S3Fifo(Policy):
    """S3-FIFO (Yang et al., SOSP 2023), in keys."""

    name = "s3-fifo"

    def __init__(self, capacity: int) -> None:
        self.small_capacity = max(1, capacity // 10)
        self.main_capacity = capacity - self.small_capacity
        self.small: deque[int] = deque()
        self.main: deque[int] = deque()
        self.ghost: OrderedDict[int, None] = OrderedDict()
        self.frequency: dict[int, int] = {}
        self.in_main: set[int] = set()

    def _evict_main(self) -> None:
        while True:
            key = self.main.popleft()
            if self.frequency[key] > 0:
                self.frequency[key] -= 1
                self.main.append(key)
            else:
                del self.frequency[key]
                self.in_main.discard(key)
                return

    def _insert_main(self, key: int) -> None:
        if len(self.main) >= self.main_capacity:
            self._evict_main()
        self.main.append(key)
        self.in_main.add(key)

    def _evict_small(self) -> None:
        key = self.small.popleft()
        if self.frequency[key] > 1:
            self.frequency[key] = 0
            self._insert_main(key)
        else:
            del self.frequency[key]
            self.ghost[key] = None
            if len(self.ghost) > self.main_capacity:
                self.ghost.popitem(last=False)

    def run(self, ids: Iterable[int]) -> int:
        frequency, hits = self.frequency, 0
        for key in ids:
            count = frequency.get(key)
            if count is not None:
                frequency[key] = min(3, count + 1)
                hits += 1
                continue
            if key in self.ghost:
                del self.ghost[key]
                frequency[key] = 0
                self._insert_main(key)
                continue
            if len(self.small) >= self.small_capacity:
                self._evict_small()
            frequency[key] = 0
            self.small.append(key)
        return hits

    def __len__(self) -> int:
        return len(self.frequency)


class WTinyLfu(Policy):
    """W-TinyLFU (Einziger, Friedman & Manes 2017) as Caffeine sizes it, without its hill climber; in keys."""

    name = "w-tinylfu"
    DEPTH = 4

    def __init__(self, capacity: int) -> None:
        self.window_capacity = max(1, capacity // 100)
        main = capacity - self.window_capacity
        self.protected_capacity = int(main * 0.8)
        self.main_capacity = main
        self.window: OrderedDict[int, None] = OrderedDict()
        self.probation: OrderedDict[int, None] = OrderedDict()
        self.protected: OrderedDict[int, None] = OrderedDict()
        width = 1
        while width < capacity:
            width *= 2
        self.mask = width - 1
        self.sketch = [bytearray(width) for _ in range(self.DEPTH)]
        self.door: set[int] = set()
        self.additions = 0
        self.reset_at = 10 * capacity

    def _hashes(self, key: int) -> list[int]:
        return [hash((key, row)) & self.mask for row in range(self.DEPTH)]

    def _record(self, key: int) -> None:
        if key not in self.door:
            self.door.add(key)
        else:
            for row, index in zip(self.sketch, self._hashes(key)):
                if row[index] < 15:
                    row[index] += 1
        self.additions += 1
        if self.additions >= self.reset_at:
            for row in self.sketch:
                for index in range(len(row)):
                    row[index] >>= 1
            self.door.clear()
            self.additions //= 2

    def _estimate(self, key: int) -> int:
        estimate = min(row[index] for row, index in zip(self.sketch, self._hashes(key)))
        return estimate + (key in self.door)

    def run(self, ids: Iterable[int]) -> int:
        window, probation, protected, hits = self.window, self.probation, self.protected, 0
        for key in ids:
            self._record(key)
            if key in window:
                window.move_to_end(key)
                hits += 1
            elif key in protected:
                protected.move_to_end(key)
                hits += 1
            elif key in probation:
                del probation[key]
                protected[key] = None
                if len(protected) > self.protected_capacity:
                    demoted, _ = protected.popitem(last=False)
                    probation[demoted] = None
                hits += 1
            else:
                window[key] = None
                if len(window) > self.window_capacity:
                    candidate, _ = window.popitem(last=False)
                    if len(probation) + len(protected) < self.main_capacity:
                        probation[candidate] = None
                    else:
                        victim = next(iter(probation)) if probation else next(iter(protected))
                        if self._estimate(candidate) > self._estimate(victim):
                            (probation if victim in probation else protected).pop(victim)
                            probation[candidate] = None
        return hits

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)


@dataclass
class Result:
    policy: str
    trace: str
    requests: int
    hits: int
    windows: list[float] = field(default_factory=list)
    keys_held: float = 0.0
    seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def replay(policy: Policy, trace: str, requests: int, keyspace: int, windows: int, seed: int) -> Result:
    """Replay ``trace`` through ``policy``; hit ratio per window, keys held (mean of the second half)."""
    window_size = max(1, requests // windows)
    result = Result(policy.name, trace, requests, 0)
    held: list[int] = []
    window_hits = window_requests = 0
    started = time.perf_counter()
    for chunk in generate(trace, requests, keyspace, seed):
        offset = 0
        while offset < len(chunk):
            take = min(len(chunk) - offset, window_size - window_requests)
            hits = policy.run(chunk[offset : offset + take])
            offset += take
            window_hits += hits
            window_requests += take
            result.hits += hits
            if window_requests == window_size:
                result.windows.append(window_hits / window_size)
                held.append(len(policy))
                window_hits = window_requests = 0
    result.seconds = time.perf_counter() - started
    second_half = held[len(held) // 2 :] or [len(policy)]
    result.keys_held = sum(second_half) / len(second_half)
    return result


def backend_at(ref: str) -> type:
    """MemoryBackend as aegiskv/backends/memory.py was at git ``ref`` (imported under a private name)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:aegiskv/backends/memory.py"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="aegis-eviction-sim-")) / f"memory_at_{ref.replace('/', '_')}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MemoryBackend  # type: ignore[no-any-return]


def references(capacity: int, lfu_minute: int) -> list[Callable[[], Policy]]:
    return [
        lambda: Lru(capacity),
        lambda: RedisLfu(capacity, lfu_minute),
        lambda: Arc(capacity),
        lambda: S3Fifo(capacity),
        lambda: WTinyLfu(capacity),
    ]


SCRIPT = "eviction_sim.py"
SECTION_TITLE = "Eviction policies (simulation)"
SECTION_STEMS = ["eviction_sim"]
SECTION_INTRO = (
    "The traces of bench/hit_ratio.py replayed in process against the memory backend (`backend`, and "
    "`backend@<ref>` with `--against`) and reference policies sized to the keys the backend held: "
    "LRU, Redis's LFU, ARC, S3-FIFO, W-TinyLFU. Run: `python bench/eviction_sim.py`."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--max-memory", type=int, default=4 * 2**20, help="bytes (default 4 MiB)")
    parser.add_argument("--keyspace", type=int, default=150_000)
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--against", action="append", default=[], metavar="REF", help="also the backend at REF")
    parser.add_argument("--lfu-minute", type=int, default=3_000_000, help="requests per LFU decay period")
    parser.add_argument("--no-references", action="store_true", help="only the backend(s)")
    parser.add_argument("--quick", action="store_true", help="requests / 10, two windows fewer")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    requests = args.requests // 10 if args.quick else args.requests
    windows = max(2, args.windows - 2) if args.quick else args.windows

    from aegiskv.backends.memory import MemoryBackend

    backends: list[tuple[str, type]] = [("backend", MemoryBackend)]
    backends += [(f"backend@{ref}", backend_at(ref)) for ref in args.against]
    results: list[Result] = []
    for trace in args.traces.split(","):
        measured = []
        for name, backend_class in backends:
            policy = BackendPolicy(name, backend_class, args.max_memory)
            measured.append(replay(policy, trace, requests, args.keyspace, windows, args.seed))
            print_result(measured[-1])
        capacity = round(measured[0].keys_held)
        if not args.no_references:
            for make in references(capacity, args.lfu_minute):
                measured.append(replay(make(), trace, requests, args.keyspace, windows, args.seed))
                print_result(measured[-1])
        results.extend(measured)

    lines = [
        f"Hit ratio, cache-aside, {requests:,} requests per trace, keyspace {args.keyspace:,}, seed {args.seed};"
        f" backends: --max-memory {args.max_memory:,} bytes, 100-byte values; references sized in keys"
        " to what the first backend held",
        f"{'trace':<7}{'policy':<22}{'hit ratio':>10}{'keys':>9}  per window",
    ]
    for result in results:
        lines.append(
            f"{result.trace:<7}{result.policy:<22}{result.hit_ratio:>10.3f}{result.keys_held:>9.0f}  "
            + " ".join(f"{ratio:.2f}" for ratio in result.windows)
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"eviction_sim{suffix}.txt").write_text(text)
    report = {
        "requests": requests,
        "keyspace": args.keyspace,
        "max_memory": args.max_memory,
        "seed": args.seed,
        "results": [
            {
                "trace": result.trace,
                "policy": result.policy,
                "hit_ratio": result.hit_ratio,
                "windows": result.windows,
                "keys_held": result.keys_held,
            }
            for result in results
        ],
    }
    (RESULTS / f"eviction_sim{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


def print_result(result: Result) -> None:
    print(
        f"{result.trace} {result.policy}: {result.hit_ratio:.3f} ({result.keys_held:.0f} keys, {result.seconds:.0f} s)"
        f" windows {' '.join(f'{ratio:.2f}' for ratio in result.windows)}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
