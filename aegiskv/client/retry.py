"""When the client tries a request again: which failures, how often, for how long.

Sans-IO: :class:`RetryBudget` decides and says how long to wait; the client
sleeps and sends. The clock and the random source are parameters, so tests
step through a budget without waiting.

A failure is retried when repeating the request cannot change its outcome:

* The server did not apply it: the connection could not be made (refused,
  timed out, TLS failed), or the server answered that the key's shard has no
  primary yet (an election is under way), or no node serves it, or it redirected
  it more than ``max_redirects`` times in a row (redirects up to that are
  followed at once, without using the budget). Every request is retried then.
* The outcome is unknown: the connection broke or timed out after the request
  was sent, or the server answered TRYAGAIN saying the write "may or may not
  have been applied" (its quorum or its primary's lease failed). Only idempotent
  requests are retried then: see ``aegiskv.client.client`` for the list.

Retries stop at ``max_retries`` or once ``budget`` seconds have passed since the
first attempt, whichever comes first; no attempt starts after the budget. The
wait before retry *n* (from 0) is ``min(backoff_max, backoff * 2**n)``, scaled
by a random factor in [0.5, 1) so clients that failed together do not retry in
step, and cut to what is left of the budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import NamedTuple

from aegiskv.client.errors import AegisError, RetriesExhaustedError


class Failure(NamedTuple):
    """One attempt that failed: the error, and whether the server may have applied the request."""

    error: AegisError
    maybe_applied: bool


class RetryBudget:
    """The retries one operation has left. Not thread-safe: one per call.

    ``clock`` is in seconds (monotonic); ``rng`` gives the jitter.
    """

    __slots__ = ("max_retries", "_backoff", "_backoff_max", "_clock", "_rng", "started", "deadline", "retries")

    def __init__(
        self,
        max_retries: int,
        budget: float,
        backoff: float,
        backoff_max: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.max_retries = max_retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._clock = clock
        self._rng = rng or random.Random()
        self.started = clock()
        self.deadline = self.started + budget
        self.retries = 0  # retries granted so far

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None when none is left (count or time)."""
        if self.retries >= self.max_retries:
            return None
        left = self.deadline - self._clock()
        if left <= 0:
            return None
        wait = min(self._backoff_max, self._backoff * 2.0**self.retries) * self._rng.uniform(0.5, 1.0)
        self.retries += 1
        return min(wait, left)

    def exhausted(self, last: AegisError) -> AegisError:
        """What to raise when no retry is left: the failure itself if none was made, else RetriesExhaustedError."""
        if self.retries == 0:
            return last
        elapsed = self._clock() - self.started
        error = RetriesExhaustedError(f"gave up after {self.retries + 1} attempts in {elapsed:.2f}s: {last}")
        error.__cause__ = last
        return error
