"""The per-shard lease core (aegiskv/cluster/leases.py): voter rules, codec, vote store, simulation.

The simulation (tests/lease_sim.py) runs real ShardLeases over a simulated
network with drifting clocks and a Raft-like replication model; hypothesis
draws the fault schedules and the invariants are checked at every event.
"""

from __future__ import annotations

import math
import os
import random
import stat
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from aegiskv.cluster.leases import (
    FileHighWater,
    FileVoteStore,
    LeaseEvent,
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseTiming,
    MemberHighWater,
    MemoryVoteStore,
    ShardLeases,
    VoteStoreError,
    decode_message,
)
from aegiskv.cluster.replication import writer_tag
from tests.effort import examples
from tests.lease_sim import (
    Crash,
    Fault,
    Handoff,
    LeaseSim,
    Lossy,
    Partition,
    Pause,
    Slow,
    ViewSplit,
    failover_time,
    percentile,
)

TIMING = LeaseTiming()
D = TIMING.lease_duration
REPLICAS = ("a", "b", "c")
FIRST_A = 1  # the epoch of a's first election


def voter(
    node_id: str = "b",
    now: float = 0.0,
    restarted: bool = False,
    store: MemoryVoteStore | None = None,
    timing: LeaseTiming = TIMING,
) -> ShardLeases:
    leases = ShardLeases(node_id, timing, store or MemoryVoteStore(), now, random.Random(1), restarted=restarted)
    leases.set_replica_sets({0: REPLICAS}, now)
    return leases


def ask(
    leases: ShardLeases,
    epoch: int,
    candidate: str = "a",
    now: float = 0.0,
    position: tuple[int, int] = (0, 0),
    renew: bool = False,
) -> LeaseReply:
    request = LeaseRequest(0, epoch, candidate, position, renew, round_id=7)
    ((target, payload),) = leases.receive(candidate, request.encode(), now)
    assert target == candidate
    reply = decode_message(payload)
    assert isinstance(reply, LeaseReply) and reply.round_id == 7 and reply.voter == leases.node_id
    return reply


# -- the voter rule, branch by branch ---------------------------------------------------------------


def test_an_election_is_granted_saved_and_promised() -> None:
    store = MemoryVoteStore()
    leases = voter(store=store)
    reply = ask(leases, 1, "a", now=5.0)
    assert reply.granted and (reply.term, reply.holder) == (1, "a")
    assert store.votes == {0: (1, "a")}
    assert leases.epoch(0) == 1
    assert leases.known_holder(0, 5.0 + D - 0.01) == "a"
    assert leases.known_holder(0, 5.0 + D) is None


def test_an_epoch_below_the_term_is_refused() -> None:
    leases = voter()
    assert ask(leases, 5, "a").granted
    reply = ask(leases, 4, "a", now=10 * D)
    assert not reply.granted and (reply.term, reply.holder) == (5, "a")


def test_the_holder_renews_at_its_epoch_and_the_promise_moves_on() -> None:
    leases = voter()
    assert ask(leases, 3, "a", now=0.0).granted
    assert ask(leases, 3, "a", now=1.5, renew=True).granted
    assert leases.counters["renewals_granted"] == 1
    # The promise now runs from the renewal: c is refused until 1.5 + D, not D.
    assert not ask(leases, 4, "c", now=D + 0.1).granted
    assert ask(leases, 4, "c", now=1.5 + D).granted


def test_another_candidate_at_the_same_epoch_is_refused() -> None:
    leases = voter()
    assert ask(leases, 3, "a").granted
    reply = ask(leases, 3, "c", now=10 * D)
    assert not reply.granted and (reply.term, reply.holder) == (3, "a")


def test_no_election_while_a_promise_to_another_node_is_live() -> None:
    leases = voter()
    assert ask(leases, 1, "a", now=0.0).granted
    refused = ask(leases, 2, "c", now=D - 0.001)
    assert not refused.granted
    # Term changes only on a grant: the refused, disruptive candidate deposed nobody.
    assert (refused.term, refused.holder) == (1, "a") and leases.epoch(0) == 1
    assert ask(leases, 2, "c", now=D).granted


def test_a_promise_to_the_candidate_itself_does_not_block_its_higher_epoch() -> None:
    leases = voter()
    assert ask(leases, 1, "a", now=0.0).granted
    assert ask(leases, 2, "a", now=0.5).granted  # a lost its lease and campaigns again
    assert not ask(leases, 3, "c", now=D).granted  # the promise runs from 0.5 now


def test_a_restarted_voter_grants_no_election_for_one_lease_duration_but_renews() -> None:
    store = MemoryVoteStore()
    assert ask(voter(store=store), 1, "a", now=0.0).granted
    restarted = voter(store=store, now=100.0, restarted=True)
    assert restarted.epoch(0) == 1
    assert ask(restarted, 1, "a", now=100.1, renew=True).granted  # the holder it stored
    fresh_store = MemoryVoteStore()
    fresh_store.votes = {0: (1, "a")}
    waiting = voter(store=fresh_store, now=100.0, restarted=True)
    assert not ask(waiting, 2, "c", now=100.0 + D - 0.001).granted
    assert ask(waiting, 2, "c", now=100.0 + D).granted


def test_an_untrusted_voter_refuses_elections_until_trusted_or_the_escape_hatch() -> None:
    timing = LeaseTiming(untrusted_grant_after=10.0)
    leases = voter(timing=timing)
    leases.set_trusted(0, False, now=1.0)
    assert not ask(leases, 1, "a", now=2.0).granted
    leases.set_trusted(0, False, now=5.0)  # still untrusted: the clock is not restarted
    assert ask(leases, 1, "a", now=11.0).granted  # untrusted for 10 s: the hatch opens
    other = voter(timing=timing)
    other.set_trusted(0, False, now=0.0)
    other.set_trusted(0, True, now=1.0)
    assert ask(other, 1, "a", now=1.0).granted


def test_a_candidate_behind_the_voter_is_refused() -> None:
    leases = voter()
    leases.set_position(0, (3, 10))
    assert not ask(leases, 4, "a", position=(3, 9)).granted
    assert not ask(leases, 4, "a", position=(2, 50)).granted  # the epoch compares first
    reply = ask(leases, 4, "a", position=(3, 10))
    assert reply.granted and reply.position == (3, 10)


def test_a_campaigning_voter_grants_only_a_rival_that_outranks_it() -> None:
    leases = voter("b")
    leases.set_position(0, (1, 5))
    assert leases.tick(10.0)  # b (not preferred) campaigns for epoch 2 (above its position's) once its delay is over
    assert leases.counters["elections_started"] == 1
    # c as far ahead but later in R(s): refused, or the two would split the vote.
    assert not ask(leases, 2, "c", now=10.01, position=(1, 5)).granted
    # c further ahead is the better primary (and refuses b): granted.
    assert ask(leases, 2, "c", now=10.02, position=(1, 6)).granted
    # a as far ahead and earlier in R(s) wins the tie: granted.
    other = voter("b")
    other.set_position(0, (1, 5))
    assert other.tick(10.0)
    assert ask(other, 2, "a", now=10.01, position=(1, 5)).granted


def test_an_epoch_the_voter_holds_changes_of_is_never_granted_again() -> None:
    # A replica set that changed can meet members that never saw epoch 3, which this voter
    # holds changes of: granting epoch 3 again would give two primaries' logs one epoch.
    leases = voter("b")
    leases.set_position(0, (3, 7))
    assert not ask(leases, 3, "a", now=10.0, position=(3, 7)).granted
    assert ask(leases, 4, "a", now=10.0, position=(3, 7)).granted
    # And a candidate's own epoch is above its position's.
    candidate = voter("a")
    candidate.set_position(0, (5, 2))
    out = candidate.tick(0.0)
    assert out and all(decode_message(payload).epoch == 6 for _, payload in out)


def test_a_refusal_for_a_live_promise_says_how_long_it_still_runs() -> None:
    leases = voter()
    assert ask(leases, 1, "a", now=0.0).granted
    assert ask(leases, 2, "c", now=0.5).promise_ms == 1500
    assert ask(leases, 2, "a", now=0.6).promise_ms == 0  # granted: the promise is to a itself
    behind = voter()
    behind.set_position(0, (1, 1))
    assert ask(behind, 1, "a", now=0.0).promise_ms == 0  # refused for its position, no promise


def test_a_candidate_asks_again_when_the_promise_in_its_way_ends() -> None:
    a, b, c = voter("a"), voter("b"), voter("c")
    for node in (a, b):
        assert ask(node, 1, "a", now=8.03).granted  # both promised a until 10.03
    requests = c.tick(10.0)
    assert len(requests) == 2 and c.counters["elections_started"] == 1
    for target, payload in requests:
        ((_, reply),) = {"a": a, "b": b}[target].receive("c", payload, 10.0)
        c.receive(target, reply, 10.001)
    # Refused with 30 ms to go: c asks again then, sooner than any backoff (>= 50 ms).
    assert c.tick(10.02) == []
    assert c.tick(10.04) and c.counters["elections_started"] == 2


def test_a_voter_that_missed_an_election_joins_the_renewals_of_the_primary_it_copies() -> None:
    c = voter("c", restarted=True)  # back from a restart: its term is older than b's epoch 5
    c.set_position(0, (5, 40), writer_tag("b"))  # and it has copied b's changes of epoch 5 since
    assert not ask(c, 5, "b", now=0.5, position=(5, 50), renew=True).granted  # the restart wait
    t = D + 0.01
    assert ask(c, 5, "b", now=t, position=(5, 50), renew=True).granted
    assert c.known_holder(0, t) == "b" and c.epoch(0) == 5
    # Epoch 5 stays b's: nobody else gets it, and b only when it is at least as far as this copy.
    other = voter("c", restarted=True)
    other.set_position(0, (5, 40), writer_tag("b"))
    assert not ask(other, 5, "a", now=t, position=(5, 60)).granted
    assert not ask(other, 5, "b", now=t, position=(5, 30), renew=True).granted
    unknown = voter("c", restarted=True)
    unknown.set_position(0, (5, 40))  # writer unknown: the epoch is taken, as before
    assert not ask(unknown, 5, "b", now=t, position=(5, 50), renew=True).granted


def test_a_candidate_told_of_a_live_lease_waits_for_it_and_names_its_holder() -> None:
    a = voter("a", restarted=True)  # the preferred primary, back from a restart: no grants before D
    b, c = voter("b"), voter("c")
    for node in (b, c):
        assert ask(node, 5, "b", now=D).granted  # b won epoch 5 while a was down: promised until 2 D
    t = D + 0.01
    requests = a.tick(t)  # a knows of no lease: it campaigns as its restart wait ends
    assert len(requests) == 2 and a.counters["elections_started"] == 1
    for target, payload in requests:
        ((_, reply),) = {"b": b, "c": c}[target].receive("a", payload, t)
        a.receive(target, reply, t)
    assert not a.campaigning(0) and a.known_holder(0, t) == "b"  # clients that ask a are sent to b
    # No second round while the promise runs: it could only be refused, and a node running an
    # election answers TRYAGAIN for the shard.
    while t < D + 1.8:
        t += 0.05
        assert a.tick(t) == []
    # b hands the lease off: a, the preferred primary, asks at once.
    a.receive("b", LeaseRelease(0, 5, "b").encode(), t)
    assert a.known_holder(0, t) is None
    assert a.tick(t) and a.counters["elections_started"] == 2


def test_a_lease_heard_of_is_forgotten_when_a_later_term_is_asked_for() -> None:
    a = voter("a", restarted=True)
    b = voter("b")
    assert ask(b, 5, "b", now=D).granted
    t = D + 0.01
    for target, payload in a.tick(t):
        if target == "b":
            ((_, reply),) = b.receive("a", payload, t)
            a.receive("b", reply, t)
    assert a.known_holder(0, t) == "b"
    ask(a, 6, "c", now=t + 0.1)
    assert a.known_holder(0, t + 0.1) != "b"


def test_strangers_are_refused_and_leave_no_state() -> None:
    leases = voter()
    assert not ask(leases, 1, "z").granted  # not in R(s)
    request = LeaseRequest(99, 1, "a", (0, 0), False, 1)
    ((_, payload),) = leases.receive("a", request.encode(), 0.0)
    reply = decode_message(payload)
    assert isinstance(reply, LeaseReply) and not reply.granted
    assert 99 not in leases._shards  # a shard this node is not in keeps nothing


class FailingStore(MemoryVoteStore):
    def save(self, shard: int, term: int, holder: str) -> None:
        raise OSError("disk full")


def test_a_grant_that_cannot_be_saved_is_not_made() -> None:
    leases = voter(store=FailingStore())
    with pytest.raises(OSError):
        ask(leases, 1, "a")
    assert leases.epoch(0) == 0 and leases.known_holder(0, 0.1) is None
    # No promise was made either: another candidate is not held back by it.
    working = ShardLeases("b", TIMING, MemoryVoteStore(), 0.0, random.Random(1), restarted=False)
    working.set_replica_sets({0: REPLICAS}, 0.0)
    assert ask(working, 1, "c", now=0.2).granted


def test_forged_and_malformed_messages_are_counted_and_dropped() -> None:
    leases = voter()
    forged = LeaseRequest(0, 1, "a", (0, 0), False, 1).encode()
    assert leases.receive("c", forged, 0.0) == []  # c speaking for a
    assert leases.receive("a", b"\x01\x01garbage", 0.0) == []
    assert leases.counters["malformed"] == 2
    assert leases.epoch(0) == 0


# -- candidate and holder ---------------------------------------------------------------------------


class Trio:
    """Three ShardLeases and a hand-carried network: every message is delivered when the test says."""

    def __init__(self, timing: LeaseTiming = TIMING, replicas: tuple[str, ...] = REPLICAS) -> None:
        self.nodes = {
            name: ShardLeases(name, timing, MemoryVoteStore(), 0.0, random.Random(index), restarted=False)
            for index, name in enumerate(replicas)
        }
        for node in self.nodes.values():
            node.set_replica_sets({0: replicas}, 0.0)
        self.in_flight: list[tuple[str, str, bytes]] = []

    def send(self, source: str, messages: list[tuple[str, bytes]]) -> None:
        self.in_flight.extend((source, target, payload) for target, payload in messages)

    def tick(self, name: str, now: float) -> None:
        self.send(name, self.nodes[name].tick(now))

    def deliver(self, now: float, only: set[str] | None = None) -> None:
        """Deliver what is in flight (to ``only`` those receivers), and their answers too."""
        while True:
            batch = [m for m in self.in_flight if only is None or m[1] in only]
            if not batch:
                return
            self.in_flight = [m for m in self.in_flight if m not in batch]
            for source, target, payload in batch:
                self.send(target, self.nodes[target].receive(source, payload, now))


def test_the_preferred_primary_wins_and_holds_from_when_it_sent() -> None:
    trio = Trio()
    trio.tick("a", 1.0)  # a is R(s)[0]: it campaigns at once
    assert trio.nodes["a"].counters["elections_started"] == 1
    trio.deliver(now=1.2)  # replies arrive 0.2 s after the requests left
    a = trio.nodes["a"]
    assert a.events == [LeaseEvent(0, "acquired", FIRST_A)]
    assert a.lease_until(0) == pytest.approx(1.0 + D * (1 - TIMING.max_clock_drift))
    assert a.holds_lease(0, 1.0 + D * 0.95 - 0.001) and not a.holds_lease(0, 1.0 + D * 0.95)
    assert a.epoch(0) == FIRST_A  # its own grant, saved
    assert trio.nodes["b"].known_holder(0, 1.5) == "a" and a.known_holder(0, 1.5) == "a"


def test_renewals_extend_the_lease_from_each_round_sent() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a = trio.nodes["a"]
    renew_at = D * TIMING.renew_fraction
    trio.tick("a", renew_at - 0.01)
    assert trio.in_flight == []  # not yet
    trio.tick("a", renew_at)
    assert len(trio.in_flight) == 2
    trio.deliver(now=renew_at + 0.3)
    assert a.lease_until(0) == pytest.approx(renew_at + D * 0.95)
    assert a.counters["renewals"] == 1


def test_a_late_reply_to_an_earlier_round_does_not_count_for_a_later_one() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a = trio.nodes["a"]
    first = D * TIMING.renew_fraction
    trio.tick("a", first)
    trio.deliver(now=first, only={"b", "c"})  # the voters grant; the replies stay in flight
    replies = list(trio.in_flight)
    trio.in_flight.clear()
    second = 2 * first
    trio.tick("a", second)  # a new round; its requests are lost
    trio.in_flight.clear()
    for source, _, payload in replies:
        a.receive(source, payload, second + 0.01)
    # The replies complete the first round only: the lease runs from its sent.
    assert a.lease_until(0) == pytest.approx(first + D * 0.95)


def test_a_holder_cut_off_loses_its_lease_when_it_runs_out() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a = trio.nodes["a"]
    a.events.clear()
    t = 0.0
    while t < D:
        t += 0.1
        trio.tick("a", t)
        trio.in_flight.clear()  # every renewal lost
    assert not a.holds_lease(0, t)
    assert a.events == [LeaseEvent(0, "lost", FIRST_A)] and a.counters["lost"] == 1


def test_a_holder_refused_for_a_higher_term_steps_down_and_releases() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a, b = trio.nodes["a"], trio.nodes["b"]
    a.events.clear()
    # b was made to grant epoch 5 to c (say while cut off from a, its promise lapsed).
    ask(b, 5, "c", now=D + 1)
    trio.tick("a", D * TIMING.renew_fraction)
    trio.deliver(now=D * TIMING.renew_fraction, only={"b"})
    trio.deliver(now=D * TIMING.renew_fraction, only={"a"})  # the refusal carries term 5
    assert a.events == [LeaseEvent(0, "lost", FIRST_A)]
    releases = [decode_message(p) for s, _, p in trio.in_flight if s == "a"]
    assert LeaseRelease(0, 1, "a") in releases


def test_a_release_lets_a_successor_win_at_once() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a, b = trio.nodes["a"], trio.nodes["b"]
    trio.send("a", a.release(0, 0.5))
    assert not a.holds_lease(0, 0.5) and a.events[-1] == LeaseEvent(0, "lost", FIRST_A)
    trio.deliver(now=0.5)
    assert b.counters["releases"] == 1 and b.known_holder(0, 0.5) is None
    # b saw a let go: gossip saying a still leads is stale, and b must not send clients to a.
    assert b.released_holder(0) == "a" and trio.nodes["c"].released_holder(0) == "a"
    # b (not preferred) waits only its election delay, not the rest of a's lease.
    t = 0.5
    while not b.holds_lease(0, t) and t < 0.5 + 4 * TIMING.election_delay:
        t += 0.01
        trio.tick("b", t)
        trio.tick("c", t)
        trio.tick("a", t)
        trio.deliver(now=t)
    assert b.holds_lease(0, t) or trio.nodes["c"].holds_lease(0, t)
    assert not a.holds_lease(0, t)  # a stays out of the election it handed off
    # Every voter granted the successor since: the release is history.
    assert all(node.released_holder(0) is None for node in trio.nodes.values() if node.epoch(0) > FIRST_A)


def test_a_holder_removed_from_the_replica_set_steps_down() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a = trio.nodes["a"]
    out = a.set_replica_sets({0: ("b", "c", "d")}, 0.2)
    assert not a.holds_lease(0, 0.2) and a.events[-1] == LeaseEvent(0, "lost", FIRST_A)
    assert {target for target, _ in out} == {"b", "c"}
    assert all(decode_message(payload) == LeaseRelease(0, 1, "a") for _, payload in out)
    # And as a voter it no longer takes part.
    assert not ask(a, 9, "b", now=100.0).granted


def test_a_candidate_cut_off_does_not_raise_its_own_term() -> None:
    trio = Trio()
    c = trio.nodes["c"]
    for step in range(1, 200):
        trio.tick("c", step * 0.05)
        trio.in_flight.clear()  # nobody hears c
    assert c.counters["elections_started"] > 3
    assert c.epoch(0) == 0  # it never voted for itself: the live holder will not be refused


def test_only_the_preferred_primary_campaigns_without_delay() -> None:
    trio = Trio()
    for name in ("b", "c"):
        trio.tick(name, 0.0)
    assert trio.in_flight == []
    trio.tick("a", 0.0)
    assert trio.in_flight


# -- the codec --------------------------------------------------------------------------------------

node_ids = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255)
u64 = st.integers(0, 2**64 - 1)
positions = st.tuples(u64, u64)
messages = st.one_of(
    st.builds(LeaseRequest, st.integers(0, 2**32 - 1), u64, node_ids, positions, st.booleans(), u64),
    st.builds(
        LeaseReply,
        st.integers(0, 2**32 - 1),
        u64,
        u64,
        node_ids,
        st.booleans(),
        u64,
        st.one_of(st.just(""), node_ids),
        positions,
        st.integers(0, 2**32 - 1),
    ),
    st.builds(LeaseRelease, st.integers(0, 2**32 - 1), u64, node_ids),
)


@settings(max_examples=examples(300), deadline=None)
@given(message=messages)
def test_every_message_round_trips_and_every_cut_is_refused(message: LeaseRequest | LeaseReply | LeaseRelease) -> None:
    data = message.encode()
    assert decode_message(data) == message
    assert type(message).decode(data) == message
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_message(data[:cut])
    with pytest.raises(ValueError):
        decode_message(data + b"\x00")


@settings(max_examples=examples(500), deadline=None)
@given(data=st.binary(max_size=80))
def test_garbage_decodes_to_a_message_that_encodes_back_or_raises_value_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except ValueError:
        return
    assert message.encode() == data


def test_the_codec_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="at most 255"):
        LeaseRequest(0, 1, "x" * 256, (0, 0), False, 1).encode()
    with pytest.raises(ValueError):
        LeaseRequest(-1, 1, "a", (0, 0), False, 1).encode()
    with pytest.raises(ValueError):
        LeaseRelease(0, 2**64, "a").encode()
    good = LeaseRequest(3, 4, "a", (1, 2), True, 9).encode()
    with pytest.raises(ValueError, match="version"):
        decode_message(b"\x02" + good[1:])
    with pytest.raises(ValueError, match="flag"):
        decode_message(good[:-3] + b"\x02" + good[-2:])
    with pytest.raises(ValueError, match="kind"):
        LeaseReply.decode(good)
    with pytest.raises(ValueError):
        decode_message(good[:-1] + b"\xff")  # not UTF-8


# -- the file vote store ----------------------------------------------------------------------------


def test_file_votes_survive_a_reopen_and_leave_no_temporary(tmp_path: Path) -> None:
    store = FileVoteStore(tmp_path)
    assert store.load() == {}
    store.save(3, 7, "node-a")
    store.save(1, 2, "ñode-b")
    store.save(3, 8, "node-c")
    assert FileVoteStore(tmp_path).load() == {3: (8, "node-c"), 1: (2, "ñode-b")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [FileVoteStore.FILE_NAME]


def test_deferred_file_votes_reach_the_disk_on_flush_only(tmp_path: Path) -> None:
    store = FileVoteStore(tmp_path / "votes", deferred=True)  # the directory is made if missing
    store.save(3, 7, "node-a")
    store.save(4, 7, "node-a")
    assert FileVoteStore(tmp_path / "votes").load() == {}  # nothing durable yet: the caller must flush
    store.flush()
    assert FileVoteStore(tmp_path / "votes").load() == {3: (7, "node-a"), 4: (7, "node-a")}


def test_a_file_vote_is_synced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    FileVoteStore(tmp_path).save(0, 1, "a")
    assert calls == ["fsync file", "rename", "fsync directory"]


def test_a_restarted_node_keeps_its_terms_from_the_file(tmp_path: Path) -> None:
    first = voter(store=FileVoteStore(tmp_path))  # type: ignore[arg-type]
    assert ask(first, 4, "a").granted
    again = ShardLeases("b", TIMING, FileVoteStore(tmp_path), 50.0, random.Random(2), restarted=True)
    again.set_replica_sets({0: REPLICAS}, 50.0)
    assert again.epoch(0) == 4
    assert not ask(again, 4, "c", now=100.0).granted  # it remembers granting 4 to a


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "magic"])
def test_a_damaged_vote_file_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    store = FileVoteStore(tmp_path)
    store.save(0, 5, "a")
    store.save(1, 6, "b")
    data = bytearray(store.path.read_bytes())
    if damage == "flip":
        data[12] ^= 0x40
    elif damage == "truncate":
        data = data[:-3]
    elif damage == "empty":
        data = bytearray()
    else:
        data[:4] = b"XXXX"
    store.path.write_bytes(bytes(data))
    with pytest.raises(VoteStoreError, match=str(store.path)):
        FileVoteStore(tmp_path).load()


def test_timing_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="renew_fraction"):
        LeaseTiming(renew_fraction=0.96)
    with pytest.raises(ValueError, match="lease_duration"):
        LeaseTiming(lease_duration=0)
    with pytest.raises(ValueError, match="round_timeout"):
        LeaseTiming(lease_duration=0.2, round_timeout=0.5)


# -- the simulation: safety under faults --------------------------------------------------------------

RUN = 16.0  # simulated seconds per schedule


class Schedule(NamedTuple):
    nodes: int
    replication_factor: int
    shards: int
    drifts: list[float]
    faults: list[Fault]
    seed: int
    idle_shards: frozenset[int] = frozenset()


@st.composite
def fault_schedules(draw: st.DrawFn) -> Schedule:
    nodes = draw(st.integers(3, 5))
    replication_factor = draw(st.sampled_from([3, 5])) if nodes == 5 else 3
    shards = draw(st.integers(1, 3))
    half = TIMING.max_clock_drift / 2
    # Clock rates at the extremes find the margins; anything between is no harder.
    drifts = draw(st.lists(st.sampled_from([-half, 0.0, half]), min_size=nodes, max_size=nodes))
    ids = [f"n{i}" for i in range(nodes)]
    starts = st.floats(0.2, RUN - 3, allow_nan=False)
    durations = st.floats(0.05, 3 * D, allow_nan=False)
    node = st.sampled_from(ids)

    @st.composite
    def links(draw: st.DrawFn) -> frozenset[tuple[str, str]]:
        """From some nodes to others, one way (asymmetric) or both."""
        senders = draw(st.sets(node, min_size=1, max_size=nodes - 1))
        receivers = draw(st.sets(node, min_size=1)) - senders or set(ids) - senders
        pairs = {(s, r) for s in senders for r in receivers}
        if draw(st.booleans()):
            pairs |= {(r, s) for s, r in pairs}
        return frozenset(pairs)

    fault = st.one_of(
        st.builds(Partition, starts, durations, links()),
        st.builds(Pause, starts, durations, node),
        st.builds(Crash, starts, durations, node, st.booleans()),
        st.builds(Lossy, starts, durations, st.floats(0.2, 0.9)),
        st.builds(Slow, starts, durations, st.floats(0.01, 1.5), links()),
        st.builds(ViewSplit, starts, durations, st.sets(node, min_size=1, max_size=nodes - 1).map(frozenset)),
        st.builds(Handoff, starts, durations, node),
    )
    faults = draw(st.lists(fault, max_size=6))
    seed = draw(st.integers(0, 2**16))
    idle = draw(st.sets(st.integers(0, shards - 1)))
    return Schedule(nodes, replication_factor, shards, drifts, faults, seed, frozenset(idle))


def run_schedule(schedule: Schedule) -> LeaseSim:
    # The escape hatch is closed: with it, an election after data loss may lose
    # acknowledged writes by design (LeaseTiming's comment).
    timing = LeaseTiming(untrusted_grant_after=math.inf)
    sim = LeaseSim(
        schedule.nodes,
        schedule.shards,
        schedule.replication_factor,
        timing,
        schedule.seed,
        schedule.drifts,
        schedule.faults,
        tick=0.02,
        idle_shards=schedule.idle_shards,
    )
    sim.run_until(RUN)
    sim.check_final()
    return sim


# Fault patterns that each expose one rule when it is broken; hypothesis
# varies their timing and clocks. Plain random schedules find a broken promise,
# position, durable term or same-epoch rule within 200 examples, but not
# these, which need two faults lined up. n0 is shard 0's preferred primary.
H = TIMING.max_clock_drift / 2
EXTREMES = st.sampled_from([-H, 0.0, H])
seeds = st.integers(0, 2**16)


def _cut(*nodes: str, among: tuple[str, ...] = ("n0", "n1", "n2")) -> frozenset[tuple[str, str]]:
    """Both directions between ``nodes`` and everyone else in ``among``."""
    return frozenset(
        {(a, b) for a in nodes for b in among if b not in nodes}
        | {(b, a) for a in nodes for b in among if b not in nodes}
    )


@st.composite
def slow_replies_then_cut_off(draw: st.DrawFn) -> Schedule:
    """Replies crawl back to the holder, then its requests stop arriving: a lease
    counted from a reply's arrival (or a late reply counted for a later round)
    outlives the voters' promises. Slower than a renewal interval, so a later
    round is out when they land, and faster than a lease less one interval,
    or the holder loses its lease before any lands."""
    slow_from = draw(st.floats(1.0, 3.0))
    cut_from = slow_from + draw(st.floats(0.7, 2.5))
    faults: list[Fault] = [
        Slow(slow_from, 7.0, draw(st.floats(0.7, 1.2)), frozenset({("n1", "n0"), ("n2", "n0")})),
        Partition(cut_from, 4.0, frozenset({("n0", "n1"), ("n0", "n2")})),
    ]
    return Schedule(3, 3, 1, draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds))


@st.composite
def voter_restarts_while_a_rival_campaigns(draw: st.DrawFn) -> Schedule:
    """The rival cannot reach the holder and campaigns; the voter between them
    restarts, having forgotten its promise, and hears no renewal. On an idle
    shard positions are equal: only the restart wait stops a second lease."""
    voter, rival = draw(st.permutations(["n1", "n2"]))
    cut_from = draw(st.floats(1.0, 3.0))
    crash_at = cut_from + draw(st.floats(2.2, 4.0))
    faults: list[Fault] = [
        Partition(cut_from, 10.0, _cut(rival, among=(rival, "n0"))),
        Crash(crash_at, draw(st.floats(0.01, 0.5)), voter, True),
        Partition(crash_at, draw(st.floats(2.5, 3.5)), frozenset({("n0", voter)})),
    ]
    return Schedule(3, 3, 1, draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds), frozenset({0}))


@st.composite
def lagging_follower_then_holder_dies(draw: st.DrawFn) -> Schedule:
    """A follower misses acknowledged writes, then the holder dies: only the
    up-to-date rule keeps the lagging one from winning."""
    lagger = draw(st.sampled_from(["n1", "n2"]))
    cut_from = draw(st.floats(0.5, 2.0))
    cut_for = draw(st.floats(1.5, 4.0))
    faults: list[Fault] = [
        Partition(cut_from, cut_for, _cut(lagger)),
        # Dying late enough that the lagging one is back before the up-to-date
        # one's promise ends: refused, it asks again at that very moment.
        Crash(cut_from + draw(st.floats(max(1.0, cut_for - 1.5), cut_for)), 9.0, "n0", True),
    ]
    return Schedule(3, 3, 1, draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds))


@st.composite
def slow_clock_holder_cut_off(draw: st.DrawFn) -> Schedule:
    """Shard 1's preferred primary n1 pauses and n2, its clock slow, takes over;
    then n2 is cut off and n1 (clock fast, preferred: no delay) campaigns the
    moment its promise lapses. Without the drift margin n2's lease outlives it."""
    pause_at = draw(st.floats(0.8, 1.5))
    faults: list[Fault] = [
        Partition(0.5, pause_at + 1.5 - 0.5, _cut("n0", among=("n0", "n1"))),  # n0 lags: n2 wins
        Pause(pause_at, draw(st.floats(2.5, 3.5)), "n1"),
        Partition(draw(st.floats(6.0, 8.0)), 4.0, _cut("n2")),
    ]
    return Schedule(3, 3, 2, [H, H, -H], faults, draw(seeds))


@st.composite
def only_copy_down_and_one_lost(draw: st.DrawFn) -> Schedule:
    """n2 misses writes acknowledged by n0 and n1; n1 loses its copy and the
    holder dies before resynchronising it: n1's vote must not count."""
    lost_at = draw(st.floats(2.5, 3.0))
    faults: list[Fault] = [
        Partition(1.0, draw(st.floats(3.5, 5.0)), _cut("n2")),
        Crash(lost_at, draw(st.floats(0.2, 0.6)), "n1", False),
        Crash(lost_at + draw(st.floats(0.05, 0.3)), 9.0, "n0", True),
    ]
    return Schedule(3, 3, 1, draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds))


@st.composite
def holder_cut_off_alone_and_its_view_shrinks(draw: st.DrawFn) -> Schedule:
    """Gossip on each side of a partition declares the other side dead: the cut-off holder's
    replica sets become itself alone, a majority of one, while the other side elects. Only the
    quorum floor stops it from leading again (tests/test_faults.py saw it on real processes)."""
    alone = draw(st.sampled_from(["n0", "n1", "n2"]))
    faults: list[Fault] = [ViewSplit(draw(st.floats(1.0, 3.0)), draw(st.floats(2 * D, 4 * D)), frozenset({alone}))]
    if draw(st.booleans()):
        # And it restarts while cut off: no restart wait or renewal in place may let it lead alone.
        faults.append(Crash(faults[0].start + draw(st.floats(0.1, D)), draw(st.floats(0.01, 0.5)), alone, True))
    return Schedule(
        3, 3, draw(st.integers(1, 3)), draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds)
    )


@st.composite
def hand_off_while_the_release_is_lost_or_late(draw: st.DrawFn) -> Schedule:
    """The holder hands its lease off (a drain) while its release reaches one voter late or
    never, and the voter it reaches may be paused: the successor is elected by whoever heard,
    while the other voter still believes in the old promise. One holder at a time all the same,
    and the successor has every acknowledged write (the voters grant only one as far along)."""
    late, other = draw(st.permutations(["n1", "n2"]))
    at = draw(st.floats(1.0, 4.0))
    faults: list[Fault] = [
        Slow(at - 0.05, draw(st.floats(0.5, 3.0)), draw(st.floats(0.05, 1.5)), frozenset({("n0", late)})),
        Handoff(at, 0.0, "n0"),
    ]
    if draw(st.booleans()):
        faults.append(Pause(at + draw(st.floats(0.0, 0.3)), draw(st.floats(0.1, 2 * D)), other))
    if draw(st.booleans()):
        faults.append(Handoff(at + draw(st.floats(0.1, 3 * D)), 0.0, draw(st.sampled_from(["n1", "n2"]))))
    return Schedule(3, 3, 1, draw(st.lists(EXTREMES, min_size=3, max_size=3)), faults, draw(seeds))


ADVERSARIAL = (
    hand_off_while_the_release_is_lost_or_late,
    slow_replies_then_cut_off,
    voter_restarts_while_a_rival_campaigns,
    lagging_follower_then_holder_dies,
    slow_clock_holder_cut_off,
    only_copy_down_and_one_lost,
    holder_cut_off_alone_and_its_view_shrinks,
)


# No shrinking: a failing schedule is reported as drawn (it is small already),
# where shrinking reruns hundreds of simulations for up to five minutes.
@settings(
    max_examples=examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(schedule=st.one_of(fault_schedules(), *(pattern() for pattern in ADVERSARIAL)))
def test_faults_never_break_the_invariants(schedule: Schedule) -> None:
    """One holder per shard at any real time; epochs only grow; acknowledged writes survive."""
    sim = run_schedule(schedule)
    assert sim.violations == []
    assert sim.acquisitions, "nothing was ever elected: the schedule tested nothing"


@settings(
    max_examples=examples(12),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(schedule=hand_off_while_the_release_is_lost_or_late())
def test_a_hand_off_elects_a_successor_and_never_two_holders_at_once(schedule: Schedule) -> None:
    """The drain's and the hand-back's release: the shard gets a holder again (a successor, or
    the one that released once its own wait is over, when the successor was stopped), and the
    holders' leases never overlap in real time, however late the release reaches a voter."""
    sim = run_schedule(schedule)
    assert sim.violations == []
    released = next(fault for fault in schedule.faults if isinstance(fault, Handoff)).start
    assert any(at > released for at, _shard, _node, _epoch in sim.acquisitions), sim.acquisitions


# -- the simulation: liveness without faults -------------------------------------------------------------


def test_every_shard_gets_a_holder_within_a_lease_of_a_whole_cluster_restart() -> None:
    # Restarted voters grant nothing for one lease duration; then the preferred primaries win at once.
    sim = LeaseSim(nodes=5, shards=5, seed=2, restarted_at_start=True)
    assert sim.run_while(lambda: any(sim.holder(s) is None for s in sim.replica_sets), limit=D + 0.5)
    assert all(sim.holder(s) == sim.replica_sets[s][0] for s in sim.replica_sets)
    sim.run_until(sim.now + 10)
    assert sim.violations == [] and sim.losses == []  # and nobody lost a lease without a fault


def test_a_killed_holders_shard_is_writable_again_within_a_lease_and_the_election_delay() -> None:
    times = [failover_time(TIMING, seed) for seed in range(examples(40))]
    held = [h for h, _ in times]
    acked = [a for _, a in times]
    bound = D + 3 * TIMING.election_delay + 0.1  # last renewal's promise + delay for one rank + a round
    assert max(held) <= bound, sorted(held)[-5:]
    assert max(acked) <= bound + 0.1
    assert percentile(acked, 0.99) <= 3.0  # the product's target for write unavailability


def test_the_escape_hatch_elects_someone_after_every_replica_lost_its_data() -> None:
    timing = LeaseTiming(untrusted_grant_after=5.0)
    sim = LeaseSim(nodes=3, shards=1, timing=timing, seed=4)
    sim.run_until(3.0)
    for node in list(sim.nodes):
        sim.crash(node)
    for node in list(sim.nodes):
        sim.restart(node, keep_log=False)
    restarted = sim.now
    assert sim.run_while(lambda: sim.holder(0) is None, limit=20)
    assert sim.now - restarted >= 5.0  # nobody could vouch for a candidate before the hatch opened
    assert sim.violations == [] or all("acknowledged" in v for v in sim.violations)


def test_a_replica_set_of_one_renews_a_lapsed_lease_in_place() -> None:
    # A stalled reactor (a long turn on a busy machine) can look past its lease before the tick
    # that renews it runs. Alone, the node is its only voter: it keeps its epoch and its writes.
    lone = ShardLeases("a", TIMING, MemoryVoteStore(), 0.0, random.Random(1))
    lone.set_replica_sets({0: ("a",)}, 0.0)
    lone.tick(0.0)
    assert lone.events == [LeaseEvent(0, "acquired", 1)]
    late = lone.lease_until(0) + 5 * D
    assert lone.holds_lease(0, late)
    assert lone.epoch(0) == 1 and lone.lease_until(0) == pytest.approx(late + D * 0.95)
    lone.tick(lone.lease_until(0) + D)  # the tick after another stall renews too, never loses
    assert lone.events == [LeaseEvent(0, "acquired", 1)] and lone.counters["lost"] == 0


def test_a_holder_with_other_voters_never_renews_a_lapsed_lease_in_place() -> None:
    trio = Trio()
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a = trio.nodes["a"]
    assert not a.holds_lease(0, a.lease_until(0))  # the others may elect someone else from here
    trio.tick("a", a.lease_until(0) + D)
    assert a.counters["lost"] == 1


# -- the quorum floor: a view shrunk by failure detection leads nothing ------------------------------


def test_a_candidate_whose_replica_set_shrank_below_the_floor_never_wins() -> None:
    # Three members seen, RF 3: the floor is 2. a holds the lease; then a partition cuts a off and
    # each side's gossip declares the other dead: a's replica set becomes (a,), b's and c's (b, c).
    trio = Trio()
    for node in trio.nodes.values():
        node.set_quorum_floor(2)
    trio.tick("a", 0.0)
    trio.deliver(now=0.0)
    a, b, c = (trio.nodes[name] for name in REPLICAS)
    assert a.holds_lease(0, 0.1)
    a.set_replica_sets({0: ("a",)}, 0.1)
    b.set_replica_sets({0: ("b", "c")}, 0.1)
    c.set_replica_sets({0: ("b", "c")}, 0.1)
    t = 0.1
    holders_at_once = []
    while t < 10 * D:
        t += 0.05
        trio.tick("a", t)
        trio.in_flight = [m for m in trio.in_flight if m[0] != "a" and m[1] != "a"]  # cut off
        trio.tick("b", t)
        trio.tick("c", t)
        trio.deliver(now=t)
        holders_at_once.append({name for name, node in trio.nodes.items() if node.holds_lease(0, t)})
    assert all(len(holders) <= 1 for holders in holders_at_once)
    # a lost its lease when it ran out and never won another: no renewal in place, no self-election.
    assert a.events == [LeaseEvent(0, "acquired", FIRST_A), LeaseEvent(0, "lost", FIRST_A)]
    assert a.epoch(0) == FIRST_A and a.counters["elections_started"] == 1  # the first one only
    # The majority side's two members are the floor: one of them leads.
    assert b.holds_lease(0, t) or c.holds_lease(0, t)


def test_the_alone_shortcuts_are_off_above_floor_one() -> None:
    # Restarted, alone in the replica set: a single-node cluster campaigns at once (no restart wait)...
    lone = ShardLeases("a", TIMING, MemoryVoteStore(), 0.0, random.Random(1), restarted=True)
    lone.set_replica_sets({0: ("a",)}, 0.0)
    lone.tick(0.0)
    assert lone.events == [LeaseEvent(0, "acquired", 1)]
    # ...and renews a lapsed lease in place, until the floor says the cluster had more members.
    lone.set_quorum_floor(2)
    late = lone.lease_until(0) + D
    assert not lone.holds_lease(0, late)
    lone.tick(late)
    assert lone.events[-1] == LeaseEvent(0, "lost", 1)
    # Above floor 1 it never elects itself alone, restart wait or not.
    cut_off = ShardLeases("a", TIMING, MemoryVoteStore(), 0.0, random.Random(1), restarted=True)
    cut_off.set_quorum_floor(2)
    cut_off.set_replica_sets({0: ("a",)}, 0.0)
    for step in range(200):
        assert cut_off.tick(step * 0.05) == []
    assert cut_off.events == [] and cut_off.epoch(0) == 0
    with pytest.raises(ValueError, match="floor"):
        cut_off.set_quorum_floor(0)


def test_failure_detection_never_lowers_the_floor_and_a_graceful_leave_does() -> None:
    members = MemberHighWater(replication_factor=3)
    assert members.floor == 1  # nothing seen yet: a node alone is a single-node cluster
    assert members.observe({"a"}, ()) and members.floor == 1
    assert members.observe({"a", "b", "c"}, ()) and (members.high_water, members.floor) == (3, 2)
    assert not members.observe({"a"}, ())  # b and c declared dead (or forgotten): the floor stays
    assert members.floor == 2
    assert members.observe({"a"}, {"b"}) and (members.high_water, members.floor) == (2, 2)
    assert not members.observe({"a"}, {"b"})  # the same leave counts once
    assert members.observe({"a"}, {"b", "c"}) and (members.high_water, members.floor) == (1, 1)
    # A member that left comes back, and leaves again: counted again.
    assert members.observe({"a", "b"}, {"c"}) and members.high_water == 2
    assert members.observe({"a"}, {"b", "c"}) and members.high_water == 1
    # Never below the members alive now; the replication factor caps the floor.
    big = MemberHighWater(replication_factor=3)
    big.observe({"a", "b", "c", "d", "e"}, ())
    assert big.floor == 2
    big.observe({"a", "b", "c"}, {"d", "e", "x"})
    assert big.high_water == 3
    single = MemberHighWater(replication_factor=1)
    single.observe({"a", "b", "c"}, ())
    assert single.floor == 1


def test_a_lone_survivor_of_graceful_leaves_leads_again() -> None:
    members = MemberHighWater(replication_factor=3)
    members.observe({"a", "b", "c"}, ())
    lone = ShardLeases("a", TIMING, MemoryVoteStore(), 0.0, random.Random(1), restarted=False)
    lone.set_quorum_floor(members.floor)
    lone.set_replica_sets({0: ("a",)}, 0.0)
    lone.tick(0.0)
    assert lone.events == []
    members.observe({"a"}, {"b", "c"})
    lone.set_quorum_floor(members.floor)
    lone.tick(0.1)
    assert lone.events == [LeaseEvent(0, "acquired", 1)]


def test_the_high_water_survives_a_restart_in_its_file(tmp_path: Path) -> None:
    store = FileHighWater(tmp_path)
    members = MemberHighWater(3, store)
    members.observe({"a", "b", "c"}, ())
    again = MemberHighWater(3, FileHighWater(tmp_path))
    assert again.high_water == 3 and again.floor == 2
    again.observe({"a"}, ())  # restarted while cut off: still the floor of three
    assert again.floor == 2
    assert sorted(os.listdir(tmp_path)) == [FileHighWater.FILE_NAME]
    data = bytearray(store.path.read_bytes())
    data[6] ^= 1
    store.path.write_bytes(bytes(data))
    with pytest.raises(VoteStoreError, match=FileHighWater.FILE_NAME):
        FileHighWater(tmp_path).load()


def test_without_the_floor_a_view_split_elects_two_holders() -> None:
    # The simulation does see the bug the floor fixes: n0 cut off alone, its view shrunk to itself.
    split: list[Fault] = [ViewSplit(1.0, 3 * D, frozenset({"n0"}))]
    unfloored = LeaseSim(nodes=3, shards=3, seed=3, faults=split, quorum_floor=1)
    unfloored.run_until(1.0 + 3 * D)
    assert any("at once" in violation for violation in unfloored.violations), unfloored.violations
    floored = LeaseSim(nodes=3, shards=3, seed=3, faults=split)
    floored.run_until(1.0 + 5 * D)
    floored.check_final()
    assert floored.violations == []
    # The majority side led every shard while the split lasted; n0 led nothing then.
    during = [(at, node) for at, _, node, _ in floored.acquisitions if 1.0 < at < 1.0 + 3 * D]
    assert during and all(node != "n0" for _, node in during)


def test_a_high_water_that_cannot_be_saved_changes_nothing() -> None:
    class Failing:
        fail = False

        def load(self) -> int:
            return 3

        def save(self, high_water: int) -> None:
            if self.fail:
                raise OSError("disk full")

    store = Failing()
    members = MemberHighWater(3, store)
    store.fail = True
    with pytest.raises(OSError):
        members.observe({"a"}, {"b"})
    assert members.high_water == 3
    store.fail = False
    assert members.observe({"a"}, {"b"}) and members.high_water == 2  # the leave counts on the retry
