"""RESP commands about one value as an object: OBJECT, DUMP, RESTORE (Redis 7.0's syntax and errors).

Every AegisKV value is a string, so OBJECT ENCODING answers what Redis would
pick for a string of that text; DUMP and RESTORE carry Redis's payload format
(aegiskv.node.dump_payload), so a payload moves between AegisKV and Redis.
"""

from __future__ import annotations

from typing import Final

from aegiskv.backends.base import NO_EXPIRY
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import MS_LIMIT, SYNTAX, Args, integer, invalid
from aegiskv.protocols.session import Session

# Redis keeps a string of up to 44 bytes in the object's own allocation (embstr).
_EMBSTR_LIMIT: Final = 44

_OBJECT_HELP: Final = (
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
)
_KEYED_SUBCOMMANDS: Final = (b"ENCODING", b"FREQ", b"IDLETIME", b"REFCOUNT")


def string_encoding(value: bytes) -> bytes:
    """The encoding Redis gives a string stored by SET: int, embstr or raw.

    Redis's choice also depends on how the value was made (APPEND and SETRANGE
    leave "raw"); AegisKV keeps no such history and answers from the text.
    """
    if len(value) <= 20 and parse_integer(value) is not None:
        return b"int"
    return b"embstr" if len(value) <= _EMBSTR_LIMIT else b"raw"


def cmd_object(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = args[1].upper()
    if sub == b"HELP":
        if len(args) != 2:
            raise invalid("wrong number of arguments for 'object|help' command")
        return resp.array([resp.simple(line) for line in _OBJECT_HELP])
    if sub not in _KEYED_SUBCOMMANDS:
        raise invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try OBJECT HELP.")
    if len(args) != 3:
        raise invalid(f"wrong number of arguments for 'object|{sub.lower().decode()}' command")
    node = session.node
    # Redis answers only one of FREQ (LFU policies) and IDLETIME (the others); AegisKV
    # keeps both figures for every key (aegiskv.backends.access), so it answers both.
    if sub == b"IDLETIME":
        idle = node.idle_seconds(args[2])
        return resp.null(session.protocol) if idle is None else resp.integer(idle)
    if sub == b"FREQ":
        frequency = node.read_frequency(args[2])
        return resp.null(session.protocol) if frequency is None else resp.integer(frequency)
    entry = node.peek(args[2])
    if entry is None:
        return resp.null(session.protocol)
    if sub == b"REFCOUNT":
        return resp.ONE  # nothing shares a value here
    return resp.bulk(string_encoding(bytes(entry.value)))


def cmd_dump(server: HandlerContext, session: Session, args: Args) -> bytes:
    payload = session.node.dump(args[1])
    return resp.null(session.protocol) if payload is None else resp.bulk(payload)


def cmd_restore(server: HandlerContext, session: Session, args: Args) -> bytes:
    """RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f], checked in Redis's order.

    IDLETIME and FREQ are validated as Redis validates them and then not
    applied: the access counters belong to a slot of the key's hash that other
    keys may share (aegiskv.backends.access), so the restored key starts as any
    new key does (count 5, accessed now).
    """
    replace = absolute = False
    idle_given = frequency_given = False
    index = 4
    while index < len(args):
        option = args[index].upper()
        has_value = index + 1 < len(args)
        if option == b"REPLACE":
            replace = True
        elif option == b"ABSTTL":
            absolute = True
        elif option == b"IDLETIME" and has_value and not frequency_given:
            if integer(args[index + 1]) < 0:
                raise invalid("Invalid IDLETIME value, must be >= 0")
            idle_given = True
            index += 1
        elif option == b"FREQ" and has_value and not idle_given:
            if not 0 <= integer(args[index + 1]) <= 255:
                raise invalid("Invalid FREQ value, must be >= 0 and <= 255")
            frequency_given = True
            index += 1
        else:
            raise invalid(SYNTAX)
        index += 1
    node = session.node
    if not replace and node.exists([args[1]]):
        raise CommandError(ErrorKind.BUSYKEY, "Target key name already exists.")
    ttl = integer(args[2])
    if ttl < 0:
        raise invalid("Invalid TTL value, must be >= 0")
    # 0: no TTL; otherwise milliseconds from now, or with ABSTTL a Unix time in milliseconds.
    deadline = NO_EXPIRY if ttl == 0 else ttl if absolute else node.now_ms() + ttl
    if deadline != NO_EXPIRY and deadline > MS_LIMIT:
        # Redis adds "now" in a signed 64-bit integer: the sum wraps negative, a deadline long
        # past, so the key is not stored (and REPLACE still deletes the old one). As Redis.
        deadline = 1
    node.restore(args[1], args[3], deadline, replace)
    return resp.OK
