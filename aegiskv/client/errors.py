"""Exceptions raised by :class:`aegiskv.client.Client`.

The four error kinds of the specification map to these classes:

========================  ===============================================
specification             exception
========================  ===============================================
not found                 :class:`NotFoundError` (also a ``KeyError``)
closed                    :class:`ConnectionClosedError` (also a ``ConnectionError``)
timeout                   :class:`AegisTimeoutError` (also a ``TimeoutError``)
retries exhausted         :class:`RetriesExhaustedError` (``__cause__`` is the last failure)
========================  ===============================================

Everything else the server reports is an :class:`ServerError` subclass, so
``except AegisError`` catches whatever the client raises on purpose.
"""

from __future__ import annotations


class AegisError(Exception):
    """Base of every error the client raises."""


class NotFoundError(AegisError, KeyError):
    """The key does not exist (or has expired)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "key not found"


class ConnectionClosedError(AegisError, ConnectionError):
    """The connection was closed or lost, or the client itself was closed."""


class AegisTimeoutError(AegisError, TimeoutError):
    """Connecting, sending or waiting for a reply took longer than configured."""


class RetriesExhaustedError(AegisError):
    """An idempotent operation failed on every attempt; ``__cause__`` is the last failure."""


class ServerError(AegisError):
    """The server rejected the request; ``code`` is its error name (e.g. ``INVALID``)."""

    def __init__(self, message: str, code: str = "ERROR") -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(ServerError):
    """AUTH is required, or the token was wrong."""


class RateLimitedError(ServerError):
    """The connection exceeded the server's per-connection rate limit."""


class OutOfMemoryError(ServerError):
    """The value cannot fit under the server's --max-memory."""


class StorageFailedError(ServerError):
    """The node cannot write its log now (full or failing disk): it refuses writes and
    serves reads until it can. A write that got this error was not applied."""


class TryAgainError(ServerError):
    """The key's shard is between primaries (a failover), or a write's quorum or its primary's
    lease failed before it was confirmed: the write may or may not have been applied. Retrying
    an idempotent operation is safe."""


class CrossSlotError(ServerError):
    """RENAME or COPY named two keys that hash to different slots (Redis Cluster's CROSSSLOT):
    nothing was changed. Keys that share a hash tag (``{user:1}a``, ``{user:1}b``) share a slot."""


class ConditionNotMetError(AegisError):
    """A conditional set (only-if-absent / only-if-present) did not store."""


class VersionMismatchError(ConditionNotMetError):
    """Compare-and-set failed; ``current_version`` is the key's version (0 = absent)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class ProtocolViolationError(AegisError):
    """The server sent something this client cannot understand (or said we did)."""


class MovedError(ServerError):
    """The key belongs to another node (cluster); the client follows these itself.

    Raised to the caller only when redirects keep bouncing (the cluster's map is
    changing faster than the client can follow): past ``Config.max_redirects``
    redirects in a row a redirect is retried like the other failures, and this
    is the failure once the retries run out (the cause of
    ``RetriesExhaustedError``, or itself with ``max_retries=0``).
    """

    def __init__(self, message: str, address: tuple[str, int], epoch: int, slot: int) -> None:
        super().__init__(message, "MOVED")
        self.address = address
        self.epoch = epoch
        self.slot = slot
