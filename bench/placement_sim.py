"""Simulation: how placements spread shards and how much a join or leave moves.

Not a test. For the built-in ring (default options) and the example
rendezvous plugin, at cluster sizes 3..1,000, with ``--shards`` shards and
replication factor 3:

* moved: the share of all replicas (shard, member) that some member gains when
  one member joins (or leaves), as a multiple of the ideal 1/N (N = the larger
  member count): 1.0 means nothing moved that did not have to;
* balance: max / mean replicas per member, and the same for primaries;
* the time one ``assign`` takes.

Each size runs several trials with fresh random member ids (seeded); the table
gives the mean and the worst trial. Writes bench/results/placement.txt and .json.

    python bench/placement_sim.py [--shards 256] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from results_md import render_or_complain, write_text_section  # bench/results_md.py

from aegiskv.cluster.interfaces import Placement, PlacementOptions
from aegiskv.cluster.placement import RingPlacement
from aegiskv.testing.placement_checks import moved_fraction, replica_counts

RESULTS = Path(__file__).resolve().parent / "results"
SIZES_AND_TRIALS = [(3, 20), (5, 20), (10, 20), (30, 10), (100, 5), (300, 3), (1000, 2)]
REPLICATION_FACTOR = 3


def _placements() -> dict[str, Callable[[], Placement]]:
    found: dict[str, Callable[[], Placement]] = {"ring": lambda: RingPlacement(PlacementOptions())}
    try:
        from aegiskv_rendezvous import RendezvousPlacement
    except ImportError:
        print("aegiskv-rendezvous is not installed; measuring the ring only", file=sys.stderr)
    else:
        found["rendezvous"] = lambda: RendezvousPlacement(PlacementOptions())
    return found


def _balance(assignment: list[tuple[str, ...]], members: int) -> tuple[float, float]:
    replicas = replica_counts(assignment)
    primaries = Counter(replica_set[0] for replica_set in assignment)
    replica_mean = sum(replicas.values()) / members
    primary_mean = len(assignment) / members
    return max(replicas.values()) / replica_mean, max(primaries.values()) / primary_mean


def measure(make: Callable[[], Placement], size: int, trials: int, shards: int, chooser: random.Random) -> dict:
    joins, leaves, replica_balance, primary_balance, seconds = [], [], [], [], []
    for _ in range(trials):
        members = [f"node-{chooser.getrandbits(48):012x}" for _ in range(size)]
        placement = make()
        started = time.perf_counter()
        base = placement.assign(members, shards, REPLICATION_FACTOR)
        seconds.append(time.perf_counter() - started)
        replica_max, primary_max = _balance(base, size)
        replica_balance.append(replica_max)
        primary_balance.append(primary_max)
        joined = placement.assign([*members, f"joiner-{chooser.getrandbits(48):012x}"], shards, REPLICATION_FACTOR)
        joins.append(moved_fraction(base, joined) * (size + 1))
        if size > 1:
            left = placement.assign(members[1:], shards, REPLICATION_FACTOR)
            leaves.append(moved_fraction(base, left) * size)
    return {
        "members": size,
        "trials": trials,
        "join_moved_x_ideal_mean": statistics.mean(joins),
        "join_moved_x_ideal_max": max(joins),
        "leave_moved_x_ideal_mean": statistics.mean(leaves),
        "leave_moved_x_ideal_max": max(leaves),
        "replicas_max_over_mean": max(replica_balance),
        "primaries_max_over_mean": max(primary_balance),
        "assign_ms": statistics.median(seconds) * 1000,
    }


SCRIPT = "placement_sim.py"
SECTION_TITLE = "Placement (simulation)"
SECTION_STEMS = ["placement", "placement_4096_shards"]
SECTION_INTRO = (
    "Share of replicas moved by one join or leave, as a multiple of the ideal 1/N, and the most "
    "replicas and primaries on one node against the mean, replication factor 3, for the built-in "
    "ring and the rendezvous plugin (plugins/aegiskv-rendezvous). Run: `python "
    "bench/placement_sim.py` (and `--shards 4096 --output placement_4096_shards`)."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-members", type=int, default=1000, help="skip larger cluster sizes")
    parser.add_argument("--output", default="placement", help="results file name (without extension)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    results: dict[str, list[dict]] = {}
    lines = [
        f"placement simulation: {args.shards} shards, replication factor {REPLICATION_FACTOR}, "
        f"seed {args.seed}; moved = share of replicas gained by someone, as a multiple of 1/N "
        "(mean / worst trial); balance = worst trial's max/mean",
        "",
        f"{'placement':<11} {'N':>5} {'trials':>6} {'join moved':>13} {'leave moved':>13} "
        f"{'replicas max/mean':>18} {'primaries max/mean':>19} {'assign ms':>10}",
    ]
    for name, make in _placements().items():
        chooser = random.Random(args.seed)
        rows = results.setdefault(name, [])
        for size, trials in SIZES_AND_TRIALS:
            if size > args.max_members:
                continue
            row = measure(make, size, trials, args.shards, chooser)
            rows.append(row)
            lines.append(
                f"{name:<11} {size:>5} {trials:>6} "
                f"{row['join_moved_x_ideal_mean']:>6.2f}/{row['join_moved_x_ideal_max']:<6.2f} "
                f"{row['leave_moved_x_ideal_mean']:>6.2f}/{row['leave_moved_x_ideal_max']:<6.2f} "
                f"{row['replicas_max_over_mean']:>18.2f} {row['primaries_max_over_mean']:>19.2f} "
                f"{row['assign_ms']:>10.1f}"
            )
            print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.txt").write_text("\n".join(lines) + "\n")
    summary = {"shards": args.shards, "results": results}
    (RESULTS / f"{args.output}.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)


if __name__ == "__main__":
    main()
