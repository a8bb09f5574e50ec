"""A Django cache backend on AegisKV: ``aegiskv.contrib.django.AegisKVCache``.

::

    CACHES = {
        "default": {
            "BACKEND": "aegiskv.contrib.django.AegisKVCache",
            "LOCATION": ["10.0.0.1:7700", "10.0.0.2:7700"],   # or "host:port,host:port"
            "TIMEOUT": 300,                                  # None: forever; 0: expire at once
            "KEY_PREFIX": "shop",
            "OPTIONS": {"max_conns": 16, "auth_token": "...", "tls_ca": "/etc/aegis/ca.pem"},
        }
    }

``OPTIONS`` takes the fields of :class:`aegiskv.client.Config` (except
``seeds``: that is ``LOCATION``), plus ``SERIALIZER``: a class or its dotted
path with ``dumps(value) -> bytes`` and ``loads(bytes) -> value`` (default:
:class:`PickleSerializer`; ``PICKLE_PROTOCOL`` picks its protocol).

The full ``BaseCache`` contract with Django's timeout rules: the default
timeout when none is given, ``None`` for a key that never expires, ``0`` (or
less) for one that expires at once (``set`` deletes the key, ``add`` stores
nothing). Keys go through Django's ``KEY_FUNCTION``, ``KEY_PREFIX`` and
``VERSION``. ``incr``/``decr`` are atomic (compare-and-set on the key's
version, retried when another writer got there first) and keep the key's TTL.
``clear()`` empties the whole server (``FLUSHALL`` on every node's RESP port,
as Django's Redis backend flushes its database): give Django a cluster of its
own if other data lives there. The async methods are Django's defaults (the
sync ones in a thread). Each thread's cache object has its own connection
pool; ``close()`` keeps it, since Django calls it after every request.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, Protocol

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from aegiskv.client import Client, ConditionNotMetError, Config, NotFoundError, VersionMismatchError
from aegiskv.client.route_table import parse_address

# The Config fields OPTIONS may set (seeds come from LOCATION).
_CONFIG_OPTIONS = frozenset(field.name for field in fields(Config)) - {"seeds"}


class Serializer(Protocol):
    """What ``OPTIONS["SERIALIZER"]`` names: ``dumps(value) -> bytes`` and ``loads(bytes) -> value``."""

    def dumps(self, value: Any) -> bytes:
        """``value`` as the bytes to store."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value stored as ``data``."""
        ...


class PickleSerializer:
    """Django's usual value format: any picklable value round-trips. Trust the servers: unpickling runs code."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        """Pickle with ``protocol`` (``OPTIONS["PICKLE_PROTOCOL"]``)."""
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        """The pickled ``value``."""
        return pickle.dumps(value, self.protocol)

    def loads(self, data: bytes) -> Any:
        """The value ``data`` pickles; unpickling runs code."""
        return pickle.loads(data)


class AegisKVCache(BaseCache):  # type: ignore[misc]  # Django ships no type information: BaseCache is Any
    """See the module docstring."""

    def __init__(self, server: str | Iterable[str], params: Mapping[str, Any]) -> None:
        """Django calls this with ``LOCATION`` and the rest of the ``CACHES`` entry; a bad one raises
        ``ImproperlyConfigured``."""
        super().__init__(params)
        seeds = [part.strip() for part in server.split(",")] if isinstance(server, str) else list(server)
        options = dict(params.get("OPTIONS") or {})
        serializer = options.pop("SERIALIZER", None)
        protocol = options.pop("PICKLE_PROTOCOL", pickle.HIGHEST_PROTOCOL)
        unknown = sorted(set(options) - _CONFIG_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"AegisKVCache OPTIONS: unknown {', '.join(unknown)}; expected SERIALIZER, PICKLE_PROTOCOL "
                f"or fields of aegiskv.client.Config ({', '.join(sorted(_CONFIG_OPTIONS))})"
            )
        try:
            self._config = Config(seeds=[seed for seed in seeds if seed], **options)
        except (TypeError, ValueError) as error:
            raise ImproperlyConfigured(f"AegisKVCache LOCATION/OPTIONS: {error}") from error
        if serializer is None:
            self._serializer: Serializer = PickleSerializer(protocol)
        else:
            made = import_string(serializer) if isinstance(serializer, str) else serializer
            self._serializer = made() if isinstance(made, type) else made
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The AegisKV client, connected on first use."""
        if self._client is None:
            self._client = Client(self._config)
        return self._client

    def _lifetime(self, timeout: Any) -> float | None:
        """Seconds a value lives: None for ever, 0 or less for "expire at once" (Django's rules)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        # The server counts milliseconds: a positive timeout below one still keeps the value for one.
        return max(float(timeout), 0.001) if timeout > 0 else 0.0

    # -- the BaseCache contract -------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; True when it was stored."""
        made = self.make_and_validate_key(key, version=version)
        lifetime = self._lifetime(timeout)
        if lifetime is not None and lifetime <= 0:
            return not self._exists(made)  # "stored" and expired at once, as Django's other backends
        try:
            self.client.set(made, self._serializer.dumps(value), lifetime, only_if_absent=True)
        except ConditionNotMetError:
            return False
        return True

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent."""
        made = self.make_and_validate_key(key, version=version)
        try:
            return self._serializer.loads(self.client.get(made))
        except NotFoundError:
            return default

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        """Store ``value`` under ``key`` for ``timeout`` seconds (Django's rules: None for ever,
        0 or less deletes it)."""
        made = self.make_and_validate_key(key, version=version)
        lifetime = self._lifetime(timeout)
        if lifetime is not None and lifetime <= 0:
            self.client.delete(made)
            return
        self.client.set(made, self._serializer.dumps(value), lifetime)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new ``timeout``; True when the key exists."""
        made = self.make_and_validate_key(key, version=version)
        lifetime = self._lifetime(timeout)
        if lifetime is None:
            return self.client.persist(made)
        if lifetime <= 0:
            return self.client.delete(made)
        return self.client.expire(made, lifetime)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; True when it existed."""
        return self.client.delete(self.make_and_validate_key(key, version=version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """The keys that exist, each with its value (one MGET, split by owner in a cluster)."""
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not made:
            return {}
        values = self.client.mget(list(made))
        loads = self._serializer.loads
        return {key: loads(value) for key, value in zip(made.values(), values) if value is not None}

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` exists (without reading its value)."""
        return self._exists(self.make_and_validate_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Atomic: read the value and its version, write value + delta only if the version is unchanged."""
        made = self.make_and_validate_key(key, version=version)
        client, serializer = self.client, self._serializer
        while True:
            try:
                current = client.get_with_ttl(made)
            except NotFoundError:
                raise ValueError(f"Key '{key}' not found") from None
            value = serializer.loads(current.value) + delta
            try:
                client.set(made, serializer.dumps(value), if_version=current.version, keep_ttl=True)
            except VersionMismatchError:
                continue  # another writer changed it, or it expired or was deleted: read it again
            return value

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every pair; returns the keys that failed (none: a failure raises)."""
        made = [(self.make_and_validate_key(key, version=version), value) for key, value in data.items()]
        if not made:
            return []
        lifetime = self._lifetime(timeout)
        if lifetime is not None and lifetime <= 0:
            self._delete_made([key for key, _ in made])
            return []
        dumps = self._serializer.dumps
        self.client.mset([(key, dumps(value)) for key, value in made], lifetime)
        return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove every key of ``keys`` (absent ones are ignored)."""
        self._delete_made([self.make_and_validate_key(key, version=version) for key in keys])

    def clear(self) -> None:
        """Every key of every node goes: FLUSHALL on each node's RESP port (the native protocol has no flush)."""
        topology = self.client.topology()
        asked = parse_address(self._config.seeds[0], "127.0.0.1")
        for node in topology["nodes"].values():
            _flush(parse_address(str(node["resp"]), asked[0]), self._config)

    def close(self, **kwargs: Any) -> None:
        """Django calls this after every request: the pool stays, so the next request need not reconnect."""

    # -- helpers ------------------------------------------------------------------------

    def _exists(self, made: str) -> bool:
        try:
            self.client.get_with_ttl(made)
        except NotFoundError:
            return False
        return True

    def _delete_made(self, made: list[str]) -> None:
        if made:
            pipeline = self.client.pipeline()
            for key in made:
                pipeline.delete(key)
            pipeline.execute(raise_on_error=True)


def _resp_command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def _flush(address: tuple[str, int], config: Config) -> None:
    """FLUSHALL on one node's RESP port, with the client's TLS and token; raises ConnectionError when refused."""
    commands = [_resp_command(b"AUTH", config.auth_token.encode())] if config.auth_token else []
    commands.append(_resp_command(b"FLUSHALL"))
    context = config.ssl_context()
    sock = socket.create_connection(address, timeout=config.conn_timeout)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=address[0])
        sock.settimeout(config.read_timeout)
        sock.sendall(b"".join(commands))
        received = b""
        while received.count(b"\r\n") < len(commands):  # each reply is one line: +OK or -ERR ...
            data = sock.recv(4096)
            if not data:
                raise ConnectionError(f"FLUSHALL on {address[0]}:{address[1]}: connection closed")
            received += data
    finally:
        sock.close()
    for line in received.split(b"\r\n")[: len(commands)]:
        if not line.startswith(b"+"):
            raise ConnectionError(f"FLUSHALL on {address[0]}:{address[1]}: {line.decode('utf-8', 'replace')}")
