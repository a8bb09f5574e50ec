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
* Memory, counted in bytes. A snapshot costs its list and, at worst, every key
  it names: a key deleted or evicted since stays alive until the snapshot goes.
  All snapshots together may cost at most a quarter of max-memory
  (:func:`snapshot_budget`). A new snapshot over it first makes the snapshots unused
  for ``grace_seconds`` give way, least recently used first; if that is not
  enough the new scan is refused with an error that says so (retry later).
  A scan under way is never ended to make room: failing a SCAN 0 costs its
  client nothing, failing a scan half done costs it the half.
* Idle time. A snapshot unused for ``idle_seconds`` is dropped (the node's
  housekeeping timer calls :meth:`ScanCursors.drop_idle`, so this happens even
  if no SCAN comes): it would keep deleted keys' memory alive with nobody to
  page it.

A dropped or made-up cursor is refused with an error rather than answered with
an empty page: silently ending a scan early would break the guarantee.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aegiskv.errors import CommandError, ErrorKind

MAX_SNAPSHOT_ID: Final = 2**31 - 1  # the cursor is id << 32 | offset: 63 bits, a valid unsigned 64-bit cursor
MAX_OFFSET: Final = 2**32 - 1
MAX_SNAPSHOTS: Final = 10_000  # bounds the bookkeeping when the snapshots are tiny
DEFAULT_IDLE_SECONDS: Final = 600.0
DEFAULT_GRACE_SECONDS: Final = 30.0
# What one key costs a snapshot at worst: its list slot, and the key itself (a bytes
# object: 33 bytes of header on 64-bit CPython, then its data) should it be deleted.
SLOT_BYTES: Final = 8
KEY_OBJECT_BYTES: Final = 33
COST_SAMPLE: Final = 256

# Snapshots are not charged against max-memory (a full node still scans), so their
# budget bounds how far past it they can take the process.
MAX_MEMORY_SHARE: Final = 4  # snapshots may hold a quarter of max-memory
MIN_BUDGET_BYTES: Final = 64 * 1024 * 1024  # when a backend has no limit: the data's size, or this

EXPIRED_CURSOR: Final = "invalid cursor: it expired or was not handed out by this node; start the SCAN again at 0"


def snapshot_cost(keys: list[bytes], rng: random.Random | None = None) -> int:
    """Bytes a snapshot of ``keys`` may hold: its list, and every key should all be deleted meanwhile.

    Above ``COST_SAMPLE`` keys the key bytes are estimated from that many drawn
    at random (from ``rng``): summing every length would cost more than the copy
    itself (6.6 against 4.4 ms for 300,000 keys), under the node's lock, and
    evenly spaced ones can all fall on one period of the key names.
    """
    count = len(keys)
    if count <= COST_SAMPLE:
        key_bytes = sum(map(len, keys))
    else:
        key_bytes = sum(map(len, (rng or random).choices(keys, k=COST_SAMPLE))) * count // COST_SAMPLE
    return count * (SLOT_BYTES + KEY_OBJECT_BYTES) + key_bytes


def snapshot_budget(limit_bytes: int, used_bytes: int) -> int:
    """Bytes all snapshots may hold: a quarter of max-memory (``limit_bytes``), or with none, the data's size."""
    if limit_bytes > 0:
        return limit_bytes // MAX_MEMORY_SHARE
    return max(used_bytes, MIN_BUDGET_BYTES)


@dataclass
class _KeyList:
    """One copy of the key list, shared by the snapshots taken while nothing was written."""

    keys: list[bytes]
    version: int  # the backend's last_version when it was taken
    cost: int
    holders: int = 0


@dataclass
class _Snapshot:
    key_list: _KeyList
    last_used: float


class ScanCursors:
    """The live snapshots by id, least recently used first. Not thread-safe: the node's lock guards it."""

    def __init__(
        self,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._rng = rng or random.Random()
        self.grace_seconds = grace_seconds
        self._clock = clock
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._newest: _KeyList | None = None  # the key list taken last, while some snapshot holds it
        self._held_bytes = 0  # cost of the distinct key lists the snapshots hold
        self._next_id = 1

    @property
    def held_bytes(self) -> int:
        """What the live snapshots may hold (each shared list counted once), by :func:`snapshot_cost`."""
        return self._held_bytes

    def __len__(self) -> int:
        return len(self._snapshots)

    def page(
        self,
        cursor: int,
        count: int,
        take_keys: Callable[[], list[bytes]],
        version: int,
        budget_bytes: Callable[[], int],
    ) -> tuple[int, list[bytes]]:
        """The snapshot's next ``count`` keys (some may since be deleted) and the cursor after them (0: done).

        ``take_keys`` copies the key list when a new snapshot is needed;
        ``version`` is the backend's last version now; ``budget_bytes`` says
        what all snapshots may cost, asked only when a new copy is taken.
        """
        now = self._clock()
        self.drop_idle(now)
        if cursor == 0:
            snapshot_id, snapshot = self._start(take_keys, version, budget_bytes, now)
            offset = 0
        else:
            snapshot_id, offset = cursor >> 32, cursor & MAX_OFFSET
            found = self._snapshots.get(snapshot_id)
            if found is None or offset == 0:  # every cursor handed out is past the first page
                raise CommandError(ErrorKind.INVALID, EXPIRED_CURSOR)
            snapshot = found
            snapshot.last_used = now
            self._snapshots.move_to_end(snapshot_id)
        all_keys = snapshot.key_list.keys
        keys = all_keys[offset : offset + count]
        offset += len(keys)
        if offset >= len(all_keys):
            self._drop(snapshot_id)
            return 0, keys
        return snapshot_id << 32 | offset, keys

    def forget_keys(self) -> None:
        """Every key is gone (FLUSHALL): scans under way end at their next call, holding nothing meanwhile."""
        emptied = _KeyList([], -1, 0, len(self._snapshots))
        for snapshot in self._snapshots.values():
            snapshot.key_list = emptied
        self._newest = None  # a version of -1 matches no backend, so no new scan shares it
        self._held_bytes = 0

    def drop_idle(self, now: float | None = None) -> int:
        """Drop the snapshots unused for ``idle_seconds``; returns how many went."""
        now = self._clock() if now is None else now
        dropped = 0
        while self._drop_oldest_if_unused_for(self.idle_seconds, now):
            dropped += 1
        return dropped

    def _start(
        self, take_keys: Callable[[], list[bytes]], version: int, budget_bytes: Callable[[], int], now: float
    ) -> tuple[int, _Snapshot]:
        newest = self._newest
        if newest is not None and newest.version == version:
            key_list = newest  # nothing written since it was taken (see the module docstring)
            self._make_room(0, budget_bytes, now)
        else:
            keys = take_keys()
            if len(keys) > MAX_OFFSET:
                raise CommandError(ErrorKind.INVALID, "too many keys for one SCAN snapshot")
            key_list = _KeyList(keys, version, snapshot_cost(keys, self._rng))
            self._make_room(key_list.cost, budget_bytes, now)
            self._newest = key_list
        if key_list.holders == 0:
            self._held_bytes += key_list.cost
        key_list.holders += 1
        snapshot_id = self._next_id
        self._next_id = snapshot_id % MAX_SNAPSHOT_ID + 1
        self._drop(snapshot_id)  # an id 2**31 scans old, if it is somehow still there
        snapshot = _Snapshot(key_list, now)
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id, snapshot

    def _make_room(self, cost: int, budget_bytes: Callable[[], int], now: float) -> None:
        """Let snapshots unused for the grace period go until one costing ``cost`` more fits; else refuse.

        With no other snapshot left, the new one is taken whatever its size:
        one scan at a time always works.
        """
        budget = budget_bytes() if cost else 0

        def fits() -> bool:
            if len(self._snapshots) >= MAX_SNAPSHOTS:
                return False
            return not cost or not self._snapshots or self._held_bytes + cost <= budget

        while not fits() and self._drop_oldest_if_unused_for(self.grace_seconds, now):
            pass
        if fits():
            return
        live = len(self._snapshots)
        if live >= MAX_SNAPSHOTS:
            held = f"{live} snapshots, the most this node keeps"
        else:
            held = (
                f"{live} snapshot{'' if live == 1 else 's'} holding {self._held_bytes} bytes, and this one "
                f"needs {cost} more of the node's {budget}-byte budget for them"
            )
        raise CommandError(
            ErrorKind.INVALID,
            f"too many SCANs under way ({held}); retry when one ends "
            f"(a scan unused for {self.grace_seconds:g} s gives way)",
        )

    def _drop_oldest_if_unused_for(self, seconds: float, now: float) -> bool:
        # Least recently used first, so the idle ones are at the front.
        oldest = next(iter(self._snapshots.items()), None)
        if oldest is None or now - oldest[1].last_used < seconds:
            return False
        self._drop(oldest[0])
        return True

    def _drop(self, snapshot_id: int) -> None:
        snapshot = self._snapshots.pop(snapshot_id, None)
        if snapshot is None:
            return
        key_list = snapshot.key_list
        key_list.holders -= 1
        if key_list.holders == 0:
            self._held_bytes -= key_list.cost
            if key_list is self._newest:
                self._newest = None
