"""The shard copies' queue and bandwidth (aegiskv.cluster.copy_queue) and key scan (key_scan), with a fake clock."""

from __future__ import annotations

import pytest

from aegiskv.cluster.copy_queue import BURST_SECONDS, MIN_BURST, UNLIMITED, CopyQueue
from aegiskv.cluster.key_scan import CHECK_EVERY, ShardKeyScan
from aegiskv.cluster.slots import ShardMapper


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_copies_beyond_the_slots_wait_and_get_them_first_come_first_served() -> None:
    queue = CopyQueue(0, 2, Clock())
    assert [queue.request(key) for key in ("a", "b", "c", "d", "e")] == [True, True, False, False, False]
    assert queue.request("a") is True  # asking again while holding a slot keeps it
    assert queue.request("d") is False and queue.queued == 3  # asking again while waiting keeps the place
    assert queue.admit() == []
    queue.finished("b", 1000, 0.5)
    queue.release("d")  # given up while waiting: its place goes
    assert queue.admit() == ["c"]
    queue.abandoned("a")
    assert queue.admit() == ["e"]
    assert queue.pending() == ["c", "e"] and queue.queued == 0
    assert (queue.totals.completed, queue.totals.abandoned, queue.totals.last_rate) == (1, 1, 2000.0)


def test_a_new_copy_does_not_jump_the_line_when_a_slot_frees() -> None:
    queue = CopyQueue(0, 1, Clock())
    assert queue.request("a") and not queue.request("b")
    queue.release("a")
    assert queue.request("c") is False  # "b" waited longer
    assert queue.admit() == ["b"]


def test_turn_order_rotates_so_each_copy_goes_first_in_turn() -> None:
    queue = CopyQueue(0, 3, Clock())
    for key in ("a", "b", "c"):
        queue.request(key)
    assert [queue.turn_order()[0] for _ in range(4)] == ["a", "b", "c", "a"]


def test_the_bandwidth_is_a_token_bucket_that_a_chunk_may_overdraw() -> None:
    clock = Clock()
    rate = 10 * MIN_BURST * 10  # a burst of a tenth of a second: 10 * MIN_BURST
    queue = CopyQueue(rate, 2, clock)
    assert queue.allowance() == rate // 10  # starts full
    queue.spend(rate // 10 + 5000, 10)  # one chunk past what was left: in debt
    assert queue.allowance() == 0
    clock.now += 5000 / rate
    assert queue.allowance() == 0  # the debt paid, nothing more yet
    clock.now += 0.05
    assert queue.allowance() == pytest.approx(rate * 0.05, abs=1)
    clock.now += 60  # idle for long: the bucket holds a tenth of a second, no more
    assert queue.allowance() == rate // 10
    assert (queue.totals.bytes, queue.totals.keys) == (rate // 10 + 5000, 10)


def test_over_a_long_run_the_bytes_sent_follow_the_rate() -> None:
    clock = Clock()
    queue = CopyQueue(1_000_000, 2, clock)
    sent = 0
    for _ in range(10_000):  # 10 s of 1 ms turns, each sending 4 KiB chunks while allowed
        while queue.allowance() > 0:
            queue.spend(4096, 1)
            sent += 4096
        clock.now += 0.001
    # Ten seconds of the rate, plus the bucket it started with, plus one chunk's overshoot at most.
    assert 1_000_000 * 10 <= sent <= 1_000_000 * (10 + BURST_SECONDS) + 4096


def test_no_rate_means_no_limit_and_bad_settings_are_refused() -> None:
    queue = CopyQueue(0, 1, Clock())
    queue.spend(10**12, 1)
    assert queue.allowance() == UNLIMITED
    with pytest.raises(ValueError, match="slots"):
        CopyQueue(0, 0, Clock())
    with pytest.raises(ValueError, match="rate"):
        CopyQueue(-1, 1, Clock())


def test_the_key_scan_sorts_one_snapshot_into_the_wanted_shards_a_slice_at_a_time() -> None:
    mapper = ShardMapper(16)
    keys = [b"key:%d" % index for index in range(5 * CHECK_EVERY + 7)]
    scan = ShardKeyScan(keys, {3, 9}, mapper.shard_of_key)
    clock = Clock()

    def slow_clock() -> float:
        clock.now += 1.0  # every look at the clock finds the slice's time gone
        return clock.now

    steps = 0
    while not scan.step(0.5, slow_clock):
        steps += 1
    assert steps == 5  # one slice of CHECK_EVERY keys per call, the last one ends it
    assert scan.done and scan.remaining == 0
    for shard in (3, 9):
        assert scan.buckets[shard] == [key for key in keys if mapper.shard_of_key(key) == shard]
    assert set(scan.buckets) == {3, 9}
