"""MemoryBackend's segmented LRU against a reference model written from its rules.

The model is deliberately naive (ordered dicts, costs summed on demand) so that
it can be checked by reading it. The rules, from the memory.py docstring:

* a new key (or one whose deadline has passed) enters *probation* at the MRU
  end; a rewritten key stays in its segment and moves to that segment's MRU end
  (when a rewrite grows protected past its share, protected's LRU keys are
  demoted as after a promotion);
* a hit on a probation key moves it to the MRU end of *protected*; a hit on a
  protected key moves it to protected's MRU end (a write is the first touch,
  so the first read after a write is the "second hit");
* when protected holds more than ``protected_fraction`` of the budget after a
  promotion, its LRU keys move to probation's MRU end (never the key just
  promoted);
* eviction takes probation's LRU key first, then protected's LRU key, and never
  the entry being written;
* ``get_entry(touch=False)`` and ``set_expiry`` do not change the order;
* protected's share starts at ``protected_fraction`` of the budget and adapts
  (ARC's rule): a ghost table of 1,024 slots (the smallest, and these runs
  never store more keys) remembers per slot one key by its hash's top bits,
  as demoted from protected, or as evicted from probation (B1) or after a
  demotion or from protected (B2). Writing a key stored in neither segment
  whose B1 ghost is remembered shrinks the share by the entry's cost times
  max(1, B2 // B1); a B2 ghost, or a demoted key read again in probation,
  grows it by the cost times max(1, B1 // B2) (counts taken before the ghost
  is forgotten), within 0 and the budget. A shrink demotes nothing until
  protected next takes a key.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aegiskv.backends.base import NO_EXPIRY, BackendOptions, ValueTooLarge
from aegiskv.backends.memory import MemoryBackend, entry_cost, ghost_position
from aegiskv.backends.options import BuiltinBackendOptions
from tests.effort import examples
from tests.fake_clock import START_MS, FakeClock


@dataclass
class ModelEntry:
    value: bytes
    version: int
    deadline: int  # NO_EXPIRY when the key has no TTL


GHOST_SLOTS = 1024
DEMOTED, GHOST_OF_PROBATION, GHOST_OF_PROTECTED = "demoted", "B1", "B2"


class SlruModel:
    """The reference: two ordered dicts (LRU first) and the rules above, nothing clever."""

    def __init__(self, limit: int, protected_fraction: float, clock: FakeClock, first_version: int = 1) -> None:
        self.limit = limit
        self.protected_limit = int(limit * protected_fraction)
        # slot -> (the key hash's top bits, state); a key's own slot from its hash's low bits.
        self.ghosts: dict[int, tuple[int, str]] = {}
        self.clock = clock
        self.probation: OrderedDict[bytes, ModelEntry] = OrderedDict()
        self.protected: OrderedDict[bytes, ModelEntry] = OrderedDict()
        self.version = first_version
        self.evictions = 0
        self.expirations = 0

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def cost(key: bytes, entry: ModelEntry) -> int:
        return entry_cost(len(key), len(entry.value), entry.deadline != NO_EXPIRY)

    def bytes_of(self, segment: OrderedDict[bytes, ModelEntry]) -> int:
        return sum(self.cost(key, entry) for key, entry in segment.items())

    @property
    def used(self) -> int:
        return self.bytes_of(self.probation) + self.bytes_of(self.protected)

    def stored(self, key: bytes) -> ModelEntry | None:
        return self.probation.get(key) or self.protected.get(key)

    def is_expired(self, entry: ModelEntry) -> bool:
        return entry.deadline != NO_EXPIRY and entry.deadline <= self.clock()

    def drop(self, key: bytes) -> None:
        self.probation.pop(key, None)
        self.protected.pop(key, None)

    def live(self, key: bytes) -> ModelEntry | None:
        """Lazy expiry: the entry, or None (removing it, counted) when its deadline has passed."""
        entry = self.stored(key)
        if entry is not None and self.is_expired(entry):
            self.drop(key)
            self.expirations += 1
            return None
        return entry

    # -- the ghost table and the adaptive share ------------------------------------------

    @staticmethod
    def ghost_slot(key: bytes) -> tuple[int, int]:
        return hash(key) % GHOST_SLOTS, hash(key) >> 50

    def ghost_state(self, key: bytes) -> str | None:
        slot, tag = self.ghost_slot(key)
        found = self.ghosts.get(slot)
        return found[1] if found is not None and found[0] == tag else None

    def set_ghost(self, key: bytes, state: str | None) -> None:
        slot, tag = self.ghost_slot(key)
        if state is None:
            del self.ghosts[slot]
        else:
            self.ghosts[slot] = (tag, state)

    def ghost_count(self, state: str) -> int:
        return sum(1 for _tag, held in self.ghosts.values() if held == state)

    def grow(self, cost: int) -> None:
        ratio = max(1, self.ghost_count(GHOST_OF_PROBATION) // max(1, self.ghost_count(GHOST_OF_PROTECTED)))
        self.protected_limit = min(self.limit, self.protected_limit + cost * ratio)

    def shrink(self, cost: int) -> None:
        ratio = max(1, self.ghost_count(GHOST_OF_PROTECTED) // max(1, self.ghost_count(GHOST_OF_PROBATION)))
        self.protected_limit = max(0, self.protected_limit - cost * ratio)

    # -- segments --------------------------------------------------------------------------

    def hit(self, key: bytes) -> None:
        if key in self.protected:
            self.protected.move_to_end(key)
            return
        self.protected[key] = self.probation.pop(key)
        if self.ghost_state(key) == DEMOTED:
            self.set_ghost(key, None)
            self.grow(self.cost(key, self.protected[key]))
        self.demote_overflow()

    def demote_overflow(self) -> None:
        while self.bytes_of(self.protected) > self.protected_limit and len(self.protected) > 1:
            old_key, old_entry = self.protected.popitem(last=False)
            self.probation[old_key] = old_entry
            self.set_ghost(old_key, DEMOTED)

    def evict(self, keep: bytes) -> None:
        while self.used > self.limit:
            victims = [key for key in self.probation if key != keep] or [key for key in self.protected if key != keep]
            if not victims:
                return
            victim = victims[0]
            demoted = victim in self.protected or self.ghost_state(victim) == DEMOTED
            self.set_ghost(victim, GHOST_OF_PROTECTED if demoted else GHOST_OF_PROBATION)
            self.drop(victim)
            self.evictions += 1

    # -- the operations ------------------------------------------------------------------

    def get(self, key: bytes, touch: bool = True) -> ModelEntry | None:
        entry = self.live(key)
        if entry is not None and touch:
            self.hit(key)
        return entry

    def put(self, key: bytes, value: bytes, deadline: int, version: int | None = None) -> int:
        if entry_cost(len(key), len(value), deadline != NO_EXPIRY) > self.limit:
            raise ValueTooLarge(key)
        self.version = version if version is not None and version > self.version else self.version + 1
        entry = ModelEntry(value, self.version, deadline)
        for segment in (self.probation, self.protected):
            old = segment.get(key)
            if old is not None and not self.is_expired(old):
                segment[key] = entry
                segment.move_to_end(key)
                if segment is self.protected:
                    self.demote_overflow()
                break
        else:
            if key not in self.probation and key not in self.protected:
                ghost = self.ghost_state(key)
                if ghost in (GHOST_OF_PROBATION, GHOST_OF_PROTECTED):
                    (self.shrink if ghost == GHOST_OF_PROBATION else self.grow)(self.cost(key, entry))
                    self.set_ghost(key, None)
            self.drop(key)  # an expired key is replaced, not counted as expired
            self.probation[key] = entry
        self.evict(keep=key)
        return self.version

    def delete(self, key: bytes) -> bool:
        if self.live(key) is None:
            return False
        self.drop(key)
        return True

    def set_expiry(self, key: bytes, deadline: int) -> bool:
        entry = self.live(key)
        if entry is None:
            return False
        entry.deadline = deadline
        self.evict(keep=key)
        return True


KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"jj"])
# The largest entry the machine writes, with a TTL. Budgets start above it, so
# every write fits alone and set_expiry never meets an entry that cannot carry
# a TTL under the limit (that case is test_set_expiry_cannot_push_usage_over_the_limit).
MAX_VALUE = 150
MAX_ENTRY = entry_cost(2, MAX_VALUE, has_ttl=True)
SIZES = st.integers(0, MAX_VALUE)
# Deadlines relative to "now" (None: no TTL), on a 10 ms grid like the clock's
# steps so that reads land exactly on deadlines; negative ones are already
# expired when set. Writes mostly come without a TTL and set_expiry mostly adds
# one, so that set_expiry often grows an entry (the path that can force an eviction).
DEADLINE = st.integers(-2, 30).map(lambda tens: tens * 10)
PUT_TTLS = st.one_of(st.just(None), st.just(None), DEADLINE)
EXPIRY_TTLS = st.one_of(st.just(None), DEADLINE, DEADLINE, DEADLINE)


class SlruMachine(RuleBasedStateMachine):
    """Random put/get/delete/set_expiry/clock sequences; backend and model must agree after each step."""

    @initialize(
        # About 1 to 10 typical entries on top of one largest entry (uniform, rather
        # than the small-biased integers(MAX_ENTRY, big), so full caches are common).
        slots=st.sampled_from(range(10)),
        jitter=st.integers(0, 249),
        protected_fraction=st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]),
        seed=st.integers(0, 2**16),
        writes=st.lists(st.tuples(KEYS, SIZES), max_size=16),
        reads=st.lists(KEYS, max_size=12),
    )
    def start(
        self,
        slots: int,
        jitter: int,
        protected_fraction: float,
        seed: int,
        writes: list[tuple[bytes, int]],
        reads: list[bytes],
    ) -> None:
        limit = MAX_ENTRY + slots * 250 + jitter
        self.clock = FakeClock()
        self.backend = MemoryBackend(
            # Tables are not charged here: the model predicts eviction from entry sizes alone.
            BuiltinBackendOptions(
                max_memory_bytes=limit, protected_fraction=protected_fraction, count_structures=False
            ),
            self.clock,
            rng=random.Random(seed),  # expire_step's sampling, reproducible for shrinking
        )
        self.model = SlruModel(limit, protected_fraction, self.clock)
        self.writes = 0
        # Most generated runs are short; starting from a full cache with some keys
        # already promoted makes demotion and eviction common rather than rare.
        for key, size in writes:
            self.put(key, size, None)
        for key in reads:
            self.get(key)

    def deadline(self, ttl: int | None) -> int:
        return NO_EXPIRY if ttl is None else self.clock() + ttl

    @rule(key=KEYS, size=SIZES, ttl=PUT_TTLS)
    def put(self, key: bytes, size: int, ttl: int | None, version: int | None = None) -> None:
        self.writes += 1
        value = (b"%d|" % self.writes + key * size)[:size]  # distinct per write, so a stale value shows
        deadline = self.deadline(ttl)
        assert self.backend.put(key, value, deadline, version) == self.model.put(key, value, deadline, version)

    @rule(key=KEYS, size=SIZES, offset=st.integers(-2, 2))
    def put_with_version(self, key: bytes, size: int, offset: int) -> None:
        # Imposed versions: kept when above every version so far, replaced otherwise.
        self.put(key, size, None, version=self.model.version + offset)

    @rule(key=KEYS, extra=st.integers(1, 100))
    def put_too_large(self, key: bytes, extra: int) -> None:
        size = self.model.limit + extra  # the value alone exceeds the budget
        with pytest.raises(ValueTooLarge):
            self.backend.put(key, b"x" * size)
        with pytest.raises(ValueTooLarge):
            self.model.put(key, b"x" * size, NO_EXPIRY)

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        got = self.backend.get(key)
        expected = self.model.get(key)
        assert (None if got is None else bytes(got)) == (None if expected is None else expected.value)

    @rule(key=KEYS, touch=st.booleans())
    def get_entry(self, key: bytes, touch: bool) -> None:
        got = self.backend.get_entry(key, touch=touch)
        expected = self.model.get(key, touch=touch)
        if expected is None:
            assert got is None
        else:
            assert got is not None
            assert (bytes(got.value), got.version, got.expires_at_ms) == (
                expected.value,
                expected.version,
                expected.deadline,
            )

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        assert self.backend.delete(key) == self.model.delete(key)

    @rule(key=KEYS, ttl=EXPIRY_TTLS)
    def set_expiry(self, key: bytes, ttl: int | None) -> None:
        deadline = self.deadline(ttl)
        assert self.backend.set_expiry(key, deadline) == self.model.set_expiry(key, deadline)

    @precondition(lambda self: self.model.probation or self.model.protected)
    @rule(protected=st.booleans(), ttl=EXPIRY_TTLS)
    def set_expiry_on_an_lru_key(self, protected: bool, ttl: int | None) -> None:
        # Eviction edge cases live at the LRU ends; random keys rarely land there.
        segment = (
            (self.model.protected or self.model.probation)
            if protected
            else (self.model.probation or self.model.protected)
        )
        self.set_expiry(next(iter(segment)), ttl)

    @rule(ms=st.integers(1, 20).map(lambda tens: tens * 10))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)

    @precondition(lambda self: self.model.probation or self.model.protected)
    @rule(sample_size=st.integers(1, 8))
    def expire_step(self, sample_size: int) -> None:
        # Which expired keys a step finds is random; what the model checks is
        # that it removed only expired keys, counted them, and kept the order
        # of everything else.
        removed = self.backend.expire_step(sample_size, 10.0)
        probation, protected = self.backend.segments()
        gone = (self.model.probation.keys() | self.model.protected.keys()) - set(probation) - set(protected)
        assert len(gone) == removed
        for key in gone:
            entry = self.model.stored(key)
            assert entry is not None and self.model.is_expired(entry), f"expire_step removed live key {key!r}"
            self.model.drop(key)
            self.model.expirations += 1

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "backend"):
            return
        expected = (list(self.model.probation), list(self.model.protected))
        assert self.backend.segments() == expected, f"backend (probation, protected) != model {expected}"
        self.backend.check()
        stats = self.backend.stats()
        model = self.model
        assert (stats.keys, stats.used_bytes, stats.evictions, stats.expirations) == (
            len(model.probation) + len(model.protected),
            model.used,
            model.evictions,
            model.expirations,
        )
        with_ttl = sum(entry.deadline != NO_EXPIRY for entry in [*model.probation.values(), *model.protected.values()])
        assert stats.keys_with_ttl == with_ttl
        assert self.backend.last_version == model.version
        assert self.backend.protected_target == model.protected_limit


TestSlruMachine = SlruMachine.TestCase
# No shrink phase: shrinking a failing 40-step run of this machine takes minutes,
# far over the suite's time budget, and an unshrunk run is short enough to read.
TestSlruMachine.settings = settings(
    max_examples=examples(150),
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


# -- examples ---------------------------------------------------------------------------


def make(limit: int, protected_fraction: float = 0.8, clock: FakeClock | None = None) -> MemoryBackend:
    return MemoryBackend(
        BuiltinBackendOptions(max_memory_bytes=limit, protected_fraction=protected_fraction, count_structures=False),
        clock or FakeClock(),
    )


COST = entry_cost(2, 100)  # every key below is 2 bytes with a 100-byte value


def key(i: int) -> bytes:
    return b"%02d" % i


def test_first_read_after_a_write_promotes() -> None:
    backend = make(10 * COST)
    backend.put(b"aa", b"v" * 100)
    backend.put(b"bb", b"v" * 100)
    assert backend.segments() == ([b"aa", b"bb"], [])
    backend.get(b"aa")
    assert backend.segments() == ([b"bb"], [b"aa"])
    backend.get_entry(b"bb", touch=False)  # not an access
    assert backend.segments() == ([b"bb"], [b"aa"])


def test_eviction_takes_probation_lru_then_protected_lru() -> None:
    backend = make(4 * COST)
    for i in range(4):
        backend.put(key(i), b"v" * 100)
    backend.get(key(0))
    backend.get(key(1))  # protected: 0, 1 (LRU first); probation: 2, 3
    backend.put(key(4), b"v" * 100)
    assert backend.segments() == ([key(3), key(4)], [key(0), key(1)])  # probation LRU (2) went first
    backend.delete(key(3))
    # A value whose entry costs more than two slots and at most three.
    length = next(n for n in range(100, 4 * COST) if entry_cost(len(key(5)), n) > 2 * COST)
    assert entry_cost(len(key(5)), length) <= 3 * COST
    backend.put(key(5), b"v" * length)  # costs three slots: 4 goes, and probation has only
    assert backend.segments() == ([key(5)], [key(1)])  # the entry being written left, so protected's LRU (0) goes
    assert backend.stats().evictions == 3


def test_protected_overflow_demotes_its_lru_to_probation_mru() -> None:
    backend = make(10 * COST, protected_fraction=0.3)  # protected holds 3 entries
    for i in range(5):
        backend.put(key(i), b"v" * 100)
    for i in range(4):
        backend.get(key(i))
    assert backend.segments() == ([key(4), key(0)], [key(1), key(2), key(3)])
    backend.get(key(1))  # a protected hit refreshes it
    backend.get(key(4))
    assert backend.segments() == ([key(0), key(2)], [key(3), key(1), key(4)])
    backend.check()


def test_a_scan_of_once_touched_keys_does_not_evict_a_frequently_read_key() -> None:
    # A cache-aside scan writes each key once on its miss and never reads it
    # again. Plain LRU would lose "hot" to a scan far longer than the cache;
    # SLRU keeps it in protected while the scan churns through probation.
    backend = make(10 * COST)
    backend.put(b"hh", b"h" * 100)
    backend.get(b"hh")
    backend.get(b"hh")
    for i in range(1_000):
        backend.put(b"%02x" % (i % 256) + bytes([i // 256]), b"s" * 99)
        if i % 100 == 0:
            assert backend.get(b"hh") == b"h" * 100
    assert backend.get(b"hh") == b"h" * 100
    assert backend.stats().evictions >= 990
    backend.check()


def test_keys_read_often_outlive_keys_read_once() -> None:
    # Once-read keys get promoted too, but then age out of protected ahead of
    # the keys that keep being read.
    backend = make(20 * COST, protected_fraction=0.5)
    hot = [b"h%d" % i for i in range(3)]
    for name in hot:
        backend.put(name, b"h" * 100)
    for i in range(500):
        name = b"%03d" % i
        backend.put(name, b"s" * 100)
        backend.get(name)
        if i % 4 == 0:
            for name in hot:
                assert backend.get(name) == b"h" * 100, f"hot key {name!r} lost after {i} scan keys"
    backend.check()


def test_a_rewritten_key_stays_in_its_segment_at_the_mru_end() -> None:
    backend = make(10 * COST)
    for name in (b"aa", b"bb", b"cc", b"dd"):
        backend.put(name, b"1" * 100)
    backend.get(b"aa")
    backend.get(b"bb")
    assert backend.segments() == ([b"cc", b"dd"], [b"aa", b"bb"])
    backend.put(b"aa", b"2" * 100)
    backend.put(b"cc", b"2" * 100)
    assert backend.segments() == ([b"dd", b"cc"], [b"bb", b"aa"])
    assert backend.get(b"aa") == b"2" * 100
    backend.check()


def test_a_rewrite_that_grows_protected_past_its_share_demotes_its_lru() -> None:
    # Protected may hold two small entries; growing the MRU one pushes the LRU out.
    backend = make(10 * COST, protected_fraction=0.25)
    for name in (b"aa", b"bb", b"cc"):
        backend.put(name, b"1" * 100)
        backend.get(name)
    probation, protected = backend.segments()
    assert protected == [b"bb", b"cc"] and probation == [b"aa"]
    backend.put(b"cc", b"3" * 300)
    assert backend.segments() == ([b"aa", b"bb"], [b"cc"])
    backend.check()


def test_a_rewrite_of_an_expired_protected_key_starts_in_probation() -> None:
    clock = FakeClock()
    backend = make(10 * COST, clock=clock)
    backend.put(b"aa", b"1" * 100, clock() + 50)
    backend.put(b"bb", b"1" * 100)
    backend.get(b"aa")
    assert backend.segments() == ([b"bb"], [b"aa"])
    clock.advance(50)
    backend.put(b"aa", b"2" * 100)
    assert backend.segments() == ([b"bb", b"aa"], [])
    backend.check()


def distinct_slot_keys(count: int) -> list[bytes]:
    """``count`` 2-byte keys in distinct ghost slots (slots follow the process's hash seed)."""
    keys: dict[int, bytes] = {}
    for number in range(10 * count + 100):
        name = b"%02x" % number if number < 256 else bytes((65 + number % 26, 97 + number // 26 % 26))
        keys.setdefault(ghost_position(name, 1024)[0], name)
        if len(keys) == count:
            return list(keys.values())
    raise AssertionError("not enough keys in distinct slots")


def test_a_returning_probation_ghost_shrinks_protected_by_its_cost() -> None:
    keys = distinct_slot_keys(6)
    backend = make(4 * COST)
    start = backend.protected_target
    for name in keys[:5]:  # the fifth evicts the first, never read: a probation ghost
        backend.put(name, b"v" * 100)
    assert backend.protected_target == start
    backend.put(keys[0], b"v" * 100)  # it comes back: a longer probation would have hit it
    assert backend.protected_target == start - COST  # no ghost of a protected key: one entry
    backend.put(keys[5], b"v" * 100)  # a key never seen before changes nothing
    assert backend.protected_target == start - COST
    backend.check()


def test_a_demoted_key_read_again_grows_protected_by_its_cost() -> None:
    keys = distinct_slot_keys(5)
    backend = make(10 * COST, protected_fraction=0.3)  # protected holds 3 entries
    for name in keys:
        backend.put(name, b"v" * 100)
    for name in keys[:4]:
        backend.get(name)  # the fourth promotion demotes the first
    assert backend.segments() == ([keys[4], keys[0]], keys[1:4])
    start = backend.protected_target
    backend.get(keys[0])  # read again after its demotion: protected was too small for it
    assert backend.protected_target == start + COST
    backend.check()


def test_shrink_steps_scale_with_ghosts_of_protected_over_ghosts_of_probation() -> None:
    # ARC's rule: a B1 hit moves the target by max(1, |B2| // |B1|) entries.
    keys = distinct_slot_keys(11)
    backend = make(6 * COST, protected_fraction=1.0)  # protected may take everything
    for name in keys[:6]:
        backend.put(name, b"v" * 100)
        backend.get(name)
    for name in keys[6:9]:
        backend.put(name, b"v" * 100)  # probation holds only this key: protected's LRU goes (B2)
        backend.get(name)
    backend.put(keys[9], b"v" * 100)  # a fourth protected key goes (B2 = 4)
    backend.put(keys[10], b"v" * 100)  # probation's LRU, keys[9], goes unread (B1 = 1)
    assert backend.protected_target == 6 * COST
    backend.put(keys[9], b"v" * 100)
    assert backend.protected_target == 6 * COST - 4 * COST
    backend.check()


def test_set_expiry_does_not_reorder_the_key_it_changes() -> None:
    # Bug: when the TTL overhead set_expiry adds forces an eviction and the key
    # is its segment's LRU, _evict(keep=key) moves it to the MRU end, so an
    # EXPIRE counts as an access. The model above never reorders it.
    small = entry_cost(1, 10)
    ttl_extra = entry_cost(1, 10, has_ttl=True) - small
    backend = make(3 * small + ttl_extra // 2)
    for name in (b"a", b"b", b"c"):
        backend.put(name, b"v" * 10)
    assert backend.set_expiry(b"a", START_MS + 1_000)
    assert backend.stats().evictions == 1
    assert backend.segments() == ([b"a", b"c"], [])  # b was evicted; a stays probation's LRU


def test_set_expiry_cannot_push_usage_over_the_limit() -> None:
    # Bug: put() refuses an entry that does not fit with ValueTooLarge, but
    # set_expiry() adds the TTL's cost to an entry without checking that the
    # entry still fits alone. With nothing left to evict, used_bytes stays
    # above max-memory and check() fails. (Refusing, or dropping the key,
    # would both keep the limit.)
    clock = FakeClock()
    limit = entry_cost(1, 100)  # exactly one TTL-less entry
    backend = make(limit, clock=clock)
    backend.put(b"k", b"v" * 100)
    try:
        backend.set_expiry(b"k", clock() + 1_000)
    except ValueTooLarge:
        pass
    assert backend.stats().used_bytes <= limit
    backend.check()


@settings(max_examples=examples(200))
@given(
    first=st.integers(min_value=0, max_value=2**64 - 2**20),
    steps=st.lists(
        st.one_of(
            st.none(),  # the next version the backend hands out
            st.integers(min_value=1, max_value=1000),  # a given version this far ahead
        ),
        min_size=1,
        max_size=600,  # crosses several 256-version blocks
    ),
)
def test_the_version_stored_with_a_value_is_the_one_put_returned(first: int, steps: list[int | None]) -> None:
    # put() writes the version's first seven bytes from a cache that changes every
    # 256 versions, and the last from a table: the stored bytes must always match.
    backend = MemoryBackend(BackendOptions(max_memory_bytes=1 << 30, first_version=first))
    for index, ahead in enumerate(steps):
        key = b"k%d" % (index % 7)
        given_version = None if ahead is None else min(backend.last_version + ahead, 2**64 - 1)
        version = backend.put(key, b"v%d" % index, version=given_version)
        entry = backend.get_entry(key, touch=False)
        assert entry is not None and entry.version == version
        assert version == backend.last_version
