"""RepeatLimiter: the first occurrence at once, then one line per interval with a count."""

from __future__ import annotations

import io

import pytest
from loguru import logger

from aegiskv.obs.repeats import RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_occurrence_passes_and_repeats_are_counted_into_the_next_line() -> None:
    clock = Clock()
    limiter = RepeatLimiter(interval=60, clock=clock)
    assert limiter.admit("seed down") == ""
    for _ in range(9):
        clock.now += 1
        assert limiter.admit("seed down") is None
    clock.now += 51  # 60 s after the first line
    assert limiter.admit("seed down") == " (repeated 10 times in the last 60s)"
    clock.now += 1
    assert limiter.admit("seed down") is None  # a new interval began with that line


def test_keys_are_limited_separately() -> None:
    clock = Clock()
    limiter = RepeatLimiter(interval=10, clock=clock)
    assert limiter.admit(("refused", "10.0.0.1")) == ""
    assert limiter.admit(("refused", "10.0.0.2")) == ""
    assert limiter.admit(("refused", "10.0.0.1")) is None


def test_a_lone_occurrence_after_a_quiet_interval_has_no_count() -> None:
    clock = Clock()
    limiter = RepeatLimiter(interval=10, clock=clock)
    assert limiter.admit("k") == ""
    clock.now += 30
    assert limiter.admit("k") == ""


def test_the_key_table_is_bounded() -> None:
    clock = Clock()
    limiter = RepeatLimiter(interval=10, clock=clock, max_keys=3)
    for peer in range(3):
        assert limiter.admit(peer) == ""
    assert limiter.admit(3) == ""  # the oldest key (0) makes room
    assert limiter.admit(1) is None  # still remembered
    assert limiter.admit(0) == ""  # forgotten: a first occurrence again
    assert len(limiter._seen) == 3


@pytest.mark.parametrize(("interval", "max_keys"), [(0, 10), (-1, 10), (10, 0)])
def test_nonsense_limits_are_refused(interval: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="interval"):
        RepeatLimiter(interval=interval, max_keys=max_keys)


def test_log_writes_the_admitted_lines_with_their_counts() -> None:
    clock = Clock()
    limiter = RepeatLimiter(interval=60, clock=clock)
    stream = io.StringIO()
    sink = logger.add(stream, format="{level} {name}: {message}", level="DEBUG")
    try:
        for _ in range(5):
            limiter.log("WARNING", ("join", "10.0.0.7"), "cannot join through {}: {}", "10.0.0.7:7701", "refused")
            clock.now += 15
    finally:
        logger.remove(sink)
    assert stream.getvalue().splitlines() == [
        f"WARNING {__name__}: cannot join through 10.0.0.7:7701: refused",
        f"WARNING {__name__}: cannot join through 10.0.0.7:7701: refused (repeated 4 times in the last 60s)",
    ]
