"""The AegisKV Python client.

``Client(Config(seeds=["127.0.0.1:7700"]))`` connects lazily. It is safe to
share between threads: each call borrows a connection from a per-server pool
(at most ``max_conns`` per server; a caller waits for one when all are busy,
up to ``conn_timeout``). A pooled connection the server closed while it sat
idle is noticed before it is used, and replaced.

Retries (the policy is :mod:`aegiskv.client.retry`). A request is tried again
after a failure that repeating it cannot turn into a different outcome:

* Not applied (every operation is retried): the connection could not be made,
  the server said the key's shard has no primary yet (TRYAGAIN while an
  election is under way) or that no node serves it (CLUSTERDOWN).
* Outcome unknown (idempotent operations only): the connection broke or timed
  out after the request was sent, or the server said TRYAGAIN because the
  write's quorum or its primary's lease failed ("may or may not have been
  applied").

Idempotent: ``get``, ``get_with_ttl``, ``set`` and ``set_with_ttl`` without a
condition, ``delete``, ``expire``, ``persist``, ``mget``, ``mset``, ``ping``,
``info``, ``topology``, ``get_range``, ``set_range``, ``touch``, ``expire_time``,
``copy`` with ``replace``. Not idempotent: ``incr_by_float``, ``rename``, ``copy``
without ``replace``, and ``set`` with ``only_if_absent``,
``only_if_present`` or ``if_version`` (compare-and-set): after an unknown
outcome a second attempt could report a condition failure caused by the first,
so such a failure is raised as it is. Pipelines follow the same rules command
by command. Other server errors (rate limit, out of memory, a failing disk,
authentication) are never retried.

Before each retry the client waits (50 ms doubling to 500 ms, with jitter), then
fetches the shard map again (from the node a redirect named, the seeds and the
known nodes; those that failed to answer lately last), so a write to a primary
that died goes to the new primary once the cluster elected one. Retries stop
after ``max_retries`` (default 20) or ``retry_budget`` seconds (default 5, more
than a failover takes with the default 2 s leases), whichever comes first;
then :class:`RetriesExhaustedError` is raised with the last failure as its
cause (with ``max_retries=0``, the failure itself). Redirects (MOVED) are
followed at once, up to ``max_redirects`` in a row; a request still redirected
after that (the nodes disagree on the owner for a moment, as while a shard is
handed off) was not run either, so it is retried as above, and
:class:`MovedError` is the failure when retries run out. Calls addressed to one server
(``ping(addr)``, ``info(server=...)``, ``topology(server=...)``) ask that server
once: they report on it, so they neither wait for it nor go elsewhere.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, overload

from aegiskv.client.connection import NativeConnection
from aegiskv.client.errors import (
    AegisError,
    AegisTimeoutError,
    ConnectionClosedError,
    CrossSlotError,
    ProtocolViolationError,
)
from aegiskv.client.retry import Failure, RetryBudget
from aegiskv.client.rounds import BatchRounds, Outcome, RequestRounds, Step, busy_failure
from aegiskv.client.rounds import Request as _Request
from aegiskv.client.rounds import raise_for_status as _raise_for_status
from aegiskv.client.rounds import show as _show
from aegiskv.client.route_table import Address, RouteTable, refresh_due, refresh_order, table_of_reply
from aegiskv.cluster.slots import key_slot
from aegiskv.net.tls import client_context
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, Opcode, Status

Key = bytes | str
Value = bytes | str
T = TypeVar("T")
# A mapping's key type is invariant: Mapping[Key, ...] would refuse a dict[str, ...].
K = TypeVar("K", bound=Key)
Q = TypeVar("Q", bound="QueuedOperations")


@dataclass
class Config:
    """Client settings; every field has a default. Timeouts are seconds."""

    seeds: Sequence[str] = ("127.0.0.1:7700",)
    """``host:port`` of the servers to start from (in a cluster, any of its nodes)."""
    max_conns: int = 8
    """Connections per server, at most; a call waits up to ``conn_timeout`` for a free one."""
    conn_timeout: float = 1.0
    """To connect (and, with TLS, to finish the handshake)."""
    read_timeout: float = 2.0
    """To wait for a reply."""
    write_timeout: float = 2.0
    """To send a request."""
    max_retries: int = 20
    """Tries after the first, at most (the module docstring says which operations are retried)."""
    auth_token: str | None = None
    """Sent with AUTH on every new connection, when the servers require a token."""
    tls: ssl.SSLContext | None = None
    """TLS with a context of your own; or leave None and give the file names below."""
    tls_ca: str | None = None
    """PEM file of the CA to trust: turns TLS on."""
    tls_cert: str | None = None
    """PEM certificate to present, for servers that require client certificates (with ``tls_key``)."""
    tls_key: str | None = None
    """PEM key of ``tls_cert``."""
    cluster_routing: bool = True
    """Send each key straight to its shard's primary, from a shard map fetched from any seed."""
    topology_refresh: float = 30.0
    """Fetch the shard map again after this long (and after a redirect)."""
    max_redirects: int = 5
    """Redirects in a row that are followed at once; past these a redirect counts as a failure."""
    retry_budget: float = 5.0
    """No retry starts later than this after the first attempt."""
    retry_backoff: float = 0.05
    """The wait before retry n: ``min(retry_backoff_max, retry_backoff * 2**n)``, times a random factor in [0.5, 1)."""
    retry_backoff_max: float = 0.5
    """The longest wait between tries."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context connections use: ``tls`` as given, or one built from the file names."""
        if self.tls is not None:
            return self.tls
        if self.tls_ca or self.tls_cert:
            return client_context(self.tls_ca, self.tls_cert, self.tls_key)
        return None

    def __post_init__(self) -> None:
        if isinstance(self.seeds, str):
            self.seeds = [seed.strip() for seed in self.seeds.split(",") if seed.strip()]
        if not self.seeds:
            raise ValueError("Config.seeds needs at least one host:port")
        for seed in self.seeds:
            _parse_address(seed)
        if self.max_conns < 1:
            raise ValueError("Config.max_conns must be at least 1")
        if self.max_retries < 0:
            raise ValueError("Config.max_retries must be >= 0")
        if self.max_redirects < 0:
            raise ValueError("Config.max_redirects must be >= 0")
        for name in ("conn_timeout", "read_timeout", "write_timeout", "topology_refresh", "retry_budget"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Config.{name} must be positive")
        if not 0 < self.retry_backoff <= self.retry_backoff_max:
            raise ValueError("Config.retry_backoff must be positive and at most Config.retry_backoff_max")


@dataclass(frozen=True)
class ValueWithTTL:
    """What :meth:`Client.get_with_ttl` returns."""

    value: bytes
    """The value."""
    ttl: timedelta | None
    """The time left before the key expires; None when it does not expire."""
    version: int
    """The key's version (as :meth:`Client.set` returned it)."""


@dataclass
class _ServerPool:
    """Idle connections to one server, plus a count of those lent out."""

    address: tuple[str, int]
    idle: list[NativeConnection] = field(default_factory=list)
    lent: int = 0


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _bytes(data: Key | Value, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")


def _ttl_ms(ttl: float | timedelta | None) -> int:
    if ttl is None:
        return 0
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    milliseconds = round(seconds * 1000)
    if milliseconds <= 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return milliseconds


class Client:
    """See the module docstring. Also a context manager (closes on exit)."""

    def __init__(self, config: Config | None = None) -> None:
        """A client of the servers in ``config.seeds`` (default ``Config()``); it connects lazily, on the first call."""
        self.config = config or Config()
        self._ssl_context = self.config.ssl_context()
        self._lock = threading.Condition()
        self._pools: dict[Address, _ServerPool] = {}
        self._order: list[Address] = []
        self._closed = False
        for seed in self.config.seeds:
            self.add_server(seed)
        self._routes: RouteTable | None = None
        self._routes_lock = threading.Lock()
        self._routes_failed_at = -1e9
        # Servers that failed to answer lately (address -> when): asked for the shard map last.
        self._unreachable: dict[Address, float] = {}
        # Time and randomness of the retries; tests may replace them.
        self._clock = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep
        self._rng = random.Random()

    # -- server list -----------------------------------------------------------------

    def add_server(self, address: str) -> None:
        """Add ``host:port`` to the server list (asked when no shard map names a key's owner);
        already there: nothing."""
        parsed = _parse_address(address)
        with self._lock:
            if parsed not in self._pools:
                self._pools[parsed] = _ServerPool(parsed)
                self._order.append(parsed)

    def remove_server(self, address: str) -> None:
        """Drop ``host:port`` from the server list and close its idle connections; ValueError when it is not there."""
        parsed = _parse_address(address)
        with self._lock:
            pool = self._pools.pop(parsed, None)
            if pool is None:
                raise ValueError(f"{address} is not in the server list")
            self._order.remove(parsed)
            for connection in pool.idle:
                connection.close()
            self._lock.notify_all()

    def servers(self) -> list[str]:
        """The server list, as ``host:port`` strings, in the order they were added."""
        with self._lock:
            return [f"{host}:{port}" for host, port in self._order]

    # -- operations ------------------------------------------------------------------

    def get(self, key: Key) -> bytes:
        """The value of ``key``; raises :class:`NotFoundError` (a ``KeyError``) when it does not exist."""
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.GET, idempotent=True, items=((raw, b""),))
        _raise_for_status(frame, raw)
        return bytes(frame.items[0][1] or b"")

    def get_with_ttl(self, key: Key) -> ValueWithTTL:
        """The value of ``key`` with its TTL and version; raises :class:`NotFoundError` when it does not exist."""
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.GET_TTL, idempotent=True, items=((raw, b""),))
        _raise_for_status(frame, raw)
        ttl = None if frame.ttl_ms < 0 else timedelta(milliseconds=frame.ttl_ms)
        return ValueWithTTL(bytes(frame.items[0][1] or b""), ttl, frame.version)

    def set(
        self,
        key: Key,
        value: Value,
        ttl: float | timedelta | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
        if_version: int | None = None,
        keep_ttl: bool = False,
    ) -> int:
        """Store ``value``; returns its new version.

        ``only_if_absent`` / ``only_if_present`` raise :class:`ConditionNotMetError`
        when the condition fails; ``if_version`` (compare-and-set; 0 = must be
        absent) raises :class:`VersionMismatchError` carrying the current version.
        A conditional set is retried only after failures that say it was not
        applied (see the module docstring).
        """
        raw = _bytes(key, "key")
        flags, fields = _set_fields(raw, value, ttl, only_if_absent, only_if_present, if_version, keep_ttl)
        frame = self._keyed(raw, Opcode.SET, idempotent=not _CONDITIONS & flags, **fields)
        _raise_for_status(frame)
        return frame.version

    def set_with_ttl(self, key: Key, value: Value, ttl: float | timedelta) -> int:
        """Store ``value`` for ``ttl`` (seconds or a ``timedelta``)."""
        if ttl is None:
            raise ValueError("set_with_ttl needs a ttl")
        return self.set(key, value, ttl)

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True when it existed.

        Retried after an unknown outcome like the other idempotent operations:
        a retry after a first attempt that did delete the key reports False.
        """
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.DEL, idempotent=True, items=((raw, b""),))
        if frame.status == Status.NOT_FOUND:
            return False
        _raise_for_status(frame)
        return True

    def expire(self, key: Key, ttl: float | timedelta) -> bool:
        """Give ``key`` a TTL; False when the key does not exist."""
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.EXPIRE, idempotent=True, ttl_ms=_ttl_ms(ttl), items=((raw, b""),))
        if frame.status == Status.NOT_FOUND:
            return False
        _raise_for_status(frame)
        return True

    def persist(self, key: Key) -> bool:
        """Remove the TTL of ``key``; False when the key does not exist."""
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.PERSIST, idempotent=True, items=((raw, b""),))
        if frame.status == Status.NOT_FOUND:
            return False
        _raise_for_status(frame)
        return True

    def mget(self, keys: Iterable[Key]) -> list[bytes | None]:
        """Values in the order of ``keys``; ``None`` for missing keys."""
        raw = [(_bytes(key, "key"), b"") for key in keys]
        values: list[bytes | None] = [None] * len(raw)
        for indices, frame in self._batched(Opcode.MGET, raw):
            for index, (_, value) in zip(indices, frame.items):
                values[index] = value
        return values

    # Two overloads, not one union: against the union mypy reads a dict literal that mixes str
    # and bytes values ({"a": "1", "b": b"2"}) as the Iterable branch, and rejects it.
    @overload
    def mset(self, pairs: Mapping[K, Value], ttl: float | timedelta | None = None) -> int: ...

    @overload
    def mset(self, pairs: Iterable[tuple[Key, Value]], ttl: float | timedelta | None = None) -> int: ...

    def mset(self, pairs: Mapping[K, Value] | Iterable[tuple[Key, Value]], ttl: float | timedelta | None = None) -> int:
        """Store every pair; returns the highest version written.

        Atomic on one node. In a cluster the pairs are split by owner and each
        node stores its part atomically; parts on different nodes are not one unit.
        """
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        raw = [(_bytes(key, "key"), _bytes(value, "value")) for key, value in items]
        return max((frame.version for _, frame in self._batched(Opcode.MSET, raw, ttl_ms=_ttl_ms(ttl))), default=0)

    # -- string and keyspace operations (issue 25): one block, each a native opcode ----------

    def get_range(self, key: Key, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of the value, inclusive, as Redis's GETRANGE: negative
        indexes count from the end, the range is clamped, a missing key reads as ``b""``."""
        raw = _bytes(key, "key")
        bounds = native.GETRANGE_BOUNDS.pack(start, end)
        frame = self._keyed(raw, Opcode.GETRANGE, idempotent=True, items=((raw, bounds),))
        _raise_for_status(frame, raw)
        return bytes(frame.items[0][1] or b"")

    def set_range(self, key: Key, offset: int, data: Value) -> int:
        """Write ``data`` into the value at byte ``offset`` (zero bytes fill any gap; the key is
        created when absent, unless ``data`` is empty); keeps the TTL. Returns the new length.

        A value that would grow past the server's value limit (or Redis's 512 MiB) raises
        :class:`ServerError` and changes nothing.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        raw = _bytes(key, "key")
        item = ((raw, _bytes(data, "data")),)
        frame = self._keyed(raw, Opcode.SETRANGE, idempotent=True, ttl_ms=offset, items=item)
        _raise_for_status(frame, raw)
        return frame.version

    def incr_by_float(self, key: Key, amount: float | str) -> str:
        """Add ``amount`` to the number stored at ``key`` (absent counts as 0) in Redis's
        INCRBYFLOAT arithmetic; keeps the TTL. Returns the stored text (``"10.6"``).

        ``amount`` as a float is sent as ``repr`` gives it (the shortest text that reads back
        as the same float), or as decimal text. Not retried after an unknown outcome: a second
        attempt would add twice. A result that is not finite raises :class:`ServerError`.
        """
        raw = _bytes(key, "key")
        text = repr(amount).encode() if isinstance(amount, float) else _bytes(amount, "amount")
        frame = self._keyed(raw, Opcode.INCRBYFLOAT, idempotent=False, items=((raw, text),))
        _raise_for_status(frame, raw)
        return (frame.items[0][1] or b"").decode()

    def _two_keys(self, source: Key, destination: Key) -> tuple[bytes, bytes]:
        """The keys of RENAME and COPY, refused here when their slots differ: the server would
        refuse them too, and in a cluster their owners would redirect to each other."""
        source_raw, destination_raw = _bytes(source, "key"), _bytes(destination, "key")
        if key_slot(source_raw) != key_slot(destination_raw):
            raise CrossSlotError("Keys in request don't hash to the same slot", "CROSSSLOT")
        return source_raw, destination_raw

    def rename(self, source: Key, destination: Key, *, only_if_absent: bool = False) -> bool:
        """Move ``source``'s value and TTL to ``destination`` (replacing it, unless
        ``only_if_absent``: then False when it exists). Raises :class:`NotFoundError` when
        ``source`` does not exist and :class:`CrossSlotError` when the keys' slots differ.
        Not retried after an unknown outcome (a second attempt would find no source)."""
        source_raw, destination_raw = self._two_keys(source, destination)
        frame = self._keyed(
            source_raw,
            Opcode.RENAME,
            idempotent=False,
            flags=native.RENAME_IF_ABSENT if only_if_absent else 0,
            items=((source_raw, None), (destination_raw, None)),
        )
        if frame.status == Status.NOT_STORED:
            return False
        _raise_for_status(frame, source_raw)
        return True

    def copy(self, source: Key, destination: Key, *, replace: bool = False) -> bool:
        """Copy ``source``'s value and TTL to ``destination``; False when it exists and not
        ``replace``. Raises :class:`NotFoundError` when ``source`` does not exist and
        :class:`CrossSlotError` when the keys' slots differ. Retried like an idempotent
        operation only with ``replace``."""
        source_raw, destination_raw = self._two_keys(source, destination)
        frame = self._keyed(
            source_raw,
            Opcode.COPY,
            idempotent=replace,
            flags=native.COPY_REPLACE if replace else 0,
            items=((source_raw, None), (destination_raw, None)),
        )
        if frame.status == Status.NOT_STORED:
            return False
        _raise_for_status(frame, source_raw)
        return True

    def touch(self, *keys: Key) -> int:
        """Count the ``keys`` that exist, each counted as a use for eviction (as Redis's TOUCH).
        In a cluster the keys are split by owner, as :meth:`mget`."""
        raw = [(_bytes(key, "key"), b"") for key in keys]
        if not raw:
            return 0
        return sum(frame.version for _, frame in self._batched(Opcode.TOUCH, raw))

    def expire_time(self, key: Key) -> datetime | None:
        """When ``key`` expires (UTC, millisecond precision), or None when it has no TTL.
        Raises :class:`NotFoundError` when the key does not exist."""
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.EXPIRE_TIME, idempotent=True, items=((raw, b""),))
        _raise_for_status(frame, raw)
        if frame.ttl_ms < 0:
            return None
        return datetime.fromtimestamp(frame.ttl_ms / 1000, tz=timezone.utc)

    def info(self, *sections: str, server: str | None = None) -> dict[str, dict[str, Any]]:
        """INFO of ``server`` (or the first reachable one): section -> field -> value.

        ``sections`` as Redis's INFO takes them (none: the default ones; ``shards``
        only by name). The fields are those the RESP port's INFO prints, with
        their types: ``info("stats")["stats"]["keyspace_hits"]`` is an int, and
        ``info("keyspace")["keyspace"]["db0"]`` a dict (absent with no keys).
        """
        frame = self._call(
            Opcode.INFO, _parse_address(server) if server else None, items=tuple((s.encode(), b"") for s in sections)
        )
        _raise_for_status(frame)
        return {name.decode(): json.loads(value or b"{}") for name, value in frame.items}

    def topology(self, server: str | None = None) -> dict[str, Any]:
        """The shard map of ``server`` (or the first reachable one), as ``ShardMap.describe()`` gives it.

        Keys: ``epoch``, ``slots``, ``shards`` (each with its slot range, its
        ``replicas`` with the primary first, ``primary``: the lease holder or
        None while unknown, as during an election, and ``preferred``:
        placement's choice) and ``nodes`` (client and RESP address per node
        id; an empty host means "the host you reached this node at").
        """
        frame = self._call(Opcode.TOPOLOGY, _parse_address(server) if server else None)
        _raise_for_status(frame)
        described: dict[str, Any] = json.loads(frame.items[0][1] or b"{}")
        return described

    def ping(self, addr: str | None = None) -> float:
        """Round-trip time in seconds to ``addr`` (or the first reachable server)."""
        started = time.perf_counter()
        frame = self._call(Opcode.PING, _parse_address(addr) if addr else None)
        _raise_for_status(frame)
        return time.perf_counter() - started

    def drain(self, server: str) -> None:
        """Ask ``server`` to drain, as SIGTERM does: it leaves the cluster, finishes the requests
        in flight and stops. Returns once the node has accepted; the process ends soon after
        (within its ``drain_timeout``). Sent once, never retried: it is addressed to that node."""
        frame = self._call(Opcode.DRAIN, _parse_address(server))
        _raise_for_status(frame)

    def pipeline(self) -> Pipeline:
        """A new, empty :class:`Pipeline` that sends through this client."""
        return Pipeline(self)

    # -- cluster routing ---------------------------------------------------------------

    def _route_table(self) -> RouteTable | None:
        """The shard map when it spans several nodes (else None: any server will do)."""
        if not self.config.cluster_routing:
            return None
        table = self._routes
        if refresh_due(table, self._routes_failed_at, time.monotonic(), self.config.topology_refresh):
            table = self._refresh_routes(table)
        return table if table is not None and table.spans_nodes else None

    def _refresh_routes(self, stale: RouteTable | None, hint: Address | None = None) -> RouteTable | None:
        """Fetch the shard map from ``hint``, then the seeds, then the nodes we know; keep the first answer.

        Servers that failed to answer lately are asked last, so a dead primary
        does not delay learning who replaced it. ``stale`` is the table the
        caller found wanting: when another thread replaced it while this one
        waited for the lock, the newer one is used.
        """
        with self._routes_lock:
            if self._routes is not stale:
                return self._routes
            seeds = [_parse_address(seed) for seed in self.config.seeds]
            with self._lock:
                unreachable = set(self._unreachable)
            ordered = refresh_order(hint, seeds, self._routes, unreachable)
            for address in ordered:
                try:
                    frame = self._single(address, Opcode.TOPOLOGY)
                    _raise_for_status(frame)
                    self._routes = table_of_reply(frame.items[0][1], address)
                except (ConnectionClosedError, AegisTimeoutError):
                    if self._closed:
                        raise
                    self._mark_unreachable([address])
                    continue
                except (AegisError, ValueError, KeyError, TypeError, IndexError):
                    continue
                self._mark_reachable(address)
                return self._routes
            self._routes_failed_at = time.monotonic()
            return self._routes

    def _mark_unreachable(self, addresses: Iterable[Address]) -> None:
        now = self._clock()
        with self._lock:
            for address in addresses:
                self._unreachable[address] = now

    def _mark_reachable(self, address: Address) -> None:
        if address in self._unreachable:  # a read without the lock: the common case costs nothing
            with self._lock:
                self._unreachable.pop(address, None)

    # -- the retry loop -----------------------------------------------------------------

    def _keyed(self, key: bytes | None, opcode: int, *, idempotent: bool, **fields: Any) -> Frame:
        """One request for ``key`` (None: for no key), sent to its owner, retried as the module docstring says.

        Returns the reply frame (any status but MOVED and the refusals that were
        retried); raises what ended the retries."""
        (outcome,) = self._run([_Request(opcode, fields, key, idempotent)])
        if isinstance(outcome, AegisError):
            raise outcome
        return outcome

    def _call(self, opcode: int, address: Address | None, **fields: Any) -> Frame:
        """A request for no key: to ``address`` once, or to any server with retries."""
        if address is not None:
            return self._single(address, opcode, **fields)
        return self._keyed(None, opcode, idempotent=True, **fields)

    def _run(self, requests: Sequence[_Request]) -> list[Outcome]:
        """Send ``requests`` (pipelined, one batch per owner) until each has an outcome; in their order.

        The rounds (what each reply means, when to retry) are
        :class:`~aegiskv.client.rounds.RequestRounds`; this sends them.
        """
        rounds = RequestRounds(requests, self._budget(), self.config.max_redirects)
        while True:
            round_started = time.monotonic()
            table = self._route_table()
            for address, indices in rounds.plan(table).items():
                target = address or self._pick(rounds.budget.retries)
                frames, broken = self._exchange(target, [requests[index] for index in indices])
                if broken is not None:
                    self._mark_unreachable([target])
                rounds.settle(target, indices, frames, broken)
            step = rounds.finish()
            if step is None:
                return rounds.outcomes()
            self._next_round(step, table, round_started)

    def _batched(self, opcode: int, items: list[tuple[bytes, bytes]], **fields: Any) -> list[tuple[list[int], Frame]]:
        """MGET/MSET split by owner, retried as :class:`~aegiskv.client.rounds.BatchRounds` says.

        Returns (indices into ``items``, reply frame) per part, in no particular order.
        """
        rounds = BatchRounds(items, self._budget(), self.config.max_redirects)
        while True:
            round_started = time.monotonic()
            table = self._route_table()
            for address, indices in rounds.plan(table).items():
                target = address or self._pick(rounds.budget.retries)
                part = {**fields, "items": rounds.part(indices)}
                frames, broken = self._exchange(target, [_Request(opcode, part, None, True)])
                if rounds.settle(target, indices, frames, broken):
                    self._mark_unreachable([target])
            step = rounds.finish()
            if step is None:
                return rounds.done
            self._next_round(step, table, round_started)

    def _next_round(self, step: Step, table: RouteTable | None, round_started: float) -> None:
        """Between rounds: follow redirects at once, or wait after a failure; then the map again."""
        if step.delay is None:
            if self.config.cluster_routing:
                self._refresh_routes(table, hint=step.hint)
            return
        self._sleep(step.delay)
        self._refresh_after_failure(round_started, step.hint)

    def _refresh_after_failure(self, round_started: float, hint: Address | None) -> None:
        """Before the next round: the map again, unless another thread fetched it since this round began."""
        if self._closed:
            raise ConnectionClosedError("client is closed")
        if not self.config.cluster_routing:
            return
        current = self._routes
        if current is None or current.fetched_at < round_started:
            self._refresh_routes(current, hint=hint)

    def _budget(self) -> RetryBudget:
        config = self.config
        if self._closed:
            raise ConnectionClosedError("client is closed")
        return RetryBudget(
            config.max_retries,
            config.retry_budget,
            config.retry_backoff,
            config.retry_backoff_max,
            self._clock,
            self._rng,
        )

    # -- plumbing --------------------------------------------------------------------

    def _exchange(self, address: Address, requests: Sequence[_Request]) -> tuple[list[Frame], Failure | None]:
        """One attempt: send ``requests`` to ``address`` in one write and read the replies.

        Returns the replies that arrived (in order) and, when fewer than the
        requests, the failure that cut them short: not applied when no
        connection could be had (or the server refused it at once, BUSY),
        outcome unknown once anything was sent. Other errors (a reply this
        client cannot read, a refused AUTH, a closed client) are raised.
        """
        frames: list[Frame] = []
        refused: list[Failure] = []
        connected = False

        def exchange(connection: NativeConnection) -> list[Frame]:
            nonlocal connected
            connected = True
            for request_id in connection.send_many([(request.opcode, request.fields) for request in requests]):
                frame = connection.receive(request_id)
                busy = busy_failure(frame, address)
                if busy is not None:  # refused as it was accepted: nothing was read
                    refused.append(busy)
                    break
                frames.append(frame)
                if frame.status == Status.PROTOCOL_ERROR:
                    break  # the server closes after it: nothing behind it was run
            return frames

        try:
            self._attempt(exchange, all(request.idempotent for request in requests), address)
        except (ConnectionClosedError, AegisTimeoutError) as error:
            if not connected and self._closed:
                raise
            return frames, Failure(error, maybe_applied=connected)
        if refused:
            return frames, refused[0]
        self._mark_reachable(address)
        return frames, None

    def _attempt(self, action: Callable[[NativeConnection], T], idempotent: bool, address: Address) -> T:
        """``action`` on a connection to ``address`` borrowed for it, given back after; no retry here.

        The one place a request meets a connection: a subclass may wrap
        ``action`` to observe exchanges (the fault tests note which server
        answered). ``idempotent`` says whether the requests may be repeated;
        the retry decisions are the callers' (:meth:`_run`, :meth:`_batched`).
        """
        connection = self._borrow(address)
        try:
            return action(connection)
        finally:
            self._give_back(connection)

    def _single(self, address: Address, opcode: int, **fields: Any) -> Frame:
        """One request to ``address``, one attempt; its failure is raised as it is."""
        frames, failure = self._exchange(address, [_Request(opcode, fields, None, True)])
        if failure is not None:
            raise failure.error
        if not frames:
            raise ProtocolViolationError(f"{_show(address)} closed the connection without a reply")
        return frames[0]

    def _pick(self, attempt: int) -> Address:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            if not self._order:
                raise ConnectionClosedError("no servers configured")
            return self._order[attempt % len(self._order)]

    def _borrow(self, address: Address) -> NativeConnection:
        config = self.config
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            pool = self._pools.get(address)
            if pool is None:
                pool = self._pools[address] = _ServerPool(address)  # ping() to a server outside the list
            if not pool.idle and not self._lock.wait_for(
                lambda: pool.idle or pool.lent < config.max_conns or self._closed, timeout=config.conn_timeout
            ):
                raise AegisTimeoutError(
                    f"no free connection to {address[0]}:{address[1]} within {config.conn_timeout}s"
                )
            if self._closed:
                raise ConnectionClosedError("client is closed")
            pool.lent += 1
            connection = pool.idle.pop() if pool.idle else None
        if connection is not None:
            if not connection.stale():
                return connection
            connection.close()  # the server closed it while it sat idle: connect afresh
        try:
            connection = NativeConnection(
                address, config.conn_timeout, config.read_timeout, config.write_timeout, self._ssl_context
            )
            if config.auth_token:
                frame = connection.call(Opcode.AUTH, items=((config.auth_token.encode(), b""),))
                _raise_for_status(frame)
        except BaseException:
            if connection is not None:
                connection.close()
            with self._lock:
                pool.lent -= 1
                self._lock.notify()
            raise
        return connection

    def _give_back(self, connection: NativeConnection) -> None:
        with self._lock:
            pool = self._pools.get(connection.address)
            if pool is not None:
                pool.lent -= 1
                if not connection.broken and not self._closed:
                    pool.idle.append(connection)
                    connection = None  # type: ignore[assignment]
            self._lock.notify()
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close every idle connection; the client refuses further calls. Calls under way finish first."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._lock.notify_all()
        for pool in pools:
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()

    def __enter__(self) -> Client:
        """The client itself: ``with Client(config) as cache: ...`` closes it on exit."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the client (see :meth:`close`); exceptions propagate."""
        self.close()


# The SET flags that make it conditional (not idempotent: see the module docstring).
_CONDITIONS = native.SET_IF_ABSENT | native.SET_IF_PRESENT | native.SET_CAS


def _set_fields(
    key: bytes,
    value: Value,
    ttl: float | timedelta | None,
    only_if_absent: bool,
    only_if_present: bool,
    if_version: int | None,
    keep_ttl: bool,
) -> tuple[int, dict[str, Any]]:
    """SET's flags and frame fields, for the client and the pipeline alike."""
    flags = (
        (native.SET_IF_ABSENT if only_if_absent else 0)
        | (native.SET_IF_PRESENT if only_if_present else 0)
        | (native.SET_CAS if if_version is not None else 0)
        | (native.SET_KEEP_TTL if keep_ttl else 0)
    )
    fields = {
        "flags": flags,
        "ttl_ms": _ttl_ms(ttl),
        "version": if_version or 0,
        "items": ((key, _bytes(value, "value")),),
    }
    return flags, fields


class QueuedOperations:
    """The operations a pipeline queues, and what each reply means; the pipelines of both clients send them."""

    def __init__(self) -> None:
        self._requests: list[_Request] = []
        self._decoders: list[Callable[[Frame], Any]] = []

    def __len__(self) -> int:
        return len(self._requests)

    def _queue(self: Q, request: _Request, decode: Callable[[Frame], Any]) -> Q:
        self._requests.append(request)
        self._decoders.append(decode)
        return self

    def get(self: Q, key: Key) -> Q:
        """Queue a GET; the result is the value, or :class:`NotFoundError` (the exception instance)."""
        raw = _bytes(key, "key")

        def decode(frame: Frame) -> bytes:
            _raise_for_status(frame, raw)
            return bytes(frame.items[0][1] or b"")

        return self._queue(_Request(Opcode.GET, {"items": ((raw, b""),)}, raw, True), decode)

    def set(
        self: Q,
        key: Key,
        value: Value,
        ttl: float | timedelta | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
        if_version: int | None = None,
        keep_ttl: bool = False,
    ) -> Q:
        """As :meth:`Client.set`; the result is the new version, or the exception."""

        def decode(frame: Frame) -> int:
            _raise_for_status(frame)
            return frame.version

        raw = _bytes(key, "key")
        flags, fields = _set_fields(raw, value, ttl, only_if_absent, only_if_present, if_version, keep_ttl)
        return self._queue(_Request(Opcode.SET, fields, raw, not _CONDITIONS & flags), decode)

    def delete(self: Q, key: Key) -> Q:
        """Queue a DELETE; the result is True when the key existed, False when it did not."""

        def decode(frame: Frame) -> bool:
            if frame.status == Status.NOT_FOUND:
                return False
            _raise_for_status(frame)
            return True

        raw = _bytes(key, "key")
        return self._queue(_Request(Opcode.DEL, {"items": ((raw, b""),)}, raw, True), decode)

    def _take(self) -> tuple[list[_Request], list[Callable[[Frame], Any]]]:
        """The queued requests and their decoders; the queue starts empty again."""
        taken = self._requests, self._decoders
        self._requests, self._decoders = [], []
        return taken

    @staticmethod
    def _results(outcomes: list[Outcome], decoders: list[Callable[[Frame], Any]], raise_on_error: bool) -> list[Any]:
        results: list[Any] = []
        for outcome, decode in zip(outcomes, decoders):
            try:
                if isinstance(outcome, AegisError):
                    raise outcome
                results.append(decode(outcome))
            except AegisError as error:
                if raise_on_error:
                    raise
                results.append(error)
        return results


class Pipeline(QueuedOperations):
    """Queue operations, then send them in one write and read every reply.

    ``execute()`` returns one result per queued operation, in order. A failed
    operation's slot holds the exception instance (``NotFoundError`` for a
    missing key, ``RetriesExhaustedError`` for one that could not be
    delivered) instead of raising, so one failure does not hide the other
    results; ``execute(raise_on_error=True)`` raises the first one instead.
    Each operation is retried by the client's rules (see
    :mod:`aegiskv.client.client`): after a lost connection the idempotent ones
    are sent again, and a conditional set whose outcome is unknown keeps the
    error. Against a cluster the operations are split by the owner of their
    key, one pipelined batch per node (operations on one key are sent in
    order); those redirected or refused are sent again, to the new owner, after
    any on the same key that were answered.
    Not thread-safe: one thread queues and executes.
    """

    def __init__(self, client: Client) -> None:
        """An empty pipeline on ``client`` (:meth:`Client.pipeline` makes one)."""
        super().__init__()
        self._client = client

    def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send the queued operations and return one result per operation, in order (see the
        class docstring); the queue is empty after."""
        requests, decoders = self._take()
        if not requests:
            return []
        return self._results(self._client._run(requests), decoders, raise_on_error)
