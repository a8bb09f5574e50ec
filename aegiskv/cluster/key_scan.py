"""Sort one snapshot of a node's keys into the shards being copied, a slice at a time (sans-IO).

A shard copy starts from the list of the shard's keys. The store keeps no index
by shard, so the list comes from a scan of every key: about 2 us a key in Python
(the shard of each is a CRC), seconds for a million. Done once per copy and in
one go, as it was, a join that moves 60 shards off a node holding 1M keys spent
minutes of the reactor's time on it, in stalls of seconds that every foreground
request on the node waited behind. :class:`ShardKeyScan` takes the key list once
for every copy waiting (the caller takes it under the node lock, with each
shard's position in its log at that moment) and sorts it in slices of bounded
time, between which the reactor serves requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

CHECK_EVERY = 256  # keys between two looks at the clock


class ShardKeyScan:
    """See the module docstring."""

    def __init__(self, keys: list[bytes], wanted: Iterable[int], shard_of_key: Callable[[bytes], int]) -> None:
        self._keys = keys
        self._total = len(keys)
        self._shard_of_key = shard_of_key
        self._next = 0
        self.buckets: dict[int, list[bytes]] = {shard: [] for shard in wanted}

    @property
    def done(self) -> bool:
        return self._next >= self._total

    @property
    def remaining(self) -> int:
        return self._total - self._next

    def step(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> bool:
        """Sort keys for about ``seconds`` (at least one slice of CHECK_EVERY); True once every key is sorted."""
        keys = self._keys
        shard_of_key = self._shard_of_key
        bucket_of = self.buckets.get
        deadline = clock() + seconds
        start = self._next
        total = len(keys)
        while start < total:
            end = min(start + CHECK_EVERY, total)
            for key, shard in zip(keys[start:end], map(shard_of_key, keys[start:end])):
                bucket = bucket_of(shard)
                if bucket is not None:
                    bucket.append(key)
            start = end
            if clock() >= deadline:
                break
        self._next = start
        if start >= total:
            self._keys = []  # the snapshot is no longer needed: let it go now
            return True
        return False
