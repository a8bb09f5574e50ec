"""The worker pool: threads for work that may block (disk waits, large batches).

Workers never touch sockets. A task is a plain callable; when it finishes, its
``done`` callback is queued back to the reactor thread through a
:class:`~aegiskv.net.waker.Waker`, so replies are always written by the reactor.

Shape after waitress's ``ThreadedTaskDispatcher``: a deque plus one
``Condition``, named threads, every task wrapped so that an exception is handed
back as the result instead of killing the worker. An ``OSError`` (a peer that
refuses, a disk that is full) is the ``done`` callback's to report, in its own
words: the pool logs it at debug, one line, repeats counted. Anything else is a
bug and is logged with its traceback (never its locals: see
aegiskv.server.daemon.setup_logging).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from loguru import logger

from aegiskv.obs.repeats import RepeatLimiter

Task = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]


class WorkerPool:
    """A fixed set of named threads taking tasks from one queue. Thread-safe."""

    def __init__(
        self, threads: int, on_done: Callable[[Done, Any, BaseException | None], None], name: str = "aegis-worker"
    ):
        """``on_done(done, result, error)`` is called on the worker thread after each task;
        the reactor passes a function that forwards it to the reactor thread."""
        self._queue: deque[tuple[Task, Done]] = deque()
        self._condition = threading.Condition()
        self._on_done = on_done
        self._stopping = False
        self._busy = 0
        self._repeats = RepeatLimiter()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Tasks queued or running."""
        with self._condition:
            return len(self._queue) + self._busy

    def submit(self, task: Task, done: Done) -> None:
        with self._condition:
            if self._stopping:
                raise RuntimeError("worker pool is shut down")
            self._queue.append((task, done))
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return  # stopping and nothing left
                task, done = self._queue.popleft()
                self._busy += 1
            result: Any = None
            error: BaseException | None = None
            try:
                result = task()
            except OSError as exc:
                error = exc
                self._repeats.log("DEBUG", (type(exc), exc.errno), "worker task failed: {!r}", exc)
            except BaseException as exc:
                error = exc
                logger.opt(exception=exc).error("worker task failed")
            finally:
                with self._condition:
                    self._busy -= 1
            try:
                self._on_done(done, result, error)
            except Exception:
                logger.exception("could not hand a task result back to the reactor")

    def shutdown(self, cancel_pending: bool = False, timeout: float = 5.0) -> int:
        """Stop the threads after the queue drains (or drop it); returns tasks cancelled."""
        with self._condition:
            cancelled = 0
            if cancel_pending:
                cancelled = len(self._queue)
                self._queue.clear()
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        return cancelled
