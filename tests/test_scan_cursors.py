"""SCAN's snapshot cursors: the guarantee under interleaved scans and writes, and what bounds them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.errors import CommandError
from aegiskv.scan_cursors import MIN_REFERENCE_BUDGET, ScanCursors
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


def step(cursors: ScanCursors, space: Keyspace, cursor: int, count: int = 10) -> tuple[int, list[bytes]]:
    next_cursor, page = cursors.page(cursor, count, space.take, space.version, len(space.keys))
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
    assert len(cursors) == 0 and cursors.references == 0


def test_scans_share_a_snapshot_while_nothing_is_written() -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in range(100):
        space.write(b"k%d" % number)
    first, _ = step(cursors, space, 0)
    second, _ = step(cursors, space, 0)
    assert space.copies == 1 and cursors.references == 100 and len(cursors) == 2
    space.write(b"new")
    third, _ = step(cursors, space, 0)
    assert space.copies == 2 and cursors.references == 201
    for cursor in (first, second, third):
        while cursor:
            cursor, _ = step(cursors, space, cursor, 1000)
    assert len(cursors) == 0 and cursors.references == 0


def test_abandoned_scans_give_way_to_the_one_still_in_use() -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in range(200_000):
        space.keys[b"k%d" % number] = None
    active, _ = step(cursors, space, 0)
    # Each abandoned scan starts after a write, so none can share; together they would hold
    # far more than the budget: max(8 x keys, MIN_REFERENCE_BUDGET) references.
    for index in range(20):
        space.write(b"w%d" % index)
        step(cursors, space, 0)
        active, _ = step(cursors, space, active)  # the active scan keeps calling
    assert cursors.references <= max(8 * len(space.keys), MIN_REFERENCE_BUDGET)
    assert len(cursors) < 20
    while active:
        active, _ = step(cursors, space, active, 50_000)


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
    assert len(cursors) == 0 and cursors.references == 0


@pytest.mark.parametrize("cursor", [1, 2**32, 2**64 - 1])
def test_a_made_up_cursor_is_refused(cursor: int) -> None:
    with pytest.raises(CommandError, match="start the SCAN again at 0"):
        step(ScanCursors(), Keyspace(), cursor)


def test_a_scan_under_way_ends_after_a_flush_and_holds_nothing() -> None:
    cursors, space = ScanCursors(), Keyspace()
    for number in range(100):
        space.write(b"k%d" % number)
    cursor, _ = step(cursors, space, 0)
    cursors.forget_keys()
    space.keys.clear()
    assert cursors.references == 0
    assert step(cursors, space, cursor) == (0, [])
