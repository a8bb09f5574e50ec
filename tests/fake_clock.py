"""A hand-driven wall clock for backends (they take ``clock`` returning wall-clock ms)."""

from __future__ import annotations

# A realistic wall-clock reading: deadlines then have the magnitude they have in
# production, which matters where their size is charged to the memory budget.
START_MS = 1_700_000_000_000


class FakeClock:
    """Callable returning ``now_ms``; time moves only when a test says so."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms
