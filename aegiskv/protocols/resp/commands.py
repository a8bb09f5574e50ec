"""The RESP port's adapter: Redis command syntax -> command table -> Node -> RESP replies.

Argument forms and error texts follow Redis 7.0, so Redis clients behave the
same against AegisKV. What each operation *means* lives in :class:`Node`;
these handlers parse Redis's syntax, call it, and encode the reply (RESP2, or
RESP3 after ``HELLO 3``).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Final, NamedTuple

import aegiskv
from aegiskv.cluster.redirect import Routing
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import COMMAND_TABLE, COMMANDS, REDIS_COMPATIBLE_VERSION, Command
from aegiskv.node.operations import Condition, ExpireCondition, parse_integer
from aegiskv.node.pattern import glob_match
from aegiskv.protocols.adapter import HandlerContext, Violation, WireAdapter, bind_handlers
from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.resp import reader as resp
from aegiskv.protocols.resp.cluster import cmd_cluster, cmd_readonly
from aegiskv.protocols.resp.reader import bulk
from aegiskv.protocols.session import Session

Args = list[bytes]
RespHandler = Callable[[HandlerContext, Session, Args], bytes]

_NOT_INTEGER = "value is not an integer or out of range"
_SYNTAX = "syntax error"
_MS_LIMIT = 2**63 - 1


def _invalid(message: str) -> CommandError:
    return CommandError(ErrorKind.INVALID, message)


def _integer(text: bytes) -> int:
    value = parse_integer(text)
    if value is None:
        raise _invalid(_NOT_INTEGER)
    return value


def _nullable(value: bytes | memoryview | None, session: Session) -> bytes:
    if value is None:
        return resp.NULL3 if session.protocol == 3 else resp.NULL_BULK
    return b"$%d\r\n" % len(value) + value + b"\r\n"


def _expire_milliseconds(amount: int, unit_ms: int, command: str, now_ms: int = 0) -> int:
    """TTL argument -> milliseconds, refusing what Redis refuses: <= 0, or overflow of
    the milliseconds (or, for a relative TTL, of ``now_ms`` plus them)."""
    if amount <= 0 or amount > _MS_LIMIT // unit_ms or amount * unit_ms > _MS_LIMIT - now_ms:
        raise _invalid(f"invalid expire time in '{command}' command")
    return amount * unit_ms


# -- connection ----------------------------------------------------------------------------


def cmd_ping(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 1:
        return resp.PONG
    if len(args) > 2:
        raise _invalid("wrong number of arguments for 'ping' command")
    return resp.bulk(args[1])


def cmd_echo(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.bulk(args[1])


def cmd_quit(server: HandlerContext, session: Session, args: Args) -> bytes:
    session.close_requested = True
    return resp.OK


def cmd_select(server: HandlerContext, session: Session, args: Args) -> bytes:
    index = _integer(args[1])
    if not -(2**31) <= index < 2**31:  # Redis reads the index as a C int first
        raise _invalid("value is out of range, value must between -2147483648 and 2147483647")
    if index != 0:  # every node runs in cluster mode (see render_info), where Redis has one database
        raise _invalid("SELECT is not allowed in cluster mode")
    return resp.OK


def _authenticate(server: HandlerContext, session: Session, user: bytes | None, token: bytes) -> None:
    authenticator = server.authenticator
    if not authenticator.required:
        if user is None:
            raise _invalid(
                "AUTH <password> called without any password configured for the default user. "
                "Are you sure your configuration is correct?"
            )
        if user == b"default":
            return  # the default user has no password: any password is accepted, as in Redis
    if user is not None and user != b"default":
        session.auth_failures += 1
        raise CommandError(
            ErrorKind.AUTH_FAILED,
            "invalid username-password pair or user is disabled.",
            close=not session.authenticated and session.auth_failures >= authenticator.max_failures,
        )
    authenticator.check(session, token)


def cmd_auth(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 2:
        _authenticate(server, session, None, args[1])
    elif len(args) == 3:
        _authenticate(server, session, args[1], args[2])
    else:
        raise _invalid(_SYNTAX)
    return resp.OK


def cmd_hello(server: HandlerContext, session: Session, args: Args) -> bytes:
    protocol = session.protocol
    index = 1
    if len(args) > 1:
        version = parse_integer(args[1])
        if version is None:
            raise CommandError(ErrorKind.INVALID, "Protocol version is not an integer or out of range")
        if version not in (2, 3):
            raise CommandError(ErrorKind.NOPROTO, "unsupported protocol version")
        protocol = version
        index = 2
    name: bytes | None = None
    authenticated_here = False
    while index < len(args):
        option = args[index].lower()
        remaining = len(args) - index - 1
        if option == b"auth" and remaining >= 2:
            _authenticate(server, session, args[index + 1], args[index + 2])
            authenticated_here = True
            index += 3
        elif option == b"setname" and remaining >= 1:
            name = _client_name(args[index + 1])
            index += 2
        else:
            raise _invalid(f"Syntax error in HELLO option '{args[index].decode('utf-8', 'replace')}'")
    if not session.authenticated and not authenticated_here:
        raise CommandError(
            ErrorKind.NOAUTH,
            "HELLO must be called with the client already authenticated, otherwise the HELLO AUTH "
            "<user> <pass> option can be used to authenticate the client and select the RESP protocol "
            "version at the same time",
        )
    session.protocol = protocol
    if name is not None:
        session.name = name or None
    fields = [
        (b"server", resp.bulk(b"redis")),
        (b"version", resp.bulk(REDIS_COMPATIBLE_VERSION.encode())),
        (b"proto", resp.integer(protocol)),
        (b"id", resp.integer(session.connection_id)),
        (b"mode", resp.bulk(b"cluster")),  # as INFO's redis_mode
        (b"role", resp.bulk(b"master")),
        (b"modules", resp.EMPTY_ARRAY),
    ]
    return resp.mapping([(resp.bulk(key), value) for key, value in fields], protocol)


# -- strings -------------------------------------------------------------------------------


def cmd_get(server: HandlerContext, session: Session, args: Args) -> bytes:
    value = session.node.get(args[1])
    if value is None:
        return resp.NULL3 if session.protocol == 3 else resp.NULL_BULK
    return bulk(value)  # imported by name: compiled, a direct call


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
                    raise _invalid(_SYNTAX)
                amount = args[index + 1]
                index += 1
            chosen = option
        elif option in allow and option not in _EXPIRY_WORDS and _CONFLICTING.get(option) not in flags:
            flags.add(option)
        else:
            raise _invalid(_SYNTAX)
        index += 1
    return chosen, amount, flags


def _expiry_of(chosen: bytes | None, amount: bytes | None, command: str, now_ms: int) -> _Expiry:
    """Validate the amount (Redis's errors) and make it milliseconds."""
    if chosen is None or amount is None:
        return _Expiry(keep=chosen == b"KEEPTTL", persist=chosen == b"PERSIST")
    unit = 1000 if chosen in (b"EX", b"EXAT") else 1
    if chosen in (b"EX", b"PX"):
        return _Expiry(ttl_ms=_expire_milliseconds(_integer(amount), unit, command, now_ms))
    return _Expiry(at_ms=_expire_milliseconds(_integer(amount), unit, command, 0))


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
        raise _invalid(_SYNTAX)
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
        return _nullable(result.old_value, session)
    if not result.stored:
        return _nullable(None, session)
    return resp.OK


def cmd_setnx(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.ONE if session.node.set(args[1], args[2], condition=Condition.IF_ABSENT).stored else resp.ZERO


def cmd_setex(server: HandlerContext, session: Session, args: Args) -> bytes:
    ttl = _expire_milliseconds(_integer(args[2]), 1000, "setex", session.node.now_ms())
    session.node.put(args[1], args[3], ttl)
    return resp.OK


def cmd_psetex(server: HandlerContext, session: Session, args: Args) -> bytes:
    ttl = _expire_milliseconds(_integer(args[2]), 1, "psetex", session.node.now_ms())
    session.node.put(args[1], args[3], ttl)
    return resp.OK


def cmd_getdel(server: HandlerContext, session: Session, args: Args) -> bytes:
    return _nullable(session.node.getdel(args[1]), session)


_GETEX_OPTIONS = {b"EX", b"PX", b"EXAT", b"PXAT", b"PERSIST"}


def cmd_getex(server: HandlerContext, session: Session, args: Args) -> bytes:
    chosen, amount, _ = _scan_expiry_options(args, 2, _GETEX_OPTIONS)
    try:
        expiry = _expiry_of(chosen, amount, "getex", session.node.now_ms())
    except CommandError:
        # Redis looks the key up before it validates the amount: a missing key is nil.
        if not session.node.exists([args[1]]):
            return _nullable(None, session)
        raise
    value = session.node.getex(args[1], ttl_ms=expiry.ttl_ms, expires_at_ms=expiry.at_ms, persist=expiry.persist)
    return _nullable(value, session)


def cmd_mget(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.bulk_array(session.node.mget(args[1:]), session.protocol)


def _pairs(args: Args, command: str) -> list[tuple[bytes, bytes]]:
    if len(args) % 2 == 0:
        raise _invalid(f"wrong number of arguments for '{command}' command")
    return list(zip(args[1::2], args[2::2]))


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


def _incr_handler(sign: int, takes_amount: bool) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        amount = _integer(args[2]) if takes_amount else 1
        if sign < 0 and amount == -(2**63):
            raise _invalid("decrement would overflow")
        return resp.integer(session.node.incr_by(args[1], sign * amount))

    return handler


# -- keys ----------------------------------------------------------------------------------


def cmd_del(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 2:
        return resp.ONE if session.node.delete(args[1]) else resp.ZERO
    return resp.integer(session.node.delete_many(args[1:]))


def cmd_exists(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.exists(args[1:]))


def cmd_type(server: HandlerContext, session: Session, args: Args) -> bytes:
    return b"+string\r\n" if session.node.peek(args[1]) is not None else b"+none\r\n"


def _ttl_handler(unit_ms: int) -> RespHandler:
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
            raise _invalid(f"Unsupported option {option.decode('utf-8', 'replace')}")
        chosen.add(upper)
    if b"NX" in chosen and len(chosen) > 1:
        raise _invalid("NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in chosen and b"LT" in chosen:
        raise _invalid("GT and LT options at the same time are not compatible")
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


def _expire_handler(command: str, unit_ms: int, absolute: bool) -> RespHandler:
    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        condition = _expire_condition(args[3:])  # Redis checks the options first
        amount = _integer(args[2])
        # Redis's overflow checks: the unit conversion, then adding the base time.
        # A negative amount of milliseconds is never refused (the key just expires).
        if unit_ms != 1 and (amount > _MS_LIMIT // unit_ms or amount < -(_MS_LIMIT // unit_ms)):
            raise _invalid(f"invalid expire time in '{command}' command")
        milliseconds = amount * unit_ms
        node = session.node
        if absolute:
            deadline = milliseconds
        else:
            now = node.now_ms()
            if milliseconds > _MS_LIMIT - now:
                raise _invalid(f"invalid expire time in '{command}' command")
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
        raise _invalid(_SYNTAX)
    session.node.flush()
    return resp.OK


def _scan_cursor(text: bytes) -> int:
    """Redis reads the cursor with strtoul(): an optional sign, digits, nothing after them.

    So "" and "+0" are cursor 0, and "-1" wraps around to 2**64 - 1 (a cursor
    AegisKV never hands out, refused by the node like any unknown cursor).
    """
    body = text[1:] if text[:1] in (b"+", b"-") else text
    if text[:1].isspace() or (body and not (body.isascii() and body.isdigit())) or (text and not body):
        raise _invalid("invalid cursor")
    value = int(body) if body else 0
    if value >= 2**64:
        raise _invalid("invalid cursor")
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
            raise _invalid(_SYNTAX)
        if option == b"COUNT":
            count = _integer(args[index + 1])
            if count < 1:
                raise _invalid(_SYNTAX)
        elif option == b"MATCH":
            pattern = args[index + 1]
        elif option == b"TYPE":
            wanted_type = args[index + 1].lower()
        else:
            raise _invalid(_SYNTAX)
        index += 2
    next_cursor, keys = session.node.scan(cursor, count, pattern)
    if wanted_type is not None and wanted_type != b"string":
        keys = []  # every AegisKV value is a string
    return b"*2\r\n" + resp.bulk(b"%d" % next_cursor) + resp.bulk_array(list(keys), session.protocol)


# -- server --------------------------------------------------------------------------------


def _human(size: int) -> str:
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


def render_info(server: HandlerContext, sections: list[str] | None) -> bytes:
    """INFO text in Redis's layout (``# Section`` then ``field:value`` lines)."""
    wanted = {section.lower() for section in sections} if sections else None
    if wanted and wanted & {"all", "everything", "default"}:
        wanted = None
    info = server.info(None)
    rendered: list[tuple[str, list[tuple[str, object]]]] = []
    general = info["server"]
    rendered.append(
        (
            "Server",
            [
                ("redis_version", REDIS_COMPATIBLE_VERSION),
                ("aegis_version", aegiskv.__version__),
                ("aegis_build", aegiskv.build()),  # compiled with mypyc, or interpreted
                ("redis_mode", "cluster"),  # every node answers the CLUSTER commands
                ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
                ("arch_bits", 64),
                ("process_id", general["process_id"]),
                ("run_id", server.run_id),
                ("tcp_port", server.resp_bound[1]),
                ("uptime_in_seconds", general["uptime_in_seconds"]),
                ("uptime_in_days", int(general["uptime_in_seconds"]) // 86400),
                ("executable", "aegis"),
                ("node_id", general["node_id"]),
            ],
        )
    )
    clients = info["clients"]
    rendered.append(
        (
            "Clients",
            [
                ("connected_clients", clients["connected_clients"]),
                ("maxclients", clients["maxclients"]),
                ("blocked_clients", 0),
            ],
        )
    )
    memory = info["memory"]
    rendered.append(
        (
            "Memory",
            [
                ("used_memory", memory["used_memory"]),
                ("used_memory_human", _human(int(memory["used_memory"]))),
                ("used_memory_rss", memory["used_memory_rss"]),
                ("used_memory_rss_human", _human(int(memory["used_memory_rss"]))),
                ("maxmemory", memory["maxmemory"]),
                ("maxmemory_human", _human(int(memory["maxmemory"]))),
                ("maxmemory_policy", "allkeys-lru"),  # the nearest Redis policy; CONFIG GET says the same
                ("aegis_eviction", memory["maxmemory_policy"]),
            ],
        )
    )
    persistence = info["persistence"]
    rendered.append(
        (
            "Persistence",
            [
                ("loading", 0),
                ("rdb_bgsave_in_progress", persistence["snapshot_in_progress"]),
                ("rdb_last_save_time", persistence["last_snapshot_time"]),
                ("rdb_last_bgsave_status", persistence["last_snapshot_status"]),
                ("aof_enabled", int(persistence["wal"] != "off")),
                # Redis's "err" while its appends fail and writes get -MISCONF: the same here.
                ("aof_last_write_status", "ok" if persistence["wal_status"] == "ok" else "err"),
                ("aegis_wal", persistence["wal"]),
                ("aegis_wal_records_written", persistence["wal_records_written"]),
                ("aegis_wal_bytes_written", persistence["wal_bytes_written"]),
                ("aegis_wal_syncs", persistence["wal_syncs"]),
                ("aegis_wal_durable_seq", persistence["wal_durable_seq"]),
                ("aegis_wal_status", persistence["wal_status"]),
                ("aegis_wal_failure", persistence["wal_failure"]),
                ("aegis_wal_failures", persistence["wal_failures"]),
                ("aegis_wal_records_given_up", persistence["wal_records_given_up"]),
                ("aegis_snapshot_failures", persistence["snapshot_failures"]),
                ("aegis_last_snapshot_error", persistence["last_snapshot_error"]),
            ],
        )
    )
    stats = info["stats"]
    rendered.append(
        (
            "Stats",
            [
                ("total_connections_received", clients["total_connections_received"]),
                ("total_commands_processed", stats["total_commands_processed"]),
                ("rejected_connections", clients["rejected_connections"]),
                ("expired_keys", stats["expired_keys"]),
                ("evicted_keys", stats["evicted_keys"]),
                ("keyspace_hits", stats["keyspace_hits"]),
                ("keyspace_misses", stats["keyspace_misses"]),
            ],
        )
    )
    # Every node answers CLUSTER SLOTS and friends (a lone node owns all 16384 slots), so
    # cluster clients can use any node; INFO says so too, agreeing with CLUSTER INFO.
    rendered.append(("Cluster", [("cluster_enabled", 1)]))
    keyspace = info["keyspace"]
    rendered.append(
        (
            "Keyspace",
            [("db0", f"keys={keyspace['keys']},expires={keyspace['expires']},avg_ttl={keyspace['avg_ttl']}")]
            if keyspace["keys"]
            else [],
        )
    )
    blocks = []
    for title, fields in rendered:
        if wanted is not None and title.lower() not in wanted:
            continue
        lines = [f"# {title}"] + [f"{name}:{value}" for name, value in fields]
        blocks.append("\r\n".join(lines) + "\r\n")
    return "\r\n".join(blocks).encode()


def cmd_info(server: HandlerContext, session: Session, args: Args) -> bytes:
    text = render_info(server, [arg.decode("utf-8", "replace") for arg in args[1:]] or None)
    return resp.verbatim(text, session.protocol)


# Redis allows '!' to '~' only: no spaces, control characters or bytes above ASCII.
_CLIENT_NAME_FORBIDDEN = set(range(0, 33)) | set(range(127, 256))


def _client_name(name: bytes) -> bytes:
    if any(byte in _CLIENT_NAME_FORBIDDEN for byte in name):
        raise _invalid("Client names cannot contain spaces, newlines or special characters.")
    return name


def _show_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "?"


def client_info_line(session: Session) -> bytes:
    now = time.time()
    fields = [
        ("id", session.connection_id),
        ("addr", _show_address(session.peer)),
        ("laddr", _show_address(session.local)),
        ("name", (session.name or b"").decode("utf-8", "replace")),
        ("age", int(now - session.created)),
        ("idle", 0),
        ("flags", "N"),
        ("db", 0),
        ("cmd", "client|info"),  # the command being run: this one
        ("user", "default"),
        ("resp", session.protocol),
        ("lib-name", session.library_name.decode("utf-8", "replace")),
        ("lib-ver", session.library_version.decode("utf-8", "replace")),
    ]
    return (" ".join(f"{name}={value}" for name, value in fields) + "\n").encode()


def cmd_client(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        session.name = _client_name(args[2]) or None
        return resp.OK
    if sub == b"GETNAME" and len(args) == 2:
        return _nullable(session.name, session)
    if sub == b"ID" and len(args) == 2:
        return resp.integer(session.connection_id)
    if sub == b"INFO" and len(args) == 2:
        return resp.verbatim(client_info_line(session), session.protocol)
    if sub == b"SETINFO" and len(args) == 4:
        attribute = args[2].upper()
        if attribute not in (b"LIB-NAME", b"LIB-VER"):
            raise _invalid(f"Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        if any(byte in _CLIENT_NAME_FORBIDDEN for byte in args[3]):
            raise _invalid(f"{attribute.decode().lower()} cannot contain spaces, newlines or special characters.")
        if attribute == b"LIB-NAME":
            session.library_name = args[3]
        else:
            session.library_version = args[3]
        return resp.OK
    if sub in (b"SETNAME", b"GETNAME", b"ID", b"INFO", b"SETINFO"):
        raise _invalid(f"wrong number of arguments for 'client|{sub.decode().lower()}' command")
    raise _invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CLIENT HELP.")


def _config_values(server: HandlerContext) -> dict[bytes, bytes]:
    config = server.settings
    return {
        b"maxmemory": b"%d" % config.max_memory_bytes,
        b"maxmemory-policy": b"allkeys-lru",
        b"maxclients": b"%d" % config.max_connections,
        b"timeout": b"%d" % int(config.idle_timeout),
        b"databases": b"1",
        b"save": b"%d 1" % int(server.node.snapshot_interval) if server.node.snapshot_interval else b"",
        b"appendonly": b"yes" if config.wal != "off" else b"no",
        b"appendfsync": {"fsync": b"always", "write": b"no"}.get(config.wal, b"no"),
        b"port": b"%d" % server.resp_bound[1],
        b"bind": server.resp_bound[0].encode(),
        b"proto-max-bulk-len": b"%d" % config.max_bulk_bytes,
        b"cluster-enabled": b"yes",  # every node answers the CLUSTER commands (see render_info)
    }


def cmd_config(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = args[1].upper()
    if sub == b"GET":
        if len(args) < 3:
            raise _invalid("wrong number of arguments for 'config|get' command")
        values = _config_values(server)
        # Each setting once, however many patterns name it, spelled as first matched:
        # an exact name in the case it was asked in (as Redis does), a pattern's match in lower case.
        matched: dict[bytes, tuple[bytes, bytes]] = {}
        for pattern in args[2:]:
            exact = pattern.lower()
            if exact in values:
                matched.setdefault(exact, (pattern, values[exact]))
                continue
            for name, value in values.items():
                if glob_match(exact, name):
                    matched.setdefault(name, (name, value))
        pairs = [(resp.bulk(name), resp.bulk(value)) for name, value in matched.values()]
        return resp.mapping(pairs, session.protocol)
    if sub == b"SET":
        raise _invalid(
            "CONFIG SET is not supported: AegisKV reads its settings at start-up (change them and restart the node)"
        )
    if sub == b"RESETSTAT":
        raise _invalid("CONFIG RESETSTAT is not supported")
    raise _invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CONFIG HELP.")


def cmd_bgsave(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() != b"SCHEDULE"):
        raise _invalid(_SYNTAX)
    server.snapshot_in_background()
    return b"+Background saving started\r\n"


def cmd_save(server: HandlerContext, session: Session, args: Args) -> bytes:
    session.node.start_snapshot()()
    return resp.OK


_MEMORY_HELP = [
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value: what the key's objects",
    "    are charged against maxmemory (SAMPLES is accepted; a string has nothing to sample).",
    "HELP",
    "    Print this help.",
]


def cmd_memory(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = args[1].upper()
    if sub == b"USAGE":
        if len(args) < 3:
            raise _invalid("wrong number of arguments for 'memory|usage' command")
        # As Redis: SAMPLES may repeat (the last wins; sizes here are exact, so it changes nothing).
        index = 3
        while index < len(args):
            if args[index].upper() != b"SAMPLES" or index + 1 == len(args) or _integer(args[index + 1]) < 0:
                raise _invalid(_SYNTAX)
            index += 2
        size = session.node.memory_usage(args[2])
        return resp.null(session.protocol) if size is None else resp.integer(size)
    if sub == b"HELP":
        if len(args) != 2:
            raise _invalid("wrong number of arguments for 'memory|help' command")
        return resp.array([resp.simple(line) for line in _MEMORY_HELP])
    raise _invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try MEMORY HELP.")


def cmd_lastsave(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(int(session.node.last_snapshot_time or server.started))


# -- COMMAND -------------------------------------------------------------------------------


# The rows this port serves, by name: COMMAND COUNT, INFO, DOCS and LIST describe them.
RESP_COMMANDS: Final[dict[bytes, Command]] = {
    command.name.encode(): command for command in COMMAND_TABLE if command.resp
}


def cmd_command(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 1:
        return resp.array([_command_entry(name, spec) for name, spec in sorted(RESP_COMMANDS.items())])
    sub = args[1].upper()
    if sub == b"COUNT":
        if len(args) != 2:
            raise _invalid("wrong number of arguments for 'command|count' command")
        return resp.integer(len(RESP_COMMANDS))
    if sub == b"INFO":
        if len(args) == 2:  # no names: every command, as Redis 7
            return resp.array([_command_entry(name, spec) for name, spec in sorted(RESP_COMMANDS.items())])
        entries = []
        for name in args[2:]:
            command = RESP_COMMANDS.get(name.lower())
            entries.append(_command_entry(name.lower(), command) if command else resp.null(session.protocol))
        return resp.array(entries)
    if sub == b"DOCS":
        names = [name.lower() for name in args[2:]] or sorted(RESP_COMMANDS)
        pairs = []
        for name in names:
            command = RESP_COMMANDS.get(name)
            if command is None:
                continue
            doc = resp.mapping(
                [
                    (resp.bulk(b"summary"), resp.bulk(command.summary.encode())),
                    (resp.bulk(b"since"), resp.bulk(b"1.0.0")),
                    (resp.bulk(b"group"), resp.bulk(command.group.encode())),
                ],
                session.protocol,
            )
            pairs.append((resp.bulk(name), doc))
        return resp.mapping(pairs, session.protocol)
    if sub == b"LIST":
        return resp.bulk_array(list(_command_list(args[2:])), session.protocol)
    raise _invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try COMMAND HELP.")


def _command_list(filters: Args) -> list[bytes]:
    """COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]."""
    if not filters:
        return sorted(RESP_COMMANDS)
    if len(filters) != 3 or filters[0].upper() != b"FILTERBY":
        raise _invalid(_SYNTAX)
    kind, value = filters[1].upper(), filters[2]
    if kind == b"MODULE":
        return []  # no modules
    if kind == b"ACLCAT":
        category = value.lower().decode("utf-8", "replace")
        return [name for name, command in sorted(RESP_COMMANDS.items()) if category in command.acl_categories]
    if kind == b"PATTERN":
        return [name for name in sorted(RESP_COMMANDS) if glob_match(value.lower(), name)]
    raise _invalid(_SYNTAX)


def _command_entry(name: bytes, command: Command) -> bytes:
    return resp.array(
        [
            resp.bulk(name),
            resp.integer(command.arity),
            resp.array([resp.simple(flag) for flag in command.flags]),
            resp.integer(command.first_key),
            resp.integer(command.last_key),
            resp.integer(command.key_step),
            resp.array([resp.simple(f"@{category}") for category in command.acl_categories]),
            resp.EMPTY_ARRAY,  # tips
            resp.EMPTY_ARRAY,  # key specifications (first/last/step above describe the keys)
            resp.EMPTY_ARRAY,  # subcommands
        ]
    )


# Each RESP command's handler, by the name its command table row gives.
HANDLERS: Final[dict[str, RespHandler]] = {
    "ping": cmd_ping,
    "auth": cmd_auth,
    "hello": cmd_hello,
    "quit": cmd_quit,
    "echo": cmd_echo,
    "select": cmd_select,
    "client": cmd_client,
    "get": cmd_get,
    "set": cmd_set,
    "setnx": cmd_setnx,
    "setex": cmd_setex,
    "psetex": cmd_psetex,
    "getdel": cmd_getdel,
    "getex": cmd_getex,
    "mget": cmd_mget,
    "mset": cmd_mset,
    "msetnx": cmd_msetnx,
    "append": cmd_append,
    "strlen": cmd_strlen,
    "incr": _incr_handler(1, False),
    "incrby": _incr_handler(1, True),
    "decr": _incr_handler(-1, False),
    "decrby": _incr_handler(-1, True),
    "del": cmd_del,
    "unlink": cmd_del,
    "exists": cmd_exists,
    "type": cmd_type,
    "ttl": _ttl_handler(1000),
    "pttl": _ttl_handler(1),
    "expire": _expire_handler("expire", 1000, False),
    "pexpire": _expire_handler("pexpire", 1, False),
    "expireat": _expire_handler("expireat", 1000, True),
    "pexpireat": _expire_handler("pexpireat", 1, True),
    "persist": cmd_persist,
    "scan": cmd_scan,
    "dbsize": cmd_dbsize,
    "flushdb": cmd_flush,
    "flushall": cmd_flush,
    "save": cmd_save,
    "bgsave": cmd_bgsave,
    "lastsave": cmd_lastsave,
    "info": cmd_info,
    "memory": cmd_memory,
    "config": cmd_config,
    "command": cmd_command,
    "cluster": cmd_cluster,
    "readonly": cmd_readonly,
    "readwrite": cmd_readonly,
}

_MEMORY: Final = COMMANDS["memory"]

# Lookup keyed by the name exactly as sent: lower and upper case hit directly,
# mixed case falls back to .lower().
_ROUTES: Final[dict[bytes, tuple[Command, RespHandler]]] = {}
for _name, _entry in bind_handlers(
    "RESP", {name.decode(): row for name, row in RESP_COMMANDS.items()}, HANDLERS
).items():
    _ROUTES[_name.encode()] = _ROUTES[_name.upper().encode()] = _entry
# Keyed by the scanner's own name objects (an equal key would keep the old object).
for _shared_name in (resp.GET_NAME, resp.SET_NAME):
    _ROUTES[_shared_name] = _ROUTES.pop(_shared_name)

# Redis closes connections that look like HTTP requests sent to the port.
_SECURITY_ATTACK: Final = {b"host:", b"post"}


def _unknown(args: Args) -> CommandError:
    """Redis 7's text: the name (up to 128 bytes) and quoted arguments until about 128 bytes are shown.

    Redis formats them with ``%.*s``, so each one also ends at its first NUL byte.
    """
    name = args[0].split(b"\0", 1)[0][:128]
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'" + arg.split(b"\0", 1)[0][: 128 - len(shown)] + b"' "
    text = b"unknown command '%b', with args beginning with: %b" % (name, shown)
    return CommandError(ErrorKind.UNKNOWN_COMMAND, text.decode("utf-8", "surrogateescape"))


_ERROR_PREFIX = {
    ErrorKind.INVALID: "ERR",
    ErrorKind.NOAUTH: "NOAUTH",
    ErrorKind.AUTH_FAILED: "WRONGPASS",
    ErrorKind.RATE_LIMITED: "ERR",
    ErrorKind.OUT_OF_MEMORY: "OOM",
    ErrorKind.UNKNOWN_COMMAND: "ERR",
    ErrorKind.WRONG_TYPE: "WRONGTYPE",
    ErrorKind.NOPROTO: "NOPROTO",
    ErrorKind.INTERNAL: "ERR",
    ErrorKind.MOVED: "MOVED",
    ErrorKind.CLUSTER_DOWN: "CLUSTERDOWN",
    # Redis's prefix when it cannot persist (-MISCONF Errors writing to the AOF file: ...).
    ErrorKind.STORAGE_FAILED: "MISCONF",
}


class RespAdapter(WireAdapter[Args]):
    """Connects :class:`resp.RequestParser` to the pipeline."""

    __slots__ = ("_parser", "_routing")

    def __init__(
        self,
        limits: resp.RespLimits,
        authenticated: bool,
        use_hiredis: bool | None = None,
        routing: Routing | None = None,
    ) -> None:
        self._parser = resp.RequestParser(limits, authenticated=authenticated, use_hiredis=use_hiredis)
        self._routing = routing or Routing()

    def receive_data(self, data: bytes) -> None:
        self._parser.receive_data(data)

    def take_requests(self) -> list[Args]:
        return self._parser.take_commands()

    def push_back(self, requests: list[Args]) -> None:
        self._parser.push_back(requests)

    def error_pending(self) -> bool:
        return self._parser.error_pending

    def violation_reply(self, error: PeerProtocolError) -> bytes:
        return resp.error(f"ERR {error}")

    def buffered(self) -> int:
        return self._parser.buffered

    def route(self, request: Args) -> tuple[Command, RespHandler]:
        found = _ROUTES.get(request[0])
        if found is None:
            found = _ROUTES.get(request[0].lower())
            if found is None:
                if request[0].lower() in _SECURITY_ATTACK:
                    # Like Redis: close at once, discarding replies not yet sent.
                    raise Violation(b"", "looks like an HTTP request (possible cross-protocol attack)", discard=True)
                raise _unknown(request)
        command = found[0]
        arity = command.arity
        count = len(request)
        if count != arity and (arity > 0 or count < -arity):
            raise _invalid(f"wrong number of arguments for '{request[0].lower().decode('utf-8', 'replace')}' command")
        router = self._routing.router
        if router is not None and command.first_key and self._parser.authenticated:
            # Unauthenticated requests are refused (NOAUTH) before they could learn where keys live.
            if command is _MEMORY and request[1].upper() != b"USAGE":
                return found  # only MEMORY USAGE names a key
            last = command.last_key if command.last_key > 0 else count + command.last_key
            router.check_all(request[command.first_key : last + 1 : command.key_step])
        return found

    def batch_size(self, request: Args) -> int:
        return len(request) - 1

    def error_reply(self, request: Args | None, error: CommandError) -> bytes:
        return resp.error(f"{_ERROR_PREFIX[error.kind]} {error.message}")

    def authenticated(self) -> None:
        self._parser.authenticated = True


def refusal(reason: str) -> bytes:
    return resp.error(f"ERR {reason}")
