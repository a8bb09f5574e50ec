"""RESP connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT."""

from __future__ import annotations

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import REDIS_COMPATIBLE_VERSION
from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import ClientFigures, HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, integer, invalid, nullable, subcommand
from aegiskv.protocols.session import Session


def cmd_ping(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 1:
        return resp.PONG
    if len(args) > 2:
        raise invalid("wrong number of arguments for 'ping' command")
    return resp.bulk(args[1])


def cmd_echo(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.bulk(args[1])


def cmd_quit(server: HandlerContext, session: Session, args: Args) -> bytes:
    session.close_requested = True
    return resp.OK


def cmd_select(server: HandlerContext, session: Session, args: Args) -> bytes:
    index = integer(args[1])
    if not -(2**31) <= index < 2**31:  # Redis reads the index as a C int first
        raise invalid("value is out of range, value must between -2147483648 and 2147483647")
    if index != 0:  # every node runs in cluster mode (INFO says so), where Redis has one database
        raise invalid("SELECT is not allowed in cluster mode")
    return resp.OK


def _authenticate(server: HandlerContext, session: Session, user: bytes | None, token: bytes) -> None:
    authenticator = server.authenticator
    if not authenticator.required:
        if user is None:
            raise invalid(
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
        raise invalid(SYNTAX)
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
            raise invalid(f"Syntax error in HELLO option '{args[index].decode('utf-8', 'replace')}'")
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


# Redis allows '!' to '~' only: no spaces, control characters or bytes above ASCII.
_CLIENT_NAME_FORBIDDEN = set(range(0, 33)) | set(range(127, 256))


def _client_name(name: bytes) -> bytes:
    if any(byte in _CLIENT_NAME_FORBIDDEN for byte in name):
        raise invalid("Client names cannot contain spaces, newlines or special characters.")
    return name


def _show_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "?"


def _client_line(client: ClientFigures) -> str:
    """One CLIENT LIST line, Redis 7.0's fields in its order (then 7.2's lib-name and lib-ver).

    Redis's fixed reply buffer, argument and MULTI memory have no counterpart here
    (replies queue as a list, no command is queued): 0.
    """
    session = client.session
    events = ("r" if client.reading else "") + ("w" if client.output_bytes else "")
    fields = (
        ("id", session.connection_id),
        ("addr", _show_address(session.peer)),
        ("laddr", _show_address(session.local)),
        ("fd", client.descriptor),
        ("name", (session.name or b"").decode("utf-8", "replace")),
        ("age", int(client.age)),
        ("idle", int(client.idle)),
        ("flags", "e" if session.no_evict else "N"),
        ("db", 0),
        ("sub", 0),
        ("psub", 0),
        ("ssub", 0),
        ("multi", -1),
        ("qbuf", client.query_buffer),
        ("qbuf-free", 0),
        ("argv-mem", 0),
        ("multi-mem", 0),
        ("rbs", 0),
        ("rbp", 0),
        ("obl", 0),
        ("oll", client.output_items),
        ("omem", client.output_bytes),
        ("tot-mem", client.query_buffer + client.output_bytes),
        ("events", events),
        ("cmd", session.last_command),  # for the caller itself: this CLIENT LIST
        ("user", "default"),
        ("redir", -1),
        ("resp", session.protocol),
        ("lib-name", session.library_name.decode("utf-8", "replace")),
        ("lib-ver", session.library_version.decode("utf-8", "replace")),
    )
    return " ".join(f"{name}={value}" for name, value in fields) + "\n"


_CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled (always -1: no tracking).",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set the client library's name or version.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "HELP",
    "    Prints this help.",
]

# CLIENT LIST TYPE / KILL TYPE: every client here is a normal one (no replica or pub/sub connections).
_CLIENT_TYPES = {b"normal": True, b"master": False, b"slave": False, b"replica": False, b"pubsub": False}


def _client_type(name: bytes) -> bool:
    """Whether the type matches AegisKV's clients; raises Redis's error for an unknown one."""
    matches = _CLIENT_TYPES.get(name.lower())
    if matches is None:
        raise invalid(f"Unknown client type '{name.decode('utf-8', 'replace')}'")
    return matches


def _client_ids(texts: Args) -> set[int]:
    ids = set()
    for text in texts:
        value = parse_integer(text)
        if value is None or value < 1:
            raise invalid("Invalid client ID")
        ids.add(value)
    return ids


def _client_list(server: HandlerContext, session: Session, args: Args) -> bytes:
    clients = server.clients()
    if len(args) == 4 and args[2].lower() == b"type":
        if not _client_type(args[3]):
            clients = []
    elif len(args) > 3 and args[2].lower() == b"id":
        wanted = _client_ids(args[3:])
        clients = [client for client in clients if client.session.connection_id in wanted]
    elif len(args) != 2:
        raise invalid(SYNTAX)
    text = "".join(_client_line(client) for client in clients)
    return resp.verbatim(text.encode(), session.protocol)


def _kill_filters(args: Args) -> tuple[dict[bytes, bytes], bool]:
    """CLIENT KILL's filters and SKIPME, checked as Redis 7.0 checks them; the old form kills by address."""
    if len(args) == 3:
        return {b"addr": args[2]}, False  # the old form may kill the caller itself
    filters: dict[bytes, bytes] = {}
    skip_me = True
    for index in range(2, len(args), 2):
        option = args[index].lower()
        if index + 1 == len(args):
            raise invalid(SYNTAX)
        value = args[index + 1]
        if option == b"id":
            number = parse_integer(value)
            if number is None or number < 1:
                raise invalid("client-id should be greater than 0")
        elif option == b"type":
            _client_type(value)
        elif option == b"user":
            if value != b"default":
                raise invalid(f"No such user '{value.decode('utf-8', 'replace')}'")
        elif option == b"skipme":
            if value.lower() not in (b"yes", b"no"):
                raise invalid(SYNTAX)
            skip_me = value.lower() == b"yes"
            continue
        elif option not in (b"addr", b"laddr"):
            raise invalid(SYNTAX)
        filters[option] = value
    return filters, skip_me


def _client_kill(server: HandlerContext, session: Session, args: Args) -> bytes:
    """CLIENT KILL addr (the old form: +OK or an error), or filters (the count killed), as Redis 7.0."""
    filters, skip_me = _kill_filters(args)
    killed = 0
    for client in server.clients():
        other = client.session
        if skip_me and other is session:
            continue
        if not _client_matches(client, filters):
            continue
        killed += 1
        if other is session:
            session.close_requested = True  # after this reply, as Redis closes itself
        else:
            server.kill_client(other.connection_id)
    if len(args) == 3:
        if not killed:
            raise invalid("No such client")
        return resp.OK
    return resp.integer(killed)


def _client_matches(client: ClientFigures, filters: dict[bytes, bytes]) -> bool:
    session = client.session
    for option, value in filters.items():
        if option == b"id" and parse_integer(value) != session.connection_id:
            return False
        if option == b"addr" and _show_address(session.peer).encode() != value:
            return False
        if option == b"laddr" and _show_address(session.local).encode() != value:
            return False
        if option == b"type" and not _client_type(value):
            return False
    return True  # USER default: every connection is the default user's


def cmd_client(server: HandlerContext, session: Session, args: Args) -> bytes:  # noqa: C901 - one branch per subcommand
    sub = subcommand("client", args, session)
    if sub == b"setname":
        session.name = _client_name(args[2]) or None
        return resp.OK
    if sub == b"getname":
        return nullable(session.name, session)
    if sub == b"id":
        return resp.integer(session.connection_id)
    if sub == b"info":
        mine = [client for client in server.clients() if client.session is session]
        return resp.verbatim("".join(_client_line(client) for client in mine).encode(), session.protocol)
    if sub == b"list":
        return _client_list(server, session, args)
    if sub == b"kill":
        return _client_kill(server, session, args)
    if sub == b"getredir":
        return resp.integer(-1)  # no client-side caching: nothing to redirect
    if sub == b"no-evict":
        switch = args[2].lower()
        if switch not in (b"on", b"off"):
            raise invalid(SYNTAX)
        session.no_evict = switch == b"on"
        server.set_evictable(session.connection_id, not session.no_evict)
        return resp.OK
    if sub == b"setinfo":
        attribute = args[2].upper()
        if attribute not in (b"LIB-NAME", b"LIB-VER"):
            raise invalid(f"Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        if any(byte in _CLIENT_NAME_FORBIDDEN for byte in args[3]):
            raise invalid(f"{attribute.decode().lower()} cannot contain spaces, newlines or special characters.")
        if attribute == b"LIB-NAME":
            session.library_name = args[3]
        else:
            session.library_version = args[3]
        return resp.OK
    return resp.array([resp.simple(line) for line in _CLIENT_HELP])
