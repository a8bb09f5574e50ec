"""Placement (the ring with bounded loads) and the shard map built from it."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.interfaces import PlacementOptions
from aegiskv.cluster.placement import RingPlacement, capacity
from aegiskv.cluster.shard_map import Endpoint, Member, ShardMap, Topology
from aegiskv.cluster.slots import SLOTS, ShardMapper, key_slot
from aegiskv.plugin_api import Placement
from aegiskv.testing.placement_checks import check_assignment, moved_fraction, replica_counts
from aegiskv.testing.placement_contract import PlacementContract
from tests.effort import examples

member_ids = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=24, unique=True)


class TestRingContract(PlacementContract):
    """The placement conformance suite plugins run, through the same import."""

    option_sets = (PlacementOptions(), PlacementOptions(virtual_nodes=1, load_factor=1.0))

    def make_placement(self, options: PlacementOptions) -> Placement:
        return RingPlacement(options)


@settings(max_examples=examples(60), deadline=None)
@given(members=member_ids, shards=st.integers(1, 300), replication_factor=st.integers(1, 5))
def test_every_shard_gets_distinct_members_within_the_caps(members, shards, replication_factor) -> None:
    placement = RingPlacement(PlacementOptions(virtual_nodes=16, load_factor=1.25))
    assignment = placement.assign(members, shards, replication_factor)
    check_assignment(assignment, members, shards, replication_factor)
    copies = min(replication_factor, len(members))
    # The caps hold unless the walk ran out of members with room (then the least loaded fill in).
    replica_cap = capacity(1.25, shards * copies, len(members))
    assert max(replica_counts(assignment).values()) <= replica_cap + 1
    primaries = Counter(replica_set[0] for replica_set in assignment)
    assert max(primaries.values()) <= capacity(1.25, shards, len(members)) + 1


@settings(max_examples=examples(40), deadline=None)
@given(members=member_ids, joiner=st.text(min_size=13, max_size=20))
def test_without_caps_a_join_only_moves_replicas_to_the_joiner(members, joiner) -> None:
    # Plain consistent hashing: the joiner takes over arcs; nobody else gains anything.
    placement = RingPlacement(PlacementOptions(virtual_nodes=32, load_factor=1e9))
    before = placement.assign(members, 128, 3)
    after = placement.assign([*members, joiner], 128, 3)
    for old, new in zip(before, after):
        assert set(new) - set(old) <= {joiner}
        # And the members that stay keep their relative order (primary first).
        assert [member for member in new if member != joiner] == [member for member in old if member in new]


@pytest.mark.parametrize("size", [5, 10, 20])
def test_default_ring_balances_and_moves_about_one_nth(size) -> None:
    placement = RingPlacement()
    members = [f"node-{index}" for index in range(size)]
    before = placement.assign(members, 256, 3)
    counts = replica_counts(before)
    assert max(counts.values()) / (256 * 3 / size) <= 1.25
    after = placement.assign([*members, "joiner"], 256, 3)
    # The target is 1.1 x (1/N) on average (bench/placement_sim.py); one join may be a bit above.
    assert moved_fraction(before, after) <= 1.5 / (size + 1)


def _member(node_id: str, port: int = 7700) -> Member:
    return Member(node_id, Endpoint("127.0.0.1", port), Endpoint("127.0.0.1", port + 1))


def test_topology_epoch_grows_only_when_the_map_changes() -> None:
    topology = Topology(RingPlacement(), ShardMapper(64), replication_factor=2)
    assert topology.current.epoch == 0
    first = topology.update([_member("a"), _member("b", 7800)])
    assert first.epoch == 1
    assert topology.update([_member("b", 7800), _member("a")]) is first  # same members, any order
    moved = topology.update([_member("a"), _member("b", 7900)])  # an address changed
    assert moved.epoch == 2 and moved.replica_sets == first.replica_sets
    assert topology.update([_member("a")]).epoch == 3
    assert all(replica_set == ("a",) for replica_set in topology.current.replica_sets)


class _CountingPlacement:
    def __init__(self) -> None:
        self.calls = 0

    def assign(self, members, shards, replication_factor):
        self.calls += 1
        return RingPlacement().assign(members, shards, replication_factor)


def test_a_change_of_leads_alone_keeps_the_placement_without_recomputing_it() -> None:
    placement = _CountingPlacement()
    topology = Topology(placement, ShardMapper(16), replication_factor=3)
    ready = frozenset(range(16))
    members = [_member(name, port)._replace(ready=ready) for name, port in (("a", 7700), ("b", 7800), ("c", 7900))]
    first = topology.update(members)
    led = topology.update([members[0]._replace(lead=frozenset({1, 2})), *members[1:]])
    assert placement.calls == 1  # every election's gossip news lands here: no placement pass for it
    assert led.epoch == first.epoch + 1 and led.members["a"].lead == {1, 2}
    assert (led.placement_sets, led.learners, led.leaving) == (first.placement_sets, first.learners, first.leaving)
    # Anything placement or staging reads still recomputes: here c's copies stop being complete.
    staged = topology.update([*members[:2], members[2]._replace(ready=frozenset())])
    assert placement.calls == 2 and all(learners == {"c"} for learners in staged.learners)


@settings(max_examples=examples(40), deadline=None)
@given(shards=st.integers(1, 2048), members=st.integers(1, 6), key=st.binary(max_size=40))
def test_slot_ranges_cover_every_slot_once_and_agree_with_key_routing(shards, members, key) -> None:
    topology = Topology(RingPlacement(PlacementOptions(virtual_nodes=8)), ShardMapper(shards), replication_factor=3)
    shard_map = topology.update([_member(f"n{index}", 7000 + 10 * index) for index in range(members)])
    ranges = shard_map.slot_ranges()
    assert ranges[0].first == 0 and ranges[-1].last == SLOTS - 1
    for previous, current in itertools.pairwise(ranges):
        assert current.first == previous.last + 1
        assert current.replica_set != previous.replica_set  # neighbours with one set are merged
    slot = key_slot(key)
    owning = next(slot_range for slot_range in ranges if slot_range.first <= slot <= slot_range.last)
    assert owning.replica_set == shard_map.replica_set_of_key(key) == shard_map.replica_set_of_slot(slot)


class _WrongPlacement:
    def __init__(self, answer: list[tuple[str, ...]]) -> None:
        self.answer = answer

    def assign(self, members, shards, replication_factor):
        return self.answer


@pytest.mark.parametrize(
    "answer, fragment",
    [
        ([("a",)] * 3, "3 replica sets for 4 shards"),
        ([("a", "a")] * 4, "shard 0"),
        ([("a", "zz")] * 4, "shard 0"),
        ([("a",)] * 4, "expected 2 members"),
    ],
)
def test_a_wrong_placement_answer_is_refused_before_anything_routes_by_it(answer, fragment) -> None:
    topology = Topology(_WrongPlacement(answer), ShardMapper(4), replication_factor=2)
    with pytest.raises(ValueError, match=fragment):
        topology.update([_member("a"), _member("b")])
    assert topology.current.epoch == 0


def test_describe_names_every_shard_and_node() -> None:
    shard_map = Topology(RingPlacement(), ShardMapper(4), 1).update([_member("a")])
    described = shard_map.describe()
    assert described["epoch"] == 1 and described["slots"] == SLOTS
    assert [shard["slots"] for shard in described["shards"]] == [[0, 4095], [4096, 8191], [8192, 12287], [12288, 16383]]
    assert described["nodes"] == {"a": {"client": "127.0.0.1:7700", "resp": "127.0.0.1:7701"}}
    assert isinstance(shard_map, ShardMap)
