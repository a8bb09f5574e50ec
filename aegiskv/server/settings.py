"""Daemon configuration: one table of settings, four sources, one-line errors.

Precedence is built-in defaults < TOML file < ``AEGIS_*`` environment < flags
that were actually given on the command line. Every setting is declared once in
``SETTINGS`` (name, default, parser, help); the TOML loader, the environment
loader, the flag parser and ``conf/aegiskv.toml`` all derive from that table, so
they cannot drift apart (a test compares the documented file with the table).

Any bad input raises :class:`ConfigError` whose message is a single line naming
the source (file and key, variable, or flag), the value, and what was expected.
The daemon prints it and exits with status 2 before binding anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "AEGIS_"
# Environment variables with the prefix that are not settings.
ENV_NOT_SETTINGS = frozenset({"AEGIS_CONFIG", "AEGIS_DISABLE_PLUGIN_AUTOLOAD"})


class ConfigError(Exception):
    """Bad configuration; ``str(error)`` is the one line shown to the operator."""


class _Invalid(ValueError):
    """Raised by a parser; carries only the 'expected ...' part of the message."""


# ---------------------------------------------------------------------------
# Value parsers. Each takes the raw value (a TOML value, or a string from the
# environment or a flag) and returns the typed value or raises _Invalid with a
# description of what was expected.
# ---------------------------------------------------------------------------

Parser = Callable[[Any], Any]


def _integer(minimum: int | None = None, maximum: int | None = None, what: str = "an integer") -> Parser:
    def parse(raw: Any) -> int:
        expected = what
        if minimum is not None and maximum is not None:
            expected = f"{what} from {minimum} to {maximum}"
        elif minimum is not None:
            expected = f"{what} >= {minimum}"
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, str):
            text = raw.strip().replace("_", "")
            try:
                if not text.lstrip("-").isascii():
                    raise ValueError(text)
                raw = int(text, 10)
            except ValueError:
                raise _Invalid(expected) from None
        if not isinstance(raw, int):
            raise _Invalid(expected)
        if (minimum is not None and raw < minimum) or (maximum is not None and raw > maximum):
            raise _Invalid(expected)
        return raw

    return parse


def _number(minimum: float = 0.0, what: str = "a number") -> Parser:
    def parse(raw: Any) -> float:
        expected = f"{what} >= {minimum:g}"
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise _Invalid(expected) from None
        if not isinstance(raw, (int, float)):
            raise _Invalid(expected)
        try:
            value = float(raw)  # a TOML integer has no size limit; float() may overflow
        except OverflowError:
            raise _Invalid(expected) from None
        if value != value or value < minimum or value == float("inf"):
            raise _Invalid(expected)
        return value

    return parse


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")


# The parsers _duration() made: --help shows their defaults as the docs write them ("30s", not 30.0).
_DURATION_PARSERS: set[Parser] = set()


def _duration(allow_zero: bool = True) -> Parser:
    """Seconds as a number, or a string such as ``"30s"``, ``"500ms"``, ``"5m"``."""

    def parse(raw: Any) -> float:
        expected = "a duration such as 30s, 500ms or 5m" + (" (0 turns it off)" if allow_zero else ", above 0")
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, (int, float)):
            try:
                seconds = float(raw)
            except OverflowError:
                raise _Invalid(expected) from None
        elif isinstance(raw, str):
            match = _DURATION_RE.match(raw)
            if not match:
                raise _Invalid(expected)
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        else:
            raise _Invalid(expected)
        if seconds < 0 or seconds != seconds or seconds == float("inf") or (seconds == 0 and not allow_zero):
            raise _Invalid(expected)
        return seconds

    _DURATION_PARSERS.add(parse)
    return parse


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([a-zA-Z]*)\s*$")


def _size(minimum: int = 1, maximum: int = 2**32 - 1) -> Parser:
    """Bytes as an integer, or a string such as ``"64MiB"`` or ``"4KB"``."""

    def parse(raw: Any) -> int:
        expected = f"a size in bytes (e.g. 65535, 64KiB, 64MiB) from {minimum} to {maximum}"
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str):
            match = _SIZE_RE.match(raw)
            if not match or match.group(2).lower() not in _SIZE_UNITS:
                raise _Invalid(expected)
            if len(match.group(1)) > 20:  # beyond any maximum (and int()'s digit limit)
                raise _Invalid(expected)
            value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
        else:
            raise _Invalid(expected)
        if not minimum <= value <= maximum:
            raise _Invalid(expected)
        return value

    return parse


def _text(allow_empty: bool = False, what: str = "a non-empty string") -> Parser:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or (not allow_empty and not raw.strip()):
            raise _Invalid(what)
        return raw

    return parse


def _optional(inner: Parser) -> Parser:
    """``""`` (or an absent value) means unset; anything else goes to ``inner``."""

    def parse(raw: Any) -> Any:
        if raw is None or raw == "":
            return None
        return inner(raw)

    return parse


def _choice(*choices: str) -> Parser:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in choices:
            raise _Invalid("one of " + ", ".join(choices))
        return raw.strip().lower()

    return parse


def parse_address(raw: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6). Port 0 asks the OS for a free port."""
    text = raw.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    # isascii(): str.isdigit() also accepts digits such as "²" that int() refuses.
    port_ok = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not sep or not host or not port_ok or int(port_text) > 65535:
        raise _Invalid("an address host:port with a port from 0 to 65535")
    return host, int(port_text)


def _address(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Invalid("an address host:port with a port from 0 to 65535")
    host, port = parse_address(raw)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address_or_off(raw: Any) -> str | None:
    if isinstance(raw, str) and raw.strip().lower() in ("off", "none", ""):
        return None
    try:
        return _address(raw)
    except _Invalid:
        raise _Invalid("an address host:port with a port from 0 to 65535, or off") from None


def _address_list(raw: Any) -> tuple[str, ...]:
    """Addresses as a comma-separated string or a TOML list of strings."""
    expected = "comma-separated host:port addresses"
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise _Invalid(expected)
    addresses = tuple(_address(item) for item in items if item.strip())
    if not addresses:
        raise _Invalid(expected)
    return addresses


def _secret(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw.encode()) < 16:
        raise _Invalid("a secret of at least 16 bytes")
    return raw


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return raw.strip().lower() in ("true", "yes", "on", "1")
    raise _Invalid("true or false")


def _probability(raw: Any) -> float:
    value: float = _number(0.0, "a fraction")(raw)
    if not 0.0 < value < 1.0:
        raise _Invalid("a fraction between 0 and 1 (exclusive)")
    return value


# ---------------------------------------------------------------------------
# The settings table.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str  # snake_case key in TOML; AEGIS_<NAME> in the environment
    default: Any
    parse: Parser
    help: str
    flag: bool = False  # also a command-line flag --name-with-dashes
    metavar: str | None = None
    documented_default: str | None = None  # how conf/aegiskv.toml shows a computed default
    # Changes on a running node: CONFIG SET and SIGHUP apply it (aegiskv.server.live_settings);
    # every other setting is read once at start-up and needs a restart.
    live: bool = False

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.upper()


MIB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    # -- identity and addresses -------------------------------------------------
    Setting(
        "node_id",
        None,
        _optional(_text()),
        "node identity (default: the host name)",
        flag=True,
        documented_default="host name",
    ),
    Setting("bind", "0.0.0.0:7700", _address, "client address (native protocol), host:port", flag=True),
    Setting("resp_bind", "0.0.0.0:7379", _address_or_off, "RESP (Redis protocol) address, or off", flag=True),
    Setting(
        "client_advertise",
        None,
        _optional(_address),
        "native address other nodes and clients should use (default: the bound one; a wildcard bind "
        "advertises an empty host, meaning the address the client reached)",
        flag=True,
    ),
    Setting("resp_advertise", None, _optional(_address), "RESP address to advertise in CLUSTER replies (as above)"),
    Setting(
        "resp_replica_bind",
        None,
        _address_or_off,
        "replica endpoint: a second RESP address where this node answers READONLY reads of the shards it "
        "follows, listed as their replica in CLUSTER SLOTS (redis-py read_from_replicas), or off",
        flag=True,
    ),
    Setting(
        "resp_replica_advertise",
        None,
        _optional(_address),
        "replica endpoint address to advertise in CLUSTER replies (as resp_advertise)",
    ),
    Setting("data_dir", "./data", _text(), "directory for node state (locked by one daemon at a time)", flag=True),
    # -- memory and keyspace ----------------------------------------------------
    Setting(
        "max_memory",
        1024,
        _integer(1, 1024 * 1024, "megabytes as an integer"),
        "memory bound for stored data in MB; eviction starts there",
        flag=True,
        live=True,
    ),
    Setting(
        "shards", 256, _integer(1, 16384, "an integer"), "number of shards the 16384 slots are split into", flag=True
    ),
    # -- cluster ----------------------------------------------------------------
    Setting(
        "gossip",
        "0.0.0.0:7701",
        _address_or_off,
        "gossip address (UDP probes and TCP state exchange on the same port), or off for a lone node",
        flag=True,
    ),
    Setting(
        "gossip_advertise",
        None,
        _optional(_address),
        "gossip address other nodes should use (default: the bound one; a wildcard bind advertises "
        "the address this host routes to its first seed from, else 127.0.0.1)",
        flag=True,
    ),
    Setting(
        "seeds",
        None,
        _optional(_address_list),
        "comma-separated gossip addresses to join through (retried with backoff until one answers)",
        flag=True,
        metavar="HOST:PORT,...",
    ),
    Setting(
        "gossip_secret",
        None,
        _optional(_secret),
        "key (16+ bytes) that signs every gossip message with HMAC-SHA256; unsigned, forged and "
        "replayed messages are dropped",
        flag=True,
        metavar="SECRET",
    ),
    Setting("gossip_probe_interval", 1.0, _duration(allow_zero=False), "time between two failure-detector probes"),
    Setting("gossip_probe_timeout", 0.5, _duration(allow_zero=False), "wait for a direct ack before indirect probes"),
    Setting(
        "gossip_suspicion_mult",
        4,
        _integer(1, 100, "an integer"),
        "suspicion timeout = mult x log10(N) x probe interval (shorter with confirmations)",
    ),
    Setting("gossip_indirect_checks", 3, _integer(0, 16, "an integer"), "members asked to probe for us"),
    Setting(
        "gossip_interval",
        0.2,
        _duration(allow_zero=False),
        "how often pending membership news is pushed to gossip_nodes random members",
    ),
    Setting("gossip_nodes", 3, _integer(0, 32, "an integer"), "members each gossip round pushes news to"),
    Setting(
        "gossip_push_pull_interval", 30.0, _duration(), "full state exchange with a random member (0 turns it off)"
    ),
    Setting(
        "gossip_dead_reclaim_time",
        30.0,
        _duration(allow_zero=False),
        "how long dead and departed members are remembered (so they cannot come back as ghosts)",
    ),
    Setting(
        "gossip_max_skew",
        30.0,
        _duration(allow_zero=False),
        "signed gossip: most clock difference accepted, and how long nonces are remembered",
    ),
    Setting(
        "replication_factor",
        3,
        _integer(1, 16, "an integer"),
        "copies of each shard (capped by the number of nodes)",
        flag=True,
    ),
    Setting(
        "membership",
        "swim",
        _text(),
        "cluster membership by its aegiskv.membership entry-point name (aegis plugins lists them)",
    ),
    Setting(
        "placement",
        "ring",
        _text(),
        "shard placement by its aegiskv.placement entry-point name (aegis plugins lists them)",
    ),
    Setting("virtual_nodes", 128, _integer(1, 4096, "an integer"), "points per node on the placement ring"),
    Setting(
        "placement_load_factor",
        1.25,
        _number(1.0),
        "most shard replicas (and primaries) one node may hold, as a multiple of the mean",
    ),
    # -- replication ------------------------------------------------------------
    Setting(
        "cluster_bind",
        "0.0.0.0:7702",
        _address,
        "cluster port: leases and the replication stream between nodes (authenticated by the gossip "
        "secret or auth token, TLS as the client ports)",
        flag=True,
    ),
    Setting("cluster_advertise", None, _optional(_address), "cluster address other nodes should use", flag=True),
    Setting(
        "write_quorum",
        0,
        _integer(-1, 16, "an integer"),
        "copies a write waits for before its reply: 0 = the primary applied it (asynchronous), "
        "N = N copies applied it (and logged it per each node's --wal), -1 = every current replica",
        flag=True,
    ),
    Setting(
        "read_quorum",
        0,
        _integer(0, 16, "an integer"),
        "copies a GET consults: 0 = the primary answers alone, N = N copies (the primary's included) must "
        "answer within quorum_timeout, the newest version wins and is written back",
        flag=True,
    ),
    Setting(
        "quorum_timeout",
        2.0,
        _duration(allow_zero=False),
        "longest a write waits for its quorum (a read for its read quorum); past it the reply says "
        "the outcome is unknown (the read: try again)",
    ),
    Setting(
        "lease_duration",
        2.0,
        _duration(allow_zero=False),
        "how long a shard's primary may act on a majority's grant (failover takes about this long)",
    ),
    Setting(
        "max_clock_drift",
        0.05,
        _probability,
        "the most two nodes' clocks may differ in rate, as a fraction; leases end this much early",
    ),
    Setting(
        "replication_backlog",
        64 * MIB,
        _size(64 * 1024, 2**40),
        "bytes of recent changes kept for followers that fall behind, split over the shards; "
        "one further behind is sent the whole shard again",
    ),
    Setting(
        "anti_entropy_interval",
        60.0,
        _duration(),
        "how often this node compares each shard it leads with its followers' copies (bucketed digests) and "
        "repairs what differs; 0 turns its rounds off (it still answers its primaries' rounds)",
    ),
    Setting(
        "anti_entropy_bandwidth",
        8 * MIB,
        _size(0, 2**40),
        "bytes per second anti-entropy repairs may send, all followers together; 0 = no cap",
    ),
    Setting(
        "enable_debug_command",
        False,
        _boolean,
        "serve DEBUG DIVERGE, which damages this node's own copy of keys behind replication's back: "
        "for tests of anti-entropy only, never in production",
    ),
    Setting(
        "move_bandwidth",
        32 * MIB,
        _size(0, 2**40),
        "bytes per second this node sends over all the shard copies of moves (joins, leaves, resyncs) "
        "together, so foreground requests keep their latency; 0 = unlimited",
    ),
    Setting(
        "move_concurrency",
        2,
        _integer(1, 64, "an integer"),
        "shard copies this node sends at once; the others wait their turn, first come first served",
    ),
    Setting(
        "backend",
        "auto",
        _text(),
        "storage backend by its aegiskv.backends entry-point name; auto = memory, or snapshot with --wal",
    ),
    Setting(
        "wal",
        "off",
        _choice("off", "write", "fsync"),
        "write-ahead log: off, write (survives a process crash), fsync (survives power loss)",
        flag=True,
    ),
    Setting("wal_segment_bytes", 64 * MIB, _size(4096, 2**40), "write-ahead log segment size before rotation"),
    Setting(
        "wal_salvage",
        False,
        _boolean,
        "on a corrupt log record, start from the records before it and drop the rest (else refuse to start)",
    ),
    Setting(
        "snapshot_interval",
        600.0,
        _duration(),
        "seconds between automatic snapshots with the snapshot backend (0 = only on command and shutdown)",
    ),
    Setting(
        "slru_protected_fraction",
        0.8,
        _probability,
        "share of --max-memory the SLRU protected segment starts with (it adapts to the load)",
    ),
    Setting(
        "access_sample",
        16,
        _integer(1, 1024),
        "one read or write in this many updates the LFU access counters (OBJECT FREQ, INFO hotkeys); 1 = every one",
    ),
    Setting("max_key_bytes", 65535, _size(1, 2**32 - 1), "largest key accepted"),
    Setting("max_value_bytes", 64 * MIB, _size(0, 2**31 - 1), "largest value accepted"),
    Setting("max_batch_keys", 100_000, _integer(1, 10_000_000), "most keys in one MGET or MSET"),
    Setting("expiry_interval", 0.1, _duration(allow_zero=False), "how often the active expiry sampler runs"),
    Setting("expiry_sample_size", 20, _integer(1, 10_000), "keys with a TTL sampled per expiry step"),
    Setting(
        "expiry_step_budget", 0.001, _duration(allow_zero=False), "longest time one run of the expiry sampler may take"
    ),
    # -- security and limits ----------------------------------------------------
    Setting(
        "auth_token",
        None,
        _optional(_text()),
        "token clients must AUTH with (default: no auth)",
        flag=True,
        metavar="TOKEN",
    ),
    Setting(
        "tls_cert",
        None,
        _optional(_text()),
        "PEM certificate: turns on TLS for the client ports",
        flag=True,
        metavar="FILE",
    ),
    Setting("tls_key", None, _optional(_text()), "PEM private key of --tls-cert", flag=True, metavar="FILE"),
    Setting(
        "tls_ca",
        None,
        _optional(_text()),
        "PEM CA file: clients must present a certificate it signed (mutual TLS)",
        flag=True,
        metavar="FILE",
    ),
    Setting("tls_handshake_timeout", 10.0, _duration(allow_zero=False), "longest a TLS handshake may take"),
    Setting("health_tls", False, _boolean, "serve /health, /ready and /metrics over HTTPS with --tls-cert"),
    Setting(
        "max_auth_failures",
        3,
        _integer(1, 1000),
        "wrong AUTH attempts before a connection that has not authenticated is closed",
    ),
    Setting(
        "unauthenticated_max_frame",
        4096,
        _size(64, MIB),
        "largest request accepted before a connection has authenticated",
    ),
    Setting(
        "rate_limit",
        0.0,
        _number(0.0, "requests per second"),
        "per-connection requests per second (0 = unlimited)",
        flag=True,
        live=True,
    ),
    Setting("rate_burst", 10, _integer(1, 10_000_000), "per-connection burst above --rate-limit", flag=True, live=True),
    Setting("resp_max_multibulk", 1024 * 1024, _integer(1, 2**31 - 1), "most arguments in one RESP request"),
    Setting("max_connections", 10_000, _integer(1, 1_000_000), "client connections accepted at once"),
    Setting("idle_timeout", 300.0, _duration(), "close client connections idle this long (0 = never)"),
    Setting(
        "output_high_water",
        4 * MIB,
        _size(4096, 2**31 - 1),
        "stop reading a connection while this many reply bytes wait to be sent",
    ),
    Setting(
        "output_limit",
        0,
        _size(0, 2**62),
        "disconnect a client whose unsent replies pass this many bytes "
        "(0 = max_value_bytes + output_high_water + 1 MiB)",
    ),
    Setting(
        "max_client_memory",
        0,
        _size(0, 2**62),
        "disconnect the largest clients while the query and output buffers of all clients pass this "
        "many bytes (0 = a quarter of max_memory, at least the default output_limit)",
        flag=True,
    ),
    Setting(
        "max_unauthenticated_memory",
        16 * MIB,
        _size(64 * 1024, 2**62),
        "close the oldest unauthenticated connections while the bytes held for them, on every port, pass this many",
    ),
    Setting(
        "send_timeout",
        60.0,
        _duration(),
        "disconnect a client that takes none of its waiting replies for this long (0 = never)",
    ),
    Setting(
        "request_timeout",
        30.0,
        _duration(),
        "disconnect a client whose request stays incomplete this long, e.g. slow-loris (0 = never)",
    ),
    # -- server internals -------------------------------------------------------
    Setting(
        "memory_trim_interval",
        10.0,
        _duration(),
        "how often freed heap memory is handed back to the OS with malloc_trim (0 = never)",
    ),
    Setting("worker_threads", 4, _integer(1, 256), "threads in the worker pool for work that may block"),
    Setting(
        "inline_batch_limit",
        256,
        _integer(1, 10_000_000),
        "MGET/MSET with more keys than this run in the worker pool instead of the reactor",
    ),
    # -- operations ---------------------------------------------------------------
    Setting(
        "health_addr",
        None,
        _optional(_address),
        "HTTP address for /health, /ready and /metrics (default: off)",
        flag=True,
    ),
    Setting("log_level", "info", _choice("debug", "info", "warn", "error"), "log level", flag=True, live=True),
    Setting("log_format", "text", _choice("text", "json"), "log lines as text, or one JSON object per line"),
    Setting(
        "slowlog_log_slower_than",
        10_000,
        _integer(-1, 2**62 // 1000, "microseconds as an integer"),
        "requests slower than this many microseconds go to SLOWLOG (-1 = off, 0 = every request)",
        live=True,
    ),
    Setting("slowlog_max_len", 128, _integer(0, 10_000_000), "entries SLOWLOG keeps (the newest)", live=True),
    Setting(
        "latency_monitor_threshold",
        0,
        _integer(0, 2**62 // 1_000_000, "milliseconds as an integer"),
        "requests at least this many milliseconds slow are LATENCY samples (0 = off)",
        live=True,
    ),
    Setting("drain_timeout", 30.0, _duration(), "longest graceful shutdown on SIGTERM", flag=True),
    Setting("pid_file", None, _optional(_text()), "write the PID here and remove it on exit", flag=True),
)

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one node. Durations are seconds, sizes bytes."""

    node_id: str
    bind: str
    resp_bind: str | None
    client_advertise: str | None
    resp_advertise: str | None
    resp_replica_bind: str | None
    resp_replica_advertise: str | None
    data_dir: str
    max_memory: int
    shards: int
    gossip: str | None
    gossip_advertise: str | None
    seeds: tuple[str, ...] | None
    gossip_secret: str | None
    gossip_probe_interval: float
    gossip_probe_timeout: float
    gossip_suspicion_mult: int
    gossip_indirect_checks: int
    gossip_interval: float
    gossip_nodes: int
    gossip_push_pull_interval: float
    gossip_dead_reclaim_time: float
    gossip_max_skew: float
    replication_factor: int
    membership: str
    placement: str
    virtual_nodes: int
    placement_load_factor: float
    cluster_bind: str
    cluster_advertise: str | None
    write_quorum: int
    read_quorum: int
    quorum_timeout: float
    lease_duration: float
    max_clock_drift: float
    replication_backlog: int
    anti_entropy_interval: float
    anti_entropy_bandwidth: int
    enable_debug_command: bool
    move_bandwidth: int
    move_concurrency: int
    backend: str
    wal: str
    wal_segment_bytes: int
    wal_salvage: bool
    snapshot_interval: float
    slru_protected_fraction: float
    access_sample: int
    max_key_bytes: int
    max_value_bytes: int
    max_batch_keys: int
    expiry_interval: float
    expiry_sample_size: int
    expiry_step_budget: float
    auth_token: str | None
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None
    tls_handshake_timeout: float
    health_tls: bool
    max_auth_failures: int
    unauthenticated_max_frame: int
    rate_limit: float
    rate_burst: int
    resp_max_multibulk: int
    max_connections: int
    idle_timeout: float
    output_high_water: int
    output_limit: int
    max_client_memory: int
    max_unauthenticated_memory: int
    send_timeout: float
    request_timeout: float
    memory_trim_interval: float
    worker_threads: int
    inline_batch_limit: int
    health_addr: str | None
    log_level: str
    log_format: str
    slowlog_log_slower_than: int
    slowlog_max_len: int
    latency_monitor_threshold: int
    drain_timeout: float
    pid_file: str | None
    # Where each value came from ("default", "file x.toml", "environment", "flag"),
    # for `aegis` start-up logs and error messages.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def max_memory_bytes(self) -> int:
        return self.max_memory * MIB

    @property
    def bind_address(self) -> tuple[str, int]:
        return parse_address(self.bind)

    @property
    def health_address(self) -> tuple[str, int] | None:
        return parse_address(self.health_addr) if self.health_addr else None

    @property
    def max_bulk_bytes(self) -> int:
        """The longest string a request may carry: a key or a value."""
        return max(self.max_value_bytes, self.max_key_bytes)

    @property
    def max_bulk_setting(self) -> str:
        """The setting :attr:`max_bulk_bytes` comes from, for the error that names it."""
        return "max_value_bytes" if self.max_value_bytes >= self.max_key_bytes else "max_key_bytes"

    @property
    def effective_output_limit(self) -> int:
        return self.output_limit or self.max_value_bytes + self.output_high_water + MIB

    @property
    def effective_client_memory(self) -> int:
        """The client buffer budget: ``max_client_memory``, or by default a quarter of ``max_memory``.

        Never below one client's worth (the largest value in, plus the replies a
        client may leave unread: the default ``output_limit``), so a lone client
        doing what the limits allow is never the one disconnected. A quarter:
        the node's RSS stays within max_memory plus this plus its idle size, and
        clients are not allowed to cost more than a fraction of the data.
        """
        if self.max_client_memory:
            return self.max_client_memory
        return max(self.max_memory_bytes // 4, self.max_value_bytes + self.output_high_water + MIB)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


class SettingValueError(ValueError):
    """A value one setting does not accept; ``str(error)`` says what was expected."""


def parse_value(setting: Setting, raw: Any) -> Any:
    """``raw`` (a string or a TOML value) as ``setting``'s typed value; raises SettingValueError."""
    try:
        return setting.parse(raw)
    except _Invalid as invalid:
        raise SettingValueError(f"expected {invalid}") from None


def defaults() -> dict[str, Any]:
    """Built-in default of every setting, keyed by name."""
    return {setting.name: setting.default for setting in SETTINGS}


# Settings whose values never appear in an error (errors reach the log, e.g. on a SIGHUP reload).
_SECRET_SETTINGS: Final = frozenset({"auth_token", "gossip_secret"})


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    try:
        return setting.parse(raw)
    except _Invalid as invalid:
        shown = "<hidden>" if is_secret(setting.name) else repr(raw)
        raise ConfigError(f"{source}: {setting.name} = {shown}: expected {invalid}") from None


def load_file(path: str) -> dict[str, Any]:
    """Parse a TOML file into validated values (only the keys it sets)."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: cannot read: no such file") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not valid TOML: not UTF-8 at byte {error.start}") from None
    except ValueError:
        # tomllib's int() of an integer with thousands of digits (Python's
        # conversion limit), which it does not turn into a TOMLDecodeError.
        raise ConfigError(f"config file {path}: not valid TOML: an integer too long to convert") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: not valid TOML: arrays or tables nested too deeply") from None
    values: dict[str, Any] = {}
    for key, raw in document.items():
        setting = SETTINGS_BY_NAME.get(key)
        if setting is None:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}: expected one of the settings in conf/aegiskv.toml"
            )
        values[key] = _parse(setting, raw, f"config file {path}")
    return values


def load_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Validated values from ``AEGIS_<NAME>`` variables; unknown ``AEGIS_*`` names are errors."""
    values: dict[str, Any] = {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable in ENV_NOT_SETTINGS:
            continue
        setting = SETTINGS_BY_NAME.get(variable[len(ENV_PREFIX) :].lower())
        if setting is None:
            shown = variable if variable.isprintable() else repr(variable)  # the message stays one line
            raise ConfigError(f"environment variable {shown}: unknown setting: expected an AEGIS_<SETTING> name")
        values[setting.name] = _parse(setting, raw, f"environment variable {variable}")
    return values


def build(
    file_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge defaults < file < environment < flags into a validated :class:`Settings`.

    ``flags`` holds only the flags the user actually gave (raw strings, keyed by
    setting name). ``file_path`` falls back to ``AEGIS_CONFIG`` in ``environ``.
    """
    environ = os.environ if environ is None else environ
    merged = defaults()
    sources = {name: "default" for name in merged}
    if file_path is None:
        file_path = environ.get("AEGIS_CONFIG") or None  # an empty variable means no file
    elif not file_path.strip():
        raise ConfigError("flag --config: config = '': expected the path of a TOML file")
    layers: list[tuple[str, dict[str, Any]]] = []
    if file_path:
        layers.append((f"file {file_path}", load_file(file_path)))
    layers.append(("environment", load_environment(environ)))
    flag_values = {}
    for name, raw in (flags or {}).items():
        setting = SETTINGS_BY_NAME[name]
        flag_values[name] = _parse(setting, raw, f"flag {setting.flag_name}")
    layers.append(("flag", flag_values))
    for source, values in layers:
        for name, value in values.items():
            merged[name] = value
            sources[name] = source
    if merged["node_id"] is None:
        merged["node_id"] = socket.gethostname() or "aegis"
    _check_together(merged, sources)
    return Settings(**merged, sources=sources)


def _check_together(merged: dict[str, Any], sources: dict[str, str]) -> None:
    """Settings valid one by one that contradict each other: refused at start, not met at the first write."""
    copies = merged["replication_factor"]
    quorum = merged["write_quorum"]
    if quorum > copies:
        raise ConfigError(
            f"{sources['write_quorum']}: write_quorum = {quorum}: only replication_factor = {copies} copies "
            f"exist; expected -1 (every replica), 0 (the primary alone) or 1 to {copies}"
        )
    if merged["seeds"] and not merged["gossip"]:
        # Seeds are gossip addresses: without gossip the node would never contact them.
        raise ConfigError(
            f"{sources['seeds']}: seeds = {','.join(merged['seeds'])}: gossip is off ({sources['gossip']}), "
            "so no seed would ever be contacted; drop the seeds or give --gossip an address"
        )
    if merged["resp_replica_bind"] and not (merged["gossip"] and merged["resp_bind"]):
        # The endpoint answers from the copies a cluster member follows and redirects the rest to
        # the main RESP port: with either off it would have nothing to serve or nowhere to send.
        off = "gossip" if not merged["gossip"] else "resp_bind"
        raise ConfigError(
            f"{sources['resp_replica_bind']}: resp_replica_bind = {merged['resp_replica_bind']}: {off} is off "
            f"({sources[off]}); the replica endpoint needs a cluster (gossip) and the RESP port"
        )
    reads = merged["read_quorum"]
    if reads > copies:
        raise ConfigError(
            f"{sources['read_quorum']}: read_quorum = {reads}: only replication_factor = {copies} copies "
            f"exist; expected 0 (the primary alone) or 1 to {copies}"
        )


def add_flags(parser: Any) -> None:
    """Add every flag setting to an ``argparse`` parser; absent flags stay absent."""
    import argparse

    for setting in SETTINGS:
        if setting.flag:
            parser.add_argument(
                setting.flag_name,
                dest=setting.name,
                default=argparse.SUPPRESS,
                metavar=setting.metavar or setting.name.upper(),
                help=flag_help(setting),
            )


def flag_help(setting: Setting) -> str:
    """The flag's --help text: its help and its default, said once."""
    if "(default" in setting.help:  # the help already explains the default in words
        return setting.help
    return f"{setting.help} (default: {describe_default(setting)})"


def describe_default(setting: Setting) -> str:
    """The default as the docs write it: ``30s`` for a duration, ``0`` rather than ``0.0``."""
    if setting.documented_default is not None:
        return setting.documented_default
    return show_value(setting, setting.default)


def show_value(setting: Setting, value: Any) -> str:
    """A setting's value as the docs and flags write it (``30s``, ``0``, ``a:1,b:2``); secrets hidden."""
    if value is None:
        return "off" if setting.parse is _address_or_off else "unset"
    if is_secret(setting.name):
        return "<hidden>"
    if setting.parse in _DURATION_PARSERS:
        return _show_seconds(float(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def is_secret(name: str) -> bool:
    """Settings whose values never reach a log line or an error: tokens, secrets, passwords."""
    return name in _SECRET_SETTINGS or any(word in name for word in ("token", "secret", "password"))


def _show_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def flag_settings() -> Sequence[Setting]:
    return [setting for setting in SETTINGS if setting.flag]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def documented_config() -> str:
    """The text of ``conf/aegiskv.toml``: every setting, its help, and its default.

    Settings without a literal default (unset, or computed like the host name)
    appear commented out. ``tests/test_config.py`` keeps the file equal to this.
    """
    lines = [
        "# AegisKV node configuration: every setting with its built-in default.",
        "# Precedence: defaults < this file (--config) < AEGIS_<NAME> environment variables < flags.",
        '# Durations are seconds or strings such as "500ms", "30s", "5m"; sizes are bytes or "64KiB", "64MiB".',
        "# Generated from aegiskv/server/settings.py by documented_config(); tests/test_config.py keeps them equal.",
        "",
    ]
    for setting in SETTINGS:
        flag = f" (flag {setting.flag_name})" if setting.flag else ""
        live = "; changes at run time (CONFIG SET, SIGHUP)" if setting.live else ""
        lines.append(f"# {setting.help}{flag}{live}")
        if setting.default is None or setting.documented_default is not None:
            lines.append(f"# {setting.name} = <{describe_default(setting)}>")
        else:
            lines.append(f"{setting.name} = {_toml_value(setting.default)}")
        lines.append("")
    return "\n".join(lines)
