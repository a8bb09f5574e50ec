"""RESP server commands (Redis's "server" group): INFO, CONFIG GET, SAVE, BGSAVE, LASTSAVE, MEMORY, COMMAND.

COMMAND COUNT, INFO, DOCS and LIST describe the command table's RESP rows
(aegiskv/node/commands.py).
"""

from __future__ import annotations

import platform
from typing import Final

import aegiskv
from aegiskv.node.commands import COMMAND_TABLE, REDIS_COMPATIBLE_VERSION, Command
from aegiskv.node.pattern import glob_match
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import reader as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, integer, invalid
from aegiskv.protocols.session import Session


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
