"""Deadlines of the keys that have a TTL, with O(1) random sampling.

The active expiry sampler must find expired keys without scanning the whole
keyspace. Following Redis, it samples a few keys that carry a TTL at random and
removes the expired ones; when many of a sample were expired it samples again.
Random sampling needs random access, which a dict lacks, so the keys live in a
list as well, and removal swaps the last key into the hole (O(1)).

To keep the per-key cost low (it is charged to ``--max-memory``), the deadline
and the list position share one integer: ``deadline_ms << 32 | position``.
A heap of deadlines was the alternative; it expires exactly on time but keeps
stale entries for keys whose TTL changed, which grow without bound under churn.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator

_POSITION_BITS = 32
_POSITION_MASK = (1 << _POSITION_BITS) - 1


class ExpiryIndex:
    """Maps key -> deadline (wall-clock ms) for keys with a TTL. Not thread-safe."""

    __slots__ = ("_packed", "_keys")

    def __init__(self) -> None:
        self._packed: dict[bytes, int] = {}
        self._keys: list[bytes] = []

    @property
    def packed_map(self) -> dict[bytes, int]:
        """The live key -> packed value dict, for hot paths that only test membership."""
        return self._packed

    @staticmethod
    def unpack_deadline(packed: int) -> int:
        return packed >> _POSITION_BITS

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: bytes) -> bool:
        return key in self._packed

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        for key, packed in self._packed.items():
            yield key, packed >> _POSITION_BITS

    def deadline(self, key: bytes) -> int | None:
        packed = self._packed.get(key)
        return None if packed is None else packed >> _POSITION_BITS

    def set(self, key: bytes, deadline_ms: int) -> None:
        packed = self._packed.get(key)
        if packed is None:
            position = len(self._keys)
            self._keys.append(key)
        else:
            position = packed & _POSITION_MASK
        self._packed[key] = deadline_ms << _POSITION_BITS | position

    def discard(self, key: bytes) -> None:
        packed = self._packed.pop(key, None)
        if packed is None:
            return
        position = packed & _POSITION_MASK
        last = self._keys.pop()
        if position < len(self._keys):
            # Move the last key into the hole left by the removed one.
            self._keys[position] = last
            self._packed[last] = (self._packed[last] & ~_POSITION_MASK) | position

    def table_bytes(self) -> int:
        """Bytes of the index's own tables (the dict and the list, not the keys)."""
        return sys.getsizeof(self._packed) + sys.getsizeof(self._keys)

    def clear(self) -> None:
        self._packed.clear()
        self._keys.clear()

    def sample(self, count: int, rng: random.Random) -> list[tuple[bytes, int]]:
        """Up to ``count`` random (key, deadline) pairs, possibly with repeats."""
        keys = self._keys
        if not keys:
            return []
        packed = self._packed
        picks = [keys[int(rng.random() * len(keys))] for _ in range(min(count, len(keys)))]
        return [(key, packed[key] >> _POSITION_BITS) for key in picks]

    def check(self) -> None:
        """Assert the internal invariants (used by stress tests)."""
        assert len(self._keys) == len(self._packed)
        for position, key in enumerate(self._keys):
            assert self._packed[key] & _POSITION_MASK == position
