"""The workload: unique-key SETs at a steady rate, every request recorded; a reader; read-back.

Keys rotate over ``units``: hash tags chosen so that unit ``i`` lands in slot
range ``i`` of ``units`` equal ranges, and write ``n`` goes to unit
``n mod units``. Every unit (so every shard that holds one) is then written at
the same steady rate, ``rate / units`` per second, which is what makes a
per-shard "writable again at" time measurable to a fraction of a second
instead of depending on when a random key next happens to land there.

A :class:`Write` records key, value, slot, the writer's side (client host),
send and completion times (``time.monotonic()``), the outcome (ok, or the
error's type and text) and the node whose reply was read (its IP mapped to a
node name) -- the node that *acknowledged*, which the stale-acknowledgement
check needs. redis-py tells it through a ``RedisCluster`` subclass that notes
the node of each attempt; the native client through a ``Client`` subclass that
notes which connection answered.

Writers run in threads inside a client host's namespace (never the root
namespace). Pacing is open-loop against a shared schedule: writer threads
take the next index when it is due; when every thread is stuck behind a dead
node the schedule slips instead of bursting afterwards (at most
``max_lag`` seconds of backlog is kept).
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient

from aegiskv.client import Client, Config, NotFoundError
from aegiskv.client.connection import NativeConnection
from aegiskv.cluster.slots import SLOTS, key_slot
from tests.faults.netns import Host

_answered = threading.local()  # .host: the address whose reply this thread read last; .sent: when that attempt left


def _note_answer(host: str, sent: float) -> None:
    _answered.host = host
    _answered.sent = sent


def last_answer() -> str | None:
    return getattr(_answered, "host", None)


def last_attempt_sent() -> float | None:
    """When the attempt whose reply this thread read last was sent (a retry leaves after the first)."""
    return getattr(_answered, "sent", None)


def forget_answer() -> None:
    _answered.host = None
    _answered.sent = None


class RecordingRedisCluster(RedisClusterClient):
    """redis-py's ``RedisCluster``, noting the node each attempt goes to (redirects included).

    Every attempt of a command asks ``get_redis_connection(node)`` for the node
    it is about to send to (redis-py 7 and 8 alike), so after a command returns,
    the node noted last is the one whose reply was read.
    """

    def get_redis_connection(self, node: ClusterNode) -> Any:
        _note_answer(node.host, time.monotonic())
        return super().get_redis_connection(node)


class RecordingClient(Client):
    """The native client, noting which server answered each successful exchange."""

    def _attempt(self, action: Callable[[NativeConnection], Any], idempotent: bool, address: Any = None) -> Any:
        def noted(connection: NativeConnection) -> Any:
            sent = time.monotonic()
            result = action(connection)
            _note_answer(connection.address[0], sent)
            return result

        return super()._attempt(noted, idempotent, address)


class KeyValueClient(Protocol):
    def set(self, key: bytes, value: bytes) -> None: ...

    def get(self, key: bytes) -> bytes | None: ...

    def read_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def close(self) -> None: ...


class RespClient:
    """redis-py ``RedisCluster``; ``options`` go to its constructor (library defaults otherwise)."""

    def __init__(self, seeds: Sequence[tuple[str, int]], options: dict[str, Any] | None = None) -> None:
        self.client = RecordingRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            **(options or {}),
        )

    def set(self, key: bytes, value: bytes) -> None:
        if self.client.set(key, value) is not True:
            raise redis.ResponseError("SET did not answer OK")

    def get(self, key: bytes) -> bytes | None:
        value = self.client.get(key)
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    def read_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return list(self.client.mget_nonatomic(list(keys)))

    def close(self) -> None:
        self.client.close()


class NativeClient:
    """``aegiskv.client.Client`` with cluster routing; ``options`` are ``Config`` fields (defaults otherwise)."""

    def __init__(self, seeds: Sequence[str], options: dict[str, Any] | None = None) -> None:
        self.client = RecordingClient(Config(seeds=list(seeds), **(options or {})))

    def set(self, key: bytes, value: bytes) -> None:
        self.client.set(key, value)

    def get(self, key: bytes) -> bytes | None:
        try:
            return self.client.get(key)
        except NotFoundError:
            return None

    def read_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.client.mget(keys)

    def close(self) -> None:
        self.client.close()


ClientFactory = Callable[[], KeyValueClient]


def unit_tags(units: int) -> list[tuple[bytes, int]]:
    """``units`` hash tags, the i-th in the i-th of ``units`` equal slot ranges: (tag, slot)."""
    if not 1 <= units <= SLOTS:
        raise ValueError(f"units must be 1..{SLOTS}")
    tags: list[tuple[bytes, int]] = []
    for unit in range(units):
        low, high = unit * SLOTS // units, (unit + 1) * SLOTS // units
        for attempt in itertools.count():
            tag = b"u%d.%d" % (unit, attempt)
            slot = key_slot(tag)
            if low <= slot < high:
                tags.append((tag, slot))
                break
    return tags


@dataclass(slots=True)
class Write:
    index: int  # the side's write number (the schedule's index)
    side: str  # the client host the writer ran on
    writer: str
    key: bytes
    value: bytes
    slot: int
    sent: float
    done: float = 0.0
    ok: bool = False
    error: str | None = None
    node: str | None = None  # who answered (node name), when known
    # When the attempt that was answered left, when known: later than ``sent`` if the client
    # retried (a request held by a stopped node, refused when it woke, then sent again).
    attempt_sent: float | None = None


@dataclass(slots=True)
class Read:
    side: str
    key: bytes
    expected: bytes
    acked_at: float  # when the write of this key was acknowledged
    sent: float
    done: float = 0.0
    value: bytes | None = None
    error: str | None = None


class Schedule:
    """Shared pacing: index ``n`` is due at ``start + n / rate``; slips instead of bursting."""

    def __init__(self, rate: float, max_lag: float = 0.5) -> None:
        self.rate = rate
        self.max_lag = max_lag
        self.base = time.monotonic()
        self.count = 0
        self.lock = threading.Lock()

    def take(self) -> tuple[int, float]:
        with self.lock:
            index = self.count
            self.count += 1
            due = self.base + index / self.rate
            now = time.monotonic()
            if now - due > self.max_lag:
                self.base = now - index / self.rate
                due = now
        return index, due


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


@dataclass
class Workload:
    """Writers (and optionally readers) on client hosts; ``start()``, then ``stop()``; records in ``writes``."""

    hosts: Sequence[Host]
    factory: Callable[[Host], KeyValueClient]
    node_of_host: Callable[[str], str | None]
    rate: float = 400.0
    writers_per_host: int = 4
    units: int = 64
    read_rate: float = 0.0  # reads per second per host of keys already acknowledged; 0 = no reader
    run_id: str = field(default_factory=lambda: f"{random.randrange(16**6):06x}")
    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tags = unit_tags(self.units)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._schedules: dict[str, Schedule] = {}
        self._acked: list[Write] = []  # for the reader: acknowledged writes, in order

    def key_for(self, side: str, index: int) -> tuple[bytes, int]:
        """The key of a side's ``index``-th write (unique per run) and its slot."""
        tag, slot = self.tags[index % len(self.tags)]
        return b"{%s}:%s:%s:%d" % (tag, self.run_id.encode(), side.encode(), index), slot

    def start(self) -> None:
        per_host = self.rate / len(self.hosts)
        for host in self.hosts:
            schedule = Schedule(per_host)
            self._schedules[host.name] = schedule
            for number in range(self.writers_per_host):
                name = f"{host.name}/w{number}"
                self._threads.append(host.thread(functools.partial(self._write_loop, host, name, schedule), name))
            if self.read_rate > 0:
                name = f"{host.name}/reader"
                self._threads.append(host.thread(functools.partial(self._read_loop, host), name))

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            raise RuntimeError(f"writer threads still blocked after {timeout}s: {stuck}")

    def _write_loop(self, host: Host, name: str, schedule: Schedule) -> None:
        client = self.factory(host)
        try:
            while not self._stop.is_set():
                index, due = schedule.take()
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                key, slot = self.key_for(host.name, index)
                value = b"v%d" % index
                forget_answer()
                record = Write(index, host.name, name, key, value, slot, time.monotonic())
                try:
                    client.set(key, value)
                    record.ok = True
                except Exception as error:  # every failure is data: recorded, never raised
                    record.error = describe_error(error)
                record.done = time.monotonic()
                answered = last_answer()
                record.node = self.node_of_host(answered) if answered else None
                record.attempt_sent = last_attempt_sent()
                self.writes.append(record)  # list.append is atomic under the GIL
                if record.ok:
                    self._acked.append(record)
        finally:
            client.close()

    def _read_loop(self, host: Host) -> None:
        client = self.factory(host)
        rng = random.Random()
        interval = 1.0 / self.read_rate
        try:
            while not self._stop.wait(interval):
                # Keys acknowledged at least 0.1 s ago: the reply certainly left the node.
                horizon = time.monotonic() - 0.1
                candidates = self._acked
                count = len(candidates)
                while count and candidates[count - 1].done > horizon:
                    count -= 1
                if not count:
                    continue
                target = candidates[rng.randrange(count)]
                record = Read(host.name, target.key, target.value, target.done, time.monotonic())
                try:
                    record.value = client.get(target.key)
                except Exception as error:
                    record.error = describe_error(error)
                record.done = time.monotonic()
                self.reads.append(record)
        finally:
            client.close()


def read_back(
    host: Host,
    factory: Callable[[Host], KeyValueClient],
    keys: Iterable[bytes],
    *,
    batch: int = 200,
    attempts: int = 5,
) -> tuple[dict[bytes, bytes | None], dict[bytes, str]]:
    """Every key's value (None = not found), read from ``host``; keys that kept failing with their last error."""
    pending = list(dict.fromkeys(keys))

    def read_all() -> tuple[dict[bytes, bytes | None], dict[bytes, str]]:
        found: dict[bytes, bytes | None] = {}
        failures: dict[bytes, str] = {}
        client = factory(host)
        try:
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                for attempt in range(attempts):
                    try:
                        for key, value in zip(chunk, client.read_many(chunk)):
                            found[key] = value
                            failures.pop(key, None)
                        break
                    except Exception as error:
                        for key in chunk:
                            failures[key] = describe_error(error)
                        time.sleep(0.2 * (attempt + 1))
        finally:
            client.close()
        return found, failures

    return host.run(read_all, timeout=600)
