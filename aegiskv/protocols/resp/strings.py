"""RESP string commands: GET, SET and its variants, GETDEL, GETEX, MGET, MSET, APPEND, STRLEN, INCR.

GET and SET are the hot path: this module is compiled with the request path (setup.py).
"""

from __future__ import annotations

from typing import NamedTuple

from aegiskv.errors import CommandError
from aegiskv.node.operations import Condition
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, RespHandler, expire_milliseconds, integer, invalid, nullable
from aegiskv.protocols.resp.encoder import bulk
from aegiskv.protocols.session import QuorumRead, Session


def cmd_get(server: HandlerContext, session: Session, args: Args) -> bytes:
    if session.read_quorum:
        return _quorum_get(session, args[1])
    value = session.node.get(args[1])
    if value is None:
        return resp.NULL3 if session.protocol == 3 else resp.NULL_BULK
    return bulk(value)  # imported by name: compiled, a direct call


def _quorum_get(session: Session, key: bytes) -> bytes:
    """GET under --read-quorum: the local answer, held until the quorum names the newest (aegiskv.server.replicas)."""
    entry = session.node.get_entry(key)
    protocol = session.protocol

    def answer(value: bytes | None, version: int, expires_at_ms: int) -> bytes:
        return resp.null(protocol) if value is None else bulk(value)

    if entry is None:
        session.hold = QuorumRead(key, b"", 0, 0, answer)
        return resp.null(protocol)
    value = bytes(entry.value)
    session.hold = QuorumRead(key, value, entry.version, entry.expires_at_ms, answer)
    return bulk(value)


class _Expiry(NamedTuple):
    ttl_ms: int | None = None
    at_ms: int | None = None
    keep: bool = False
    persist: bool = False


def _parse_expiry_options(
    args: Args, start: int, command: str, allow: set[bytes], now_ms: int
) -> tuple[_Expiry, set[bytes]]:
    """EX/PX/EXAT/PXAT/KEEPTTL/PERSIST plus flag words in ``allow``; Redis's conflict rules."""
    chosen, amount, flags = _scan_expiry_options(args, start, allow)
    return _expiry_of(chosen, amount, command, now_ms), flags


def _scan_expiry_options(args: Args, start: int, allow: set[bytes]) -> tuple[bytes | None, bytes | None, set[bytes]]:
    """The options' syntax: (expiry option or None, its amount or None, flag words).

    As Redis: an expiry option conflicts with the *other* expiry options only,
    so a repeated one is allowed and the last amount wins -- and only that one
    is validated, later (``SET k v EX x EX 10`` is accepted).
    """
    flags: set[bytes] = set()
    index = start
    chosen: bytes | None = None
    amount: bytes | None = None
    while index < len(args):
        option = args[index].upper()
        if option in allow and option in _EXPIRY_WORDS and chosen in (None, option):
            if option in _TIMED:
                if index + 1 >= len(args):
                    raise invalid(SYNTAX)
                amount = args[index + 1]
                index += 1
            chosen = option
        elif option in allow and option not in _EXPIRY_WORDS and _CONFLICTING.get(option) not in flags:
            flags.add(option)
        else:
            raise invalid(SYNTAX)
        index += 1
    return chosen, amount, flags


def _expiry_of(chosen: bytes | None, amount: bytes | None, command: str, now_ms: int) -> _Expiry:
    """Validate the amount (Redis's errors) and make it milliseconds."""
    if chosen is None or amount is None:
        return _Expiry(keep=chosen == b"KEEPTTL", persist=chosen == b"PERSIST")
    unit = 1000 if chosen in (b"EX", b"EXAT") else 1
    if chosen in (b"EX", b"PX"):
        return _Expiry(ttl_ms=expire_milliseconds(integer(amount), unit, command, now_ms))
    return _Expiry(at_ms=expire_milliseconds(integer(amount), unit, command, 0))


_TIMED = {b"EX", b"PX", b"EXAT", b"PXAT"}
_CONFLICTING = {b"NX": b"XX", b"XX": b"NX"}  # a syntax error as soon as both are seen, as Redis
_EXPIRY_WORDS = _TIMED | {b"KEEPTTL", b"PERSIST"}


_SET_OPTIONS = {b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"NX", b"XX", b"GET"}


def cmd_set(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 3:
        session.node.put(args[1], args[2])
        return resp.OK
    expiry, flags = _parse_expiry_options(args, 3, "set", _SET_OPTIONS, session.node.now_ms())
    if b"NX" in flags and b"XX" in flags:
        raise invalid(SYNTAX)
    condition = Condition.IF_ABSENT if b"NX" in flags else Condition.IF_PRESENT if b"XX" in flags else Condition.ALWAYS
    want_old = b"GET" in flags
    result = session.node.set(
        args[1],
        args[2],
        ttl_ms=expiry.ttl_ms,
        expires_at_ms=expiry.at_ms,
        condition=condition,
        keep_ttl=expiry.keep,
        return_old=want_old,
    )
    if want_old:
        return nullable(result.old_value, session)
    if not result.stored:
        return nullable(None, session)
    return resp.OK


def cmd_setnx(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.ONE if session.node.set(args[1], args[2], condition=Condition.IF_ABSENT).stored else resp.ZERO


def cmd_setex(server: HandlerContext, session: Session, args: Args) -> bytes:
    ttl = expire_milliseconds(integer(args[2]), 1000, "setex", session.node.now_ms())
    session.node.put(args[1], args[3], ttl)
    return resp.OK


def cmd_psetex(server: HandlerContext, session: Session, args: Args) -> bytes:
    ttl = expire_milliseconds(integer(args[2]), 1, "psetex", session.node.now_ms())
    session.node.put(args[1], args[3], ttl)
    return resp.OK


def cmd_getdel(server: HandlerContext, session: Session, args: Args) -> bytes:
    return nullable(session.node.getdel(args[1]), session)


_GETEX_OPTIONS = {b"EX", b"PX", b"EXAT", b"PXAT", b"PERSIST"}


def cmd_getex(server: HandlerContext, session: Session, args: Args) -> bytes:
    chosen, amount, _ = _scan_expiry_options(args, 2, _GETEX_OPTIONS)
    try:
        expiry = _expiry_of(chosen, amount, "getex", session.node.now_ms())
    except CommandError:
        # Redis looks the key up before it validates the amount: a missing key is nil.
        if not session.node.exists([args[1]]):
            return nullable(None, session)
        raise
    value = session.node.getex(args[1], ttl_ms=expiry.ttl_ms, expires_at_ms=expiry.at_ms, persist=expiry.persist)
    return nullable(value, session)


def cmd_mget(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.bulk_array(session.node.mget(args[1:]), session.protocol)


def _pairs(args: Args, command: str) -> list[tuple[bytes, bytes]]:
    if len(args) % 2 == 0:
        raise invalid(f"wrong number of arguments for '{command}' command")
    return list(zip(args[1::2], args[2::2]))


def batch_arguments(max_batch_keys: int) -> tuple[tuple[bytes, int], ...]:
    """The most arguments MGET, MSET and MSETNX can use under ``max_batch_keys`` (the node's
    batch check in mget/mset), for the RESP reader to refuse a larger request from its
    header instead of parsing it first (RespLimits.batch_arguments)."""
    return ((b"MGET", max_batch_keys + 1), (b"MSET", 2 * max_batch_keys + 1), (b"MSETNX", 2 * max_batch_keys + 1))


def cmd_mset(server: HandlerContext, session: Session, args: Args) -> bytes:
    session.node.mset(_pairs(args, "mset"))
    return resp.OK


def cmd_msetnx(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.ONE if session.node.mset(_pairs(args, "msetnx"), only_if_none_exist=True) else resp.ZERO


def cmd_append(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.append(args[1], args[2]))


def cmd_strlen(server: HandlerContext, session: Session, args: Args) -> bytes:
    entry = session.node.peek(args[1])
    return resp.integer(0 if entry is None else len(entry.value))


def incr_handler(sign: int, takes_amount: bool) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        amount = integer(args[2]) if takes_amount else 1
        if sign < 0 and amount == -(2**63):
            raise invalid("decrement would overflow")
        return resp.integer(session.node.incr_by(args[1], sign * amount))

    return handler


# -- GETSET, GETRANGE, SETRANGE, INCRBYFLOAT (issue 25) ------------------------------------


def cmd_getset(server: HandlerContext, session: Session, args: Args) -> bytes:
    """GETSET: SET ... GET, so the TTL goes as with SET."""
    return nullable(session.node.set(args[1], args[2], return_old=True).old_value, session)


def cmd_getrange(server: HandlerContext, session: Session, args: Args) -> bytes:
    """GETRANGE and SUBSTR: Redis parses both indexes before it looks the key up."""
    start, end = integer(args[2]), integer(args[3])
    return bulk(session.node.get_range(args[1], start, end))


def cmd_setrange(server: HandlerContext, session: Session, args: Args) -> bytes:
    offset = integer(args[2])
    if offset < 0:
        raise invalid("offset is out of range")
    return resp.integer(session.node.set_range(args[1], offset, args[3]))


def cmd_incrbyfloat(server: HandlerContext, session: Session, args: Args) -> bytes:
    return bulk(session.node.incr_by_float(args[1], args[2]))


def cmd_lcs(server: HandlerContext, session: Session, args: Args) -> bytes:
    """LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN], checked in Redis 7.0's order."""
    session.node.check_same_slot(args[1:3])
    want_length = want_ranges = with_match_length = False
    min_match = 0
    index = 3
    while index < len(args):
        option = args[index].upper()
        if option == b"IDX":
            want_ranges = True
        elif option == b"LEN":
            want_length = True
        elif option == b"WITHMATCHLEN":
            with_match_length = True
        elif option == b"MINMATCHLEN" and index + 1 < len(args):
            min_match = max(integer(args[index + 1]), 0)
            index += 1
        else:
            raise invalid(SYNTAX)
        index += 1
    if want_length and want_ranges:
        raise invalid("If you want both the length and indexes, please just use IDX.")
    common, matches, length = session.node.longest_common_subsequence(args[1], args[2], min_match)
    if want_length:
        return resp.integer(length)
    if not want_ranges:
        return bulk(common)
    encoded = []
    for match in matches:
        parts = [
            resp.array([resp.integer(match.first[0]), resp.integer(match.first[1])]),
            resp.array([resp.integer(match.second[0]), resp.integer(match.second[1])]),
        ]
        if with_match_length:
            parts.append(resp.integer(match.length))
        encoded.append(resp.array(parts))
    pairs = [(bulk(b"matches"), resp.array(encoded)), (bulk(b"len"), resp.integer(length))]
    return resp.mapping(pairs, session.protocol)
