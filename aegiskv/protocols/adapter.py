"""The contract between a wire protocol and the request pipeline.

A protocol package (``protocols/native``, ``protocols/resp``) provides a
:class:`WireAdapter` that turns bytes into requests and routes each request to
a handler; handlers see the server only through :class:`HandlerContext`, the
narrow view declared here, so they import nothing from ``aegiskv.server`` and
run in-process in tests with any object that has these attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from aegiskv.cluster.shard_map import Topology
from aegiskv.errors import CommandError
from aegiskv.node.commands import Command
from aegiskv.node.operations import Node
from aegiskv.obs.slowlog import LatencyMonitor, SlowLog
from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.session import Authenticator, Session

# INFO as both ports render it (built by aegiskv.server.info): section name ("server")
# -> field -> value, each in the order shown. A dictionary value is one of Redis's
# "key=value,..." fields (db0:keys=3,expires=1,avg_ttl=0).
InfoScalar = int | float | str
InfoValue = InfoScalar | dict[str, InfoScalar]
Info = dict[str, dict[str, InfoValue]]


class SettingsView(Protocol):
    """The settings handlers read (CONFIG GET, CLUSTER MYID); aegiskv.server.settings.Settings has them."""

    @property
    def node_id(self) -> str: ...
    @property
    def max_memory_bytes(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def wal(self) -> str: ...
    @property
    def max_bulk_bytes(self) -> int: ...
    @property
    def max_memory(self) -> int: ...
    @property
    def rate_limit(self) -> float: ...
    @property
    def rate_burst(self) -> int: ...
    @property
    def log_level(self) -> str: ...
    @property
    def slowlog_log_slower_than(self) -> int: ...
    @property
    def slowlog_max_len(self) -> int: ...
    @property
    def latency_monitor_threshold(self) -> int: ...
    @property
    def enable_debug_command(self) -> bool: ...


class ClientFigures(NamedTuple):
    """One client connection as CLIENT LIST shows it, read on the reactor (aegiskv.server.pipeline)."""

    session: Session
    port: str  # the listener's name: "resp" or "native"
    descriptor: int  # the socket's file descriptor (-1: closed)
    age: float  # seconds since it connected
    idle: float  # seconds since it last sent or was sent anything
    query_buffer: int  # bytes received and not yet run
    output_items: int  # replies queued and not yet sent
    output_bytes: int
    reading: bool  # not paused (back-pressure, a batch in the pool)


class HandlerContext(Protocol):
    """What a command handler may use of the server that runs it (aegiskv.server.wiring.Server).

    Any thread: handlers run on the reactor or in a worker. ``info`` and
    ``snapshot_in_background`` are the only calls that may take long; the
    command table marks the commands that use them ``slow``.
    """

    node: Node
    authenticator: Authenticator
    topology: Topology
    run_id: str
    started: float  # wall-clock seconds when the server started

    @property
    def settings(self) -> SettingsView: ...

    @property
    def slow_log(self) -> SlowLog:
        """SLOWLOG's entries (aegiskv.server.slow_requests feeds them). Thread-safe."""
        ...

    @property
    def latency_monitor(self) -> LatencyMonitor:
        """LATENCY's samples. Thread-safe."""
        ...

    @property
    def resp_bound(self) -> tuple[str, int]:
        """The RESP port's bound address (``("", 0)`` when the node serves none)."""
        ...

    def info(self, sections: Sequence[str] | None = None) -> Info:
        """INFO: the sections named (any case; None: the default ones), see aegiskv.server.info."""
        ...

    def snapshot_in_background(self) -> None:
        """Start a snapshot (BGSAVE); raises CommandError when one runs or the backend keeps none."""
        ...

    def request_drain(self) -> None:
        """Start a graceful drain, as SIGTERM does (any thread: it only schedules it on the reactor)."""
        ...

    def clients(self) -> list[ClientFigures]:
        """Every client connection of both ports, by connection id (CLIENT LIST)."""
        ...

    def kill_client(self, connection_id: int) -> None:
        """Close another client's connection now, dropping its unsent replies (CLIENT KILL)."""
        ...

    def set_evictable(self, connection_id: int, evictable: bool) -> None:
        """Whether the client memory budget may close this connection (CLIENT NO-EVICT)."""
        ...

    def configure(self, pairs: list[tuple[str, str]]) -> None:
        """CONFIG SET: change settings a running node can change; raises CommandError, changing nothing."""
        ...

    def reset_statistics(self) -> None:
        """Zero the counters INFO shows as Redis's CONFIG RESETSTAT does (commandstats, errorstats, hits ...)."""
        ...


RequestT = TypeVar("RequestT")
KeyT = TypeVar("KeyT")
HandlerT = TypeVar("HandlerT")

# A handler runs one request: adapters bind the protocol syntax to Node methods.
Handler = Callable[[HandlerContext, Session, Any], bytes]


class CommandTableError(Exception):
    """A protocol's handlers and the command table rows it claims do not match (a bug, found at import)."""


def bind_handlers(
    protocol: str, claimed: Mapping[KeyT, Command], handlers: Mapping[KeyT, HandlerT]
) -> dict[KeyT, tuple[Command, HandlerT]]:
    """A protocol's dispatch table: each row it serves joined to its handler, by the protocol's key.

    ``claimed``: the rows of aegiskv.node.commands.COMMAND_TABLE that name this
    protocol, by the key the protocol routes with (a RESP name, a native opcode).
    Raises CommandTableError naming every row without a handler and every
    handler without a row, so a command added to one side only fails at import.
    """
    missing = [_key_name(key) for key in claimed if key not in handlers]
    unclaimed = [_key_name(key) for key in handlers if key not in claimed]
    if missing or unclaimed:
        problems = []
        if missing:
            problems.append(f"rows without a handler: {', '.join(missing)}")
        if unclaimed:
            problems.append(f"handlers without a row: {', '.join(unclaimed)}")
        raise CommandTableError(f"{protocol} commands disagree with the command table: {'; '.join(problems)}")
    return {key: (command, handlers[key]) for key, command in claimed.items()}


def _key_name(key: object) -> str:
    name = getattr(key, "name", None)  # an enum member (an opcode) by its name
    return name if isinstance(name, str) else str(key)


class Violation(Exception):
    """The peer broke the wire protocol: send ``reply`` (may be empty) and close.

    With ``discard`` the connection closes at once, dropping replies not yet sent.
    """

    def __init__(self, reply: bytes, reason: str, discard: bool = False) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason
        self.discard = discard


class WireAdapter(Generic[RequestT]):
    """What a protocol provides to :class:`RequestPipeline`.

    A base class rather than a typing Protocol: compiled (setup.py), calls on
    a value of a native class go straight to the method, where a Protocol-typed
    value costs a generic attribute lookup and call per request.
    """

    def receive_data(self, data: bytes) -> None:
        raise NotImplementedError

    def take_requests(self) -> list[RequestT]:
        """Every complete request buffered now (empty: more data needed); raises PeerProtocolError.

        Requests before a protocol error are returned first; the error is
        raised by the next call. Before authentication at most one request
        (AUTH changes the limits the requests after it are decoded with).
        """
        raise NotImplementedError

    def push_back(self, requests: list[RequestT]) -> None:
        """Requests taken but not run (the pipeline paused): returned first by the next take."""
        raise NotImplementedError

    def error_pending(self) -> bool:
        """The last take stopped before a protocol error, which the next take raises."""
        raise NotImplementedError

    def violation_reply(self, error: PeerProtocolError) -> bytes:
        """What to send before closing a connection that broke the protocol."""
        raise NotImplementedError

    def route(self, request: RequestT) -> tuple[Command, Handler]:
        """The command and its handler; raises CommandError for an unknown command."""
        raise NotImplementedError

    def batch_size(self, request: RequestT) -> int:
        """Number of keys the request touches (decides inline versus pool for batch commands)."""
        raise NotImplementedError

    def value_key(self, request: RequestT) -> bytes:
        """The key whose value's length decides inline versus pool for a command sized by its value."""
        raise NotImplementedError

    def error_reply(self, request: RequestT | None, error: CommandError) -> bytes:
        raise NotImplementedError

    def authenticated(self) -> None:
        """The connection just authenticated: lift the small pre-auth limits."""
        raise NotImplementedError

    def buffered(self) -> int:
        """Bytes received but not yet consumed as requests."""
        raise NotImplementedError
