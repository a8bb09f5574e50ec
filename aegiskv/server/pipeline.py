"""The request pipeline of one client connection, shared by every protocol.

A wire adapter (native or RESP) turns bytes into requests and knows how to
encode errors; this class decides *where* and *when* each request runs:

* In order. Replies leave in request order, and a request never runs before
  the requests received ahead of it on the same connection (read-your-writes).
* Inline on the reactor when the work is small and in memory (measured with
  throwaway prototypes on 2-core machines: a pool hand-off per command cost
  about 2.5x throughput without pipelining).
* In the worker pool for batch commands above ``inline_batch_limit`` keys, and
  for commands whose work grows with their value (BITCOUNT, BITPOS, GETRANGE)
  when that value is longer than ``POOL_VALUE_BYTES``. The
  request and every request already decoded behind it go in *one* task (the
  hand-off is batched), run there in order, and the connection stops reading
  until the task is done, which keeps ordering trivially correct.
* Not while the connection's unsent output is above the high-water mark: the
  loop stops decoding, the reactor stops reading, and ``output_drained``
  resumes. A client that pipelines large GETs and never reads therefore holds
  at most about one high-water mark of replies, plus one reply.
* With a write-ahead log, a reply is held until the log holds every record
  appended before it was computed (``appended_seq`` then) as ``--wal``
  promised (a read: written; a write in fsync mode: fsynced), and replies
  behind it wait too (aegiskv.durability). If the log gave up a record the
  command could have seen or made (a full or failing disk), that change was
  undone and the reply becomes the storage error; while the log cannot be
  written, writes are refused before they run. A node without a log takes
  none of these paths.
* With replication, the reply to a write is held until ``write_quorum``
  copies hold its changes and this node still holds the lease of every shard
  it wrote (aegiskv.server.replicas); replies behind it wait too. A write
  whose quorum or lease fails gets an error saying its outcome is unknown.
  A handler may ask for its reply to be held too (``Session.hold``): WAIT,
  until the connection's writes have copies; a read under ``--read-quorum``,
  until enough copies answered (its reply is then the newest copy's). Both go
  through the same held replies; neither blocks the reactor.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final, Generic
from typing import Protocol as TypingProtocol

from loguru import logger

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.net.reactor import ConnectionHandler, Transport
from aegiskv.node.commands import Command
from aegiskv.protocols.adapter import ClientFigures, Handler, HandlerContext, RequestT, Violation, WireAdapter
from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.session import Authenticator, Session, TokenBucket
from aegiskv.server.durability import Durability
from aegiskv.server.stats import RequestStats, StatsRegistry

# Final: compiled, a static read; a name imported from a module is a dictionary
# search on every call (twice per read on the hot path).
_clock_ns: Final = time.perf_counter_ns
# A BITCOUNT, BITPOS or GETRANGE of a value longer than this runs in the pool: counting the bits
# of 8 MiB took 70 ms of the reactor (issue 28). Below it the hand-off costs more than the work.
POOL_VALUE_BYTES: Final = 1 << 20


class ReplicationGate(TypingProtocol):
    """What a reply waits for under replication (aegiskv.server.replicas.ReplicaManager)."""

    def take_writes(self) -> Any:
        """The writes the command just run on this thread made (None: none)."""
        ...

    @property
    def read_quorum(self) -> int: ...

    def ticket(self, writes: Any) -> Any: ...

    def settle_writes(self, written: Any) -> Any:
        """take_writes, ticket, note_writes and verdict in one call, for a reply nothing is held before.

        False: no writes; True: the reply may leave now; a CommandError: send it instead; else
        the ticket the reply waits on (a write quorum above one copy).
        """
        ...

    def note_writes(self, written: Any, ticket: Any) -> None:
        """Add a write's ticket to what the connection wrote (``written``, for WAIT)."""
        ...

    def hold_ticket(self, hold: Any, written: Any) -> Any:
        """What a reply a handler asked to hold (``Session.hold``) waits for; None: nothing."""
        ...

    def verdict(self, ticket: Any) -> CommandError | bool | bytes:
        """True: the reply may leave; False: it waits; an error or a reply: send it instead."""
        ...

    def wait(self, holder: Any) -> None: ...

    def forget(self, holder: Any) -> None: ...


# A held reply: the log's undo count before the command ran, the log's appended_seq after
# it, whether it was a write, the reply, the request (for an error reply), and what it
# waits for under replication (None: nothing).
Held = tuple[int, int, bool, bytes, Any, Any]


class SlowCheck(TypingProtocol):
    """Whether a request run in the pool was slow (aegiskv.server.slow_requests.SlowRequests)."""

    threshold_ns: int

    def pooled(self, elapsed_ns: int, request: Any, session: Session) -> None: ...


class ServingContext(HandlerContext, TypingProtocol):
    """What the pipeline needs from the server beside what its handlers need (aegiskv.server.wiring.Server)."""

    durability: Durability | None

    @property
    def replicas(self) -> ReplicationGate | None: ...

    stats: StatsRegistry

    @property
    def slow_requests(self) -> SlowCheck: ...

    authenticator: Authenticator
    rate_limit: float
    rate_burst: int
    inline_batch_limit: int


class RequestPipeline(ConnectionHandler, Generic[RequestT]):
    """Runs one connection's requests; see the module docstring."""

    def __init__(self, server: ServingContext, adapter: WireAdapter[RequestT], inline_stats: RequestStats) -> None:
        self.server = server
        self.adapter = adapter
        self._inline_batch_limit = server.inline_batch_limit
        self.session = Session(
            server.node,
            authenticated=not server.authenticator.required,
            rate=TokenBucket(server.rate_limit, server.rate_burst) if server.rate_limit > 0 else None,
        )
        self._inline_stats = inline_stats
        self._in_pool = False
        self._closing = False
        self.transport: Transport | None = None
        # With a write-ahead log or replication: replies held until what they wait for
        # is settled (see Held and _emit); later replies queue behind them.
        self._durability = server.durability
        self._replicas = server.replicas
        self._gated = self._durability is not None or self._replicas is not None
        self._held: deque[Held] = deque()
        self._held_bytes = 0
        self._paused_for_log = False  # reading stopped until held replies leave (release() resumes)
        self._waits_for_replicas = False  # registered with the replicas: a held reply has a ticket
        # Under replication: what this connection wrote to each shard (for WAIT; the gate's format).
        self._written: dict[int, Any] = {}
        self.session.read_quorum = self._replicas is not None and self._replicas.read_quorum > 1

    # -- reactor hooks -------------------------------------------------------------

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        session = self.session
        session.peer = transport.peer
        session.connection_id = transport.connection_id
        try:
            session.local = transport.sock.getsockname()
        except OSError:
            session.local = None
        if session.authenticated:
            transport.mark_trusted()  # no token configured: nothing to prove

    def data_received(self, data: bytes) -> None:
        self.adapter.receive_data(data)
        if not self._in_pool:
            self._process()

    def output_drained(self) -> None:
        if not self._in_pool:
            self._process()

    def connection_lost(self) -> None:
        self._forget()
        self._held.clear()

    def _forget(self) -> None:
        if self._durability is not None:
            self._durability.forget(self)
        if self._waits_for_replicas:
            assert self._replicas is not None
            self._replicas.forget(self)
            self._waits_for_replicas = False

    # -- held replies (nodes with a write-ahead log) -------------------------------------------

    def _run_gated(self, command: Command, handler: Handler, request: RequestT, stats: RequestStats) -> None:
        """Run one request inline on a node with a log or replication: its reply waits (see _emit)."""
        replicas = self._replicas
        if self._durability is None and replicas is not None and not self._held:
            # Replication without a log, and no reply held before this one: it leaves now unless
            # it waits for a write quorum. One call into the replicas settles the writes: the
            # general path (ticket, note, verdict) cost a lone node with gossip on several times
            # the CPU per SET of one without (issues 21 and 24).
            reply = self._execute(command, handler, request, stats, in_turn=True)
            if self.session.hold is None:
                settled = replicas.settle_writes(self._written)
                if settled is True or settled is False:
                    transport = self.transport
                    assert transport is not None
                    transport.write(reply)
                elif isinstance(settled, CommandError):
                    self._emit(self.adapter.error_reply(request, settled), 0, 0, False, request)
                else:
                    self._emit(reply, 0, 0, command.write, request, settled)
            else:
                self._emit(reply, 0, 0, command.write, request, self._take_ticket())
            return
        durability = self._durability
        log = durability.log if durability is not None else None
        undos = log.undos if log is not None else 0
        reply = self._execute(command, handler, request, stats, in_turn=True)
        seen_seq = log.appended_seq if log is not None else 0
        if (
            replicas is not None
            and durability is not None
            and not durability.fsync
            and not self._held
            and self.session.hold is None
        ):
            # --wal write, no reply held before this one: the reply waits for this turn's log
            # write only, and so leaves in this turn, as it would without a log; its writes are
            # settled now, in one call, as there. The general path (ticket, note, then a verdict
            # when the held reply is released) cost the WAL node about a third of its CPU per
            # SET beside the memory path (issue 24). With fsync the reply may leave much later,
            # so the lease is judged then, on the general path.
            settled = replicas.settle_writes(self._written)
            if isinstance(settled, CommandError):
                reply = self.adapter.error_reply(request, settled)
            elif not (settled is True or settled is False):
                self._emit(reply, undos, seen_seq, command.write, request, settled)
                return
            self._emit(reply, undos, seen_seq, command.write, request)
            return
        self._emit(reply, undos, seen_seq, command.write, request, self._take_ticket())

    def _take_ticket(self) -> Any:
        """What the command just run on this thread must wait for under replication (None: nothing)."""
        replicas = self._replicas
        session = self.session
        hold = session.hold
        if hold is not None:
            session.hold = None
        if replicas is None:
            return None
        writes = replicas.take_writes()
        if writes is not None:
            ticket = replicas.ticket(writes)
            replicas.note_writes(self._written, ticket)
            return ticket
        if hold is not None:
            return replicas.hold_ticket(hold, self._written)
        return None

    def _verdict(self, undos: int, seen_seq: int, write: bool, request: Any, ticket: Any) -> bytes | bool:
        """An error reply that replaces the held one, True when it may leave, False when it still waits.

        ``undos`` is the log's count of undone ranges before the command ran: one
        undone since, up to ``seen_seq``, may hold a change the reply saw. Once the
        log settled every record up to ``seen_seq``, nothing it saw can be undone.
        """
        durability = self._durability
        if durability is not None:
            log = durability.log
            if log.undos != undos and log.undone_since(undos, seen_seq):
                return self.adapter.error_reply(request, durability.undone_error())
            if not durability.settled(seen_seq, write):
                return False
        if ticket is not None:
            assert self._replicas is not None
            verdict = self._replicas.verdict(ticket)
            if isinstance(verdict, CommandError):
                return self.adapter.error_reply(request, verdict)
            return verdict  # True, False, or the reply that replaces the held one
        return True

    def _emit(self, reply: bytes, undos: int, seen_seq: int, write: bool, request: Any, ticket: Any = None) -> None:
        """Send ``reply`` now, or hold it until what it waits for is settled (and keep order)."""
        assert self.transport is not None
        held = self._held
        if not held:
            verdict = self._verdict(undos, seen_seq, write, request, ticket)
            if verdict is True:
                self.transport.write(reply)
                return
            if verdict is not False:
                self.transport.write(verdict)
                return
            if self._durability is not None:
                self._durability.wait(self)
        if ticket is not None and not self._waits_for_replicas:
            # Only a reply with a ticket waits for the replicas (one held for the log alone
            # does not): the replicas call release() when a ticket may have settled.
            assert self._replicas is not None
            self._replicas.wait(self)
            self._waits_for_replicas = True
        held.append((undos, seen_seq, write, reply, request, ticket))
        self._held_bytes += len(reply)

    def release(self) -> None:
        """The log or the replicas made progress (or gave up): send the replies that no longer wait."""
        transport = self.transport
        held = self._held
        if transport is None or transport.closed:
            held.clear()
            return
        while held:
            undos, seen_seq, write, reply, request, ticket = held[0]
            verdict = self._verdict(undos, seen_seq, write, request, ticket)
            if verdict is False:
                break
            held.popleft()
            self._held_bytes -= len(reply)
            transport.write(reply if verdict is True else verdict)
        if not held:
            self._forget()
            if self._closing:
                transport.close()  # QUIT or a fatal error waited for its earlier replies
            elif self._paused_for_log and not self._in_pool:
                self._paused_for_log = False
                transport.resume_reading()
                self._process()  # it stopped at the high-water mark

    def busy(self) -> bool:
        return self._in_pool

    def client_figures(self) -> ClientFigures | None:
        """This connection as CLIENT LIST shows it (None: not connected yet). Reactor thread, or a
        worker reading a snapshot of plain fields: a figure may be a turn old, never torn."""
        transport = self.transport
        if transport is None:
            return None
        now = transport.reactor.now
        return ClientFigures(
            session=self.session,
            port=transport.options.name,
            descriptor=-1 if transport.closed else transport.sock.fileno(),
            age=now - transport.created,
            idle=now - transport.last_activity,
            query_buffer=self.adapter.buffered(),
            output_items=transport.queued_items(),
            output_bytes=transport.out_size + self._held_bytes,
            reading=not transport.reading_paused(),
        )

    def partial_request(self) -> bool:
        return self.adapter.buffered() > 0

    def input_buffered(self) -> int:
        return self.adapter.buffered()

    def output_held(self) -> int:
        return self._held_bytes

    # -- the pipeline ----------------------------------------------------------------

    def _process(self) -> None:  # noqa: C901 - the request pipeline's per-request path
        # The hot loop of the server: requests come a read's worth at a time,
        # and the common case (authenticated, no rate limit, no fsync, small
        # command) runs the handler right here instead of through _execute.
        # Compiled, the calls on connection, adapter and stats are direct calls
        # of native methods: keep them typed (no bound methods in locals).
        # The requests run inline are counted when the loop turn ends
        # (RequestStats.ran): the reactor reports the turn's length.
        transport = self.transport
        assert transport is not None
        adapter = self.adapter
        server = self.server
        session = self.session
        stats = self._inline_stats
        limit = self._inline_batch_limit
        high_water = transport.high_water
        gated = self._gated
        plain = not gated and session.authenticated and session.rate is None
        # With a log, a read takes the plain path too while no record waits to be written
        # and no reply is held: it cannot have seen a change the log may still give up
        # (the records it appends itself drop expired keys, which are never put back).
        # Under replication alone a read waits for nothing, unless reads consult a quorum
        # (--read-quorum) or it is WAIT (command.gated).
        log = self._durability.log if self._durability is not None else None
        reads_plain = gated and session.authenticated and session.rate is None and not session.read_quorum
        while True:
            # An authenticated take returns every complete request; before
            # authentication it returns one, so take again after running it.
            took_all = session.authenticated
            try:
                requests = adapter.take_requests()
            except PeerProtocolError as error:
                self._violation(Violation(adapter.violation_reply(error), str(error)))
                return
            if not requests:
                break
            for position, request in enumerate(requests):
                if self._closing or transport.out_size + self._held_bytes >= high_water:
                    adapter.push_back(requests[position:])
                    self._stop_reading_if_held(high_water)
                    return  # output_drained() (or release()) resumes
                try:
                    command, handler = adapter.route(request)
                except Violation as violation:
                    self._violation(violation)
                    return
                except CommandError as error:
                    stats.count_error_reply(error.kind)
                    if gated:
                        self._emit(adapter.error_reply(request, error), 0, 0, False, request)  # behind held replies
                    else:
                        transport.write(adapter.error_reply(request, error))
                    continue
                session.last_command = command.name  # CLIENT LIST's cmd: a reference stored, nothing built
                if command.may_leave_reactor and (
                    command.slow
                    or adapter.batch_size(request) > limit
                    or (command.sized_by_value and self._large_value(adapter.value_key(request)))
                ):
                    adapter.push_back(requests[position + 1 :])
                    self._hand_off(command, handler, request)
                    return
                if plain or (
                    reads_plain
                    and not command.gated
                    and not self._held
                    and (log is None or log.appended_seq == log.written_seq)
                ):
                    try:
                        transport.write(handler(server, session, request))
                    except CommandError as error:
                        stats.count_error(command.index, error.kind)
                        if error.close:
                            session.close_requested = True
                        transport.write(adapter.error_reply(request, error))
                    except Exception:  # noqa: BLE001 - a handler's bug is an error reply
                        logger.exception("command {} failed", command.name)
                        stats.count_error(command.index, ErrorKind.INTERNAL)
                        internal = CommandError(ErrorKind.INTERNAL, "internal error")
                        transport.write(adapter.error_reply(request, internal))
                    stats.ran(command.index)
                    if session.close_requested:
                        self._closing = True
                elif gated:
                    self._run_gated(command, handler, request, stats)
                    reads_plain = session.authenticated and session.rate is None and not session.read_quorum
                else:
                    transport.write(self._execute(command, handler, request, stats, in_turn=True))
                    plain = session.authenticated and session.rate is None  # after AUTH
                if self._closing:
                    adapter.push_back(requests[position + 1 :])  # never run: the connection closes
                    if not self._held:
                        transport.close()  # after the last reply has been sent
                    return  # with replies held, release() closes once they are out
            if took_all and not adapter.error_pending():
                break  # else the next take raises the error
        if self._held_bytes:
            self._stop_reading_if_held(high_water)

    def _large_value(self, key: bytes) -> bool:
        entry = self.session.node.peek(key)
        return entry is not None and len(entry.value) > POOL_VALUE_BYTES

    def _stop_reading_if_held(self, high_water: int) -> None:
        # Held replies count against the high-water mark too: stop reading until
        # the log catches up (release() resumes). Unsent output alone pauses in
        # the reactor, which calls output_drained() once the client took enough.
        transport = self.transport
        assert transport is not None
        if self._held_bytes and transport.out_size + self._held_bytes >= high_water:
            self._paused_for_log = True
            transport.pause_reading()

    def _execute(
        self, command: Command, handler: Handler, request: RequestT, stats: RequestStats, in_turn: bool
    ) -> bytes:
        """Run one request on the calling thread and return its encoded reply.

        ``in_turn``: on the reactor thread, where a request counts as taking its
        loop turn (like the inline path's); in the pool, its own run is timed."""
        session = self.session
        started = 0 if in_turn else _clock_ns()
        if not session.authenticated and not command.before_auth:
            stats.count_rejected(command.index, ErrorKind.NOAUTH)
            return self.adapter.error_reply(request, CommandError(ErrorKind.NOAUTH, "Authentication required."))
        if session.rate is not None and not session.rate.take():
            stats.count_rejected(command.index, ErrorKind.RATE_LIMITED)
            return self.adapter.error_reply(
                request, CommandError(ErrorKind.RATE_LIMITED, "rate limit exceeded for this connection")
            )
        durability = self._durability
        if command.write and durability is not None and durability.log.failure is not None:
            # Refused before it runs: nothing to undo, and the error is the same on both ports.
            refused = durability.refused_write()
            stats.count_rejected(command.index, refused.kind)
            return self.adapter.error_reply(request, refused)
        was_authenticated = session.authenticated
        try:
            reply = handler(self.server, session, request)
        except CommandError as error:
            stats.count_error(command.index, error.kind)
            if error.close:
                session.close_requested = True
            reply = self.adapter.error_reply(request, error)
        except Exception:  # noqa: BLE001 - a handler's bug is an error reply
            logger.exception("command {} failed", command.name)
            stats.count_error(command.index, ErrorKind.INTERNAL)
            reply = self.adapter.error_reply(request, CommandError(ErrorKind.INTERNAL, "internal error"))
        if not was_authenticated and session.authenticated:
            self.adapter.authenticated()
            if in_turn and self.transport is not None:
                self.transport.mark_trusted()  # a worker never touches the transport: done() does it
        if session.close_requested:
            self._closing = True
        if in_turn:
            stats.ran(command.index)
        else:
            elapsed = _clock_ns() - started
            stats.record(command.index, elapsed)
            slow = self.server.slow_requests
            if elapsed >= slow.threshold_ns:  # timed anyway in the pool: the check is one comparison
                slow.pooled(elapsed, request, session)
        return reply

    def _hand_off(self, command: Command, handler: Handler, request: RequestT) -> None:  # noqa: C901 - the request pipeline's per-request path (worker side)
        """Send this request and every complete request behind it to the pool as one task."""
        transport = self.transport
        assert transport is not None
        session = self.session
        # Each queued request with whether the session was authenticated when it
        # was routed; a request that failed to route keeps its error (and its id).
        batch: list[tuple[Command, Handler, RequestT, bool] | tuple[RequestT, CommandError]] = [
            (command, handler, request, session.authenticated)
        ]
        violation: Violation | None = None
        while violation is None:
            try:
                following = self.adapter.take_requests()
            except PeerProtocolError as error:
                violation = Violation(self.adapter.violation_reply(error), str(error))
                break
            if not following:
                break
            for request_behind in following:
                try:
                    batch.append((*self.adapter.route(request_behind), request_behind, session.authenticated))
                except CommandError as error:
                    batch.append((request_behind, error))
                except Violation as error:
                    violation = error
                    break
        self._in_pool = True
        transport.pause_reading()
        registry = self.server.stats
        log = self._durability.log if self._durability is not None else None

        def run() -> list[tuple[bytes, int, int, bool, RequestT | None, Any]]:
            # Each reply with what it saw of the log and waits for under replication (see _emit).
            stats = registry.for_this_thread()
            replies: list[tuple[bytes, int, int, bool, RequestT | None, Any]] = []
            for item in batch:
                if len(item) == 2:
                    stats.count_error_reply(item[1].kind)
                    replies.append((self.adapter.error_reply(item[0], item[1]), 0, 0, False, item[0], None))
                else:
                    queued_command, queued_handler, queued_request, routed_authenticated = item
                    if session.authenticated and not routed_authenticated:
                        # An AUTH earlier in this batch: routing checks skipped before
                        # authentication (cluster redirects) apply now.
                        try:
                            self.adapter.route(queued_request)
                        except CommandError as error:
                            replies.append(
                                (self.adapter.error_reply(queued_request, error), 0, 0, False, queued_request, None)
                            )
                            continue
                    session.last_command = queued_command.name
                    undos = log.undos if log is not None else 0
                    reply = self._execute(queued_command, queued_handler, queued_request, stats, in_turn=False)
                    seen_seq = log.appended_seq if log is not None else 0
                    ticket = self._take_ticket()
                    replies.append((reply, undos, seen_seq, queued_command.write, queued_request, ticket))
                if self._closing:
                    break
            return replies

        def done(
            replies: list[tuple[bytes, int, int, bool, RequestT | None, Any]] | None, error: BaseException | None
        ) -> None:
            self._in_pool = False
            if transport.closed:
                return
            if session.authenticated:
                transport.mark_trusted()  # an AUTH ran in the batch
            if error is not None or replies is None:
                transport.write(self.adapter.error_reply(None, CommandError(ErrorKind.INTERNAL, "internal error")))
                transport.close()
                return
            if self._gated:
                for reply, undos, seen_seq, write, request, ticket in replies:
                    self._emit(reply, undos, seen_seq, write, request, ticket)
            else:
                for reply, _undos, _seen_seq, _write, _request, _ticket in replies:
                    transport.write(reply)
            if violation is not None:
                self._violation(violation)
                return
            if self._closing:
                if not self._held:
                    transport.close()
                return
            if self._held and transport.out_size + self._held_bytes >= transport.high_water:
                self._paused_for_log = True
                return  # release() resumes reading
            transport.resume_reading()
            self._process()

        transport.submit(run, done)

    def _violation(self, violation: Violation) -> None:
        transport = self.transport
        assert transport is not None
        # A broken or hostile client repeats its violation on every connection: counted per port and host.
        host = transport.peer[0] if isinstance(transport.peer, tuple) else transport.peer
        transport.reactor.repeats.log(
            "INFO",
            ("violation", transport.options.name, host),
            "closing connection from {}: {}",
            transport.peer,
            violation.reason,
        )
        self._closing = True
        if violation.discard:
            self._held.clear()
            transport.close(flush=False)
            return
        if self._held:  # answered (and closed) after the replies the log still holds
            if violation.reply:
                self._held.append((0, 0, False, violation.reply, None, None))
                self._held_bytes += len(violation.reply)
            return
        if violation.reply:
            transport.write(violation.reply)
        transport.close()
