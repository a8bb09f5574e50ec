"""The fault checker on histories written by hand: each finding it must make, and not make.

No processes, no root: these pin down the definitions in tests/faults/checker.py
(lost, stale acknowledgement, window, error classes) so that a fault run's
verdict means what its docstring says.
"""

from __future__ import annotations

import math

import pytest

from aegiskv.cluster.slots import SLOTS, key_slot
from tests.faults.checker import CheckSettings, Cut, Event, Impact, Timeline, check, percentile, render
from tests.faults.cluster import replica_shortfall
from tests.faults.workload import Read, Schedule, Write, unit_tags

T0 = 1000.0


def write(
    number: int, slot: int, sent: float, done: float, ok: bool = True, node: str = "n0", side: str = "c0"
) -> Write:
    key = b"k%d" % number
    return Write(
        number, side, f"{side}/w0", key, b"v%d" % number, slot, T0 + sent, T0 + done, ok, None if ok else "Err: x", node
    )


def present(writes: list[Write]) -> dict[bytes, bytes | None]:
    return {w.key: w.value for w in writes}


def timeline(*events: Event, cuts: tuple[Cut, ...] = ()) -> Timeline:
    return Timeline(start=T0, events=list(events), cuts=list(cuts))


def at(seconds: float) -> float:
    return T0 + seconds


def test_lost_means_acknowledged_and_then_missing_or_different() -> None:
    writes = [write(1, 5, 1.0, 1.1), write(2, 5, 1.2, 1.3), write(3, 6, 1.4, 1.5), write(4, 6, 1.6, 2.0, ok=False)]
    final = present(writes)
    del final[b"k1"]  # acknowledged, then gone
    final[b"k2"] = b"something else"  # acknowledged, then another value
    final[b"k4"] = b"v4"  # failed, yet applied: allowed
    summary = check(writes, final, timeline(), unreadable={b"k3": "TimeoutError: x"})
    assert summary["lost"] == 2
    assert {entry["key"] for entry in summary["lost_examples"]} == {"k1", "k2"}
    assert summary["lost_examples"][1]["found"] == "something else"
    assert summary["unreadable"] == 1  # k3 is neither lost nor kept
    assert summary["indeterminate_applied"] == 1
    assert summary["lost_by_acking_node"] == {"n0": 2}
    assert summary["lost_fraction_of_acked"] == pytest.approx(2 / 3, abs=1e-4)


def test_lost_writes_are_told_apart_by_the_fault_they_were_acknowledged_before() -> None:
    writes = [write(1, 5, 1.0, 1.1, node="n1"), write(2, 5, 6.0, 6.1, node="n2")]
    kill = Event(at(3.0), "kill", ("n1",), (Impact(frozenset({5})),))
    summary = check(writes, {}, timeline(kill))
    assert summary["lost_by_phase"] == {"before any fault": 1, "after kill n1": 1}
    assert summary["lost_by_acking_node"] == {"n1": 1, "n2": 1}


def test_stale_acknowledgements_after_a_pause_are_those_past_the_lease_of_requests_it_held() -> None:
    settings = CheckSettings(lease=2.0, tolerance=0.25, grace=0.5)
    pause = Cut("n1", "pause", at(10.0), at(14.0))
    writes = [
        write(1, 1, 11.9, 12.1, node="n1"),  # within lease + tolerance: may be legitimate
        write(2, 1, 11.0, 12.3, node="n1"),  # "from a stopped node": only a wrong attribution does that
        write(3, 1, 12.5, 14.4, node="n1"),  # held through the pause, answered on waking: stale
        write(4, 1, 9.9, 14.1, node="n1"),  # sent before the pause, answered on waking: stale too
        write(5, 1, 14.1, 14.3, node="n1"),  # sent after SIGCONT: it may have won a lease again
        write(6, 1, 13.5, 14.6, node="n1"),  # answered after the grace: not watched
        write(7, 1, 12.5, 13.0, node="n2"),  # another node: fine
        write(8, 1, 12.5, 14.2, ok=False, node="n1"),  # an error is no acknowledgement
    ]
    summary = check(writes, present(writes), timeline(cuts=(pause,)), settings=settings)
    assert summary["stale_acks"] == 3
    examples = summary["stale_ack_examples"]
    assert [entry["key"] for entry in examples] == ["k2", "k3", "k4"]
    assert [entry["how"] for entry in examples] == ["during", "queued", "queued"]
    assert [entry["sent_after_expiry"] for entry in examples] == [False, True, False]
    assert summary["stale_acks_sent_after_expiry"] == 1
    # A longer lease makes the same history clean.
    relaxed = check(writes, present(writes), timeline(cuts=(pause,)), settings=CheckSettings(lease=5.0))
    assert relaxed["stale_acks"] == 0


def test_a_retry_sent_after_the_pause_is_no_stale_acknowledgement() -> None:
    # The stopped node held the first attempt and refused it on waking; the client sent it
    # again, and the node, primary again under a new lease, acknowledged the retry.
    settings = CheckSettings(lease=2.0, tolerance=0.25, grace=0.5)
    pause = Cut("n1", "pause", at(10.0), at(14.0))
    retried = write(1, 1, 10.1, 14.2, node="n1")
    retried.attempt_sent = at(14.1)
    held = write(2, 1, 10.1, 14.2, node="n1")
    held.attempt_sent = at(10.1)  # the attempt it held through the pause: stale
    summary = check([retried, held], present([retried, held]), timeline(cuts=(pause,)), settings=settings)
    assert [entry["key"] for entry in summary["stale_ack_examples"]] == ["k2"]


def test_stale_acknowledgements_of_an_isolated_node() -> None:
    isolated = Cut("n1", "isolated", at(10.0), at(14.0))
    writes = [
        write(1, 1, 12.9, 13.0, node="n1"),  # acknowledged without a majority, past the lease: stale
        write(2, 1, 10.5, 10.6, node="n1"),  # inside its last lease: fine
        write(3, 1, 11.0, 14.2, node="n1"),  # received while it may still have held its lease
        write(4, 1, 13.0, 14.3, node="n1"),  # received after its lease ran out, answered at the heal: stale
        write(5, 1, 14.1, 14.2, node="n1"),  # sent after the heal
    ]
    summary = check(writes, present(writes), timeline(cuts=(isolated,)))
    assert [(entry["key"], entry["how"]) for entry in summary["stale_ack_examples"]] == [
        ("k1", "during"),
        ("k4", "queued"),
    ]


def test_the_window_is_the_last_slot_to_take_a_write_again() -> None:
    kill = Event(at(10.0), "kill", ("n1",), (Impact(frozenset({1, 2}), label="n1's slots"),))
    writes = [
        write(1, 1, 9.0, 9.1),
        write(2, 1, 10.1, 10.2, ok=False),
        write(3, 1, 11.0, 11.5, ok=False),
        write(4, 1, 11.5, 11.6),  # slot 1 writable again 1.6 s after the kill
        write(5, 2, 10.5, 12.0),  # slot 2: one slow write, acknowledged 2.0 s after
        write(6, 2, 11.0, 11.8),  # ... or this one, sent later but answered first: 1.8 s
        write(7, 3, 10.5, 10.9, ok=False),  # slot 3 is not n1's: collateral
        write(8, 1, 20.0, 20.1, ok=False),  # long after the window: outside
        write(9, 2, 5.0, 5.1, ok=False),  # before any fault: outside
        write(10, 3, 12.0, 12.1),
    ]
    summary = check(writes, present(writes), timeline(kill))
    impact = summary["events"][0]["impacts"][0]
    assert impact["unit_windows_s"] == [1.6, 1.8]
    assert impact["window_s"] == 1.8
    assert impact["slots_written"] == 2
    assert impact["never_writable_again"] == 0
    assert summary["errors"]["in_window"] == 2
    assert summary["errors"]["collateral"] == 1
    assert summary["errors"]["outside"] == 2
    assert {entry["key"] for entry in summary["errors"]["outside_examples"]} == {"k8", "k9"}
    assert summary["events"][0]["errors_in_window"] == 3


def test_a_slot_never_written_again_leaves_the_window_open_to_the_end() -> None:
    kill = Event(at(10.0), "kill", ("n1",), (Impact(frozenset({1})),))
    writes = [write(1, 1, 10.5, 10.6, ok=False), write(2, 1, 15.0, 15.1, ok=False), write(3, 2, 15.0, 15.1)]
    summary = check(writes, present(writes), timeline(kill), end=at(16.0))
    impact = summary["events"][0]["impacts"][0]
    assert impact["window_s"] is None and impact["never_writable_again"] == 1
    assert summary["errors"]["in_window"] == 2 and summary["errors"]["outside"] == 0


def test_a_side_cut_off_until_the_heal_may_fail_until_then() -> None:
    minority = Impact(frozenset(range(SLOTS)), frozenset({"c1"}), "c1 cut", lasts_until=at(20.0))
    failover = Impact(frozenset({1}), frozenset({"c0"}), "n1 fails over")
    partition = Event(at(10.0), "partition", ("n1",), (minority, failover))
    writes = [
        write(1, 1, 10.2, 10.3, node="n1", side="c1"),  # the minority's primary, inside its lease
        write(2, 1, 14.0, 14.5, ok=False, side="c1"),  # refused later: expected until the heal
        write(3, 1, 21.0, 21.1, side="c1"),  # after the heal
        write(4, 1, 10.5, 11.0, ok=False, side="c0"),
        write(5, 1, 12.0, 12.4, side="c0", node="n2"),  # failed over after 2.4 s
    ]
    summary = check(writes, present(writes), timeline(partition))
    windows = {impact["label"]: impact["window_s"] for impact in summary["events"][0]["impacts"]}
    assert windows == {"c1 cut": 11.1, "n1 fails over": 2.4}
    assert summary["errors"]["in_window"] == 2 and summary["errors"]["outside"] == 0


def test_the_longest_failure_run_counts_consecutive_failures_by_send_time() -> None:
    writes = [write(1, 1, 1.0, 1.1)]
    writes += [write(2 + n, 1, 2.0 + n * 0.1, 2.05 + n * 0.1, ok=False) for n in range(5)]
    writes += [write(10, 1, 3.0, 3.1), write(11, 1, 4.0, 4.1, ok=False)]
    summary = check(writes, present(writes), timeline())
    assert summary["longest_failure_run"] == {"writes": 5, "seconds": 0.45, "from": 2.0, "to": 2.45}


def test_reads_that_miss_a_key_that_exists_are_counted_apart_from_lost_keys() -> None:
    writes = [write(1, 1, 1.0, 1.1), write(2, 1, 1.2, 1.3)]
    final = {b"k1": b"v1"}  # k2 was lost
    reads = [
        Read("c0", b"k1", b"v1", at(1.1), at(2.0), at(2.1), None),  # said "not found", but k1 exists
        Read("c0", b"k1", b"v1", at(1.1), at(2.2), at(2.3), b"v1"),
        Read("c0", b"k2", b"v2", at(1.3), at(2.4), at(2.5), None),  # k2 is lost anyway
        Read("c0", b"k1", b"v1", at(1.1), at(2.6), at(2.7), None, "TimeoutError: x"),
        Read("c0", b"k1", b"v1", at(1.1), at(2.8), at(2.9), None),  # k1 again: one key unreachable twice
    ]
    summary = check(writes, final, timeline(), reads=reads)["reads"]
    assert summary["not_found_but_exists"] == 2
    assert summary["unreachable_keys"] == 1
    assert summary["not_found_lost_key"] == 1
    assert summary["errors"] == 1
    assert summary["examples_not_found_but_exists"][0]["key"] == "k1"


def test_render_shows_the_verdicts_and_every_event() -> None:
    kill = Event(at(10.0), "kill", ("n1",), (Impact(frozenset({1}), label="n1's slots"),))
    writes = [write(1, 1, 9.0, 9.1, node="n1"), write(2, 1, 10.5, 11.0)]
    text = render(check(writes, {b"k2": b"v2"}, timeline(kill)), "kill n1")
    assert text.splitlines()[0] == "kill n1"
    assert "LOST 1 acknowledged" in text and "STALE ACKS 0" in text
    assert any(line.split()[1:3] == ["kill", "n1"] and "1.00" in line for line in text.splitlines())


def test_percentile_is_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))


def test_unit_tags_spread_writes_over_equal_slot_ranges() -> None:
    tags = unit_tags(64)
    assert len(tags) == 64
    for unit, (tag, slot) in enumerate(tags):
        assert unit * SLOTS // 64 <= slot < (unit + 1) * SLOTS // 64
        assert key_slot(b"{%s}:run:c0:17" % tag) == slot


def test_the_schedule_slips_instead_of_bursting_after_a_stall() -> None:
    schedule = Schedule(rate=100.0, max_lag=0.5)
    first, due = schedule.take()
    assert first == 0
    schedule.base -= 10.0  # as if every writer had been stuck for 10 s
    index, due = schedule.take()
    assert index == 1
    _, next_due = schedule.take()
    # Re-based: the next one is due a 1/rate after this one, not 10 s in the past.
    assert next_due - due == pytest.approx(0.01, abs=1e-6)


def test_a_settled_cluster_has_every_shard_on_rf_running_nodes_and_nothing_moving() -> None:
    def shard(number: int, replicas: list[str], learners: tuple[str, ...] = ()) -> dict[str, object]:
        return {"shard": number, "replicas": replicas, "learners": list(learners), "leaving": []}

    def answers(*shards: dict[str, object]) -> dict[str, dict[str, object]]:
        return {"n0": {"shards": list(shards)}}

    running = {"n0", "n2", "n3"}
    full = shard(0, ["n0", "n2", "n3"])
    assert replica_shortfall(answers(full), 3, running) is None
    # One copy short, one copy on a node that died for good, one copy still being made.
    short = replica_shortfall(answers(full, shard(1, ["n0", "n2"])), 3, running)
    assert short is not None and "shard 1" in short
    dead = replica_shortfall(answers(shard(2, ["n0", "n1", "n2"]), full), 3, running)
    assert dead is not None and "shard 2" in dead
    copying = replica_shortfall(answers(shard(3, ["n0", "n2", "n3"], learners=("n3",))), 3, running)
    assert copying == "n0: shard 3 still moving"
