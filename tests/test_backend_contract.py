"""The suite every storage backend passes (see the ``aegiskv.backends.base`` docstring).

Every test here goes through the ``Backend`` interface only, so it runs
unchanged against each backend in ``BACKENDS``. To add a backend, append one
``pytest.param(YourBackend, id="yours")`` line: the class is constructed the
way the plugin loader does it, ``YourBackend(options, clock)``, with a fresh
``data_dir`` under tmp_path and a fake clock. A backend that needs options of
its own (the durable ones: which ``wal_mode``) goes in as ``with_options(...)``,
which sets them on the options of every instance the suite builds.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

import pytest

from aegiskv.backends.base import NO_EXPIRY, Backend, BackendOptions, Clock, StorageError, ValueTooLarge
from aegiskv.backends.memory import MemoryBackend
from aegiskv.backends.options import builtin_options
from aegiskv.backends.snapshot import SnapshotBackend
from aegiskv.backends.wal import WalBackend
from tests.fake_clock import FakeClock


def with_options(backend_class: type[Backend], **defaults) -> Callable[[BackendOptions, Clock], Backend]:
    """``backend_class`` built with ``defaults`` filled into its options (e.g. a WAL mode)."""

    def build(options: BackendOptions, clock: Clock) -> Backend:
        return backend_class(dataclasses.replace(builtin_options(options), **defaults), clock)

    return build


BACKENDS = [
    pytest.param(MemoryBackend, id="memory"),
    pytest.param(with_options(WalBackend, wal_mode="write"), id="wal-write"),
    pytest.param(with_options(WalBackend, wal_mode="fsync"), id="wal-fsync"),
    pytest.param(with_options(SnapshotBackend, wal_mode="fsync"), id="snapshot"),
]

MakeBackend = Callable[..., Backend]
BIG = 1 << 30  # a budget nothing in these tests comes near, unless a test says otherwise


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest, tmp_path) -> Iterator[MakeBackend]:
    """``make(max_memory_bytes=..., clock=..., **BackendOptions fields)`` -> a new backend, closed after the test."""
    backend_class = request.param
    created: list[Backend] = []
    counter = itertools.count()

    def make(max_memory_bytes: int = BIG, clock: FakeClock | None = None, **options) -> Backend:
        data_dir = tmp_path / f"backend{next(counter)}"
        data_dir.mkdir()
        backend = backend_class(
            BackendOptions(max_memory_bytes=max_memory_bytes, data_dir=str(data_dir), **options),
            clock or FakeClock(),
        )
        created.append(backend)
        return backend

    yield make
    for backend in created:
        backend.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(backend_factory: MakeBackend, clock: FakeClock) -> Backend:
    return backend_factory(clock=clock)


def value_of(backend: Backend, key: bytes) -> bytes | None:
    """``get`` as plain bytes, so comparisons do not depend on bytes-vs-memoryview."""
    value = backend.get(key)
    return None if value is None else bytes(value)


# -- get / put / delete ----------------------------------------------------------------


def test_put_get_delete(backend: Backend) -> None:
    assert backend.get(b"k") is None
    assert backend.delete(b"k") is False
    backend.put(b"k", b"v1")
    assert value_of(backend, b"k") == b"v1"
    backend.put(b"k", b"v2")
    assert value_of(backend, b"k") == b"v2"
    assert len(backend) == 1
    assert backend.delete(b"k") is True
    assert backend.get(b"k") is None
    assert backend.delete(b"k") is False  # a second delete finds nothing
    assert len(backend) == 0


def test_empty_value_is_a_value(backend: Backend) -> None:
    # b"" is falsy; a backend must not confuse it with "absent".
    backend.put(b"k", b"")
    assert value_of(backend, b"k") == b""
    assert backend.get_entry(b"k") is not None


def test_keys_are_exact_bytes(backend: Backend) -> None:
    backend.put(b"key", b"a")
    backend.put(b"key\x00", b"b")
    backend.put(b"KEY", b"c")
    assert [value_of(backend, k) for k in (b"key", b"key\x00", b"KEY", b"ke")] == [b"a", b"b", b"c", None]


def test_get_entry_reports_value_version_and_expiry(backend: Backend, clock: FakeClock) -> None:
    deadline = clock.now_ms + 10_000
    version = backend.put(b"k", b"value", deadline)
    entry = backend.get_entry(b"k")
    assert entry is not None
    assert (bytes(entry.value), entry.version, entry.expires_at_ms) == (b"value", version, deadline)
    untouched = backend.get_entry(b"k", touch=False)
    assert untouched is not None and untouched.version == version
    backend.put(b"plain", b"x")
    plain = backend.get_entry(b"plain")
    assert plain is not None and plain.expires_at_ms == NO_EXPIRY
    assert backend.get_entry(b"missing") is None


def test_put_replaces_the_expiry(backend: Backend, clock: FakeClock) -> None:
    # A write says what the expiry is; an old TTL does not survive a write without one.
    backend.put(b"k", b"v1", clock.now_ms + 100)
    backend.put(b"k", b"v2")
    clock.advance(1_000)
    assert value_of(backend, b"k") == b"v2"
    entry = backend.get_entry(b"k")
    assert entry is not None and entry.expires_at_ms == NO_EXPIRY
    assert backend.stats().keys_with_ttl == 0


# -- versions ----------------------------------------------------------------------------


def test_versions_strictly_increase_across_all_writes(backend: Backend) -> None:
    versions = [
        backend.put(b"a", b"1"),
        backend.put(b"b", b"1"),
        backend.put(b"a", b"2"),  # overwrite
    ]
    assert backend.delete(b"a")
    versions.append(backend.put(b"a", b"3"))  # deleted and written again: still larger than before
    assert backend.delete(b"b")
    versions.append(backend.put(b"c", b"1"))
    assert versions == sorted(set(versions)), versions
    assert backend.last_version == versions[-1]
    entry = backend.get_entry(b"a")
    assert entry is not None and entry.version == versions[3]


def test_versions_start_above_first_version(backend_factory: MakeBackend) -> None:
    backend = backend_factory(first_version=1_000)
    assert backend.put(b"k", b"v") > 1_000


def test_imposed_version_is_kept_when_larger(backend: Backend) -> None:
    start = backend.put(b"a", b"1")
    assert backend.put(b"b", b"1", version=start + 100) == start + 100
    assert backend.last_version == start + 100
    entry = backend.get_entry(b"b")
    assert entry is not None and entry.version == start + 100
    assert backend.put(b"c", b"1") == start + 101  # the next one continues above the imposed version


@pytest.mark.parametrize("offset", [0, -1, -1_000_000], ids=["equal", "one-lower", "far-lower"])
def test_imposed_version_too_low_is_replaced(backend: Backend, offset: int) -> None:
    backend.put(b"a", b"1")
    last = backend.put(b"b", b"1", version=backend.last_version + 50)
    got = backend.put(b"a", b"2", version=last + offset)
    assert got > last
    assert backend.last_version == got
    entry = backend.get_entry(b"a")
    assert entry is not None and entry.version == got


@pytest.mark.parametrize("offset", [100, 0, -3], ids=["above", "equal", "below"])
def test_applied_entries_keep_their_version_and_lift_the_last_one(backend: Backend, offset: int) -> None:
    # A primary's entry keeps the version the primary gave it, however it compares with ours.
    for index in range(5):
        last = backend.put(b"a%d" % index, b"1")
    backend.apply(b"b", b"replicated", NO_EXPIRY, last + offset)
    entry = backend.get_entry(b"b")
    assert entry is not None and (entry.value, entry.version) == (b"replicated", last + offset)
    assert backend.last_version == max(last, last + offset)
    assert backend.put(b"c", b"1") > max(last, last + offset)  # our own versions stay above it


def test_versions_keep_increasing_after_flush(backend: Backend) -> None:
    # A flushed key written again must not reuse a version a replica may have seen.
    before = backend.put(b"k", b"v")
    backend.flush()
    assert backend.put(b"k", b"v") > before


def test_imposed_version_out_of_range_has_no_side_effects(backend: Backend) -> None:
    # Replication imposes versions it read off the wire. One the backend cannot
    # store must be refused before anything changes; it must not lose the old
    # value or poison last_version (which would break every later write).
    old = backend.put(b"k", b"old")
    huge = 1 << 64
    try:
        got = backend.put(b"k", b"new", version=huge)
    except Exception as error:  # any refusal will do, as long as nothing changed
        assert value_of(backend, b"k") == b"old", f"refused with {error!r} but lost the old value"
        assert backend.last_version == old, f"refused with {error!r} but moved last_version"
    else:
        assert got == huge
        entry = backend.get_entry(b"k")
        assert entry is not None and entry.version == huge
    assert backend.put(b"other", b"v") == backend.last_version  # later writes still work


# -- expiry ------------------------------------------------------------------------------


def test_set_expiry_adds_and_drops_a_ttl_without_changing_the_version(backend: Backend, clock: FakeClock) -> None:
    version = backend.put(b"k", b"v")
    deadline = clock.now_ms + 500
    assert backend.set_expiry(b"k", deadline) is True
    entry = backend.get_entry(b"k")
    assert entry is not None and (entry.version, entry.expires_at_ms) == (version, deadline)
    assert backend.stats().keys_with_ttl == 1
    assert backend.set_expiry(b"k", NO_EXPIRY) is True
    entry = backend.get_entry(b"k")
    assert entry is not None and (entry.version, entry.expires_at_ms) == (version, NO_EXPIRY)
    assert backend.stats().keys_with_ttl == 0
    clock.advance(1_000)  # past the dropped deadline: the key lives on
    assert value_of(backend, b"k") == b"v"
    assert backend.last_version == version  # set_expiry is not a write


def test_set_expiry_changes_an_existing_ttl(backend: Backend, clock: FakeClock) -> None:
    backend.put(b"k", b"v", clock.now_ms + 100)
    assert backend.set_expiry(b"k", clock.now_ms + 1_000)
    clock.advance(500)
    assert value_of(backend, b"k") == b"v"
    clock.advance(500)
    assert backend.get(b"k") is None


def test_set_expiry_on_missing_key(backend: Backend) -> None:
    assert backend.set_expiry(b"missing", 12345) is False
    assert len(backend) == 0
    assert backend.stats().keys_with_ttl == 0


def _read_get(backend: Backend, key: bytes) -> bool:
    return backend.get(key) is not None


def _read_get_entry(backend: Backend, key: bytes) -> bool:
    return backend.get_entry(key) is not None


def _read_get_entry_untouched(backend: Backend, key: bytes) -> bool:
    return backend.get_entry(key, touch=False) is not None


def _read_keys(backend: Backend, key: bytes) -> bool:
    return key in list(backend.keys())


def _read_delete(backend: Backend, key: bytes) -> bool:
    return backend.delete(key)  # True only for a live key


def _read_set_expiry(backend: Backend, key: bytes) -> bool:
    return backend.set_expiry(key, NO_EXPIRY)  # must not revive an expired key


@pytest.mark.parametrize(
    "sees",
    [_read_get, _read_get_entry, _read_get_entry_untouched, _read_keys, _read_delete, _read_set_expiry],
    ids=["get", "get_entry", "get_entry-untouched", "keys", "delete", "set_expiry"],
)
def test_lazy_expiry_at_exactly_the_deadline(backend: Backend, clock: FakeClock, sees) -> None:
    deadline = clock.now_ms + 1_000
    backend.put(b"k", b"v", deadline)
    clock.now_ms = deadline - 1
    assert sees(backend, b"k") is True, "a key is live until its deadline"
    backend.put(b"k", b"v", deadline)  # undo what delete/set_expiry did
    clock.now_ms = deadline
    assert sees(backend, b"k") is False, "a key is gone at its deadline"
    assert backend.get(b"k") is None  # and stays gone, whatever the first reader was
    assert backend.get_entry(b"k", touch=False) is None


def test_lazy_expiry_counts_and_frees(backend: Backend, clock: FakeClock) -> None:
    backend.put(b"live", b"v")
    used_live = backend.stats().used_bytes
    backend.put(b"k", b"v" * 100, clock.now_ms + 10)
    clock.advance(10)
    assert backend.get(b"k") is None
    stats = backend.stats()
    assert (stats.keys, stats.keys_with_ttl, stats.expirations) == (1, 0, 1)
    assert stats.used_bytes == used_live


def test_put_with_a_past_deadline_is_invisible(backend: Backend, clock: FakeClock) -> None:
    backend.put(b"k", b"v", clock.now_ms - 1)
    assert backend.get(b"k") is None
    assert list(backend.keys()) == []


def test_expire_step_removes_expired_keys_and_never_live_ones(backend: Backend, clock: FakeClock) -> None:
    now = clock.now_ms
    for i in range(200):
        backend.put(b"dead%d" % i, b"v", now + 1 + i % 50)
        backend.put(b"later%d" % i, b"v", now + 10_000)
    for i in range(100):
        backend.put(b"forever%d" % i, b"v")
    assert backend.expire_step(20, 1.0) == 0  # nothing has expired yet
    clock.advance(100)
    before = backend.stats().expirations
    removed = 0
    # Sampling is random; a few thousand small steps find every expired key
    # with overwhelming probability (each step hits a given one with p >= 20/400).
    for _ in range(3_000):
        removed += backend.expire_step(20, 1.0)
        if removed == 200:
            break
    assert removed == 200
    assert backend.stats().expirations - before == 200
    assert len(backend) == 300  # expire_step removed them: not merely hidden
    assert sorted(backend.keys()) == sorted(
        [b"later%d" % i for i in range(200)] + [b"forever%d" % i for i in range(100)]
    )
    assert backend.stats().keys_with_ttl == 200
    assert backend.expire_step(20, 1.0) == 0


def test_expire_step_on_empty_backend(backend: Backend) -> None:
    backend.put(b"k", b"v")  # no TTL: nothing to sample
    assert backend.expire_step(20, 1.0) == 0
    assert len(backend) == 1


# -- whole-keyspace operations -----------------------------------------------------------


def test_flush_removes_everything(backend: Backend, clock: FakeClock, backend_factory: MakeBackend) -> None:
    for i in range(10):
        backend.put(b"k%d" % i, b"v", clock.now_ms + 1_000 if i % 2 else NO_EXPIRY)
    assert backend.flush() == 10
    assert len(backend) == 0
    assert list(backend.keys()) == []
    assert backend.get(b"k1") is None
    stats = backend.stats()
    assert (stats.keys, stats.keys_with_ttl) == (0, 0)
    # What is left is the cost of the empty tables, the same as a new backend's.
    assert stats.used_bytes == backend_factory().stats().used_bytes
    assert backend.flush() == 0
    backend.put(b"k1", b"again")  # usable afterwards
    assert value_of(backend, b"k1") == b"again"


def test_keys_lists_live_keys_only(backend: Backend, clock: FakeClock) -> None:
    backend.put(b"a", b"v")
    backend.put(b"b", b"v", clock.now_ms + 10)
    backend.put(b"c", b"v", clock.now_ms + 1_000)
    backend.put(b"d", b"v")
    backend.delete(b"d")
    clock.advance(10)
    keys = list(backend.keys())
    assert sorted(keys) == [b"a", b"c"]
    backend.put(b"e", b"v")  # keys() is a snapshot: later writes do not show up in it
    assert sorted(keys) == [b"a", b"c"]


def test_len_counts_stored_keys(backend: Backend, clock: FakeClock) -> None:
    assert len(backend) == 0
    backend.put(b"a", b"v")
    backend.put(b"b", b"v", clock.now_ms + 10)
    backend.put(b"a", b"v2")  # an overwrite is not a new key
    assert len(backend) == 2
    clock.advance(10)
    # An expired key may still be counted until something removes it ...
    assert len(backend) in (1, 2)
    backend.get(b"b")
    assert len(backend) == 1  # ... but not after a read found it expired


def test_stats_fields(backend_factory: MakeBackend, clock: FakeClock) -> None:
    backend = backend_factory(max_memory_bytes=20_000, clock=clock)
    empty = backend.stats()
    assert (empty.keys, empty.keys_with_ttl, empty.evictions, empty.expirations) == (0, 0, 0, 0)
    assert 0 <= empty.used_bytes <= 4096  # empty tables at most
    assert empty.limit_bytes == 20_000
    backend.put(b"small", b"v")
    small = backend.stats().used_bytes
    backend.put(b"large", b"v" * 1_000, clock.now_ms + 5)
    stats = backend.stats()
    assert (stats.keys, stats.keys_with_ttl) == (2, 1)
    assert empty.average_ttl_ms == 0 and stats.average_ttl_ms in (0, 5)  # 0: the backend does not estimate it
    assert backend.memory_bounds() == (stats.used_bytes, stats.limit_bytes)
    assert stats.used_bytes - small >= 1_000  # a value is charged at least its length
    clock.advance(5)
    backend.get(b"large")
    assert backend.stats().expirations == 1
    for i in range(100):  # 100 x 1000 bytes cannot fit in 20_000
        backend.put(b"fill%d" % i, b"v" * 1_000)
        assert backend.stats().used_bytes <= 20_000
    stats = backend.stats()
    assert stats.evictions > 0
    assert stats.keys == len(backend) == 101 - stats.evictions  # 100 fills + "small", minus the evicted


def test_eviction_never_drops_the_entry_being_written(backend_factory: MakeBackend) -> None:
    backend = backend_factory(max_memory_bytes=10_000)
    for i in range(200):
        backend.put(b"k%d" % i, bytes([i % 256]) * (i * 37 % 3_000))
        assert value_of(backend, b"k%d" % i) == bytes([i % 256]) * (i * 37 % 3_000)
        assert backend.stats().used_bytes <= 10_000


def test_value_too_large(backend_factory: MakeBackend) -> None:
    backend = backend_factory(max_memory_bytes=4_096)
    version = backend.put(b"k", b"old")
    before = backend.stats()
    with pytest.raises(ValueTooLarge):
        backend.put(b"k", b"x" * 5_000)
    with pytest.raises(ValueTooLarge):
        backend.put(b"other", b"x" * 4_096)  # the value alone fills the budget; its key and overhead do not fit
    assert issubclass(ValueTooLarge, StorageError)
    # A refused write changes nothing: the old value, its version and the accounting stay.
    entry = backend.get_entry(b"k")
    assert entry is not None and (bytes(entry.value), entry.version) == (b"old", version)
    assert backend.stats() == before
    assert backend.get(b"other") is None
    assert backend.last_version == version


def test_large_values_compare_equal_and_stay_valid(backend: Backend) -> None:
    # Large values may come back as memoryviews; they must equal the stored
    # bytes, be read-only (a writable view would let a caller corrupt the
    # store) and keep their content after the key is overwritten or deleted.
    stored = bytes(range(256)) * 300  # 76_800 bytes, above the 64 KiB copy limit
    backend.put(b"big", stored)
    got = backend.get(b"big")
    entry = backend.get_entry(b"big")
    assert entry is not None
    for value in (got, entry.value):
        assert isinstance(value, (bytes, memoryview))
        assert value == stored
        assert len(value) == len(stored)
        if isinstance(value, memoryview):
            assert value.readonly
    backend.put(b"big", b"y" * len(stored))
    backend.delete(b"big")
    assert got == stored
    assert entry.value == stored


def test_memory_backend_hands_out_views_only_above_64_kib(clock: FakeClock) -> None:
    # The no-copy promise of MemoryBackend (not part of the contract).
    backend = MemoryBackend(BackendOptions(max_memory_bytes=BIG), clock)
    limit = 64 * 1024
    backend.put(b"edge", b"e" * limit)
    backend.put(b"over", b"o" * (limit + 1))
    assert type(backend.get(b"edge")) is bytes
    over = backend.get(b"over")
    assert isinstance(over, memoryview) and over == b"o" * (limit + 1)
    over_entry = backend.get_entry(b"over")
    assert over_entry is not None and isinstance(over_entry.value, memoryview)


def test_builtin_backends_hand_out_their_memory_store(backend: Backend, clock: FakeClock) -> None:
    # The node calls this store directly (compiled: direct calls); for the durable
    # backends it must be the very keyspace the log records.
    memory = backend.memory
    assert isinstance(memory, MemoryBackend)
    version = memory.put(b"k", b"v", clock.now_ms + 1_000)
    entry = backend.get_entry(b"k")
    assert entry is not None and (bytes(entry.value), entry.version) == (b"v", version)
    assert backend.last_version == memory.last_version == version
    assert backend.delete(b"k") and memory.get(b"k") is None
    assert len(backend) == len(memory) == 0
