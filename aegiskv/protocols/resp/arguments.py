"""Arguments and replies shared by the RESP handlers: Redis's parsing rules and error texts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import SUBCOMMANDS, Subcommand
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


# Each container's subcommands by name (b"get" for CONFIG): what subcommand() checks against.
_SUBCOMMANDS: Final[dict[str, dict[bytes, Subcommand]]] = {
    container: {row.name.split("|", 1)[1].encode(): row for row in rows} for container, rows in SUBCOMMANDS.items()
}


def subcommand(container: str, args: Args, session: Session) -> bytes:
    """The subcommand ``args`` names (lower case), checked as Redis checks it before running it.

    The session's last command becomes the subcommand (``client|list``), as CLIENT LIST shows it.

    Raises Redis's errors: an unknown subcommand (``Try CONFIG HELP.``), or a
    wrong number of arguments for ``config|get``, from the rows in
    aegiskv.node.commands.SUBCOMMANDS.
    """
    name = args[1].lower()
    row = _SUBCOMMANDS[container].get(name)
    if row is None:
        shown = args[1].decode("utf-8", "replace")
        raise invalid(f"unknown subcommand '{shown}'. Try {container.upper()} HELP.")
    if (row.arity >= 0 and len(args) != row.arity) or len(args) < -row.arity:
        raise invalid(f"wrong number of arguments for '{row.name}' command")
    session.last_command = row.name
    return name


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
