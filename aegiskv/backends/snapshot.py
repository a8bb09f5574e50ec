"""The snapshot backend: the WAL backend plus point-in-time snapshots loaded with mmap.

A snapshot freezes the keyspace in two quick steps under the node lock -- the
log rotates (so the records it covers end a segment) and the memory backend
hands over references to its entries (values are immutable bytes, so the copy
stays consistent) -- then a worker writes the file without the lock while the
server keeps serving. Once the file is durable, the log segments it covers and
older snapshots are deleted, so the log does not grow without bound.

Start-up loads the newest snapshot (``snapshots/snapshot-<seq>.snap``, read
through mmap, every block's checksum verified before anything is loaded), then
replays the log records after the sequence number it covers. A damaged newest
snapshot stops start-up: the log it covered is gone, so an older snapshot
would silently serve old values.

Snapshots are taken every ``snapshot_interval`` seconds (0 = never on a timer),
on the SNAPSHOT command, and on graceful shutdown.

A snapshot that cannot be written (full disk, EIO, read-only file system)
fails as a whole: its temporary file is deleted, the previous snapshot and
the log it relies on stay as they were, and the error goes to the caller.
None is started while the log is failed (rotating it is the first step).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator

from loguru import logger

from aegiskv.backends import snapshot_format
from aegiskv.backends.base import BackendOptions, Clock, StorageUnavailable, wall_clock_ms
from aegiskv.backends.file_ops import REAL_FILES, FileOps
from aegiskv.backends.options import builtin_options
from aegiskv.backends.snapshot_format import SnapshotError
from aegiskv.backends.wal import WalBackend

SNAPSHOT_PATTERN = re.compile(r"^snapshot-(\d{20})\.snap$")


def snapshot_name(created_ms: int) -> str:
    """Named by creation time, so names sort oldest first (the covered log position is inside)."""
    return f"snapshot-{created_ms:020d}.snap"


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    found = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            match = SNAPSHOT_PATTERN.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


class SnapshotBackend(WalBackend):
    name = "snapshot"

    def __init__(
        self,
        options: BackendOptions,
        clock: Clock = wall_clock_ms,
        rng: random.Random | None = None,
        files: FileOps = REAL_FILES,
    ) -> None:
        if not options.data_dir:
            raise ValueError("snapshots need a data_dir")
        self._snapshot_directory = os.path.join(options.data_dir, "snapshots")
        os.makedirs(self._snapshot_directory, exist_ok=True)
        self.snapshot_interval = builtin_options(options).snapshot_interval  # the server's timer reads it
        self.snapshots_taken = 0
        self.last_snapshot: snapshot_format.SnapshotInfo | None = None
        super().__init__(options, clock, rng, files)

    def _load_snapshot(self, options: BackendOptions) -> int:
        snapshots = list_snapshots(self._snapshot_directory)
        for leftover in os.listdir(self._snapshot_directory):
            if leftover.endswith(".tmp"):  # a snapshot a crash interrupted: never renamed, never used
                os.unlink(os.path.join(self._snapshot_directory, leftover))
        if not snapshots:
            return 0
        _seq, path = snapshots[-1]
        started = time.perf_counter()
        info, blocks = snapshot_format.read(path)  # raises SnapshotError on damage
        loaded = 0
        for block in blocks:
            loaded += self._memory.bulk_load(
                block.keys, block.blobs, block.deadlines, block.key_lengths, block.blob_lengths, info.max_version
            )
        # Keys that expired while the node was down go after the log is replayed
        # (a record in it may have changed their deadline): see finish_recovery.
        logger.info("loaded snapshot {} ({} keys) in {:.2f}s", path, loaded, time.perf_counter() - started)
        self.last_snapshot = info
        return info.covered_seq

    def begin_snapshot(self) -> Callable[[], str]:
        """Freeze the keyspace (under the node lock) and return the job that writes it.

        Raises StorageUnavailable when the log cannot be rotated (it is failed).
        """
        wal = self._wal
        try:
            covered_seq = wal.rotate() - 1 if wal is not None else 0
        except StorageUnavailable:
            # Records its write-out gave up are undone now, under the node lock the
            # caller holds, before any later change to the same keys.
            self.undo_unlogged()
            raise
        keys, blobs, deadline_of = self._memory.export()
        max_version = self._memory.last_version
        # Strictly later than the newest existing name, even within one millisecond.
        existing = list_snapshots(self._snapshot_directory)
        created_ms = max(self._clock(), existing[-1][0] + 1 if existing else 0)
        directory = self._snapshot_directory
        files = self._files

        def entries() -> Iterator[tuple[bytes, bytes | memoryview, int]]:
            for key, blob in zip(keys, blobs):
                yield key, blob, deadline_of(key)

        def job() -> str:
            path = os.path.join(directory, snapshot_name(created_ms))
            started = time.perf_counter()
            info = snapshot_format.write(path, entries(), covered_seq, created_ms, max_version, files)
            # Only now that the snapshot is durable may what it covers go. What
            # cannot be deleted only costs space: start-up loads the newest
            # snapshot and skips the log records it covers.
            for _seq, older in list_snapshots(directory):
                if older != path:
                    try:
                        files.unlink(older)
                    except OSError as error:
                        logger.warning("snapshot {}: cannot delete the older {}: {}", path, older, error)
            dropped = 0
            if wal is not None:
                try:
                    dropped = wal.drop_before(covered_seq)
                except OSError as error:
                    logger.warning("snapshot {}: cannot delete the log segments it covers: {}", path, error)
            self.snapshots_taken += 1
            self.last_snapshot = info
            logger.info(
                "snapshot {}: {} keys in {:.2f}s; dropped {} log segments",
                path,
                info.entries,
                time.perf_counter() - started,
                dropped,
            )
            return path

        return job


__all__ = ["SnapshotBackend", "SnapshotError"]
