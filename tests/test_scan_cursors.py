"""SCAN's snapshot cursors: the guarantee under interleaved scans and writes, and what bounds them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.errors import CommandError
from aegiskv.node.scan_cursors import MAX_SNAPSHOTS, MIN_LISTS, ScanCursors, snapshot_budget, snapshot_cost
from tests.effort import examples
from tests.fake_clock import FakeClock


class Keyspace:
    """Stands in for a backend: a key set and the last version handed out (bumped by every write)."""

    def __init__(self) -> None:
        self.keys: dict[bytes, None] = {}
        self.version = 0
        self.copies = 0

    def write(self, key: bytes) -> None:
        self.keys[key] = None
        self.version += 1

    def take(self) -> list[bytes]:
        self.copies += 1
        return list(self.keys)


UNLIMITED = 1 << 62


def step(
    cursors: ScanCursors, space: Keyspace, cursor: int, count: int = 10, budget: int = UNLIMITED
) -> tuple[int, list[bytes]]:
    next_cursor, page = cursors.page(cursor, count, space.take, space.version, len(space.keys), lambda: budget)
    return next_cursor, [key for key in page if key in space.keys]  # as the node filters deleted keys


actions = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 60)),
        st.tuples(st.just("delete"), st.integers(0, 60)),
        st.tuples(st.just("step"), st.integers(0, 3)),  # which of four scans takes its next step
        st.tuples(st.just("flush"), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=examples(300), deadline=None)
@given(initial=st.sets(st.integers(0, 60), max_size=40), plan=actions, count=st.integers(1, 7))
def test_a_key_present_for_the_whole_scan_is_returned(initial: set[int], plan: list, count: int) -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in initial:
        space.write(b"k%d" % number)
    # Per scan: its cursor (None: not started), what it saw, the keys present throughout so far.
    scans: list[dict] = [{"cursor": None, "seen": set(), "stable": set()} for _ in range(4)]
    for action, argument in plan:
        if action == "write":
            space.write(b"k%d" % argument)
        elif action == "delete":
            space.keys.pop(b"k%d" % argument, None)
            for scan in scans:
                scan["stable"].discard(b"k%d" % argument)
        elif action == "flush":
            cursors.forget_keys()
            space.keys.clear()
            for scan in scans:
                scan["stable"].clear()
        else:
            scan = scans[argument]
            if scan["cursor"] is None:
                scan.update(cursor=0, seen=set(), stable=set(space.keys))
            next_cursor, page = step(cursors, space, scan["cursor"], count)
            scan["seen"].update(page)
            assert set(page) <= set(space.keys)
            if next_cursor == 0:
                assert scan["stable"] <= scan["seen"]
                scan["cursor"] = None
            else:
                scan["cursor"] = next_cursor
    for scan in scans:  # finish the scans under way
        if scan["cursor"] is not None:
            cursor = scan["cursor"]
            while True:
                cursor, page = step(cursors, space, cursor, count)
                scan["seen"].update(page)
                if cursor == 0:
                    break
            assert scan["stable"] <= scan["seen"]
    assert len(cursors) == 0 and cursors.held_bytes == 0


def test_scans_share_a_snapshot_while_nothing_is_written() -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in range(100):
        space.write(b"k%d" % number)
    first, _ = step(cursors, space, 0)
    second, _ = step(cursors, space, 0)
    one_copy = snapshot_cost(list(space.keys))
    assert space.copies == 1 and cursors.held_bytes == one_copy and len(cursors) == 2
    first, _ = step(cursors, space, first)  # paging an older scan does not stop the next one sharing
    space.write(b"new")
    third, _ = step(cursors, space, 0)
    fourth, _ = step(cursors, space, 0)
    assert space.copies == 2 and cursors.held_bytes == one_copy + snapshot_cost(list(space.keys))
    for cursor in (first, second, third, fourth):
        while cursor:
            cursor, _ = step(cursors, space, cursor, 1000)
    assert len(cursors) == 0 and cursors.held_bytes == 0


def test_the_cost_counts_every_key_a_snapshot_could_keep_alive() -> None:
    keys = [b"a" * 10, b"b" * 1000]
    assert snapshot_cost(keys) == 2 * (8 + 33) + 1010
    # Past COST_SAMPLE keys the key bytes are estimated from a sample, close to the sum.
    many = [b"k%d" % number + b"x" * (number % 97) for number in range(100_003)]
    exact = len(many) * (8 + 33) + sum(map(len, many))
    assert abs(snapshot_cost(many, random.Random(7)) - exact) <= exact // 20
    assert snapshot_budget(limit_bytes=1 << 30, used_bytes=5) == 1 << 28
    assert snapshot_budget(limit_bytes=0, used_bytes=5) == 64 << 20
    assert snapshot_budget(limit_bytes=0, used_bytes=1 << 30) == 1 << 30


def big_keyspace(keys: int = 20_000) -> Keyspace:
    space = Keyspace()
    for number in range(keys):
        space.keys[b"key:%d" % number] = None
    return space


def finish(cursors: ScanCursors, space: Keyspace, cursor: int, stable: set[bytes], seen: set[bytes]) -> None:
    while cursor:
        cursor, page = step(cursors, space, cursor, 5_000)
        seen.update(page)
    assert stable <= seen


def timed_cursors() -> tuple[ScanCursors, FakeClock]:
    clock = FakeClock()
    return ScanCursors(clock=lambda: clock.now_ms / 1000, grace_seconds=30, first_page_grace_seconds=1), clock


def start_scans(
    cursors: ScanCursors, space: Keyspace, scans: int, pages: int, budget: int = 1
) -> list[tuple[int, set[bytes], set[bytes]]]:
    """``scans`` scans, each after a write (so none shares a copy), each ``pages`` pages in."""
    started = []
    for _ in range(scans):
        space.write(b"w%d" % space.version)
        stable: set[bytes] = set(space.keys)
        seen: set[bytes] = set()
        cursor = 0
        for _ in range(pages):
            cursor, page = step(cursors, space, cursor, budget=budget)
            seen.update(page)
        started.append((cursor, stable, seen))
    return started


def test_over_budget_a_new_scan_is_refused_and_the_ones_under_way_go_on() -> None:
    cursors, clock = timed_cursors()
    space = big_keyspace()
    # A budget of 1 byte: only the MIN_LISTS copies always allowed fit.
    under_way = start_scans(cursors, space, MIN_LISTS, pages=2)
    clock.advance(29_000)  # used 29 s ago: within the grace period of a scan past its first page
    copies = space.copies
    space.write(b"one more")
    with pytest.raises(CommandError, match=rf"too many SCANs under way \({MIN_LISTS} key lists holding \d+ bytes"):
        step(cursors, space, 0, budget=1)
    assert space.copies == copies  # refused before copying the key list
    assert len(cursors) == MIN_LISTS
    for cursor, stable, seen in under_way:
        finish(cursors, space, cursor, stable, seen)
    assert len(cursors) == 0 and cursors.held_bytes == 0


def test_probes_that_never_continued_give_way_after_a_second() -> None:
    cursors, clock = timed_cursors()
    space = big_keyspace()
    start_scans(cursors, space, MIN_LISTS, pages=1)  # scan_iter then break: a first page only
    clock.advance(1_500)
    space.write(b"one more")
    step(cursors, space, 0, budget=1)  # one probe gives way
    assert len(cursors) == MIN_LISTS


def test_scans_gone_quiet_past_the_grace_period_give_way_to_one_in_use() -> None:
    cursors, clock = timed_cursors()
    space = big_keyspace()
    stable = set(space.keys)
    active, page = step(cursors, space, 0, budget=1)
    active, more = step(cursors, space, active, budget=1)
    seen = set(page) | set(more)
    for _ in range(20):  # scans that went two pages in, then stopped
        start_scans(cursors, space, 1, pages=2)
        clock.advance(31_000)
        active, page = step(cursors, space, active, budget=1)  # the active scan keeps calling
        seen.update(page)
        assert len(cursors) <= MIN_LISTS
    finish(cursors, space, active, stable, seen)


def test_no_scan_is_ended_when_that_would_not_make_room() -> None:
    cursors, clock = timed_cursors()
    space = big_keyspace()
    quiet, _ = step(cursors, space, 0, budget=1)
    quiet, _ = step(cursors, space, quiet, budget=1)  # past its first page
    clock.advance(31_000)  # past the grace period, but its copy is shared with a scan in use:
    sharing, _ = step(cursors, space, 0, budget=1)  # dropping it would free nothing
    start_scans(cursors, space, MIN_LISTS - 1, pages=2)
    space.write(b"one more")
    with pytest.raises(CommandError, match="too many SCANs under way"):
        step(cursors, space, 0, budget=1)
    step(cursors, space, quiet)  # still there
    step(cursors, space, sharing)


def test_after_a_flush_the_emptied_scans_leave_room() -> None:
    cursors, _clock = timed_cursors()
    space = big_keyspace()
    start_scans(cursors, space, MIN_LISTS, pages=2)
    cursors.forget_keys()
    space.keys.clear()
    space.write(b"after the flush")
    assert step(cursors, space, 0, budget=1) == (0, [b"after the flush"])


def test_one_scan_at_a_time_always_works_whatever_the_budget() -> None:
    cursors, space = ScanCursors(), big_keyspace(1_000)
    stable = set(space.keys)
    cursor, page = step(cursors, space, 0, budget=1)
    finish(cursors, space, cursor, stable, set(page))


def test_the_number_of_snapshots_is_bounded_even_when_they_share() -> None:
    cursors, _clock = timed_cursors()  # the clock stands still: none passes its grace period
    space = big_keyspace(100)
    for _ in range(MAX_SNAPSHOTS):
        step(cursors, space, 0)
    assert space.copies == 1 and len(cursors) == MAX_SNAPSHOTS
    with pytest.raises(CommandError, match=f"{MAX_SNAPSHOTS} snapshots, the most this node keeps"):
        step(cursors, space, 0)


def test_idle_snapshots_go_on_the_housekeeping_tick_without_a_scan() -> None:
    clock = FakeClock()
    cursors, space = ScanCursors(idle_seconds=60, clock=lambda: clock.now_ms / 1000), big_keyspace(100)
    step(cursors, space, 0)
    assert cursors.drop_idle() == 0
    clock.advance(60_000)
    assert cursors.drop_idle() == 1
    assert len(cursors) == 0 and cursors.held_bytes == 0


def test_an_idle_snapshot_expires_and_its_cursor_is_refused() -> None:
    clock = FakeClock()
    cursors, space = ScanCursors(idle_seconds=60, clock=lambda: clock.now_ms / 1000), Keyspace()
    for number in range(100):
        space.write(b"k%d" % number)
    cursor, _ = step(cursors, space, 0)
    clock.advance(59_000)
    cursor, _ = step(cursors, space, cursor)  # a use restarts the idle clock
    clock.advance(59_000)
    cursor, _ = step(cursors, space, cursor)
    clock.advance(61_000)
    with pytest.raises(CommandError, match="expired or was not handed out"):
        step(cursors, space, cursor)
    assert len(cursors) == 0 and cursors.held_bytes == 0


@pytest.mark.parametrize("cursor", [1, 2**32, 2**33 + 1, 2**64 - 1])
def test_a_made_up_cursor_is_refused(cursor: int) -> None:
    cursors, space = ScanCursors(), big_keyspace(100)
    step(cursors, space, 0)  # snapshot 1 exists, but no cursor at its offset 0 was handed out
    with pytest.raises(CommandError, match="start the SCAN again at 0"):
        step(cursors, space, cursor)


def test_a_scan_under_way_ends_after_a_flush_and_holds_nothing() -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in range(100):
        space.write(b"k%d" % number)
    cursor, _ = step(cursors, space, 0)
    cursors.forget_keys()
    space.keys.clear()
    assert cursors.held_bytes == 0
    assert step(cursors, space, cursor) == (0, [])
    space.write(b"after")
    cursor, page = step(cursors, space, 0, count=1)  # a new scan takes a new copy, not the emptied one
    assert page == [b"after"] and cursor == 0
