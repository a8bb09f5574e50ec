"""Benchmark: the memory the per-key access counters cost, as extra RSS per key against an earlier revision.

Not a test. Issue 25's bar: the LFU counter behind OBJECT FREQ may add at
most 2 bytes per key, measured with 1,000,000 keys of 100 bytes. This starts
a node of ``--before`` (default a2f468b, the last revision without the
counters) and one of ``--after`` (default HEAD), each built the same way into
a venv of its own (bench/baseline.py: ``git archive`` of the revision, so the
working tree does not matter; compiled by default, as shipped), loads
``--keys`` keys of 100 bytes into each through ``redis-cli --pipe``, and reads
each process's RSS before and after the load and INFO's ``used_memory`` (what
``--max-memory`` is charged). The nodes run lone (``--gossip off``): a
one-node cluster's replication backlog would hold the load's writes too.

The two nodes are measured one after the other, ``--runs`` times in
alternating order (default 3); the table gives each run and the medians. The
counter table's own size follows from its layout (aegiskv/backends/access.py:
a 1-byte count and a 2-byte minute per slot, a slot per two keys rounded up to
a power of two) and is printed beside the measurement.

    python bench/access_memory.py [--before REV] [--after REV] [--keys 1000000] [--runs 3]
        [--build compiled|interpreted] [--render]

Writes bench/results/access_memory.json and .txt and its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import servers
from baseline import BUILDS, DEFAULT_CACHE, Baseline, build_baseline, resolve, start_baseline
from results_md import render_or_complain, write_text_section
from servers import RESULTS, info_field, mass_insert, rss_bytes

SCRIPT = "access_memory.py"
SECTION_TITLE = "Access counters: memory per key"
STEM = "access_memory"
SECTION_INTRO = (
    "Extra RSS per key that the LFU access counters (OBJECT FREQ, IDLETIME, hot keys) cost: a node of "
    "the revision before them and one after, the same build, each loaded with 1,000,000 keys of 100 "
    "bytes through `redis-cli --pipe` (lone nodes, `--gossip off`). Issue 25's bar: at most 2 bytes per "
    "key. Run: `python bench/access_memory.py` (`--before REV --after REV`)."
)
LIMIT_BYTES_PER_KEY = 2.0


def counter_table_bytes(keys: int) -> int:
    """The arrays' size for ``keys`` keys by aegiskv/backends/access.py's layout (3 bytes a slot)."""
    slots = 256
    while keys > slots * 2:
        slots *= 2
    return 3 * slots


def load_and_measure(baseline: Baseline, workdir: str, keys: int, name: str) -> dict[str, float]:
    data_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
    server = start_baseline(baseline, data_dir, name, gossip=None)
    try:
        rss_before = rss_bytes(server.pid)
        used_before = info_field(server.port, "memory", "used_memory")
        mass_insert(server.port, keys, os.path.join(workdir, "mass.resp"))
        rss_after = rss_bytes(server.pid)
        used_after = info_field(server.port, "memory", "used_memory")
    finally:
        server.stop()
    return {
        "rss_bytes_per_key": (rss_after - rss_before) / keys,
        "used_memory_bytes_per_key": (used_after - used_before) / keys,
        "rss_after_bytes": rss_after,
    }


def report(result: dict) -> str:
    before, after = result["before"], result["after"]
    lines = [
        f"AegisKV access counters, extra memory per key: {after[:7]} over {before[:7]}, "
        f"{result['build']} builds, {result['keys']:,} keys of 100 bytes; python {result['python']}",
        "",
        f"{'run':>4}  {'RSS B/key before':>17}  {'after':>8}  {'extra':>7}  "
        f"{'used_memory B/key before':>25}  {'after':>8}  {'extra':>7}",
    ]
    for number, run in enumerate(result["runs"], 1):
        old, new = run["before"], run["after"]
        lines.append(
            f"{number:>4}  {old['rss_bytes_per_key']:>17.2f}  {new['rss_bytes_per_key']:>8.2f}  "
            f"{new['rss_bytes_per_key'] - old['rss_bytes_per_key']:>7.2f}  "
            f"{old['used_memory_bytes_per_key']:>25.2f}  {new['used_memory_bytes_per_key']:>8.2f}  "
            f"{new['used_memory_bytes_per_key'] - old['used_memory_bytes_per_key']:>7.2f}"
        )
    median = result["median_extra"]
    lines += [
        "",
        f"median extra: RSS {median['rss']:.2f} B/key, used_memory {median['used_memory']:.2f} B/key "
        f"(bar: {LIMIT_BYTES_PER_KEY:.0f}); the counter table by its layout: "
        f"{result['table_bytes']:,} bytes = {result['table_bytes'] / result['keys']:.2f} B/key",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="a2f468b", help="the revision without the counters (default a2f468b)")
    parser.add_argument("--after", default="HEAD", help="the revision with them (default HEAD)")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--build", choices=BUILDS, default="compiled")
    parser.add_argument("--baseline-cache", default=str(DEFAULT_CACHE), help="where the built venvs are kept")
    parser.add_argument("--render", action="store_true", help="only rewrite this section of bench/RESULTS.md")
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, [STEM])
    if args.keys <= 0 or args.runs <= 0:
        parser.error("--keys and --runs must be positive")
    servers.require_redis_tools()
    cache = Path(args.baseline_cache)
    builds = {
        side: build_baseline(resolve(rev), args.build, cache)
        for side, rev in (("before", args.before), ("after", args.after))
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="aegis-access-memory-") as workdir:
        for number in range(args.runs):
            order = ("before", "after") if number % 2 == 0 else ("after", "before")
            run = {}
            for side in order:
                print(f"run {number + 1}: {side} ({builds[side].short})", flush=True)
                run[side] = load_and_measure(builds[side], workdir, args.keys, f"aegis-{side}")
            runs.append(run)
    extra_rss = [run["after"]["rss_bytes_per_key"] - run["before"]["rss_bytes_per_key"] for run in runs]
    extra_used = [
        run["after"]["used_memory_bytes_per_key"] - run["before"]["used_memory_bytes_per_key"] for run in runs
    ]
    result = {
        "before": builds["before"].commit,
        "after": builds["after"].commit,
        "build": args.build,
        "keys": args.keys,
        "python": platform.python_version(),
        "runs": runs,
        "median_extra": {"rss": statistics.median(extra_rss), "used_memory": statistics.median(extra_used)},
        "table_bytes": counter_table_bytes(args.keys),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{STEM}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (RESULTS / f"{STEM}.txt").write_text(text)
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, [STEM])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
