"""Benchmark: real processes, real packet loss, default gossip timing.

Not a test (it runs for minutes). Starts ``--nodes`` aegis processes on
127.0.0.x with the default (memberlist LAN) gossip timing, drops ``--loss`` %
of the UDP datagrams to their gossip ports with nftables (as
tests/test_cluster_faults.py does, needs root), and for ``--seconds`` checks
every 2 s that no node has declared a live node dead. Then it kills one node
with SIGKILL and measures, per surviving node, the time until that node's
shard map no longer lists it.

Writes bench/results/gossip_loss.txt.

    sudo python bench/gossip_loss.py [--nodes 5] [--loss 10] [--seconds 600]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py

from tests.cluster_harness import Cluster, info, topology, wait_for_agreement
from tests.test_cluster_faults import LossyGossip

RESULTS = Path(__file__).resolve().parent / "results"


SCRIPT = "gossip_loss.py"
SECTION_TITLE = "Gossip under packet loss"
SECTION_STEMS = ["gossip_loss"]
SECTION_INTRO = (
    "Real `aegis` processes with nftables dropping a share of their gossip datagrams for a sustained "
    "period; then one node is killed. Needs root. Run: `sudo python bench/gossip_loss.py`."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--loss", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    default_timing = {
        "AEGIS_GOSSIP_PROBE_INTERVAL": "1s",
        "AEGIS_GOSSIP_PROBE_TIMEOUT": "0.5s",
        "AEGIS_GOSSIP_INTERVAL": "0.2s",
        "AEGIS_GOSSIP_PUSH_PULL_INTERVAL": "30s",
        "AEGIS_GOSSIP_SUSPICION_MULT": "4",
    }
    with tempfile.TemporaryDirectory() as workdir:
        cluster = Cluster(Path(workdir), env=default_timing)
        try:
            nodes = cluster.start_many(args.nodes)
            members = {f"n{index}" for index in range(args.nodes)}
            wait_for_agreement(nodes, members, timeout=60)
            loss = LossyGossip([node.addresses["gossip"][1] for node in nodes], percent=args.loss)
            try:
                started = time.monotonic()
                dropped_views = 0
                while time.monotonic() - started < args.seconds:
                    for node in nodes:
                        if set(topology(node)["nodes"]) != members:
                            dropped_views += 1
                    time.sleep(2)
                false_deaths = sum(info(node, "cluster")["aegis_gossip_members_dead"] for node in nodes)
                suspicions = sum(info(node, "cluster")["aegis_gossip_refutations"] for node in nodes)
                seen, lost = loss.counters()
                victim = nodes[len(nodes) // 2]
                survivors = [node for node in nodes if node is not victim]
                victim.kill()
                killed_at = time.monotonic()
                gone: dict[str, float] = {}
                while len(gone) < len(survivors) and time.monotonic() - killed_at < 120:
                    for node in survivors:
                        if node.address_text not in gone and victim.address_text not in {
                            entry["client"] for entry in topology(node)["nodes"].values()
                        }:
                            gone[node.address_text] = time.monotonic() - killed_at
                    time.sleep(0.05)
            finally:
                loss.remove()
        finally:
            cluster.close()
    times = sorted(gone.values())
    lines = [
        f"gossip under real packet loss: {args.nodes} aegis processes, default timing "
        f"(probe 1 s, timeout 0.5 s, suspicion x4), {args.loss}% of gossip datagrams dropped by nftables",
        "",
        f"sustained {args.seconds:.0f} s: {seen} datagrams, {lost} dropped ({100 * lost / max(seen, 1):.1f}%)",
        f"live nodes declared dead (sum over nodes): {false_deaths}; map checks missing a live node: "
        f"{dropped_views}; refutations of suspicion: {suspicions}",
        f"killed one node (SIGKILL): dropped from every survivor's map after "
        f"{', '.join(f'{value:.2f}' for value in times)} s (max {max(times) if times else float('nan'):.2f} s)",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gossip_loss.txt").write_text("\n".join(lines) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
