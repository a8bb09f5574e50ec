"""Per-thread request counters: requests counted one by one, or a loop turn's counted at its end."""

from __future__ import annotations

import time

from aegiskv.errors import ErrorKind
from aegiskv.net.reactor import Reactor
from aegiskv.node.commands import COMMANDS
from aegiskv.server.stats import ERROR_KINDS, LATENCY_BUCKETS, RequestStats, StatsRegistry

GET = COMMANDS["get"].index
SET = COMMANDS["set"].index


def test_a_turn_is_counted_only_when_it_ends_each_request_with_the_turn_time() -> None:
    stats = RequestStats()
    for index in (GET, SET, GET, GET):
        stats.ran(index)
    assert stats.by_command[GET].calls == 0  # not yet: the turn is still running

    stats.finish_turn(5_000)  # 5 us: bucket 3 holds [4 us, 8 us)
    get, set_ = stats.by_command[GET], stats.by_command[SET]
    assert (get.calls, set_.calls) == (3, 1)
    assert (get.latency_sum_ns, set_.latency_sum_ns) == (15_000, 5_000)
    assert get.latency[3] == 3 and sum(get.latency) == 3
    assert set_.latency[3] == 1 and sum(set_.latency) == 1

    stats.finish_turn(1_000)  # nothing ran since: nothing counted
    assert (get.calls, set_.calls) == (3, 1)

    stats.ran(GET)
    stats.finish_turn(10**12)  # longer than the last bucket's bound: counted in the last one
    assert get.calls == 4 and get.latency[LATENCY_BUCKETS - 1] == 1


def test_turns_and_single_requests_add_up_in_the_totals() -> None:
    registry = StatsRegistry()
    stats = registry.for_this_thread()
    stats.ran(SET)
    stats.ran(SET)
    stats.finish_turn(1_500)
    stats.record(SET, 700)
    stats.count_error(SET, ErrorKind.WRONG_TYPE)
    totals = registry.totals()
    assert totals.calls[SET] == 3
    assert totals.errors[SET] == 1
    assert totals.error_kinds[ERROR_KINDS.index(ErrorKind.WRONG_TYPE)] == 1
    assert totals.latency_sum_ns[SET] == 3_700
    assert totals.latency[SET][0] == 1 and totals.latency[SET][1] == 2


def test_reset_zeroes_what_info_shows_and_keeps_the_metrics_counters() -> None:
    registry = StatsRegistry()
    stats = registry.for_this_thread()
    stats.record(SET, 700)
    stats.count_rejected(SET, ErrorKind.NOAUTH)
    registry.reset()
    stats.record(SET, 300)
    since = registry.totals_since_reset()
    assert since.calls[SET] == 1 and since.latency_sum_ns[SET] == 300
    assert since.rejected[SET] == 0 and sum(since.error_kinds) == 0
    assert sum(since.latency[SET]) == 1
    assert registry.totals().calls[SET] == 2  # Prometheus counters never go down


def test_the_reactor_tells_its_turn_observers_how_long_each_turn_took() -> None:
    """What finish_turn is fed: the whole turn, including the work of its handlers."""
    reactor = Reactor(worker_threads=1)
    lengths: list[int] = []
    reactor.turn_observers.append(lengths.append)
    work_seconds = 0.05
    reactor.call_later(0.0, lambda: time.sleep(work_seconds))  # a turn that works this long
    give_up = time.monotonic() + 10
    try:
        reactor.run(until=lambda: any(length >= work_seconds * 1e9 for length in lengths) or time.monotonic() > give_up)
    finally:
        reactor.close()
    assert lengths, "no turn was reported"
    assert max(lengths) >= work_seconds * 1e9
    assert max(lengths) < 5e9  # nanoseconds, not a clock reading


def test_the_longest_turn_counts_the_end_of_turn_hooks() -> None:
    """INFO's aegis_longest_turn_usec: the log written out at the end of a turn (an end-of-turn
    hook) keeps every client waiting as much as a command does, so it is part of the turn."""
    reactor = Reactor(worker_threads=1)
    work_seconds = 0.05
    hooks_run = 0

    def slow_hook() -> None:  # the write-ahead log handing a large record to the OS
        nonlocal hooks_run
        hooks_run += 1
        if hooks_run == 2:
            time.sleep(work_seconds)

    reactor.end_of_turn.append(slow_hook)
    reactor.call_later(0.0, lambda: None)  # a turn, however idle
    give_up = time.monotonic() + 10
    try:
        reactor.run(until=lambda: hooks_run >= 3 or time.monotonic() > give_up)
    finally:
        reactor.close()
    assert hooks_run >= 3
    assert reactor.longest_turn_ns >= work_seconds * 1e9
