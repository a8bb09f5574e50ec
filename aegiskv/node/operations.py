"""The node's operations: what GET, SET, DEL, EXPIRE, ... mean, written once.

Every protocol (native, RESP) parses its own syntax and then calls these
methods, so the semantics live in one place. Methods are thread-safe: one lock
serialises access to the backend. The reactor calls them inline for the fast
in-memory path and workers call them for batches; with the GIL there is no
parallelism to lose, and an uncontended lock costs about 0.1 microseconds.

Times given to this layer are relative milliseconds (TTL) or absolute
wall-clock milliseconds (``*_at``); the backend only ever sees absolute
deadlines, so a restart or a replica never extends a TTL.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Final, NamedTuple, Protocol

from aegiskv.backends.base import (
    NO_EXPIRY,
    Backend,
    BackendStats,
    Clock,
    Entry,
    StorageUnavailable,
    Value,
    ValueTooLarge,
    wall_clock_ms,
)
from aegiskv.backends.file_ops import describe_error
from aegiskv.backends.memory import GROWABLE_MIN, MemoryBackend, entry_cost, stored_cost
from aegiskv.cluster.anti_entropy import entry_hash
from aegiskv.cluster.replication import RANGE_HEADER, Change, Op
from aegiskv.cluster.slots import ShardMapper, hash_tag, key_slot
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node import bit_strings, dump_payload, lcs, long_double
from aegiskv.node.handoff_lock import HandoffLock, new_handoff_lock
from aegiskv.node.pattern import glob_match
from aegiskv.node.scan_cursors import ScanCursors, snapshot_budget


class ChangeFeed(Protocol):
    """What the node tells of each change it makes (aegiskv.server.replicas.ReplicaManager listens).

    Called with the node lock held, on whichever thread runs the command, after
    the backend accepted the change; it must not block.
    """

    def put(self, key: bytes, value: bytes, version: int, expires_at_ms: int, op: int = Op.PUT) -> None:
        """A write (``op`` PUT), or a large value's APPEND or SETRANGE (``op`` RANGE, ``value`` as
        aegiskv.cluster.replication.Op.RANGE describes it)."""
        ...

    def delete(self, key: bytes) -> None: ...

    def expire(self, key: bytes, expires_at_ms: int) -> None: ...

    def flush_shard(self, shard: int) -> None: ...

    def led_shards(self) -> set[int]:
        """The shards this node leads: FLUSHALL removes their keys only."""
        ...


class Condition(enum.Enum):
    ALWAYS = "always"
    IF_ABSENT = "if_absent"  # NX
    IF_PRESENT = "if_present"  # XX


class ExpireCondition(enum.Enum):
    """EXPIRE options (Redis 7): apply the new deadline only if ..."""

    ALWAYS = "always"
    NX = "nx"  # ... the key has no TTL
    XX = "xx"  # ... the key has a TTL
    GT = "gt"  # ... the new deadline is later (no TTL counts as infinitely late)
    LT = "lt"  # ... the new deadline is earlier
    XX_LT = "xx+lt"  # ... the key has a TTL and the new deadline is earlier (XX GT is GT already)


class SetResult(NamedTuple):
    stored: bool
    version: int  # the new version when stored; the current one (0 = absent) when not
    old_value: Value | None  # only filled when asked for (SET ... GET)


class KeyspaceLimits(NamedTuple):
    max_key_bytes: int
    max_value_bytes: int
    max_batch_keys: int


# Batch operations (MGET, MSET, DEL of many keys) let waiting threads take the
# lock after every this many keys. Large batches run in the worker pool so the
# reactor can serve other clients meanwhile; if a batch held the lock throughout,
# the reactor would block on the lock instead and nothing would be gained (see
# aegiskv/node/handoff_lock.py for why the handoff has to be explicit).
BATCH_CHUNK: Final = 256

# LCS builds a table of (len(a) + 1) * (len(b) + 1) cells in Python, about ten million a second
# in the worker pool: this many (two strings of 2 KiB) take well under a second.
LCS_MAX_CELLS: Final = 2**22


def parse_integer(text: bytes) -> int | None:
    """A signed 64-bit decimal integer written the way Redis accepts it, else None."""
    if not text or len(text) > 20:
        return None
    negative = text[:1] == b"-"
    digits = text[1:] if negative else text
    if not digits.isdigit() or (digits[:1] == b"0" and (len(digits) > 1 or negative)):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def first_version(clock_ms: int) -> int:
    """Where this process's versions start: wall-clock ms times 2**20.

    Versions must grow even across restarts of a node whose memory is gone, or
    a client holding an old version could win a compare-and-set against a
    different value. Starting from the clock does that without any file, as
    long as the node did not hand out more than a million versions per
    millisecond of its uptime (it cannot) and the clock does not step back.
    2**20 * ms stays below 2**63 until the year 2250.
    """
    return clock_ms << 20


class Node:
    """Thread-safe operations on one node's keyspace."""

    def __init__(
        self,
        backend: Backend,
        limits: KeyspaceLimits,
        shard_mapper: ShardMapper,
        node_id: str = "aegis",
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.backend = backend  # fixed for the node's life: its hot methods are bound below
        self._backend_get = backend.get
        self._backend_put = backend.put
        # The in-memory store that holds the keyspace, when the backend is built on
        # one: the built-ins' ``memory`` (MemoryBackend itself, and the WAL and snapshot
        # backends, whose log listens to it; see aegiskv.backends.wal). Not part of the
        # plugin API: a plugin's backend is always called through the interface.
        # Compiled (setup.py), a call on the native class is a direct call, where one
        # through the Backend interface (or a bound method) is a generic call, about a
        # tenth of a GET's instructions; interpreted, it saves the WAL backend's frame
        # that passes the call on.
        memory = getattr(backend, "memory", None)
        self._memory = memory if isinstance(memory, MemoryBackend) else None
        self.limits = limits
        self.shards = shard_mapper
        self.node_id = node_id
        self._clock = clock
        self._lock: HandoffLock = new_handoff_lock()
        self.started = time.time()
        self.hits = 0
        self.misses = 0
        self._scans = ScanCursors()
        self.snapshot_running = False
        self.last_snapshot_time = 0.0  # wall-clock seconds of the last snapshot this process wrote
        self.last_snapshot_error = ""  # why the last snapshot failed ("" when it did not)
        self.snapshot_failures = 0
        # Told of every change a command makes (the replication stream, aegiskv.server.replicas);
        # None on a node that replicates nothing, where it costs one attribute read per write.
        self.feed: ChangeFeed | None = None

    # -- reads -----------------------------------------------------------------------

    def get(self, key: bytes) -> Value | None:
        # acquire()/release() rather than "with": half the cost on this hot path.
        self._lock.acquire()
        try:
            memory = self._memory
            value = memory.get(key) if memory is not None else self._backend_get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value
        finally:
            self._lock.release()

    def get_entry(self, key: bytes) -> Entry | None:
        """Value, version and absolute deadline (NO_EXPIRY when none)."""
        self._lock.acquire()  # the native GET's hot path: see get()
        try:
            memory = self._memory
            entry = memory.get_entry(key) if memory is not None else self.backend.get_entry(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
            return entry
        finally:
            self._lock.release()

    def peek(self, key: bytes) -> Entry | None:
        """Like :meth:`get_entry` without counting as an access (TTL, TYPE, STRLEN)."""
        with self._lock:
            return self.backend.get_entry(key, touch=False)

    def memory_usage(self, key: bytes) -> int | None:
        """Bytes charged to the memory budget for the key's objects (key, value, TTL); None when absent.

        The figure eviction counts (entry_cost, or stored_cost for a value kept
        in a growable buffer, whose spare room max-memory also charges); the
        hash tables are charged apart, as a whole, so no key's share of them is
        included.
        """
        entry = self.peek(key)
        if entry is None:
            return None
        has_ttl = entry.expires_at_ms != NO_EXPIRY
        value = entry.value
        if isinstance(value, memoryview) and isinstance(value.obj, bytearray):
            return stored_cost(len(key), value.obj, has_ttl)  # a large value: a view of its buffer
        return entry_cost(len(key), len(value), has_ttl)

    def remaining_ttl_ms(self, key: bytes) -> int:
        """Milliseconds left; -1 for a key without TTL; -2 for a missing key (as Redis)."""
        with self._lock:
            entry = self.backend.get_entry(key, touch=False)
        if entry is None:
            return -2
        if entry.expires_at_ms == NO_EXPIRY:
            return -1
        return max(0, entry.expires_at_ms - self._clock())

    def mget(self, keys: Sequence[bytes]) -> list[Value | None]:
        """Values in order. Each chunk of BATCH_CHUNK keys is read under one lock hold (see BATCH_CHUNK)."""
        self._check_batch(len(keys))
        values: list[Value | None] = []
        get = self.backend.get
        with self._lock:
            for start in range(0, len(keys), BATCH_CHUNK):
                if start:
                    self._lock.let_waiters_in()
                chunk = [get(key) for key in keys[start : start + BATCH_CHUNK]]
                found = sum(1 for value in chunk if value is not None)
                self.hits += found
                self.misses += len(chunk) - found
                values.extend(chunk)
        return values

    def getdel(self, key: bytes) -> Value | None:
        with self._lock:
            entry = self.backend.get_entry(key, touch=False)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._delete(key)
            return entry.value

    def getex(
        self, key: bytes, *, ttl_ms: int | None = None, expires_at_ms: int | None = None, persist: bool = False
    ) -> Value | None:
        """GET that also sets (or with ``persist`` drops) the key's TTL."""
        deadline = self._deadline(ttl_ms) if ttl_ms is not None else expires_at_ms
        with self._lock:
            entry = self.backend.get_entry(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            if persist:
                self._set_expiry(key, NO_EXPIRY)
            elif deadline is not None:
                if deadline <= self._clock():
                    self._delete(key)
                else:
                    self._set_expiry(key, deadline)
            return entry.value

    def exists(self, keys: Sequence[bytes]) -> int:
        count = 0
        peek = self.backend.get_entry
        with self._lock:
            for start in range(0, len(keys), BATCH_CHUNK):
                if start:
                    self._lock.let_waiters_in()
                count += sum(1 for key in keys[start : start + BATCH_CHUNK] if peek(key, touch=False) is not None)
        return count

    # -- writes ----------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, ttl_ms: int | None = None) -> int:
        """Unconditional SET (the hot path); returns the new version."""
        limits = self.limits
        if len(key) > limits.max_key_bytes or len(value) > limits.max_value_bytes:
            self._check_sizes(key, value)  # raises with the message
        expires_at = NO_EXPIRY if ttl_ms is None else self._deadline(ttl_ms)
        self._lock.acquire()
        try:
            memory = self._memory
            if memory is not None:
                version = memory.put(key, value, expires_at)
            else:
                version = self._backend_put(key, value, expires_at)
            feed = self.feed
            if feed is not None:
                feed.put(key, value, version, expires_at)
            return version
        except ValueTooLarge as error:
            raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
        finally:
            self._lock.release()

    def set(
        self,
        key: bytes,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        expires_at_ms: int | None = None,
        condition: Condition = Condition.ALWAYS,
        expected_version: int | None = None,
        keep_ttl: bool = False,
        return_old: bool = False,
    ) -> SetResult:
        """SET with every option. ``ttl_ms`` and ``expires_at_ms`` are exclusive.

        ``expected_version`` is compare-and-set: store only if the key's current
        version equals it (0 means "the key must be absent").
        """
        self._check_sizes(key, value)
        if ttl_ms is not None:
            expires_at_ms = self._deadline(ttl_ms)
        with self._lock:
            backend = self.backend
            current = backend.get_entry(key, touch=False)
            old_value = current.value if (current is not None and return_old) else None
            current_version = 0 if current is None else current.version
            if (
                (condition is Condition.IF_ABSENT and current is not None)
                or (condition is Condition.IF_PRESENT and current is None)
                or (expected_version is not None and expected_version != current_version)
            ):
                return SetResult(False, current_version, old_value)
            if expires_at_ms is None:
                expires_at_ms = current.expires_at_ms if (keep_ttl and current is not None) else NO_EXPIRY
            if expires_at_ms != NO_EXPIRY and expires_at_ms <= self._clock():
                # An absolute deadline in the past: the write happens and expires at once
                # (Redis does the same for SET ... EXAT in the past).
                self._delete(key)
                return SetResult(True, current_version, old_value)
            try:
                version = self._put(key, value, expires_at_ms)
            except ValueTooLarge as error:
                raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
            return SetResult(True, version, old_value)

    def mset(
        self, pairs: Sequence[tuple[bytes, bytes]], ttl_ms: int | None = None, only_if_none_exist: bool = False
    ) -> int:
        """Store every pair; returns the last version (0 when ``only_if_none_exist`` failed).

        Each chunk of BATCH_CHUNK pairs is stored under one lock hold, so a
        reader may see a large MSET partly applied (never a torn key). With
        ``only_if_none_exist`` (MSETNX) the check and every write happen under
        one hold, so it is all or nothing.
        """
        self._check_batch(len(pairs))
        for key, value in pairs:
            self._check_sizes(key, value)
        expires_at = NO_EXPIRY if ttl_ms is None else self._deadline(ttl_ms)
        backend = self.backend
        chunk_size = len(pairs) if only_if_none_exist else BATCH_CHUNK
        version = 0
        try:
            with self._lock:
                if only_if_none_exist and any(backend.get_entry(key, touch=False) is not None for key, _ in pairs):
                    return 0
                for start in range(0, len(pairs), chunk_size):
                    if start:
                        self._lock.let_waiters_in()
                    for key, value in pairs[start : start + chunk_size]:
                        version = self._put(key, value, expires_at)
        except ValueTooLarge as error:
            raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
        return version

    def append(self, key: bytes, suffix: bytes) -> int:
        """Append to the value (creating it); keeps the TTL; returns the new length.

        A large value grows in place in amortised O(len(suffix)) (_write_range); a small one
        is rebuilt, as any write."""
        with self._lock:
            memory = self._memory
            if memory is not None:
                found = memory.peek(key)
                length = 0 if found is None else found[0]
                if length + len(suffix) >= GROWABLE_MIN:
                    return self._write_range(memory, key, length, suffix, found)
            entry = self.backend.get_entry(key, touch=False)
            value = suffix if entry is None else bytes(entry.value) + suffix
            self._check_sizes(key, value)
            expires_at = NO_EXPIRY if entry is None else entry.expires_at_ms
            try:
                self._put(key, value, expires_at)
            except ValueTooLarge as error:
                raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
            return len(value)

    def incr_by(self, key: bytes, delta: int) -> int:
        """Add ``delta`` to an integer value (absent counts as 0); keeps the TTL."""
        with self._lock:
            entry = self.backend.get_entry(key, touch=False)
            current = 0
            expires_at = NO_EXPIRY
            if entry is not None:
                expires_at = entry.expires_at_ms
                current_or_none = parse_integer(bytes(entry.value))
                if current_or_none is None:
                    raise CommandError(ErrorKind.INVALID, "value is not an integer or out of range")
                current = current_or_none
            result = current + delta
            if not -(2**63) <= result < 2**63:
                raise CommandError(ErrorKind.INVALID, "increment or decrement would overflow")
            try:
                self._put(key, b"%d" % result, expires_at)
            except ValueTooLarge as error:
                raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
            return result

    def delete(self, key: bytes) -> bool:
        with self._lock:
            return self._delete(key)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        removed = 0
        delete = self._delete
        with self._lock:
            for start in range(0, len(keys), BATCH_CHUNK):
                if start:
                    self._lock.let_waiters_in()
                removed += sum(1 for key in keys[start : start + BATCH_CHUNK] if delete(key))
        return removed

    def expire(self, key: bytes, ttl_ms: int, condition: ExpireCondition = ExpireCondition.ALWAYS) -> bool:
        """Give ``key`` a TTL; a TTL <= 0 deletes it (as Redis). False when the key is absent."""
        return self.expire_at(key, self._clock() + ttl_ms if ttl_ms > 0 else 0, condition)

    def expire_at(self, key: bytes, deadline_ms: int, condition: ExpireCondition = ExpireCondition.ALWAYS) -> bool:
        """Set an absolute deadline; False when the key is absent or ``condition`` fails.

        A deadline in the past deletes the key (as Redis does).
        """
        with self._lock:
            if condition is not ExpireCondition.ALWAYS:
                entry = self.backend.get_entry(key, touch=False)
                if entry is None:
                    return False
                current = entry.expires_at_ms
                if (
                    (condition is ExpireCondition.NX and current != NO_EXPIRY)
                    or (condition is ExpireCondition.XX and current == NO_EXPIRY)
                    or (condition is ExpireCondition.GT and (current == NO_EXPIRY or deadline_ms <= current))
                    or (condition is ExpireCondition.LT and current != NO_EXPIRY and deadline_ms >= current)
                    or (condition is ExpireCondition.XX_LT and (current == NO_EXPIRY or deadline_ms >= current))
                ):
                    return False
            if deadline_ms <= self._clock():
                return self._delete(key)
            return self._set_expiry(key, deadline_ms)

    def persist(self, key: bytes) -> tuple[bool, bool]:
        """Drop the TTL; returns (key exists, it had a TTL)."""
        with self._lock:
            entry = self.backend.get_entry(key, touch=False)
            if entry is None:
                return False, False
            if entry.expires_at_ms == NO_EXPIRY:
                return True, False
            self._set_expiry(key, NO_EXPIRY)
            return True, True

    def flush(self) -> int:
        """Remove every key this node is the authority for: all of them, or with replication, the led shards'."""
        with self._lock:
            self._scans.forget_keys()
            feed = self.feed
            if feed is None:
                return self.backend.flush()
            led = feed.led_shards()
            shard_of_key = self.shards.shard_of_key
            doomed = [key for key in self.backend.key_snapshot() if shard_of_key(key) in led]
            removed = 0
            for start in range(0, len(doomed), BATCH_CHUNK):
                if start:
                    self._lock.let_waiters_in()
                removed += sum(1 for key in doomed[start : start + BATCH_CHUNK] if self.backend.delete(key))
            for shard in led:
                feed.flush_shard(shard)
            return removed

    def scan(self, cursor: int, count: int, pattern: bytes | None = None) -> tuple[int, list[bytes]]:
        """One SCAN step: (next cursor, keys). Cursor 0 starts; a returned 0 means done.

        Guarantee (as Redis): a key present for the whole scan is returned at
        least once; keys added or removed meanwhile may or may not be. The
        cursor names a snapshot of the key list (see aegiskv/node/scan_cursors.py);
        one that expired, or was never handed out, is refused.
        """
        backend = self.backend
        with self._lock:
            next_cursor, page = self._scans.page(
                cursor, count, backend.key_snapshot, backend.last_version, len(backend), self._scan_budget
            )
            peek = backend.get_entry
            keys = [key for key in page if peek(key, touch=False) is not None]
        if pattern is not None:
            keys = [key for key in keys if glob_match(pattern, key)]
        return next_cursor, keys

    def _scan_budget(self) -> int:
        used_bytes, limit_bytes = self.backend.memory_bounds()
        return snapshot_budget(limit_bytes, used_bytes)

    # -- string commands on parts of a value (GETRANGE, SETRANGE, INCRBYFLOAT, bits) ------------

    def get_range(self, key: bytes, start: int, end: int) -> bytes:
        """GETRANGE: a missing key reads as the empty string."""
        entry = self.get_entry(key)
        # Sliced before it is copied: a large value is a memoryview, and only the range is needed.
        return b"" if entry is None else bytes(bit_strings.get_range(entry.value, start, end))

    def set_range(self, key: bytes, offset: int, data: bytes) -> int:
        """SETRANGE: write ``data`` at ``offset`` (zero-padding); keeps the TTL; returns the new length.

        As Redis, empty ``data`` changes nothing (a missing key stays missing),
        and a result above 512 MiB is refused before anything is built; so is
        one above the node's value limit.
        """
        with self._lock:
            memory = self._memory
            if memory is not None and data:
                found = memory.peek(key)
                length = 0 if found is None else found[0]
                if max(length, offset + len(data)) >= GROWABLE_MIN:
                    return self._write_range(memory, key, offset, data, found)
            entry = self.backend.get_entry(key, touch=False)
            old = b"" if entry is None else bytes(entry.value)
            if not data:
                return len(old)
            new_length = max(len(old), offset + len(data))
            self._check_grown_length(key, new_length)
            expires_at = NO_EXPIRY if entry is None else entry.expires_at_ms
            value = bit_strings.set_range(old, offset, data)
            self._put_or_refuse(key, value, expires_at)
            return len(value)

    def incr_by_float(self, key: bytes, increment: bytes) -> bytes:
        """INCRBYFLOAT in Redis's long double arithmetic (aegiskv.node.long_double); keeps the TTL."""
        amount = long_double.parse(increment)
        if amount is None:
            raise CommandError(ErrorKind.INVALID, "value is not a valid float")
        with self._lock:
            entry = self.backend.get_entry(key, touch=False)
            current: Fraction | long_double.Infinite | None = Fraction(0)
            expires_at = NO_EXPIRY
            if entry is not None:
                expires_at = entry.expires_at_ms
                current = long_double.parse(bytes(entry.value))
                if current is None:
                    raise CommandError(ErrorKind.INVALID, "value is not a valid float")
            assert current is not None
            total = long_double.add(current, amount)
            if total is None:
                raise CommandError(ErrorKind.INVALID, "increment would produce NaN or Infinity")
            text = long_double.format_human(total)
            self._check_sizes(key, text)
            self._put_or_refuse(key, text, expires_at)
            return text

    def get_bit(self, key: bytes, offset: int) -> int:
        entry = self.get_entry(key)
        return 0 if entry is None else bit_strings.get_bit(bytes(entry.value), offset)

    def set_bit(self, key: bytes, offset: int, bit: int) -> int:
        """SETBIT: returns the bit's old value; grows the value with zero bytes; keeps the TTL."""
        with self._lock:
            memory = self._memory
            if memory is not None:
                found = memory.peek(key)
                byte = offset >> 3
                if max(0 if found is None else found[0], byte + 1) >= GROWABLE_MIN:
                    return self._set_bit_in_place(memory, key, byte, 7 - (offset & 7), bit, found)
            entry = self.backend.get_entry(key, touch=False)
            old = b"" if entry is None else bytes(entry.value)
            self._check_grown_length(key, max(len(old), (offset >> 3) + 1))
            value, previous = bit_strings.set_bit(old, offset, bit)
            self._put_or_refuse(key, value, NO_EXPIRY if entry is None else entry.expires_at_ms)
            return previous

    def bit_operation(self, operation: bytes, destination: bytes, sources: Sequence[bytes]) -> int:
        """BITOP into ``destination`` (no TTL); an empty result deletes it. Returns the result's length."""
        self.check_same_slot([destination, *sources])
        with self._lock:
            values = []
            for source in sources:
                entry = self.backend.get_entry(source, touch=False)
                values.append(b"" if entry is None else bytes(entry.value))
            self._check_grown_length(destination, max((len(value) for value in values), default=0))
            result = bit_strings.bit_operation(operation, values)
            if not result:
                self._delete(destination)
                return 0
            self._put_or_refuse(destination, result, NO_EXPIRY)
            return len(result)

    def longest_common_subsequence(
        self, first: bytes, second: bytes, min_match: int = 0
    ) -> tuple[bytes, list[lcs.Match], int]:
        """LCS of two values (a missing key reads as empty); see aegiskv.node.lcs.

        The values are read under one lock hold and the table is built outside it.
        Refused as Redis refuses a table above 512 MiB, and above LCS_MAX_CELLS
        (the table is built in Python, about ten million cells a second).
        """
        self.check_same_slot([first, second])
        with self._lock:
            values = []
            for key in (first, second):
                entry = self.backend.get_entry(key)
                values.append(b"" if entry is None else bytes(entry.value))
        cells = (len(values[0]) + 1) * (len(values[1]) + 1)
        if cells * 4 > bit_strings.MAX_STRING_BYTES:
            raise CommandError(
                ErrorKind.INVALID, "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
            )
        if cells > LCS_MAX_CELLS:
            raise CommandError(
                ErrorKind.INVALID,
                f"LCS of {len(values[0])} and {len(values[1])} bytes needs {cells} table cells,"
                f" over this node's limit of {LCS_MAX_CELLS}",
            )
        return lcs.longest_common_subsequence(values[0], values[1], min_match)

    def bitfield(self, key: bytes, ops: Sequence[bit_strings.BitfieldOp]) -> list[int | None]:
        """BITFIELD: each op's reply in order (None: an overflow under FAIL, nothing written).

        As Redis, a BITFIELD with any SET or INCRBY first grows the value (creating the key)
        to cover the highest bit they write, even when every one of them then fails; the
        TTL is kept. Only GETs: nothing is written and a missing key reads as zeros.
        """
        writes = [op for op in ops if op.write]
        with self._lock:
            entry = self.backend.get_entry(key, touch=not writes)
            value = bytearray(b"" if entry is None else bytes(entry.value))
            if writes:
                highest_byte = max((op.offset + op.bits - 1) >> 3 for op in writes)
                self._check_grown_length(key, max(len(value), highest_byte + 1))
                if len(value) <= highest_byte:
                    value += bytes(highest_byte + 1 - len(value))
            replies: list[int | None] = []
            for op in ops:
                old = bit_strings.field_get(value, op.offset, op.bits, op.signed)
                if not op.write:
                    replies.append(old)
                    continue
                reply, new = bit_strings.field_result(old, op)
                if new is not None:
                    bit_strings.field_set(value, op.offset, op.bits, new)
                replies.append(reply)
            if writes:
                self._put_or_refuse(key, bytes(value), NO_EXPIRY if entry is None else entry.expires_at_ms)
            return replies

    # -- keyspace commands (RENAME, COPY, TOUCH, KEYS, RANDOMKEY, OBJECT, DUMP, RESTORE) --------

    def rename(self, source: bytes, destination: bytes, only_if_absent: bool = False) -> bool | None:
        """Move ``source``'s value and TTL to ``destination``.

        None when the source is missing (checked first, as Redis); False when
        ``only_if_absent`` found the destination taken (or it is the source).
        """
        self.check_same_slot([source, destination])
        with self._lock:
            entry = self.backend.get_entry(source, touch=False)
            if entry is None:
                return None
            if source == destination:
                return not only_if_absent
            if only_if_absent and self.backend.get_entry(destination, touch=False) is not None:
                return False
            self._put_or_refuse(destination, bytes(entry.value), entry.expires_at_ms)
            self._delete(source)
            return True

    def copy(self, source: bytes, destination: bytes, replace: bool = False) -> bool | None:
        """COPY with the TTL; None when the source is missing, False when the destination exists
        without ``replace``."""
        self.check_same_slot([source, destination])
        if source == destination:
            raise CommandError(ErrorKind.INVALID, "source and destination objects are the same")
        with self._lock:
            entry = self.backend.get_entry(source, touch=False)
            if entry is None:
                return None
            if not replace and self.backend.get_entry(destination, touch=False) is not None:
                return False
            self._put_or_refuse(destination, bytes(entry.value), entry.expires_at_ms)
            return True

    def touch(self, keys: Sequence[bytes]) -> int:
        """Count the keys that exist, each counted as a use (eviction order), as Redis's TOUCH."""
        count = 0
        get_entry = self.backend.get_entry
        with self._lock:
            for start in range(0, len(keys), BATCH_CHUNK):
                if start:
                    self._lock.let_waiters_in()
                count += sum(1 for key in keys[start : start + BATCH_CHUNK] if get_entry(key) is not None)
        return count

    def expire_time_ms(self, key: bytes) -> int:
        """The absolute deadline in Unix milliseconds; -1 for a key without TTL; -2 for a missing key."""
        entry = self.peek(key)
        if entry is None:
            return -2
        return -1 if entry.expires_at_ms == NO_EXPIRY else entry.expires_at_ms

    def matching_keys(self, pattern: bytes) -> list[bytes]:
        """KEYS: the live keys matching ``pattern`` that this node serves (with replication, its led shards').

        O(keys): the key list is copied under the lock (C speed) and matched
        outside it; the matches are checked for expiry a chunk per lock hold.
        """
        with self._lock:
            snapshot = self.backend.key_snapshot()
            led = None if self.feed is None else self.feed.led_shards()
        if led is not None:
            shard_of_key = self.shards.shard_of_key
            snapshot = [key for key in snapshot if shard_of_key(key) in led]
        matched = snapshot if pattern == b"*" else [key for key in snapshot if glob_match(pattern, key)]
        live: list[bytes] = []
        peek = self.backend.get_entry
        for start in range(0, len(matched), BATCH_CHUNK):
            with self._lock:
                live.extend(key for key in matched[start : start + BATCH_CHUNK] if peek(key, touch=False) is not None)
        return live

    def random_key(self, rng: random.Random) -> bytes | None:
        """RANDOMKEY: a live key chosen uniformly (O(keys): the key list is copied), None when there is none."""
        with self._lock:
            snapshot = self.backend.key_snapshot()
            while snapshot:
                index = rng.randrange(len(snapshot))
                key = snapshot[index]
                if self.backend.get_entry(key, touch=False) is not None:
                    return key
                snapshot[index] = snapshot[-1]  # expired: drop it and draw again
                snapshot.pop()
        return None

    def read_frequency(self, key: bytes) -> int | None:
        """OBJECT FREQ: the key's LFU access count (aegiskv.backends.access), None when absent.

        Raises CommandError for a backend that counts no accesses (a plugin's).
        """
        memory = self._counting_memory()
        with self._lock:
            if self.backend.get_entry(key, touch=False) is None:
                return None  # absent, or expired (which the counters alone would not see)
            return memory.access_frequency(key)

    def idle_seconds(self, key: bytes) -> int | None:
        """OBJECT IDLETIME: seconds since the key was last accessed (whole minutes), None when absent."""
        memory = self._counting_memory()
        with self._lock:
            if self.backend.get_entry(key, touch=False) is None:
                return None
            return memory.idle_seconds(key)

    def hot_keys(self) -> list[tuple[bytes, int]]:
        """(key, LFU count) of this node's hottest keys, hottest first; empty for a backend that
        counts no accesses."""
        memory = self._memory
        if memory is None:
            return []
        with self._lock:
            return memory.hot_keys()

    def _counting_memory(self) -> MemoryBackend:
        memory = self._memory
        if memory is None:
            raise CommandError(ErrorKind.INVALID, "this node's backend does not track access frequency")
        return memory

    def dump(self, key: bytes) -> bytes | None:
        """DUMP: Redis's serialisation of the value (aegiskv.node.dump_payload); None when absent."""
        entry = self.peek(key)
        return None if entry is None else dump_payload.encode(bytes(entry.value))

    def restore(self, key: bytes, payload: bytes, deadline_ms: int, replace: bool = False) -> None:
        """RESTORE a DUMP payload with an absolute deadline (NO_EXPIRY: none).

        Raises BUSYKEY when the key exists and not ``replace``; an invalid
        payload with Redis's error text. A deadline already past deletes the
        key (with ``replace``) and stores nothing, as Redis.
        """
        with self._lock:
            exists = self.backend.get_entry(key, touch=False) is not None
        if exists and not replace:
            raise CommandError(ErrorKind.BUSYKEY, "Target key name already exists.")
        try:
            dump_payload.check(payload)
            value = dump_payload.decode(payload)
        except dump_payload.BadPayload as error:
            raise CommandError(ErrorKind.INVALID, str(error)) from None
        self._check_sizes(key, value)
        with self._lock:
            if not replace and self.backend.get_entry(key, touch=False) is not None:
                raise CommandError(ErrorKind.BUSYKEY, "Target key name already exists.")
            if deadline_ms != NO_EXPIRY and deadline_ms <= self._clock():
                self._delete(key)
                return
            self._put_or_refuse(key, value, deadline_ms)

    def check_same_slot(self, keys: Sequence[bytes]) -> None:
        """As Redis Cluster, refuse a command whose keys hash to different slots.

        Every AegisKV node is a cluster node (INFO says cluster_enabled:1), and the
        keys of one slot are in one shard, so a change to both keys is one shard's
        change, replicated and led together.
        """
        slot = key_slot(keys[0])
        if any(key_slot(key) != slot for key in keys[1:]):
            raise CommandError(ErrorKind.CROSSSLOT, "Keys in request don't hash to the same slot")

    def _check_grown_length(self, key: bytes, new_length: int) -> None:
        """Refuse growing a value past Redis's 512 MiB or the node's limit, before building it."""
        if new_length > bit_strings.MAX_STRING_BYTES:
            raise CommandError(ErrorKind.INVALID, "string exceeds maximum allowed size (proto-max-bulk-len)")
        if new_length > self.limits.max_value_bytes:
            raise CommandError(
                ErrorKind.INVALID, f"value of {new_length} bytes exceeds the limit of {self.limits.max_value_bytes}"
            )

    def _write_range(
        self, memory: MemoryBackend, key: bytes, offset: int, data: bytes, found: tuple[int, int] | None
    ) -> int:
        """APPEND or SETRANGE of a large value, in place (MemoryBackend.write_range), lock held;
        ``found`` is memory.peek(key). The log and the replicas get the bytes written, not the
        value. Returns the new length."""
        self._check_grown_length(key, max(0 if found is None else found[0], offset + len(data)))
        if len(key) > self.limits.max_key_bytes:
            self._check_sizes(key, b"")  # raises with the message
        try:
            version, length = memory.write_range(key, offset, data)
        except ValueTooLarge as error:
            raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None
        feed = self.feed
        if feed is not None:
            prior = 0 if found is None else found[1]
            feed.put(key, RANGE_HEADER.pack(prior, offset) + data, version, 0, Op.RANGE)
        return length

    def _set_bit_in_place(
        self, memory: MemoryBackend, key: bytes, byte: int, shift: int, bit: int, found: tuple[int, int] | None
    ) -> int:
        """SETBIT of a large value: one byte written in place (_write_range). Returns the old bit."""
        current = 0
        if found is not None and byte < found[0]:
            entry = memory.get_entry(key, touch=False)
            if entry is not None:
                value = entry.value
                current = value[byte]
                if isinstance(value, memoryview):
                    value.release()  # a view left alive would make the write copy the value
        self._write_range(memory, key, byte, bytes(((current & ~(1 << shift)) | (bit << shift),)), found)
        return (current >> shift) & 1

    def _apply_range(self, key: bytes, payload: bytes, version: int) -> None:
        """A primary's Op.RANGE, on a follower, lock held: written only onto the very copy the
        primary wrote to (its version); any other copy is dropped, a miss rather than a wrong value.

        A copy already at or past the change's own version holds it: a resync's snapshot read the
        key after the change, and the stream then replays the changes since the snapshot began.
        """
        prior, offset = RANGE_HEADER.unpack_from(payload)
        data = payload[RANGE_HEADER.size :]
        backend = self.backend
        memory = self._memory
        if memory is not None:
            found = memory.peek(key)
            held = 0 if found is None else found[1]
            if held >= version:
                return
            if held != prior:
                backend.delete(key)
                return
            try:
                memory.write_range(key, offset, data, version)
            except ValueTooLarge:
                backend.delete(key)
            return
        entry = backend.get_entry(key, touch=False)
        held = 0 if entry is None else entry.version
        if held >= version:
            return
        if held != prior:
            backend.delete(key)
            return
        old = b"" if entry is None else bytes(entry.value)
        deadline = NO_EXPIRY if entry is None else entry.expires_at_ms
        try:
            backend.apply(key, bit_strings.set_range(old, offset, data), deadline, version)
        except ValueTooLarge:
            backend.delete(key)

    def _put_or_refuse(self, key: bytes, value: bytes, expires_at_ms: int) -> int:
        """_put with the lock held, its ValueTooLarge (no room under max-memory) told as OOM.

        The key is checked too: RENAME, COPY, SETRANGE ... may create one.
        """
        if len(key) > self.limits.max_key_bytes:
            self._check_sizes(key, b"")  # raises with the message
        try:
            return self._put(key, value, expires_at_ms)
        except ValueTooLarge as error:
            raise CommandError(ErrorKind.OUT_OF_MEMORY, str(error)) from None

    # -- snapshots ----------------------------------------------------------------------

    @property
    def snapshot_interval(self) -> float:
        """Seconds between the automatic snapshots the backend asks for (0: none)."""
        return self.backend.snapshot_interval

    def start_snapshot(self) -> Callable[[], str]:
        """Freeze a point-in-time copy now and return the job that writes it (run it without the lock).

        One snapshot at a time; raises CommandError when one is running or the
        backend takes none.
        """
        with self._lock:
            if self.snapshot_running:
                raise CommandError(ErrorKind.INVALID, "Background save already in progress")
            try:
                job = self.backend.begin_snapshot()
            except StorageUnavailable as error:
                self._snapshot_failed(str(error))
                raise CommandError(ErrorKind.STORAGE_FAILED, f"cannot snapshot: {error}") from None
            if job is None:
                raise CommandError(
                    ErrorKind.INVALID, 'this node keeps no snapshots (start it with --wal, or backend = "snapshot")'
                )
            self.snapshot_running = True

        def run() -> str:
            try:
                path = job()
            except OSError as error:
                reason = f"{describe_error(error)} writing a snapshot"
                self._snapshot_failed(reason)
                raise CommandError(ErrorKind.STORAGE_FAILED, f"snapshot failed: {reason}") from None
            except Exception as error:
                self._snapshot_failed(str(error))
                raise
            finally:
                self.snapshot_running = False
            self.last_snapshot_time = time.time()
            self.last_snapshot_error = ""
            return path

        return run

    def _snapshot_failed(self, reason: str) -> None:
        self.snapshot_failures += 1
        self.last_snapshot_error = reason

    def undo_unlogged(self) -> int:
        """Undo the changes whose log records could not be written (see Backend.undo_unlogged)."""
        with self._lock:
            return self.backend.undo_unlogged()

    # -- housekeeping ----------------------------------------------------------------

    def expire_step(self, sample_size: int, budget_seconds: float) -> int:
        """One bounded run of the active expiry sampler (called by a reactor timer).

        Skipped when a worker holds the lock: the reactor must never wait for
        it, and the sampler loses nothing by running on the next tick.
        """
        if not self._lock.try_acquire():
            return 0
        try:
            self._scans.drop_idle()  # abandoned scans go even when no SCAN comes to notice
            return self.backend.expire_step(sample_size, budget_seconds)
        finally:
            self._lock.release()

    def key_count(self) -> int:
        with self._lock:
            return len(self.backend)

    def lower_memory_limit(self, target_bytes: int, step_bytes: int) -> bool | None:
        """Move the backend's memory bound toward ``target_bytes``: raised at once, lowered by at most
        ``step_bytes`` below what is used now, evicting that much at most. True once the bound is
        the target; None when the backend cannot change its bound. Under the node lock."""
        with self._lock:
            used, limit = self.backend.memory_bounds()
            bound = target_bytes if target_bytes >= limit else max(target_bytes, min(limit, used) - step_bytes)
            if not self.backend.set_memory_limit(bound):
                return None
            return bound == target_bytes

    def backend_stats(self) -> BackendStats:
        with self._lock:
            return self.backend.stats()

    def keys_per_shard(self) -> list[int]:
        """Keys held in each shard, counted from a snapshot.

        O(keys): the snapshot is a C-speed copy under the lock, the counting
        (one CRC16 per key) runs outside it. Keeping counters on every write
        was the alternative; it cost a CRC per SET on the hot path.
        """
        with self._lock:
            keys = self.backend.key_snapshot()
        counts = [0] * self.shards.shards
        shard_of = self.shards.shard_of_key
        for key in keys:
            counts[shard_of(key)] += 1
        return counts

    def now_ms(self) -> int:
        return self._clock()

    # -- changes, with the feed told (the node lock is held) --------------------------

    def _put(self, key: bytes, value: bytes, expires_at_ms: int) -> int:
        memory = self._memory
        if memory is not None:
            version = memory.put(key, value, expires_at_ms)
        else:
            version = self.backend.put(key, value, expires_at_ms)
        feed = self.feed
        if feed is not None:
            feed.put(key, value, version, expires_at_ms)
        return version

    def _delete(self, key: bytes) -> bool:
        removed = self.backend.delete(key)
        if removed and self.feed is not None:
            self.feed.delete(key)
        return removed

    def _set_expiry(self, key: bytes, expires_at_ms: int) -> bool:
        changed = self.backend.set_expiry(key, expires_at_ms)
        if changed and self.feed is not None:
            self.feed.expire(key, expires_at_ms)
        return changed

    # -- replication: a follower's side ---------------------------------------------------

    def apply_replicated(self, shard: int, changes: Sequence[Change]) -> None:
        """Apply a primary's changes to ``shard`` in order, with their versions; the feed is not told."""
        with self._lock:
            backend = self.backend
            for change in changes:
                op = change.op
                if op == Op.PUT:
                    try:
                        backend.apply(change.key, change.value, change.expires_at_ms, change.version)
                    except ValueTooLarge:
                        backend.delete(change.key)  # cannot hold it here: a miss, never a stale value
                elif op == Op.DELETE:
                    backend.delete(change.key)
                elif op == Op.EXPIRE:
                    backend.set_expiry(change.key, change.expires_at_ms)
                elif op == Op.FLUSH:
                    self._drop_shard_locked(shard)
                elif op == Op.RANGE:
                    self._apply_range(change.key, change.value, change.version)

    def repair(self, key: bytes, value: bytes, version: int, expires_at_ms: int) -> bool:
        """A primary takes a newer copy of ``key`` a quorum read found on a follower; the feed streams it on.

        Stored with the copy's version, unless the key changed meanwhile to one at
        least as new. True when stored.
        """
        with self._lock:
            current = self.backend.get_entry(key, touch=False)
            if current is not None and current.version >= version:
                return False
            try:
                self.backend.apply(key, value, expires_at_ms, version)
            except ValueTooLarge:
                return False
            if self.feed is not None:
                self.feed.put(key, value, version, expires_at_ms)
            return True

    def diverge(self, count: int) -> int:
        """Damage up to ``count`` keys of this node's own copy behind the feed's back (DEBUG DIVERGE).

        For tests of anti-entropy only (off unless ``enable_debug_command``): nothing
        is streamed, so this copy silently differs from the others. Only keys of
        shards this node does not lead are touched, so the primaries' copies stay
        the truth. In turn: a key dropped, its value changed at the same version,
        a newer version, its deadline changed, and a key added that no other copy
        has (in the same slot). Returns the keys changed.
        """
        with self._lock:
            backend = self.backend
            led = self.feed.led_shards() if self.feed is not None else set()
            shard_of_key = self.shards.shard_of_key
            changed = 0
            for key in backend.key_snapshot():
                if changed >= count:
                    break
                entry = backend.get_entry(key, touch=False)
                if entry is None or shard_of_key(key) in led or key.endswith(b"}diverged"):
                    continue
                value = bytes(entry.value)
                kind = changed % 5
                if kind == 0:
                    backend.delete(key)
                elif kind == 1:
                    backend.apply(key, value + b"~", entry.expires_at_ms, entry.version)
                elif kind == 2:
                    backend.apply(key, value, entry.expires_at_ms, entry.version + 1)
                elif kind == 3:
                    deadline = NO_EXPIRY if entry.expires_at_ms else self._clock() + 3_600_000
                    backend.apply(key, value, deadline, entry.version)
                else:
                    backend.apply(b"{" + hash_tag(key) + b"}diverged", value, NO_EXPIRY, entry.version)
                changed += 1
            return changed

    def keyspace_digest(self) -> int:
        """A 64-bit digest of every live entry held (DEBUG DIGEST): the XOR of anti-entropy's entry hashes.

        Equal on two nodes that hold the same keys with the same values, versions and
        deadlines, whatever their order. O(keys), read in chunks under the lock.
        """
        with self._lock:
            keys = self.backend.key_snapshot()
        total = 0
        for start in range(0, len(keys), BATCH_CHUNK):
            for key, entry in self.entries(keys[start : start + BATCH_CHUNK]):
                total ^= entry_hash(key, entry.value, entry.version, entry.expires_at_ms)
        return total

    def shard_keys(self, shard: int) -> list[bytes]:
        """Every key of ``shard`` held now. The key list is copied under the lock (C speed), filtered outside."""
        with self._lock:
            keys = self.backend.key_snapshot()
        shard_of_key = self.shards.shard_of_key
        return [key for key in keys if shard_of_key(key) == shard]

    def entries(self, keys: Sequence[bytes]) -> list[tuple[bytes, Entry]]:
        """The live entries of ``keys`` (absent ones left out), read under one lock hold."""
        with self._lock:
            get_entry = self.backend.get_entry
            found = []
            for key in keys:
                entry = get_entry(key, touch=False)
                if entry is not None:
                    found.append((key, entry))
            return found

    def drop_shard(self, shard: int) -> int:
        """Remove every key of ``shard`` (a follower about to be sent the whole shard again)."""
        with self._lock:
            return self._drop_shard_locked(shard)

    def _drop_shard_locked(self, shard: int) -> int:
        shard_of_key = self.shards.shard_of_key
        doomed = [key for key in self.backend.key_snapshot() if shard_of_key(key) == shard]
        removed = 0
        delete = self.backend.delete
        for start in range(0, len(doomed), BATCH_CHUNK):
            if start:
                self._lock.let_waiters_in()
            removed += sum(1 for key in doomed[start : start + BATCH_CHUNK] if delete(key))
        return removed

    @property
    def memory(self) -> MemoryBackend | None:
        """The in-memory store the backend is built on, when it is (see __init__): a sweep reads its blobs."""
        return self._memory

    @property
    def lock(self) -> HandoffLock:
        """The node lock, for a caller that must read state a write changes in the same hold (replication)."""
        return self._lock

    # -- helpers ---------------------------------------------------------------------

    def _deadline(self, ttl_ms: int) -> int:
        if ttl_ms <= 0:
            raise CommandError(ErrorKind.INVALID, "invalid expire time, must be a positive number of milliseconds")
        return self._clock() + ttl_ms

    def _check_sizes(self, key: bytes, value: bytes) -> None:
        limits = self.limits
        if len(key) > limits.max_key_bytes:
            raise CommandError(
                ErrorKind.INVALID, f"key of {len(key)} bytes exceeds the limit of {limits.max_key_bytes}"
            )
        if len(value) > limits.max_value_bytes:
            raise CommandError(
                ErrorKind.INVALID, f"value of {len(value)} bytes exceeds the limit of {limits.max_value_bytes}"
            )

    def _check_batch(self, count: int) -> None:
        if count > self.limits.max_batch_keys:
            raise CommandError(
                ErrorKind.INVALID, f"{count} keys in one batch exceed the limit of {self.limits.max_batch_keys}"
            )
