"""The write-ahead log on disk: segment files, group writes, group fsync, recovery, disk failures.

Files live in ``<data dir>/wal/`` as ``wal-<first sequence number>.log``
(zero-padded, so names sort in log order) and rotate at ``segment_bytes``.

Who calls what, and from which thread:

* :meth:`append` -- whoever changes the keyspace, under the node lock (the
  reactor inline, or a worker running a batch). It only encodes into a memory
  buffer: no system call. Each record carries the backend's *undo* item: what
  to put back in memory if the record never reaches the OS.
* :meth:`write_out` -- the reactor, before it sends any reply: one ``write()``
  of everything buffered ("written to the OS before the reply": a process
  crash loses nothing acknowledged).
* :meth:`sync` -- a worker (fsync mode): one ``fsync()`` covers every record
  written so far, however many clients wrote them (group commit). The reactor
  never waits on the disk; replies wait instead (see aegiskv.server.durability).
* :meth:`repair` -- a worker, on the server's retry timer, while the log is failed.

An internal lock guards the buffer and the file handles; it is held for
memory copies, ``write()`` calls and opening a segment, never across ``fsync()``.

When the disk fails. A failed ``write()`` (ENOSPC, EIO, EROFS, or a short
write followed by one of them), a failed ``fsync()`` or a segment that cannot
be opened puts the log in the *failed* state (:attr:`failure` says why, in one
line) until :meth:`repair` succeeds; meanwhile nothing is written or synced,
and the server refuses writes.

* A record that did not reach the OS is *given up*: its undo item waits in
  :meth:`take_unlogged` for the backend to put memory back as it was, and the
  server answers its write with an error. Undoing was chosen over keeping the
  record and retrying it: a reply that showed the change (to any client) could
  not leave before the retry succeeded, so a full disk would stop reads too.
  While failed, every record appended is given up the same way (the server
  refuses writes meanwhile: these are keys the cache expired or evicted, and
  the rest of a batch that was already running).
* A record that reached the OS but whose ``fsync()`` failed is not taken to be
  on disk: the kernel may have dropped its dirty pages and will not say so a
  second time (PostgreSQL's "fsyncgate"), so no descriptor is fsynced again
  after a failure. The bytes of every record written since the last good
  fsync are kept in memory (fsync mode only), and the repair writes them again
  into a fresh segment, which it fsyncs; their replies wait for that.
* The segment in use when anything failed is abandoned, with whatever a
  partial write or dropped pages left at its end. The repair starts a fresh
  segment named by the first sequence number not known to be good (after the
  last record written, or in fsync mode the last one fsynced); recovery reads
  a segment's records only up to the next segment's first sequence number,
  so what the abandoned file holds beyond it is never replayed.
* No descriptor is closed before its replacement is open, and none is used
  after it is closed: rotation opens the next segment first and keeps the
  current one when that fails, and the repair closes the abandoned
  descriptors only once the fresh segment is in place.
* Before anything else the repair writes and fsyncs a probe file about the
  size of the write that failed (within bounds), so the node does not call
  itself writable on a disk that is still full.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from aegiskv.backends import wal_format
from aegiskv.backends.base import StorageUnavailable
from aegiskv.backends.file_ops import REAL_FILES, FileOps, describe_error, fsync_directory, write_all
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


def recover(  # noqa: C901 - one pass over the log, each record case beside the others
    directory: str,
    apply: Callable[[Record], None],
    after_seq: int = 0,
    salvage: bool = False,
) -> tuple[int, RecoveryReport]:
    """Replay every record with a sequence number above ``after_seq``; returns (last seq, report).

    A segment's records count only below the next segment's first sequence
    number: from there on the log started over in the next segment (a failed
    write or fsync abandoned this one, see the module docstring), so later
    records here are copies or were given up, and damage after them is what
    the failure left behind (truncated, with a warning). A torn tail of the
    last segment is truncated (with a warning). Other damage raises
    :class:`WalCorruption`, or with ``salvage`` truncates the log at the
    damage and deletes later segments, loudly.
    """
    report = RecoveryReport()
    last_seq = after_seq
    segments = list_segments(directory)
    for index, (first, path) in enumerate(segments):
        is_last = index == len(segments) - 1
        records: list[Record] = []
        size = os.path.getsize(path)
        if size:
            with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                result = wal_format.scan(mapped, records)
        else:
            result = wal_format.ScanResult(ScanEnd.CLEAN, 0, "")
        report.segments += 1
        abandoned_tail = False
        if not is_last:
            next_first = segments[index + 1][0]
            reached = records[-1].seq if records else first - 1
            records = [record for record in records if record.seq < next_first]
            if result.end is not ScanEnd.CLEAN:
                # Damage after every record this segment is responsible for was
                # read is what a failure left; before that, a segment completed
                # by rotation was damaged: corruption, not a torn write.
                abandoned_tail = reached >= next_first - 1
                if not abandoned_tail:
                    result = result._replace(end=ScanEnd.CORRUPT)
        if result.end is ScanEnd.CORRUPT and not abandoned_tail:
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
        if abandoned_tail:
            logger.warning(
                "write-ahead log {}: abandoned after a storage failure, {} at offset {} after the records "
                "the next segment does not hold: truncating {} bytes",
                path,
                result.problem,
                result.good_bytes,
                size - result.good_bytes,
            )
            _truncate(path, result.good_bytes)
        elif result.end is ScanEnd.TORN:
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


# Segment descriptors: appends only, so a write lands after the last good
# record even if something else moved the file offset.
_SEGMENT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
_PROBE_NAME = "probe.tmp"
# The repair's probe: the size of the write that failed, within these bounds
# (smaller would report a disk with room for a few records as repaired; larger
# would spend a lot of I/O each retry on a disk that stays full).
_MIN_PROBE = 64 * 1024
_MAX_PROBE = 1024 * 1024


class WriteAheadLog:
    """Appends records to segment files. See the module docstring for threads and failures."""

    def __init__(
        self,
        directory: str,
        next_seq: int,
        segment_bytes: int,
        mode: str = "write",
        files: FileOps = REAL_FILES,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.mode = mode  # "write" or "fsync": what the server waits for before a reply
        self._files = files
        self._keeps_unsynced = mode == "fsync"
        self._lock = threading.Lock()
        # Directory changes made by workers (repair, drop_before): one at a time,
        # so a snapshot's clean-up never deletes the segment a repair just renamed.
        self._maintenance = threading.Lock()
        # One fsync at a time; close() waits for the one in flight before closing its descriptors.
        self._sync_lock = threading.Lock()
        # Records appended and not yet written, back to back: one write() hands them all over.
        self._buffer = bytearray()
        self._undo: list[object] = []  # the backend's undo item of each buffered record
        self._next_seq = next_seq
        self.appended_seq = next_seq - 1  # last sequence number handed out
        self.written_seq = next_seq - 1  # last one handed to the OS (write())
        self.durable_seq = next_seq - 1  # last one known to be on disk (fsync())
        self.bytes_written = 0
        self.records_written = 0
        self.syncs = 0
        self.failure: str | None = None  # why the log cannot be written now (None: it can)
        self.failures = 0  # times it entered the failed state
        self.given_up = 0  # records that never reached the OS (handed to take_unlogged())
        # Given-up records handed to the backend for undoing, as (given-up ranges merged,
        # undone ranges in the order they were undone), (first, last) sequence numbers; an
        # undone range is one that held a change the backend put back (not only keys the
        # cache dropped). Replaced whole, never changed in place, so the reactor reads it
        # without the lock; a range or two per failure.
        self._gaps: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = ((), ())
        self.undos = 0  # how many undone ranges there are (a reply notes it before it runs)
        self._unlogged: list[tuple[int, object]] = []  # (seq, undo item) given up, not yet taken
        # fsync mode: (last seq, bytes) of the records written since the last good fsync,
        # which a repair writes again after a failed one.
        self._unsynced: list[tuple[int, bytes | bytearray]] = []
        self._probe_bytes = _MIN_PROBE
        for name in os.listdir(directory):
            if name.endswith(".tmp"):  # a repair or probe a crash interrupted: never renamed, never used
                os.unlink(os.path.join(directory, name))
        segments = list_segments(directory)
        if segments:
            first, path = segments[-1]
            self._segment_first = first
        else:
            self._segment_first = next_seq
            path = os.path.join(directory, segment_name(next_seq))
        self._fd = files.open(path, _SEGMENT_FLAGS, 0o644)
        self._segment_size = os.fstat(self._fd).st_size
        self._to_sync: list[int] = []  # fsync mode: rotated segments written but not yet fsynced
        fsync_directory(files, directory)

    # -- any thread holding the node lock ----------------------------------------------

    def append(
        self,
        record_type: int,
        key: bytes,
        value: bytes = b"",
        version: int = 0,
        expires_at_ms: int = 0,
        undo: object = None,
    ) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            wal_format.encode_into(self._buffer, record_type, seq, key, value, version, expires_at_ms)
            self._undo.append(undo)
            self.appended_seq = seq
            return seq

    @property
    def has_buffered(self) -> bool:
        return bool(self._buffer)

    @property
    def has_unlogged(self) -> bool:
        """Records were given up and their undo items wait in :meth:`take_unlogged`."""
        return bool(self._unlogged)

    def take_unlogged(self) -> list[object]:
        """Undo items of every record given up, oldest first, and of every record still
        buffered when the log is failed (given up now). The caller undoes them newest first,
        under the node lock: no record can be appended meanwhile, so no later change to a
        key is undone before an earlier one.

        The records count as given up (and their changes as undone) from this call on, not
        from the failed write: until memory is put back, a reply must not take them as settled.
        """
        with self._lock:
            if self.failure is not None and self._buffer:
                self._give_up_locked(self._take_buffer_locked()[1])
            items = self._unlogged
            if not items:
                return []
            self._unlogged = []
            first, last = items[0][0], items[-1][0]
            given_up, undone = self._gaps
            if given_up and given_up[-1][1] == first - 1:
                given_up = (*given_up[:-1], (given_up[-1][0], last))
            else:
                given_up = (*given_up, (first, last))
            if any(undo is not None for _seq, undo in items):
                undone = (*undone, (first, last))
            self._gaps = (given_up, undone)
            self.undos = len(undone)
            self.given_up += len(items)
            return [undo for _seq, undo in items]

    def settled_through(self, seq: int) -> int:
        """``seq`` less the given-up records at its top: every record between the result and
        ``seq`` was given up (and its change undone), so only the result must still be written."""
        for first, last in reversed(self._gaps[0]):
            if first <= seq <= last:
                seq = first - 1
            elif last < seq:
                break
        return seq

    def undone_since(self, undos: int, seq: int) -> bool:
        """Whether a range undone after the first ``undos`` holds a record at or below ``seq``:
        a reply that noted ``undos`` before it ran and saw the log up to ``seq`` may have seen
        a change that was then undone."""
        return any(first <= seq for first, _last in self._gaps[1][undos:])

    # -- the reactor ---------------------------------------------------------------------

    def write_out(self) -> None:
        """Hand every buffered record to the OS; rotate when the segment is full.

        Never raises for a storage error: records that did not reach the OS
        are given up (see :meth:`take_unlogged`) and :attr:`failure` is set.
        """
        with self._lock:
            if not self._buffer:
                return
            data, undo = self._take_buffer_locked()
            if self.failure is not None:
                self._give_up_locked(undo)  # nothing is written while failed
                return
            done = 0
            try:
                view = memoryview(data)
                while done < len(data):
                    written = self._files.write(self._fd, view[done:])
                    if written <= 0:
                        raise OSError(errno.EIO, f"write() wrote {written} bytes")
                    done += written
            except OSError as error:
                self._write_failed_locked(undo, data, done, error)
                return
            self._written_locked(self.appended_seq, len(undo), data)
            if self._segment_size >= self.segment_bytes:
                try:
                    self._rotate_locked()
                except OSError as error:
                    self._fail_locked(
                        f"{describe_error(error)} opening the next write-ahead log segment in {self.directory}"
                    )

    def _take_buffer_locked(self) -> tuple[bytearray, list[object]]:
        # The buffer taken is never changed again: in fsync mode it is what a repair rewrites.
        data, undo = self._buffer, self._undo
        self._buffer = bytearray()
        self._undo = []
        return data, undo

    def _written_locked(self, last_seq: int, count: int, data: bytes | bytearray) -> None:
        self._segment_size += len(data)
        self.bytes_written += len(data)
        self.records_written += count
        self.written_seq = last_seq
        if self._keeps_unsynced:
            self._unsynced.append((last_seq, data))

    def _write_failed_locked(self, undo: list[object], data: bytearray, done: int, error: OSError) -> None:
        # The records wholly written before the failure reached the OS: they stay
        # written (and acknowledged). The rest is given up. The buffer holds
        # consecutive sequence numbers ending at appended_seq, one per undo item.
        complete = 0
        complete_bytes = 0
        while complete < len(undo):
            size = wal_format.record_size(data, complete_bytes)
            if complete_bytes + size > done:
                break
            complete_bytes += size
            complete += 1
        if complete:
            first = self.appended_seq - len(undo) + 1
            self._written_locked(first + complete - 1, complete, data[:complete_bytes])
        self._give_up_locked(undo[complete:])
        self._probe_bytes = min(_MAX_PROBE, max(_MIN_PROBE, len(data) - complete_bytes))
        self._fail_locked(f"{describe_error(error)} writing {self._segment_path()}")

    def _give_up_locked(self, undo: list[object]) -> None:
        first = self.appended_seq - len(undo) + 1  # given-up records are always the newest
        self._unlogged.extend(zip(range(first, first + len(undo)), undo))

    def _fail_locked(self, failure: str) -> None:
        if self.failure is None:
            self.failures += 1
            logger.error("write-ahead log failed: {}; refusing writes until it can be written", failure)
        self.failure = failure

    def _segment_path(self) -> str:
        return os.path.join(self.directory, segment_name(self._segment_first))

    def rotate(self) -> int:
        """Start a new segment now (snapshots do, so a WAL prefix can be dropped whole).

        Returns the first sequence number the new segment will hold; raises
        :class:`StorageUnavailable` when the log is failed or the new segment
        cannot be opened (the log is then failed).
        """
        if self.failure is None:  # while failed, buffered records are the reactor's to give up
            self.write_out()
        with self._lock:
            if self.failure is None and self._segment_size:
                try:
                    self._rotate_locked()
                except OSError as error:
                    self._fail_locked(
                        f"{describe_error(error)} opening the next write-ahead log segment in {self.directory}"
                    )
            if self.failure is not None:
                raise StorageUnavailable(f"the write-ahead log cannot be written: {self.failure}")
            return self._segment_first

    def _rotate_locked(self) -> None:
        # The next segment is open (and its name durable) before the current
        # one is let go: a failure here leaves the current one in use.
        first = self.written_seq + 1
        path = os.path.join(self.directory, segment_name(first))
        fd = self._files.open(path, _SEGMENT_FLAGS, 0o644)
        try:
            fsync_directory(self._files, self.directory)
        except OSError:
            self._close_quietly(fd)
            raise
        previous = self._fd
        self._fd = fd
        self._segment_first = first
        self._segment_size = 0
        if self._keeps_unsynced:
            self._to_sync.append(previous)  # the next sync() fsyncs and closes it
        else:
            self._close_quietly(previous)  # write mode never fsyncs: the OS has the bytes already

    # -- a worker ---------------------------------------------------------------------------

    def sync(self) -> int:
        """fsync everything written so far; returns the sequence number now durable.

        One sync at a time (the server never starts a second before the first
        returns); rotated segments are closed once synced, nobody writes them.
        Raises :class:`StorageUnavailable` when the log is failed (a descriptor
        is never fsynced again after a failure) and OSError when the fsync
        fails (the log is then failed).
        """
        with self._sync_lock:
            with self._lock:
                if self.failure is not None:
                    raise StorageUnavailable(f"the write-ahead log cannot be written: {self.failure}")
                target = self.written_seq
                rotated = self._to_sync
                self._to_sync = []
                current = self._fd
            try:
                for fd in rotated:
                    self._files.fsync(fd)
                self._files.fsync(current)
            except OSError as error:
                with self._lock:
                    # Abandoned with the current one: the repair closes them, nobody fsyncs them again.
                    self._to_sync = rotated + self._to_sync
                    self._fail_locked(f"{describe_error(error)} syncing the write-ahead log in {self.directory}")
                raise
            for fd in rotated:
                self._close_quietly(fd)
            with self._lock:
                self.syncs += 1
                self.durable_seq = max(self.durable_seq, target)
                unsynced = self._unsynced
                while unsynced and unsynced[0][0] <= target:
                    unsynced.pop(0)
                return self.durable_seq

    def repair(self) -> None:
        """Make a failed log writable again; raises OSError while the disk still refuses.

        Probe the disk, then start a fresh segment after the last record known
        to be good, holding (fsync mode) the records written since the last
        good fsync, fsynced; later segments, which held only those records,
        are deleted; then the abandoned descriptors are closed. A worker, not
        while a sync runs (the server waits for it).
        """
        with self._maintenance:
            with self._lock:
                if self.failure is None:
                    return
                probe_bytes = self._probe_bytes
                if self._keeps_unsynced:
                    first = self.durable_seq + 1
                    kept = b"".join(data for _last, data in self._unsynced)
                else:
                    first = self.written_seq + 1
                    kept = b""
                kept_through = self.written_seq
            self._probe(probe_bytes)
            path = os.path.join(self.directory, segment_name(first))
            # Built aside and renamed into place: a segment of that name may be the
            # abandoned one (nothing good in it), replaced whole or not at all.
            temporary = path + ".tmp"
            fd = self._files.open(temporary, _SEGMENT_FLAGS | os.O_TRUNC, 0o644)
            try:
                write_all(self._files, fd, kept)
                self._files.fsync(fd)
                self._files.replace(temporary, path)
                for later_first, later_path in list_segments(self.directory):
                    if later_first > first:
                        self._files.unlink(later_path)  # its records are in the fresh segment, or were given up
                fsync_directory(self._files, self.directory)
            except OSError:
                self._close_quietly(fd)
                self._unlink_quietly(temporary)
                raise
            with self._lock:
                abandoned = [self._fd, *self._to_sync]
                self._fd = fd
                self._to_sync = []
                self._segment_first = first
                self._segment_size = len(kept)
                if self._keeps_unsynced:
                    self.durable_seq = max(self.durable_seq, kept_through)
                    self._unsynced.clear()
                failure = self.failure
                self.failure = None
            for old in abandoned:
                self._close_quietly(old)
            logger.warning(
                "write-ahead log writable again (was: {}): new segment {}{}; accepting writes",
                failure,
                path,
                f" holding {len(kept)} bytes written before the failure" if kept else "",
            )

    def _probe(self, size: int) -> None:
        """Write and fsync ``size`` bytes in a file of their own, then delete it; raises OSError."""
        path = os.path.join(self.directory, _PROBE_NAME)
        fd = self._files.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(self._files, fd, bytes(size))
            self._files.fsync(fd)
        finally:
            self._close_quietly(fd)
            self._unlink_quietly(path)

    def drop_before(self, seq: int) -> int:
        """Delete whole segments whose records all have sequence numbers <= ``seq``; returns how many.

        Raises OSError when one cannot be deleted (the rest stay: replay skips
        what a snapshot covers, so extra segments cost only space).
        """
        with self._maintenance:
            segments = list_segments(self.directory)
            removed = 0
            for index, (_first, path) in enumerate(segments[:-1]):  # never the segment being written
                next_first = segments[index + 1][0]
                if next_first - 1 <= seq:
                    self._files.unlink(path)
                    removed += 1
            if removed:
                fsync_directory(self._files, self.directory)
            return removed

    def close(self) -> None:
        """Write out, fsync and close every segment (shutdown). Nothing is fsynced after a failure."""
        with self._sync_lock:
            self.write_out()
            with self._lock:
                fds = [*self._to_sync, self._fd]
                self._to_sync = []
                self._fd = -1  # never a descriptor: a use after close fails instead of reaching another file
                healthy = self.failure is None
            for fd in fds:
                if healthy:
                    try:
                        self._files.fsync(fd)
                    except OSError as error:
                        logger.error("write-ahead log: fsync at close failed: {}", describe_error(error))
                        healthy = False
                self._close_quietly(fd)
            if healthy:
                self.durable_seq = self.written_seq

    def _close_quietly(self, fd: int) -> None:
        # A failed close() still releases the descriptor (Linux): never retried,
        # and whatever it reports concerns data already judged by write/fsync.
        try:
            self._files.close(fd)
        except OSError as error:
            logger.warning("write-ahead log: closing a segment descriptor: {}", describe_error(error))

    def _unlink_quietly(self, path: str) -> None:
        try:
            self._files.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning("write-ahead log: cannot delete {}: {}", path, describe_error(error))


__all__ = ["RecordType", "RecoveryReport", "WalCorruption", "WriteAheadLog", "recover"]
