"""The RESP port's adapter: Redis command syntax -> command table -> handler -> RESP replies.

Argument forms and error texts follow Redis 7.0, so Redis clients behave the
same against AegisKV. What each operation *means* lives in :class:`Node`; the
handlers (connection, strings, keys, server, cluster) parse Redis's syntax,
call it, and encode the reply (RESP2, or RESP3 after ``HELLO 3``). This module
routes a request to its handler through the command table's rows
(aegiskv/node/commands.py) and encodes errors.
"""

from __future__ import annotations

from typing import Final

from aegiskv.cluster.redirect import Routing
from aegiskv.cluster.replica_reads import ReplicaReads
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import COMMAND_TABLE, COMMANDS, Command
from aegiskv.protocols.adapter import HandlerContext, Violation, WireAdapter, bind_handlers
from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.resp import encoder
from aegiskv.protocols.resp import reader as resp
from aegiskv.protocols.resp.arguments import Args, RespHandler, invalid
from aegiskv.protocols.resp.bitmaps import (
    bitfield_handler,
    cmd_bitcount,
    cmd_bitop,
    cmd_bitpos,
    cmd_getbit,
    cmd_setbit,
)
from aegiskv.protocols.resp.cluster import cmd_cluster, cmd_readonly
from aegiskv.protocols.resp.connection import (
    cmd_auth,
    cmd_client,
    cmd_echo,
    cmd_hello,
    cmd_ping,
    cmd_quit,
    cmd_select,
)
from aegiskv.protocols.resp.keys import (
    cmd_copy,
    cmd_dbsize,
    cmd_del,
    cmd_exists,
    cmd_flush,
    cmd_keys,
    cmd_persist,
    cmd_randomkey,
    cmd_scan,
    cmd_touch,
    cmd_type,
    cmd_wait,
    expire_handler,
    expire_time_handler,
    rename_handler,
    ttl_handler,
)
from aegiskv.protocols.resp.objects import cmd_dump, cmd_object, cmd_restore
from aegiskv.protocols.resp.server import (
    cmd_acl,
    cmd_bgsave,
    cmd_command,
    cmd_config,
    cmd_debug,
    cmd_info,
    cmd_lastsave,
    cmd_memory,
    cmd_save,
    cmd_time,
)
from aegiskv.protocols.resp.slowlog import cmd_latency, cmd_slowlog
from aegiskv.protocols.resp.strings import (
    cmd_append,
    cmd_get,
    cmd_getdel,
    cmd_getex,
    cmd_getrange,
    cmd_getset,
    cmd_incrbyfloat,
    cmd_lcs,
    cmd_mget,
    cmd_mset,
    cmd_msetnx,
    cmd_psetex,
    cmd_set,
    cmd_setex,
    cmd_setnx,
    cmd_setrange,
    cmd_strlen,
    incr_handler,
)
from aegiskv.protocols.session import Session

# Each RESP command's handler, by the name its command table row gives.
HANDLERS: Final[dict[str, RespHandler]] = {
    "ping": cmd_ping,
    "auth": cmd_auth,
    "hello": cmd_hello,
    "quit": cmd_quit,
    "echo": cmd_echo,
    "select": cmd_select,
    "client": cmd_client,
    "acl": cmd_acl,
    "slowlog": cmd_slowlog,
    "latency": cmd_latency,
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
    "incr": incr_handler(1, False),
    "incrby": incr_handler(1, True),
    "decr": incr_handler(-1, False),
    "decrby": incr_handler(-1, True),
    "del": cmd_del,
    "unlink": cmd_del,
    "exists": cmd_exists,
    "type": cmd_type,
    "ttl": ttl_handler(1000),
    "pttl": ttl_handler(1),
    "expire": expire_handler("expire", 1000, False),
    "pexpire": expire_handler("pexpire", 1, False),
    "expireat": expire_handler("expireat", 1000, True),
    "pexpireat": expire_handler("pexpireat", 1, True),
    "persist": cmd_persist,
    "scan": cmd_scan,
    "wait": cmd_wait,
    "dbsize": cmd_dbsize,
    "flushdb": cmd_flush,
    "flushall": cmd_flush,
    "save": cmd_save,
    "bgsave": cmd_bgsave,
    "lastsave": cmd_lastsave,
    "debug": cmd_debug,
    "info": cmd_info,
    "memory": cmd_memory,
    "config": cmd_config,
    "command": cmd_command,
    "cluster": cmd_cluster,
    "readonly": cmd_readonly,
    "readwrite": cmd_readonly,
    # String and keyspace commands of issue 25.
    "getset": cmd_getset,
    "getrange": cmd_getrange,
    "substr": cmd_getrange,
    "setrange": cmd_setrange,
    "incrbyfloat": cmd_incrbyfloat,
    "setbit": cmd_setbit,
    "getbit": cmd_getbit,
    "bitcount": cmd_bitcount,
    "bitpos": cmd_bitpos,
    "bitop": cmd_bitop,
    "lcs": cmd_lcs,
    "bitfield": bitfield_handler(False),
    "bitfield_ro": bitfield_handler(True),
    "keys": cmd_keys,
    "rename": rename_handler(False),
    "renamenx": rename_handler(True),
    "copy": cmd_copy,
    "randomkey": cmd_randomkey,
    "touch": cmd_touch,
    "expiretime": expire_time_handler(1000),
    "pexpiretime": expire_time_handler(1),
    "object": cmd_object,
    "dump": cmd_dump,
    "restore": cmd_restore,
    "time": cmd_time,
}

_MEMORY: Final = COMMANDS["memory"]

# Lookup keyed by the name exactly as sent: lower and upper case hit directly,
# mixed case falls back to .lower().
_ROUTES: Final[dict[bytes, tuple[Command, RespHandler]]] = {}
_SERVED = {command.name: command for command in COMMAND_TABLE if command.resp}
for _name, _entry in bind_handlers("RESP", _SERVED, HANDLERS).items():
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


# Each error kind's RESP prefix: the reply's first word, and INFO errorstats' name for it.
ERROR_PREFIX = {
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
    ErrorKind.TRYAGAIN: "TRYAGAIN",  # redis-py's cluster client retries it, as Redis Cluster's own
    ErrorKind.CROSSSLOT: "CROSSSLOT",
    ErrorKind.BUSYKEY: "BUSYKEY",
    ErrorKind.READONLY: "READONLY",
}


class RespAdapter(WireAdapter[Args]):
    """Connects :class:`resp.RequestParser` to the pipeline."""

    __slots__ = ("_parser", "_routing", "_replica")

    def __init__(
        self,
        limits: resp.RespLimits,
        authenticated: bool,
        routing: Routing | None = None,
        replica: ReplicaReads | None = None,
    ) -> None:
        self._parser = resp.RequestParser(limits, authenticated=authenticated)
        self._routing = routing or Routing()
        # Set on the replica endpoint's connections: keyed requests go by its rules instead.
        self._replica = replica

    def receive_data(self, data: bytes) -> None:
        self._parser.receive_data(data)

    def take_requests(self) -> list[Args]:
        return self._parser.take_commands()

    def push_back(self, requests: list[Args]) -> None:
        self._parser.push_back(requests)

    def error_pending(self) -> bool:
        return self._parser.error_pending

    def violation_reply(self, error: PeerProtocolError) -> bytes:
        return encoder.error(f"ERR {error}")

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
            raise invalid(f"wrong number of arguments for '{request[0].lower().decode('utf-8', 'replace')}' command")
        if self._replica is not None:
            return self._route_on_replica(found, request)
        router = self._routing.router
        if router is not None and command.first_key and self._parser.authenticated:
            # Unauthenticated requests are refused (NOAUTH) before they could learn where keys live.
            if command is _MEMORY and request[1].upper() != b"USAGE":
                return found  # only MEMORY USAGE names a key
            last = command.last_key if command.last_key > 0 else count + command.last_key
            router.check_all(request[command.first_key : last + 1 : command.key_step])
        return found

    def _route_on_replica(self, found: tuple[Command, RespHandler], request: Args) -> tuple[Command, RespHandler]:
        """A request on the replica endpoint (aegiskv.cluster.replica_reads): its handler, guarded.

        Checked here, when routed, so the usual redirect leaves at once, and again by the guard
        where the request runs: READONLY may have run in between, and a resync may have emptied
        the copy (the guard then redirects rather than answer what the read saw).
        """
        command, handler = found
        authenticated = self._parser.authenticated
        if not command.first_key or (command is _MEMORY and request[1].upper() != b"USAGE"):
            if command.write and authenticated:
                raise CommandError(ErrorKind.READONLY, "You can't write against a read only replica.")
            return found
        last = command.last_key if command.last_key > 0 else len(request) + command.last_key
        keys = request[command.first_key : last + 1 : command.key_step]
        replica = self._replica
        assert replica is not None
        reads = "readonly" in command.flags
        if authenticated:
            # As a read if it is one: whether the connection sent READONLY is known when it runs.
            replica.start(keys, reads)

        def guarded(server: HandlerContext, session: Session, args: Args) -> bytes:
            generations = replica.start(keys, reads and session.readonly)
            reply = handler(server, session, args)
            replica.finish(keys, generations)
            return reply

        return command, guarded

    def batch_size(self, request: Args) -> int:
        return len(request) - 1

    def value_key(self, request: Args) -> bytes:
        return request[1]  # BITCOUNT, BITPOS, GETRANGE, SUBSTR: the key comes first (arity checked)

    def error_reply(self, request: Args | None, error: CommandError) -> bytes:
        return encoder.error(f"{ERROR_PREFIX[error.kind]} {error.message}")

    def authenticated(self) -> None:
        self._parser.authenticated = True


def refusal(reason: str) -> bytes:
    return encoder.error(f"ERR {reason}")
