"""Settings that change on a running node: CONFIG SET, and SIGHUP reloading the TOML file.

The settings table (aegiskv.server.settings) marks the settings a node can change
while it serves (``live``): the memory bound, the per-connection rate limit and
burst, the log level, the slow log's and the latency monitor's thresholds. Every
other setting is read once at start-up; CONFIG SET refuses it with Redis's "can't
set immutable config", and a reload that finds it changed logs that it takes
effect at the next restart.

CONFIG SET takes Redis's names where Redis has the setting (``maxmemory`` in
Redis's memory syntax, ``loglevel`` in Redis's levels) and every setting by its
own name, with dashes or underscores (``max-memory 512``, ``rate_limit 100``)
in the syntax of the TOML file and the flags. A CONFIG SET of several settings
is checked whole before any is applied, as Redis does.

Applying is cheap for all but a lowered memory bound: that evicts, which could
hold the reactor (and every client) for as long as evicting gigabytes takes.
The bound instead comes down in steps of :data:`EVICTION_STEP_BYTES` below what
is used, one step per reactor turn, each evicting at most that much, so clients
are served between steps; writes meanwhile evict what they add.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

from loguru import logger

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.net.reactor import Reactor
from aegiskv.node.operations import Node
from aegiskv.server.logs import setup_logging
from aegiskv.server.settings import (
    MIB,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Setting,
    Settings,
    SettingValueError,
    build,
    parse_value,
)
from aegiskv.server.slow_requests import SlowRequests

# Evicted per reactor turn while a lowered memory bound comes down (see the module docstring):
# about a millisecond of evictions of small entries, measured on the reference machine.
EVICTION_STEP_BYTES: Final = 256 * 1024

LIVE_SETTINGS: Final = tuple(setting.name for setting in SETTINGS if setting.live)

# Redis's loglevel words and AegisKV's levels, both ways (Redis has no "error": CONFIG GET shows
# "warning" for it, the nearest level Redis has).
_REDIS_LOG_LEVELS: Final = {"debug": "debug", "verbose": "debug", "notice": "info", "warning": "warn"}
REDIS_LOG_LEVEL_OF: Final = {"debug": "debug", "info": "notice", "warn": "warning", "error": "warning"}

# Redis's memory units: k and m are powers of ten, kb and mb of two (as redis.conf says).
_REDIS_MEMORY_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_REDIS_MEMORY: Final = re.compile(r"^([0-9]+)([a-z]*)$")


def _redis_memory_megabytes(raw: str) -> int:
    """Redis's maxmemory value as max_memory's megabytes: a whole number of MiB, at least one.

    Redis's 0 ("no limit") has no counterpart: every node has a memory bound.
    """
    match = _REDIS_MEMORY.match(raw.strip().lower())
    if match is None or match.group(2) not in _REDIS_MEMORY_UNITS:
        raise SettingValueError("argument must be a memory value")
    size = int(match.group(1)) * _REDIS_MEMORY_UNITS[match.group(2)]
    if size < MIB or size % MIB:
        raise SettingValueError("argument must be a whole number of megabytes (1mb or more): max_memory counts MB")
    megabytes: int = parse_value(SETTINGS_BY_NAME["max_memory"], size // MIB)
    return megabytes


def _redis_log_level(raw: str) -> str:
    level = _REDIS_LOG_LEVELS.get(raw.strip().lower())
    if level is None:
        raise SettingValueError("argument(s) must be one of the following: debug, verbose, notice, warning")
    return level


# Redis's names for AegisKV settings that CONFIG SET changes, with Redis's syntax.
_REDIS_NAMES: Final = {
    "maxmemory": ("max_memory", _redis_memory_megabytes),
    "loglevel": ("log_level", _redis_log_level),
}
# Redis settings CONFIG GET shows that describe fixed facts of a node (aegiskv.protocols.resp.server).
_REDIS_FIXED: Final = frozenset(
    {"maxmemory-policy", "maxclients", "timeout", "databases", "save", "appendonly", "appendfsync", "port", "bind"}
    | {"proto-max-bulk-len", "cluster-enabled"}
)


def _failed(name: str, reason: str) -> CommandError:
    return CommandError(ErrorKind.INVALID, f"CONFIG SET failed (possibly related to argument '{name}') - {reason}")


def parse_config_set(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """CONFIG SET's name/value pairs as setting -> typed value; raises CommandError with Redis's texts."""
    changes: dict[str, Any] = {}
    for name, raw in pairs:
        shown = name
        name = name.lower()
        if name in _REDIS_NAMES:
            setting_name, parse = _REDIS_NAMES[name]
        else:
            setting = SETTINGS_BY_NAME.get(name.replace("-", "_"))
            if setting is None and name not in _REDIS_FIXED:
                raise CommandError(
                    ErrorKind.INVALID, f"Unknown option or number of arguments for CONFIG SET - '{shown}'"
                )
            if setting is None or not setting.live:
                raise _failed(shown, "can't set immutable config")
            setting_name, parse = setting.name, _own_syntax(setting)
        if setting_name in changes:
            raise _failed(shown, "duplicate parameter")
        try:
            changes[setting_name] = parse(raw)
        except SettingValueError as error:
            raise _failed(shown, str(error)) from None
    return changes


def _own_syntax(setting: Setting) -> Any:
    return lambda raw: parse_value(setting, raw)


class LiveTarget(Protocol):
    """What applying settings changes (aegiskv.server.wiring.Server)."""

    settings: Settings
    node: Node
    reactor: Reactor
    rate_limit: float
    rate_burst: int

    @property
    def slow_requests(self) -> SlowRequests: ...

    def refresh_rate_limits(self) -> None:
        """Give every open client connection the current rate limit (reactor thread)."""
        ...


class LiveSettings:
    """Applies live settings to one server. ``configure`` from any thread; the rest on the reactor."""

    def __init__(self, server: LiveTarget, file_path: str | None = None, flags: Mapping[str, Any] | None = None):
        self._server = server
        # What the node was started from: a reload rebuilds the settings from the same file,
        # environment and flags, so a flag still overrides the file as it did at start-up.
        self._file_path = file_path
        self._flags = dict(flags or {})
        self._lock = threading.Lock()  # two CONFIG SETs (one in the pool) must not interleave
        self._memory_target = server.settings.max_memory_bytes
        self._descending = False

    # -- CONFIG SET ------------------------------------------------------------------

    def configure(self, pairs: list[tuple[str, str]]) -> None:
        """CONFIG SET: check every pair, then apply them all; raises CommandError (nothing applied)."""
        changes = parse_config_set(pairs)
        if (
            "max_memory" in changes
            and self._server.node.lower_memory_limit(self._server.node.backend.memory_bounds()[1], 0) is None
        ):
            raise _failed("maxmemory", f"the {self._server.settings.backend} backend cannot change its memory bound")
        with self._lock:
            self._apply(self._server.settings.replace(**changes))

    # -- SIGHUP ----------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP (reactor thread): read the configuration again and apply its live settings.

        A file that does not load (bad TOML, a bad value) changes nothing: one log line says
        why. A changed setting that is not live is named (never its value: it may be a secret)
        as taking effect at the next restart.
        """
        path = self._file_path or os.environ.get("AEGIS_CONFIG") or None
        if path is None:
            logger.warning("SIGHUP: the node was started without a configuration file; nothing to reload")
            return
        try:
            loaded = build(file_path=path, environ=os.environ, flags=self._flags)
        except ConfigError as error:
            logger.error("SIGHUP: configuration not reloaded, the running settings are kept: {}", error)
            return
        with self._lock:
            running = self._server.settings
            fixed = [
                setting.name
                for setting in SETTINGS
                if not setting.live and getattr(loaded, setting.name) != getattr(running, setting.name)
            ]
            for name in fixed:
                logger.warning("SIGHUP: {} changed in {}; it takes effect at the next restart", name, path)
            live = {name: getattr(loaded, name) for name in LIVE_SETTINGS}
            changed = self._apply(running.replace(**live))
        logger.info(
            "SIGHUP: reloaded {}; {}",
            path,
            ", ".join(f"{name} = {value}" for name, value in changed.items()) or "no live setting changed",
        )

    # -- applying ----------------------------------------------------------------------

    def _apply(self, new: Settings) -> dict[str, Any]:
        """Make ``new`` the running settings; returns the live settings that changed. Caller holds the lock."""
        server = self._server
        old = server.settings
        changed = {name: getattr(new, name) for name in LIVE_SETTINGS if getattr(new, name) != getattr(old, name)}
        server.settings = new.replace(sources=old.sources)
        if "log_level" in changed:
            setup_logging(new.log_level, new.log_format)
        if "rate_limit" in changed or "rate_burst" in changed:
            server.rate_limit, server.rate_burst = new.rate_limit, new.rate_burst
            server.reactor.call_soon(server.refresh_rate_limits)
        if changed.keys() & {"slowlog_log_slower_than", "slowlog_max_len", "latency_monitor_threshold"}:
            server.slow_requests.configure(new)
        if "max_memory" in changed:
            self._memory_target = new.max_memory_bytes
            server.reactor.call_soon(self._start_memory_descent)
        return changed

    def _start_memory_descent(self) -> None:
        if not self._descending:
            self._descending = True
            self._memory_step()

    def _memory_step(self) -> None:
        """One step of the memory bound toward its target (reactor thread); the next in the next turn."""
        done = self._server.node.lower_memory_limit(self._memory_target, EVICTION_STEP_BYTES)
        if done is False:
            self._server.reactor.call_later(0, self._memory_step)
            return
        self._descending = False
