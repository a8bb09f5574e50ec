"""The per-key access counters (aegiskv/backends/access.py) and the memory backend's use of them.

Redis's LFU rules, checked on a hand-driven clock: a new key counts 5, an access
to a count of 5 or less always increments it, above that with probability
1 / ((count - 5) * 10 + 1), and a count loses one per whole minute since its
slot was last touched.
"""

from __future__ import annotations

from aegiskv.backends.access import LFU_INIT, MIN_SLOTS, MINUTE_MS, AccessCounts, HotKeys
from aegiskv.backends.memory import MemoryBackend
from aegiskv.backends.options import BuiltinBackendOptions
from tests.fake_clock import START_MS, FakeClock


def _keys_in_distinct_slots(counts: AccessCounts, how_many: int, prefix: bytes = b"key:") -> list[bytes]:
    """Keys that share no slot: a test of one key's count must not see another's accesses."""
    chosen: dict[int, bytes] = {}
    index = 0
    while len(chosen) < how_many:
        key = prefix + b"%d" % index
        chosen.setdefault(hash(key) & (counts.slots - 1), key)
        index += 1
    return list(chosen.values())


def _two_keys_in_one_slot(counts: AccessCounts) -> tuple[bytes, bytes]:
    seen: dict[int, bytes] = {}
    index = 0
    while True:
        key = b"mate:%d" % index
        slot = hash(key) & (counts.slots - 1)
        if slot in seen:
            return seen[slot], key
        seen[slot] = key
        index += 1


def test_a_new_key_counts_five_and_its_first_accesses_always_count() -> None:
    counts = AccessCounts(START_MS)
    key = b"k"
    counts.created(key)
    assert counts.frequency(key) == LFU_INIT
    counts.touch(key)
    assert counts.frequency(key) == LFU_INIT + 1  # base 0: probability 1, as Redis


def test_counts_grow_logarithmically() -> None:
    counts = AccessCounts(START_MS)
    key = b"hot"
    counts.created(key)
    for _ in range(1_000):
        counts.touch(key)
    # Going from c to c + 1 takes (c - 5) * 10 + 1 accesses on average: 1,000 reach about 19.
    assert 15 <= counts.frequency(key) <= 23
    for _ in range(100_000):
        counts.touch(key)
    assert 120 <= counts.frequency(key) <= 160  # about 146 after 101,000


def test_the_increment_probability_is_one_in_n_over_the_generator_period() -> None:
    counts = AccessCounts(START_MS)
    # The 16-bit xorshift visits every non-zero state once per period of 65,535 draws.
    hits = sum(counts._chance(1, 11) for _ in range(65_535))
    assert hits == len([state for state in range(1, 65_536) if state * 11 < 65_536])
    assert abs(hits / 65_535 - 1 / 11) < 0.001


def test_counts_decay_one_per_idle_minute_and_idle_time_is_in_whole_minutes() -> None:
    clock = FakeClock()
    counts = AccessCounts(clock())
    key = b"k"
    counts.created(key)
    for _ in range(30):
        counts.touch(key)
    before = counts.frequency(key)
    assert before > 8
    clock.advance(3 * MINUTE_MS)
    assert counts.frequency(key) == before  # the clock is read on tick(), not on every access
    assert counts.tick(clock())
    assert not counts.tick(clock())
    assert counts.frequency(key) == before - 3
    assert counts.idle_seconds(key) == 180
    counts.touch(key)  # the decay is written back, the minute stamped, then one access counted (maybe)
    assert counts.frequency(key) in (before - 3, before - 2)
    assert counts.idle_seconds(key) == 0
    clock.advance(300 * MINUTE_MS)
    counts.tick(clock())
    assert counts.frequency(key) == 0  # never below zero


def test_a_slot_shared_by_two_keys_counts_both() -> None:
    counts = AccessCounts(START_MS)
    first, second = _two_keys_in_one_slot(counts)
    counts.created(first)
    for _ in range(50):
        counts.touch(first)
    hot = counts.frequency(first)
    counts.created(second)  # a new key never lowers its slot's count: an upper bound for each key
    assert counts.frequency(second) == hot


def test_growing_the_table_keeps_every_slot_count() -> None:
    counts = AccessCounts(START_MS)
    keys = _keys_in_distinct_slots(counts, 40)
    for number, key in enumerate(keys):
        counts.created(key)
        for _ in range(number * 20):
            counts.touch(key)
    before = {key: counts.frequency(key) for key in keys}
    hot_before = counts.hot_keys()
    counts.resize(MIN_SLOTS * 8 + 1)
    assert counts.slots == MIN_SLOTS * 8
    assert {key: counts.frequency(key) for key in keys} == before
    assert counts.hot_keys() == hot_before  # renumbered, not lost


def test_hot_keys_are_the_slots_with_the_largest_counts() -> None:
    counts = AccessCounts(START_MS, hot_keys=4)
    keys = _keys_in_distinct_slots(counts, 12)
    for number, key in enumerate(keys):
        counts.created(key)
        for _ in range(number * number * 5):
            counts.touch(key)
    expected = sorted(((key, counts.frequency(key)) for key in keys), key=lambda pair: (-pair[1], pair[0]))
    hot = counts.hot_keys()
    assert len(hot) == 4
    assert [count for _key, count in hot] == [count for _key, count in expected[:4]]
    assert hot[0][0] == keys[-1]


def test_hot_keys_table_keeps_the_largest_and_one_key_per_slot() -> None:
    table = HotKeys(2)
    for slot, count in ((1, 6), (2, 9), (3, 7), (4, 8)):
        table.offer(slot, b"k%d" % slot, count)
    assert len(table) == 4  # up to twice the size between prunes
    table.offer(5, b"k5", 6)  # a fifth entry: pruned to the two largest, the floor raised to 8
    assert sorted(table.entries()) == [(2, b"k2"), (4, b"k4")]
    table.offer(6, b"k6", 8)  # not above the floor: turned away
    assert sorted(table.entries()) == [(2, b"k2"), (4, b"k4")]
    table.offer(4, b"other", 8)  # a held slot is always updated: its last incrementer names it
    table.offer(7, b"k7", 10)
    assert sorted(table.entries()) == [(2, b"k2"), (4, b"other"), (7, b"k7")]


# -- the memory backend --------------------------------------------------------------------------


def _backend(clock: FakeClock, access_sample: int = 1) -> MemoryBackend:
    """Every access counted unless asked (the node's default samples one in 16)."""
    return MemoryBackend(BuiltinBackendOptions(max_memory_bytes=1 << 30, access_sample=access_sample), clock)


def test_reads_and_rewrites_count_peeks_do_not() -> None:
    clock = FakeClock()
    backend = _backend(clock)
    backend.put(b"k", b"v")
    assert backend.access_frequency(b"k") == LFU_INIT
    backend.get_entry(b"k", touch=False)
    assert backend.access_frequency(b"k") == LFU_INIT
    backend.get(b"k")
    assert backend.access_frequency(b"k") == LFU_INIT + 1
    for _ in range(200):
        backend.put(b"k", b"v2")  # a rewrite is an access, as Redis's lookupKeyWrite
    assert backend.access_frequency(b"k") > LFU_INIT + 2
    assert [key for key, _count in backend.hot_keys()] == [b"k"]


def test_the_backend_clock_moves_on_expiry_steps_and_flush_resets() -> None:
    clock = FakeClock()
    backend = _backend(clock)
    backend.put(b"k", b"v")
    for _ in range(100):
        backend.get(b"k")
    counted = backend.access_frequency(b"k")
    clock.advance(2 * MINUTE_MS)
    backend.expire_step(20, 0.01)
    assert backend.idle_seconds(b"k") >= 60
    assert backend.access_frequency(b"k") < counted
    assert backend.flush() == 1
    backend.put(b"k", b"v")
    assert backend.access_frequency(b"k") == LFU_INIT
    assert backend.hot_keys() == []


def test_deleted_keys_leave_the_hot_keys() -> None:
    clock = FakeClock()
    backend = _backend(clock)
    for key in (b"a", b"b"):
        backend.put(key, b"v")
        for _ in range(50):
            backend.get(key)
    assert {key for key, _count in backend.hot_keys()} == {b"a", b"b"}
    backend.delete(b"a")
    assert [key for key, _count in backend.hot_keys()] == [b"b"]  # filtered at once
    clock.advance(MINUTE_MS)
    backend.expire_step(20, 0.01)  # a new minute: the table drops it
    assert [key for _slot, key in backend._access.hot.entries()] == [b"b"]


def test_the_table_grows_with_the_keys_and_is_charged_to_max_memory() -> None:
    backend = _backend(FakeClock())
    empty = backend.stats().used_bytes
    for index in range(MIN_SLOTS * 4 + 64):
        backend.put(b"key:%d" % index, b"v")
    assert backend._access.slots == MIN_SLOTS * 4  # a slot per two keys, a power of two
    assert backend._structure_bytes >= backend._access.table_bytes() >= MIN_SLOTS * 4 * 3
    backend.check()
    assert backend.stats().used_bytes > empty


def test_sampled_accesses_count_as_many_in_expectation() -> None:
    """One access in 16 updates the counters, standing for 16: the hot key still stands out, at
    about the count that counting every access gives."""
    exact, sampled = _backend(FakeClock()), _backend(FakeClock(), access_sample=16)
    # Keys in distinct slots (the same in both tables: same size, same process): no shared counts.
    hot, *cold = _keys_in_distinct_slots(exact._access, 51)
    for backend in (exact, sampled):
        for key in (*cold, hot):
            backend.put(key, b"v")
        for _ in range(40):
            for key in cold:
                backend.get(key)
            for _ in range(100):
                backend.get(hot)
    hot_exact = exact.access_frequency(hot)
    assert exact.hot_keys()[0] == (hot, hot_exact)
    assert sampled.hot_keys()[0][0] == hot
    # 4,000 accesses make about 33: going from c to c + 1 takes (c - 5) * 10 + 1 on average.
    assert 28 <= hot_exact <= 38
    assert 28 <= sampled.access_frequency(hot) <= 38
    assert all(sampled.access_frequency(key) < 20 for key in cold)


def test_a_sampled_write_of_a_new_key_starts_it_at_five_at_least() -> None:
    backend = _backend(FakeClock(), access_sample=16)
    for index in range(15):
        backend.put(b"k:%d" % index, b"v")  # none of these is sampled
    backend.put(b"new", b"v")  # the 16th access: a new key, created then counted for 16
    assert backend.access_frequency(b"new") >= 7
