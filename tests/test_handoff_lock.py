"""The node lock's handoff: a long holder lets blocked threads in between its steps."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import aegiskv
from aegiskv.node.handoff_lock import GilFlagLock, HandoffLock, TokenLock, new_handoff_lock
from tests.wire import wait_until

# The flag lock is only correct compiled (its test-and-set must not be split by a
# thread switch); interpreted, its threaded tests would race, so they skip there.
FLAG_LOCK = pytest.param(
    GilFlagLock, marks=pytest.mark.skipif(not aegiskv.compiled(), reason="the flag lock needs the compiled build")
)


@pytest.fixture(params=[TokenLock, FLAG_LOCK])
def new_lock(request: pytest.FixtureRequest) -> type[HandoffLock]:
    lock_class: type[HandoffLock] = request.param
    return lock_class


def patient(lock: HandoffLock) -> HandoffLock:
    """The lock with a holder that waits as long as it takes for its waiters' turn.

    In the node a holder waits at most 5 ms (a waiter that is slow to wake must not
    stall a batch); on a loaded test machine a woken thread can take longer than that
    to run, and the order these tests check would then be the scheduler's.
    """
    lock.handoff_max_seconds = 30.0
    return lock


def _blocked_thread(lock: HandoffLock, order: list[str], name: str) -> threading.Thread:
    def take_turn() -> None:
        with lock:
            order.append(name)

    thread = threading.Thread(target=take_turn)
    thread.start()
    return thread


def test_waiters_go_first_when_the_holder_yields(new_lock: type[HandoffLock]) -> None:
    lock = patient(new_lock())
    order: list[str] = []
    with lock:
        waiters = [_blocked_thread(lock, order, f"waiter-{index}") for index in range(2)]
        wait_until(lambda: lock.waiters == 2, what="both threads to block on the lock")
        lock.let_waiters_in()
        # The holder is back in charge, and every thread that was waiting had its turn first.
        assert lock.locked()
        order.append("holder")
    for thread in waiters:
        thread.join(timeout=5)
    assert sorted(order[:2]) == ["waiter-0", "waiter-1"]
    assert order[2] == "holder"
    assert lock.waiters == 0


def test_without_waiters_the_holder_keeps_the_lock(new_lock: type[HandoffLock]) -> None:
    lock = new_lock()
    lock.acquire()
    lock.let_waiters_in()
    assert lock.locked()
    # Still held by us: a non-blocking attempt fails.
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()


def test_a_free_lock_counts_no_waiter(new_lock: type[HandoffLock]) -> None:
    lock = new_lock()
    with lock:
        assert lock.waiters == 0
    lock.acquire()
    assert lock.waiters == 0
    lock.release()


def test_acquire_counts_a_blocked_thread_as_a_waiter_and_the_holder_hands_over(new_lock: type[HandoffLock]) -> None:
    # acquire() is the hot paths' call (Node.get/put): a thread blocked in it
    # must be seen by a long holder, or a large batch would keep the reactor waiting.
    lock = patient(new_lock())
    order: list[str] = []

    def take_turn() -> None:
        lock.acquire()
        order.append("taker")
        lock.release()

    with lock:
        taker = threading.Thread(target=take_turn)
        taker.start()
        wait_until(lambda: lock.waiters == 1, what="the thread to block in acquire()")
        lock.let_waiters_in()
        order.append("holder")
    taker.join(timeout=5)
    assert order == ["taker", "holder"]
    assert lock.waiters == 0


def test_releasing_a_free_lock_is_an_error(new_lock: type[HandoffLock]) -> None:
    # A stray release must not free a lock someone else holds (or mint a second token).
    lock = new_lock()
    with pytest.raises(RuntimeError, match="unlocked"):
        lock.release()
    assert lock.try_acquire()
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()


def test_threads_taking_turns_never_hold_it_together(new_lock: type[HandoffLock]) -> None:
    # A read-modify-write split by a thread switch inside the lock: any two
    # holders at once lose an increment, and the holder count catches it at once.
    lock = new_lock()
    counter = [0]
    inside = [0]
    overlaps: list[int] = []
    rounds = 2_000
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for step in range(rounds):
            if step % 3 == 0:
                with lock:
                    if step % 2:
                        lock.let_waiters_in()  # hands over to waiters, if any, and takes it back
                    inside[0] += 1
                    if inside[0] != 1:
                        overlaps.append(inside[0])
                    value = counter[0]
                    counter[0] = value + 1
                    inside[0] -= 1
            else:
                lock.acquire()
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                value = counter[0]
                time.sleep(0)  # gives up the GIL inside the lock: the others contend for it
                counter[0] = value + 1
                inside[0] -= 1
                lock.release()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter will
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(previous)
    assert overlaps == []
    assert counter[0] == 4 * rounds
    assert not lock.locked() and lock.waiters == 0


def test_the_flag_lock_is_chosen_exactly_when_compiled() -> None:
    expected = GilFlagLock if aegiskv.compiled() and getattr(sys, "_is_gil_enabled", lambda: True)() else TokenLock
    assert type(new_handoff_lock()) is expected
