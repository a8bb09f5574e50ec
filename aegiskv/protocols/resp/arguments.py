"""Arguments and replies shared by the RESP handlers: Redis's parsing rules and error texts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.session import Session

Args = list[bytes]
RespHandler = Callable[[HandlerContext, Session, Args], bytes]

NOT_INTEGER: Final = "value is not an integer or out of range"
SYNTAX: Final = "syntax error"
MS_LIMIT: Final = 2**63 - 1  # the largest time in milliseconds Redis accepts


def invalid(message: str) -> CommandError:
    return CommandError(ErrorKind.INVALID, message)


def integer(text: bytes) -> int:
    """A Redis integer argument (a 64-bit signed integer, nothing around it)."""
    value = parse_integer(text)
    if value is None:
        raise invalid(NOT_INTEGER)
    return value


def nullable(value: bytes | memoryview | None, session: Session) -> bytes:
    """A bulk string, or the null of the session's protocol."""
    if value is None:
        return resp.NULL3 if session.protocol == 3 else resp.NULL_BULK
    return b"$%d\r\n" % len(value) + value + b"\r\n"


def expire_milliseconds(amount: int, unit_ms: int, command: str, now_ms: int = 0) -> int:
    """TTL argument -> milliseconds, refusing what Redis refuses: <= 0, or overflow of
    the milliseconds (or, for a relative TTL, of ``now_ms`` plus them)."""
    if amount <= 0 or amount > MS_LIMIT // unit_ms or amount * unit_ms > MS_LIMIT - now_ms:
        raise invalid(f"invalid expire time in '{command}' command")
    return amount * unit_ms
