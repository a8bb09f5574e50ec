"""The storage interface every backend implements.

A backend holds one node's whole keyspace. Keys and values are bytes; every
stored key carries a *version* (an integer that only grows across the whole
backend, so a key deleted and written again gets a larger version than before)
and an optional absolute expiry time in wall-clock milliseconds.

Thread-safety: a backend is **not** thread-safe. The node serialises every call
under its own lock (see ``aegiskv.keyspace``), which keeps the backends simple
and lets the node group several backend calls into one atomic operation
(compare-and-set, conditional writes).

Plugin authors: import these names from :mod:`aegiskv.plugin_api`, subclass
:class:`Backend`, accept ``(options, clock)`` in the constructor, and register
the class in the ``aegiskv.backends`` entry-point group.
:mod:`aegiskv.testing.backend_contract` is the suite every backend passes
(AegisKV runs it against its own); run it against yours.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

# A value handed out by a backend. Small values are ``bytes``; large ones may be
# a ``memoryview`` over the stored buffer so a GET does not copy megabytes.
Value = bytes | memoryview

# Wall-clock milliseconds. Expiry times are absolute so that a restart (or a
# replica) never extends or revives a TTL.
Clock = Callable[[], int]

NO_EXPIRY: Final = 0

# The entry-point group backends register in (aegiskv.server.plugins loads them).
BACKENDS_GROUP: Final = "aegiskv.backends"


def wall_clock_ms() -> int:
    """The wall clock in milliseconds: the :data:`Clock` a backend runs on in the server."""
    return time.time_ns() // 1_000_000


class Entry(NamedTuple):
    """One stored key as :meth:`Backend.get_entry` reports it."""

    value: Value
    version: int
    expires_at_ms: int  # NO_EXPIRY (0) when the key has no TTL


@dataclass(frozen=True)
class BackendOptions:
    """What every backend is told when it is created: the settings that mean something to any store.

    AegisKV's own backends read more (the SLRU's starting share, the write-ahead
    log's mode and segment size, the snapshot timer): those live in
    :class:`aegiskv.backends.options.BuiltinBackendOptions`, a subclass the
    server builds for its own backends only. A third-party backend is given
    exactly this class.
    """

    max_memory_bytes: int  # the budget used_bytes must stay under (bytes; the server's --max-memory)
    data_dir: str | None = None  # a directory the backend owns for files, or None (no files allowed)
    first_version: int = 1  # versions handed out start above this


@dataclass(frozen=True)
class BackendStats:
    """A backend's figures for INFO and /metrics (:meth:`Backend.stats`)."""

    keys: int
    keys_with_ttl: int
    used_bytes: int
    limit_bytes: int
    evictions: int
    expirations: int
    # Mean time left (ms) of the keys that have a TTL, estimated from a sample; 0 when
    # none has one (Redis's avg_ttl). A backend that cannot estimate it leaves 0.
    average_ttl_ms: int = 0


class StorageError(Exception):
    """Base for errors a backend reports to the caller (never a protocol violation)."""


class ValueTooLarge(StorageError):
    """The entry cannot fit under the memory limit even with everything else evicted."""


class StorageUnavailable(StorageError):
    """The backend cannot persist now (its log failed); the message says why, in one line."""


class Backend(ABC):
    """One node's keyspace. See the module docstring for the rules."""

    name: str = "abstract"
    # Seconds between automatic snapshots the server should take (0 = none).
    snapshot_interval: float = 0.0

    @abstractmethod
    def get(self, key: bytes) -> Value | None:
        """The live value of ``key`` or ``None``; counts as an access for eviction."""

    @abstractmethod
    def get_entry(self, key: bytes, touch: bool = True) -> Entry | None:
        """Value, version and expiry of ``key``; ``touch=False`` leaves eviction order alone."""

    @abstractmethod
    def put(self, key: bytes, value: bytes, expires_at_ms: int = NO_EXPIRY, version: int | None = None) -> int:
        """Store ``value`` and return its new version.

        ``version`` lets a caller impose a version (replication, recovery); it
        must be larger than any version handed out so far or the backend picks
        the next one itself. Raises :class:`ValueTooLarge` when the entry alone
        exceeds the memory limit; otherwise evicts what it must.
        """

    def apply(self, key: bytes, value: bytes, expires_at_ms: int, version: int) -> None:
        """Store an entry a shard's primary wrote, with exactly its version (replication).

        Every copy of a key must carry the version its primary gave it, or a
        compare-and-set would succeed on one copy and fail on another after a
        failover; ``last_version`` rises to at least ``version``, so this node's
        own versions stay above every version it holds. Raises ValueTooLarge
        as :meth:`put`. The default suits a backend whose ``put`` already
        keeps imposed versions as given.
        """
        self.put(key, value, expires_at_ms, version)

    @abstractmethod
    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True when a live key was removed."""

    @abstractmethod
    def set_expiry(self, key: bytes, expires_at_ms: int) -> bool:
        """Set (or with NO_EXPIRY drop) the key's expiry; False when the key is absent.

        Changing a TTL does not change the key's version: the value is the same.
        """

    @abstractmethod
    def expire_step(self, sample_size: int, budget_seconds: float) -> int:
        """Remove some expired keys, in small steps, within ``budget_seconds``.

        Never scans the whole keyspace; returns how many keys it removed.
        """

    @abstractmethod
    def flush(self) -> int:
        """Remove every key; returns how many were removed."""

    @abstractmethod
    def keys(self) -> Iterable[bytes]:
        """Every live key (a snapshot list; the caller may mutate the backend afterwards)."""

    @abstractmethod
    def key_snapshot(self) -> list[bytes]:
        """Every stored key, fast: may include keys whose TTL passed but that were not yet removed."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored keys (including expired keys not yet removed)."""

    @abstractmethod
    def stats(self) -> BackendStats:
        """Key counts, bytes used against the limit, evictions and expirations so far.

        ``used_bytes`` must stay at or under ``limit_bytes`` after every write.
        """

    def memory_bounds(self) -> tuple[int, int]:
        """(used_bytes, limit_bytes) as :meth:`stats` gives them, without its sampled figures."""
        stats = self.stats()
        return stats.used_bytes, stats.limit_bytes

    def set_memory_limit(self, limit_bytes: int) -> bool:
        """Change the memory bound while serving (CONFIG SET maxmemory); False: this backend cannot.

        Lowered, it evicts down to the new bound before returning: the server lowers it in
        small steps (aegiskv.server.live_settings), so no single call evicts for long.
        An optional method: a backend without it keeps the bound it was built with.
        """
        return False

    @property
    @abstractmethod
    def last_version(self) -> int:
        """The largest version handed out so far."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release files and threads; the backend is not used afterwards."""

    @property
    def log(self) -> WriteAheadLogLike | None:
        """The write-ahead log when this backend keeps one (the server drives its writes and syncs)."""
        return None

    def undo_unlogged(self) -> int:
        """Put back, in memory, every change whose log record could not be written (the log
        gave it up), newest first; returns how many. Caller holds the node lock. A backend
        without a log has nothing to undo."""
        return 0

    def begin_snapshot(self) -> Callable[[], str] | None:
        """Freeze a point-in-time copy (caller holds the node lock; must be quick) and return
        the job that writes it out (run it without the lock, in a worker), or None when this
        backend takes no snapshots. The job returns the snapshot's path."""
        return None


class WriteAheadLogLike(Protocol):
    """What the server needs from a backend's log (aegiskv.backends.wal_log.WriteAheadLog)."""

    mode: str
    appended_seq: int
    written_seq: int
    durable_seq: int
    records_written: int
    bytes_written: int
    syncs: int
    failure: str | None
    failures: int
    given_up: int
    undos: int

    @property
    def has_buffered(self) -> bool:
        """Records were appended that :meth:`write_out` has not yet handed to the OS."""
        ...

    @property
    def has_unlogged(self) -> bool:
        """Records were given up (never reached the OS); the backend's ``undo_unlogged`` takes them."""
        ...

    def write_out(self) -> None:
        """Hand every buffered record to the OS; a storage error gives records up and sets ``failure``."""
        ...

    def sync(self) -> int:
        """fsync what was written (from a worker thread); returns the sequence number now durable."""
        ...

    def repair(self) -> None:
        """Make a failed log writable again; raises OSError while the disk still refuses."""
        ...

    def settled_through(self, seq: int) -> int:
        """``seq`` less the given-up records at its top: only the result must still be written."""
        ...

    def undone_since(self, undos: int, seq: int) -> bool:
        """Whether a range undone after the first ``undos`` holds a record at or below ``seq``."""
        ...
