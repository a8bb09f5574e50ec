"""Rendezvous (highest random weight) placement: an example AegisKV plugin.

Each shard scores every member with a hash of (shard, member) and takes the
``replication_factor`` highest scores, best first. A member that joins takes
exactly the shards where it outscores someone; one that leaves gives up only
its own; nobody else moves. There is no ring and no virtual nodes to tune, at
the price of scoring every member for every shard (O(shards x members) per
membership change, about 0.3 s for 256 shards on 1,000 members here).

Loads are not capped: with few shards per member, chance leaves some members
fuller than others (``bench/placement_sim.py`` in AegisKV measures both this
and the built-in ring).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aegiskv.plugin_api import DEFAULT_PLACEMENT_OPTIONS, PlacementOptions

__all__ = ["AEGISKV_PLUGIN_API", "RendezvousPlacement", "score"]

# The plugin API this plugin was written against (aegiskv.plugin_api.API_VERSION):
# AegisKV refuses to load it under another one rather than fail later.
AEGISKV_PLUGIN_API = 1


def score(shard: int, member: str) -> int:
    """A member's weight for a shard: stable across processes (BLAKE2b, not ``hash()``)."""
    digest = hashlib.blake2b(f"{shard}\x00{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class RendezvousPlacement:
    """Factory and placement in one: ``RendezvousPlacement(options).assign(...)``."""

    def __init__(self, options: PlacementOptions = DEFAULT_PLACEMENT_OPTIONS) -> None:
        # virtual_nodes and load_factor mean nothing here (see the module docstring).
        self.options = options

    def assign(self, members: Sequence[str], shards: int, replication_factor: int) -> list[tuple[str, ...]]:
        unique = sorted(set(members))
        copies = min(replication_factor, len(unique))
        result = []
        for shard in range(shards):
            # Ties (astronomically unlikely with 64-bit scores) break by member id.
            ranked = sorted(unique, key=lambda member: (score(shard, member), member), reverse=True)
            result.append(tuple(ranked[:copies]))
        return result
