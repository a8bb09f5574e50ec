"""Slow requests as Redis keeps them: the slow log (SLOWLOG) and the latency monitor (LATENCY).

Plain data, thread-safe (one lock each): the server decides what is slow and adds
entries from the reactor or a worker (aegiskv.server.slow_requests); the RESP
handlers read them. Nothing here reads a clock: times are given.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

# As Redis (slowlog.h): an entry keeps at most 32 arguments and 128 bytes of each.
SLOWLOG_MAX_ARGS = 32
SLOWLOG_MAX_ARG_BYTES = 128
# As Redis (latency.h): the samples kept per event, at most one per second.
LATENCY_HISTORY = 160


class SlowLogEntry(NamedTuple):
    entry_id: int
    timestamp: int  # Unix seconds when it was logged
    duration_us: int
    args: tuple[bytes, ...]  # shortened as Redis shortens them
    client: str  # the client's address, ip:port
    client_name: bytes


def shortened(args: list[bytes] | tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The arguments as a slow log entry keeps them (Redis's "... (N more arguments)" and "bytes")."""
    kept = list(args[: SLOWLOG_MAX_ARGS - 1] if len(args) > SLOWLOG_MAX_ARGS else args)
    for index, argument in enumerate(kept):
        if len(argument) > SLOWLOG_MAX_ARG_BYTES:
            extra = len(argument) - SLOWLOG_MAX_ARG_BYTES
            kept[index] = bytes(argument[:SLOWLOG_MAX_ARG_BYTES]) + b"... (%d more bytes)" % extra
        else:
            kept[index] = bytes(argument)
    if len(args) > SLOWLOG_MAX_ARGS:
        kept.append(b"... (%d more arguments)" % (len(args) - SLOWLOG_MAX_ARGS + 1))
    return tuple(kept)


class SlowLog:
    """The newest ``max_len`` slow requests, numbered from 0 since start (RESET keeps the numbering)."""

    def __init__(self, max_len: int) -> None:
        self._lock = threading.Lock()
        self._entries: deque[SlowLogEntry] = deque(maxlen=max_len)
        self._next_id = 0

    def add(self, timestamp: int, duration_us: int, args: tuple[bytes, ...], client: str, client_name: bytes) -> None:
        with self._lock:
            if self._entries.maxlen == 0:
                return
            self._entries.append(SlowLogEntry(self._next_id, timestamp, duration_us, args, client, client_name))
            self._next_id += 1

    def newest(self, count: int) -> list[SlowLogEntry]:
        """Up to ``count`` entries, newest first (-1: all)."""
        with self._lock:
            entries = list(self._entries)
        entries.reverse()
        return entries if count < 0 else entries[:count]

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def resize(self, max_len: int) -> None:
        """Keep at most ``max_len`` entries from now on (the newest stay)."""
        with self._lock:
            self._entries = deque(self._entries, maxlen=max_len)


class LatencySample(NamedTuple):
    timestamp: int  # Unix seconds
    latency_ms: int


class LatencyMonitor:
    """Per event, the worst latency of each second (the last :data:`LATENCY_HISTORY`) and the all-time worst."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, deque[LatencySample]] = {}
        self._worst: dict[str, int] = {}

    def add(self, event: str, timestamp: int, latency_ms: int) -> None:
        with self._lock:
            samples = self._events.get(event)
            if samples is None:
                samples = self._events[event] = deque(maxlen=LATENCY_HISTORY)
            if samples and samples[-1].timestamp == timestamp:
                if latency_ms > samples[-1].latency_ms:
                    samples[-1] = LatencySample(timestamp, latency_ms)
            else:
                samples.append(LatencySample(timestamp, latency_ms))
            self._worst[event] = max(self._worst.get(event, 0), latency_ms)

    def latest(self) -> list[tuple[str, LatencySample, int]]:
        """Each event's newest sample and its worst latency, as LATENCY LATEST lists them."""
        with self._lock:
            return [(event, samples[-1], self._worst[event]) for event, samples in self._events.items() if samples]

    def history(self, event: str) -> list[LatencySample]:
        with self._lock:
            return list(self._events.get(event, ()))

    def reset(self, events: list[str] | None = None) -> int:
        """Forget the events named (None: every event); returns how many were known."""
        with self._lock:
            names = list(self._events) if events is None else [name for name in events if name in self._events]
            for name in names:
                del self._events[name]
                self._worst.pop(name, None)
            return len(names)
