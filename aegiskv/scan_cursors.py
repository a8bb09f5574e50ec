"""SCAN's cursors: each names a snapshot of the key list and an offset into it.

A Python dict does not expose its hash-table positions, so the reverse-binary
cursor Redis walks its table with is not available without a second,
hash-ordered index that every new key would pay for on the write path. A SCAN
that starts at cursor 0 takes a snapshot of the key references instead (a
C-speed list copy, 8 bytes per key) and later calls page through it, skipping
keys deleted since. That gives Redis's guarantee: a key present for the whole
scan is returned at least once.

What bounds the snapshots, so abandoned scans cost little and active ones last:

* Sharing. While the backend has handed out no new version (no write at all),
  a new scan reuses the newest snapshot: every key it could miss was written
  after that snapshot, so not present for the whole of the new scan either.
  Concurrent scans of a read-mostly cache cost one copy.
* Memory. All snapshots together hold at most ``max(8 x keys, 1,000,000)``
  references; beyond that the least recently *used* are dropped first, so a
  scan that keeps calling outlives ones that were abandoned.
* Idle time. A snapshot unused for ``idle_seconds`` is dropped: it would keep
  deleted keys' memory alive (after FLUSHALL, say) with nobody to page it.

A dropped or made-up cursor is refused with an error rather than answered with
an empty page: silently ending a scan early would break the guarantee.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aegiskv.errors import CommandError, ErrorKind

MAX_SNAPSHOT_ID: Final = 2**31 - 1  # the cursor is id << 32 | offset: 63 bits, a valid unsigned 64-bit cursor
MAX_OFFSET: Final = 2**32 - 1
MIN_REFERENCE_BUDGET: Final = 1_000_000  # references (8 bytes each) every node may hold, however few keys it has
KEYSPACE_COPIES: Final = 8  # snapshot references allowed per stored key beyond that
MAX_SNAPSHOTS: Final = 10_000  # bounds the bookkeeping when the snapshots are tiny
DEFAULT_IDLE_SECONDS: Final = 600.0

EXPIRED_CURSOR: Final = "invalid cursor: it expired or was not handed out by this node; start the SCAN again at 0"


@dataclass
class _Snapshot:
    keys: list[bytes]
    version: int  # the backend's last_version when the key list was taken
    last_used: float


class ScanCursors:
    """The live snapshots by id, least recently used first. Not thread-safe: the node's lock guards it."""

    def __init__(self, idle_seconds: float = DEFAULT_IDLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._holders: dict[int, int] = {}  # id(key list) -> how many snapshots share it
        self._references = 0  # references held by the distinct key lists
        self._next_id = 1

    @property
    def references(self) -> int:
        """Key references the live snapshots hold (each shared list counted once)."""
        return self._references

    def __len__(self) -> int:
        return len(self._snapshots)

    def page(
        self,
        cursor: int,
        count: int,
        take_keys: Callable[[], list[bytes]],
        version: int,
        stored_keys: int,
    ) -> tuple[int, list[bytes]]:
        """The snapshot's next ``count`` keys (some may since be deleted) and the cursor after them (0: done).

        ``take_keys`` copies the key list when a new snapshot is needed;
        ``version`` is the backend's last version now, ``stored_keys`` its key count.
        """
        now = self._clock()
        self._drop_idle(now)
        if cursor == 0:
            snapshot_id, snapshot = self._start(take_keys, version, now)
            offset = 0
        else:
            snapshot_id, offset = cursor >> 32, cursor & MAX_OFFSET
            found = self._snapshots.get(snapshot_id)
            if found is None:
                raise CommandError(ErrorKind.INVALID, EXPIRED_CURSOR)
            snapshot = found
            snapshot.last_used = now
            self._snapshots.move_to_end(snapshot_id)
        keys = snapshot.keys[offset : offset + count]
        offset += len(keys)
        if offset >= len(snapshot.keys):
            self._drop(snapshot_id)
            next_cursor = 0
        else:
            next_cursor = snapshot_id << 32 | offset
        self._enforce_budget(stored_keys)
        return next_cursor, keys

    def forget_keys(self) -> None:
        """Every key is gone (FLUSHALL): scans under way end at their next call, holding nothing meanwhile."""
        for snapshot in self._snapshots.values():
            snapshot.keys = []
        self._holders = {id(snapshot.keys): 1 for snapshot in self._snapshots.values()}
        self._references = 0

    def _start(self, take_keys: Callable[[], list[bytes]], version: int, now: float) -> tuple[int, _Snapshot]:
        newest = next(reversed(self._snapshots.values()), None)
        if newest is not None and newest.version == version and newest.keys:
            keys = newest.keys  # nothing written since it was taken (see the module docstring)
        else:
            keys = take_keys()
            if len(keys) > MAX_OFFSET:
                raise CommandError(ErrorKind.INVALID, "too many keys for one SCAN snapshot")
        snapshot_id = self._next_id
        self._next_id = snapshot_id % MAX_SNAPSHOT_ID + 1
        self._drop(snapshot_id)  # an id 2**31 scans old, if it is somehow still there
        snapshot = _Snapshot(keys, version, now)
        self._snapshots[snapshot_id] = snapshot
        holders = self._holders.get(id(keys), 0)
        if holders == 0:
            self._references += len(keys)
        self._holders[id(keys)] = holders + 1
        return snapshot_id, snapshot

    def _drop(self, snapshot_id: int) -> None:
        snapshot = self._snapshots.pop(snapshot_id, None)
        if snapshot is None:
            return
        holders = self._holders[id(snapshot.keys)] - 1
        if holders:
            self._holders[id(snapshot.keys)] = holders
        else:
            del self._holders[id(snapshot.keys)]
            self._references -= len(snapshot.keys)

    def _drop_idle(self, now: float) -> None:
        # Least recently used first, so the idle ones are at the front.
        while self._snapshots:
            snapshot_id, snapshot = next(iter(self._snapshots.items()))
            if now - snapshot.last_used < self.idle_seconds:
                break
            self._drop(snapshot_id)

    def _enforce_budget(self, stored_keys: int) -> None:
        budget = max(KEYSPACE_COPIES * stored_keys, MIN_REFERENCE_BUDGET)
        # The most recently used snapshot stays, whatever its size: its scan is the one under way.
        while len(self._snapshots) > 1 and (self._references > budget or len(self._snapshots) > MAX_SNAPSHOTS):
            self._drop(next(iter(self._snapshots)))
