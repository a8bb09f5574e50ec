"""TTL handling: the active expiry sampler of MemoryBackend and the ExpiryIndex under it.

All time here is a FakeClock. The sampler's work is measured in keys removed
(the ``expirations`` counter), never in seconds: ``budget_seconds=0`` means
"one sampling round", and a generous budget is used where the stopping rule
(resample only while more than a quarter of a sample was expired) must bound
the work on its own.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aegiskv.backends.base import NO_EXPIRY, BackendOptions
from aegiskv.backends.expiry import ExpiryIndex
from aegiskv.backends.memory import MemoryBackend
from tests.effort import examples
from tests.fake_clock import FakeClock

ONE_ROUND = 0.0  # budget_seconds: the step stops after its first sample
GENEROUS = 60.0  # budget_seconds never reached: only the sampler's own rule stops it


def make(clock: FakeClock, seed: int = 1) -> MemoryBackend:
    return MemoryBackend(BackendOptions(max_memory_bytes=1 << 40), clock, rng=random.Random(seed))


def test_repeated_steps_remove_most_expired_keys() -> None:
    clock = FakeClock()
    backend = make(clock)
    now = clock()
    for i in range(10_000):
        backend.put(b"dead%d" % i, b"v", now + 1 + i % 100)
    for i in range(5_000):
        backend.put(b"live%d" % i, b"v", now + 60_000)
        backend.put(b"plain%d" % i, b"v")
    clock.advance(100)  # every dead* key has expired; nothing else has
    removed = sum(backend.expire_step(20, ONE_ROUND) for _ in range(2_000))
    # 2_000 rounds of 20 samples drive the expired share down geometrically;
    # the expected number left is about 30 of 10_000.
    assert removed >= 9_500, removed
    assert backend.stats().expirations == removed
    assert len(backend) == 20_000 - removed
    assert backend.stats().keys_with_ttl == 15_000 - removed
    # Only expired keys went: every live key is still there.
    assert all(backend.get(b"live%d" % i) == b"v" for i in range(5_000))
    assert all(backend.get(b"plain%d" % i) == b"v" for i in range(5_000))


def test_one_step_does_one_bounded_round_when_the_budget_is_spent() -> None:
    # 100_000 expired keys: a step whose budget is used up after the first
    # sample must stop there, not walk the keyspace.
    clock = FakeClock()
    backend = make(clock)
    for i in range(100_000):
        backend.put(b"k%d" % i, b"", clock() + 1)
    clock.advance(1)
    removed = backend.expire_step(20, ONE_ROUND)
    assert 1 <= removed <= 20
    assert backend.stats().expirations == removed
    assert len(backend) == 100_000 - removed


def test_one_step_stops_on_its_own_when_few_sampled_keys_are_expired() -> None:
    # 100_000 keys with a TTL, 5% of them expired: with time no object, the
    # step still stops after the first sample that is mostly live, so it
    # removes a handful of keys, not the 5_000 expired ones.
    clock = FakeClock()
    backend = make(clock)
    for i in range(100_000):
        backend.put(b"k%d" % i, b"", clock() + (1 if i % 20 == 0 else 60_000))
    clock.advance(1)
    before = backend.stats().expirations
    removed = backend.expire_step(20, GENEROUS)
    assert backend.stats().expirations - before == removed
    assert removed <= 3 * 20
    assert len(backend) >= 100_000 - 3 * 20


def test_one_step_keeps_sampling_while_most_samples_are_expired() -> None:
    # The other half of the stopping rule: when most of a sample was expired a
    # step samples again at once, so a keyspace of expired keys shrinks fast.
    clock = FakeClock()
    backend = make(clock)
    for i in range(2_000):
        backend.put(b"k%d" % i, b"", clock() + 1)
    clock.advance(1)
    removed = backend.expire_step(20, GENEROUS)
    assert removed > 10 * 20  # more than ten rounds' worth in one call
    assert removed <= 2_000
    assert len(backend) == 2_000 - removed


def test_sampler_uses_the_current_deadline() -> None:
    clock = FakeClock()
    backend = make(clock)
    for i in range(300):
        backend.put(b"k%d" % i, b"v", clock() + 10)
    for i in range(0, 300, 3):
        backend.set_expiry(b"k%d" % i, clock() + 1_000)  # extended
    for i in range(1, 300, 3):
        backend.set_expiry(b"k%d" % i, NO_EXPIRY)  # made permanent
    clock.advance(100)
    removed = 0
    for _ in range(5_000):
        removed += backend.expire_step(10, ONE_ROUND)
        if removed == 100:
            break
    assert removed == 100
    assert sorted(backend.keys()) == sorted(b"k%d" % i for i in range(300) if i % 3 != 2)
    assert backend.stats().keys_with_ttl == 100
    backend.check()
    clock.advance(1_000)
    while backend.expire_step(10, GENEROUS):
        pass
    assert sorted(backend.keys()) == sorted(b"k%d" % i for i in range(1, 300, 3))
    assert backend.stats().keys_with_ttl == 0
    backend.check()


# -- ExpiryIndex -------------------------------------------------------------------------

INDEX_KEYS = st.sampled_from([b"k%d" % i for i in range(12)])
# Wall-clock deadlines and beyond; the deadline shares an integer with the list
# position, so large and negative values must not bleed into it.
DEADLINES = st.one_of(st.integers(0, 2**45), st.integers(-(2**40), -1), st.sampled_from([0, 1, 2**32 - 1, 2**32]))


class ExpiryIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = ExpiryIndex()
        self.model: dict[bytes, int] = {}
        self.rng = random.Random(7)

    @rule(key=INDEX_KEYS, deadline=DEADLINES)
    def set(self, key: bytes, deadline: int) -> None:
        self.index.set(key, deadline)
        self.model[key] = deadline

    @rule(key=INDEX_KEYS)
    def discard(self, key: bytes) -> None:
        self.index.discard(key)
        self.model.pop(key, None)

    @rule()
    def clear(self) -> None:
        self.index.clear()
        self.model.clear()

    @rule(count=st.integers(0, 20))
    def sample(self, count: int) -> None:
        picks = self.index.sample(count, self.rng)
        assert len(picks) == min(count, len(self.model))
        for key, deadline in picks:
            assert self.model[key] == deadline

    @invariant()
    def agrees_with_model(self) -> None:
        self.index.check()
        assert len(self.index) == len(self.model)
        assert dict(self.index) == self.model
        for key in [b"k%d" % i for i in range(12)]:
            assert (key in self.index) == (key in self.model)
            assert self.index.deadline(key) == self.model.get(key)
            packed = self.index.packed_map.get(key)
            assert (packed is None) == (key not in self.model)
            if packed is not None:
                assert ExpiryIndex.unpack_deadline(packed) == self.model[key]


TestExpiryIndexMachine = ExpiryIndexMachine.TestCase
TestExpiryIndexMachine.settings = settings(max_examples=examples(60), stateful_step_count=50, deadline=None)


def test_expiry_index_random_churn() -> None:
    # Long seeded churn over many keys: the swap-into-hole removal must keep
    # every position right however the list is reshuffled.
    rng = random.Random(2024)
    index = ExpiryIndex()
    model: dict[bytes, int] = {}
    keys = [b"key%d" % i for i in range(500)]
    for step in range(30_000):
        key = rng.choice(keys)
        if rng.random() < 0.55:
            deadline = rng.randrange(1_700_000_000_000, 1_800_000_000_000)
            index.set(key, deadline)
            model[key] = deadline
        else:
            index.discard(key)
            model.pop(key, None)
        if step % 1_000 == 0:
            index.check()
            assert dict(index) == model
    index.check()
    assert dict(index) == model
    assert len(index) == len(model)


def test_expiry_index_sample_reaches_every_key() -> None:
    # Sampling reads the key list; after removals that moved keys around, each
    # remaining key must still be reachable (and no removed one returned).
    index = ExpiryIndex()
    for i in range(40):
        index.set(b"k%d" % i, i)
    for i in range(0, 40, 3):
        index.discard(b"k%d" % i)
    rng = random.Random(3)
    seen = {key for _ in range(500) for key, _ in index.sample(10, rng)}
    assert seen == {b"k%d" % i for i in range(40) if i % 3}
    assert index.sample(5, rng) and ExpiryIndex().sample(5, rng) == []


def test_average_ttl_is_estimated_from_a_sample_of_the_keys_with_one() -> None:
    clock = FakeClock()
    backend = make(clock)
    assert backend.stats().average_ttl_ms == 0
    for index in range(2000):  # deadlines spread evenly over 10 to 20 s from now: mean 15 s
        backend.put(b"t%d" % index, b"v", clock.now_ms + 10_000 + index * 5)
        backend.put(b"plain%d" % index, b"v")  # keys without a TTL do not count
    assert abs(backend.stats().average_ttl_ms - 15_000) < 1_500  # 128 samples: standard error ~260 ms
    clock.advance(30_000)  # every deadline passed, none removed yet: nothing is left to live
    assert backend.stats().average_ttl_ms == 0


def test_average_ttl_is_exact_with_few_keys_and_leaves_out_passed_deadlines() -> None:
    clock = FakeClock()
    backend = make(clock)
    backend.put(b"soon", b"v", clock.now_ms + 1_000)
    backend.put(b"later", b"v", clock.now_ms + 3_000)
    backend.put(b"much-later", b"v", clock.now_ms + 8_000)
    assert backend.stats().average_ttl_ms == 4_000  # all three, no sampling noise
    clock.advance(2_000)  # "soon" has passed (not yet removed): Redis leaves such keys out
    assert backend.stats().average_ttl_ms == (1_000 + 6_000) // 2
