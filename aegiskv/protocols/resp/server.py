"""RESP server commands (Redis's "server" group): INFO, CONFIG GET, SAVE, BGSAVE, LASTSAVE, MEMORY, COMMAND.

COMMAND COUNT, INFO, DOCS and LIST describe the command table's RESP rows
(aegiskv/node/commands.py).
"""

from __future__ import annotations

import time
from typing import Final

from aegiskv.node.commands import COMMAND_TABLE, SUBCOMMANDS, Command, Subcommand
from aegiskv.node.pattern import glob_match
from aegiskv.protocols.adapter import HandlerContext, Info, InfoValue
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, integer, invalid, subcommand
from aegiskv.protocols.session import Session

_HEADINGS: Final = {"cpu": "CPU"}


def render_info(info: Info) -> bytes:
    """INFO text in Redis's layout: ``# Section``, ``field:value`` lines, a blank line between sections.

    A dictionary value is printed as Redis prints a database: ``keys=3,expires=1,avg_ttl=0``.
    """
    blocks = []
    for section, fields in info.items():
        # Redis's headings: Server, Clients, ... CPU, ... Keyspace
        lines = [f"# {_HEADINGS.get(section, section.capitalize())}"]
        lines += [f"{name}:{info_text(value)}" for name, value in fields.items()]
        blocks.append("\r\n".join(lines) + "\r\n")
    return "\r\n".join(blocks).encode()


def info_text(value: InfoValue) -> str:
    """One INFO value as Redis prints it."""
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


def cmd_info(server: HandlerContext, session: Session, args: Args) -> bytes:
    info = server.info([arg.decode("utf-8", "replace") for arg in args[1:]] or None)
    return resp.verbatim(render_info(info), session.protocol)


def _text(argument: bytes) -> str:
    return argument.decode("utf-8", "replace")


# Redis's loglevel words for AegisKV's levels (Redis has no "error": its nearest is "warning").
_REDIS_LOG_LEVELS: Final = {"debug": b"debug", "info": b"notice", "warn": b"warning", "error": b"warning"}


def _config_values(server: HandlerContext) -> dict[bytes, bytes]:
    """CONFIG GET's settings: Redis's names for what Redis has, then AegisKV's live settings by their names."""
    config = server.settings
    return {
        b"maxmemory": b"%d" % config.max_memory_bytes,
        b"loglevel": _REDIS_LOG_LEVELS[config.log_level],
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
        b"cluster-enabled": b"yes",  # every node answers the CLUSTER commands (as INFO's cluster_enabled says)
        # AegisKV's settings that CONFIG SET changes, in the units of the TOML file and the flags.
        b"max-memory": b"%d" % config.max_memory,
        b"rate-limit": f"{config.rate_limit:g}".encode(),
        b"rate-burst": b"%d" % config.rate_burst,
        b"log-level": config.log_level.encode(),
        b"slowlog-log-slower-than": b"%d" % config.slowlog_log_slower_than,
        b"slowlog-max-len": b"%d" % config.slowlog_max_len,
        b"latency-monitor-threshold": b"%d" % config.latency_monitor_threshold,
    }


_CONFIG_HELP = [
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value> (only the settings a node can change while it runs).",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "HELP",
    "    Prints this help.",
]


def cmd_config(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = subcommand("config", args, session)
    if sub == b"get":
        return _config_get(server, session, args[2:])
    if sub == b"set":
        if len(args) % 2:  # as Redis 7.0: the names and values must pair up
            raise invalid(SYNTAX)
        server.configure([(_text(args[index]), _text(args[index + 1])) for index in range(2, len(args), 2)])
        return resp.OK
    if sub == b"resetstat":
        server.reset_statistics()
        return resp.OK
    return resp.array([resp.simple(line) for line in _CONFIG_HELP])


def _config_get(server: HandlerContext, session: Session, patterns: Args) -> bytes:
    values = _config_values(server)
    # Each setting once, however many patterns name it, spelled as first matched:
    # an exact name in the case it was asked in (as Redis does), a pattern's match in lower case.
    matched: dict[bytes, tuple[bytes, bytes]] = {}
    for pattern in patterns:
        exact = pattern.lower()
        if exact in values:
            matched.setdefault(exact, (pattern, values[exact]))
            continue
        for name, value in values.items():
            if glob_match(exact, name):
                matched.setdefault(name, (name, value))
    pairs = [(resp.bulk(name), resp.bulk(value)) for name, value in matched.values()]
    return resp.mapping(pairs, session.protocol)


def cmd_bgsave(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() != b"SCHEDULE"):
        raise invalid(SYNTAX)
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
    if subcommand("memory", args, session) == b"usage":
        # As Redis: SAMPLES may repeat (the last wins; sizes here are exact, so it changes nothing).
        index = 3
        while index < len(args):
            if args[index].upper() != b"SAMPLES" or index + 1 == len(args) or integer(args[index + 1]) < 0:
                raise invalid(SYNTAX)
            index += 2
        size = session.node.memory_usage(args[2])
        return resp.null(session.protocol) if size is None else resp.integer(size)
    return resp.array([resp.simple(line) for line in _MEMORY_HELP])


def cmd_debug(server: HandlerContext, session: Session, args: Args) -> bytes:
    """DEBUG DIVERGE <count> damages this node's own copy of up to ``count`` keys (Node.diverge);
    DEBUG DIGEST answers a digest of every entry held (Node.keyspace_digest), as Redis's does.

    For tests of anti-entropy: refused unless the node was started with
    ``enable_debug_command`` (Redis's enable-debug-command is the same guard).
    """
    if not server.settings.enable_debug_command:
        raise invalid(
            "DEBUG command not allowed. Start the node with enable_debug_command = true "
            "(AEGIS_ENABLE_DEBUG_COMMAND=1); it is for tests only"
        )
    sub = args[1].lower()
    if sub == b"digest" and len(args) == 2:
        return resp.bulk(b"%016x" % session.node.keyspace_digest())
    if sub != b"diverge" or len(args) != 3:
        raise invalid("DEBUG serves two subcommands here: DIVERGE <count>, DIGEST")
    count = integer(args[2])
    if count < 0:
        raise invalid("DEBUG DIVERGE count must be >= 0")
    return resp.integer(session.node.diverge(count))


def cmd_lastsave(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(int(session.node.last_snapshot_time or server.started))


# -- COMMAND -------------------------------------------------------------------------------


# The rows this port serves, by name: COMMAND COUNT, INFO, DOCS and LIST describe them.
RESP_COMMANDS: Final[dict[bytes, Command]] = {
    command.name.encode(): command for command in COMMAND_TABLE if command.resp
}
# The subcommands of those rows by their full name (b"config|get"): COMMAND LIST names them,
# COMMAND INFO and DOCS describe them (alone, or under their container), GETKEYS finds their keys.
RESP_SUBCOMMANDS: Final[dict[bytes, Subcommand]] = {
    row.name.encode(): row for name, rows in SUBCOMMANDS.items() if name.encode() in RESP_COMMANDS for row in rows
}

_COMMAND_HELP = [
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
    "HELP",
    "    Prints this help.",
]


def cmd_command(server: HandlerContext, session: Session, args: Args) -> bytes:
    if len(args) == 1:
        return resp.array([_command_entry(name, spec) for name, spec in sorted(RESP_COMMANDS.items())])
    sub = subcommand("command", args, session)
    if sub == b"count":
        return resp.integer(len(RESP_COMMANDS))
    if sub == b"info":
        if len(args) == 2:  # no names: every command, as Redis 7
            return resp.array([_command_entry(name, spec) for name, spec in sorted(RESP_COMMANDS.items())])
        return resp.array([_command_info(name.lower(), session) for name in args[2:]])
    if sub == b"docs":
        names = [name.lower() for name in args[2:]] or sorted(RESP_COMMANDS)
        pairs = []
        for name in names:
            command = RESP_COMMANDS.get(name)
            if command is not None:
                pairs.append((resp.bulk(name), _command_doc(command, session)))
            elif name in RESP_SUBCOMMANDS:
                pairs.append((resp.bulk(name), _subcommand_doc(RESP_SUBCOMMANDS[name], session)))
        return resp.mapping(pairs, session.protocol)
    if sub == b"list":
        return resp.bulk_array(list(_command_list(args[2:])), session.protocol)
    if sub in (b"getkeys", b"getkeysandflags"):
        return _command_getkeys(args[2:], with_flags=sub == b"getkeysandflags", session=session)
    return resp.array([resp.simple(line) for line in _COMMAND_HELP])


def _command_info(name: bytes, session: Session) -> bytes:
    command = RESP_COMMANDS.get(name)
    if command is not None:
        return _command_entry(name, command)
    row = RESP_SUBCOMMANDS.get(name)
    return _subcommand_entry(row) if row is not None else resp.null(session.protocol)


def _command_list(filters: Args) -> list[bytes]:
    """COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]: commands and subcommands."""
    rows: dict[bytes, Command | Subcommand] = {**RESP_COMMANDS, **RESP_SUBCOMMANDS}
    if not filters:
        return sorted(rows)
    if len(filters) != 3 or filters[0].upper() != b"FILTERBY":
        raise invalid(SYNTAX)
    kind, value = filters[1].upper(), filters[2]
    if kind == b"MODULE":
        return []  # no modules
    if kind == b"ACLCAT":
        category = value.lower().decode("utf-8", "replace")
        return [name for name, row in sorted(rows.items()) if category in row.acl_categories]
    if kind == b"PATTERN":
        return [name for name in sorted(rows) if glob_match(value.lower(), name)]
    raise invalid(SYNTAX)


def _command_getkeys(target: Args, with_flags: bool, session: Session) -> bytes:
    """COMMAND GETKEYS / GETKEYSANDFLAGS: the keys ``target`` (a whole command) names, checked as Redis checks it."""
    name = target[0].lower()
    row: Command | Subcommand | None = RESP_COMMANDS.get(name)
    if row is None:
        raise invalid("Invalid command specified")
    if len(target) > 1 and name.decode() in SUBCOMMANDS:
        row = RESP_SUBCOMMANDS.get(name + b"|" + target[1].lower())
        if row is None:
            raise invalid("Invalid command specified")
    # A container alone has no keys: MEMORY's are MEMORY USAGE's (as Redis describes them).
    if not row.first_key or (isinstance(row, Command) and name.decode() in SUBCOMMANDS):
        raise invalid("The command has no key arguments")
    if (row.arity >= 0 and len(target) != row.arity) or len(target) < -row.arity:
        raise invalid("Invalid number of arguments specified for command")
    last = row.last_key if row.last_key >= 0 else len(target) + row.last_key
    keys = target[row.first_key : last + 1 : row.key_step]
    if not with_flags:
        return resp.array([resp.bulk(key) for key in keys])
    flags = row.key_flags
    if name == b"set" and not any(argument.upper() == b"GET" for argument in target[3:]):
        flags = ("OW", "update")  # Redis's variable flags: SET reads the key only with GET
    flag_list = resp.array([resp.simple(flag) for flag in flags])
    return resp.array([resp.array([resp.bulk(key), flag_list]) for key in keys])


def _command_doc(command: Command, session: Session) -> bytes:
    fields = [
        (resp.bulk(b"summary"), resp.bulk(command.summary.encode())),
        (resp.bulk(b"since"), resp.bulk(b"1.0.0")),
        (resp.bulk(b"group"), resp.bulk(command.group.encode())),
    ]
    subcommands = SUBCOMMANDS.get(command.name, ())
    if subcommands:
        docs = [(resp.bulk(row.name.encode()), _subcommand_doc(row, session)) for row in subcommands]
        fields.append((resp.bulk(b"subcommands"), resp.mapping(docs, session.protocol)))
    return resp.mapping(fields, session.protocol)


def _subcommand_doc(row: Subcommand, session: Session) -> bytes:
    container = RESP_COMMANDS[row.name.split("|", 1)[0].encode()]
    fields = [
        (resp.bulk(b"summary"), resp.bulk(row.summary.encode())),
        (resp.bulk(b"since"), resp.bulk(b"1.0.0")),
        (resp.bulk(b"group"), resp.bulk(container.group.encode())),
    ]
    return resp.mapping(fields, session.protocol)


def _command_entry(name: bytes, command: Command) -> bytes:
    subcommands = [_subcommand_entry(row) for row in SUBCOMMANDS.get(command.name, ())]
    # A container's own row has no keys: they are its subcommands' (MEMORY USAGE's), as in Redis.
    keys = (0, 0, 0) if subcommands else (command.first_key, command.last_key, command.key_step)
    return resp.array(
        [
            resp.bulk(name),
            resp.integer(command.arity),
            resp.array([resp.simple(flag) for flag in command.flags]),
            *(resp.integer(position) for position in keys),
            resp.array([resp.simple(f"@{category}") for category in command.acl_categories]),
            resp.EMPTY_ARRAY,  # tips
            resp.EMPTY_ARRAY,  # key specifications (first/last/step above describe the keys)
            resp.array(subcommands),
        ]
    )


def _subcommand_entry(row: Subcommand) -> bytes:
    return resp.array(
        [
            resp.bulk(row.name.encode()),
            resp.integer(row.arity),
            resp.array([resp.simple(flag) for flag in row.flags]),
            resp.integer(row.first_key),
            resp.integer(row.last_key),
            resp.integer(row.key_step),
            resp.array([resp.simple(f"@{category}") for category in row.acl_categories]),
            resp.array([resp.simple(tip) for tip in row.tips]),
            resp.EMPTY_ARRAY,  # key specifications (first/last/step above describe MEMORY USAGE's key)
            resp.EMPTY_ARRAY,
        ]
    )


# -- ACL: one user -----------------------------------------------------------------------------

_ACL_HELP = [
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LIST",
    "    Show users details in config file format.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
]


def cmd_acl(server: HandlerContext, session: Session, args: Args) -> bytes:
    """ACL WHOAMI, LIST, USERS: AegisKV has one user, ``default``, guarded by the auth token when there is one."""
    sub = subcommand("acl", args, session)
    if sub == b"whoami":
        return resp.bulk(b"default")
    if sub == b"users":
        return resp.bulk_array([b"default"], session.protocol)
    if sub == b"list":
        # Redis's rule for the default user: "nopass" without a password, else the password's
        # SHA-256 ("#<hex>"); the token's digest is not shown, as it would help a guesser offline.
        password = "#<redacted>" if server.authenticator.required else "nopass"
        return resp.bulk_array([f"user default on {password} ~* &* +@all".encode()], session.protocol)
    return resp.array([resp.simple(line) for line in _ACL_HELP])


def cmd_time(server: HandlerContext, session: Session, args: Args) -> bytes:
    """TIME: the server's wall clock as [seconds, microseconds] (redis-py's EXPIREAT helpers ask for it)."""
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    return resp.bulk_array([b"%d" % seconds, b"%d" % microseconds])
