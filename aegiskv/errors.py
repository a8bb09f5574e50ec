"""Errors a command reports to its client, independent of the wire protocol.

Each protocol maps :class:`ErrorKind` to its own representation (a native
status code, a RESP error prefix), so the same failure reads the same way on
every port.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # a bad argument; the connection stays open
    NOAUTH = "noauth"  # the connection must authenticate first
    AUTH_FAILED = "auth_failed"  # wrong token
    RATE_LIMITED = "rate_limited"  # the connection's token bucket is empty
    OUT_OF_MEMORY = "out_of_memory"  # the value cannot fit under --max-memory
    UNKNOWN_COMMAND = "unknown_command"
    WRONG_TYPE = "wrong_type"  # an operation on a value of the wrong kind
    NOPROTO = "noproto"  # HELLO asked for a protocol version we do not speak
    INTERNAL = "internal"  # a bug or an unexpected failure on the server
    MOVED = "moved"  # the key belongs to another node (aegiskv.cluster.redirect.Moved says which)
    CLUSTER_DOWN = "cluster_down"  # no node serves the key's shard
    # The node cannot write its log (full or failing disk): writes are refused, reads served.
    STORAGE_FAILED = "storage_failed"
    # A write whose outcome is unknown (its quorum or its primary's lease failed), or a shard
    # with no primary yet (an election under way): the client may retry.
    TRYAGAIN = "tryagain"
    # A command's keys hash to different slots (RENAME, COPY, BITOP), refused as Redis Cluster does.
    CROSSSLOT = "crossslot"
    BUSYKEY = "busykey"  # RESTORE without REPLACE onto a key that exists
    # A write sent to a replica endpoint that names no key to redirect by (FLUSHALL), as Redis's replicas refuse it.
    READONLY = "readonly"


class CommandError(Exception):
    """A command failed in a way the client should be told about.

    ``close`` asks the protocol to close the connection after sending the error
    (too many failed AUTH attempts, for instance).
    """

    def __init__(self, kind: ErrorKind, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.close = close
