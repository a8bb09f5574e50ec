"""A hand-driven wall clock for backends (they take ``clock`` returning wall-clock ms).

The clock is the one plugin authors get with the backend suite
(aegiskv.testing.backend_contract.ManualClock); the tests use it under their old name.
"""

from __future__ import annotations

from aegiskv.testing.backend_contract import START_MS, ManualClock

FakeClock = ManualClock

__all__ = ["START_MS", "FakeClock"]
