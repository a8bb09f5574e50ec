"""Readiness polling for the reactor: epoll directly, ``selectors`` elsewhere.

``selectors.EpollSelector.select`` wraps every ready descriptor in a new
``(SelectorKey, events)`` pair and translates the event bits; measured here
that is about 1 microsecond per call on top of the 1.3 of epoll_wait itself,
which is paid once per request by a client that does not pipeline. The
reactor therefore polls epoll itself and looks the handler up by descriptor.
On systems without epoll the same interface sits on ``selectors``.

Events use epoll's bits (``READ``, ``WRITE``); ``poll`` returns
``(fd, mask)`` pairs where an error or hang-up reads as both readable and
writable, as ``selectors`` reports it, so the handler meets the error on its
next ``recv`` or ``send``. epoll returns at most ``max_events`` pairs; the
ready descriptors it left out come first in the next poll (it moves each one
it reports, level-triggered, to the back of its ready list).
"""

from __future__ import annotations

import select
import selectors
from typing import Any, Final, Protocol

READ: Final = 0x001  # select.EPOLLIN
WRITE: Final = 0x004  # select.EPOLLOUT
_ERROR: Final = 0x008 | 0x010  # EPOLLERR | EPOLLHUP
# Masks of ``poll`` results that call the handler's read and write sides.
READABLE: Final = READ | _ERROR
WRITABLE: Final = WRITE | _ERROR
# The reactor's poll batch. epoll.poll allocates its event array on every call:
# 12 bytes an event, and by default room for 1,023 events, which goes through
# malloc and free (about 590 instructions a poll, callgrind). 42 events fit one
# 512-byte pymalloc block (about 470 fewer). A client that does not pipeline
# pays one poll per request; with more ready sockets, the rest come next turn.
POLL_BATCH: Final = 42


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class Poller(Protocol):
    handlers: dict[int, Any]  # fd -> the object registered with it

    def register(self, fileobj: Any, events: int, handler: Any) -> None: ...

    def modify(self, fileobj: Any, events: int, handler: Any) -> None: ...

    def unregister(self, fileobj: Any) -> None: ...

    def poll(self, timeout: float, max_events: int = -1, /) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class EpollPoller:
    """epoll without the selectors layer; ``poll`` is epoll's own bound method."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self.handlers: dict[int, Any] = {}
        self.poll = self._epoll.poll

    def register(self, fileobj: Any, events: int, handler: Any) -> None:
        fd = _fd(fileobj)
        self._epoll.register(fd, events)
        self.handlers[fd] = handler

    def modify(self, fileobj: Any, events: int, handler: Any) -> None:
        fd = _fd(fileobj)
        self._epoll.modify(fd, events)
        self.handlers[fd] = handler

    def unregister(self, fileobj: Any) -> None:
        fd = _fd(fileobj)
        del self.handlers[fd]
        self._epoll.unregister(fd)

    def close(self) -> None:
        self._epoll.close()
        self.handlers.clear()


class SelectorsPoller:
    """The same interface on ``selectors`` (no epoll on this system)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self.handlers: dict[int, Any] = {}

    @staticmethod
    def _selector_events(events: int) -> int:
        return (selectors.EVENT_READ if events & READ else 0) | (selectors.EVENT_WRITE if events & WRITE else 0)

    def register(self, fileobj: Any, events: int, handler: Any) -> None:
        fd = _fd(fileobj)
        self._selector.register(fd, self._selector_events(events))
        self.handlers[fd] = handler

    def modify(self, fileobj: Any, events: int, handler: Any) -> None:
        fd = _fd(fileobj)
        self._selector.modify(fd, self._selector_events(events))
        self.handlers[fd] = handler

    def unregister(self, fileobj: Any) -> None:
        fd = _fd(fileobj)
        del self.handlers[fd]
        self._selector.unregister(fd)

    def poll(self, timeout: float, max_events: int = -1, /) -> list[tuple[int, int]]:
        # Every ready descriptor, whatever max_events says: select() has built
        # them all already, and cutting its list (always in registration order)
        # could starve the descriptors at its end.
        return [
            (key.fd, (READ if mask & selectors.EVENT_READ else 0) | (WRITE if mask & selectors.EVENT_WRITE else 0))
            for key, mask in self._selector.select(timeout)
        ]

    def close(self) -> None:
        self._selector.close()
        self.handlers.clear()


def new_poller() -> Poller:
    return EpollPoller() if hasattr(select, "epoll") else SelectorsPoller()
