"""Storage faults for tests: a FileOps that fails chosen calls, and a node served in-process with it.

:class:`FaultyFiles` is the real file system except for the calls a test
names: the n-th call of an operation (or every call from some point on, a
full disk) raises ENOSPC, EIO or EROFS, or writes only part of what it was
given. It also keeps the books on descriptors: every write or fsync must go
to a descriptor it opened and has not closed, so a log byte sent to a closed
(and perhaps reused) descriptor is caught where it happens.

:class:`InProcessNode` is a real Server (reactor, pipeline, both ports) on
port 0 in a thread, whose backend makes its file-system calls through a
FaultyFiles; the daemon has no way to take one, so it is built here.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aegiskv.backends.base import wall_clock_ms
from aegiskv.backends.file_ops import Data, FileOps
from aegiskv.backends.options import BuiltinBackendOptions
from aegiskv.backends.snapshot import SnapshotBackend
from aegiskv.backends.wal import WalBackend
from aegiskv.cluster.interfaces import PlacementOptions
from aegiskv.cluster.shard_map import Topology
from aegiskv.cluster.slots import ShardMapper
from aegiskv.node.operations import KeyspaceLimits, Node, first_version
from aegiskv.server import plugins
from aegiskv.server.settings import build
from aegiskv.server.wiring import Server

# The operations FaultyFiles can fail, as FileOps names them.
OPERATIONS = ("open", "write", "pwrite", "fsync", "close", "replace", "unlink")
ERRORS = (errno.ENOSPC, errno.EIO, errno.EROFS)


@dataclass(frozen=True)
class Fault:
    """What a failing call does: raise ``error``, or (``short``) write half and return that count."""

    error: int = errno.ENOSPC
    short: bool = False


class FaultyFiles(FileOps):
    """The real file system, failing the calls it is told to. Thread-safe (workers call it too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # calls made so far, by operation
        self.planned: dict[tuple[str, int], Fault] = {}  # (operation, 1-based call number) -> fault
        self.failing: dict[str, Fault] = {}  # operation -> fault for every call (until cleared)
        self.injected: list[str] = []  # what was injected, for failure messages
        self.open_descriptors: set[int] = set()
        self.misuse: list[str] = []  # writes or fsyncs on descriptors not open through us

    def fail(self, operation: str, call: int, fault: Fault) -> None:
        """Fail the ``call``-th call of ``operation`` (counted from now)."""
        with self._lock:
            self.planned[(operation, self.calls[operation] + call)] = fault

    def fail_always(self, operation: str, fault: Fault) -> None:
        with self._lock:
            self.failing[operation] = fault

    def heal(self) -> None:
        with self._lock:
            self.planned.clear()
            self.failing.clear()

    def _fault(self, operation: str) -> Fault | None:
        with self._lock:
            self.calls[operation] += 1
            fault = self.planned.pop((operation, self.calls[operation]), None) or self.failing.get(operation)
            if fault is not None:
                self.injected.append(f"{operation}#{self.calls[operation]}: {fault}")
            return fault

    def _check_open(self, operation: str, fd: int) -> None:
        with self._lock:
            if fd not in self.open_descriptors:
                self.misuse.append(f"{operation} on descriptor {fd}, which is not an open log or snapshot file")

    @staticmethod
    def _raise(fault: Fault) -> None:
        raise OSError(fault.error, os.strerror(fault.error))

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fault = self._fault("open")
        if fault is not None:
            self._raise(fault)
        fd = super().open(path, flags, mode)
        with self._lock:
            self.open_descriptors.add(fd)
        return fd

    def write(self, fd: int, data: Data) -> int:
        self._check_open("write", fd)
        fault = self._fault("write")
        if fault is not None:
            if fault.short and len(data) > 1:
                return super().write(fd, memoryview(data)[: len(data) // 2])
            self._raise(fault)
        return super().write(fd, data)

    def pwrite(self, fd: int, data: Data, offset: int) -> int:
        self._check_open("pwrite", fd)
        fault = self._fault("pwrite")
        if fault is not None:
            if fault.short and len(data) > 1:
                return super().pwrite(fd, memoryview(data)[: len(data) // 2], offset)
            self._raise(fault)
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._check_open("fsync", fd)
        fault = self._fault("fsync")
        if fault is not None:
            self._raise(fault)
        super().fsync(fd)

    def close(self, fd: int) -> None:
        self._check_open("close", fd)
        with self._lock:
            self.open_descriptors.discard(fd)
        super().close(fd)  # released first, as Linux does even when close() then reports an error
        fault = self._fault("close")
        if fault is not None:
            self._raise(fault)

    def replace(self, source: str, destination: str) -> None:
        fault = self._fault("replace")
        if fault is not None:
            self._raise(fault)
        super().replace(source, destination)

    def unlink(self, path: str) -> None:
        fault = self._fault("unlink")
        if fault is not None:
            self._raise(fault)
        super().unlink(path)


class Sentinels:
    """Pipes opened where a descriptor the log closed by mistake would be reused.

    Each new pipe takes the lowest free descriptor numbers; :meth:`received`
    is everything any of them was sent (it must stay empty).
    """

    def __init__(self) -> None:
        self._pipes: list[tuple[int, int]] = []

    def open(self, count: int = 2) -> None:
        for _ in range(count):
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            self._pipes.append((read_end, write_end))

    def received(self) -> bytes:
        data = b""
        for read_end, _write_end in self._pipes:
            try:
                data += os.read(read_end, 1 << 20)
            except BlockingIOError:
                pass
        return data

    def close(self) -> None:
        for read_end, write_end in self._pipes:
            os.close(read_end)
            os.close(write_end)
        self._pipes.clear()


def open_backend(data_dir: Path, wal: str, files: FileOps | None = None, **options: object) -> SnapshotBackend:
    """The server's default durable backend on ``data_dir``; real files unless ``files`` is given."""
    settings: dict[str, object] = {
        "max_memory_bytes": 1 << 30,
        "data_dir": str(data_dir),
        "wal_mode": wal,
        "first_version": first_version(wall_clock_ms()),
    }
    settings.update(options)
    backend_options = BuiltinBackendOptions(**settings)  # type: ignore[arg-type]
    if files is None:
        return SnapshotBackend(backend_options)
    return SnapshotBackend(backend_options, files=files)


class InProcessNode:
    """A Server on 127.0.0.1 port 0 in a thread, its backend writing through ``files``."""

    def __init__(
        self, data_dir: Path, wal: str, files: FileOps, segment_bytes: int = 64 << 20, retry_interval: float = 0.05
    ) -> None:
        self.config = build(
            environ={},
            flags={
                "bind": "127.0.0.1:0",
                "resp_bind": "127.0.0.1:0",
                "health_addr": "127.0.0.1:0",
                "gossip": "off",
                "data_dir": str(data_dir),
                "wal": wal,
                "node_id": "storage-faults",
                "worker_threads": "2",
            },
        )
        config = self.config
        backend = open_backend(data_dir, wal, files, wal_segment_bytes=segment_bytes)
        self.backend: WalBackend = backend
        limits = KeyspaceLimits(config.max_key_bytes, config.max_value_bytes, config.max_batch_keys)
        node = Node(backend, limits, ShardMapper(config.shards))
        _plugin, placement = plugins.load_placement(
            config.placement, PlacementOptions(config.virtual_nodes, config.placement_load_factor)
        )
        self.server = Server(config, node, Topology(placement, ShardMapper(config.shards), config.replication_factor))
        assert self.server.durability is not None
        self.server.durability.retry_interval = retry_interval
        started = threading.Event()

        def serve() -> None:
            # start() binds and schedules timers: on the thread that runs the reactor.
            self.server.start()
            started.set()
            self.server.run()

        self._thread = threading.Thread(target=serve, name="in-process-node", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("in-process node did not start")
        self.resp_address = self.server.resp_address
        self.native_address = self.server.native_address
        self.health_address = self.server.health_address

    def stop(self) -> None:
        """Stop serving and close the log (a clean shutdown, without the final snapshot)."""
        self.server.stop()
        self._thread.join(10)
        assert not self._thread.is_alive(), "in-process node did not stop"
        self.backend.close()


@contextmanager
def in_process_node(data_dir: Path, wal: str, files: FileOps, **kwargs: object) -> Iterator[InProcessNode]:
    node = InProcessNode(data_dir, wal, files, **kwargs)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        node.stop()
