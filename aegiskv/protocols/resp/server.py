"""RESP server commands (Redis's "server" group): INFO, CONFIG GET, SAVE, BGSAVE, LASTSAVE, MEMORY, COMMAND.

COMMAND COUNT, INFO, DOCS and LIST describe the command table's RESP rows
(aegiskv/node/commands.py).
"""

from __future__ import annotations

import time
from typing import Final

from aegiskv.node.commands import COMMAND_TABLE, Command
from aegiskv.node.pattern import glob_match
from aegiskv.protocols.adapter import HandlerContext, Info, InfoValue
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, integer, invalid
from aegiskv.protocols.session import Session


def render_info(info: Info) -> bytes:
    """INFO text in Redis's layout: ``# Section``, ``field:value`` lines, a blank line between sections.

    A dictionary value is printed as Redis prints a database: ``keys=3,expires=1,avg_ttl=0``.
    """
    blocks = []
    for section, fields in info.items():
        lines = [f"# {section.capitalize()}"]  # Redis's headings: Server, Clients, ... Keyspace
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
        b"cluster-enabled": b"yes",  # every node answers the CLUSTER commands (as INFO's cluster_enabled says)
    }


def cmd_config(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = args[1].upper()
    if sub == b"GET":
        if len(args) < 3:
            raise invalid("wrong number of arguments for 'config|get' command")
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
        raise invalid(
            "CONFIG SET is not supported: AegisKV reads its settings at start-up (change them and restart the node)"
        )
    if sub == b"RESETSTAT":
        raise invalid("CONFIG RESETSTAT is not supported")
    raise invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CONFIG HELP.")


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
    sub = args[1].upper()
    if sub == b"USAGE":
        if len(args) < 3:
            raise invalid("wrong number of arguments for 'memory|usage' command")
        # As Redis: SAMPLES may repeat (the last wins; sizes here are exact, so it changes nothing).
        index = 3
        while index < len(args):
            if args[index].upper() != b"SAMPLES" or index + 1 == len(args) or integer(args[index + 1]) < 0:
                raise invalid(SYNTAX)
            index += 2
        size = session.node.memory_usage(args[2])
        return resp.null(session.protocol) if size is None else resp.integer(size)
    if sub == b"HELP":
        if len(args) != 2:
            raise invalid("wrong number of arguments for 'memory|help' command")
        return resp.array([resp.simple(line) for line in _MEMORY_HELP])
    raise invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try MEMORY HELP.")


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
            raise invalid("wrong number of arguments for 'command|count' command")
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
    raise invalid(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try COMMAND HELP.")


def _command_list(filters: Args) -> list[bytes]:
    """COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]."""
    if not filters:
        return sorted(RESP_COMMANDS)
    if len(filters) != 3 or filters[0].upper() != b"FILTERBY":
        raise invalid(SYNTAX)
    kind, value = filters[1].upper(), filters[2]
    if kind == b"MODULE":
        return []  # no modules
    if kind == b"ACLCAT":
        category = value.lower().decode("utf-8", "replace")
        return [name for name, command in sorted(RESP_COMMANDS.items()) if category in command.acl_categories]
    if kind == b"PATTERN":
        return [name for name in sorted(RESP_COMMANDS) if glob_match(value.lower(), name)]
    raise invalid(SYNTAX)


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


def cmd_time(server: HandlerContext, session: Session, args: Args) -> bytes:
    """TIME: the server's wall clock as [seconds, microseconds] (redis-py's EXPIREAT helpers ask for it)."""
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    return resp.bulk_array([b"%d" % seconds, b"%d" % microseconds])
