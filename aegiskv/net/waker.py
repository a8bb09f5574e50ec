"""Wakes the reactor from another thread and runs callbacks on the reactor thread.

A socketpair whose read end sits in the selector: ``call_soon(fn)`` from any
thread appends to a deque and writes one byte (only when the reactor is not
already due to wake, so a burst of completions costs one syscall).
Like waitress's ``trigger``, but a socketpair instead of a pipe so the same code
works wherever ``selectors`` does.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable


class Waker:
    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._callbacks: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._signalled = False

    def fileno(self) -> int:
        return self._reader.fileno()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the reactor thread soon. Safe from any thread."""
        with self._lock:
            self._callbacks.append(callback)
            if self._signalled:
                return
            self._signalled = True
        try:
            self._writer.send(b"\x00")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full of wake-ups already; the reactor will wake

    def drain(self) -> list[Callable[[], None]]:
        """On the reactor thread: consume the wake-up bytes and return pending callbacks."""
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            self._signalled = False
            callbacks = list(self._callbacks)
            self._callbacks.clear()
        return callbacks

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
