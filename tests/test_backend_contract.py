"""The backend conformance suite (aegiskv.testing.backend_contract) against the built-in backends.

The suite is the one plugin authors import: each class below builds one built-in
backend the way the plugin loader does, ``Backend(options, clock)``; the durable
ones get their log settings on top of the public options (BuiltinBackendOptions),
as the server gives them. A few promises of the built-ins that are not part of
the contract follow.
"""

from __future__ import annotations

import dataclasses

from aegiskv.backends.base import Backend, BackendOptions, Clock
from aegiskv.backends.memory import MemoryBackend
from aegiskv.backends.options import builtin_options
from aegiskv.backends.snapshot import SnapshotBackend
from aegiskv.backends.wal import WalBackend
from aegiskv.testing.backend_contract import BIG, BackendContract, ManualClock


class BuiltinContract(BackendContract):
    """The contract, plus what every built-in promises beyond it."""

    def test_builtin_backends_hand_out_their_memory_store(self) -> None:
        # The node calls this store directly (compiled: direct calls); for the durable
        # backends it must be the very keyspace the log records.
        backend, clock = self.backend, self.clock
        # Not part of the Backend interface (a third-party backend need not have one).
        memory = getattr(backend, "memory", None)
        assert isinstance(memory, MemoryBackend)
        version = memory.put(b"k", b"v", clock.now_ms + 1_000)
        entry = backend.get_entry(b"k")
        assert entry is not None and (bytes(entry.value), entry.version) == (b"v", version)
        assert backend.last_version == memory.last_version == version
        assert backend.delete(b"k") and memory.get(b"k") is None
        assert len(backend) == len(memory) == 0


class TestMemory(BuiltinContract):
    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        return MemoryBackend(options, clock)


class TestWalWrite(BuiltinContract):
    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        return WalBackend(dataclasses.replace(builtin_options(options), wal_mode="write"), clock)


class TestWalFsync(BuiltinContract):
    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        return WalBackend(dataclasses.replace(builtin_options(options), wal_mode="fsync"), clock)


class TestSnapshot(BuiltinContract):
    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        return SnapshotBackend(dataclasses.replace(builtin_options(options), wal_mode="fsync"), clock)


def test_memory_backend_hands_out_views_only_above_64_kib() -> None:
    # The no-copy promise of MemoryBackend (not part of the contract).
    backend = MemoryBackend(BackendOptions(max_memory_bytes=BIG), ManualClock())
    limit = 64 * 1024
    backend.put(b"edge", b"e" * limit)
    backend.put(b"over", b"o" * (limit + 1))
    assert type(backend.get(b"edge")) is bytes
    over = backend.get(b"over")
    assert isinstance(over, memoryview) and over == b"o" * (limit + 1)
    over_entry = backend.get_entry(b"over")
    assert over_entry is not None and isinstance(over_entry.value, memoryview)
