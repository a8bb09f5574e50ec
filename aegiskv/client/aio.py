"""The AegisKV asyncio client: ``from aegiskv.client import AsyncClient, Config``.

The same operations, configuration, errors and retry rules as the threaded
:class:`aegiskv.client.Client` (its module docstring lists them), as
coroutines on asyncio streams::

    async with AsyncClient(Config(seeds=["127.0.0.1:7700"])) as client:
        await client.set("greeting", "hello", ttl=60)
        value = await client.get("greeting")

Routing and retries are not written twice: both clients drive the sans-IO
rounds of :mod:`aegiskv.client.rounds` and the route table of
:mod:`aegiskv.client.route_table`; this module only moves bytes and waits.

One client belongs to one event loop. Any number of tasks may share it: each
call borrows a connection from a per-server pool (at most ``max_conns`` per
server; a task waits for one up to ``conn_timeout``). Timeouts are asyncio
timeouts. Cancelling a call is safe: a connection that still owes a reply
when its task is cancelled is closed, never lent again, so no later call
reads a reply meant for the cancelled one. A cancelled call may still have
been applied by the server, as with any request whose reply was not read.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, overload

from aegiskv.client.aio_connection import AsyncConnection, within
from aegiskv.client.client import (
    _CONDITIONS,
    Config,
    K,
    Key,
    QueuedOperations,
    Value,
    ValueWithTTL,
    _bytes,
    _parse_address,
    _set_fields,
    _ttl_ms,
)
from aegiskv.client.errors import AegisError, AegisTimeoutError, ConnectionClosedError, ProtocolViolationError
from aegiskv.client.retry import Failure, RetryBudget
from aegiskv.client.rounds import (
    BatchRounds,
    Outcome,
    Request,
    RequestRounds,
    Step,
    busy_failure,
    raise_for_status,
    show,
)
from aegiskv.client.route_table import Address, RouteTable, refresh_due, refresh_order, table_of_reply
from aegiskv.protocols.native.codec import Frame, Opcode, Status

T = TypeVar("T")
C = TypeVar("C", bound="AsyncClient")


@dataclass
class _ServerPool:
    """Idle connections to one server, the slots lent out, and the tasks waiting for one, first come first served.

    ``lent`` counts slots: a task holding one uses a connection, or is opening
    one. A released slot goes straight to the first waiting task (with the
    connection, if it is reusable) rather than back to the pool, so a task that
    arrives later cannot take it first: waiters are served in order, and none
    waits out ``conn_timeout`` while others keep getting connections.
    """

    address: Address
    idle: list[AsyncConnection] = field(default_factory=list)
    lent: int = 0
    waiters: deque[asyncio.Future[AsyncConnection | None]] = field(default_factory=deque)

    def queued(self) -> bool:
        """Whether a task waits for a slot. Done futures at the head are dropped first: a cancelled
        waiter leaves the queue only when its task next runs, and a task arriving before then must
        not queue behind it with nobody left to hand it a slot."""
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        return bool(self.waiters)

    def release(self, connection: AsyncConnection | None) -> None:
        """A lent slot comes back, with a reusable connection or none: to the first waiter, else to the pool."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # a cancelled waiter is done
                waiter.set_result(connection)  # the slot passes on: ``lent`` stays
                return
        self.lent -= 1
        if connection is not None:
            self.idle.append(connection)

    def refuse_waiters(self, error: AegisError) -> None:
        """The client closed or the server left the list: every waiting task gets ``error``."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self.waiters.clear()


class AsyncClient:
    """See the module docstring. Also an async context manager (closes on exit)."""

    def __init__(self, config: Config | None = None) -> None:
        """A client of the servers in ``config.seeds`` (default ``Config()``); it connects lazily, on the first call,
        in the running loop."""
        self.config = config or Config()
        self._ssl_context = self.config.ssl_context()
        self._pools: dict[Address, _ServerPool] = {}
        self._order: list[Address] = []
        self._closed = False
        for seed in self.config.seeds:
            self.add_server(seed)
        self._routes: RouteTable | None = None
        # One map fetch at a time: tasks that find the map stale while one is under way wait for its answer.
        self._routes_lock = asyncio.Lock()
        self._routes_failed_at = -1e9
        # Servers that failed to answer lately (address -> when): asked for the shard map last.
        self._unreachable: dict[Address, float] = {}
        # Time and randomness of the retries; tests may replace them.
        self._clock = time.monotonic
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._rng = random.Random()

    # -- server list (no I/O: plain methods) --------------------------------------------

    def add_server(self, address: str) -> None:
        """Add ``host:port`` to the server list; already there: nothing. No I/O, so a plain method."""
        parsed = _parse_address(address)
        if parsed not in self._pools:
            self._pools[parsed] = _ServerPool(parsed)
            self._order.append(parsed)

    def remove_server(self, address: str) -> None:
        """Drop ``host:port`` from the server list, close its idle connections and fail the tasks waiting for one."""
        parsed = _parse_address(address)
        pool = self._pools.pop(parsed, None)
        if pool is None:
            raise ValueError(f"{address} is not in the server list")
        self._order.remove(parsed)
        for connection in pool.idle:
            connection.close()
        pool.idle.clear()
        pool.refuse_waiters(ConnectionClosedError(f"{address} was removed from the server list"))

    def servers(self) -> list[str]:
        """The server list, as ``host:port`` strings, in the order they were added."""
        return [f"{host}:{port}" for host, port in self._order]

    # -- operations ----------------------------------------------------------------------

    async def get(self, key: Key) -> bytes:
        """The value of ``key``; raises :class:`~aegiskv.client.NotFoundError` when it does not exist."""
        raw = _bytes(key, "key")
        frame = await self._keyed(raw, Opcode.GET, idempotent=True, items=((raw, b""),))
        raise_for_status(frame, raw)
        return bytes(frame.items[0][1] or b"")

    async def get_with_ttl(self, key: Key) -> ValueWithTTL:
        """The value of ``key`` with its TTL and version; raises
        :class:`~aegiskv.client.NotFoundError` when it does not exist."""
        raw = _bytes(key, "key")
        frame = await self._keyed(raw, Opcode.GET_TTL, idempotent=True, items=((raw, b""),))
        raise_for_status(frame, raw)
        ttl = None if frame.ttl_ms < 0 else timedelta(milliseconds=frame.ttl_ms)
        return ValueWithTTL(bytes(frame.items[0][1] or b""), ttl, frame.version)

    async def set(
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
        """As :meth:`aegiskv.client.Client.set`: returns the new version."""
        raw = _bytes(key, "key")
        flags, fields = _set_fields(raw, value, ttl, only_if_absent, only_if_present, if_version, keep_ttl)
        frame = await self._keyed(raw, Opcode.SET, idempotent=not _CONDITIONS & flags, **fields)
        raise_for_status(frame)
        return frame.version

    async def set_with_ttl(self, key: Key, value: Value, ttl: float | timedelta) -> int:
        """Store ``value`` for ``ttl`` (seconds or a ``timedelta``); returns its new version."""
        if ttl is None:
            raise ValueError("set_with_ttl needs a ttl")
        return await self.set(key, value, ttl)

    async def delete(self, key: Key) -> bool:
        """Remove ``key``; True when it existed."""
        raw = _bytes(key, "key")
        frame = await self._keyed(raw, Opcode.DEL, idempotent=True, items=((raw, b""),))
        return _existed(frame)

    async def expire(self, key: Key, ttl: float | timedelta) -> bool:
        """Give ``key`` a TTL; False when the key does not exist."""
        raw = _bytes(key, "key")
        frame = await self._keyed(raw, Opcode.EXPIRE, idempotent=True, ttl_ms=_ttl_ms(ttl), items=((raw, b""),))
        return _existed(frame)

    async def persist(self, key: Key) -> bool:
        """Remove the TTL of ``key``; False when the key does not exist."""
        raw = _bytes(key, "key")
        frame = await self._keyed(raw, Opcode.PERSIST, idempotent=True, items=((raw, b""),))
        return _existed(frame)

    async def mget(self, keys: Iterable[Key]) -> list[bytes | None]:
        """Values in the order of ``keys``; ``None`` for missing keys."""
        raw = [(_bytes(key, "key"), b"") for key in keys]
        values: list[bytes | None] = [None] * len(raw)
        for indices, frame in await self._batched(Opcode.MGET, raw):
            for index, (_, value) in zip(indices, frame.items):
                values[index] = value
        return values

    # Two overloads, not one union: see Client.mset.
    @overload
    async def mset(self, pairs: Mapping[K, Value], ttl: float | timedelta | None = None) -> int: ...

    @overload
    async def mset(self, pairs: Iterable[tuple[Key, Value]], ttl: float | timedelta | None = None) -> int: ...

    async def mset(
        self, pairs: Mapping[K, Value] | Iterable[tuple[Key, Value]], ttl: float | timedelta | None = None
    ) -> int:
        """Store every pair; returns the highest version written (atomic per node, as the threaded client)."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        raw = [(_bytes(key, "key"), _bytes(value, "value")) for key, value in items]
        parts = await self._batched(Opcode.MSET, raw, ttl_ms=_ttl_ms(ttl))
        return max((frame.version for _, frame in parts), default=0)

    async def info(self, *sections: str, server: str | None = None) -> dict[str, dict[str, Any]]:
        """INFO of ``server`` (or the first reachable one): section -> field -> value."""
        items = tuple((section.encode(), b"") for section in sections)
        frame = await self._call(Opcode.INFO, _parse_address(server) if server else None, items=items)
        raise_for_status(frame)
        return {name.decode(): json.loads(value or b"{}") for name, value in frame.items}

    async def topology(self, server: str | None = None) -> dict[str, Any]:
        """The shard map of ``server`` (or the first reachable one), as the threaded client gives it."""
        frame = await self._call(Opcode.TOPOLOGY, _parse_address(server) if server else None)
        raise_for_status(frame)
        described: dict[str, Any] = json.loads(frame.items[0][1] or b"{}")
        return described

    async def ping(self, addr: str | None = None) -> float:
        """Round-trip time in seconds to ``addr`` (or the first reachable server)."""
        started = time.perf_counter()
        frame = await self._call(Opcode.PING, _parse_address(addr) if addr else None)
        raise_for_status(frame)
        return time.perf_counter() - started

    def pipeline(self) -> AsyncPipeline:
        """A new, empty :class:`AsyncPipeline` that sends through this client."""
        return AsyncPipeline(self)

    # -- cluster routing -----------------------------------------------------------------

    async def _route_table(self) -> RouteTable | None:
        """The shard map when it spans several nodes (else None: any server will do)."""
        if not self.config.cluster_routing:
            return None
        table = self._routes
        if refresh_due(table, self._routes_failed_at, time.monotonic(), self.config.topology_refresh):
            table = await self._refresh_routes(table)
        return table if table is not None and table.spans_nodes else None

    async def _refresh_routes(self, stale: RouteTable | None, hint: Address | None = None) -> RouteTable | None:
        """Fetch the map (order: ``refresh_order``); keep the first answer. A newer table than ``stale`` wins."""
        async with self._routes_lock:
            if self._routes is not stale:
                return self._routes
            seeds = [_parse_address(seed) for seed in self.config.seeds]
            for address in refresh_order(hint, seeds, self._routes, self._unreachable):
                try:
                    frame = await self._single(address, Opcode.TOPOLOGY)
                    raise_for_status(frame)
                    self._routes = table_of_reply(frame.items[0][1], address)
                except (ConnectionClosedError, AegisTimeoutError):
                    if self._closed:
                        raise
                    self._unreachable[address] = self._clock()
                    continue
                except (AegisError, ValueError, KeyError, TypeError, IndexError):
                    continue
                self._unreachable.pop(address, None)
                return self._routes
            self._routes_failed_at = time.monotonic()
            return self._routes

    # -- the retry loop: RequestRounds and BatchRounds decide, this sends ---------------

    async def _keyed(self, key: bytes | None, opcode: int, *, idempotent: bool, **fields: Any) -> Frame:
        (outcome,) = await self._run([Request(opcode, fields, key, idempotent)])
        if isinstance(outcome, AegisError):
            raise outcome
        return outcome

    async def _call(self, opcode: int, address: Address | None, **fields: Any) -> Frame:
        """A request for no key: to ``address`` once, or to any server with retries."""
        if address is not None:
            return await self._single(address, opcode, **fields)
        return await self._keyed(None, opcode, idempotent=True, **fields)

    async def _run(self, requests: Sequence[Request]) -> list[Outcome]:
        rounds = RequestRounds(requests, self._budget(), self.config.max_redirects)
        while True:
            round_started = time.monotonic()
            table = await self._route_table()
            for address, indices in rounds.plan(table).items():
                target = address or self._pick(rounds.budget.retries)
                frames, broken = await self._exchange(target, [requests[index] for index in indices])
                if broken is not None:
                    self._unreachable[target] = self._clock()
                rounds.settle(target, indices, frames, broken)
            step = rounds.finish()
            if step is None:
                return rounds.outcomes()
            await self._next_round(step, table, round_started)

    async def _batched(
        self, opcode: int, items: list[tuple[bytes, bytes]], **fields: Any
    ) -> list[tuple[list[int], Frame]]:
        rounds = BatchRounds(items, self._budget(), self.config.max_redirects)
        while True:
            round_started = time.monotonic()
            table = await self._route_table()
            for address, indices in rounds.plan(table).items():
                target = address or self._pick(rounds.budget.retries)
                part = {**fields, "items": rounds.part(indices)}
                frames, broken = await self._exchange(target, [Request(opcode, part, None, True)])
                if rounds.settle(target, indices, frames, broken):
                    self._unreachable[target] = self._clock()
            step = rounds.finish()
            if step is None:
                return rounds.done
            await self._next_round(step, table, round_started)

    async def _next_round(self, step: Step, table: RouteTable | None, round_started: float) -> None:
        """Between rounds: follow redirects at once, or wait after a failure; then the map again."""
        if step.delay is not None:
            await self._sleep(step.delay)
            if self._closed:
                raise ConnectionClosedError("client is closed")
            current = self._routes
            if not self.config.cluster_routing or (current is not None and current.fetched_at >= round_started):
                return  # another task fetched the map since this round began
            table = current
        if self.config.cluster_routing:
            await self._refresh_routes(table, hint=step.hint)

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

    # -- plumbing ------------------------------------------------------------------------

    async def _exchange(self, address: Address, requests: Sequence[Request]) -> tuple[list[Frame], Failure | None]:
        """One attempt, as ``Client._exchange``: the replies that arrived and the failure that cut them short."""
        frames: list[Frame] = []
        refused: list[Failure] = []
        connected = False

        async def exchange(connection: AsyncConnection) -> list[Frame]:
            nonlocal connected
            connected = True
            ids = connection.send_many([(request.opcode, request.fields) for request in requests])
            await connection.flush()
            for request_id in ids:
                frame = await connection.receive(request_id)
                busy = busy_failure(frame, address)
                if busy is not None:  # refused as it was accepted: nothing was read
                    refused.append(busy)
                    break
                frames.append(frame)
                if frame.status == Status.PROTOCOL_ERROR:
                    break  # the server closes after it: nothing behind it was run
            return frames

        try:
            await self._attempt(exchange, all(request.idempotent for request in requests), address)
        except (ConnectionClosedError, AegisTimeoutError) as error:
            if not connected and self._closed:
                raise
            return frames, Failure(error, maybe_applied=connected)
        if refused:
            return frames, refused[0]
        self._unreachable.pop(address, None)
        return frames, None

    async def _attempt(
        self, action: Callable[[AsyncConnection], Awaitable[T]], idempotent: bool, address: Address
    ) -> T:
        """``action`` on a connection to ``address`` borrowed for it, given back after; no retry here."""
        connection = await self._borrow(address)
        try:
            return await action(connection)
        finally:
            # Also on cancellation: a connection that owes a reply is closed here, not pooled.
            self._give_back(connection)

    async def _single(self, address: Address, opcode: int, **fields: Any) -> Frame:
        """One request to ``address``, one attempt; its failure is raised as it is."""
        frames, failure = await self._exchange(address, [Request(opcode, fields, None, True)])
        if failure is not None:
            raise failure.error
        if not frames:
            raise ProtocolViolationError(f"{show(address)} closed the connection without a reply")
        return frames[0]

    def _pick(self, attempt: int) -> Address:
        if self._closed:
            raise ConnectionClosedError("client is closed")
        if not self._order:
            raise ConnectionClosedError("no servers configured")
        return self._order[attempt % len(self._order)]

    async def _borrow(self, address: Address) -> AsyncConnection:
        config = self.config
        if self._closed:
            raise ConnectionClosedError("client is closed")
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = _ServerPool(address)  # ping() to a server outside the list
        connection: AsyncConnection | None
        if pool.queued() or (not pool.idle and pool.lent >= config.max_conns):
            connection = await self._wait_for_slot(pool)  # behind the tasks already waiting
        else:
            # From the check to the count there is no await: no other task can take the slot.
            pool.lent += 1
            connection = pool.idle.pop() if pool.idle else None
        while connection is not None and not connection.reusable():
            connection.close()  # the server closed it while it sat idle: the next, or a new one
            connection = pool.idle.pop() if pool.idle else None
        if connection is not None:
            return connection
        opened: AsyncConnection | None = None
        try:
            opened = await AsyncConnection.open(
                address, config.conn_timeout, config.read_timeout, config.write_timeout, self._ssl_context
            )
            if config.auth_token:
                raise_for_status(await opened.call(Opcode.AUTH, items=((config.auth_token.encode(), b""),)))
        except BaseException:
            if opened is not None:
                opened.close()
            pool.release(None)
            raise
        return opened

    async def _wait_for_slot(self, pool: _ServerPool) -> AsyncConnection | None:
        """Queue for a slot of ``pool`` (with a connection, or none: open one), up to ``conn_timeout``."""
        waiter: asyncio.Future[AsyncConnection | None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        try:
            return await within(self.config.conn_timeout, waiter)
        except BaseException as error:
            # Handed a slot just as the time ran out or the task was cancelled: pass it on, or it is lost.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                pool.release(waiter.result())
            if isinstance(error, asyncio.TimeoutError) and not isinstance(error, AegisError):
                raise AegisTimeoutError(
                    f"no free connection to {show(pool.address)} within {self.config.conn_timeout}s"
                ) from None
            raise
        finally:
            if waiter in pool.waiters:
                pool.waiters.remove(waiter)

    def _give_back(self, connection: AsyncConnection) -> None:
        pool = self._pools.get(connection.address)
        if pool is None:  # its server left the list while it was lent
            connection.close()
        elif self._closed or not connection.reusable():
            connection.close()  # owes a reply (cancelled), broken, or the client closed
            pool.release(None)
        else:
            pool.release(connection)

    async def close(self) -> None:
        """Close every idle connection; calls under way fail with ConnectionClosedError or finish first."""
        self._closed = True
        for pool in list(self._pools.values()):
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()
            pool.refuse_waiters(ConnectionClosedError("client is closed"))
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def __aenter__(self: C) -> C:
        """The client itself: ``async with AsyncClient(config) as cache: ...`` closes it on exit."""
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Close the client (see :meth:`close`); exceptions propagate."""
        await self.close()


def _existed(frame: Frame) -> bool:
    """DEL, EXPIRE and PERSIST: True when the key existed, False when it did not."""
    if frame.status == Status.NOT_FOUND:
        return False
    raise_for_status(frame)
    return True


class AsyncPipeline(QueuedOperations):
    """As :class:`aegiskv.client.Pipeline`: queue ``get``/``set``/``delete``, then ``await execute()``.

    The same queue, the same results (an exception instance in a failed
    operation's slot unless ``raise_on_error``), the same retry rules. One
    task queues and executes.
    """

    def __init__(self, client: AsyncClient) -> None:
        """An empty pipeline on ``client`` (:meth:`AsyncClient.pipeline` makes one)."""
        super().__init__()
        self._client = client

    async def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send the queued operations and return one result per operation, in order; the queue is empty after."""
        requests, decoders = self._take()
        if not requests:
            return []
        return self._results(await self._client._run(requests), decoders, raise_on_error)
