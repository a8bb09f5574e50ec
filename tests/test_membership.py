"""The SWIM membership core, stepped by a fake clock over a simulated network (aegiskv/testing/simnet.py)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.membership import State, SwimConfig, SwimMembership
from aegiskv.testing.simnet import NetworkConditions, Simulation
from tests.effort import examples


def _deaths_of_live_nodes(sim: Simulation) -> list[tuple[str, str, float]]:
    """Record every time a node declares a node that is in fact alive dead."""
    false_deaths: list[tuple[str, str, float]] = []

    def watch(observer: str, subject: str, state: State, at: float) -> None:
        if state == State.DEAD and subject not in sim.dead:
            false_deaths.append((observer, subject, at))

    sim.observers.append(watch)
    return false_deaths


def _everyone_sees(sim: Simulation, subject: str, states: set[State | None]) -> bool:
    return all(sim.view(observer, subject) in states for observer in sim.alive_nodes() if observer != subject)


def test_a_killed_node_is_declared_dead_by_everyone_within_the_bound() -> None:
    sim = Simulation(10, seed=3)
    sim.run_until(5)
    sim.kill("n0003")
    killed_at = sim.now
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0003", {State.DEAD}), limit=30)
    # memberlist's LAN profile expects about 6 s; the p99 bound is 12 s.
    assert sim.now - killed_at <= 12
    # Dead is not departed: the leases' quorum floor stays (aegiskv.cluster.leases).
    views = [sim.nodes[observer].member("n0003") for observer in sim.alive_nodes()]
    assert all(view is not None and not view.left for view in views)


def test_no_false_deaths_at_ten_percent_loss() -> None:
    sim = Simulation(10, conditions=NetworkConditions(loss=0.10), seed=5)
    false_deaths = _deaths_of_live_nodes(sim)
    sim.run_until(120)
    assert false_deaths == []
    assert all(sim.view(a, b) in (State.ALIVE, State.SUSPECT) for a in sim.nodes for b in sim.nodes if a != b)


# The timing the real-process fault test runs with (tests/test_cluster_faults.py).
FAST_TIMING = SwimConfig(probe_interval=0.33, probe_timeout=0.17, gossip_interval=0.07, push_pull_interval=10)


def test_no_false_deaths_in_a_small_cluster_at_ten_percent_loss_across_seeds() -> None:
    # In a 5-node cluster an update is sent only 4 times; a refutation whose copies all
    # missed the first suspector used to leave it waiting out its timeout (7 of 100
    # seeds declared a live node dead within 30 s).
    false_deaths: list[tuple[int, str, str, float]] = []
    for seed in range(60):
        sim = Simulation(5, config=FAST_TIMING, conditions=NetworkConditions(loss=0.10), seed=seed, tick=0.05)
        deaths = _deaths_of_live_nodes(sim)
        sim.run_until(30)
        false_deaths.extend((seed, *death) for death in deaths)
    assert false_deaths == []


def _pair() -> tuple[SwimMembership, SwimMembership]:
    first = SwimMembership("a", ("10.0.0.1", 7701), config=FAST_TIMING, now=0.0)
    second = SwimMembership("b", ("10.0.0.2", 7701), config=FAST_TIMING, now=0.0)
    first.merge_state(second.full_state(), 0.0)
    second.merge_state(first.full_state(), 0.0)
    return first, second


def _updates_in(payload: bytes) -> list[tuple[str, State, int]]:
    return [(raw[0], State(raw[1]), raw[2]) for raw in json.loads(payload)["u"]]


def test_a_probe_of_a_suspect_carries_the_suspicion_after_its_retransmissions_ran_out() -> None:
    prober, _suspect_node = _pair()
    member = prober.member("b")
    assert member is not None
    prober._suspect(member, "a", member.incarnation, 0.0)
    prober._updates.clear()  # every copy of the suspicion already sent
    (_address, payload), *_ = prober._start_probe(0.0)
    assert ("b", State.SUSPECT, 0) in _updates_in(payload)


def test_a_stale_suspicion_about_us_is_answered_with_our_refutation_again() -> None:
    suspector, suspect = _pair()
    member = suspector.member("b")
    assert member is not None
    suspector._suspect(member, "a", 0, 0.0)
    suspect.me.incarnation = 1  # refuted already; the refutation never reached "a"
    suspect._updates.clear()
    (_address, ping), *_ = suspector._start_probe(0.0)
    replies = suspect.receive(suspector.me.address, ping, 0.1)
    assert suspect.counters["refutations_repeated"] == 1
    assert suspect.me.incarnation == 1  # no new incarnation for old news
    (_address, ack), *_ = replies
    assert ("b", State.ALIVE, 1) in _updates_in(ack)
    suspector.receive(suspect.me.address, ack, 0.2)
    refreshed = suspector.member("b")
    assert refreshed is not None and refreshed.state == State.ALIVE and refreshed.incarnation == 1


def test_a_suspect_that_comes_back_refutes_and_stays_alive() -> None:
    sim = Simulation(6, seed=7)
    false_deaths = _deaths_of_live_nodes(sim)
    sim.run_until(3)
    others = set(sim.nodes) - {"n0002"}
    # Cut n0002 off long enough to be suspected, not long enough to be declared dead.
    sim.conditions.partitions = [{"n0002"}, others]
    assert sim.run_while(lambda: not any(sim.view(o, "n0002") == State.SUSPECT for o in others), limit=10)
    incarnation_before = sim.nodes["n0002"].me.incarnation
    sim.conditions.partitions = []
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0002", {State.ALIVE}), limit=20)
    assert sim.nodes["n0002"].me.incarnation > incarnation_before
    assert false_deaths == []


def test_a_graceful_leave_is_known_to_all_without_suspicion() -> None:
    sim = Simulation(8, seed=11)
    suspected: list[str] = []
    sim.observers.append(
        lambda observer, subject, state, at: suspected.append(subject) if state == State.SUSPECT else None
    )
    sim.run_until(3)
    leaver = sim.nodes["n0004"]
    sim._send(leaver.me.address, leaver.leave(sim.now))
    left_at = sim.now
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0004", {State.LEFT}), limit=10)
    assert sim.now - left_at < 5
    assert "n0004" not in suspected
    # What the leases' quorum floor goes down by (GossipService.departed).
    views = [sim.nodes[observer].member("n0004") for observer in sim.alive_nodes() if observer != "n0004"]
    assert all(view is not None and view.left for view in views)


def test_join_through_a_seed_reaches_everyone() -> None:
    sim = Simulation(12, seed=13)
    sim.run_until(2)
    sim.join("n0100", seed="n0000")
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0100", {State.ALIVE}), limit=15)
    assert {m.node_id for m in sim.nodes["n0100"].live_members()} == set(sim.nodes)


def test_a_restarted_node_supersedes_its_tombstone_and_ghosts_stay_dead() -> None:
    sim = Simulation(5, seed=17)
    sim.run_until(2)
    old_incarnation = sim.nodes["n0001"].me.incarnation
    sim.kill("n0001")
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0001", {State.DEAD}), limit=30)
    # A stale "alive" at the old incarnation (a delayed packet) must not resurrect it.
    ghost = json.dumps(
        {"t": "ack", "s": 0, "f": "n0001", "u": [["n0001", 0, old_incarnation, "10.0.0.2", 7701, {}, "n0001"]]}
    ).encode()
    sim.nodes["n0000"].receive(("10.0.0.2", 7701), ghost, sim.now)
    assert sim.view("n0000", "n0001") == State.DEAD
    # The restarted process (same id, higher incarnation) joins again and is alive everywhere.
    sim.join("n0001", seed="n0000", incarnation=old_incarnation + 1000)
    assert sim.run_while(lambda: not _everyone_sees(sim, "n0001", {State.ALIVE}), limit=15)


def test_a_partition_is_seen_from_both_sides() -> None:
    sim = Simulation(6, seed=19)
    sim.run_until(2)
    left, right = {"n0000", "n0001", "n0002"}, {"n0003", "n0004", "n0005"}
    sim.conditions.partitions = [left, right]
    # Long enough to suspect and declare dead, shorter than the tombstones' 30 s.
    sim.run_until(sim.now + 20)
    for observer in left:
        assert all(sim.view(observer, subject) == State.DEAD for subject in right)
    for observer in right:
        assert all(sim.view(observer, subject) == State.DEAD for subject in left)


def test_a_healed_partition_rejoins_long_before_the_tombstones_go() -> None:
    sim = Simulation(6, config=FAST_TIMING, seed=23, tick=0.05)
    false_deaths = _deaths_of_live_nodes(sim)
    sim.run_until(2)
    left, right = {"n0000", "n0001", "n0002"}, {"n0003", "n0004", "n0005"}
    sim.conditions.partitions = [left, right]
    # 15 s: long enough for both sides to declare the other dead, shorter than the 30 s tombstones.
    sim.run_until(sim.now + 15)
    assert all(sim.view(a, b) == State.DEAD for a in left for b in right)
    assert all(sim.view(a, b) == State.DEAD for a in right for b in left)
    assert FAST_TIMING.dead_reclaim_time > 10
    sim.conditions.partitions = []
    healed_at = sim.now

    # Nobody probes the dead and push-pull picks live members only: without reconnecting, the
    # two halves never spoke again (and once the tombstones went, forgot each other).
    def everyone_alive() -> bool:
        return all(sim.view(a, b) == State.ALIVE for a in sim.nodes for b in sim.nodes if a != b)

    assert sim.run_while(lambda: not everyone_alive(), limit=10)
    assert sim.now - healed_at < 5 * FAST_TIMING.probe_interval * FAST_TIMING.suspicion_mult
    # And once back, nobody is declared dead again.
    false_deaths.clear()
    sim.run_until(sim.now + 10)
    assert false_deaths == [] and everyone_alive()


def test_a_ping_to_a_member_held_dead_carries_its_death_and_the_ack_its_refutation() -> None:
    first, second = _pair()
    member = first.member("b")
    assert member is not None
    first._set(member, State.DEAD, member.incarnation, 0.0)
    first._updates.clear()
    [(address, ping)] = first._reconnect(1.0)
    assert address == second.me.address and ("b", State.DEAD, 0) in _updates_in(ping)
    [(_address, ack)] = second.receive(first.me.address, ping, 1.0)
    assert second.me.incarnation == 1 and ("b", State.ALIVE, 1) in _updates_in(ack)
    first.receive(second.me.address, ack, 1.1)
    back = first.member("b")
    assert back is not None and back.state == State.ALIVE and back.incarnation == 1


def test_a_member_held_dead_that_pings_us_hears_so_in_the_ack() -> None:
    first, second = _pair()
    member = second.member("a")
    assert member is not None
    second._set(member, State.DEAD, member.incarnation, 0.0)
    second._updates.clear()
    (_address, ping), *_ = first.join([second.me.address], 1.0)
    [(_address, ack)] = second.receive(first.me.address, ping, 1.0)
    assert ("a", State.DEAD, 0) in _updates_in(ack)
    first.receive(second.me.address, ack, 1.1)
    assert first.me.incarnation == 1  # refuted; its next message to b brings it back there


def test_a_member_that_left_is_not_pinged_back() -> None:
    first, _second = _pair()
    member = first.member("b")
    assert member is not None
    first._set(member, State.LEFT, member.incarnation + 1, 0.0)
    assert first._reconnect(1.0) == []


@settings(max_examples=examples(300), deadline=None)
@given(payload=st.one_of(st.binary(max_size=300), st.from_type(type(None)).map(lambda _: b"{}")))
def test_garbage_is_counted_and_dropped(payload: bytes) -> None:
    node = SwimMembership("me", ("10.0.0.1", 7701), config=SwimConfig())
    before = dict(node.members)
    replies = node.receive(("10.0.0.9", 7701), payload, 1.0)
    assert node.counters["messages_received"] == 1
    if node.counters["malformed"]:
        assert replies == []
        assert node.members == before


@settings(max_examples=examples(200), deadline=None)
@given(
    update=st.lists(
        st.one_of(st.text(max_size=5), st.integers(-5, 2**70), st.none(), st.dictionaries(st.text(), st.integers())),
        max_size=8,
    )
)
def test_malformed_updates_never_raise(update: list) -> None:
    node = SwimMembership("me", ("10.0.0.1", 7701))
    message = json.dumps({"t": "ping", "s": 1, "f": "x", "u": [update]}).encode()
    node.receive(("10.0.0.9", 7701), message, 1.0)  # must not raise whatever the update holds
