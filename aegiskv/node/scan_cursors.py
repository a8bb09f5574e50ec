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
  All snapshots together may cost a quarter of max-memory
  (:func:`snapshot_budget`), though MIN_LISTS distinct copies are always
  allowed. Past that, snapshots past their grace period give way, least
  recently used first: 30 s unused, or 1 s for one whose client never asked
  for its second page (``scan_iter`` then ``break``, an "any keys?" probe).
  If dropping those would not make room, none is dropped and the new scan is
  refused with an error that says so (retry later), before its copy is taken.
  Failing a SCAN 0 costs its client nothing; ending a scan half done costs it
  the half, so that happens only to scans gone quiet.
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
FIRST_PAGE_GRACE_SECONDS: Final = 1.0
MIN_LISTS: Final = 4  # distinct key lists always allowed, whatever the budget
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
    pages: int = 1  # pages handed out: a scan still at 1 may be a probe its client gave up on


class ScanCursors:
    """The live snapshots by id, least recently used first. Not thread-safe: the node's lock guards it."""

    def __init__(
        self,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        first_page_grace_seconds: float = FIRST_PAGE_GRACE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.grace_seconds = grace_seconds
        self.first_page_grace_seconds = first_page_grace_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._newest: _KeyList | None = None  # the key list taken last, while some snapshot holds it
        self._held_bytes = 0  # cost of the distinct key lists the snapshots hold
        self._costly_lists = 0  # distinct key lists held that cost anything (not emptied by a flush)
        self._key_bytes_per_key = 16.0  # of the last list taken: estimates a new one before copying
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
        stored_keys: int,
        budget_bytes: Callable[[], int],
    ) -> tuple[int, list[bytes]]:
        """The snapshot's next ``count`` keys (some may since be deleted) and the cursor after them (0: done).

        ``take_keys`` copies the key list when a new snapshot is needed;
        ``version`` is the backend's last version now and ``stored_keys`` its
        key count; ``budget_bytes`` says what all snapshots may cost, asked
        only when a new copy is due.
        """
        now = self._clock()
        self.drop_idle(now)
        if cursor == 0:
            snapshot_id, snapshot = self._start(take_keys, version, stored_keys, budget_bytes, now)
            offset = 0
        else:
            snapshot_id, offset = cursor >> 32, cursor & MAX_OFFSET
            found = self._snapshots.get(snapshot_id)
            if found is None or offset == 0:  # every cursor handed out is past the first page
                raise CommandError(ErrorKind.INVALID, EXPIRED_CURSOR)
            snapshot = found
            snapshot.last_used = now
            snapshot.pages += 1
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
        emptied = _KeyList([], -1, 0, len(self._snapshots))  # version -1: no new scan shares it
        for snapshot in self._snapshots.values():
            snapshot.key_list = emptied
        self._newest = None
        self._held_bytes = 0
        self._costly_lists = 0

    def drop_idle(self, now: float | None = None) -> int:
        """Drop the snapshots unused for ``idle_seconds``; returns how many went."""
        now = self._clock() if now is None else now
        dropped = 0
        while self._snapshots:
            snapshot_id, snapshot = next(iter(self._snapshots.items()))  # least recently used
            if now - snapshot.last_used < self.idle_seconds:
                break
            self._drop(snapshot_id)
            dropped += 1
        return dropped

    def _start(
        self,
        take_keys: Callable[[], list[bytes]],
        version: int,
        stored_keys: int,
        budget_bytes: Callable[[], int],
        now: float,
    ) -> tuple[int, _Snapshot]:
        newest = self._newest
        if newest is not None and newest.version == version:
            self._make_room(0, 0, now)  # nothing written since it was taken (see the module docstring)
            key_list = newest
        else:
            budget = budget_bytes()
            # Refuse before copying when even an estimate cannot fit: the copy holds the node's lock.
            estimate = int(stored_keys * (SLOT_BYTES + KEY_OBJECT_BYTES + self._key_bytes_per_key))
            self._make_room(estimate, budget, now)
            keys = take_keys()
            if len(keys) > MAX_OFFSET:
                raise CommandError(ErrorKind.INVALID, "too many keys for one SCAN snapshot")
            key_list = _KeyList(keys, version, snapshot_cost(keys, self._rng))
            if keys:
                self._key_bytes_per_key = key_list.cost / len(keys) - SLOT_BYTES - KEY_OBJECT_BYTES
            self._make_room(key_list.cost, budget, now)
        if key_list.holders == 0:
            self._held_bytes += key_list.cost
            self._costly_lists += 1 if key_list.cost else 0
        key_list.holders += 1
        self._newest = key_list
        snapshot_id = self._next_id
        self._next_id = snapshot_id % MAX_SNAPSHOT_ID + 1
        self._drop(snapshot_id)  # an id 2**31 scans old, if it is somehow still there
        snapshot = _Snapshot(key_list, now)
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id, snapshot

    def _make_room(self, cost: int, budget: int, now: float) -> None:
        """Make room for a snapshot costing ``cost`` more, or refuse it (CommandError).

        It fits while fewer than MAX_SNAPSHOTS are live and either fewer than
        MIN_LISTS distinct lists are held or the bytes stay within ``budget``.
        Otherwise the snapshots past their grace period give way, least
        recently used first -- but only if dropping them makes it fit: a scan
        is never ended for nothing.
        """

        def fits(live: int, lists: int, held: int) -> bool:
            return live < MAX_SNAPSHOTS and (cost == 0 or lists < MIN_LISTS or held + cost <= budget)

        live, lists, held = len(self._snapshots), self._costly_lists, self._held_bytes
        if fits(live, lists, held):
            return
        chosen: list[int] = []
        holders_left: dict[int, int] = {}  # id(key list) -> its holders once the chosen ones go
        for snapshot_id, snapshot in self._snapshots.items():
            grace = self.first_page_grace_seconds if snapshot.pages == 1 else self.grace_seconds
            if now - snapshot.last_used < grace:
                continue
            chosen.append(snapshot_id)
            live -= 1
            key_list = snapshot.key_list
            left = holders_left.get(id(key_list), key_list.holders) - 1
            holders_left[id(key_list)] = left
            if left == 0:
                held -= key_list.cost
                lists -= 1 if key_list.cost else 0
            if fits(live, lists, held):
                for chosen_id in chosen:
                    self._drop(chosen_id)
                return
        if len(self._snapshots) >= MAX_SNAPSHOTS:
            what = f"{len(self._snapshots)} snapshots, the most this node keeps"
        else:
            what = (
                f"{self._costly_lists} key lists holding {self._held_bytes} bytes, and this one "
                f"needs about {cost} more of the node's {budget}-byte budget for them"
            )
        raise CommandError(
            ErrorKind.INVALID,
            f"too many SCANs under way ({what}); retry when one ends (a scan unused for "
            f"{self.grace_seconds:g} s gives way, one never continued past its first page after "
            f"{self.first_page_grace_seconds:g} s)",
        )

    def _drop(self, snapshot_id: int) -> None:
        snapshot = self._snapshots.pop(snapshot_id, None)
        if snapshot is None:
            return
        key_list = snapshot.key_list
        key_list.holders -= 1
        if key_list.holders == 0:
            self._held_bytes -= key_list.cost
            self._costly_lists -= 1 if key_list.cost else 0
            if key_list is self._newest:
                self._newest = None
