"""Per-connection state shared by every protocol: the node served, authentication and rate limit."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import NamedTuple

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.operations import Node


class TokenBucket:
    """Allows ``rate`` requests per second with bursts of ``burst``. Not thread-safe.

    Refilled lazily from a monotonic clock on each call, so an idle connection
    costs nothing.
    """

    __slots__ = ("rate", "burst", "_tokens", "_last", "_clock")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


class Authenticator:
    """Checks tokens in constant time. Immutable, thread-safe.

    Both sides are hashed first and the digests compared with
    ``hmac.compare_digest``, so neither the comparison time nor an early exit on
    length tells a guesser anything about the token.
    """

    def __init__(self, token: str | None, max_failures: int) -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else None
        self.max_failures = max_failures

    @property
    def required(self) -> bool:
        return self._digest is not None

    def check(self, session: Session, offered: bytes) -> None:
        """Authenticate ``session`` or raise; the error asks to close after too many failures."""
        if self._digest is None:
            raise CommandError(ErrorKind.INVALID, "AUTH called without any password configured for the default user")
        if hmac.compare_digest(hashlib.sha256(offered).digest(), self._digest):
            session.authenticated = True
            session.auth_failures = 0
            return
        session.auth_failures += 1
        raise CommandError(
            ErrorKind.AUTH_FAILED,
            "invalid username-password pair or user is disabled.",
            close=not session.authenticated and session.auth_failures >= self.max_failures,
        )


class WaitRequest(NamedTuple):
    """WAIT numreplicas timeout: hold the reply until the connection's writes have that many copies.

    ``answer(count)`` encodes the reply: the followers (the primary not counted)
    holding every write the connection made, at the least over the shards written.
    """

    replicas: int
    timeout_ms: int  # 0: no limit
    answer: Callable[[int], bytes]


class QuorumRead(NamedTuple):
    """A read on a node with ``--read-quorum`` above 1: hold the reply until that many copies answered.

    ``version`` 0: the key is absent here. ``answer(value, version, expires_at_ms)``
    encodes the reply from the newest copy (``value`` None: absent).
    """

    key: bytes
    value: bytes
    version: int
    expires_at_ms: int
    answer: Callable[[bytes | None, int, int], bytes]


class Session:
    """What the server remembers about one client connection."""

    __slots__ = (
        "node",
        "authenticated",
        "auth_failures",
        "rate",
        "peer",
        "local",
        "connection_id",
        "created",
        "close_requested",
        "protocol",
        "name",
        "library_name",
        "library_version",
        "hold",
        "read_quorum",
        "last_command",
        "no_evict",
        "readonly",
    )

    def __init__(self, node: Node, authenticated: bool, rate: TokenBucket | None, peer: object = None) -> None:
        # The node this connection's commands run against. Handlers read it here
        # rather than from the server: compiled, this is a field read, where the
        # server's attribute is a dictionary search per request.
        self.node = node
        self.authenticated = authenticated
        self.auth_failures = 0
        self.rate = rate
        self.peer = peer
        self.local: object = None  # our address of this connection
        self.connection_id = 0
        self.created = time.time()
        self.close_requested = False  # close once the current reply is sent (QUIT, too many AUTH failures)
        self.protocol = 2  # RESP version chosen with HELLO
        self.name: bytes | None = None  # CLIENT SETNAME
        self.library_name = b""  # CLIENT SETINFO LIB-NAME
        self.library_version = b""
        # Set by a handler whose reply must wait under replication (WAIT, a quorum read);
        # the request pipeline takes it after the handler ran (aegiskv.server.pipeline).
        self.hold: WaitRequest | QuorumRead | None = None
        self.read_quorum = False  # reads consult other copies (--read-quorum above 1, replication on)
        # The last command routed on this connection (CLIENT LIST's cmd): the name of the table's row,
        # which the pipeline stores per request (a reference, no string is built).
        self.last_command = "NULL"  # as Redis shows a connection that ran nothing yet
        # CLIENT NO-EVICT: shown in CLIENT LIST's flags; the transport is exempted from the client
        # memory budget (max_client_memory) through the server.
        self.no_evict = False
        # READONLY (Redis Cluster): on a replica endpoint, this connection's reads may be answered
        # from a follower's copy (aegiskv.cluster.replica_reads); READWRITE clears it.
        self.readonly = False
