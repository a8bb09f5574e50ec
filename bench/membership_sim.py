"""Simulation: the real SWIM membership code at 10, 100 and 1,000 nodes.

Not a test. Every member is an :class:`aegiskv.cluster.membership.SwimMembership`
with the default (memberlist LAN) timing, stepped by a simulated clock over
aegiskv/testing/simnet.py (1 ms delay + up to 0.5 ms jitter). For each size:

* detection: one node is killed; the time until each other member marks it
  dead (p50, p99 over members and trials) and until all have;
* false deaths: live members declared dead by anyone during ``--loss-seconds``
  at 5% and 10% datagram loss (and the suspicions that were refuted);
* load: messages and bytes each member sends per second in steady state;
* convergence: time until every member knows a node that joined through a seed.

Writes bench/results/membership.txt and .json.

    python bench/membership_sim.py [--sizes 10,100,1000] [--loss-seconds 120]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from results_md import render_or_complain, write_text_section  # bench/results_md.py

from aegiskv.cluster.membership import State
from aegiskv.testing.simnet import NetworkConditions, Simulation

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def detection(size: int, trials: int, seed: int) -> dict[str, float]:
    per_member: list[float] = []
    all_know: list[float] = []
    for trial in range(trials):
        sim = Simulation(size, seed=seed + trial)
        sim.run_until(10)
        victim = f"n{trial % size:04d}"
        marked = _record_deaths(sim, victim)
        sim.kill(victim)
        killed_at = sim.now
        sim.run_while(lambda marked=marked: len(marked) < size - 1, limit=120)
        delays = [at - killed_at for at in marked.values()]
        per_member.extend(delays)
        all_know.append(max(delays) if len(delays) == size - 1 else float("inf"))
    return {
        "dead_p50_s": percentile(per_member, 0.5),
        "dead_p99_s": percentile(per_member, 0.99),
        "all_know_max_s": max(all_know),
    }


def _record_deaths(sim: Simulation, victim: str) -> dict[str, float]:
    """observer -> when it first marked ``victim`` dead."""
    marked: dict[str, float] = {}

    def watch(observer: str, subject: str, state: State, at: float) -> None:
        if subject == victim and state == State.DEAD and observer not in marked:
            marked[observer] = at

    sim.observers.append(watch)
    return marked


def false_deaths(size: int, loss: float, seconds: float, seed: int) -> dict[str, float]:
    sim = Simulation(size, conditions=NetworkConditions(loss=loss), seed=seed)
    deaths = 0
    suspicions = 0

    def watch(observer: str, subject: str, state: State, at: float) -> None:
        nonlocal deaths, suspicions
        if state == State.DEAD:
            deaths += 1
        elif state == State.SUSPECT:
            suspicions += 1

    sim.observers.append(watch)
    sim.run_until(seconds)
    return {"false_deaths": deaths, "suspicions_refuted": suspicions, "seconds": seconds}


def load(size: int, seconds: float, seed: int) -> dict[str, float]:
    sim = Simulation(size, seed=seed)
    sim.run_until(5)
    before = {node_id: dict(node.counters) for node_id, node in sim.nodes.items()}
    start = sim.now
    sim.run_until(start + seconds)
    elapsed = sim.now - start
    messages = [
        node.counters["messages_sent"] - before[node_id]["messages_sent"] for node_id, node in sim.nodes.items()
    ]
    sent = [node.counters["bytes_sent"] - before[node_id]["bytes_sent"] for node_id, node in sim.nodes.items()]
    return {
        "messages_per_node_s": statistics.mean(messages) / elapsed,
        "bytes_per_node_s": statistics.mean(sent) / elapsed,
    }


def convergence(size: int, seed: int) -> float:
    sim = Simulation(size, seed=seed)
    sim.run_until(5)
    sim.join("n9999", seed="n0000")
    joined_at = sim.now

    def someone_missing() -> bool:
        return any(sim.view(observer, "n9999") != State.ALIVE for observer in sim.nodes if observer != "n9999")

    sim.run_while(someone_missing, limit=120)
    return sim.now - joined_at


SCRIPT = "membership_sim.py"
SECTION_TITLE = "Membership (simulation)"
SECTION_STEMS = ["membership"]
SECTION_INTRO = (
    "The real SWIM code (aegiskv/cluster/membership.py) in a simulated network, default timing: how "
    "long until a killed node is declared dead and known dead by all, false deaths under 5% and 10% "
    "packet loss, messages and bytes per node per second, and how long a join takes to reach every "
    "member. Detection time grows with log10(N) by design (the suspicion timeout is 4 x log10(N) x "
    "the probe interval, as in memberlist). Run: `python bench/membership_sim.py`."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--loss-seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    rows = []
    for size in (int(text) for text in args.sizes.split(",")):
        started = time.perf_counter()
        trials = 5 if size <= 100 else 2
        row: dict[str, float] = {"members": size, "trials": trials}
        row.update(detection(size, trials, args.seed))
        loss_seconds = args.loss_seconds if size <= 100 else args.loss_seconds / 4
        for loss in (0.05, 0.10):
            result = false_deaths(size, loss, loss_seconds, args.seed)
            row[f"false_deaths_{int(loss * 100)}pct"] = result["false_deaths"]
            row[f"suspicions_{int(loss * 100)}pct"] = result["suspicions_refuted"]
            row[f"loss_seconds_{int(loss * 100)}pct"] = loss_seconds
        row.update(load(size, 30.0, args.seed))
        row["join_converged_s"] = convergence(size, args.seed)
        row["wall_seconds"] = time.perf_counter() - started
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "membership simulation (real SwimMembership, default LAN timing: probe 1 s, timeout 0.5 s, suspicion x4)",
        "",
        f"{'N':>5} {'dead p50 s':>10} {'dead p99 s':>10} {'all know s':>10} {'false deaths 5%/10%':>20} "
        f"{'(over s)':>9} {'suspicions 5%/10%':>18} {'msgs/node/s':>12} {'bytes/node/s':>13} {'join conv s':>12}",
    ]
    for row in rows:
        lines.append(
            f"{row['members']:>5} {row['dead_p50_s']:>10.2f} {row['dead_p99_s']:>10.2f} {row['all_know_max_s']:>10.2f} "
            f"{row['false_deaths_5pct']:>9}/{row['false_deaths_10pct']:<10} {row['loss_seconds_10pct']:>9.0f} "
            f"{row['suspicions_5pct']:>8}/{row['suspicions_10pct']:<9} {row['messages_per_node_s']:>12.2f} "
            f"{row['bytes_per_node_s']:>13.0f} {row['join_converged_s']:>12.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "membership.txt").write_text("\n".join(lines) + "\n")
    (RESULTS / "membership.json").write_text(json.dumps(rows, indent=1) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
