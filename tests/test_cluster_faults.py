"""Real packet loss on the gossip ports (nftables), against a cluster of real processes.

An nftables table of this test's own drops 10% of the UDP datagrams sent to
the nodes' gossip ports, chosen at random per packet by the kernel
(``numgen random``). Counters on the rules show the loss really happened.
Under that loss, for a sustained period, no live node may be declared dead;
then a node is killed and every other node must drop it within the bound.

Needs root and the ``nft`` tool (.ci/run installs nftables); skipped otherwise.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_harness import Cluster, info, topology, wait_for_agreement
from tests.wire import wait_until

NFT = shutil.which("nft") or ""  # "": not installed, and the module skips itself
pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.slow,
    pytest.mark.skipif(not NFT, reason="needs nftables (nft) for real packet loss"),
]

# Gossip three times faster than the LAN defaults: 30 s here is 90 probe rounds per node.
TIMING = {
    "AEGIS_GOSSIP_PROBE_INTERVAL": "0.33s",
    "AEGIS_GOSSIP_PROBE_TIMEOUT": "0.17s",
    "AEGIS_GOSSIP_INTERVAL": "0.07s",
    "AEGIS_GOSSIP_PUSH_PULL_INTERVAL": "10s",
}
SUSTAINED_SECONDS = 30.0
# The issue's bound is 12 s (p99) at the default 1 s probe interval; a third of it here.
DEATH_BOUND_SECONDS = 12.0 / 3


class LossyGossip:
    """An nftables table that drops ``percent`` % of UDP datagrams to the given ports."""

    def __init__(self, ports: list[int], percent: int) -> None:
        self.table = f"aegis_test_{secrets.token_hex(4)}"
        port_set = ", ".join(str(port) for port in ports)
        match = f"ip daddr 127.0.0.0/8 udp dport {{ {port_set} }}"
        rules = (
            f"table inet {self.table} {{\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    {match} counter\n"
            f"    {match} numgen random mod 100 < {percent} counter drop\n"
            "  }\n"
            "}\n"
        )
        subprocess.run([NFT, "-f", "-"], input=rules, text=True, check=True, capture_output=True)

    def counters(self) -> tuple[int, int]:
        """(datagrams seen, datagrams dropped)."""
        listing = subprocess.run(
            [NFT, "-j", "list", "table", "inet", self.table], check=True, capture_output=True, text=True
        ).stdout
        packets: list[int] = []
        for entry in json.loads(listing)["nftables"]:
            rule = entry.get("rule")
            if rule:
                packets.extend(part["counter"]["packets"] for part in rule["expr"] if "counter" in part)
        seen, dropped = packets
        return seen, dropped

    def remove(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", self.table], check=False, capture_output=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, env=TIMING)
    yield started
    started.close()


def test_ten_percent_gossip_loss_kills_nobody_and_a_dead_node_is_still_found(cluster: Cluster) -> None:
    nodes = cluster.start_many(5)
    members = {f"n{index}" for index in range(5)}
    wait_for_agreement(nodes, members)
    loss = LossyGossip([node.addresses["gossip"][1] for node in nodes], percent=10)
    try:
        deadline = time.monotonic() + SUSTAINED_SECONDS
        while time.monotonic() < deadline:
            for node in nodes:
                assert set(topology(node)["nodes"]) == members, f"a live node was dropped under loss ({node.command})"
            time.sleep(0.5)
        assert all(info(node, "cluster")["aegis_gossip_members_dead"] == 0 for node in nodes)
        seen, dropped = loss.counters()
        assert seen > 1000 and 0.06 < dropped / seen < 0.14, (seen, dropped)

        victim = nodes[2]
        survivors = [node for node in nodes if node is not victim]
        victim.kill()
        killed_at = time.monotonic()
        # The bound is the failure detector's: until every survivor dropped n2 from its members.
        # (wait_for_agreement also waits for new lease holders and the hand-overs back to the
        # preferred primaries, a second or more after that, longer on a loaded machine.)
        wait_until(
            lambda: all(set(topology(node)["nodes"]) == members - {"n2"} for node in survivors),
            timeout=30,
            interval=0.05,
            what="every survivor to drop the killed node",
        )
        took = time.monotonic() - killed_at
        assert took <= DEATH_BOUND_SECONDS, f"the killed node was dropped by all after {took:.1f}s"
        # Then the survivors settle on one map, with a primary for every shard.
        wait_for_agreement(survivors, members - {"n2"}, timeout=30)
    finally:
        loss.remove()
