"""The in-memory backend: an adaptive segmented LRU bounded by honest byte accounting.

Segmented LRU (SLRU): a new key enters the *probation* segment; a second hit
moves it to the *protected* segment, whose least recently used keys are
demoted back to probation's most recently used end when it holds more than its
target. A rewrite of a key counts as a use: the key stays in its segment, at
the most recently used end. Eviction takes the least recently used probation
key first and touches protected keys only when probation is empty.
A scan of once-read keys therefore cannot flush the keys that are read often.

The protected segment's target is counted in the bytes max-memory charges:
its entries *and* its share of the tables (the tables' bytes times its share of
the keys). Counting entries alone let it hold every key once the tables took a
third of the budget (100-byte values): probation drained, each new key was
evicted by the next insert before it could be read again, and when the hot set
moved onto new keys the hit ratio fell from 0.55 to 0.02 and stayed there
(``bench/eviction_sim.py``, the ``drift`` trace).

The target adapts with ARC's rule (Megiddo and Modha, 2003). A ghost table
remembers recently evicted keys (a 16-bit tag per slot, no key kept) and
whether each had been demoted from protected first. A new key that turns out
to be the ghost of a key evicted from probation and never demoted (ARC's B1)
is a miss that a longer probation would have hit: the target shrinks by the
entry's bytes times ``max(1, |B2| // |B1|)``. The ghost of a demoted key
(B2), or a demoted key read again while still in probation, is one that a
larger protected segment would have kept: the target grows by the entry's
bytes times ``max(1, |B1| // |B2|)``. |B1| and |B2| count the ghosts of each
kind the table holds. When the hot set moves onto new keys, the keys that fall
out of probation come back and the target shrinks until they get their second
read; under a stable Zipf load the demoted keys come back and it grows.
``slru_protected_fraction`` is the starting target.

Measured with ``bench/eviction_sim.py`` (4 MiB, 1M requests, hit ratio on the
Zipf / scan / drift / daily traces) before choosing: this rule 0.755 / 0.598
/ 0.603 / 0.421; a fixed share of 0.8 counted the same way 0.752 / 0.598 /
0.519 / 0.424 (0.5: 0.728 / 0.577 / 0.574 / 0.406); a fixed share plus a
ghost's key readmitted straight into protected 0.748 / 0.600 / 0.571 / 0.429.
At the same number of keys, exact LRU gets 0.715 / 0.523 / 0.621 / 0.375, ARC
0.757 / 0.602 / 0.609 / 0.424, Redis's LFU 0.758 / 0.595 / 0.450 / 0.396.
W-TinyLFU (0.744 / 0.582 / 0.320 / 0.402) counts every read in a sketch, a
cost on every GET; S3-FIFO (0.754 / 0.591 / 0.533 / 0.433) needs a use
counter per key, which the one-blob-per-key layout below has no room for.

The ghost table has a slot per stored key (rounded up to a power of two, at
least 1,024), two bytes each: a slot holds the key hash's top 14 bits and a
2-bit state (empty, demoted, ghost of a probation key, ghost of a protected
one). Colliding keys overwrite each other: a lost ghost only skips one
adjustment, and a false match needs equal slot and tag (one in 16,384 among
keys sharing a slot). Nothing is added on the path of a protected hit or of a
miss; an eviction and a demotion write one slot, the write of a new key reads
one once anything was evicted, and a probation hit once any key was demoted.

One read or write in ``access_sample`` (16) also counts, for them all, in
:class:`AccessCounts` (aegiskv.backends.access): Redis's LFU counter and
last-access minute per slot of the key's hash, for OBJECT FREQ, OBJECT IDLETIME
and the hot keys. They do not steer eviction; their table is charged with the
others below.

Memory layout, chosen for bytes per key (measured in ``tools/calibrate_memory.py``):
each segment is an ``OrderedDict`` (C-implemented, O(1) move-to-end and pop of
the oldest) mapping the whole key to one bytes object holding the 8-byte
version followed by the value. A separate entry object per key would cost
about 90 more bytes per key (object header plus a boxed version integer).
Deadlines of keys with a TTL live in :class:`ExpiryIndex`.

Byte accounting, checked against tracemalloc in ``tests/test_memory_accounting.py``
and against RSS by ``bench/native_client.py``, has two parts:

* every entry is charged what the allocator hands out for its objects
  (:func:`entry_cost`: the key and the version+value bytes objects, rounded as
  pymalloc and malloc round them; a key with a TTL also pays for the deadline
  integer and for a second key object, since the expiry index may hold its own);
* the tables themselves (the two OrderedDicts, the expiry index, the ghost
  table and the access counters) are charged what ``sys.getsizeof`` reports,
  re-read every 64 writes.
  Under churn a dict keeps its deleted slots until it resizes, so the tables
  cost 100 to 160 bytes per live key; a per-entry constant either
  under-charged that (RSS went to 1.4x the limit when writing twice the limit)
  or over-charged a fresh table.
"""

from __future__ import annotations

import random
import struct
import sys
import time
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, Protocol, cast

from mypy_extensions import i64

from aegiskv.backends.access import AccessCounts
from aegiskv.backends.base import (
    NO_EXPIRY,
    Backend,
    BackendOptions,
    BackendStats,
    Clock,
    Entry,
    Value,
    ValueTooLarge,
    wall_clock_ms,
)
from aegiskv.backends.expiry import ExpiryIndex
from aegiskv.backends.options import builtin_options

VERSION_BYTES: Final = 8  # big-endian unsigned version ahead of the value

_BYTES_HEADER: Final = 33  # sys.getsizeof(b"")
_PYMALLOC_LIMIT: Final = 512  # larger objects come from malloc, with a 16-byte chunk header
_TTL_INT_BYTES: Final = 48  # the packed deadline integer (36 bytes, rounded)
# Re-read the tables' sizes after this many writes (getsizeof is O(1) but not free).
_STRUCTURE_REFRESH: Final = 64

# Values longer than this are handed out as memoryviews instead of copies.
_COPY_LIMIT: Final = 64 * 1024
# When more than this share of an expiry sample was expired, sample again at once.
_RESAMPLE_RATIO = 0.25


# A stored entry: the 8-byte version, then the value. A bytearray for a large value (put) or
# one APPEND or SETRANGE grew in place (MemoryBackend.write_range); bytes for the rest.
Blob = bytes | bytearray


def object_bytes(data_length: int) -> int:
    """Bytes the allocator hands out for a bytes object holding ``data_length`` bytes."""
    size = _BYTES_HEADER + data_length
    if size <= _PYMALLOC_LIMIT:
        return (size + 15) & -16
    return (size + 16 + 15) & -16


def entry_cost(key_length: int, value_length: int, has_ttl: bool = False) -> int:
    """Bytes charged to the memory budget for one entry's objects (tables are charged apart)."""
    key_bytes = object_bytes(key_length)
    cost = key_bytes + object_bytes(VERSION_BYTES + value_length)
    return cost + key_bytes + _TTL_INT_BYTES if has_ttl else cost


def stored_cost(key_length: int, blob: Blob, has_ttl: bool) -> int:
    """What a stored entry is charged: :func:`entry_cost`, or for a growable value (a bytearray,
    see :meth:`MemoryBackend.write_range`) what its buffer holds allocated, spare room included."""
    if isinstance(blob, bytearray):
        # getsizeof: the object header plus every byte allocated; malloc adds its chunk header.
        key_bytes = object_bytes(key_length)
        cost = key_bytes + ((sys.getsizeof(blob) + 16 + 15) & -16)
        return cost + key_bytes + _TTL_INT_BYTES if has_ttl else cost
    return entry_cost(key_length, len(blob) - VERSION_BYTES, has_ttl)


def _viewed(blob: bytearray) -> bool:
    """Whether a reader holds a view of ``blob`` (a GET reply being sent, a snapshot): a buffer
    with views refuses to change size. Probed with a pop and its append back, which neither
    reallocates nor charges anything (an append to a full buffer would grow it by an eighth)."""
    try:
        last = blob.pop()
    except BufferError:
        return True
    blob.append(last)
    return False


def _growable_value(blob: bytearray) -> Value:
    """A growable blob's value as a read returns it: a view while large, else a copy (bytes)."""
    if len(blob) - VERSION_BYTES > _COPY_LIMIT:
        return memoryview(blob).toreadonly()[VERSION_BYTES:]  # a reader must not change the store
    return bytes(memoryview(blob)[VERSION_BYTES:])


def _ttl_cost(key_length: int) -> int:
    return object_bytes(key_length) + _TTL_INT_BYTES


_VERSION: Final = struct.Struct("!Q")
_MAX_VERSION: Final = 2**64 - 1
_LAST_VERSION_BYTE: Final = [bytes((low,)) for low in range(256)]


# Keys with a TTL that INFO's avg_ttl estimate looks at.
_TTL_SAMPLE: Final = 128

# The ghost table (see the module docstring): a slot's low two bits are its
# state, the others the top bits of the key's hash.
_GHOST_MIN_SLOTS: Final = 1024
_STATE_MASK: Final = 3
_DEMOTED: Final = 1  # the key is stored; it was demoted from protected
_GHOST_OF_PROBATION: Final = 2  # evicted from probation, never demoted
_GHOST_OF_PROTECTED: Final = 3  # evicted after a demotion (or from protected itself)
_TAG_SHIFT: Final = 48  # bits 50..63 of the hash, unlike the slot's low bits
_TAG_MASK: Final = 0xFFFC


def ghost_position(key: bytes, slots: i64) -> tuple[i64, i64]:
    """(slot, tag) of ``key`` in a ghost table of ``slots`` slots (a power of two).

    Native 64-bit integers when compiled: a hash does not fit mypyc's tagged
    int, whose arithmetic then goes through Python's long objects (a
    promotion's look-up cost about 900 instructions that way).
    """
    hashed: i64 = hash(key)
    return hashed & (slots - 1), (hashed >> _TAG_SHIFT) & _TAG_MASK


# A key's stored entry exactly as it is: its version+value blob and its deadline
# (NO_EXPIRY when none). What restore() puts back.
SavedEntry = tuple["Blob", int]


class RangeUndo(NamedTuple):
    """What puts back a value :meth:`MemoryBackend.write_range` changed in place (its blob object).

    Not the whole old value: copying it would make APPEND as slow as it was."""

    blob: bytearray  # the object changed in place
    length: int  # the blob's length before (version included)
    offset: int  # where, in the blob, the bytes the write replaced start
    replaced: bytes  # those bytes (only the ones within the old length)
    version_bytes: bytes  # the blob's first VERSION_BYTES before


# Values at least this long that APPEND or SETRANGE change are kept in a bytearray and
# changed in place (see MemoryBackend.write_range); shorter ones are copied, as any write.
# (A SET stores a value longer than _COPY_LIMIT in a bytearray from the start.)
GROWABLE_MIN: Final = 64 * 1024


class ChangeListener(Protocol):
    """Told of every change to a MemoryBackend's keyspace, right after it is made.

    The WAL backend is one (aegiskv.backends.wal): it logs each change, so a
    caller may change the memory backend directly -- the node does, for its
    compiled fast path -- and the change is logged all the same. Called
    synchronously on the caller's thread, under the caller's lock (the node
    lock); must not block nor call back into the backend. ``before`` is what
    :meth:`MemoryBackend.saved_entry` gave just before the change (None: the
    key was absent), for undoing it with :meth:`MemoryBackend.restore`.
    """

    def stored(self, key: bytes, value: bytes, version: int, expires_at_ms: int, before: SavedEntry | None) -> None:
        """``key`` now holds ``value`` with ``version`` (put or apply)."""

    def deleted(self, key: bytes, before: SavedEntry | None) -> None:
        """A live ``key`` was deleted on request."""

    def expiry_set(self, key: bytes, expires_at_ms: int, before: SavedEntry | None) -> None:
        """``key``'s deadline is now ``expires_at_ms`` (NO_EXPIRY: none)."""

    def flushed(self, before: list[tuple[bytes, SavedEntry | None]]) -> None:
        """Every key was removed (flush); ``before`` holds each one's entry."""

    def dropped(self, key: bytes) -> None:
        """The backend removed ``key`` on its own (expiry, eviction): nothing is put back."""

    def ranged(self, key: bytes, offset: int, data: bytes, version: int, before: SavedEntry | RangeUndo | None) -> None:
        """``data`` was written at ``offset`` of ``key``'s value (zero-padded), which now has ``version``
        (:meth:`MemoryBackend.write_range`); ``before`` puts it back (:meth:`MemoryBackend.restore`)."""


class MemoryBackend(Backend):
    """Adaptive segmented LRU under a byte budget, with lazy and sampled active expiry."""

    name = "memory"

    def __init__(
        self,
        options: BackendOptions,
        clock: Clock = wall_clock_ms,
        rng: random.Random | None = None,
        stats_rng: random.Random | None = None,
    ) -> None:
        """``rng`` drives the active expiry's samples, ``stats_rng`` the statistics' (avg_ttl).

        Changes are told to a :class:`ChangeListener` once one is set (:meth:`set_listener`)."""
        tuning = builtin_options(options)  # the public options alone: the defaults (aegiskv.backends.options)
        self._clock = clock
        self._listener: ChangeListener | None = None
        self._rng = rng or random.Random()
        self._stats_rng = stats_rng or random.Random()
        self._limit = options.max_memory_bytes
        # What protected may hold, tables included (adapted, see the module
        # docstring), and the same less its share of the tables: the figure its
        # entries are held to, recomputed when either changes.
        self._protected_target = int(options.max_memory_bytes * tuning.protected_fraction)
        self._protected_limit = self._protected_target
        self._probation: OrderedDict[bytes, Blob] = OrderedDict()
        self._protected: OrderedDict[bytes, Blob] = OrderedDict()
        self._probation_bytes = 0
        self._protected_bytes = 0
        # The tables' methods every GET and SET calls, bound once (the tables are
        # never replaced): a method lookup on an OrderedDict searches dictionaries.
        self._protected_to_end = self._protected.move_to_end
        self._probation_to_end = self._probation.move_to_end
        # The same tables typed as plain dicts, for lookups: compiled, get() on a
        # dict is a C call, on an OrderedDict a generic method call (an OrderedDict
        # is a dict whose get() behaves the same).
        self._protected_map: dict[bytes, Blob] = self._protected
        self._probation_map: dict[bytes, Blob] = self._probation
        self._deadlines = ExpiryIndex()
        # The index's key -> packed deadline dict, read directly on the hot path
        # (a membership test through a method call costs three times as much).
        self._deadline_map = self._deadlines.packed_map
        self._version = options.first_version
        self._version_block = -1  # version >> 8 that _version_head is the first 7 bytes of
        self._version_head = b""
        self._count_structures = tuning.count_structures
        self._structure_bytes = 0
        self._ghosts: array[int] = array("H", bytes(2 * _GHOST_MIN_SLOTS))
        self._ghost_slots: i64 = _GHOST_MIN_SLOTS  # len(self._ghosts), as a native int when compiled
        # sys.getsizeof(self._ghosts), read when the table is made: a getsizeof
        # costs about 1,300 instructions compiled, and the tables are measured
        # on every eviction.
        self._ghost_table_bytes = sys.getsizeof(self._ghosts)
        self._ghosts_of_probation = 0  # slots in each ghost state (ARC's |B1| and |B2|)
        self._ghosts_of_protected = 0
        # Slots marking a demoted key: none until protected first overflows, and
        # a promotion then skips the ghost table (hot_path.py, GET of random keys
        # read once before, compiled: 8,628 instructions before the ghost table,
        # 9,302 with an unconditional look-up).
        self._demoted_marks = 0
        self._writes_since_measure = 0
        self.evictions = 0
        self.expirations = 0
        # Replaying a log (see begin_recovery): records are applied as written,
        # without expiry, eviction or fresh versions.
        self._recovering = False
        self._exact_versions = False  # set by apply(): an imposed version is stored as given
        self._growable_made = 0  # values write_range moved into a bytearray (export then views them)
        self.copied_bytes = 0  # bytes write_range copied into new buffers: once per value, unless read meanwhile
        # Redis's LFU counter per slot of the key's hash (OBJECT FREQ, IDLETIME, hot keys),
        # fed one access in _access_sample (see _sample_access).
        self._access = AccessCounts(clock())
        self._access_sample: i64 = tuning.access_sample
        self._until_sample: i64 = tuning.access_sample
        self._measure_structures()

    # -- reads -------------------------------------------------------------------

    def get(self, key: bytes) -> Value | None:
        # An empty deadline map is the common case (no key has a TTL): a length
        # test then, where a membership test hashes the key and searches.
        deadlines = self._deadline_map
        if deadlines and key in deadlines and self._expired(key):
            return None
        blob = self._protected_map.get(key)
        if blob is not None:
            self._protected_to_end(key)
        else:
            blob = self._probation_map.get(key)
            if blob is None:
                return None
            self._promote(key, blob)
        # One access in _access_sample reaches the counters (see _sample_access).
        until = self._until_sample - 1
        if until:
            self._until_sample = until
        else:
            self._sample_access(key, False)
        if isinstance(blob, bytes):
            if len(blob) - VERSION_BYTES > _COPY_LIMIT:
                return memoryview(blob)[VERSION_BYTES:]
            return blob[VERSION_BYTES:]
        return _growable_value(blob)

    def peek(self, key: bytes) -> tuple[int, int] | None:
        """(length, version) of the key's value, None when absent; no touch, no view of the value
        (a view would make write_range copy the value)."""
        if key in self._deadline_map and self._expired(key):
            return None
        blob = self._protected_map.get(key)
        if blob is None:
            blob = self._probation_map.get(key)
            if blob is None:
                return None
        return len(blob) - VERSION_BYTES, _VERSION.unpack_from(blob)[0]

    def get_entry(self, key: bytes, touch: bool = True) -> Entry | None:
        packed_deadline = self._deadline_map.get(key)
        if packed_deadline is not None and self._expired(key):
            return None
        blob = self._protected_map.get(key)
        if blob is not None:
            if touch:
                self._protected_to_end(key)
        else:
            blob = self._probation_map.get(key)
            if blob is None:
                return None
            if touch:
                self._promote(key, blob)
        if touch:
            until = self._until_sample - 1
            if until:
                self._until_sample = until
            else:
                self._sample_access(key, False)
        value: Value
        if isinstance(blob, bytes):
            large = len(blob) - VERSION_BYTES > _COPY_LIMIT
            value = memoryview(blob)[VERSION_BYTES:] if large else blob[VERSION_BYTES:]
        else:
            value = _growable_value(blob)
        return Entry(
            value,
            _VERSION.unpack_from(blob)[0],
            NO_EXPIRY if packed_deadline is None else ExpiryIndex.unpack_deadline(packed_deadline),
        )

    # -- writes ------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, expires_at_ms: int = NO_EXPIRY, version: int | None = None) -> int:  # noqa: C901 - the write path of every SET, its cases side by side
        # The hot path of every SET: one pop to find and drop an old value, one
        # insert; entry_cost is spelled out for the common small sizes.
        has_ttl = expires_at_ms != NO_EXPIRY
        key_size = len(key) + 48  # header 33 + rounding 15
        blob_size = len(value) + 56  # header 33 + version 8 + rounding 15
        if key_size <= _PYMALLOC_LIMIT + 15 and blob_size <= _PYMALLOC_LIMIT + 15 and not has_ttl:
            cost = (key_size & -16) + (blob_size & -16)
        else:
            cost = entry_cost(len(key), len(value), has_ttl)
        if cost > self._limit and not self._recovering:  # a lowered max-memory: evicted after replay
            raise ValueTooLarge(f"entry of {cost} bytes exceeds max-memory of {self._limit} bytes")
        # Without a listener (the plain memory backend) this costs one attribute read.
        listener = self._listener
        before: SavedEntry | None = None
        if listener is not None:
            before = self.saved_entry(key)
        # new_version is a plain int, never None: compiled, it stays unboxed until
        # it is written out, where the optional argument is an object throughout.
        if version is None:
            new_version = self._version + 1
        else:
            new_version = version
            if version <= self._version:
                if not (self._recovering or self._exact_versions):
                    new_version = self._version + 1
            elif version > _MAX_VERSION:
                raise ValueError(f"version {version} does not fit in 64 bits")
        # The version's first seven bytes change once per 256 versions: kept, and
        # the last byte looked up (two concatenations cost less than converting
        # the integer each time).
        block = new_version >> 8
        if block != self._version_block:
            self._version_block = block
            self._version_head = block.to_bytes(VERSION_BYTES - 1, "big")
        blob: Blob
        if len(value) > _COPY_LIMIT:
            # A large value is stored growable from the start, for the same one copy as a bytes
            # blob: an APPEND or SETRANGE to it then never copies it (write_range).
            grown = bytearray(self._version_head)
            grown.append(new_version & 255)
            grown += value
            blob = grown
            cost = stored_cost(len(key), grown, has_ttl)
            self._growable_made += 1
        else:
            blob = self._version_head + _LAST_VERSION_BYTE[new_version & 255] + value
        deadlines = self._deadline_map
        probation = self._probation
        # A rewrite is a use of the key: it stays in its segment, at the young end
        # (a counter that INCR rewrites is as hot as a key that is read). Replaced
        # in place: no deleted slot in the table, and about half the work of
        # moving the key between tables. A new or expired key enters probation.
        # Protected is searched first: a key rewritten often was read or
        # rewritten before, and without memory pressure every key read twice is
        # there (the second search, of a hashed key, costs about 160 instructions).
        old = self._protected_map.get(key)
        if old is not None:
            had_ttl = bool(deadlines) and key in deadlines
            if not (had_ttl and self._deadline_passed(key)):
                self._protected[key] = blob
                self._protected_to_end(key)
                self._protected_bytes += cost - stored_cost(len(key), old, had_ttl)
                if self._protected_bytes > self._protected_limit:
                    self._demote_overflow()
            else:
                del self._protected[key]
                self._protected_bytes -= stored_cost(len(key), old, had_ttl)
                probation[key] = blob
                self._probation_bytes += cost
        else:
            old = self._probation_map.get(key)
            if old is not None:
                had_ttl = bool(deadlines) and key in deadlines
                probation[key] = blob
                self._probation_to_end(key)
                self._probation_bytes += cost - stored_cost(len(key), old, had_ttl)
            else:
                had_ttl = False
                probation[key] = blob
                self._probation_bytes += cost
                # Ghosts exist only once something was evicted: a cache under
                # its limit never pays for the lookup.
                if self._ghosts_of_probation or self._ghosts_of_protected:
                    self._adapt_to_ghost(key, cost)
        if has_ttl:
            self._deadlines.set(key, expires_at_ms)
        elif had_ttl:
            self._deadlines.discard(key)
        until = self._until_sample - 1  # a write is an access too (as Redis's lookupKeyWrite)
        if until:
            self._until_sample = until
        else:
            self._sample_access(key, old is None)
        if new_version > self._version:
            self._version = new_version
        self._writes_since_measure += 1
        if self._writes_since_measure >= _STRUCTURE_REFRESH:
            self._measure_structures()
        if self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit and not self._recovering:
            self._evict(keep=key)
        if listener is not None:
            # After the evictions this write caused, as a log must replay them.
            listener.stored(key, value, new_version, expires_at_ms, before)
        return new_version

    def apply(self, key: bytes, value: bytes, expires_at_ms: int, version: int) -> None:
        """Store a primary's entry with exactly its version (see Backend.apply)."""
        self._exact_versions = True
        try:
            self.put(key, value, expires_at_ms, version)
        finally:
            self._exact_versions = False

    def write_range(self, key: bytes, offset: int, data: bytes, version: int | None = None) -> tuple[int, int]:
        """Write ``data`` at ``offset`` of the key's value, zero-padding (APPEND: offset = its length;
        SETRANGE), keeping its TTL, in amortised O(len(data)); returns (version, new length).

        The value is kept in a bytearray that grows in place (CPython over-allocates it by an
        eighth, and a large one is moved with mremap, not copied). A reader may hold a view of it
        (a GET reply still being sent, a snapshot): then it is copied once into a new buffer, so
        what the reader holds never changes. Charged what the buffer holds allocated. The
        caller checks the sizes and uses put() for values under GROWABLE_MIN (no buffer).
        A ``version`` given is stored as given, as :meth:`apply` stores it (a log replay, a follower).
        """
        if key in self._deadline_map:
            self._expired(key)  # a value past its deadline is gone: the write starts a new one
        in_protected = True
        blob = self._protected_map.get(key)
        if blob is None:
            in_protected = False
            blob = self._probation_map.get(key)
        has_ttl = key in self._deadline_map
        old_length = VERSION_BYTES if blob is None else len(blob)
        start = VERSION_BYTES + offset
        end = start + len(data)
        new_length = max(old_length, end)
        if entry_cost(len(key), new_length - VERSION_BYTES, has_ttl) > self._limit and not self._recovering:
            raise ValueTooLarge(f"entry of {new_length} bytes exceeds max-memory of {self._limit} bytes")
        if version is None:
            new_version = self._version + 1
        elif version > _MAX_VERSION:
            raise ValueError(f"version {version} does not fit in 64 bits")
        else:
            new_version = version
        listener = self._listener
        old_cost = 0 if blob is None else stored_cost(len(key), blob, has_ttl)
        until = self._until_sample - 1  # a write is an access too, as in put()
        if until:
            self._until_sample = until
        else:
            self._sample_access(key, blob is None)
        target, before = self._writable(key, blob, start, end, listener is not None)
        if start > len(target):
            target.extend(bytes(start - len(target)))
        target[start:end] = data
        target[:VERSION_BYTES] = new_version.to_bytes(VERSION_BYTES, "big")
        self._store_written(key, blob is None, in_protected, stored_cost(len(key), target, has_ttl) - old_cost, target)
        if new_version > self._version:
            self._version = new_version
        self._writes_since_measure += 1
        if self._writes_since_measure >= _STRUCTURE_REFRESH:
            self._measure_structures()
        if self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit and not self._recovering:
            self._evict(keep=key)
        if listener is not None:
            listener.ranged(key, offset, data, new_version, before)
        return new_version, len(target) - VERSION_BYTES

    def _writable(
        self, key: bytes, blob: Blob | None, start: int, end: int, undoable: bool
    ) -> tuple[bytearray, SavedEntry | RangeUndo | None]:
        """The buffer write_range writes into (the stored one unless a reader holds a view of it,
        else a copy), and what undoes the write when ``undoable`` (a log listens)."""
        if isinstance(blob, bytearray) and not _viewed(blob):
            if not undoable:
                return blob, None
            replaced = bytes(blob[start : min(end, len(blob))]) if start < len(blob) else b""
            return blob, RangeUndo(blob, len(blob), start, replaced, bytes(blob[:VERSION_BYTES]))
        before = self.saved_entry(key) if undoable else None
        # The one copy; from here on CPython grows the buffer by an eighth whenever it is full.
        target = bytearray(memoryview(blob) if blob is not None else bytes(VERSION_BYTES))
        self.copied_bytes += len(target)
        self._growable_made += 1
        return target, before

    def _store_written(self, key: bytes, new: bool, in_protected: bool, delta: int, target: bytearray) -> None:
        """Put write_range's buffer in its segment (a rewrite is a use) and charge ``delta``."""
        if new:
            self._probation[key] = target
            self._probation_bytes += delta
            if self._ghosts_of_probation or self._ghosts_of_protected:
                self._adapt_to_ghost(key, delta)
        elif in_protected:
            self._protected[key] = target
            self._protected_to_end(key)
            self._protected_bytes += delta
            if self._protected_bytes > self._protected_limit:
                self._demote_overflow()
        else:
            self._probation[key] = target
            self._probation_to_end(key)
            self._probation_bytes += delta

    def delete(self, key: bytes) -> bool:
        if key in self._deadline_map and self._expired(key):
            return False
        listener = self._listener
        if listener is None:
            return self._remove(key)
        before = self.saved_entry(key)
        if not self._remove(key):
            return False
        listener.deleted(key, before)
        return True

    def set_expiry(self, key: bytes, expires_at_ms: int) -> bool:
        if key in self._deadline_map and self._expired(key):
            return False
        listener = self._listener
        before = self.saved_entry(key) if listener is not None else None
        blob = self._protected.get(key)
        segment_is_protected = blob is not None
        if blob is None:
            blob = self._probation.get(key)
            if blob is None:
                return False
        had_ttl = key in self._deadline_map
        has_ttl = expires_at_ms != NO_EXPIRY
        delta = (_ttl_cost(len(key)) if has_ttl else 0) - (_ttl_cost(len(key)) if had_ttl else 0)
        if delta > 0 and stored_cost(len(key), blob, True) > self._limit:
            raise ValueTooLarge(f"entry of {len(key) + len(blob)} bytes with a TTL exceeds max-memory")
        if has_ttl:
            self._deadlines.set(key, expires_at_ms)
        else:
            self._deadlines.discard(key)
        if segment_is_protected:
            self._protected_bytes += delta
        else:
            self._probation_bytes += delta
        if (
            delta > 0
            and self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit
            and not self._recovering
        ):
            self._evict(keep=key)
        if listener is not None:
            listener.expiry_set(key, expires_at_ms, before)
        return True

    def flush(self) -> int:
        listener = self._listener
        before = self.saved_entries() if listener is not None else None
        removed = len(self._probation) + len(self._protected)
        self._probation.clear()
        self._protected.clear()
        self._deadlines.clear()
        self._probation_bytes = self._protected_bytes = 0
        # Ghosts of keys a flush removed are no evidence about the next load.
        self._ghosts = array("H", bytes(2 * self._ghost_slots))
        self._ghosts_of_probation = self._ghosts_of_protected = self._demoted_marks = 0
        self._access.reset(self._clock())
        self._measure_structures()
        if listener is not None and before is not None:
            listener.flushed(before)
        return removed

    # -- undo (a log that could not record a change) -------------------------------

    def saved_entry(self, key: bytes) -> SavedEntry | None:
        """The key's stored version+value blob and deadline exactly as they are (no expiry, no
        touch), or None when absent: what :meth:`restore` puts back."""
        blob = self._protected_map.get(key)
        if blob is None:
            blob = self._probation_map.get(key)
            if blob is None:
                return None
        packed_deadline = self._deadline_map.get(key)
        return blob, NO_EXPIRY if packed_deadline is None else ExpiryIndex.unpack_deadline(packed_deadline)

    def saved_entries(self) -> list[tuple[bytes, SavedEntry | None]]:
        """:meth:`saved_entry` of every stored key (what a flush removes)."""
        return [(key, self.saved_entry(key)) for key in self.key_snapshot()]

    def restore(self, key: bytes, saved: SavedEntry | RangeUndo | None) -> None:
        """Put back what :meth:`saved_entry` returned, version included, or remove the key (None).

        Undoes a change its write-ahead log could not record; the listener is
        not told (memory goes back to what the log holds). The version
        counter is left alone: a version handed out is never handed out again.
        The entry comes back as a new one (probation, most recently used); if
        it no longer fits, others are evicted as for any write.
        """
        if isinstance(saved, RangeUndo):
            self._restore_range(key, saved)
            return
        self._remove(key)
        if saved is None:
            return
        blob, deadline = saved
        has_ttl = deadline != NO_EXPIRY
        self._probation[key] = blob
        self._probation_bytes += stored_cost(len(key), blob, has_ttl)
        if has_ttl:
            self._deadlines.set(key, deadline)
        self._writes_since_measure += 1
        if self._writes_since_measure >= _STRUCTURE_REFRESH:
            self._measure_structures()
        if self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit and not self._recovering:
            self._evict(keep=key)

    def _restore_range(self, key: bytes, undo: RangeUndo) -> None:
        """Put back a value write_range changed in place; the key holds that blob (changes are
        undone newest first, so any later change to the key was undone already)."""
        blob = undo.blob
        in_protected = self._protected_map.get(key) is blob
        if not in_protected and self._probation_map.get(key) is not blob:
            return  # nothing of this change is left to undo (the key was removed since)
        has_ttl = key in self._deadline_map
        old_cost = stored_cost(len(key), blob, has_ttl)
        restored: bytearray
        if _viewed(blob):  # a reader holds a view: it keeps what it has, the key gets a copy
            restored = bytearray(blob[: undo.length])
        else:
            del blob[undo.length :]
            restored = blob
        restored[undo.offset : undo.offset + len(undo.replaced)] = undo.replaced
        restored[:VERSION_BYTES] = undo.version_bytes
        delta = stored_cost(len(key), restored, has_ttl) - old_cost
        if in_protected:
            self._protected[key] = restored
            self._protected_bytes += delta
        else:
            self._probation[key] = restored
            self._probation_bytes += delta

    # -- expiry ------------------------------------------------------------------

    def expire_step(self, sample_size: int, budget_seconds: float) -> int:
        # The server's periodic step: the access counters' clock moves here too.
        self._tick_access()
        removed = 0
        give_up_at = time.perf_counter() + budget_seconds
        deadlines = self._deadlines
        while len(deadlines):
            now = self._clock()
            sample = deadlines.sample(sample_size, self._rng)
            expired = 0
            for key, deadline in sample:
                if deadline <= now and key in deadlines:
                    self._remove(key)
                    self.expirations += 1
                    expired += 1
                    if self._listener is not None:
                        self._listener.dropped(key)
            removed += expired
            if expired <= len(sample) * _RESAMPLE_RATIO or time.perf_counter() >= give_up_at:
                break
        return removed

    def _deadline_passed(self, key: bytes) -> bool:
        """True when ``key`` has a deadline and it has passed (never while replaying a log)."""
        deadline = self._deadlines.deadline(key)
        return deadline is not None and deadline <= self._clock() and not self._recovering

    def _expired(self, key: bytes) -> bool:
        """Lazy expiry: True (and the key removed) when its deadline has passed."""
        if self._deadline_passed(key):
            self._remove(key)
            self.expirations += 1
            if self._listener is not None:
                self._listener.dropped(key)
            return True
        return False

    # -- segments ------------------------------------------------------------------

    def _promote(self, key: bytes, blob: Blob) -> None:
        """Second hit: probation -> protected, demoting protected LRU keys on overflow.

        A key demoted from protected and read again is one that a larger
        protected segment would have kept: the target grows (ARC's B2 hit)."""
        cost = stored_cost(len(key), blob, key in self._deadline_map)
        del self._probation[key]
        self._probation_bytes -= cost
        self._protected[key] = blob
        self._protected_bytes += cost
        if self._demoted_marks:
            ghosts = self._ghosts
            slot, tag = ghost_position(key, self._ghost_slots)
            if ghosts[slot] == tag | _DEMOTED:
                ghosts[slot] = 0
                self._demoted_marks -= 1
                self._grow_protected(cost)
        # An insert into the protected table may grow it, like a write.
        self._writes_since_measure += 1
        if self._writes_since_measure >= _STRUCTURE_REFRESH:
            self._measure_structures()
            if self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit:
                self._evict(keep=key)
        self._demote_overflow()

    def _demote_overflow(self) -> None:
        """While protected holds more than its share, move its LRU keys to probation's MRU end.

        The key just promoted or rewritten is at protected's MRU end, and the
        loop stops at one key, so that key stays."""
        protected = self._protected
        ghosts = self._ghosts
        while self._protected_bytes > self._protected_limit and len(protected) > 1:
            old_key, old_blob = protected.popitem(last=False)
            old_cost = stored_cost(len(old_key), old_blob, old_key in self._deadline_map)
            self._protected_bytes -= old_cost
            self._probation[old_key] = old_blob
            self._probation_bytes += old_cost
            slot, tag = ghost_position(old_key, self._ghost_slots)
            self._forget_ghost(ghosts[slot])
            ghosts[slot] = tag | _DEMOTED
            self._demoted_marks += 1

    def _remove(self, key: bytes) -> bool:
        blob = self._probation.pop(key, None)
        if blob is not None:
            cost = stored_cost(len(key), blob, key in self._deadline_map)
            self._probation_bytes -= cost
        else:
            blob = self._protected.pop(key, None)
            if blob is None:
                return False
            cost = stored_cost(len(key), blob, key in self._deadline_map)
            self._protected_bytes -= cost
        self._deadlines.discard(key)
        return True

    def _evict(self, keep: bytes | None) -> None:
        """Evict least recently used entries, probation first, until under the limit.

        ``keep`` (the entry being written or changed) is never evicted and never
        moved: it fits on its own, so removing everything else makes room.
        ``None`` keeps nothing (the end of a recovery).
        """
        self._measure_structures()
        probation, protected = self._probation, self._protected
        while self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit:
            victim = None
            for segment in (probation, protected):
                for key in segment:
                    if key != keep:
                        victim = key
                        break
                    # keep is this segment's oldest: take the next one, if any
                if victim is not None:
                    break
            if victim is None:
                break
            in_probation = segment is probation
            blob = segment.pop(victim)
            cost = stored_cost(len(victim), blob, victim in self._deadline_map)
            if in_probation:
                self._probation_bytes -= cost
            else:
                self._protected_bytes -= cost
            self._remember_evicted(victim, in_probation)
            self._deadlines.discard(victim)
            self.evictions += 1
            if self._listener is not None:
                self._listener.dropped(victim)

    def _measure_structures(self) -> None:
        self._writes_since_measure = 0
        stored = len(self._probation) + len(self._protected)
        if stored > self._ghost_slots:
            # A slot per key, so that a ghost is remembered about as long as
            # ARC remembers it (its ghost lists hold up to the cache's size).
            # Grown only: the old ghosts are dropped, not rehashed (the table
            # keeps no keys), and a few adjustments are skipped.
            slots = self._ghost_slots
            while slots < stored:
                slots *= 2
            self._ghosts = array("H", bytes(2 * slots))
            self._ghost_slots = slots
            self._ghost_table_bytes = sys.getsizeof(self._ghosts)
            self._ghosts_of_probation = self._ghosts_of_protected = self._demoted_marks = 0
        access = self._access
        access.resize(stored)
        self._tick_access()
        if self._count_structures:
            self._structure_bytes = (
                sys.getsizeof(self._probation)
                + sys.getsizeof(self._protected)
                + self._deadlines.table_bytes()
                + self._ghost_table_bytes
                + access.table_bytes()
            )
        self._set_protected_limit()

    # -- adapting the protected target -------------------------------------------------

    def _set_protected_limit(self) -> None:
        """The target less protected's share of the tables, in proportion to its keys.

        Per key rather than each table's own size: a dict never shrinks until
        it is written, so protected's table would be charged for keys that
        were demoted long ago."""
        stored = len(self._probation) + len(self._protected)
        share = self._structure_bytes * len(self._protected) // stored if stored else 0
        self._protected_limit = self._protected_target - share

    def _grow_protected(self, cost: int) -> None:
        """Protected was too small for a key it had: grow the target (ARC: by max(1, |B1|/|B2|) entries)."""
        step = cost * max(1, self._ghosts_of_probation // max(1, self._ghosts_of_protected))
        self._protected_target = min(self._limit, self._protected_target + step)
        self._set_protected_limit()

    def _shrink_protected(self, cost: int) -> None:
        """Probation was too small for a key it had: shrink the target (ARC: by max(1, |B2|/|B1|) entries).

        Protected is not demoted at once: its LRU keys move when it next takes a key."""
        step = cost * max(1, self._ghosts_of_protected // max(1, self._ghosts_of_probation))
        self._protected_target = max(0, self._protected_target - step)
        self._set_protected_limit()

    def _adapt_to_ghost(self, key: bytes, cost: int) -> None:
        """A new key was written: if it is a remembered ghost, adapt the target and forget it."""
        ghosts = self._ghosts
        slot, tag = ghost_position(key, self._ghost_slots)
        state = ghosts[slot]
        if state & _TAG_MASK != tag or state & _STATE_MASK < _GHOST_OF_PROBATION:
            return
        # ARC's ratio counts the ghost being hit: measured before it is forgotten.
        if state & _STATE_MASK == _GHOST_OF_PROBATION:
            self._shrink_protected(cost)
        else:
            self._grow_protected(cost)
        self._forget_ghost(state)
        ghosts[slot] = 0

    def _remember_evicted(self, key: bytes, from_probation: bool) -> None:
        ghosts = self._ghosts
        slot, tag = ghost_position(key, self._ghost_slots)
        state = ghosts[slot]
        demoted = state == tag | _DEMOTED or not from_probation
        self._forget_ghost(state)
        if demoted:
            ghosts[slot] = tag | _GHOST_OF_PROTECTED
            self._ghosts_of_protected += 1
        else:
            ghosts[slot] = tag | _GHOST_OF_PROBATION
            self._ghosts_of_probation += 1

    def _forget_ghost(self, state: int) -> None:
        """Uncount what a slot held (a ghost or a demoted mark) before it is overwritten."""
        kind = state & _STATE_MASK
        if kind == _GHOST_OF_PROBATION:
            self._ghosts_of_probation -= 1
        elif kind == _GHOST_OF_PROTECTED:
            self._ghosts_of_protected -= 1
        elif kind == _DEMOTED:
            self._demoted_marks -= 1

    # -- composition -------------------------------------------------------------------

    def set_listener(self, listener: ChangeListener | None) -> None:
        """Tell ``listener`` of every change from now on (None: nobody). One at a time."""
        self._listener = listener

    @property
    def memory(self) -> MemoryBackend:
        """This store itself: what the node calls directly (aegiskv.node.operations), as for
        the WAL backend's store. AegisKV's own backends only; not in the plugin API."""
        return self

    # -- introspection -------------------------------------------------------------

    def keys(self) -> list[bytes]:
        now = self._clock()
        deadlines = self._deadlines
        result = []
        for segment in (self._probation, self._protected):
            for key in segment:
                deadline = deadlines.deadline(key) if len(deadlines) else None
                if deadline is None or deadline > now:
                    result.append(key)
        return result

    def access_frequency(self, key: bytes) -> int:
        """OBJECT FREQ of a stored key: its LFU count decayed to now (aegiskv.backends.access). Not an access."""
        self._tick_access()
        return self._access.frequency(key)

    def idle_seconds(self, key: bytes) -> int:
        """OBJECT IDLETIME of a stored key: seconds since its last access, in whole minutes. Not an access."""
        self._tick_access()
        return self._access.idle_seconds(key)

    def hot_keys(self) -> list[tuple[bytes, int]]:
        """(key, LFU count) of the hottest stored keys, hottest first (at most HOT_KEYS_TRACKED)."""
        self._tick_access()
        protected, probation = self._protected_map, self._probation_map
        return [(key, count) for key, count in self._access.hot_keys() if key in protected or key in probation]

    def _sample_access(self, key: bytes, created: bool) -> None:
        """The access that came due: it counts for the _access_sample accesses since the last one.

        Counting every access cost 11% more instructions per GET interpreted
        (bench/hot_path.py --instructions, random keys); a countdown costs a
        subtraction. A hot key is sampled in proportion to its share of the
        accesses, so its count converges on Redis's; a key read a few times may
        be missed or counted for many. ``access_sample = 1`` counts every access,
        a new key from LFU_INIT, as Redis does.
        """
        sample = self._access_sample
        self._until_sample = sample
        if created:
            self._access.created(key)
            if sample == 1:
                return  # Redis: creating a key is not an access
        self._access.touch(key, sample)

    def _tick_access(self) -> None:
        """Move the access counters' clock; at a new minute, drop hot keys no longer stored."""
        access = self._access
        if access.tick(self._clock()):
            protected, probation = self._protected_map, self._probation_map
            access.forget_hot([key for key, _count in access.hot_keys() if key in protected or key in probation])

    def key_snapshot(self) -> list[bytes]:
        # dict.keys walks the table at C speed; iterating an OrderedDict is 20x slower.
        return [*dict.keys(self._probation), *dict.keys(self._protected)]

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def stats(self) -> BackendStats:
        used_bytes, limit_bytes = self.memory_bounds()
        return BackendStats(
            keys=len(self),
            keys_with_ttl=len(self._deadlines),
            used_bytes=used_bytes,
            limit_bytes=limit_bytes,
            evictions=self.evictions,
            expirations=self.expirations,
            average_ttl_ms=self._average_ttl_ms(),
        )

    def set_memory_limit(self, limit_bytes: int) -> bool:
        """See Backend.set_memory_limit: protected's target is kept within the new bound."""
        self._limit = limit_bytes
        self._protected_target = min(self._protected_target, limit_bytes)
        self._measure_structures()  # also recomputes protected's limit
        if self._probation_bytes + self._protected_bytes + self._structure_bytes > limit_bytes and not self._recovering:
            self._evict(keep=None)
        return True

    def memory_bounds(self) -> tuple[int, int]:
        # The tables' size as last measured (at most 64 writes old), the same
        # figure eviction works with, so used_bytes <= limit holds as reported.
        return self._probation_bytes + self._protected_bytes + self._structure_bytes, self._limit

    def _average_ttl_ms(self) -> int:
        # Its own generator: drawing from self._rng would change which keys the
        # active expiry samples next, and so runs that are otherwise repeatable.
        deadlines = self._deadlines
        # Every key when there are few, else a sample; as Redis, keys whose deadline has
        # passed (not yet removed) are left out rather than counted as 0 ms.
        pairs = iter(deadlines) if len(deadlines) <= _TTL_SAMPLE else deadlines.sample(_TTL_SAMPLE, self._stats_rng)
        now = self._clock()
        left = [deadline - now for _key, deadline in pairs if deadline > now]
        return sum(left) // len(left) if left else 0

    @property
    def last_version(self) -> int:
        return self._version

    def export(self) -> tuple[list[bytes], list[bytes | memoryview], Callable[[bytes], int]]:
        """A point-in-time copy for snapshots: keys, their version+value blobs (same order), and a
        function giving a key's deadline (NO_EXPIRY when none).

        Copies references only: the blobs are immutable bytes, so the copy stays
        consistent while the caller writes it out without the lock and the cache
        keeps changing. ``dict.keys``/``dict.values`` walk the tables at C speed
        (0.09 s for 1M keys here, where iterating the OrderedDicts' items took 1.1 s).
        A value APPEND or SETRANGE grows in place (a bytearray) comes as a view: while the
        snapshot holds it, write_range copies the value before changing it (copy on write),
        so the snapshot reads it as it was without this call copying it under the lock.
        """
        keys = [*dict.keys(self._probation), *dict.keys(self._protected)]
        stored = [*dict.values(self._probation), *dict.values(self._protected)]
        blobs: list[bytes | memoryview]
        if self._growable_made:
            blobs = [blob if isinstance(blob, bytes) else memoryview(blob).toreadonly() for blob in stored]
        else:
            blobs = cast("list[bytes | memoryview]", stored)
        packed = dict(self._deadline_map)
        unpack = ExpiryIndex.unpack_deadline

        def deadline(key: bytes) -> int:
            value = packed.get(key)
            return NO_EXPIRY if value is None else unpack(value)

        return keys, blobs, deadline

    def bulk_load(
        self,
        keys: list[bytes],
        blobs: list[bytes],
        deadlines: Sequence[int],
        key_lengths: Sequence[int],
        blob_lengths: Sequence[int],
        max_version: int,
    ) -> int:
        """Insert snapshot entries (version+value blobs, absent from the keyspace); returns how many.

        Recovery only: one C-level ``update`` instead of put() per entry, one
        eviction pass at the end. Entries whose deadline has passed are dropped
        (a restart never revives a TTL) -- unless a recovery is under way: the
        log after the snapshot may still change their deadline, so
        :meth:`finish_recovery` drops them once it has been replayed.
        """
        probation = self._probation
        before = len(probation)
        probation.update(zip(keys, blobs))
        # Count lengths first (Counter counts at C speed): entries of a cache tend
        # to share a few sizes, so object_bytes() runs per distinct length only.
        charged = sum(object_bytes(length) * count for length, count in Counter(key_lengths).items())
        charged += sum(object_bytes(length) * count for length, count in Counter(blob_lengths).items())
        self._probation_bytes += charged
        dropped = 0
        if any(deadlines):
            now = self._clock()
            for key, deadline, key_length in zip(keys, deadlines, key_lengths):
                if deadline:
                    if deadline <= now and not self._recovering:
                        dropped += self._remove(key)
                    else:
                        self._deadlines.set(key, deadline)
                        self._probation_bytes += _ttl_cost(key_length)
        self._version = max(self._version, max_version)
        self._measure_structures()
        over = self._probation_bytes + self._protected_bytes + self._structure_bytes > self._limit
        if over and probation and not self._recovering:
            self._evict(keep=next(reversed(probation)))
        return len(probation) - before

    # -- recovery ------------------------------------------------------------------

    def begin_recovery(self) -> None:
        """Replay mode: apply what a log says, exactly as it was logged.

        A log records writes but not reads, so replaying it through the normal
        paths would evict different keys than the live server did (and the
        logged evictions would then remove more); and a write whose own deadline
        has passed may have been given a new one by a later record. So until
        :meth:`finish_recovery`: no eviction, no expiry, and the versions the
        records carry are kept (a key's version is its compare-and-set token).
        """
        self._recovering = True

    def finish_recovery(self) -> tuple[int, int]:
        """Leave replay mode: drop what expired meanwhile, evict down to the budget.

        Returns (expired, evicted); both are reported through ``on_drop`` like
        any other drop, so a log records them.
        """
        self._recovering = False
        now = self._clock()
        expired_keys = [key for key, deadline in self._deadlines if deadline <= now]
        for key in expired_keys:
            self._remove(key)
            self.expirations += 1
            if self._listener is not None:
                self._listener.dropped(key)
        evictions_before = self.evictions
        self._measure_structures()
        # Entries alone over the budget: max-memory was lowered since they were
        # written. Only the table overhead over it is not a reason to evict: the
        # server evicted (and logged) by the tables it had, and replay built
        # differently sized ones; the next write settles that difference.
        if self._probation_bytes + self._protected_bytes > self._limit:
            self._evict(keep=None)
        return len(expired_keys), self.evictions - evictions_before

    @property
    def protected_target(self) -> int:
        """Bytes the protected segment may hold, its share of the tables included (adapts; see the module)."""
        return self._protected_target

    def segments(self) -> tuple[list[bytes], list[bytes]]:
        """(probation, protected) keys, least recently used first. For tests and INFO."""
        return list(self._probation), list(self._protected)

    def check(self) -> None:
        """Assert the internal invariants (used by stress and property tests)."""
        self._deadlines.check()
        assert not (self._probation.keys() & self._protected.keys())
        for segment, counted in ((self._probation, self._probation_bytes), (self._protected, self._protected_bytes)):
            total = sum(stored_cost(len(key), blob, key in self._deadline_map) for key, blob in segment.items())
            assert total == counted, (total, counted)
        assert self._probation_bytes + self._protected_bytes + self._structure_bytes <= self._limit or len(self) <= 1
        assert 0 <= self._protected_target <= self._limit
        states = Counter(state & _STATE_MASK for state in self._ghosts)
        assert (states[_GHOST_OF_PROBATION], states[_GHOST_OF_PROTECTED], states[_DEMOTED]) == (
            self._ghosts_of_probation,
            self._ghosts_of_protected,
            self._demoted_marks,
        )
        assert len(self._ghosts) == self._ghost_slots
        assert len(self) <= self._access.slots * 2 or self._writes_since_measure
        assert sys.getsizeof(self._ghosts) == self._ghost_table_bytes
        for key, _deadline in self._deadlines:
            assert key in self._probation or key in self._protected
