"""The WAL-backed backend: the memory SLRU plus an append-only write-ahead log.

Every change to the keyspace becomes a log record before its reply leaves the
server: writes, deletes, TTL changes, flushes, and the keys the memory backend
drops on its own (expiry, eviction), so a replay reproduces the state. On
start the log under ``<data dir>/wal/`` is replayed into memory (see
:func:`aegiskv.backends.wal_log.recover` for torn tails and corruption).

Composition: the log listens to its MemoryBackend (a
:class:`~aegiskv.backends.memory.ChangeListener`) rather than sitting in
front of it, so a change is logged whichever way it reaches memory. This
backend's own methods only pass calls on, and :attr:`WalBackend.memory`
hands the store to the node, which calls it directly: the compiled build's
fast path, which the WAL backend used to miss (an ``isinstance`` test on
MemoryBackend). The rejected alternative, the node calling memory and then
the log, would have put the log's record format and undo items in the node.

Modes (``--wal``): ``write`` hands records to the OS before the reply (a
process crash loses no acknowledged write), ``fsync`` also waits for the disk
(power loss loses none); the server does the writing and syncing, see
aegiskv.server.durability. With ``off`` this backend keeps no log (snapshots only, in
the snapshot backend).

When the log cannot be written (a full or failing disk), the records that did
not reach the OS are given up and the changes they describe are undone in
memory (:meth:`WalBackend.undo_unlogged`), so memory always holds what a
restart would replay: each change logged carries what to put back. Keys the
cache drops on its own (expiry, eviction) are not put back when their record
is given up: a replay brings back a key whose deadline passed only to drop it
again, and an evicted key that reappears after a restart holds the value last
written to it, which a cache may forget or keep.

Like every backend it is not thread-safe: the node's lock serialises calls.
"""

from __future__ import annotations

import os
import random
from typing import cast

from loguru import logger
from mypy_extensions import mypyc_attr

from aegiskv.backends.base import (
    NO_EXPIRY,
    Backend,
    BackendOptions,
    BackendStats,
    Clock,
    Entry,
    Value,
    wall_clock_ms,
)
from aegiskv.backends.file_ops import REAL_FILES, FileOps
from aegiskv.backends.memory import MemoryBackend, RangeUndo, SavedEntry
from aegiskv.backends.options import builtin_options
from aegiskv.backends.wal_format import RANGE_OFFSET, Record, RecordType
from aegiskv.backends.wal_log import RecoveryReport, WriteAheadLog, recover

WAL_MODES = ("off", "write", "fsync")


class _LogWriter:
    """Appends a record for each change its MemoryBackend tells of (a ChangeListener).

    Each record carries its undo item, ``(key, entry before)`` -- a flush's, the
    list of every key's -- which :meth:`WalBackend.undo_unlogged` puts back if
    the record never reaches the OS; a key the cache dropped on its own has none.
    """

    def __init__(self, wal: WriteAheadLog) -> None:
        self._append = wal.append

    def stored(self, key: bytes, value: bytes, version: int, expires_at_ms: int, before: SavedEntry | None) -> None:
        self._append(RecordType.PUT, key, value, version, expires_at_ms, (key, before))

    def deleted(self, key: bytes, before: SavedEntry | None) -> None:
        self._append(RecordType.DELETE, key, undo=(key, before))

    def expiry_set(self, key: bytes, expires_at_ms: int, before: SavedEntry | None) -> None:
        self._append(RecordType.EXPIRE, key, expires_at_ms=expires_at_ms, undo=(key, before))

    def flushed(self, before: list[tuple[bytes, SavedEntry | None]]) -> None:
        self._append(RecordType.FLUSH, b"", undo=before)

    def dropped(self, key: bytes) -> None:
        self._append(RecordType.DELETE, key)

    def ranged(self, key: bytes, offset: int, data: bytes, version: int, before: SavedEntry | RangeUndo | None) -> None:
        self._append(RecordType.RANGE, key, RANGE_OFFSET.pack(offset) + data, version, undo=(key, before))


# The snapshot backend, plugins and tests subclass it in interpreted code when this module is
# compiled (setup.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class WalBackend(Backend):
    name = "wal"

    def __init__(
        self,
        options: BackendOptions,
        clock: Clock = wall_clock_ms,
        rng: random.Random | None = None,
        files: FileOps = REAL_FILES,
    ) -> None:
        """``files`` makes the log's (and snapshots') writes, fsyncs and renames: tests inject faults there.

        The log's settings come from :class:`BuiltinBackendOptions`; the public
        options alone mean ``wal_mode="off"`` (no log)."""
        tuning = builtin_options(options)
        if tuning.wal_mode not in WAL_MODES:
            raise ValueError(f"wal_mode must be one of {WAL_MODES}, not {tuning.wal_mode!r}")
        if tuning.wal_mode != "off" and not options.data_dir:
            raise ValueError("a write-ahead log needs a data_dir")
        self._clock = clock
        self._files = files
        self._memory = MemoryBackend(options, clock, rng)
        self._wal: WriteAheadLog | None = None
        self.recovery = RecoveryReport()
        self._memory.begin_recovery()
        start_seq = self._load_snapshot(options)
        last_seq = start_seq
        if tuning.wal_mode != "off":
            assert options.data_dir is not None
            directory = os.path.join(options.data_dir, "wal")
            os.makedirs(directory, exist_ok=True)
            last_seq = self._replay(directory, start_seq, tuning.wal_salvage)
            self._wal = WriteAheadLog(directory, last_seq + 1, tuning.wal_segment_bytes, tuning.wal_mode, files)
            # Only now: what the replay applied is in the log already.
            self._memory.set_listener(_LogWriter(self._wal))
        # With the log open, what expired while the node was down (and what no
        # longer fits a lowered max-memory) is dropped and logged like any drop.
        expired, evicted = self._memory.finish_recovery()
        if expired or evicted:
            logger.info("after recovery: {} keys expired while down, {} evicted to fit max-memory", expired, evicted)

    # -- recovery --------------------------------------------------------------------

    def _load_snapshot(self, options: BackendOptions) -> int:
        """Hook for the snapshot backend: load the newest snapshot, return the WAL seq it covers."""
        return 0

    def _replay(self, directory: str, after_seq: int, salvage: bool) -> int:
        # The memory backend is in recovery mode: records apply as logged, with
        # their own versions; expiry and eviction wait until the end.
        memory = self._memory

        def apply(record: Record) -> None:
            kind = record.type
            if kind is RecordType.PUT:
                memory.put(record.key, record.value, record.expires_at_ms, record.version)
            elif kind is RecordType.DELETE:
                memory.delete(record.key)
            elif kind is RecordType.EXPIRE:
                memory.set_expiry(record.key, record.expires_at_ms)
            elif kind is RecordType.FLUSH:
                memory.flush()
            elif kind is RecordType.RANGE:
                (offset,) = RANGE_OFFSET.unpack_from(record.value)
                memory.write_range(record.key, offset, record.value[RANGE_OFFSET.size :], record.version)

        last_seq, self.recovery = recover(directory, apply, after_seq, salvage)
        if self.recovery.records:
            logger.info(
                "replayed {} write-ahead log records from {} segments ({} keys)",
                self.recovery.records,
                self.recovery.segments,
                len(memory),
            )
        return last_seq

    @property
    def log(self) -> WriteAheadLog | None:
        return self._wal

    @property
    def memory(self) -> MemoryBackend:
        """The store that holds the keyspace; a change made on it is logged all the same (its
        listener is the log). The node calls it directly; not in the plugin API."""
        return self._memory

    # -- the Backend interface: memory's, logged by its listener ---------------------------

    def get(self, key: bytes) -> Value | None:
        return self._memory.get(key)

    def get_entry(self, key: bytes, touch: bool = True) -> Entry | None:
        return self._memory.get_entry(key, touch)

    def put(self, key: bytes, value: bytes, expires_at_ms: int = NO_EXPIRY, version: int | None = None) -> int:
        return self._memory.put(key, value, expires_at_ms, version)

    def apply(self, key: bytes, value: bytes, expires_at_ms: int, version: int) -> None:
        self._memory.apply(key, value, expires_at_ms, version)

    def delete(self, key: bytes) -> bool:
        return self._memory.delete(key)

    def set_expiry(self, key: bytes, expires_at_ms: int) -> bool:
        return self._memory.set_expiry(key, expires_at_ms)

    def expire_step(self, sample_size: int, budget_seconds: float) -> int:
        return self._memory.expire_step(sample_size, budget_seconds)

    def flush(self) -> int:
        return self._memory.flush()

    def undo_unlogged(self) -> int:
        wal = self._wal
        if wal is None:
            return 0
        memory = self._memory
        undone = 0
        # Newest first: a key changed twice gets its first change's "before" back last.
        for item in reversed(wal.take_unlogged()):
            if item is None:
                continue  # a key the cache dropped on its own stays dropped (module docstring)
            if isinstance(item, list):  # a flush: every key it removed
                for key, saved in item:
                    memory.restore(key, saved)
            else:
                key, saved = cast("tuple[bytes, SavedEntry | RangeUndo | None]", item)
                memory.restore(key, saved)
            undone += 1
        return undone

    def keys(self) -> list[bytes]:
        return self._memory.keys()

    def key_snapshot(self) -> list[bytes]:
        return self._memory.key_snapshot()

    def __len__(self) -> int:
        return len(self._memory)

    def stats(self) -> BackendStats:
        return self._memory.stats()

    def memory_bounds(self) -> tuple[int, int]:
        return self._memory.memory_bounds()

    def set_memory_limit(self, limit_bytes: int) -> bool:
        return self._memory.set_memory_limit(limit_bytes)  # evictions are logged as deletes (the listener)

    @property
    def last_version(self) -> int:
        return self._memory.last_version

    def close(self) -> None:
        if self._wal is not None:
            self._memory.set_listener(None)  # a change after close goes unlogged, as before the log opened
            self._wal.close()
            self._wal = None

    def check(self) -> None:
        self._memory.check()
