"""One node's figures for the dashboard (``/status.json``), read from INFO and the request statistics.

Throughput and latency percentiles are over a recent window, not since start:
each reading keeps the request counters it saw, and the next compares with the
oldest one still inside :data:`WINDOW_SECONDS`. The page polls every second or
two, so a node is read often enough; the first reading has no rate yet (null).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aegiskv.protocols.adapter import InfoValue
from aegiskv.server.info import InfoSource, build_info
from aegiskv.server.stats import LATENCY_BUCKETS, StatsRegistry

WINDOW_SECONDS = 5.0
_MIN_SPAN = 0.5  # two readings closer than this give no honest rate
_MAX_READINGS = 64  # many viewers polling fast: the window keeps at most this many
_PERCENTILES = {"p50": 0.5, "p99": 0.99, "p999": 0.999}
_REPLICATION_FIELDS = (
    "shards_primary",
    "shards_follower",
    "links_up",
    "max_follower_lag_changes",
    "lag_p50_us",
    "lag_p99_us",
    "lag_max_us",
)


class _Reading:
    __slots__ = ("at", "calls", "buckets")

    def __init__(self, at: float, calls: int, buckets: list[int]) -> None:
        self.at = at
        self.calls = calls
        self.buckets = buckets


class RecentRequests:
    """Requests per second and latency percentiles over the last few seconds. Thread-safe."""

    def __init__(self, stats: StatsRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: deque[_Reading] = deque(maxlen=_MAX_READINGS)

    def read(self) -> dict[str, Any]:
        """``ops_per_sec`` (None until two readings are far enough apart), ``latency_us`` and ``window_s``."""
        totals = self._stats.totals()  # since start: CONFIG RESETSTAT must not make a rate negative
        buckets = [sum(family[bucket] for family in totals.latency) for bucket in range(LATENCY_BUCKETS)]
        now = _Reading(self._clock(), sum(totals.calls), buckets)
        with self._lock:
            while self._readings and now.at - self._readings[0].at > WINDOW_SECONDS:
                self._readings.popleft()
            oldest = self._readings[0] if self._readings else None
            self._readings.append(now)
        if oldest is None or now.at - oldest.at < _MIN_SPAN:
            return {"ops_per_sec": None, "latency_us": None, "window_s": None}
        span = now.at - oldest.at
        window = [new - old for new, old in zip(now.buckets, oldest.buckets, strict=True)]
        return {
            "ops_per_sec": round((now.calls - oldest.calls) / span, 1),
            "latency_us": {name: bucket_quantile(window, fraction) for name, fraction in _PERCENTILES.items()},
            "window_s": round(span, 2),
        }


def bucket_quantile(counts: list[int], fraction: float) -> int | None:
    """The upper bound in microseconds (``2**bucket``) of the bucket holding the quantile; None without requests.

    Bucket ``b`` holds requests faster than ``2**b`` us (aegiskv.server.stats), so the
    answer is "at most", up to twice the true value.
    """
    total = sum(counts)
    if total <= 0:
        return None
    wanted = fraction * total
    seen = 0
    for bucket, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            return int(2**bucket)
    return int(2 ** (len(counts) - 1))


def node_status(server: InfoSource, recent: RecentRequests, ready: bool, now: float | None = None) -> dict[str, Any]:
    """This node's figures as plain data (worker thread: INFO takes the node lock)."""
    info = build_info(server, ["server", "memory", "stats", "replication", "keyspace", "hotkeys"])
    memory, stats = info["memory"], info["stats"]
    replication = info["replication"]
    database = info["keyspace"].get("db0")
    return {
        "node_id": server.settings.node_id,
        "version": info["server"]["aegis_version"],
        "uptime_s": info["server"]["uptime_in_seconds"],
        "ready": ready,
        "at": time.time() if now is None else now,
        **recent.read(),
        "memory": {
            "used": memory["used_memory"],
            "limit": memory["maxmemory"],
            "rss": memory["used_memory_rss"],
        },
        "keys": database.get("keys", 0) if isinstance(database, dict) else 0,
        "evicted_keys": stats["evicted_keys"],
        "expired_keys": stats["expired_keys"],
        "commands": stats["total_commands_processed"],
        "replication": {
            name: replication.get(f"aegis_{name}") for name in _REPLICATION_FIELDS if f"aegis_{name}" in replication
        },
        "hotkeys": hot_keys(info.get("hotkeys", {})),
        # The shard copies this node sends (a move in flight): shard, to, state, keys, keys_total, bytes.
        "moves": server.replicas.moves() if server.replicas is not None else [],
    }


def hot_keys(section: dict[str, InfoValue]) -> list[dict[str, Any]]:
    """INFO hotkeys' ``hotkey_<rank>:freq=<int>,key=<key>`` lines as a list by rank; [] without the section.

    The key comes last so that it may hold commas; a line that does not read so is left out.
    """
    result = []
    for field, value in section.items():
        rank_text = field.removeprefix("hotkey_")
        if rank_text == field or not rank_text.isdigit():
            continue
        if isinstance(value, dict):
            freq, key = value.get("freq"), value.get("key")
        else:
            freq_part, separator, key = str(value).partition(",key=")
            freq = freq_part.removeprefix("freq=") if separator else None
        try:
            result.append({"rank": int(rank_text), "freq": int(str(freq)), "key": str(key)})
        except ValueError:
            continue
    return sorted(result, key=lambda entry: entry["rank"])
