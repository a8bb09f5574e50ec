"""The conformance suite every storage backend passes: AegisKV's own, and a plugin's.

Subclass :class:`BackendContract` in a test module, under a name pytest
collects (``Test...``), and say how to build your backend::

    from aegiskv.plugin_api import Backend, BackendOptions, Clock
    from aegiskv.testing.backend_contract import BackendContract

    class TestMyBackend(BackendContract):
        def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
            return MyBackend(options, clock)

Every test goes through the :class:`~aegiskv.plugin_api.Backend` interface
only. Each builds its backends the way the plugin loader does,
``make_backend(BackendOptions(...), clock)``, with a fresh ``data_dir`` and a
:class:`ManualClock` that moves only when the test says so; every backend is
closed and its directory removed after the test. AegisKV's own suite runs it
against the memory, WAL and snapshot backends (``tests/test_backend_contract.py``)
through this same import.

The module needs nothing but AegisKV (no pytest import): pytest collects the
subclass's ``test_*`` methods and calls :meth:`BackendContract.setup_method`
and :meth:`BackendContract.teardown_method` around each. For pytest's detailed
assertion messages, add ``pytest.register_assert_rewrite("aegiskv.testing")``
to your ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

from aegiskv.plugin_api import (
    NO_EXPIRY,
    Backend,
    BackendOptions,
    Clock,
    StorageError,
    ValueTooLarge,
)

# A realistic wall-clock reading: deadlines then have the magnitude they have in
# production, which matters where their size is charged to the memory budget.
START_MS = 1_700_000_000_000
BIG = 1 << 30  # a budget nothing in these tests comes near, unless a test says otherwise


class ManualClock:
    """A :data:`~aegiskv.plugin_api.Clock` returning ``now_ms``; time moves only when told."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        """Move the clock ``ms`` milliseconds forward; returns the new time."""
        self.now_ms += ms
        return self.now_ms


def value_of(backend: Backend, key: bytes) -> bytes | None:
    """``get`` as plain bytes, so comparisons do not depend on bytes-vs-memoryview."""
    value = backend.get(key)
    return None if value is None else bytes(value)


# Ways to look at a key, each of which must see a key expire at exactly its deadline.
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


READERS: dict[str, Callable[[Backend, bytes], bool]] = {
    "get": _read_get,
    "get_entry": _read_get_entry,
    "get_entry-untouched": _read_get_entry_untouched,
    "keys": _read_keys,
    "delete": _read_delete,
    "set_expiry": _read_set_expiry,
}


class BackendContract:
    """The suite; subclass it as ``Test<YourBackend>`` and override :meth:`make_backend`."""

    clock: ManualClock
    backend: Backend  # a fresh backend with a big budget, built before each test

    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        """Build the backend under test from ``options`` and ``clock``, as the plugin loader would."""
        raise NotImplementedError(f"{type(self).__name__} must say how to build its backend (make_backend)")

    # -- per-test set-up ---------------------------------------------------------------

    def setup_method(self, method: object = None) -> None:
        """Before each test: a clock, a scratch directory, and :attr:`backend`."""
        self.clock = ManualClock()
        self._directory = tempfile.mkdtemp(prefix="aegiskv-backend-contract-")
        self._created: list[Backend] = []
        self.backend = self.new()

    def teardown_method(self, method: object = None) -> None:
        """After each test: close every backend it built, remove their directories."""
        try:
            for backend in self._created:
                backend.close()
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)

    def new(self, max_memory_bytes: int = BIG, clock: Clock | None = None, first_version: int = 1) -> Backend:
        """Another backend (closed after the test), with its own empty ``data_dir``."""
        data_dir = os.path.join(self._directory, f"backend{len(self._created)}")
        os.mkdir(data_dir)
        options = BackendOptions(max_memory_bytes=max_memory_bytes, data_dir=data_dir, first_version=first_version)
        backend = self.make_backend(options, self.clock if clock is None else clock)
        self._created.append(backend)
        return backend

    # -- get / put / delete ------------------------------------------------------------

    def test_put_get_delete(self) -> None:
        backend = self.backend
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

    def test_empty_value_is_a_value(self) -> None:
        # b"" is falsy; a backend must not confuse it with "absent".
        self.backend.put(b"k", b"")
        assert value_of(self.backend, b"k") == b""
        assert self.backend.get_entry(b"k") is not None

    def test_keys_are_exact_bytes(self) -> None:
        backend = self.backend
        backend.put(b"key", b"a")
        backend.put(b"key\x00", b"b")
        backend.put(b"KEY", b"c")
        assert [value_of(backend, k) for k in (b"key", b"key\x00", b"KEY", b"ke")] == [b"a", b"b", b"c", None]

    def test_get_entry_reports_value_version_and_expiry(self) -> None:
        backend = self.backend
        deadline = self.clock.now_ms + 10_000
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

    def test_put_replaces_the_expiry(self) -> None:
        # A write says what the expiry is; an old TTL does not survive a write without one.
        backend = self.backend
        backend.put(b"k", b"v1", self.clock.now_ms + 100)
        backend.put(b"k", b"v2")
        self.clock.advance(1_000)
        assert value_of(backend, b"k") == b"v2"
        entry = backend.get_entry(b"k")
        assert entry is not None and entry.expires_at_ms == NO_EXPIRY
        assert backend.stats().keys_with_ttl == 0

    # -- versions ----------------------------------------------------------------------

    def test_versions_strictly_increase_across_all_writes(self) -> None:
        backend = self.backend
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

    def test_versions_start_above_first_version(self) -> None:
        assert self.new(first_version=1_000).put(b"k", b"v") > 1_000

    def test_imposed_version_is_kept_when_larger(self) -> None:
        backend = self.backend
        start = backend.put(b"a", b"1")
        assert backend.put(b"b", b"1", version=start + 100) == start + 100
        assert backend.last_version == start + 100
        entry = backend.get_entry(b"b")
        assert entry is not None and entry.version == start + 100
        assert backend.put(b"c", b"1") == start + 101  # the next one continues above the imposed version

    def test_imposed_version_too_low_is_replaced(self) -> None:
        for offset in (0, -1, -1_000_000):  # equal, one lower, far lower
            backend = self.new()
            backend.put(b"a", b"1")
            last = backend.put(b"b", b"1", version=backend.last_version + 50)
            got = backend.put(b"a", b"2", version=last + offset)
            assert got > last, f"offset {offset}"
            assert backend.last_version == got, f"offset {offset}"
            entry = backend.get_entry(b"a")
            assert entry is not None and entry.version == got, f"offset {offset}"

    def test_applied_entries_keep_their_version_and_lift_the_last_one(self) -> None:
        # A primary's entry keeps the version the primary gave it, however it compares with ours.
        for offset in (100, 0, -3):  # above, equal, below
            backend = self.new()
            last = 0
            for index in range(5):
                last = backend.put(b"a%d" % index, b"1")
            backend.apply(b"b", b"replicated", NO_EXPIRY, last + offset)
            entry = backend.get_entry(b"b")
            assert entry is not None and (entry.value, entry.version) == (b"replicated", last + offset), offset
            assert backend.last_version == max(last, last + offset), f"offset {offset}"
            assert backend.put(b"c", b"1") > max(last, last + offset), "our own versions stay above it"

    def test_versions_keep_increasing_after_flush(self) -> None:
        # A flushed key written again must not reuse a version a replica may have seen.
        before = self.backend.put(b"k", b"v")
        self.backend.flush()
        assert self.backend.put(b"k", b"v") > before

    def test_imposed_version_out_of_range_has_no_side_effects(self) -> None:
        # Replication imposes versions it read off the wire. One the backend cannot
        # store must be refused before anything changes; it must not lose the old
        # value or poison last_version (which would break every later write).
        backend = self.backend
        old = backend.put(b"k", b"old")
        huge = 1 << 64
        try:
            got = backend.put(b"k", b"new", version=huge)
        except Exception as error:  # noqa: BLE001 - any refusal will do, as long as nothing changed
            assert value_of(backend, b"k") == b"old", f"refused with {error!r} but lost the old value"
            assert backend.last_version == old, f"refused with {error!r} but moved last_version"
        else:
            assert got == huge
            entry = backend.get_entry(b"k")
            assert entry is not None and entry.version == huge
        assert backend.put(b"other", b"v") == backend.last_version  # later writes still work

    # -- expiry ------------------------------------------------------------------------

    def test_set_expiry_adds_and_drops_a_ttl_without_changing_the_version(self) -> None:
        backend = self.backend
        version = backend.put(b"k", b"v")
        deadline = self.clock.now_ms + 500
        assert backend.set_expiry(b"k", deadline) is True
        entry = backend.get_entry(b"k")
        assert entry is not None and (entry.version, entry.expires_at_ms) == (version, deadline)
        assert backend.stats().keys_with_ttl == 1
        assert backend.set_expiry(b"k", NO_EXPIRY) is True
        entry = backend.get_entry(b"k")
        assert entry is not None and (entry.version, entry.expires_at_ms) == (version, NO_EXPIRY)
        assert backend.stats().keys_with_ttl == 0
        self.clock.advance(1_000)  # past the dropped deadline: the key lives on
        assert value_of(backend, b"k") == b"v"
        assert backend.last_version == version  # set_expiry is not a write

    def test_set_expiry_changes_an_existing_ttl(self) -> None:
        backend = self.backend
        backend.put(b"k", b"v", self.clock.now_ms + 100)
        assert backend.set_expiry(b"k", self.clock.now_ms + 1_000)
        self.clock.advance(500)
        assert value_of(backend, b"k") == b"v"
        self.clock.advance(500)
        assert backend.get(b"k") is None

    def test_set_expiry_on_missing_key(self) -> None:
        assert self.backend.set_expiry(b"missing", 12345) is False
        assert len(self.backend) == 0
        assert self.backend.stats().keys_with_ttl == 0

    def test_lazy_expiry_at_exactly_the_deadline(self) -> None:
        for name, sees in READERS.items():
            backend = self.new()
            deadline = self.clock.now_ms + 1_000
            backend.put(b"k", b"v", deadline)
            self.clock.now_ms = deadline - 1
            assert sees(backend, b"k") is True, f"{name}: a key is live until its deadline"
            backend.put(b"k", b"v", deadline)  # undo what delete/set_expiry did
            self.clock.now_ms = deadline
            assert sees(backend, b"k") is False, f"{name}: a key is gone at its deadline"
            assert backend.get(b"k") is None, f"{name}: and stays gone, whatever the first reader was"
            assert backend.get_entry(b"k", touch=False) is None, name

    def test_lazy_expiry_counts_and_frees(self) -> None:
        backend = self.backend
        backend.put(b"live", b"v")
        used_live = backend.stats().used_bytes
        backend.put(b"k", b"v" * 100, self.clock.now_ms + 10)
        self.clock.advance(10)
        assert backend.get(b"k") is None
        stats = backend.stats()
        assert (stats.keys, stats.keys_with_ttl, stats.expirations) == (1, 0, 1)
        assert stats.used_bytes == used_live

    def test_put_with_a_past_deadline_is_invisible(self) -> None:
        self.backend.put(b"k", b"v", self.clock.now_ms - 1)
        assert self.backend.get(b"k") is None
        assert list(self.backend.keys()) == []

    def test_expire_step_removes_expired_keys_and_never_live_ones(self) -> None:
        backend = self.backend
        now = self.clock.now_ms
        for i in range(200):
            backend.put(b"dead%d" % i, b"v", now + 1 + i % 50)
            backend.put(b"later%d" % i, b"v", now + 10_000)
        for i in range(100):
            backend.put(b"forever%d" % i, b"v")
        assert backend.expire_step(20, 1.0) == 0  # nothing has expired yet
        self.clock.advance(100)
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

    def test_expire_step_on_empty_backend(self) -> None:
        self.backend.put(b"k", b"v")  # no TTL: nothing to sample
        assert self.backend.expire_step(20, 1.0) == 0
        assert len(self.backend) == 1

    # -- whole-keyspace operations -----------------------------------------------------

    def test_flush_removes_everything(self) -> None:
        backend = self.backend
        for i in range(10):
            backend.put(b"k%d" % i, b"v", self.clock.now_ms + 1_000 if i % 2 else NO_EXPIRY)
        assert backend.flush() == 10
        assert len(backend) == 0
        assert list(backend.keys()) == []
        assert backend.get(b"k1") is None
        stats = backend.stats()
        assert (stats.keys, stats.keys_with_ttl) == (0, 0)
        # What is left is the cost of the empty tables, the same as a new backend's.
        assert stats.used_bytes == self.new().stats().used_bytes
        assert backend.flush() == 0
        backend.put(b"k1", b"again")  # usable afterwards
        assert value_of(backend, b"k1") == b"again"

    def test_keys_lists_live_keys_only(self) -> None:
        backend = self.backend
        backend.put(b"a", b"v")
        backend.put(b"b", b"v", self.clock.now_ms + 10)
        backend.put(b"c", b"v", self.clock.now_ms + 1_000)
        backend.put(b"d", b"v")
        backend.delete(b"d")
        self.clock.advance(10)
        keys = list(backend.keys())
        assert sorted(keys) == [b"a", b"c"]
        backend.put(b"e", b"v")  # keys() is a snapshot: later writes do not show up in it
        assert sorted(keys) == [b"a", b"c"]

    def test_len_counts_stored_keys(self) -> None:
        backend = self.backend
        assert len(backend) == 0
        backend.put(b"a", b"v")
        backend.put(b"b", b"v", self.clock.now_ms + 10)
        backend.put(b"a", b"v2")  # an overwrite is not a new key
        assert len(backend) == 2
        self.clock.advance(10)
        # An expired key may still be counted until something removes it ...
        assert len(backend) in (1, 2)
        backend.get(b"b")
        assert len(backend) == 1  # ... but not after a read found it expired

    def test_stats_fields(self) -> None:
        backend = self.new(max_memory_bytes=20_000)
        empty = backend.stats()
        assert (empty.keys, empty.keys_with_ttl, empty.evictions, empty.expirations) == (0, 0, 0, 0)
        assert 0 <= empty.used_bytes <= 4096  # empty tables at most
        assert empty.limit_bytes == 20_000
        backend.put(b"small", b"v")
        small = backend.stats().used_bytes
        backend.put(b"large", b"v" * 1_000, self.clock.now_ms + 5)
        stats = backend.stats()
        assert (stats.keys, stats.keys_with_ttl) == (2, 1)
        assert empty.average_ttl_ms == 0 and stats.average_ttl_ms in (0, 5)  # 0: the backend does not estimate it
        assert backend.memory_bounds() == (stats.used_bytes, stats.limit_bytes)
        assert stats.used_bytes - small >= 1_000  # a value is charged at least its length
        self.clock.advance(5)
        backend.get(b"large")
        assert backend.stats().expirations == 1
        for i in range(100):  # 100 x 1000 bytes cannot fit in 20_000
            backend.put(b"fill%d" % i, b"v" * 1_000)
            assert backend.stats().used_bytes <= 20_000
        stats = backend.stats()
        assert stats.evictions > 0
        assert stats.keys == len(backend) == 101 - stats.evictions  # 100 fills + "small", minus the evicted

    def test_eviction_never_drops_the_entry_being_written(self) -> None:
        backend = self.new(max_memory_bytes=10_000)
        for i in range(200):
            backend.put(b"k%d" % i, bytes([i % 256]) * (i * 37 % 3_000))
            assert value_of(backend, b"k%d" % i) == bytes([i % 256]) * (i * 37 % 3_000)
            assert backend.stats().used_bytes <= 10_000

    def test_value_too_large(self) -> None:
        backend = self.new(max_memory_bytes=4_096)
        version = backend.put(b"k", b"old")
        before = backend.stats()
        for key, size in ((b"k", 5_000), (b"other", 4_096)):  # the value alone fills the budget: no room for more
            try:
                backend.put(key, b"x" * size)
            except ValueTooLarge:
                pass
            else:
                raise AssertionError(f"a {size}-byte value under a 4096-byte budget was stored")
        assert issubclass(ValueTooLarge, StorageError)
        # A refused write changes nothing: the old value, its version and the accounting stay.
        entry = backend.get_entry(b"k")
        assert entry is not None and (bytes(entry.value), entry.version) == (b"old", version)
        assert backend.stats() == before
        assert backend.get(b"other") is None
        assert backend.last_version == version

    def test_large_values_compare_equal_and_stay_valid(self) -> None:
        # Large values may come back as memoryviews; they must equal the stored
        # bytes, be read-only (a writable view would let a caller corrupt the
        # store) and keep their content after the key is overwritten or deleted.
        backend = self.backend
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
