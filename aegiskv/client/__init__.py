"""The AegisKV Python client: ``from aegiskv.client import Client, Config`` (asyncio: ``AsyncClient``)."""

from aegiskv.client.aio import AsyncClient, AsyncPipeline
from aegiskv.client.client import Client, Config, Pipeline, ValueWithTTL
from aegiskv.client.errors import (
    AegisError,
    AegisTimeoutError,
    AuthenticationError,
    ConditionNotMetError,
    ConnectionClosedError,
    CrossSlotError,
    MovedError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolViolationError,
    RateLimitedError,
    RetriesExhaustedError,
    ServerError,
    StorageFailedError,
    TryAgainError,
    VersionMismatchError,
)

__all__ = [
    "AegisError",
    "AegisTimeoutError",
    "AsyncClient",
    "AsyncPipeline",
    "AuthenticationError",
    "Client",
    "ConditionNotMetError",
    "Config",
    "ConnectionClosedError",
    "CrossSlotError",
    "MovedError",
    "NotFoundError",
    "OutOfMemoryError",
    "Pipeline",
    "ProtocolViolationError",
    "RateLimitedError",
    "RetriesExhaustedError",
    "ServerError",
    "StorageFailedError",
    "TryAgainError",
    "ValueWithTTL",
    "VersionMismatchError",
]
