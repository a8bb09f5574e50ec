"""Drives a backend's write-ahead log from the reactor: group writes, group fsync, held replies, disk failures.

* Before any reply leaves the server, every buffered log record is written to
  the OS (``Reactor.pre_send``), and once per loop turn before that turn's
  replies are sent (``Reactor.end_of_turn``).
* The reply to a write is *held* by its connection until the log holds the
  write's records as ``--wal`` promised: handed to the OS (``write``: the
  same loop turn) or fsynced (``fsync``). In fsync mode, at the end of a loop
  turn, if records were written since the last sync and no sync is running,
  one ``fsync`` goes to the worker pool; every write that reached the OS
  before it started shares it (group commit). Held replies are released in
  order. The reactor never waits on the disk; clients wait for theirs.
* Any reply, a read's too, that was computed while records were waiting to
  be written (it may have seen their changes) leaves only once they were
  written or given up: in the same loop turn. If a change it may have seen
  was undone, it gets the error instead (:meth:`undone_error`): a DEL that
  found nothing because an earlier DEL had not been logged yet, or a GET of
  a value that was then put back, must not be taken for the state.
* When the log fails (full disk, EIO, read-only file system; see
  aegiskv.backends.wal_log): the changes whose records never reached the OS
  are undone in memory at once, under the node lock, and their writers get
  the error instead of their reply; new writes are refused
  (:meth:`refused_write`) while reads go on; a timer retries the log's repair
  in the worker pool every ``retry_interval`` seconds until it works, and
  writes are accepted again from then on. Replies held for a failed fsync
  leave once the repair has fsynced their records again. A failed fsync used
  to stop the node: refusing writes keeps the reads a cache is for, and the
  repair never trusts what the failed fsync covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aegiskv.backends.base import StorageUnavailable, WriteAheadLogLike
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.net.reactor import Reactor

# Seconds between repair attempts: a disk given room again is writable within
# about this long plus one probe.
RETRY_INTERVAL = 0.5


class Holder(Protocol):
    """A connection that holds replies until the log has their writes (RequestPipeline)."""

    def release(self) -> None:
        """Look at the held replies again: the log made progress, or gave records up."""


class Durability:
    def __init__(
        self,
        reactor: Reactor,
        log: WriteAheadLogLike,
        undo_unlogged: Callable[[], int],
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        """``undo_unlogged`` puts memory back for the records the log gave up (it takes the node lock)."""
        self.reactor = reactor
        self.log = log
        self.fsync = log.mode == "fsync"
        self.retry_interval = retry_interval
        self._undo_unlogged = undo_unlogged
        self._syncing = False
        self._repairing = False  # a repair is scheduled or running
        self._waiting: set[Holder] = set()
        # What the holders last looked at: they look again when any of it changes.
        self._seen = (log.written_seq, log.durable_seq, log.given_up)
        self.last_failure = ""  # the latest failure, for the error a given-up write gets
        self.writes_undone = 0
        # fsyncs in the last whole second (INFO persistence, /metrics): group commit shows as
        # fewer fsyncs than writes. Counted by a once-a-second timer, not per fsync.
        self.syncs_per_second = 0
        self._syncs_counted = log.syncs
        reactor.pre_send = self.write_out
        reactor.end_of_turn.append(self._end_of_turn)
        if self.fsync:
            reactor.call_every(1.0, self._count_syncs)

    def _count_syncs(self) -> None:
        syncs = self.log.syncs
        self.syncs_per_second = syncs - self._syncs_counted
        self._syncs_counted = syncs

    def settled(self, seen_seq: int, write: bool) -> bool:
        """Whether a reply that saw the log up to ``seen_seq`` may leave: every record up to
        there is written (fsynced, for a write in fsync mode) or was given up."""
        log = self.log
        limit = log.durable_seq if write and self.fsync else log.written_seq
        return seen_seq <= limit or log.settled_through(seen_seq) <= limit

    @property
    def failure(self) -> str | None:
        """Why writes are refused now (None: they are accepted)."""
        return self.log.failure

    def refused_write(self) -> CommandError:
        """The error a write gets while the log cannot be written."""
        return CommandError(
            ErrorKind.STORAGE_FAILED,
            f"Errors writing to the write-ahead log: {self.log.failure or self.last_failure}; "
            "writes are refused until it can be written (reads are served)",
        )

    def undone_error(self) -> CommandError:
        """The error a command gets when changes it made or saw could not be logged and were undone."""
        return CommandError(
            ErrorKind.STORAGE_FAILED,
            f"Errors writing to the write-ahead log: {self.log.failure or self.last_failure}; "
            "changes not yet logged were undone, any this command made or read among them",
        )

    def write_out(self) -> None:
        log = self.log
        if log.has_buffered:
            log.write_out()
        if log.failure is not None:
            self._failed()

    def wait(self, holder: Holder) -> None:
        """``holder`` holds replies; tell it when the log makes progress."""
        self._waiting.add(holder)

    def forget(self, holder: Holder) -> None:
        self._waiting.discard(holder)

    def _failed(self) -> None:
        log = self.log
        self.last_failure = log.failure or self.last_failure
        if log.has_unlogged or log.has_buffered:
            self.writes_undone += self._undo_unlogged()
        if not self._repairing:
            self._repairing = True
            self.reactor.call_later(self.retry_interval, self._start_repair)

    def _end_of_turn(self) -> None:
        self.write_out()
        log = self.log
        if log.has_unlogged:  # given up by a worker (a snapshot's rotation)
            self._failed()
        self._release_if_changed()
        if self.fsync and not self._syncing and log.failure is None and log.written_seq > log.durable_seq:
            self._syncing = True
            self.reactor.submit(self._sync, self._synced)

    def _release_if_changed(self) -> None:
        log = self.log
        seen = (log.written_seq, log.durable_seq, log.given_up)
        if seen == self._seen:
            return
        self._seen = seen
        for holder in list(self._waiting):
            holder.release()

    def _sync(self) -> str | None:
        """In a worker: one group fsync; the failure, in one line (None: it worked)."""
        try:
            self.log.sync()
        except (OSError, StorageUnavailable) as error:
            return str(error)
        return None

    def _synced(self, failure: str | None, error: BaseException | None) -> None:
        self._syncing = False
        if failure is not None or error is not None:
            # The log is failed now (it said why when it failed): the repair writes
            # the records again; their replies wait for it.
            self._failed()
            return
        self._end_of_turn()  # releases what this sync covered; more may have been written meanwhile

    def _start_repair(self) -> None:
        if self._syncing:
            # A sync in flight still uses the descriptors a repair replaces: after it.
            self.reactor.call_later(self.retry_interval, self._start_repair)
            return
        self.reactor.submit(self._repair, self._repaired)

    def _repair(self) -> str | None:
        """In a worker: one repair attempt; why it failed, in one line (None: the log is writable)."""
        try:
            self.log.repair()
        except OSError as error:
            return str(error)
        return None

    def _repaired(self, failure: str | None, error: BaseException | None) -> None:
        if failure is not None or error is not None:
            # Every retry_interval while the disk refuses: the failure was logged once, when it
            # began; at debug, one line a minute says it still is.
            self.reactor.repeats.log("DEBUG", "repair", "write-ahead log still cannot be written: {}", failure or error)
            self.reactor.call_later(self.retry_interval, self._start_repair)
            return
        self._repairing = False
        self._end_of_turn()
