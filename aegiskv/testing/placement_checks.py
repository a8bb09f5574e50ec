"""Checks every placement must pass, for AegisKV's tests and for plugin authors.

``check_assignment`` verifies one answer; ``check_placement`` drives a
placement through member sets of several sizes, joins and leaves, and checks
each answer plus determinism (same members in another order, a fresh instance).
A plugin's own test suite calls ``check_placement(MyPlacement)``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from aegiskv.plugin_api import DEFAULT_PLACEMENT_OPTIONS, Placement, PlacementFactory, PlacementOptions


def replica_counts(assignment: Sequence[tuple[str, ...]]) -> Counter[str]:
    return Counter(member for replica_set in assignment for member in replica_set)


def moved_fraction(before: Sequence[tuple[str, ...]], after: Sequence[tuple[str, ...]]) -> float:
    """Share of all replicas (shard, member) that a member gained: what has to be copied over."""
    total = sum(len(replica_set) for replica_set in after)
    gained = sum(len(set(new) - set(old)) for old, new in zip(before, after))
    return gained / total if total else 0.0


def check_assignment(
    assignment: Sequence[tuple[str, ...]], members: Sequence[str], shards: int, replication_factor: int
) -> None:
    """Raise AssertionError unless ``assignment`` is a valid answer for these arguments."""
    assert len(assignment) == shards, f"{len(assignment)} replica sets for {shards} shards"
    member_set = set(members)
    copies = min(replication_factor, len(member_set))
    for shard, replica_set in enumerate(assignment):
        assert isinstance(replica_set, tuple), f"shard {shard}: replica set is a {type(replica_set).__name__}"
        assert len(replica_set) == copies, f"shard {shard}: {len(replica_set)} replicas, expected {copies}"
        assert len(set(replica_set)) == copies, f"shard {shard}: repeated member in {replica_set}"
        unknown = set(replica_set) - member_set
        assert not unknown, f"shard {shard}: {sorted(unknown)} are not members"


def check_placement(
    factory: PlacementFactory, options: PlacementOptions = DEFAULT_PLACEMENT_OPTIONS, seed: int = 0
) -> None:
    """Exercise ``factory`` on member sets of 0..12 members with joins and leaves."""
    chooser = random.Random(seed)
    placement: Placement = factory(options)
    assert isinstance(placement, Placement), f"{factory!r} built an object without assign()"
    for size in (0, 1, 2, 3, 5, 12):
        members = [f"node-{chooser.randrange(10**6)}-{index}" for index in range(size)]
        for shards, replication_factor in ((1, 1), (16, 3), (256, 3), (97, 2)):
            answer = placement.assign(members, shards, replication_factor)
            check_assignment(answer, members, shards, replication_factor)
            shuffled = members[:]
            chooser.shuffle(shuffled)
            assert placement.assign(shuffled, shards, replication_factor) == answer, "depends on member order"
            assert factory(options).assign(members, shards, replication_factor) == answer, "not deterministic"
        if members:
            joined = [*members, f"joiner-{size}"]
            check_assignment(placement.assign(joined, 256, 3), joined, 256, 3)
            left = members[1:]
            check_assignment(placement.assign(left, 256, 3), left, 256, 3)
