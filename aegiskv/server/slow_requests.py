"""What is slow: feeds the slow log and the latency monitor (aegiskv.obs.slowlog) at no cost per request.

A request run inline on the reactor is not timed on its own: the reactor reads the
clock twice per loop turn, and a request's latency is its turn's, from the poll
that found its bytes to its reply being ready (aegiskv.server.stats). So the
check is per turn, one comparison against the smaller of the two thresholds
(:meth:`SlowRequests.turn_finished`, a reactor turn observer); reading the clock
per request cost a pipelined GET a tenth of its instructions. A slow turn logs
one entry for each client connection that got replies in it, naming its last
command: its arguments are not kept per request (that would keep a 64 MiB SET
value alive, per connection, until its next request). A request run in the
worker pool is timed on its own already, and is logged with its arguments.
"""

from __future__ import annotations

import time
from typing import Any, Final

from aegiskv.net.reactor import Reactor
from aegiskv.obs.slowlog import LatencyMonitor, SlowLog, shortened
from aegiskv.protocols.session import Session
from aegiskv.server.settings import Settings

_NEVER: Final = 2**62  # a threshold no turn reaches: the check stays one comparison when both are off


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return "?"


class SlowRequests:
    """Thresholds from the settings (live: :meth:`configure`); entries into ``slow_log`` and ``latency``."""

    def __init__(self, reactor: Reactor, settings: Settings) -> None:
        self.slow_log = SlowLog(settings.slowlog_max_len)
        self.latency = LatencyMonitor()
        self._reactor = reactor
        self._max_len = settings.slowlog_max_len
        self.threshold_ns: int = _NEVER
        self._slow_log_ns = _NEVER
        self._latency_ns = _NEVER
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Apply slowlog_log_slower_than (us, -1: off), slowlog_max_len and latency_monitor_threshold (ms, 0: off)."""
        slower_than = settings.slowlog_log_slower_than
        self._slow_log_ns = _NEVER if slower_than < 0 else slower_than * 1000
        threshold_ms = settings.latency_monitor_threshold
        self._latency_ns = _NEVER if threshold_ms == 0 else threshold_ms * 1_000_000
        self.threshold_ns = min(self._slow_log_ns, self._latency_ns)
        if settings.slowlog_max_len != self._max_len:
            self._max_len = settings.slowlog_max_len
            self.slow_log.resize(self._max_len)

    # -- reactor thread ------------------------------------------------------------------

    def turn_finished(self, elapsed_ns: int) -> None:
        """A reactor turn observer: one comparison unless the turn was slow."""
        if elapsed_ns < self.threshold_ns:
            return
        self._slow_turn(elapsed_ns)

    def _slow_turn(self, elapsed_ns: int) -> None:
        now = int(time.time())
        served = 0
        log = elapsed_ns >= self._slow_log_ns
        for transport in self._reactor.dirty:
            # A client connection's protocol is a RequestPipeline, which has the session
            # (not imported here: the pipeline calls this module).
            session = getattr(transport.protocol, "session", None)
            if not isinstance(session, Session):
                continue
            served += 1
            if log:
                self.slow_log.add(
                    now,
                    elapsed_ns // 1000,
                    (session.last_command.encode(),),
                    _address(session.peer),
                    session.name or b"",
                )
        if served and elapsed_ns >= self._latency_ns:
            self.latency.add("command", now, elapsed_ns // 1_000_000)

    # -- any thread -----------------------------------------------------------------------

    def pooled(self, elapsed_ns: int, request: Any, session: Session) -> None:
        """A request run in the worker pool took ``elapsed_ns`` (the caller compared it with threshold_ns)."""
        now = int(time.time())
        if elapsed_ns >= self._slow_log_ns:
            args = shortened(request) if isinstance(request, list) else (session.last_command.encode(),)
            self.slow_log.add(now, elapsed_ns // 1000, args, _address(session.peer), session.name or b"")
        if elapsed_ns >= self._latency_ns:
            self.latency.add("command", now, elapsed_ns // 1_000_000)
