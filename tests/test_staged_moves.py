"""Moves copy before they switch: the staged replica sets of the shard map (aegiskv.cluster.shard_map).

A member that gains a shard is a learner (streamed to, no vote, no quorum, never
preferred) until it publishes a complete copy; members that lose a shard keep it
until every target member holds it and none of them leads it any more.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.placement import RingPlacement
from aegiskv.cluster.replication import QuorumTracker
from aegiskv.cluster.shard_map import Endpoint, Member, Topology, staged_set
from aegiskv.cluster.slots import ShardMapper
from tests.effort import examples

SHARDS = 16
ALL = frozenset(range(SHARDS))


def member(
    name: str, ready: Iterable[int] = (), lead: Iterable[int] = (), draining: bool = False, port: int = 7700
) -> Member:
    return Member(
        name, Endpoint(f"127.0.0.{ord(name[0]) - 96}", port), None, None, frozenset(lead), frozenset(ready), draining
    )


def topology(replication_factor: int = 3) -> Topology:
    return Topology(RingPlacement(), ShardMapper(SHARDS), replication_factor)


def test_a_new_cluster_has_nothing_to_copy_from_so_the_targets_stand() -> None:
    shard_map = topology().update([member("a"), member("b"), member("c"), member("d")])
    assert all(not learners for learners in shard_map.learners)
    assert all(len(members) == 3 for members in shard_map.placement_sets)


def test_a_joining_member_learns_every_shard_it_gains_before_the_map_switches_to_it() -> None:
    old = [member(name, ready=ALL) for name in "abc"]
    shard_map = topology().update([*old, member("d")])
    target = topology().update([member(name) for name in "abcd"])  # where placement puts the shards
    gained = [shard for shard in range(SHARDS) if "d" in target.placement_sets[shard]]
    assert gained, "placement gave the new member nothing: no test"
    for shard in range(SHARDS):
        members, learners = shard_map.placement_sets[shard], shard_map.learners[shard]
        if shard in gained:
            # Every old copy stays (the union), the learner comes last: never the preferred primary.
            assert set(members) == {"a", "b", "c", "d"} and learners == {"d"} and members[-1] == "d"
            assert set(shard_map.voters(shard)) == {"a", "b", "c"}
            assert members[0] == next(node for node in target.placement_sets[shard] if node != "d")
        else:
            assert set(members) == {"a", "b", "c"} and not learners


def test_once_the_learner_is_ready_the_old_copy_votes_until_it_withdraws_it() -> None:
    target = topology().update([member(name) for name in "abcd"])
    shard = next(s for s in range(SHARDS) if target.placement_sets[s][0] == "d")
    [leaving] = [name for name in "abc" if name not in target.placement_sets[shard]]
    # d copied the shard: it is the preferred primary now (the lease goes to it by hand-off),
    # and the member placement moved the shard away from still votes: one member added.
    members = {name: member(name, ready=ALL) for name in "abcd"}
    staged, learners, moving_away = staged_set(shard, target.placement_sets[shard], members)
    assert staged == (*target.placement_sets[shard], leaving) and not learners and moving_away == {leaving}
    assert staged[0] == "d"
    # It withdrew its copy (its own step, once d was ready and it led no more): one member removed.
    members[leaving] = member(leaving, ready=ALL - {shard})
    assert staged_set(shard, target.placement_sets[shard], members) == (
        target.placement_sets[shard],
        frozenset(),
        frozenset(),
    )


def test_a_draining_member_gets_nothing_but_keeps_its_copies_until_it_withdraws_them() -> None:
    everyone_ready = [member(name, ready=ALL) for name in "abcd"]
    before = topology().update(everyone_ready)
    shard_map = topology().update([*everyone_ready[:3], member("d", ready=ALL, draining=True)])
    for shard in range(SHARDS):
        members = shard_map.placement_sets[shard]
        assert "d" not in shard_map.placement_sets[shard][:3]  # never a target, never preferred
        assert ("d" in members) == (shard in range(SHARDS) and "d" in before.placement_sets[shard])
        assert shard_map.leaving[shard] == ({"d"} if "d" in members else set())
    # a and b are still copying what d held: d votes in those sets, c (or d) is preferred.
    fresh = [member("a"), member("b"), member("c", ready=ALL), member("d", ready=ALL, draining=True)]
    shard_map = topology().update(fresh)
    for shard in range(SHARDS):
        if "d" in before.placement_sets[shard]:
            assert "d" in shard_map.voters(shard)
            assert shard_map.placement_sets[shard][0] in {"c", "d"}
    # d withdrew every copy: it is in no set, the drain may leave.
    gone = topology().update([*everyone_ready[:3], member("d", draining=True)])
    assert all("d" not in members for members in gone.placement_sets)


def test_too_few_ready_copies_to_elect_anyone_fall_back_to_the_target() -> None:
    # Of a, b, c only c is ready (a and b restarted and lost their copies): c alone cannot elect
    # a primary to copy from, so the target stands and the leases' rule for untrusted voters applies.
    target = ("a", "b", "c")
    members = {name: member(name, ready=ALL if name == "c" else ()) for name in "abcd"}
    assert staged_set(0, target, members) == (target, frozenset(), frozenset())
    # A ready copy placement moved away stays a voter then (it leaves by withdrawing it, one step).
    members["c"], members["d"] = member("c"), member("d", ready=ALL)
    assert staged_set(0, target, members) == ((*target, "d"), frozenset(), frozenset({"d"}))


def test_a_learner_counts_towards_no_write_quorum_but_its_progress_is_kept() -> None:
    tracker = QuorumTracker()
    tracker.set_followers(["b", "d"], learners=["d"])
    tracker.acknowledge("d", 10)
    assert tracker.copies(10) == 1 and tracker.replicas() == 2
    tracker.acknowledge("b", 10)
    assert tracker.copies(10) == 2
    tracker.set_followers(["b", "d"])  # d is ready: it counts from its last acknowledgement on
    assert tracker.copies(10) == 3 and tracker.replicas() == 3


def _majorities(voters: tuple[str, ...]) -> list[frozenset[str]]:
    from itertools import combinations

    need = len(voters) // 2 + 1
    return [frozenset(group) for group in combinations(voters, need)]


@settings(max_examples=examples(300), deadline=None)
@given(
    ready=st.sets(st.sampled_from("abcde")),
    flip=st.sampled_from("abcde"),
    joined=st.booleans(),
    drained=st.sampled_from(["", "a", "b"]),
)
def test_one_member_changing_its_copy_keeps_every_majority_meeting_the_last(
    ready: set[str], flip: str, joined: bool, drained: str
) -> None:
    """Gossip brings one member's news at a time: a copy that became ready or was withdrawn.
    Whatever placement did (a join, a drain), any quorum that can elect a primary before such a
    change meets any after it, so two holders can never be elected across it.

    A quorum is a majority of the shard's voters that all grant; a member without a complete
    copy is untrusted and grants no election (aegiskv.cluster.leases; its escape hatch, a vote
    after ``untrusted_grant_after``, is outside this property, as it is outside the leases').
    """
    everyone = ["a", "b", "c", "d"] + (["e"] if joined else [])

    def quorums(copies: set[str]) -> list[frozenset[str]]:
        members = [member(name, ready={0} if name in copies else (), draining=name == drained) for name in everyone]
        voters = topology().update(members).voters(0)
        return [quorum for quorum in _majorities(voters) if quorum <= copies]

    before, after = quorums(ready), quorums(ready ^ {flip})
    for first in before:
        for second in after:
            assert first & second, (before, after)


def test_a_target_member_back_from_a_restart_with_its_log_is_not_staged_around() -> None:
    # RF 1: n1 restarted with its log; n0 stood in for it meanwhile (its copy is ready).
    stand_in = member("n0", ready=ALL, lead={0})
    fresh = member("n1")
    assert staged_set(0, ("n1",), {"n0": stand_in, "n1": fresh}) == (("n0", "n1"), frozenset({"n1"}), frozenset({"n0"}))
    # Staging would make n1 copy n0's shard over its own: while n1 says it is recovering that
    # shard, the target stands, as before staging (n0 drops the shard, n1 leads with its log).
    recovering = fresh._replace(recovering=frozenset({0}))
    assert staged_set(0, ("n1",), {"n0": stand_in, "n1": recovering}) == (("n1",), frozenset(), frozenset())
