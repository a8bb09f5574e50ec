"""A mutex that a long holder can hand to the threads waiting for it.

The node's lock is held briefly by the reactor (one GET) and for long stretches
by a worker running a large batch, which releases it between chunks. CPython
gives a plain lock no fairness: a worker that releases and retakes it while
holding the GIL wins it back before the woken waiter has even run, so the
reactor could wait for the whole batch. Handing the GIL over with
``time.sleep(0)`` between chunks was tried and is worse on CPython 3.10: each
voluntary release counts as a GIL switch, so a thread that only wants the GIL
(a reactor answering PING) never asks for a forced switch and starves.

So the lock counts the threads blocked on it, and the holder yields
(:meth:`HandoffLock.let_waiters_in`) only when someone waits: it releases the
lock and sleeps — giving away both lock and GIL — until the waiters have taken
their turn. Without waiters a batch never releases the GIL voluntarily, and
CPython's forced switching bounds what a GIL-only waiter sees to a switch
interval (5 ms) per acquisition.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

# How often a yielding holder looks whether its waiters have had their turn,
# and how long at most it lets them go first (waiters that keep arriving must
# not starve the holder).
_HANDOFF_POLL_SECONDS = 0.00005
_HANDOFF_MAX_SECONDS = 0.005


class HandoffLock:
    """A non-reentrant mutex that knows whether threads are blocked on it."""

    __slots__ = ("_lock", "_waiting", "try_acquire", "release")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # One item per thread blocked in acquire(). list.append and list.pop are
        # atomic under the GIL, unlike ``count += 1`` on an attribute.
        self._waiting: list[None] = []
        # ``try_acquire()`` is the raw non-blocking acquire: the hot paths call
        # ``try_acquire(False) or acquire_blocking()`` and pay nothing extra
        # when the lock is free.
        self.try_acquire = self._lock.acquire
        self.release = self._lock.release

    def acquire_blocking(self) -> bool:
        """Wait for the lock, counted as a waiter while blocked. Returns True (for ``or`` chains)."""
        self._waiting.append(None)
        try:
            self._lock.acquire()
        finally:
            self._waiting.pop()
        return True

    def acquire(self) -> None:
        if not self._lock.acquire(False):
            self.acquire_blocking()

    def __enter__(self) -> HandoffLock:
        if not self._lock.acquire(False):
            self.acquire_blocking()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._lock.release()

    @property
    def waiters(self) -> int:
        return len(self._waiting)

    def locked(self) -> bool:
        return self._lock.locked()

    def let_waiters_in(self) -> None:
        """Called by the holder between two steps of a long job: let the current waiters go first.

        Returns holding the lock again. Does nothing (and keeps the GIL) when no
        thread waits.
        """
        if not self._waiting:
            return
        self._lock.release()
        deadline = time.monotonic() + _HANDOFF_MAX_SECONDS
        # A waiter leaves the list once it holds the lock; a real sleep (not
        # sleep(0)) gives it the GIL it needs to get there.
        while self._waiting and time.monotonic() < deadline:
            time.sleep(_HANDOFF_POLL_SECONDS)
        self.acquire()
