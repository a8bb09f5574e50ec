"""The AegisKV Python client.

``Client(Config(seeds=["127.0.0.1:7700"]))`` connects lazily. It is safe to
share between threads: each call borrows a connection from a per-server pool
(at most ``max_conns`` per server; a caller waits for one when all are busy,
up to ``conn_timeout``).

Retries: operations whose repetition cannot change their outcome (reads,
DEL, unconditional SET/MSET, EXPIRE, PERSIST, PING, INFO) are retried on the
next server after a lost connection or a timeout, up to ``max_retries`` extra
attempts; then :class:`RetriesExhaustedError` is raised with the last failure
as its cause. Conditional sets (only-if-absent, only-if-present, compare-and-set)
are never retried: the first attempt may have been applied.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from aegiskv.client.connection import NativeConnection
from aegiskv.client.errors import (
    AegisError,
    AegisTimeoutError,
    AuthenticationError,
    ConditionNotMetError,
    ConnectionClosedError,
    MovedError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolViolationError,
    RateLimitedError,
    RetriesExhaustedError,
    ServerError,
    StorageFailedError,
    TryAgainError,
    VersionMismatchError,
)
from aegiskv.client.route_table import RouteTable, parse_moved
from aegiskv.net.tls import client_context
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, Opcode, Status

Key = bytes | str
Value = bytes | str
T = TypeVar("T")


@dataclass
class Config:
    """Client settings. Timeouts are seconds."""

    seeds: Sequence[str] = ("127.0.0.1:7700",)
    max_conns: int = 8  # per server
    conn_timeout: float = 1.0
    read_timeout: float = 2.0
    write_timeout: float = 2.0
    max_retries: int = 2
    auth_token: str | None = None
    # TLS: an ssl.SSLContext of your own, or the simple form below (CA to trust,
    # and a certificate and key to present when the server wants mutual TLS).
    tls: ssl.SSLContext | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Cluster routing: keys go straight to their shard's primary, from a shard map
    # fetched from any seed and refreshed after a redirect or this many seconds.
    cluster_routing: bool = True
    topology_refresh: float = 30.0
    max_redirects: int = 5

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
        for name in ("conn_timeout", "read_timeout", "write_timeout", "topology_refresh"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Config.{name} must be positive")


# After a failed shard-map fetch, keys go to any server for this long before the next try.
_TOPOLOGY_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class ValueWithTTL:
    value: bytes
    ttl: timedelta | None  # None: the key does not expire
    version: int


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


def _raise_for_status(frame: Frame, key: bytes | None = None) -> None:
    status = frame.status
    if status == Status.OK:
        return
    if status == Status.NOT_FOUND:
        raise NotFoundError(f"key {key!r} not found" if key is not None else "not found")
    if status == Status.NOT_STORED:
        raise ConditionNotMetError("condition not met; nothing stored")
    if status == Status.VERSION_MISMATCH:
        raise VersionMismatchError(f"version mismatch (current version {frame.version})", frame.version)
    code, message = "ERROR", f"status {status}"
    if frame.items:
        code = frame.items[0][0].decode("utf-8", "replace")
        message = (frame.items[0][1] or b"").decode("utf-8", "replace")
    if status in (Status.NOAUTH, Status.AUTH_FAILED):
        raise AuthenticationError(message, code)
    if status == Status.RATE_LIMITED:
        raise RateLimitedError(message, code)
    if status == Status.OUT_OF_MEMORY:
        raise OutOfMemoryError(message, code)
    if status == Status.STORAGE_FAILED:
        raise StorageFailedError(message, code)
    if status == Status.TRY_AGAIN:
        raise TryAgainError(message, code)
    if status == Status.BUSY:
        raise ConnectionClosedError(f"server refused the connection: {message}")
    if status == Status.PROTOCOL_ERROR:
        raise ProtocolViolationError(f"server reported a protocol error: {code}: {message}")
    raise ServerError(message, code)


class Client:
    """See the module docstring. Also a context manager (closes on exit)."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self._ssl_context = self.config.ssl_context()
        self._lock = threading.Condition()
        self._pools: dict[tuple[str, int], _ServerPool] = {}
        self._order: list[tuple[str, int]] = []
        self._closed = False
        for seed in self.config.seeds:
            self.add_server(seed)
        self._routes: RouteTable | None = None
        self._routes_lock = threading.Lock()
        self._routes_failed_at = -1e9

    # -- server list -----------------------------------------------------------------

    def add_server(self, address: str) -> None:
        parsed = _parse_address(address)
        with self._lock:
            if parsed not in self._pools:
                self._pools[parsed] = _ServerPool(parsed)
                self._order.append(parsed)

    def remove_server(self, address: str) -> None:
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
        with self._lock:
            return [f"{host}:{port}" for host, port in self._order]

    # -- operations ------------------------------------------------------------------

    def get(self, key: Key) -> bytes:
        raw = _bytes(key, "key")
        frame = self._keyed(raw, Opcode.GET, idempotent=True, items=((raw, b""),))
        _raise_for_status(frame, raw)
        return bytes(frame.items[0][1] or b"")

    def get_with_ttl(self, key: Key) -> ValueWithTTL:
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
        """
        flags = (
            (native.SET_IF_ABSENT if only_if_absent else 0)
            | (native.SET_IF_PRESENT if only_if_present else 0)
            | (native.SET_CAS if if_version is not None else 0)
            | (native.SET_KEEP_TTL if keep_ttl else 0)
        )
        raw = _bytes(key, "key")
        frame = self._keyed(
            raw,
            Opcode.SET,
            idempotent=not flags,
            flags=flags,
            ttl_ms=_ttl_ms(ttl),
            version=if_version or 0,
            items=((raw, _bytes(value, "value")),),
        )
        _raise_for_status(frame)
        return frame.version

    def set_with_ttl(self, key: Key, value: Value, ttl: float | timedelta) -> int:
        """Store ``value`` for ``ttl`` (seconds or a ``timedelta``)."""
        if ttl is None:
            raise ValueError("set_with_ttl needs a ttl")
        return self.set(key, value, ttl)

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True when it existed."""
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

    def mset(
        self, pairs: Mapping[Key, Value] | Iterable[tuple[Key, Value]], ttl: float | timedelta | None = None
    ) -> int:
        """Store every pair; returns the highest version written.

        Atomic on one node. In a cluster the pairs are split by owner and each
        node stores its part atomically; parts on different nodes are not one unit.
        """
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        raw = [(_bytes(key, "key"), _bytes(value, "value")) for key, value in items]
        return max((frame.version for _, frame in self._batched(Opcode.MSET, raw, ttl_ms=_ttl_ms(ttl))), default=0)

    def info(self, *sections: str, server: str | None = None) -> dict[str, dict[str, Any]]:
        """INFO of ``server`` (or the first reachable one): section -> field -> value.

        ``sections`` as Redis's INFO takes them (none: the default ones; ``shards``
        only by name). The fields are those the RESP port's INFO prints, with
        their types: ``info("stats")["stats"]["keyspace_hits"]`` is an int, and
        ``info("keyspace")["keyspace"]["db0"]`` a dict (absent with no keys).
        """
        frame = self._call(
            Opcode.INFO,
            idempotent=True,
            address=_parse_address(server) if server else None,
            items=tuple((section.encode(), b"") for section in sections),
        )
        _raise_for_status(frame)
        return {name.decode(): json.loads(value or b"{}") for name, value in frame.items}

    def topology(self, server: str | None = None) -> dict[str, Any]:
        """The shard map of ``server`` (or the first reachable one), as ``ShardMap.describe()`` gives it.

        Keys: ``epoch``, ``slots``, ``shards`` (each with its slot range and
        replica set, primary first) and ``nodes`` (client and RESP address per
        node id; an empty host means "the host you reached this node at").
        """
        frame = self._call(Opcode.TOPOLOGY, idempotent=True, address=_parse_address(server) if server else None)
        _raise_for_status(frame)
        described: dict[str, Any] = json.loads(frame.items[0][1] or b"{}")
        return described

    def ping(self, addr: str | None = None) -> float:
        """Round-trip time in seconds to ``addr`` (or the first reachable server)."""
        started = time.perf_counter()
        frame = self._call(Opcode.PING, idempotent=True, address=_parse_address(addr) if addr else None)
        _raise_for_status(frame)
        return time.perf_counter() - started

    def pipeline(self) -> Pipeline:
        return Pipeline(self)

    # -- cluster routing ---------------------------------------------------------------

    def _route_table(self) -> RouteTable | None:
        """The shard map when it spans several nodes (else None: any server will do)."""
        if not self.config.cluster_routing:
            return None
        table = self._routes
        now = time.monotonic()
        stale = table is None or now - table.fetched_at >= self.config.topology_refresh
        # After a failed fetch, go on with what we have for a moment instead of
        # asking every known server again on every request.
        if stale and now - self._routes_failed_at >= _TOPOLOGY_RETRY_SECONDS:
            table = self._refresh_routes(table)
        return table if table is not None and table.spans_nodes else None

    def _refresh_routes(self, stale: RouteTable | None, hint: tuple[str, int] | None = None) -> RouteTable | None:
        """Fetch the shard map from ``hint``, then the seeds, then the nodes we know; keep the first answer.

        ``stale`` is the table the caller found wanting: when another thread
        replaced it while this one waited for the lock, the newer one is used.
        """
        with self._routes_lock:
            if self._routes is not stale:
                return self._routes
            known = self._routes.addresses if self._routes is not None else []
            candidates = ([hint] if hint else []) + [_parse_address(seed) for seed in self.config.seeds] + known
            for address in dict.fromkeys(candidates):
                try:
                    frame = self._attempt(lambda c: c.call(Opcode.TOPOLOGY), False, address)
                    _raise_for_status(frame)
                    self._routes = RouteTable(json.loads(frame.items[0][1] or b"{}"), address)
                    return self._routes
                except (AegisError, ValueError, KeyError, TypeError, IndexError):
                    continue
            self._routes_failed_at = time.monotonic()
            return self._routes

    def _keyed(self, key: bytes, opcode: int, *, idempotent: bool, **fields: Any) -> Frame:
        """One request for ``key``, sent to its owner; redirects and dead owners refresh the map."""
        override: tuple[str, int] | None = None
        for redirect in range(self.config.max_redirects + 1):
            table = self._route_table()
            address = override or (table.owner(key) if table is not None else None)
            try:
                frame = self._call(opcode, idempotent=idempotent, address=address, **fields)
            except (ConnectionClosedError, AegisTimeoutError, RetriesExhaustedError):
                # The owner may have died and the map moved on: refresh, try again (if safe).
                if address is None or not idempotent or redirect == self.config.max_redirects:
                    raise
                self._refresh_routes(table)
                override = None
                continue
            if frame.status != Status.MOVED:
                return frame
            override = self._follow(frame)
        raise self._moved_error(frame)

    def _batched(self, opcode: int, items: list[tuple[bytes, bytes]], **fields: Any) -> list[tuple[list[int], Frame]]:
        """MGET/MSET split by owner: (indices into ``items``, reply frame) per part, in no particular order."""
        done: list[tuple[list[int], Frame]] = []
        pending = list(range(len(items)))
        unreachable: AegisError | None = None
        for _round in range(self.config.max_redirects + 1):
            if not pending:
                return done
            table = self._route_table()
            groups: dict[tuple[str, int] | None, list[int]] = {}
            for index in pending:
                owner = table.owner(items[index][0]) if table is not None else None
                groups.setdefault(owner, []).append(index)
            pending = []
            for address, indices in groups.items():
                part = tuple(items[index] for index in indices)
                try:
                    frame = self._call(opcode, idempotent=True, address=address, items=part, **fields)
                except (ConnectionClosedError, AegisTimeoutError, RetriesExhaustedError) as error:
                    if address is None:
                        raise
                    unreachable = error
                    self._refresh_routes(table)
                    pending.extend(indices)
                    continue
                if frame.status == Status.MOVED:
                    self._follow(frame)
                    pending.extend(indices)
                    continue
                _raise_for_status(frame)
                done.append((indices, frame))
        if pending:
            if unreachable is not None:
                raise unreachable
            raise MovedError("keys kept moving while the cluster's map changed", ("", 0), 0, 0)
        return done

    def _follow(self, frame: Frame) -> tuple[str, int] | None:
        """A MOVED reply: refresh the map from the new owner; returns where to send next."""
        try:
            address, _epoch, _slot = parse_moved((frame.items[0][1] or b"").decode())
        except (ValueError, IndexError):
            raise ProtocolViolationError(f"unreadable MOVED reply: {frame.items!r}") from None
        self._refresh_routes(self._routes, hint=address if address[0] else None)
        return address if address[0] else None

    @staticmethod
    def _moved_error(frame: Frame) -> MovedError:
        message = (frame.items[0][1] or b"").decode("utf-8", "replace")
        address, epoch, slot = parse_moved(message)
        return MovedError(f"still redirected after retries: {message}", address, epoch, slot)

    # -- plumbing --------------------------------------------------------------------

    def _call(self, opcode: int, *, idempotent: bool, address: tuple[str, int] | None = None, **fields: Any) -> Frame:
        return self._attempt(lambda connection: connection.call(opcode, **fields), idempotent, address)

    def _attempt(
        self, action: Callable[[NativeConnection], T], idempotent: bool, address: tuple[str, int] | None = None
    ) -> T:
        attempts = 1 + (self.config.max_retries if idempotent else 0)
        last_error: AegisError | None = None
        for attempt in range(attempts):
            target = address or self._pick(attempt)
            try:
                connection = self._borrow(target)
            except (ConnectionClosedError, AegisTimeoutError) as error:
                last_error = error
                continue
            try:
                result = action(connection)
            except (ConnectionClosedError, AegisTimeoutError) as error:
                last_error = error
                self._give_back(connection)
                continue
            except BaseException:
                self._give_back(connection)
                raise
            self._give_back(connection)
            return result
        assert last_error is not None
        if attempts == 1:
            raise last_error
        raise RetriesExhaustedError(f"gave up after {attempts} attempts: {last_error}") from last_error

    def _pick(self, attempt: int) -> tuple[str, int]:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            if not self._order:
                raise ConnectionClosedError("no servers configured")
            return self._order[attempt % len(self._order)]

    def _borrow(self, address: tuple[str, int]) -> NativeConnection:
        config = self.config
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            pool = self._pools.get(address)
            if pool is not None and pool.idle:  # the common case: no waiting, no predicate
                pool.lent += 1
                return pool.idle.pop()
            if pool is None:
                pool = self._pools[address] = _ServerPool(address)  # ping() to a server outside the list
            if not self._lock.wait_for(
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
            return connection
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
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._lock.notify_all()
        for pool in pools:
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Pipeline:
    """Queue operations, then send them in one write and read every reply.

    ``execute()`` returns one result per queued operation, in order. A failed
    operation's slot holds the exception instance (``NotFoundError`` for a
    missing key) instead of raising, so one miss does not hide the other
    results; ``execute(raise_on_error=True)`` raises the first one instead.
    Pipelines are retried as a whole only when every operation is idempotent.
    Against a cluster the operations are split by the owner of their key, one
    pipelined batch per node (operations on one key keep their order); one that
    meets a redirect is sent again on its own to the new owner.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._requests: list[tuple[int, dict[str, Any]]] = []
        self._decoders: list[Callable[[Frame], Any]] = []
        self._idempotent = True

    def __len__(self) -> int:
        return len(self._requests)

    def _queue(self, opcode: int, decode: Callable[[Frame], Any], idempotent: bool = True, **fields: Any) -> Pipeline:
        self._requests.append((opcode, fields))
        self._decoders.append(decode)
        self._idempotent = self._idempotent and idempotent
        return self

    def get(self, key: Key) -> Pipeline:
        raw = _bytes(key, "key")

        def decode(frame: Frame) -> bytes:
            _raise_for_status(frame, raw)
            return bytes(frame.items[0][1] or b"")

        return self._queue(Opcode.GET, decode, items=((raw, b""),))

    def set(self, key: Key, value: Value, ttl: float | timedelta | None = None) -> Pipeline:
        def decode(frame: Frame) -> int:
            _raise_for_status(frame)
            return frame.version

        return self._queue(
            Opcode.SET, decode, ttl_ms=_ttl_ms(ttl), items=((_bytes(key, "key"), _bytes(value, "value")),)
        )

    def delete(self, key: Key) -> Pipeline:
        def decode(frame: Frame) -> bool:
            if frame.status == Status.NOT_FOUND:
                return False
            _raise_for_status(frame)
            return True

        return self._queue(Opcode.DEL, decode, items=((_bytes(key, "key"), b""),))

    def execute(self, raise_on_error: bool = False) -> list[Any]:
        if not self._requests:
            return []
        requests, decoders = self._requests, self._decoders
        self._requests, self._decoders, idempotent, self._idempotent = [], [], self._idempotent, True
        client = self._client
        table = client._route_table()
        if table is None:
            frames = client._attempt(lambda connection: connection.call_many(requests), idempotent)
        else:
            frames = self._execute_by_owner(table, requests, idempotent)
        results: list[Any] = []
        for frame, decode in zip(frames, decoders):
            try:
                results.append(decode(frame))
            except AegisError as error:
                if raise_on_error:
                    raise
                results.append(error)
        return results

    def _execute_by_owner(
        self, table: RouteTable, requests: list[tuple[int, dict[str, Any]]], idempotent: bool
    ) -> list[Frame]:
        client = self._client
        groups: dict[tuple[str, int] | None, list[int]] = {}
        for index, (_opcode, fields) in enumerate(requests):
            groups.setdefault(table.owner(fields["items"][0][0]), []).append(index)
        frames: list[Frame | None] = [None] * len(requests)
        for address, indices in groups.items():
            part = [requests[index] for index in indices]

            def send_part(connection: NativeConnection, part: list[tuple[int, dict[str, Any]]] = part) -> list[Frame]:
                return connection.call_many(part)

            for index, answer in zip(indices, client._attempt(send_part, idempotent, address)):
                frames[index] = answer
        settled: list[Frame] = []
        for (opcode, fields), frame in zip(requests, frames):
            assert frame is not None
            if frame.status == Status.MOVED:
                # Not executed where it was sent: safe to send again, to the owner.
                settled.append(client._keyed(fields["items"][0][0], opcode, idempotent=idempotent, **fields))
            else:
                settled.append(frame)
        return settled
