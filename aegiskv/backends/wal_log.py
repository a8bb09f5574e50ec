"""The write-ahead log on disk: segment files, group writes, group fsync, recovery.

Files live in ``<data dir>/wal/`` as ``wal-<first sequence number>.log``
(zero-padded, so names sort in log order) and rotate at ``segment_bytes``.

Who calls what, and from which thread:

* :meth:`append` -- whoever changes the keyspace, under the node lock (the
  reactor inline, or a worker running a batch). It only encodes into a memory
  buffer: no system call.
* :meth:`write_out` -- the reactor, before it sends any reply: one ``write()``
  of everything buffered ("written to the OS before the reply": a process
  crash loses nothing acknowledged).
* :meth:`sync` -- a worker (fsync mode): one ``fsync()`` covers every record
  written so far, however many clients wrote them (group commit). The reactor
  never waits on the disk; replies wait instead (see aegiskv.server.durability).

An internal lock guards the buffer and the file handles; it is held for
memory copies and ``write()`` calls, never across ``fsync()``.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from aegiskv.backends import wal_format
from aegiskv.backends.wal_format import Record, RecordType, ScanEnd

SEGMENT_PATTERN = re.compile(r"^wal-(\d{20})\.log$")


class WalCorruption(Exception):
    """The log is damaged before its tail; the message names file and offset."""


def segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


def list_segments(directory: str) -> list[tuple[int, str]]:
    """(first sequence number, path) of every segment, in log order."""
    found = []
    for name in os.listdir(directory):
        match = SEGMENT_PATTERN.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


@dataclass
class RecoveryReport:
    segments: int = 0
    records: int = 0
    torn_bytes: int = 0  # bytes cut off the tail
    salvaged_from: str = ""  # "file@offset" where salvage dropped the rest of the log


def recover(
    directory: str,
    apply: Callable[[Record], None],
    after_seq: int = 0,
    salvage: bool = False,
) -> tuple[int, RecoveryReport]:
    """Replay every record with a sequence number above ``after_seq``; returns (last seq, report).

    A torn tail is truncated (with a warning). Corruption before the tail
    raises :class:`WalCorruption`, or with ``salvage`` truncates the log at
    the damage and deletes later segments, loudly.
    """
    report = RecoveryReport()
    last_seq = after_seq
    segments = list_segments(directory)
    for index, (_first, path) in enumerate(segments):
        is_last = index == len(segments) - 1
        records: list[Record] = []
        size = os.path.getsize(path)
        if size:
            with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                result = wal_format.scan(mapped, records)
        else:
            result = wal_format.ScanResult(ScanEnd.CLEAN, 0, "")
        report.segments += 1
        if result.end is ScanEnd.TORN and not is_last:
            # A segment before the last one was complete when the log rotated;
            # damage there is corruption, not a torn write.
            result = result._replace(end=ScanEnd.CORRUPT)
        if result.end is ScanEnd.CORRUPT:
            where = f"{path} at offset {result.good_bytes}"
            if not salvage:
                raise WalCorruption(
                    f"write-ahead log {where}: {result.problem}; refusing to start "
                    "(set wal_salvage = true to keep the records before it and drop the rest)"
                )
            logger.error("SALVAGE: write-ahead log {}: {}; dropping it and everything after", where, result.problem)
            report.salvaged_from = where
            for record in records:
                if record.seq > last_seq:
                    apply(record)
                    last_seq = record.seq
                    report.records += 1
            _truncate(path, result.good_bytes)
            for _later_first, later_path in segments[index + 1 :]:
                os.unlink(later_path)
            break
        for record in records:
            if record.seq > last_seq:
                apply(record)
                last_seq = record.seq
                report.records += 1
        if result.end is ScanEnd.TORN:
            report.torn_bytes = size - result.good_bytes
            logger.warning(
                "write-ahead log {}: torn tail ({}) at offset {}: truncating {} bytes",
                path,
                result.problem,
                result.good_bytes,
                report.torn_bytes,
            )
            _truncate(path, result.good_bytes)
    return last_seq, report


def _truncate(path: str, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


class WriteAheadLog:
    """Appends records to segment files. See the module docstring for threads."""

    def __init__(self, directory: str, next_seq: int, segment_bytes: int, mode: str = "write") -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.mode = mode  # "write" or "fsync": what the server waits for before a reply
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._next_seq = next_seq
        self.appended_seq = next_seq - 1  # last sequence number handed out
        self.written_seq = next_seq - 1  # last one handed to the OS (write())
        self.durable_seq = next_seq - 1  # last one known to be on disk (fsync())
        self.bytes_written = 0
        self.records_written = 0
        self.syncs = 0
        segments = list_segments(directory)
        if segments:
            first, path = segments[-1]
            self._segment_first = first
        else:
            self._segment_first = next_seq
            path = os.path.join(directory, segment_name(next_seq))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment_size = os.fstat(self._fd).st_size
        self._unsynced_fds: list[int] = []  # rotated segments written but not yet fsynced
        _fsync_directory(directory)

    # -- any thread holding the node lock ----------------------------------------------

    def append(self, record_type: int, key: bytes, value: bytes = b"", version: int = 0, expires_at_ms: int = 0) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            self._buffer.append(wal_format.encode(record_type, seq, key, value, version, expires_at_ms))
            self.appended_seq = seq
            return seq

    @property
    def has_buffered(self) -> bool:
        return bool(self._buffer)

    # -- the reactor ---------------------------------------------------------------------

    def write_out(self) -> None:
        """Hand every buffered record to the OS; rotate when the segment is full."""
        with self._lock:
            if not self._buffer:
                return
            data = b"".join(self._buffer)
            count = len(self._buffer)
            self._buffer.clear()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._segment_size += len(data)
            self.bytes_written += len(data)
            self.records_written += count
            self.written_seq = self.appended_seq
            if self._segment_size >= self.segment_bytes:
                self._rotate_locked()

    def rotate(self) -> int:
        """Start a new segment now (snapshots do, so a WAL prefix can be dropped whole).

        Returns the first sequence number the new segment will hold.
        """
        self.write_out()
        with self._lock:
            if self._segment_size:
                self._rotate_locked()
            return self._segment_first

    def _rotate_locked(self) -> None:
        if self.mode == "fsync":
            self._unsynced_fds.append(self._fd)  # the next sync() fsyncs and closes it
        else:
            os.close(self._fd)  # write mode never fsyncs: the OS has the bytes already
        self._segment_first = self.appended_seq + 1
        path = os.path.join(self.directory, segment_name(self._segment_first))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment_size = 0
        _fsync_directory(self.directory)

    # -- a worker ---------------------------------------------------------------------------

    def sync(self) -> int:
        """fsync everything written so far; returns the sequence number now durable.

        One sync at a time (the server never starts a second before the first
        returns); rotated segments are closed once synced, nobody writes them.
        """
        with self._lock:
            target = self.written_seq
            rotated = self._unsynced_fds
            self._unsynced_fds = []
            current = self._fd
        for fd in rotated:
            os.fsync(fd)
            os.close(fd)
        os.fsync(current)
        self.syncs += 1
        with self._lock:
            self.durable_seq = max(self.durable_seq, target)
            return self.durable_seq

    def drop_before(self, seq: int) -> int:
        """Delete whole segments whose records all have sequence numbers <= ``seq``; returns how many."""
        segments = list_segments(self.directory)
        removed = 0
        for index, (_first, path) in enumerate(segments[:-1]):  # never the segment being written
            next_first = segments[index + 1][0]
            if next_first - 1 <= seq:
                os.unlink(path)
                removed += 1
        if removed:
            _fsync_directory(self.directory)
        return removed

    def close(self) -> None:
        self.write_out()
        with self._lock:
            fds = [*self._unsynced_fds, self._fd]
            self._unsynced_fds = []
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)
        self.durable_seq = self.written_seq


def _fsync_directory(directory: str) -> None:
    """Make a created, renamed or removed file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["RecordType", "RecoveryReport", "WalCorruption", "WriteAheadLog", "recover"]
