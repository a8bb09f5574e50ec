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
their turn. Without lock waiters the interpreter's forced switching bounds what a
GIL-only waiter sees to a switch interval (5 ms) -- but only while the holder
runs bytecode. Compiled with mypyc (setup.py) a batch is one C loop that never
looks at the switch request and would keep the GIL for the whole batch (0.65 s
for a 400,000-key MSET, measured). So the holder also sleeps briefly between
steps once it has run a switch interval without doing so: a real sleep, so a
thread waiting for the GIL is woken and takes it before the holder wants it
back (sleep(0) would just let the holder retake it, see above).

Two ways to be the mutex, behind one interface (:func:`new_handoff_lock` picks):

* :class:`TokenLock`: a queue holding one token; whoever took it holds the lock.
  Correct however the calling code runs.
* :class:`GilFlagLock`: a flag, for the compiled build. Compiled code never
  gives up the GIL between two statements unless it calls something that does,
  so "flag clear? then set it" is one indivisible step there, and an
  uncontended take and release cost a few instructions instead of two C calls
  through bound methods (about 450 instructions per GET or SET, a tenth of a
  pipelined GET; callgrind). A thread that finds the flag set waits on a queue,
  and release() hands the lock straight to it. Interpreted, the interpreter may
  switch threads between the test and the set, so that build keeps the token;
  so does a free-threaded interpreter, which has no GIL to rely on.
"""

from __future__ import annotations

import queue
import sys
import time
from types import TracebackType

import aegiskv

# How often a yielding holder looks whether its waiters have had their turn,
# and how long at most it lets them go first (waiters that keep arriving must
# not starve the holder).
_HANDOFF_POLL_SECONDS = 0.00005
_HANDOFF_MAX_SECONDS = 0.005
# A holder that ran this long between steps without sleeping lets GIL waiters in
# (CPython's default switch interval), for this long (about one wake-up).
_GIL_SLICE_SECONDS = 0.005
_GIL_PAUSE_SECONDS = 0.00005


class HandoffLock:
    """A non-reentrant mutex that knows whether threads are blocked on it."""

    __slots__ = ("_waiting", "_running_since", "handoff_max_seconds")

    def __init__(self) -> None:
        # One item per thread blocked in acquire(). append and pop are atomic
        # under the GIL, unlike ``count += 1`` on an attribute.
        self._waiting: list[None] = []
        # When the current holder last started running with the GIL (acquired
        # through ``with``, or came back from a pause): see let_waiters_in.
        self._running_since = 0.0
        # How long let_waiters_in waits for its waiters to take their turn. Tests that
        # check the order of turns raise it, so a slow scheduler cannot reorder them.
        self.handoff_max_seconds = _HANDOFF_MAX_SECONDS

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits (the expiry sampler skips its turn instead)."""
        raise NotImplementedError

    def acquire(self) -> None:
        """Take the lock, waiting as a counted waiter if another thread holds it."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def locked(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> HandoffLock:
        self.acquire()
        self._running_since = time.monotonic()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    @property
    def waiters(self) -> int:
        return len(self._waiting)

    def let_waiters_in(self) -> None:
        """Called by the holder between two steps of a long job: let the current waiters go first.

        Returns holding the lock again. Without lock waiters it keeps the lock,
        and keeps the GIL unless it has run a switch interval since it took the
        lock with ``with`` (or since its last pause).
        """
        if not self._waiting:
            if time.monotonic() - self._running_since >= _GIL_SLICE_SECONDS:
                time.sleep(_GIL_PAUSE_SECONDS)  # GIL waiters only: see the module docstring
                self._running_since = time.monotonic()
            return
        self.release()
        deadline = time.monotonic() + self.handoff_max_seconds
        # A waiter leaves the list once it holds the lock; a real sleep (not
        # sleep(0)) gives it the GIL it needs to get there.
        while self._waiting and time.monotonic() < deadline:
            time.sleep(_HANDOFF_POLL_SECONDS)
        self.acquire()
        self._running_since = time.monotonic()


class TokenLock(HandoffLock):
    """The mutex as a queue holding one token: correct in any build."""

    __slots__ = ("_take_free", "_take_waiting", "_put_back", "_tokens_left", "_held")

    def __init__(self) -> None:
        super().__init__()
        # Not threading.Lock: its acquire() goes through the keyword-argument
        # parser even when called without arguments. SimpleQueue's get_nowait()
        # and put_nowait() are plain C calls: a take and release cost 60 ns
        # against the lock's 146 ns (timeit, CPython 3.11).
        token: queue.SimpleQueue[None] = queue.SimpleQueue()
        token.put(None)
        self._take_free = token.get_nowait
        self._take_waiting = token.get
        self._put_back = token.put_nowait
        self._tokens_left = token.qsize  # bound: a method looked up per call is a dictionary search
        # Set by the holder only (after taking the token, before putting it back):
        # a release without a holder must not mint a second token.
        self._held = False

    def try_acquire(self) -> bool:
        try:
            self._take_free()
        except queue.Empty:
            return False
        self._held = True
        return True

    def acquire(self) -> None:
        try:
            self._take_free()
        except queue.Empty:
            self._waiting.append(None)
            try:
                self._take_waiting()
            finally:
                self._waiting.pop()
        self._held = True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of an unlocked HandoffLock")
        self._held = False
        self._put_back(None)

    def locked(self) -> bool:
        return not self._tokens_left()


class GilFlagLock(HandoffLock):
    """The mutex as a flag that the GIL makes atomic: compiled builds only (see the module docstring).

    Every step that reads and then changes the state (the flag, the waiter
    list) runs without a call that could give up the GIL in between.
    """

    __slots__ = ("_held", "_wait_for_handoff", "_hand_over")

    def __init__(self) -> None:
        super().__init__()
        self._held = False
        # Empty but for a moment: release() with waiters puts one item, and the
        # waiter that takes it holds the lock (the flag stays set throughout).
        handoffs: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._wait_for_handoff = handoffs.get
        self._hand_over = handoffs.put_nowait

    def try_acquire(self) -> bool:
        if self._held:
            return False
        self._held = True
        return True

    def acquire(self) -> None:
        if not self._held:
            self._held = True
            return
        self._waiting.append(None)  # counted before the holder can look: the GIL is still ours
        try:
            self._wait_for_handoff()
        finally:
            self._waiting.pop()

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of an unlocked HandoffLock")
        # A waiter that was handed the lock leaves the list only when it runs, so
        # more entries than handoffs made can be listed; each release hands over
        # once, and only a holder releases: a waiter woken by a handoff holds it.
        if self._waiting:
            self._hand_over(None)
        else:
            self._held = False

    def locked(self) -> bool:
        return self._held


def new_handoff_lock() -> HandoffLock:
    """The flag lock where the GIL makes it correct (compiled, GIL enabled), else the token lock."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return GilFlagLock() if aegiskv.compiled() and gil_enabled else TokenLock()
