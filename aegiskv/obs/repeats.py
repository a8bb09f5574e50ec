"""One log line per repeating error, with a count, instead of one per occurrence.

A seed that is down, a peer that refuses its link, a client that keeps sending
garbage: each fails the same way again and again, and a line per failure buries
everything else. :class:`RepeatLimiter` lets the first occurrence of a key (say
a message template and a peer) through at once, then at most one line per
``interval`` for that key, saying how many occurrences it stands for::

    cannot join through 10.0.0.7:7701: [Errno 111] Connection refused (repeated 12 times in the last 60s)

:meth:`RepeatLimiter.admit` is the decision alone (no logging, no clock of its
own: the clock is injected), so it is tested without sleeping;
:meth:`RepeatLimiter.log` is the decision plus a loguru call. Occurrences
suppressed after a key's last line are reported by its next line; when the
error stops, they are not reported at all (nothing runs on a timer here).
Thread-safe: the reactor and the worker threads share limiters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from loguru import logger


@dataclass
class _Seen:
    last_line: float  # when this key last produced a line
    suppressed: int  # occurrences since then that produced none


class RepeatLimiter:
    """Per key: the first occurrence logged at once, then at most one line per ``interval``."""

    def __init__(
        self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 1024
    ) -> None:
        if interval <= 0 or max_keys < 1:
            raise ValueError("interval must be positive and max_keys at least 1")
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: dict[Hashable, _Seen] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> str | None:
        """One occurrence of ``key``: None to stay silent, else the suffix its line ends with
        ("" for a first occurrence, " (repeated N times in the last Xs)" after suppressed ones;
        N counts this occurrence too)."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.last_line < self.interval:
                seen.suppressed += 1
                return None
            if seen is None:
                self._make_room(now)
                self._seen[key] = _Seen(now, 0)
                return ""
            repeated, elapsed = seen.suppressed, now - seen.last_line
            seen.last_line, seen.suppressed = now, 0
        if not repeated:
            return ""
        return f" (repeated {repeated + 1} times in the last {elapsed:.0f}s)"

    def _make_room(self, now: float) -> None:
        if len(self._seen) < self.max_keys:
            return
        # Keys quiet for a whole interval carry nothing worth keeping but a suppressed
        # count; drop those first, then the oldest (dicts keep insertion order).
        for key in [key for key, seen in self._seen.items() if now - seen.last_line >= self.interval]:
            del self._seen[key]
        while len(self._seen) >= self.max_keys:
            del self._seen[next(iter(self._seen))]

    def log(self, level: str, key: Hashable, message: str, *args: object, exception: bool = False) -> bool:
        """Log ``message`` (a loguru template) at ``level`` if ``key`` is admitted; True if it was.

        ``exception=True`` adds the traceback of the exception being handled (for bugs only:
        an expected error is one line)."""
        suffix = self.admit(key)
        if suffix is None:
            return False
        logger.opt(depth=1, exception=exception).log(level, message + "{}", *args, suffix)
        return True
