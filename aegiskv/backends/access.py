"""Per-key access counts for OBJECT FREQ, OBJECT IDLETIME and the hot keys report.

The counter is Redis's LFU counter (``evict.c``): 8 bits that grow
logarithmically -- an access increments a counter ``c`` with probability
``1 / ((c - 5) * 10 + 1)``, so about a million accesses reach 255 -- and
lose one per minute since their last decrement. A new key starts at 5, so a
key written and never read falls to 0 after five idle minutes. Beside it, as
in Redis, the minute of the last access in 16 bits (it wraps after 45 days).

Where Redis keeps those 24 bits in each object's header, an AegisKV entry is a
bytes object holding its 64-bit version (which the clock already fills, see
``first_version``) and its value: no spare bits, and rewriting an immutable
bytes object on a read would cost a copy per GET. So the counters live in
their own table indexed by the key's hash, like the SLRU's ghost table: two
arrays, a 1-byte count and a 2-byte minute per slot, with a slot per two
stored keys (a power of two, at least 256 slots). That is 1.5 to 3 bytes
per key (1.57 with 1,000,000 keys: ``bench/access_memory.py``) instead of the
24+ bytes of any per-key Python object.

Keys that share a slot share its counter, as in a count-min sketch with one
row: a slot's count is what all its keys' accesses made it, so a key's FREQ is
an upper bound of its own, and its IDLETIME a lower bound (the last access of
any of its slot's keys). When the table doubles, each new slot starts from its
old slot's count and minute (slot ``i`` of the larger table is slot
``i mod old size`` of the old one, the same hash bits), so nothing is lost.

The hot keys are the slots with the largest counts, each named by the last
key that incremented it: a hot key increments its slot far more often than the
slot's other keys, so the name converges on it. An access offers its key to
that small table (:class:`HotKeys`) only when the counter grows, which the
logarithm makes rare for a hot key (one access in about 900 at a count of
100): the table costs the hot path nearly nothing, and every key that becomes
hotter than the table's coldest entry gets in.

The backend feeds the counters a sample: one read or write in ``access_sample``
(default 16; aegiskv.backends.memory ``_sample_access``), counted as that many
accesses (:meth:`AccessCounts.touch`). Counting every access cost 11% more
instructions per GET of the interpreted build (``bench/hot_path.py
--instructions``); the countdown costs a subtraction. Sampled, the cost per
request measured that way against a2f468b (random keys of 100,000) is +2.0%
(GET), +2.8% (16 GETs per read) and +1.8% (SET) compiled, +2.5%, +3.0% and
+1.8% interpreted. Compiled, nearly all of it is the sampled update, which a
larger ``access_sample`` lowers in proportion. A hot key is sampled in
proportion to its share of the accesses, so its count lands where Redis's
would; a key read a handful of times may be missed or counted for many, and
its idle time is the slot's last *sampled* access. ``access_sample = 1``
counts every access as Redis does, and starts a new key at 5.

The clock is read by :meth:`AccessCounts.tick`, not on every access: the
backend ticks it on its periodic expiry step and every 64 writes, and before
answering OBJECT FREQ or IDLETIME. A minute that starts between two ticks is
counted from the next one.
"""

from __future__ import annotations

import sys
from array import array
from typing import Final

from mypy_extensions import i64

LFU_INIT: Final = 5  # a new key's count (Redis's LFU_INIT_VAL)
LOG_FACTOR: Final = 10  # Redis's default lfu-log-factor
MAX_COUNT: Final = 255
MINUTE_MS: Final = 60_000
_MINUTE_MASK: Final = 0xFFFF
MIN_SLOTS: Final = 256  # 768 bytes: an empty backend's tables stay under 4 KiB (backend_contract)
KEYS_PER_SLOT: Final = 2
HOT_KEYS_TRACKED: Final = 32


def minute_of(now_ms: int) -> int:
    """Redis's LFU clock: whole minutes of Unix time, modulo 2**16."""
    return (now_ms // MINUTE_MS) & _MINUTE_MASK


class HotKeys:
    """The ``size`` slots with the largest counts seen incrementing, each with the key that last did.

    Keyed by slot, so two keys of one slot never both take a place: the one
    that incremented it last holds it. Counts are those at the last increment;
    :meth:`AccessCounts.hot_keys` reads the current ones.

    Up to twice ``size`` entries are held between prunes, which keep the
    ``size`` largest and raise the floor to the smallest of them: an offer at
    or below the floor is turned away with one comparison, and the sort is paid
    once per ``size`` admissions. Under a uniform load, where every key climbs
    past the floor in turn, a scan for the coldest entry on each admission cost
    5 microseconds an access interpreted.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._table: dict[int, tuple[bytes, int]] = {}
        self._floor = -1

    def offer(self, slot: int, key: bytes, count: int) -> None:
        table = self._table
        if count <= self._floor and slot not in table:
            return
        table[slot] = (key, count)
        if len(table) > 2 * self.size:
            kept = sorted(table.items(), key=_entry_count, reverse=True)[: self.size]
            self._table = dict(kept)
            self._floor = kept[-1][1][1]

    def entries(self) -> list[tuple[int, bytes]]:
        """(slot, key) of every entry held (up to twice ``size``)."""
        return [(slot, entry[0]) for slot, entry in self._table.items()]

    def reset(self, entries: list[tuple[int, bytes, int]]) -> None:
        """Hold exactly these (slot, key, count) entries (after a decay or a resize); the floor
        drops to what they leave (none: every offer is taken until the next prune)."""
        self._table = {slot: (key, count) for slot, key, count in entries}
        self._floor = -1

    def __len__(self) -> int:
        return len(self._table)


def _entry_count(item: tuple[int, tuple[bytes, int]]) -> int:
    return item[1][1]


class AccessCounts:
    """Redis's LFU counter and last-access minute per slot of the key's hash (see the module)."""

    def __init__(self, now_ms: int, stored_keys: int = 0, hot_keys: int = HOT_KEYS_TRACKED) -> None:
        self._minute = minute_of(now_ms)
        self._slots: i64 = MIN_SLOTS
        # A fresh table reads as keys just written: LFU_INIT, stamped now.
        self._counts = array("B", bytes((LFU_INIT,))) * MIN_SLOTS
        self._stamps = array("H", (self._minute,)) * MIN_SLOTS
        self._random = 0xACE1  # xorshift16 state, never 0
        self.hot = HotKeys(hot_keys)
        self._table_bytes = sys.getsizeof(self._counts) + sys.getsizeof(self._stamps)
        self.resize(stored_keys)

    # -- the hot path ------------------------------------------------------------------

    def touch(self, key: bytes, accesses: int = 1) -> None:
        """``accesses`` accesses to a stored key: decay its slot's count, count them, stamp the minute.

        One access is Redis's rule exactly. More (a sampled access standing for
        the ones not sampled) apply it as often in expectation: each step from
        ``c`` to ``c + 1`` takes ``(c - 5) * 10 + 1`` accesses, and a remainder
        too small for the next step makes it with that share as probability.
        """
        hashed: i64 = hash(key)
        slot: i64 = hashed & (self._slots - 1)
        count: int = self._counts[slot]
        minute = self._minute
        stamps = self._stamps
        stamp = stamps[slot]
        changed = False
        if stamp != minute:
            elapsed = (minute - stamp) & _MINUTE_MASK
            count = count - elapsed if count > elapsed else 0
            stamps[slot] = minute
            changed = True
        credit = accesses
        counted = False
        while count < MAX_COUNT and credit > 0:
            base = count - LFU_INIT
            need = base * LOG_FACTOR + 1 if base > 0 else 1
            if credit >= need:
                credit -= need
            elif not self._chance(credit, need):
                break
            else:
                credit = 0
            count += 1
            counted = True
        if counted:
            self.hot.offer(slot, key, count)
        if changed or counted:
            self._counts[slot] = count

    def created(self, key: bytes) -> None:
        """A new key: its slot's count is at least LFU_INIT, stamped now (not an access)."""
        hashed: i64 = hash(key)
        slot: i64 = hashed & (self._slots - 1)
        count = self._decayed(slot)
        self._counts[slot] = count if count > LFU_INIT else LFU_INIT
        self._stamps[slot] = self._minute

    def _chance(self, times: int, one_in: int) -> bool:
        """True with probability ``times / one_in``: a 16-bit xorshift, cheaper than random()."""
        state = self._random
        state ^= (state << 7) & _MINUTE_MASK
        state ^= state >> 9
        state ^= (state << 8) & _MINUTE_MASK
        self._random = state
        return state * one_in < times * 0x10000

    # -- reading ----------------------------------------------------------------------

    def frequency(self, key: bytes) -> int:
        """OBJECT FREQ: the key's slot's count, decayed to now (not an access)."""
        hashed: i64 = hash(key)
        return self._decayed(hashed & (self._slots - 1))

    def idle_seconds(self, key: bytes) -> int:
        """OBJECT IDLETIME: whole minutes since the slot's last access, in seconds."""
        hashed: i64 = hash(key)
        slot: i64 = hashed & (self._slots - 1)
        return ((self._minute - self._stamps[slot]) & _MINUTE_MASK) * 60

    def hot_keys(self) -> list[tuple[bytes, int]]:
        """(key, current count) of the tracked hot keys, hottest first (equal counts by key)."""
        found = [(key, self._decayed(slot)) for slot, key in self.hot.entries()]
        found.sort(key=lambda pair: (-pair[1], pair[0]))
        return found[: self.hot.size]

    def forget_hot(self, keep: list[bytes]) -> None:
        """Hold only the hot keys in ``keep`` (the caller's stored ones), at their current counts."""
        kept = set(keep)
        self.hot.reset([(slot, key, self._decayed(slot)) for slot, key in self.hot.entries() if key in kept])

    def _decayed(self, slot: i64) -> int:
        count: int = self._counts[slot]
        elapsed = (self._minute - self._stamps[slot]) & _MINUTE_MASK
        return count - elapsed if count > elapsed else 0

    # -- upkeep -----------------------------------------------------------------------

    def tick(self, now_ms: int) -> bool:
        """Read the clock; True when a new minute began (the caller may then prune the hot keys)."""
        minute = minute_of(now_ms)
        if minute == self._minute:
            return False
        self._minute = minute
        return True

    def resize(self, stored_keys: int) -> None:
        """Grow to a slot per KEYS_PER_SLOT keys; each new slot starts as its old slot (see the module)."""
        slots = self._slots
        if stored_keys <= slots * KEYS_PER_SLOT:
            return
        while stored_keys > slots * KEYS_PER_SLOT:
            slots *= 2
        factor = slots // self._slots
        self._counts = self._counts * factor
        self._stamps = self._stamps * factor
        self._slots = slots
        self._table_bytes = sys.getsizeof(self._counts) + sys.getsizeof(self._stamps)
        # Hot slots renumbered: a key's slot in the larger table.
        self.hot.reset([(self._slot_of(key), key, count) for key, count in self.hot_keys()])

    def reset(self, now_ms: int) -> None:
        """Every slot as new (FLUSHALL): LFU_INIT, stamped now; no hot keys."""
        self._minute = minute_of(now_ms)
        self._counts = array("B", bytes((LFU_INIT,))) * self._slots
        self._stamps = array("H", (self._minute,)) * self._slots
        self.hot.reset([])

    def _slot_of(self, key: bytes) -> i64:
        hashed: i64 = hash(key)
        return hashed & (self._slots - 1)

    @property
    def slots(self) -> int:
        return self._slots

    def table_bytes(self) -> int:
        """sys.getsizeof of the two arrays, read when they were made (charged to max-memory with
        the other tables; a getsizeof is not free on a path that measures the tables often)."""
        return self._table_bytes
