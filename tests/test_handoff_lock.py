"""The node lock's handoff: a long holder lets blocked threads in between its steps."""

from __future__ import annotations

import threading

import pytest

from aegiskv.handoff_lock import HandoffLock
from tests.wire import wait_until


def _blocked_thread(lock: HandoffLock, order: list[str], name: str) -> threading.Thread:
    def take_turn() -> None:
        with lock:
            order.append(name)

    thread = threading.Thread(target=take_turn)
    thread.start()
    return thread


def test_waiters_go_first_when_the_holder_yields() -> None:
    lock = HandoffLock()
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


def test_without_waiters_the_holder_keeps_the_lock() -> None:
    lock = HandoffLock()
    lock.acquire()
    lock.let_waiters_in()
    assert lock.locked()
    # Still held by us: a non-blocking attempt fails.
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()


def test_a_free_lock_counts_no_waiter() -> None:
    lock = HandoffLock()
    with lock:
        assert lock.waiters == 0
    lock.acquire()
    assert lock.waiters == 0
    lock.release()


def test_acquire_counts_a_blocked_thread_as_a_waiter_and_the_holder_hands_over() -> None:
    # acquire() is the hot paths' call (Node.get/put): a thread blocked in it
    # must be seen by a long holder, or a large batch would keep the reactor waiting.
    lock = HandoffLock()
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


def test_releasing_a_free_lock_is_an_error() -> None:
    # The lock is a one-token queue: a second release must not mint a second token.
    lock = HandoffLock()
    with pytest.raises(RuntimeError, match="unlocked"):
        lock.release()
    assert lock.try_acquire()
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()
