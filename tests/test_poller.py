"""The reactor's pollers: epoll itself, and the selectors fallback for systems without it."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from aegiskv.net.poller import READ, READABLE, WRITABLE, WRITE, EpollPoller, Poller, SelectorsPoller

POLLERS = [SelectorsPoller]
if hasattr(select, "epoll"):
    POLLERS.append(EpollPoller)  # type: ignore[arg-type]


@pytest.fixture(params=POLLERS, ids=lambda kind: kind.__name__)
def poller(request: pytest.FixtureRequest) -> Iterator[Poller]:
    instance = request.param()
    yield instance
    instance.close()


def test_readiness_follows_the_interest_set(poller: Poller) -> None:
    left, right = socket.socketpair()
    with left, right:
        handler = object()
        poller.register(right, READ, handler)
        assert poller.poll(0) == []  # nothing to read yet
        left.send(b"x")
        [(fd, mask)] = poller.poll(1.0)
        assert fd == right.fileno() and poller.handlers[fd] is handler
        assert mask & READABLE and not mask & WRITE

        other = object()
        poller.modify(right, READ | WRITE, other)  # an empty send buffer: writable at once
        [(fd, mask)] = poller.poll(1.0)
        assert mask & READ and mask & WRITABLE and poller.handlers[fd] is other

        poller.unregister(right)
        assert right.fileno() not in poller.handlers
        assert poller.poll(0) == []


def test_a_hang_up_reads_as_readable(poller: Poller) -> None:
    left, right = socket.socketpair()
    with right:
        poller.register(right.fileno(), READ, "handler")  # a plain fd works too
        left.close()
        [(_fd, mask)] = poller.poll(1.0)
        assert mask & READABLE
        assert right.recv(1) == b""  # the handler meets the close on its next recv


def test_registering_twice_is_refused(poller: Poller) -> None:
    left, right = socket.socketpair()
    with left, right:
        poller.register(right, READ, "first")
        with pytest.raises((FileExistsError, KeyError, ValueError)):
            poller.register(right, READ, "second")


def test_a_poll_batch_leaves_the_rest_for_the_next_poll(poller: Poller) -> None:
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for left, right in pairs:
            poller.register(right, READ, "handler")
            left.send(b"x")
        first = [fd for fd, _mask in poller.poll(1.0, 3)]
        second = [fd for fd, _mask in poller.poll(1.0, 3)]
        everyone = {right.fileno() for _left, right in pairs}
        if isinstance(poller, SelectorsPoller):
            assert set(first) == everyone  # select() built them all: returned whole
        else:
            # Nobody read: all five stay ready. The two left out come first next time.
            assert len(first) == 3 and len(second) == 3
            assert set(first) | set(second) == everyone
            assert set(second[:2]) == everyone - set(first)
    finally:
        for left, right in pairs:
            left.close()
            right.close()
