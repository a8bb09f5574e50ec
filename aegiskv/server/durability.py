"""Drives a backend's write-ahead log from the reactor: group writes, group fsync, held replies.

* Before any reply leaves the server, every buffered log record is written to
  the OS (``Reactor.pre_send``), and again at the end of every loop turn. In
  ``write`` mode that is all: a process crash loses no acknowledged write.
* In ``fsync`` mode the reply to a write is *held* by its connection until the
  log is durable past that write's sequence number. At the end of a loop turn,
  if records were written since the last sync and no sync is running, one
  ``fsync`` goes to the worker pool; every write that reached the OS before it
  started shares it (group commit). When it returns, held replies are released
  in order. The reactor never waits on the disk; clients wait for theirs.
* A failed fsync cannot be retried safely (the kernel may have dropped the dirty
  pages), so the node stops: better no service than acknowledged writes lost.
"""

from __future__ import annotations

from typing import Protocol

from loguru import logger

from aegiskv.backends.base import WriteAheadLogLike
from aegiskv.net.reactor import Reactor


class Holder(Protocol):
    """A connection that holds replies until the log is durable (RequestPipeline)."""

    def release(self, durable_seq: int) -> None: ...


class Durability:
    def __init__(self, reactor: Reactor, log: WriteAheadLogLike) -> None:
        self.reactor = reactor
        self.log = log
        self.fsync = log.mode == "fsync"
        self._syncing = False
        self._waiting: set[Holder] = set()
        self.failed = False
        reactor.pre_send = self.write_out
        reactor.end_of_turn.append(self._end_of_turn)

    def write_out(self) -> None:
        if self.log.has_buffered:
            self.log.write_out()

    def wait(self, holder: Holder) -> None:
        """``holder`` holds replies; tell it when the log becomes durable."""
        self._waiting.add(holder)

    def forget(self, holder: Holder) -> None:
        self._waiting.discard(holder)

    def _end_of_turn(self) -> None:
        self.write_out()
        if self.fsync and not self._syncing and self.log.written_seq > self.log.durable_seq:
            self._syncing = True
            self.reactor.submit(self.log.sync, self._synced)

    def _synced(self, durable_seq: int | None, error: BaseException | None) -> None:
        self._syncing = False
        if error is not None or durable_seq is None:
            logger.critical("fsync of the write-ahead log failed ({}): stopping the node", error)
            self.failed = True
            self.reactor.stop()
            return
        for holder in list(self._waiting):
            holder.release(durable_seq)
        self._end_of_turn()  # more may have been written meanwhile
