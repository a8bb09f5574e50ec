"""What connections buffer, counted against two node-wide budgets.

* Client memory (``max_client_memory``): the query buffers (bytes received and
  not yet run as requests) and output buffers (replies not yet sent, or held
  for the log) of authenticated client connections. Over the budget the
  largest clients are disconnected until the total fits again, as Redis does
  with ``maxmemory-clients``. A per-connection limit alone cannot bound the
  node: eight clients each inside their limit can still hold eight times it.
* Unauthenticated memory (``max_unauthenticated_memory``): every byte held for
  a connection that has not proved who it is, on any port (RESP, native,
  gossip TCP, the cluster port, HTTP). Over the budget the oldest such
  connections holding bytes are closed first: a flood of half-sent requests
  then costs the attacker its own oldest connections, and a newcomer that is
  about to authenticate keeps its chance.

Accounting is incremental: the reactor tells the budget what one connection
holds after a read that may have grown it, after a send that did not empty its
output, and when it closes (:meth:`BufferBudget.account`). Totals are kept as
sums, so no request scans all clients; only going over a budget does (the
eviction sorts the connections once, then closes the largest or oldest).

Reactor thread only, except :meth:`snapshot`, which INFO reads from a worker
(a dictionary built from integers: a torn read shows a figure a moment old).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aegiskv.obs.repeats import RepeatLimiter

UNLIMITED = 1 << 62
# Redis keeps the peaks of the last few seconds (CLIENTS_PEAK_MEM_USAGE_SLOTS); two
# windows of this many seconds, reported as the larger of the two, do the same.
PEAK_WINDOW_SECONDS = 4.0


class Accounted(Protocol):
    """What the budget reads and writes on a connection (aegiskv.net.reactor.Transport)."""

    connection_id: int
    peer: Any
    created: float
    trusted: bool
    closed: bool
    accounted_in: int
    accounted_out: int
    accounted_preauth: bool
    evictable: bool
    close_reason: str

    @property
    def counts_as_client(self) -> bool: ...

    @property
    def port_name(self) -> str: ...

    def close(self, flush: bool = True) -> None: ...


class BufferBudget:
    """Totals of buffered bytes and the two budgets; see the module docstring."""

    def __init__(self, connections: Callable[[], Iterable[Accounted]], repeats: RepeatLimiter) -> None:
        self._connections = connections
        self._repeats = repeats
        self.client_limit = UNLIMITED
        self.preauth_limit = UNLIMITED
        self.client_input = 0  # query buffers of authenticated clients
        self.client_output = 0  # their unsent and held replies
        self.preauth = 0  # everything unauthenticated connections hold, on every port
        self.client_evictions = 0
        self.preauth_evictions = 0
        self._peak_in = [0, 0]  # [this window, the one before]
        self._peak_out = [0, 0]
        self._enforcing = False

    def account(self, connection: Accounted, held_in: int, held_out: int) -> None:
        """``connection`` now holds ``held_in`` received and ``held_out`` outgoing bytes."""
        if connection.accounted_preauth:
            self.preauth -= connection.accounted_in + connection.accounted_out
        elif connection.counts_as_client:
            self.client_input -= connection.accounted_in
            self.client_output -= connection.accounted_out
        preauth = not connection.trusted
        connection.accounted_in = held_in
        connection.accounted_out = held_out
        connection.accounted_preauth = preauth
        if preauth:
            self.preauth += held_in + held_out
        elif connection.counts_as_client:
            self.client_input += held_in
            self.client_output += held_out
            if held_in > self._peak_in[0]:
                self._peak_in[0] = held_in
            if held_out > self._peak_out[0]:
                self._peak_out[0] = held_out
        if self._enforcing:
            return
        if self.preauth > self.preauth_limit:
            self._enforce(preauth=True)
        if self.client_input + self.client_output > self.client_limit:
            self._enforce(preauth=False)

    def _enforce(self, preauth: bool) -> None:
        """Close connections until the total fits: oldest first before authentication, else largest first."""
        self._enforcing = True
        try:
            if preauth:
                holders = [c for c in self._connections() if c.accounted_preauth and c.accounted_in + c.accounted_out]
                holders.sort(key=lambda c: (c.created, c.connection_id))
            else:
                holders = [
                    c
                    for c in self._connections()
                    if c.counts_as_client
                    and c.evictable
                    and not c.accounted_preauth
                    and c.accounted_in + c.accounted_out
                ]
                holders.sort(key=lambda c: c.accounted_in + c.accounted_out, reverse=True)
            for connection in holders:
                if (self.preauth <= self.preauth_limit) if preauth else (self.total_client <= self.client_limit):
                    break
                held = connection.accounted_in + connection.accounted_out
                if preauth:
                    self.preauth_evictions += 1
                    what, limit, total, setting = "unauthenticated", self.preauth_limit, self.preauth, "preauth"
                else:
                    self.client_evictions += 1
                    what, limit, total, setting = "client", self.client_limit, self.total_client, "client"
                # One line per port and host (repeats.py counts the rest): never the bytes themselves.
                self._repeats.log(
                    "WARNING",
                    ("buffer budget", setting, connection.port_name, _host(connection.peer)),
                    "closing {} connection {} from {} holding {} bytes: {} buffers total {} bytes, over {}",
                    connection.port_name,
                    connection.connection_id,
                    connection.peer,
                    held,
                    what,
                    total,
                    f"max_unauthenticated_memory {limit}" if preauth else f"max_client_memory {limit}",
                )
                connection.close_reason = "unauthenticated_memory" if preauth else "client_memory"
                connection.close(flush=False)  # the close accounts it as holding nothing
        finally:
            self._enforcing = False

    @property
    def total_client(self) -> int:
        return self.client_input + self.client_output

    def rotate_peaks(self) -> None:
        """Start a new peak window (the reactor's sweep, every PEAK_WINDOW_SECONDS)."""
        self._peak_in = [0, self._peak_in[0]]
        self._peak_out = [0, self._peak_out[0]]

    def snapshot(self) -> dict[str, int]:
        """The figures INFO clients and /metrics show (any thread)."""
        return {
            "client_recent_max_input_buffer": max(self._peak_in),
            "client_recent_max_output_buffer": max(self._peak_out),
            "client_input_buffer_bytes": self.client_input,
            "client_output_buffer_bytes": self.client_output,
            "max_client_memory": self.client_limit if self.client_limit < UNLIMITED else 0,
            "client_memory_evictions": self.client_evictions,
            "unauthenticated_buffer_bytes": self.preauth,
            "max_unauthenticated_memory": self.preauth_limit if self.preauth_limit < UNLIMITED else 0,
            "unauthenticated_evictions": self.preauth_evictions,
        }


def _host(peer: Any) -> Any:
    return peer[0] if isinstance(peer, tuple) and peer else peer
