"""The built-in placement: a consistent-hash ring of virtual nodes with bounded loads.

Each member owns ``virtual_nodes`` points on a 64-bit ring (a ``SortedList``);
a shard hashes to a point and takes the first ``replication_factor`` distinct
members clockwise from it. The first is the shard's primary.

Plain consistent hashing leaves some members with far more shards than others
at realistic shard counts: 256 shards x 3 copies over 10 members is about 77
replicas each, and chance alone puts the fullest member 25-30% above the mean
(measured in ``bench/placement_sim.py``). So placement caps loads, after
Mirrokni, Thorup and Zadimoghaddam's *consistent hashing with bounded loads*: a
member may hold at most ``load_factor`` times the mean number of replicas (and
of primaries); a full member is skipped and the walk goes on clockwise. Shards
are placed in shard order, so the result stays a pure function of the member
set. The cap costs movement only where chance had overloaded someone.

Hashes come from BLAKE2b, not ``hash()``, so every process agrees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from sortedcontainers import SortedList

from aegiskv.cluster.interfaces import DEFAULT_PLACEMENT_OPTIONS, PlacementOptions


def ring_hash(text: str) -> int:
    """A stable 64-bit hash (the same in every process and Python version)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def capacity(load_factor: float, items: int, members: int) -> int:
    """Most items one member may take: ``load_factor`` x the mean, never below the rounded-up mean."""
    mean = items / members
    return max(math.ceil(mean), math.floor(load_factor * mean + 1e-9))


class RingPlacement:
    """Entry point ``ring`` in group ``aegiskv.placement`` (see :mod:`aegiskv.cluster.interfaces`)."""

    def __init__(self, options: PlacementOptions = DEFAULT_PLACEMENT_OPTIONS) -> None:
        if options.virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be at least 1, not {options.virtual_nodes}")
        if options.load_factor < 1.0:
            raise ValueError(f"load_factor must be at least 1.0, not {options.load_factor}")
        self.virtual_nodes = options.virtual_nodes
        self.load_factor = options.load_factor
        # The ring of the last member set asked for: membership changes rarely,
        # and every lookup between two changes reuses it.
        self._ring_of: tuple[tuple[str, ...], SortedList] | None = None
        self._shard_points: list[int] = []

    def _ring(self, members: tuple[str, ...]) -> SortedList:
        if self._ring_of is None or self._ring_of[0] != members:
            count = self.virtual_nodes
            points = ((ring_hash(f"{member}#{index}"), member) for member in members for index in range(count))
            self._ring_of = (members, SortedList(points))
        return self._ring_of[1]

    def _shard_point(self, shard: int) -> int:
        while len(self._shard_points) <= shard:
            self._shard_points.append(ring_hash(f"shard:{len(self._shard_points)}"))
        return self._shard_points[shard]

    def assign(self, members: Sequence[str], shards: int, replication_factor: int) -> list[tuple[str, ...]]:
        unique = tuple(sorted(set(members)))
        if not unique:
            return [() for _ in range(shards)]
        copies = min(replication_factor, len(unique))
        ring = self._ring(unique)
        points = len(ring)
        replica_cap = capacity(self.load_factor, shards * copies, len(unique))
        primary_cap = capacity(self.load_factor, shards, len(unique))
        replicas = dict.fromkeys(unique, 0)
        primaries = dict.fromkeys(unique, 0)
        result: list[tuple[str, ...]] = []
        for shard in range(shards):
            start = ring.bisect_left((self._shard_point(shard), ""))
            chosen: list[str] = []
            for step in range(points):
                member = ring[(start + step) % points][1]
                if member in chosen or replicas[member] >= replica_cap:
                    continue
                # Primaries are capped too: they take the writes, so leadership
                # must be balanced as well as copies.
                if not chosen and primaries[member] >= primary_cap:
                    continue
                chosen.append(member)
                if len(chosen) == copies:
                    break
            else:
                # The caps can leave the last shards short (every member with room
                # is already in the set): fill from the least loaded.
                for member in sorted(unique, key=lambda candidate: (replicas[candidate], candidate)):
                    if len(chosen) == copies:
                        break
                    if member not in chosen:
                        chosen.append(member)
            for member in chosen:
                replicas[member] += 1
            primaries[chosen[0]] += 1
            result.append(tuple(chosen))
        return result
