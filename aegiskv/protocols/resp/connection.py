"""RESP connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT."""

from __future__ import annotations

import time

from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import REDIS_COMPATIBLE_VERSION
from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, integer, invalid, nullable
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
        return nullable(session.name, session)
    if sub == b"ID" and len(args) == 2:
        return resp.integer(session.connection_id)
    if sub == b"INFO" and len(args) == 2:
        return resp.verbatim(client_info_line(session), session.protocol)
    if sub == b"SETINFO" and len(args) == 4:
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
    if sub in (b"SETNAME", b"GETNAME", b"ID", b"INFO", b"SETINFO"):
        raise invalid(f"wrong number of arguments for 'client|{sub.decode().lower()}' command")
    raise invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CLIENT HELP.")
