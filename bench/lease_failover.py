"""Simulation: how long a shard is unwritable after its primary dies, and what leases cost.

Not a test. The real lease core (aegiskv/cluster/leases.py) over the simulated
network of tests/lease_sim.py (1 ms delay + up to 2 ms jitter, clocks drifting
up to +-2.5%, a write every 10 ms). Each trial lets a 3-node shard (RF 3)
settle, kills its holder at a random moment of the renewal cycle, and
measures until another node holds the lease ("elected") and until a write is
acknowledged by a majority again ("writable", the client's view). For each
lease duration, and for several election delays at the default lease:
p50 / p90 / p99 / max over the trials. Then the steady-state cost: lease
messages per second per shard (requests and replies of the renewal rounds).

Writes bench/results/lease_failover.txt and .json.

    python bench/lease_failover.py [--trials 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py

from aegiskv.cluster.leases import LeaseTiming
from tests.lease_sim import LeaseSim, failover_time, percentile

RESULTS = Path(__file__).resolve().parent / "results"


def failovers(timing: LeaseTiming, trials: int, nodes: int = 3) -> dict[str, float]:
    elected: list[float] = []
    writable: list[float] = []
    for seed in range(trials):
        held, acked = failover_time(timing, seed, nodes=nodes, settle=3.0, write_interval=0.01)
        elected.append(held)
        writable.append(acked)
    row: dict[str, float] = {"trials": trials}
    for name, values in (("elected", elected), ("writable", writable)):
        for label, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            row[f"{name}_{label}_s"] = percentile(values, fraction)
        row[f"{name}_max_s"] = max(values)
        row[f"{name}_never"] = sum(1 for v in values if math.isinf(v))
    return row


def renewal_traffic(timing: LeaseTiming, seconds: float = 60.0) -> dict[str, float]:
    """Lease messages per second per shard once every shard has its holder (no faults, 3 nodes, RF 3)."""
    shards = 6
    sim = LeaseSim(nodes=3, shards=shards, timing=timing, seed=1, write_interval=None)
    sim.run_until(5.0)
    before = sim.lease_messages
    sim.run_until(5.0 + seconds)
    assert not sim.violations, sim.violations
    return {"lease_messages_per_shard_s": (sim.lease_messages - before) / seconds / shards}


SCRIPT = "lease_failover.py"
SECTION_TITLE = "Lease failover (simulation)"
SECTION_STEMS = ["lease_failover"]
SECTION_INTRO = (
    "The real lease code (aegiskv/cluster/leases.py) in a simulated network: the holder of a shard's "
    "lease is killed, and the table gives the time until another member is elected and until a write "
    "is accepted again, for several lease durations and election delays. Run: `python "
    "bench/lease_failover.py`."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    default = LeaseTiming()
    configurations: list[tuple[str, LeaseTiming]] = [
        (f"lease {d:g} s", dataclasses.replace(default, lease_duration=d)) for d in (1.0, 2.0, 3.0)
    ]
    configurations += [
        (f"lease 2 s, election delay {delay:g} s", dataclasses.replace(default, election_delay=delay))
        for delay in (0.05, 0.1, 0.15, 0.25)
        if delay != default.election_delay
    ]
    rows = []
    started = time.process_time()
    for name, timing in configurations:
        row = {"configuration": name, **failovers(timing, args.trials), **renewal_traffic(timing)}
        rows.append(row)
        print(name, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)

    lines = [
        "lease failover simulation (real ShardLeases; 3 nodes, RF 3; kill the holder; "
        f"{args.trials} trials each; delay 1 ms + <=2 ms jitter; drift <=2.5%; a write every 10 ms)",
        f"defaults: {default}",
        "",
        f"{'configuration':38} {'elected s p50/p90/p99/max':>28} {'writable s p50/p90/p99/max':>28}"
        f" {'never':>6} {'msgs/shard/s':>13}",
    ]
    for row in rows:
        elected = "/".join(f"{row[f'elected_{k}_s']:.2f}" for k in ("p50", "p90", "p99", "max"))
        writable = "/".join(f"{row[f'writable_{k}_s']:.2f}" for k in ("p50", "p90", "p99", "max"))
        never = int(row["elected_never"] + row["writable_never"])
        lines.append(
            f"{row['configuration']:38} {elected:>28} {writable:>28} {never:>6}"
            f" {row['lease_messages_per_shard_s']:>13.2f}"
        )
    lines.append("")
    lines.append(f"(simulation CPU time {time.process_time() - started:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lease_failover.txt").write_text("\n".join(lines) + "\n")
    (RESULTS / "lease_failover.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
