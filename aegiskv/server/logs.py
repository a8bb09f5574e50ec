"""The node's log sink (set up at start-up, and again when CONFIG SET or SIGHUP changes the
level) and the start-up line that says how this node is configured."""

from __future__ import annotations

import sys

from loguru import logger

from aegiskv.server.settings import SETTINGS, Settings, show_value

_LOGURU_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "error": "ERROR"}


def setup_logging(level: str, log_format: str) -> None:
    """One stderr sink, text or JSON.

    ``diagnose=False`` on every sink: loguru's default prints the value of every
    local variable in a traceback's frames, which puts the settings (the auth
    token, the gossip secret), request keys and values and sealed gossip bytes
    into the log. ``backtrace=False``: a traceback starts where the exception was
    caught, as Python prints it, not at the thread's first frame. Tracebacks are
    for unexpected exceptions only; expected errors log one line.
    """
    logger.remove()
    if log_format == "json":
        logger.add(sys.stderr, level=_LOGURU_LEVELS[level], serialize=True, diagnose=False, backtrace=False)
    else:
        logger.add(
            sys.stderr,
            level=_LOGURU_LEVELS[level],
            format="{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <7} {name}: {message}",
            diagnose=False,
            backtrace=False,
        )


def settings_line(config: Settings) -> str:
    """Every setting that differs from its default, with where it came from; secrets hidden.

    One line, logged at start-up: an operator reading a node's log (or a support ticket) sees
    the configuration the node really ran with, whatever mix of file, environment and flags
    produced it, without the token or the gossip secret.
    """
    parts = []
    for setting in SETTINGS:
        source = config.sources.get(setting.name, "default")
        value = getattr(config, setting.name)
        if source == "default" or value == setting.default:
            continue
        parts.append(f"{setting.name}={show_value(setting, value)} ({source})")
    return "settings: " + (", ".join(parts) if parts else "all defaults")
