"""Real multi-node clusters for tests: ``aegis`` processes on 127.0.0.x, gossip on fast timing.

Each node binds its own loopback address (127.0.0.1, 127.0.0.2, ...; Linux
routes all of 127/8 to lo) with port 0 everywhere, so clusters of parallel
tests never collide. Gossip runs five times faster than the LAN defaults so a
failure is detected within a couple of seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode

FAST_GOSSIP = {
    "AEGIS_GOSSIP_PROBE_INTERVAL": "0.2s",
    "AEGIS_GOSSIP_PROBE_TIMEOUT": "0.12s",
    "AEGIS_GOSSIP_SUSPICION_MULT": "4",
    "AEGIS_GOSSIP_PUSH_PULL_INTERVAL": "2s",
    "AEGIS_GOSSIP_INTERVAL": "0.05s",
}


def gossip_address(node: LocalNode) -> str:
    host, port = node.addresses["gossip"]
    return f"{host}:{port}"


class Cluster:
    """Nodes started by a test, stopped (or killed) at the end."""

    def __init__(self, root: Path, shards: int = 32, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.shards = shards
        self.env = {**os.environ, **FAST_GOSSIP, **(env or {})}
        self.nodes: dict[str, LocalNode] = {}

    def start(self, index: int, seeds: Iterable[str] = (), extra: Iterable[str] = (), **env: str) -> LocalNode:
        """Node ``n<index>`` on 127.0.0.<index + 1>; its data dir survives restarts."""
        node_id = f"n{index}"
        host = f"127.0.0.{index + 1}"
        args = ["--node-id", node_id, "--shards", str(self.shards), *extra]
        seed_list = list(seeds)
        if seed_list:
            args += ["--seeds", ",".join(seed_list)]
        node = LocalNode(
            str(self.root / node_id),
            args,
            bind=f"{host}:0",
            resp_bind=f"{host}:0",
            gossip=f"{host}:0",
            health_addr=f"{host}:0",
            env={**self.env, **env},
        )
        self.nodes[node_id] = node
        return node

    def start_many(self, count: int) -> list[LocalNode]:
        first = self.start(0)
        return [first] + [self.start(index, seeds=[gossip_address(first)]) for index in range(1, count)]

    def running(self) -> list[LocalNode]:
        return [node for node in self.nodes.values() if node.process.poll() is None]

    def close(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.kill()


def topology(node: LocalNode) -> dict[str, Any]:
    with Client(Config(seeds=[node.address_text], cluster_routing=False)) as client:
        return client.topology()


def info(node: LocalNode, section: str) -> dict[str, Any]:
    """One INFO section of ``node`` (aegiskv/server/info.py names the fields)."""
    with Client(Config(seeds=[node.address_text], cluster_routing=False)) as client:
        return client.info(section)[section]


def key_count(node: LocalNode) -> int:
    """The keys ``node`` holds (INFO keyspace lists no database when there are none, as Redis)."""
    database: dict[str, int] = info(node, "keyspace").get("db0", {})
    return database.get("keys", 0)


def wait_for_agreement(
    nodes: list[LocalNode], members: set[str], timeout: float = 30.0, leased: bool = True
) -> dict[str, Any]:
    """Until every node's map lists exactly ``members`` with the same replica sets and primaries; returns one map.

    Settled also means led as placement prefers: every shard's primary (the holder of
    its lease, listed first) is its preferred member, which a node that took a lease
    while alone hands back once that member has caught up (aegiskv.server.replicas).

    ``leased=False`` waits for the membership only (same members, same placement), not
    for primaries: a node left without a majority of the members it saw (the others
    killed, not departed) never gets one (aegiskv.cluster.leases, "The quorum floor").
    """
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        seen = [topology(node) for node in nodes]
        if leased:
            shard_lists = {json.dumps(answer["shards"]) for answer in seen}
        else:
            shard_lists = {json.dumps([shard.get("preferred") for shard in answer["shards"]]) for answer in seen}
        if (
            all(set(answer["nodes"]) == members for answer in seen)
            and len(shard_lists) == 1
            and (not leased or _settled(seen))
        ):
            return seen[0]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no agreement on {sorted(members)} after {timeout}s: "
                + "; ".join(f"{sorted(answer['nodes'])} epoch {answer['epoch']}" for answer in seen)
            )
        time.sleep(0.05)


def _settled(seen: list[dict[str, Any]]) -> bool:
    """Every shard has a primary in every map, it is the preferred member, and no shard is moving.

    A node that starts after the others elected primaries copies their shards first (a learner,
    aegiskv.cluster.shard_map) and is handed the leases it is preferred for after.
    """
    return (
        all(answer["shards"][index].get("primary") for answer in seen for index in range(len(answer["shards"])))
        and all(shard["primary"] == shard.get("preferred") for shard in seen[0]["shards"])
        and not any(shard.get("learners") or shard.get("leaving") for answer in seen for shard in answer["shards"])
    )
