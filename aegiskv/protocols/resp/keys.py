"""RESP keyspace commands: DEL, EXISTS, TYPE, TTL, EXPIRE and its variants, PERSIST, SCAN, DBSIZE, FLUSH,
KEYS, RENAME, RENAMENX, COPY, RANDOMKEY, TOUCH, EXPIRETIME, PEXPIRETIME."""

from __future__ import annotations

import random

from aegiskv.node.operations import ExpireCondition, parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import MS_LIMIT, SYNTAX, Args, RespHandler, integer, invalid
from aegiskv.protocols.session import Session, WaitRequest


def cmd_del(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 2:
        return resp.ONE if session.node.delete(args[1]) else resp.ZERO
    return resp.integer(session.node.delete_many(args[1:]))


def cmd_exists(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.exists(args[1:]))


def cmd_type(server: HandlerContext, session: Session, args: Args) -> bytes:
    return b"+string\r\n" if session.node.peek(args[1]) is not None else b"+none\r\n"


def ttl_handler(unit_ms: int) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        remaining = session.node.remaining_ttl_ms(args[1])
        if remaining < 0 or unit_ms == 1:
            return resp.integer(remaining)
        return resp.integer((remaining + 500) // 1000)  # Redis rounds TTL to the nearest second

    return handler


_EXPIRE_CONDITIONS = {
    b"NX": ExpireCondition.NX,
    b"XX": ExpireCondition.XX,
    b"GT": ExpireCondition.GT,
    b"LT": ExpireCondition.LT,
}


def _expire_condition(options: Args) -> ExpireCondition:
    chosen: set[bytes] = set()
    for option in options:
        upper = option.upper()
        if upper not in _EXPIRE_CONDITIONS:
            raise invalid(f"Unsupported option {option.decode('utf-8', 'replace')}")
        chosen.add(upper)
    if b"NX" in chosen and len(chosen) > 1:
        raise invalid("NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in chosen and b"LT" in chosen:
        raise invalid("GT and LT options at the same time are not compatible")
    if not chosen:
        return ExpireCondition.ALWAYS
    # XX combines with GT/LT: "XX GT" means "has a TTL and the new one is later" == GT alone
    # (no TTL counts as infinitely late); "XX LT" is not LT alone, which sets a TTL on a key
    # without one.
    if b"XX" in chosen and b"LT" in chosen:
        return ExpireCondition.XX_LT
    for name in (b"NX", b"GT", b"LT", b"XX"):
        if name in chosen:
            return _EXPIRE_CONDITIONS[name]
    return ExpireCondition.ALWAYS  # pragma: no cover - unreachable


def expire_handler(command: str, unit_ms: int, absolute: bool) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        condition = _expire_condition(args[3:])  # Redis checks the options first
        amount = integer(args[2])
        # Redis's overflow checks: the unit conversion, then adding the base time.
        # A negative amount of milliseconds is never refused (the key just expires).
        if unit_ms != 1 and (amount > MS_LIMIT // unit_ms or amount < -(MS_LIMIT // unit_ms)):
            raise invalid(f"invalid expire time in '{command}' command")
        milliseconds = amount * unit_ms
        node = session.node
        if absolute:
            deadline = milliseconds
        else:
            now = node.now_ms()
            if milliseconds > MS_LIMIT - now:
                raise invalid(f"invalid expire time in '{command}' command")
            deadline = now + milliseconds
        return resp.ONE if node.expire_at(args[1], deadline, condition) else resp.ZERO

    return handler


def cmd_persist(server: HandlerContext, session: Session, args: Args) -> bytes:
    _exists, had_ttl = session.node.persist(args[1])
    return resp.ONE if had_ttl else resp.ZERO


def cmd_dbsize(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.key_count())


def cmd_flush(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise invalid(SYNTAX)
    session.node.flush()
    return resp.OK


def _scan_cursor(text: bytes) -> int:
    """Redis reads the cursor with strtoul(): an optional sign, digits, nothing after them.

    So "" and "+0" are cursor 0, and "-1" wraps around to 2**64 - 1 (a cursor
    AegisKV never hands out, refused by the node like any unknown cursor).
    """
    body = text[1:] if text[:1] in (b"+", b"-") else text
    if text[:1].isspace() or (body and not (body.isascii() and body.isdigit())) or (text and not body):
        raise invalid("invalid cursor")
    value = int(body) if body else 0
    if value >= 2**64:
        raise invalid("invalid cursor")
    return (-value) % 2**64 if text[:1] == b"-" else value


def cmd_scan(server: HandlerContext, session: Session, args: Args) -> bytes:
    cursor = _scan_cursor(args[1])
    count = 10
    pattern: bytes | None = None
    wanted_type: bytes | None = None
    index = 2
    while index < len(args):
        option = args[index].upper()
        if index + 1 >= len(args):
            raise invalid(SYNTAX)
        if option == b"COUNT":
            count = integer(args[index + 1])
            if count < 1:
                raise invalid(SYNTAX)
        elif option == b"MATCH":
            pattern = args[index + 1]
        elif option == b"TYPE":
            wanted_type = args[index + 1].lower()
        else:
            raise invalid(SYNTAX)
        index += 2
    next_cursor, keys = session.node.scan(cursor, count, pattern)
    if wanted_type is not None and wanted_type != b"string":
        keys = []  # every AegisKV value is a string
    return b"*2\r\n" + resp.bulk(b"%d" % next_cursor) + resp.bulk_array(list(keys), session.protocol)


def cmd_wait(server: HandlerContext, session: Session, args: Args) -> bytes:
    """WAIT numreplicas timeout: the reply is held by the pipeline until the connection's writes have copies.

    Arguments are checked as Redis 7.0 checks them (the count first). A node that
    replicates nothing answers 0 at once: the reply below is the one sent when
    nothing holds it (aegiskv.server.replicas.ReplicaManager.hold_ticket says how
    the count is made).
    """
    replicas = integer(args[1])
    timeout = parse_integer(args[2])
    if timeout is None:
        raise invalid("timeout is not an integer or out of range")
    if timeout < 0:
        raise invalid("timeout is negative")
    session.hold = WaitRequest(replicas, timeout, resp.integer)
    return resp.integer(0)


# -- KEYS, RENAME, COPY, RANDOMKEY, TOUCH, EXPIRETIME (issue 25) -----------------------------


def cmd_keys(server: HandlerContext, session: Session, args: Args) -> bytes:
    """The node's keys, as a Redis Cluster node lists its own (a slow command: the worker pool)."""
    return resp.bulk_array(list(session.node.matching_keys(args[1])), session.protocol)


def rename_handler(only_if_absent: bool) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        session.node.check_same_slot(args[1:3])
        renamed = session.node.rename(args[1], args[2], only_if_absent)
        if renamed is None:
            raise invalid("no such key")
        if only_if_absent:
            return resp.ONE if renamed else resp.ZERO
        return resp.OK

    return handler


def cmd_copy(server: HandlerContext, session: Session, args: Args) -> bytes:
    """COPY source destination [DB 0] [REPLACE]: a cluster node has database 0 only, as Redis Cluster."""
    session.node.check_same_slot(args[1:3])
    replace = False
    database = 0
    index = 3
    while index < len(args):
        option = args[index].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and index + 1 < len(args):
            database = integer(args[index + 1])
            if not -(2**31) <= database < 2**31:  # Redis reads it as a C int
                raise invalid("value is out of range, value must between -2147483648 and 2147483647")
            index += 1
        else:
            raise invalid(SYNTAX)
        index += 1
    if database != 0:
        raise invalid("Copying to another database is not allowed in cluster mode")
    return resp.ONE if session.node.copy(args[1], args[2], replace) else resp.ZERO  # None (no source) too


def cmd_randomkey(server: HandlerContext, session: Session, args: Args) -> bytes:
    key = session.node.random_key(_RANDOM)
    return resp.null(session.protocol) if key is None else resp.bulk(key)


# RANDOMKEY's choices: any generator will do, nothing depends on the sequence.
_RANDOM = random.Random()


def cmd_touch(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.touch(args[1:]))


def expire_time_handler(unit_ms: int) -> RespHandler:
    """EXPIRETIME (seconds, truncated as Redis) and PEXPIRETIME: -1 without TTL, -2 for a missing key."""

    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        deadline = session.node.expire_time_ms(args[1])
        return resp.integer(deadline if deadline < 0 else deadline // unit_ms)

    return handler
