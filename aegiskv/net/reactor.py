"""The reactor: one thread owns every socket and never blocks (epoll, see poller.py).

Protocols (native, RESP, HTTP) plug in through :class:`ConnectionHandler`; the reactor
gives each connection a :class:`Transport` to write replies,
pause reading, and hand work to the worker pool. Workers never touch sockets:
their results come back through the :class:`Waker` and run on this thread.

Back-pressure, after waitress: a connection is not read while its unsent output
is above ``output_high_water`` or while its protocol has paused it (work in the
pool, rate limit); a listener stops accepting at ``max_connections`` and the
extra connection gets the protocol's refusal message before it is closed.

Methods are grouped by the thread that may call them. Everything here is
reactor-thread only except :meth:`Reactor.call_soon`, which the worker pool
also uses to hand each finished task's ``done`` back to this thread.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import heapq
import itertools
import os
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from loguru import logger
from mypy_extensions import mypyc_attr

from aegiskv.net.budget import PEAK_WINDOW_SECONDS, BufferBudget
from aegiskv.net.poller import POLL_BATCH, READ, READABLE, WRITABLE, WRITE, new_poller
from aegiskv.net.waker import Waker
from aegiskv.net.workers import Done, Task, WorkerPool
from aegiskv.obs.repeats import RepeatLimiter

RECV_SIZE: Final = 65536
# A plain socket's reads start this small: the bytes object os.read allocates then
# fits one 512-byte pymalloc block, where a 64 KiB one goes through malloc and a
# shrinking realloc (about 480 instructions more per read, cachegrind). A read
# that fills it is followed at once by a large one, and the connection reads
# large until a read comes back small again.
SMALL_READ: Final = 512 - sys.getsizeof(b"")
# Output is joined into one send() below this size; above it, sendmsg() avoids copying large values.
_JOIN_LIMIT: Final = 256 * 1024
_SENDMSG_MAX_BUFFERS: Final = 512
_ACCEPTS_PER_EVENT = 64
_SOFT_ERRORS = (BlockingIOError, InterruptedError)


# Health, gossip and plugins subclass it in interpreted code when this module is
# compiled (setup.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class ConnectionHandler:
    """What the reactor drives for each connection. Subclasses override the hooks."""

    def connection_made(self, transport: Transport) -> None:
        """The connection is accepted; keep ``transport`` to write replies."""

    def data_received(self, data: bytes) -> None:
        """Bytes arrived. Decode, execute and write replies."""

    def output_drained(self) -> None:
        """Unsent output fell back below the high-water mark; resume processing buffered requests."""

    def connection_lost(self) -> None:
        """The connection is closed (by either side); release what it holds."""

    def busy(self) -> bool:
        """True while the connection has work in flight (drain waits for it)."""
        return False

    def partial_request(self) -> bool:
        """True while bytes of an incomplete request may be buffered (asked by the once-a-second sweep)."""
        return False

    def input_buffered(self) -> int:
        """Bytes received and not yet consumed (the query buffer), for the buffer budgets."""
        return 0

    def output_held(self) -> int:
        """Reply bytes made but not yet written to the transport (held for the log), for the budgets."""
        return 0

    def connection_failed(self, error: OSError) -> None:
        """A connection this node opened (:meth:`Reactor.connect`) could not be made; nothing else is called."""


_CLOSED = ConnectionHandler()  # what a closed transport drives: nothing


class BindError(Exception):
    """A port that cannot be bound, with the listener's name and address.

    A node binds several ports; the OS's "Address already in use" alone does not say which.
    """

    def __init__(self, name: str, address: tuple[str, int], error: OSError) -> None:
        self.name = name
        self.address = address
        self.reason = str(error.strerror or error)
        super().__init__(f"{name} {address[0]}:{address[1]}: {self.reason}")


@dataclass
class ListenerOptions:
    name: str  # "native", "resp", "http": for logs and metrics
    protocol_factory: Callable[[], ConnectionHandler]
    max_connections: int
    idle_timeout: float  # seconds without any traffic; 0 = never
    output_high_water: int  # stop reading while this many reply bytes wait
    refusal: Callable[[str], bytes] | None = None  # bytes to send a refused connection, given the reason
    counts_as_client: bool = True  # shares the client-connection limit
    ssl_context: ssl.SSLContext | None = None  # TLS on this port
    handshake_timeout: float = 10.0  # seconds a TLS handshake may take
    # A request that stays incomplete this long is a slow-loris (a byte now and
    # then keeps the idle timer happy); 0 = never.
    request_timeout: float = 0.0
    # Replies the client does not take: disconnect when this many bytes wait, or
    # when waiting replies made no progress for send_timeout seconds.
    output_limit: int = 1 << 62
    send_timeout: float = 0.0


class Listener:
    def __init__(self, reactor: Reactor, sock: socket.socket, options: ListenerOptions) -> None:
        self.reactor = reactor
        self.sock = sock
        self.options = options
        self.accepting = True
        # Read once, while the socket is bound: the address is asked for (gossip's member
        # metadata) also while the node shuts down, after the socket was closed.
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)

    def handle_read(self) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                sock, peer = self.sock.accept()
            except _SOFT_ERRORS:
                return
            except OSError as error:
                # EMFILE and friends: log and keep serving the connections we have.
                self.reactor.repeats.log(
                    "WARNING",
                    ("accept", self.options.name, error.errno),
                    "accept on {} failed: {}",
                    self.options.name,
                    error,
                )
                return
            self.reactor._accepted(self, sock, peer)

    def handle_write(self) -> None:  # pragma: no cover - listeners never ask for writes
        pass


def _options_of(listener: Listener | None) -> ListenerOptions:
    if listener is None:
        raise ValueError("a connection this node opens is given its options")
    return listener.options


class Transport:
    """One connected socket: buffers, interest set, and the transport API for its protocol."""

    __slots__ = (
        "reactor",
        "sock",
        "peer",
        "listener",
        "options",
        "protocol",
        "_out",
        "out_size",
        "_events",
        "_paused",
        "_closing",
        "closed",
        "last_activity",
        "connection_id",
        "created",
        "high_water",
        "_dirty",
        "_tls",
        "_handshaking",
        "_handshake_events",
        "partial_since",
        "last_send",
        "last_queued",
        "close_reason",
        "_recv",
        "_send_bytes",
        "_small_read",
        "_read_size",
        "_data_received",
        "trusted",
        "accounted_in",
        "accounted_out",
        "accounted_preauth",
        "evictable",
    )

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        peer: Any,
        listener: Listener | None,
        connection_id: int,
        options: ListenerOptions | None = None,
    ):
        self.reactor = reactor
        self.sock = sock
        self.peer = peer
        # The listener that accepted it; None for a connection this node opened (Reactor.connect).
        self.listener = listener
        self.options: ListenerOptions = options if options is not None else _options_of(listener)
        self.protocol: ConnectionHandler = ConnectionHandler()
        # Bound once: looking a method up on the socket, or on a protocol class
        # that interpreted code may subclass, costs a dictionary search per call.
        self._recv: Callable[[int], bytes]
        self._send_bytes: Callable[[bytes | memoryview], int]
        if isinstance(sock, ssl.SSLSocket):
            self._recv = sock.recv
            self._send_bytes = sock.send
        else:
            # A plain socket is read and written as its file descriptor: os.read
            # and os.write take their arguments directly, where socket.recv and
            # send parse an argument tuple and go through the timeout machinery
            # (a few hundred instructions per request at -P 1). Same errors:
            # BlockingIOError, ConnectionResetError, BrokenPipeError. The
            # descriptor is never used after close: the poller dispatches by
            # descriptor to the connection registered now, and a closed
            # connection neither reads nor sends.
            descriptor = sock.fileno()
            self._recv = functools.partial(os.read, descriptor)
            self._send_bytes = functools.partial(os.write, descriptor)
        # TLS reads stay large: decrypted bytes beyond a read wait in the SSL object.
        self._small_read: int = RECV_SIZE if isinstance(sock, ssl.SSLSocket) else SMALL_READ
        self._read_size = self._small_read
        self._data_received = self.protocol.data_received
        self._out: list[bytes | memoryview] = []
        self.out_size = 0
        self._events = 0
        self._paused = False
        self._closing = False
        self.closed = False
        self.last_activity = reactor.now
        self.created = reactor.now
        self.connection_id = connection_id
        self.high_water = self.options.output_high_water
        self._dirty = False  # queued in reactor.dirty for a send at the end of this loop turn
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._handshaking = self._tls
        self._handshake_events = READ  # what the TLS handshake waits for
        # When bytes arrived that no reply has answered yet (None: every read was answered).
        self.partial_since: float | None = None
        self.last_send = reactor.now  # last time replies made progress (or there were none)
        self.last_queued: int | None = None  # kernel send-queue bytes when the sweep last looked
        self.close_reason = ""  # why the server closed it (metrics and logs)
        # Whether the peer proved who it is (AUTH, the cluster handshake, a signed gossip
        # header; a port without authentication says so at once). Until then every byte
        # it makes us hold counts against max_unauthenticated_memory (net/budget.py).
        self.trusted = False
        # What the budget last counted for this connection (see account()).
        self.accounted_in = 0
        self.accounted_out = 0
        self.accounted_preauth = False
        self.evictable = True  # False: the client budget never closes it (CLIENT NO-EVICT)

    @property
    def counts_as_client(self) -> bool:
        return self.options.counts_as_client

    @property
    def port_name(self) -> str:
        return self.options.name

    def account(self, always: bool = False) -> None:
        """Tell the buffer budgets what this connection holds now (may close it, or others).

        ``always``: even when nothing changed since the last count (the sweep): the budgets'
        recent peaks start afresh each window and must see what idle connections still hold.
        """
        protocol = self.protocol
        held_in = protocol.input_buffered()
        held_out = self.out_size + protocol.output_held()
        if (
            not always
            and held_in == self.accounted_in
            and held_out == self.accounted_out
            and self.accounted_preauth != self.trusted
        ):
            # Nothing the budgets count has changed (the common case: a pipelined read that
            # was answered in full): skip the call, which the per-request path would pay.
            return
        self.reactor.budget.account(self, held_in, held_out)

    def mark_trusted(self) -> None:
        """The peer authenticated: its buffers count as a client's from now on, not as unauthenticated."""
        if not self.trusted:
            self.trusted = True
            if not self.closed:
                self.account()

    def attach(self, protocol: ConnectionHandler) -> None:
        """Make ``protocol`` the one this connection drives."""
        self.protocol = protocol
        self._data_received = protocol.data_received
        protocol.connection_made(self)

    # -- transport API for protocols (reactor thread) --------------------------------

    def write(self, data: bytes | memoryview) -> None:
        if self.closed or not data:
            return
        # A reply: the bytes read so far made a request (see partial_since).
        self.partial_since = None
        if not self.out_size:
            self.last_send = self.reactor.now  # the send timeout counts from the first waiting reply
        self._out.append(data)
        self.out_size += len(data)
        if not self._dirty:
            self._dirty = True
            self.reactor.dirty.append(self)

    def close(self, flush: bool = True) -> None:
        """Close now, or after the pending output has been sent."""
        if self.closed:
            return
        if flush and self.out_size:
            self._closing = True
            self._paused = True
            self._update_interest()
        else:
            self._close_now()

    def pause_reading(self) -> None:
        self._paused = True
        self._update_interest()

    def resume_reading(self) -> None:
        if self._closing:
            return
        self._paused = False
        self._update_interest()

    def queued_items(self) -> int:
        """Writes queued and not yet sent (CLIENT LIST's oll)."""
        return len(self._out)

    def reading_paused(self) -> bool:
        """Reading stopped: back-pressure, a batch in the pool, or closing (CLIENT LIST's events)."""
        return self._paused

    def submit(self, task: Task, done: Done) -> None:
        """Run ``task`` in the worker pool; ``done(result, error)`` runs later on this thread."""
        self.reactor.submit(task, done)

    # -- reactor side --------------------------------------------------------------

    def handle_read(self) -> None:  # noqa: C901 - the reactor's per-event path: no extra call per read
        if self._handshaking:
            self._handshake()
            return
        try:
            size = self._read_size
            data = self._recv(size)
            got = len(data)
            if got == size and size < RECV_SIZE:
                # A small read came back full: more is likely waiting.
                self._read_size = RECV_SIZE
                try:
                    data += self._recv(RECV_SIZE)
                except _SOFT_ERRORS:
                    pass
            elif got <= SMALL_READ and size != self._small_read:
                self._read_size = self._small_read
            if self._tls and data:
                # TLS: decrypted bytes can wait inside the SSL object where epoll
                # cannot see them; take them now.
                pending = self.sock.pending()  # type: ignore[attr-defined]
                if pending:
                    data += self._recv(pending)
        except _SOFT_ERRORS:
            return
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            return
        except (OSError, ssl.SSLError):
            self._close_now()
            return
        if not data:
            self._close_now()
            return
        now = self.last_activity = self.reactor.now
        if self.partial_since is None:
            # Cleared by the next reply: a read that completes no request leaves
            # it set, and the sweep closes a connection whose request stays
            # incomplete (slow-loris) without a check per read.
            self.partial_since = now
        try:
            self._data_received(data)
        except Exception:  # noqa: BLE001 - a protocol's bug closes its connection, not the node
            self.reactor.repeats.log(
                "ERROR",
                ("protocol failed", self.options.name),
                "protocol {} failed on data from {}; closing",
                self.options.name,
                self.peer,
                exception=True,
            )
            self._close_now()
            return
        if len(data) > SMALL_READ or self.accounted_in or self.accounted_out or not self.trusted:
            # What may have grown a buffer: a large read, a connection already holding
            # bytes, any read before authentication. Small reads of an authenticated
            # client that left nothing behind (the common case) skip the call; the
            # sweep counts every connection once a second anyway.
            self.account()
            if self.closed:
                return
        if not self._dirty:
            self._update_interest()  # a pause may have changed what we wait for

    def _handshake(self) -> None:
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_events = READ
        except ssl.SSLWantWriteError:
            self._handshake_events = WRITE
        except (ssl.SSLError, OSError) as error:
            self.reactor.tls_failures += 1
            # A scanner or a misconfigured client fails every handshake the same way: one line per
            # port, host and reason, repeats counted.
            self.reactor.repeats.log(
                "INFO",
                ("tls", self.options.name, _host(self.peer), str(error)),
                "TLS handshake with {} on {} failed: {}",
                self.peer,
                self.options.name,
                error,
            )
            self.close_reason = "tls"
            self._close_now()
            return
        else:
            self._handshaking = False
            self.last_activity = self.reactor.now
        self._update_interest()

    def handle_write(self) -> None:
        if self._handshaking:
            self._handshake()
            return
        self._send()

    def _send(self) -> None:  # noqa: C901 - the reactor's per-event path: no extra call per write
        if self.closed or self._handshaking:
            return  # replies wait for the TLS handshake (none are produced before it)
        reactor = self.reactor
        if reactor.pre_send is not None:
            reactor.pre_send()  # e.g. the write-ahead log goes to the OS before any reply does
        out = self._out
        size = self.out_size
        if size > self.options.output_limit:
            logger.warning(
                "closing {} connection from {}: {} reply bytes not taken (limit {})",
                self.options.name,
                self.peer,
                size,
                self.options.output_limit,
            )
            self.close_reason = "output_limit"
            self._close_now()
            return
        try:
            if len(out) == 1:
                sent = self._send_bytes(out[0])
            elif size <= _JOIN_LIMIT or self._tls:
                # Small replies are joined into one send; TLS sockets have no
                # sendmsg(), so they send the joined head (at most _JOIN_LIMIT).
                joined: bytes | memoryview
                if size <= _JOIN_LIMIT:
                    joined = b"".join(out)
                    if self._tls:
                        # A TLS write that must be retried has to be retried with at
                        # least the same bytes: keep the joined head as one part.
                        # Plain sockets keep the parts (a list store less per send):
                        # after a partial send the loop below drops what went.
                        out[:] = [joined]
                else:
                    joined = out[0]
                sent = self._send_bytes(joined)
            else:
                sent = self.sock.sendmsg(out[:_SENDMSG_MAX_BUFFERS])
        except (*_SOFT_ERRORS, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET):
                logger.debug("send to {} failed: {}", self.peer, error)
            self._close_now()
            return
        if sent == size:
            # The common case, kept short: everything went.
            out.clear()
            self.out_size = 0
            self.last_activity = self.last_send = reactor.now
            if self.accounted_out:
                self.account()
            if self._closing:
                self._close_now()
                return
            if size >= self.high_water:
                self._drained()  # may write again: the interest update below asks for WRITE
                if self.closed:
                    return
                self._update_interest()
            elif self._events != (0 if self._paused else READ):
                self._update_interest()
            return
        if sent:
            self.last_activity = self.last_send = reactor.now
            self.out_size -= sent
            while sent:
                head = out[0]
                if sent >= len(head):
                    sent -= len(head)
                    out.pop(0)
                else:
                    out[0] = memoryview(head)[sent:]
                    sent = 0
            if size >= self.high_water and self.out_size < self.high_water and not self._closing:
                self._drained()
                if self.closed:
                    return
        if self.out_size != self.accounted_out:
            self.account()  # replies the client has not taken count against the budgets
            if self.closed:
                return
        self._update_interest()

    def _drained(self) -> None:
        try:
            self.protocol.output_drained()
        except Exception:  # noqa: BLE001 - a protocol's bug closes its connection, not the node
            logger.exception("protocol {} failed resuming {}; closing", self.options.name, self.peer)
            self._close_now()

    def kernel_queue_shrank(self) -> bool:
        """Whether the kernel's send queue for this socket drained since the last look.

        A client that reads slowly keeps the queue moving without our send()
        succeeding for seconds (Linux reports a socket writable only when a
        third of its send buffer is free), so the sweep counts this as progress.
        """
        try:
            queued = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return False
        shrank = self.last_queued is not None and queued < self.last_queued
        self.last_queued = queued
        if shrank:
            self.last_send = self.reactor.now
        return shrank

    def _update_interest(self) -> None:
        if self.closed:
            return
        if self._handshaking:
            events = self._handshake_events
        else:
            events = 0
            if not self._paused and self.out_size < self.high_water:
                events |= READ
            if self.out_size:
                events |= WRITE
        if events != self._events:
            poller = self.reactor.poller
            if self._events == 0:
                poller.register(self.sock, events, self)
            elif events == 0:
                poller.unregister(self.sock)
            else:
                poller.modify(self.sock, events, self)
            self._events = events

    def _close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._events:
            self.reactor.poller.unregister(self.sock)
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self._out.clear()
        self.out_size = 0
        if self.accounted_in or self.accounted_out:
            self.reactor.budget.account(self, 0, 0)
        self.reactor._connection_closed(self)
        try:
            self.protocol.connection_lost()
        except Exception:  # noqa: BLE001 - a protocol's bug closes its connection, not the node
            logger.exception("protocol {} failed on close", self.options.name)
        # The protocol refers back to this transport: that cycle would keep its buffers
        # (a query buffer can be tens of MiB) until the cyclic garbage collector runs,
        # which on a node that allocates little may be minutes away. Dropping our side
        # frees them now, by reference counting, once nothing else holds the protocol.
        self.protocol = _CLOSED
        self._data_received = _CLOSED.data_received


class Reactor:
    """The event loop. Create, add listeners, then :meth:`run` on the thread that owns it."""

    def __init__(self, worker_threads: int = 4) -> None:
        self.poller = new_poller()
        self.now = time.monotonic()
        self.waker = Waker()
        self.poller.register(self.waker.fileno(), READ, self.waker)
        self.pool = WorkerPool(worker_threads, self._done_from_worker)
        # Errors a peer or the system repeats (failed handshakes, accept failures): counted lines.
        self.repeats = RepeatLimiter()
        self.listeners: list[Listener] = []
        self.connections: dict[int, Transport] = {}
        self.dirty: list[Transport] = []  # connections written to during this loop turn
        # Called before any connection sends (write-ahead log first), and once per
        # loop turn before its replies are sent (the log goes out, releasing the
        # replies that waited for it; group fsyncs start). Reactor thread only.
        self.pre_send: Callable[[], None] | None = None
        self.end_of_turn: list[Callable[[], None]] = []
        # Told each loop turn's length in nanoseconds (from the poll's return to
        # the replies being ready), before the replies are sent: request
        # statistics, which count every request by the turn that answered it.
        self.turn_observers: list[Callable[[int], None]] = []
        # The longest turn (ns) since start or since it was set to 0 (CONFIG RESETSTAT), from the
        # poll's return to the replies sent, end-of-turn hooks (the log) included: how long one
        # request, or one read's worth of them, kept every other client waiting.
        self.longest_turn_ns = 0
        self.client_connections = 0
        self.max_client_connections = 1 << 30
        self.accepted_total = 0
        self.rejected_total = 0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_sequence = itertools.count()
        self._connection_ids = itertools.count(1)
        self._running = False
        self._stopped = False
        self._sweep_interval = 1.0
        self.tls_failures = 0  # handshakes that failed or timed out
        self.timeouts: dict[str, int] = {}  # connections closed by the sweep, by reason
        # Buffered bytes against max_client_memory and max_unauthenticated_memory; the
        # limits are set by the server (wiring.py), unlimited until then.
        self.budget = BufferBudget(lambda: list(self.connections.values()), self.repeats)
        self._peaks_rotated = self.now
        # Non-client ports (gossip, cluster) that were full and made room by closing
        # their oldest connection that had not authenticated.
        self.unauthenticated_displaced = 0
        self.call_later(self._sweep_interval, self._sweep)

    # -- any thread ------------------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.waker.call_soon(callback)

    def _done_from_worker(self, done: Done, result: Any, error: BaseException | None) -> None:
        self.waker.call_soon(lambda: done(result, error))

    # -- reactor thread ----------------------------------------------------------------

    def listen(self, address: tuple[str, int], options: ListenerOptions, backlog: int = 1024) -> Listener:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            sock.close()
            raise BindError(options.name, address, error) from error
        return self.listen_on(sock, options, backlog)

    def listen_on(self, sock: socket.socket, options: ListenerOptions, backlog: int = 1024) -> Listener:
        """Serve connections on a socket the caller bound (gossip binds TCP to its UDP port)."""
        sock.listen(backlog)
        sock.setblocking(False)
        listener = Listener(self, sock, options)
        self.poller.register(sock, READ, listener)
        self.listeners.append(listener)
        return listener

    def stop_accepting(self) -> None:
        """Close every listener (drain): no new connections, existing ones keep going."""
        for listener in self.listeners:
            if listener.accepting:
                listener.accepting = False
                self.poller.unregister(listener.sock)
                listener.sock.close()

    def submit(self, task: Task, done: Done) -> None:
        self.pool.submit(task, done)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.now + delay, next(self._timer_sequence), callback))

    def call_every(self, interval: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` every ``interval`` seconds on the reactor thread (errors logged)."""

        def tick() -> None:
            try:
                callback()
            finally:
                self.call_later(interval, tick)

        self.call_later(interval, tick)

    def run(self, until: Callable[[], bool] | None = None) -> None:  # noqa: C901 - the event loop itself
        """Serve until :meth:`stop` (or ``until()`` returns True, checked every loop)."""
        self._running = True
        poll = self.poller.poll
        handlers = self.poller.handlers
        waker = self.waker
        observers = self.turn_observers
        # Three clock reads per loop turn, whatever it handles: after the poll
        # (self.now, in the seconds of time.monotonic), before the end-of-turn
        # hooks (the turn's length for the observers) and after the sends (the
        # longest turn, and the next poll's timeout).
        clock_ns = time.monotonic_ns
        ended_ns = clock_ns()
        try:
            while self._running:
                timeout = 1.0
                if self._timers:
                    timeout = min(timeout, max(0.0, self._timers[0][0] - ended_ns / 1e9))
                events = poll(timeout, POLL_BATCH)
                started_ns = clock_ns()
                self.now = started_ns / 1e9
                for fd, mask in events:
                    handler = handlers.get(fd)
                    if handler is None:
                        continue  # closed by an earlier handler in this turn
                    if isinstance(handler, Transport):
                        # The common case, typed: compiled, these are direct calls,
                        # where the generic path below looks each method up by name.
                        if mask & READABLE:
                            handler.handle_read()
                        if mask & WRITABLE and not handler.closed:
                            handler.handle_write()
                        continue
                    if handler is waker:
                        self._run_callbacks()
                        continue
                    if mask & READABLE:
                        handler.handle_read()
                    if mask & WRITABLE and not getattr(handler, "closed", False):
                        handler.handle_write()
                if self._timers and self._timers[0][0] <= self.now:
                    self._run_timers()
                ended_ns = clock_ns()
                for observer in observers:
                    observer(ended_ns - started_ns)
                for hook in self.end_of_turn:
                    try:
                        hook()
                    except Exception:  # noqa: BLE001 - one hook's bug must not stop the reactor
                        logger.exception("end-of-turn hook failed")
                if self.dirty:
                    self._flush_dirty()
                # The longest turn counts the log written out and the replies sent too: a
                # client waits for those as much as for the commands (one more clock read).
                ended_ns = clock_ns()
                if ended_ns - started_ns > self.longest_turn_ns:
                    self.longest_turn_ns = ended_ns - started_ns
                if until is not None and until():
                    break
        finally:
            self._running = False

    def stop(self) -> None:
        """Make :meth:`run` return (from the reactor thread, or via :meth:`call_soon`)."""
        self._running = False

    def close(self) -> None:
        """Close every socket and stop the pool. After :meth:`run` returned."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_accepting()
        for connection in list(self.connections.values()):
            connection.close(flush=False)
        self.pool.shutdown(cancel_pending=True, timeout=2.0)
        self.poller.close()
        self.waker.close()

    def _run_callbacks(self) -> None:
        for callback in self.waker.drain():
            try:
                callback()
            except Exception:  # noqa: BLE001 - one callback's bug must not stop the reactor
                logger.exception("reactor callback failed")

    def _flush_dirty(self) -> None:
        # Replies are sent once per loop turn, after every event was handled, so
        # a burst of pipelined requests costs one send() per connection.
        dirty = self.dirty
        self.dirty = []
        for connection in dirty:
            connection._dirty = False
            if connection.out_size:
                connection._send()  # checks closed

    def _run_timers(self) -> None:
        timers = self._timers
        while timers and timers[0][0] <= self.now:
            _, _, callback = heapq.heappop(timers)
            try:
                callback()
            except Exception:  # noqa: BLE001 - one timer's bug must not stop the reactor
                logger.exception("reactor timer failed")

    def _accepted(self, listener: Listener, sock: socket.socket, peer: Any) -> None:
        options = listener.options
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reason = None
        # Redis's own words: redis-py recognises this text and raises ConnectionError.
        if options.counts_as_client and self.client_connections >= self.max_client_connections:
            reason = "max number of clients reached"
        elif (
            not options.counts_as_client
            and self._count(listener) >= options.max_connections
            and not self._displace_unauthenticated(listener)
        ):
            reason = "max number of connections reached"
        if reason is not None:
            self.rejected_total += 1
            if options.refusal is not None and options.ssl_context is None:  # no plaintext on a TLS port
                try:
                    sock.send(options.refusal(reason))
                except OSError:
                    pass
            sock.close()
            self.repeats.log(
                "WARNING",
                ("refused", options.name, reason),
                "refused {} connection from {}: {} ({} open)",
                options.name,
                peer,
                reason,
                self.client_connections,
            )
            return
        if options.ssl_context is not None:
            try:
                sock = options.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as error:
                self.repeats.log("INFO", ("tls start", _host(peer)), "cannot start TLS with {}: {}", peer, error)
                sock.close()
                return
        connection = Transport(self, sock, peer, listener, next(self._connection_ids))
        self.connections[connection.connection_id] = connection
        self.accepted_total += 1
        if options.counts_as_client:
            self.client_connections += 1
        connection.attach(options.protocol_factory())
        connection._update_interest()

    def connect(
        self,
        address: tuple[str, int],
        options: ListenerOptions,
        handler: ConnectionHandler,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Open a connection to ``address`` without blocking; ``handler`` drives it like an accepted one.

        ``handler.connection_made`` runs once TCP is connected (with TLS, what it
        writes waits for the handshake); ``handler.connection_failed`` instead when
        the connection is refused, fails or takes longer than ``timeout``.
        ``options`` gives the limits (``max_connections`` and ``protocol_factory``
        are not used); such connections never count as clients.
        """
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        dial = _Dial(self, sock, address, options, handler, ssl_context, server_hostname)
        try:
            code = sock.connect_ex(address)
        except OSError as error:  # e.g. an address this host cannot route
            dial.fail(error)
            return
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            dial.fail(OSError(code, os.strerror(code)))
            return
        self.poller.register(sock, WRITE, dial)
        self.call_later(timeout, dial.time_out)

    def _displace_unauthenticated(self, listener: Listener) -> bool:
        """Make room on a full node-to-node port by closing its oldest connection not yet authenticated.

        Strangers that connect and say nothing (or half a header) would otherwise
        hold every slot of the gossip or cluster port until their timeout, and the
        real node that wants to join would be refused. Client ports do not do
        this: their limit is the operator's max_connections, and a client that is
        slow to send AUTH is not a stranger.
        """
        waiting = [c for c in self.connections.values() if c.listener is listener and not c.trusted]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: (c.created, c.connection_id))
        self.unauthenticated_displaced += 1
        self.repeats.log(
            "INFO",
            ("displaced", listener.options.name),
            "{} port full: closing the oldest connection not yet authenticated, from {}",
            listener.options.name,
            oldest.peer,
        )
        oldest.close_reason = "displaced"
        oldest.close(flush=False)
        return True

    def _count(self, listener: Listener) -> int:
        return sum(1 for connection in self.connections.values() if connection.listener is listener)

    def _connection_closed(self, connection: Transport) -> None:
        removed = self.connections.pop(connection.connection_id, None) is not None
        if removed and connection.options.counts_as_client:
            self.client_connections -= 1

    def _sweep(self) -> None:
        """Once a second: close connections that broke a time limit.

        A handshake that does not finish, a connection with no traffic, a
        request that stays incomplete (slow-loris: a byte now and then keeps
        the idle timer happy), and replies the client stopped taking.
        """
        try:
            now = self.now
            if now - self._peaks_rotated >= PEAK_WINDOW_SECONDS:
                self._peaks_rotated = now
                self.budget.rotate_peaks()
            for connection in list(self.connections.values()):
                if connection.closed:
                    continue  # closed by the budget while this sweep ran
                # Reads the per-read path skipped (small, authenticated) are counted here, and
                # what idle connections hold enters the new peak window.
                connection.account(always=True)
                if connection.closed:
                    continue
                options = connection.options
                reason = ""
                if connection._handshaking:
                    if now - connection.created > options.handshake_timeout:
                        reason = "tls_handshake_timeout"
                        self.tls_failures += 1
                elif (
                    options.request_timeout
                    and connection.partial_since is not None
                    and (now - connection.partial_since > options.request_timeout)
                    and not connection.protocol.busy()  # its reply is in the worker pool
                    and connection.protocol.partial_request()
                ):
                    reason = "request_timeout"
                elif (
                    options.send_timeout
                    and connection.out_size
                    and now - connection.last_send > options.send_timeout
                    and not connection.kernel_queue_shrank()
                ):
                    reason = "send_timeout"
                elif (
                    options.idle_timeout
                    and now - connection.last_activity > options.idle_timeout
                    and not connection.protocol.busy()
                ):
                    reason = "idle"
                if reason:
                    logger.debug("closing {} connection from {}: {}", options.name, connection.peer, reason)
                    connection.close_reason = reason
                    self.timeouts[reason] = self.timeouts.get(reason, 0) + 1
                    connection.close(flush=False)
        finally:
            self.call_later(self._sweep_interval, self._sweep)

    def busy_connections(self) -> int:
        """Client connections with work in flight or output not yet sent (for drain)."""
        return sum(
            1
            for connection in self.connections.values()
            if connection.options.counts_as_client and (connection.protocol.busy() or connection.out_size)
        )


class _Dial:
    """A connection this node is opening: waits for the socket to become writable (connected or failed)."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        address: tuple[str, int],
        options: ListenerOptions,
        handler: ConnectionHandler,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> None:
        self.reactor = reactor
        self.sock = sock
        self.address = address
        self.options = options
        self.handler = handler
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.closed = False  # done: connected, failed or timed out

    def handle_read(self) -> None:  # pragma: no cover - registered for writes only
        self.handle_write()

    def handle_write(self) -> None:
        if self.closed:
            return
        reactor = self.reactor
        reactor.poller.unregister(self.sock)
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(OSError(code, os.strerror(code)), registered=False)
            return
        self.closed = True
        sock = self.sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(
                    sock, server_side=False, do_handshake_on_connect=False, server_hostname=self.server_hostname
                )
            except (ssl.SSLError, OSError) as error:
                self.fail(error, registered=False)
                return
        transport = Transport(reactor, sock, self.address, None, next(reactor._connection_ids), self.options)
        if transport._handshaking:
            transport._handshake_events = WRITE  # the client speaks first: send the ClientHello now
        reactor.connections[transport.connection_id] = transport
        transport.attach(self.handler)
        transport._update_interest()

    def time_out(self) -> None:
        if not self.closed:
            self.fail(TimeoutError(f"connecting to {self.address[0]}:{self.address[1]} timed out"))

    def fail(self, error: OSError, registered: bool = True) -> None:
        if self.closed and registered:
            return
        self.closed = True
        if registered:
            try:
                self.reactor.poller.unregister(self.sock)
            except (KeyError, ValueError, OSError):
                pass  # never registered (failed at once)
        self.sock.close()
        try:
            self.handler.connection_failed(error)
        except Exception:  # noqa: BLE001 - a protocol's bug closes its connection, not the node
            logger.exception("connection_failed of {} raised", self.options.name)


def _host(peer: Any) -> Any:
    """The host part of a peer address (the key repeats are counted under), or the address itself."""
    return peer[0] if isinstance(peer, tuple) and peer else peer
