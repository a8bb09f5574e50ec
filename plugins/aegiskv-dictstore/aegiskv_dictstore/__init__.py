"""A dict with least-recently-used eviction, as an AegisKV storage backend: an example plugin.

Everything it needs comes from :mod:`aegiskv.plugin_api`. The keyspace is one
``OrderedDict`` in access order, oldest first; a write that takes the store
over its budget evicts from the front. Expiry is lazy (a key read at or after
its deadline is removed) and sampled (:meth:`DictStoreBackend.expire_step`
looks at random keys among those with a deadline), as the contract asks.

Memory is charged per entry as its key and value lengths plus a fixed
overhead: an estimate, not a measurement, which is all the contract needs
(``used_bytes`` never above ``limit_bytes``). The node calls a backend under
its own lock, so nothing here locks.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict

from aegiskv.plugin_api import (
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

__all__ = ["AEGISKV_PLUGIN_API", "DictStoreBackend"]

# The plugin API this plugin was written against (aegiskv.plugin_api.API_VERSION):
# AegisKV refuses to load it under another one rather than fail later.
AEGISKV_PLUGIN_API = 1

ENTRY_OVERHEAD = 96  # bytes charged per key beyond its key and value: the dict slot and the tuple
TTL_OVERHEAD = 16  # and for a key with a deadline: its slot in the deadline table


def entry_cost(key: bytes, value: bytes, has_ttl: bool) -> int:
    """What one entry is charged against the budget."""
    return len(key) + len(value) + ENTRY_OVERHEAD + (TTL_OVERHEAD if has_ttl else 0)


class DictStoreBackend(Backend):
    """The whole keyspace in one dict, least recently used first."""

    name = "dictstore"

    def __init__(self, options: BackendOptions, clock: Clock = wall_clock_ms) -> None:
        self._clock = clock
        self._limit = options.max_memory_bytes
        self._last_version = options.first_version
        # key -> (value, version, deadline), oldest access first.
        self._entries: OrderedDict[bytes, tuple[bytes, int, int]] = OrderedDict()
        self._deadlines: dict[bytes, int] = {}  # the keys that have one
        self._used = 0
        self._evictions = 0
        self._expirations = 0
        self._rng = random.Random()

    # -- reads -------------------------------------------------------------------------

    def _live(self, key: bytes) -> tuple[bytes, int, int] | None:
        """The key's entry, or None when absent; an expired key is removed on the way."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline = entry[2]
        if deadline != NO_EXPIRY and deadline <= self._clock():
            self._remove(key)
            self._expirations += 1
            return None
        return entry

    def get(self, key: bytes) -> Value | None:
        entry = self._live(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def get_entry(self, key: bytes, touch: bool = True) -> Entry | None:
        entry = self._live(key)
        if entry is None:
            return None
        if touch:
            self._entries.move_to_end(key)
        return Entry(*entry)

    # -- writes ------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, expires_at_ms: int = NO_EXPIRY, version: int | None = None) -> int:
        if version is None or version <= self._last_version:
            version = self._last_version + 1
        self._store(key, value, expires_at_ms, version)
        return version

    def apply(self, key: bytes, value: bytes, expires_at_ms: int, version: int) -> None:
        self._store(key, value, expires_at_ms, version)

    def _store(self, key: bytes, value: bytes, expires_at_ms: int, version: int) -> None:
        cost = entry_cost(key, value, expires_at_ms != NO_EXPIRY)
        if cost > self._limit:  # refused before anything changes
            raise ValueTooLarge(f"entry of {cost} bytes exceeds max-memory of {self._limit} bytes")
        self._remove(key)
        self._entries[key] = (bytes(value), version, expires_at_ms)
        if expires_at_ms != NO_EXPIRY:
            self._deadlines[key] = expires_at_ms
        self._used += cost
        self._last_version = max(self._last_version, version)
        self._evict(keep=key)

    def delete(self, key: bytes) -> bool:
        if self._live(key) is None:
            return False
        self._remove(key)
        return True

    def set_expiry(self, key: bytes, expires_at_ms: int) -> bool:
        entry = self._live(key)
        if entry is None:
            return False
        value, version, _ = entry
        self._remove(key)
        self._entries[key] = (value, version, expires_at_ms)
        self._entries.move_to_end(key)
        if expires_at_ms != NO_EXPIRY:
            self._deadlines[key] = expires_at_ms
        self._used += entry_cost(key, value, expires_at_ms != NO_EXPIRY)
        self._evict(keep=key)
        return True

    def flush(self) -> int:
        removed = len(self._entries)
        self._entries.clear()
        self._deadlines.clear()
        self._used = 0
        return removed

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._deadlines.pop(key, None)
            self._used -= entry_cost(key, entry[0], entry[2] != NO_EXPIRY)

    def _evict(self, keep: bytes) -> None:
        """Drop the least recently used keys until the store fits (never ``keep``)."""
        while self._used > self._limit:
            victim = next(iter(self._entries))
            if victim == keep:  # only the new entry is left: it fits, its cost was checked
                break
            self._remove(victim)
            self._evictions += 1

    # -- expiry ------------------------------------------------------------------------

    def expire_step(self, sample_size: int, budget_seconds: float) -> int:
        """Redis's active expiry: sample keys with a deadline, again while over a quarter had expired."""
        give_up_at = time.perf_counter() + budget_seconds
        removed = 0
        while self._deadlines:
            sample = self._rng.sample(list(self._deadlines), min(sample_size, len(self._deadlines)))
            now = self._clock()
            expired = [key for key in sample if self._deadlines[key] <= now]
            for key in expired:
                self._remove(key)
                self._expirations += 1
            removed += len(expired)
            if len(expired) * 4 <= len(sample) or time.perf_counter() >= give_up_at:
                break
        return removed

    # -- introspection -----------------------------------------------------------------

    def keys(self) -> list[bytes]:
        now = self._clock()
        return [key for key, (_, _, deadline) in self._entries.items() if deadline == NO_EXPIRY or deadline > now]

    def key_snapshot(self) -> list[bytes]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> BackendStats:
        return BackendStats(
            keys=len(self._entries),
            keys_with_ttl=len(self._deadlines),
            used_bytes=self._used,
            limit_bytes=self._limit,
            evictions=self._evictions,
            expirations=self._expirations,
        )

    @property
    def last_version(self) -> int:
        return self._last_version
