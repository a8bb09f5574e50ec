"""The slow log and the latency monitor as data: Redis's shortening, order, bounds and per-second samples."""

from __future__ import annotations

from aegiskv.obs.slowlog import LATENCY_HISTORY, LatencyMonitor, SlowLog, shortened


def test_arguments_are_shortened_as_redis_shortens_them() -> None:
    assert shortened([b"GET", b"k"]) == (b"GET", b"k")
    assert shortened([b"SET", b"k", b"v" * 130]) == (b"SET", b"k", b"v" * 128 + b"... (2 more bytes)")
    many = [b"MGET"] + [b"key%d" % index for index in range(40)]  # 41 arguments
    kept = shortened(many)
    assert len(kept) == 32 and kept[:31] == tuple(many[:31]) and kept[31] == b"... (10 more arguments)"
    exactly = [b"x"] * 32
    assert shortened(exactly) == tuple(exactly)


def test_slow_log_keeps_the_newest_and_numbers_them_across_resets() -> None:
    log = SlowLog(max_len=3)
    for number in range(5):
        log.add(100 + number, number, (b"PING",), "127.0.0.1:1", b"")
    assert [entry.entry_id for entry in log.newest(-1)] == [4, 3, 2]
    assert [entry.entry_id for entry in log.newest(2)] == [4, 3]
    log.resize(1)
    assert [entry.entry_id for entry in log.newest(10)] == [4]
    log.reset()
    assert len(log) == 0
    log.add(200, 1, (b"GET",), "127.0.0.1:1", b"name")
    assert log.newest(1)[0].entry_id == 5
    off = SlowLog(max_len=0)
    off.add(1, 1, (b"GET",), "?", b"")
    assert len(off) == 0


def test_latency_keeps_the_worst_of_each_second_and_the_worst_ever() -> None:
    monitor = LatencyMonitor()
    monitor.add("command", 10, 5)
    monitor.add("command", 10, 9)
    monitor.add("command", 10, 2)
    monitor.add("command", 11, 3)
    assert [tuple(sample) for sample in monitor.history("command")] == [(10, 9), (11, 3)]
    ((event, latest, worst),) = monitor.latest()
    assert (event, tuple(latest), worst) == ("command", (11, 3), 9)
    for second in range(12, 12 + LATENCY_HISTORY):
        monitor.add("command", second, 1)
    assert len(monitor.history("command")) == LATENCY_HISTORY
    assert monitor.reset(["nosuch"]) == 0
    assert monitor.reset() == 1 and monitor.latest() == [] and monitor.history("command") == []
