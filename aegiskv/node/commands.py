"""The command table: every operation the node serves, described once.

Protocols map their own syntax (a native opcode, a RESP command name) to an
entry here plus a small adapter that parses arguments, calls the one
:class:`~aegiskv.node.operations.Node` method that implements the operation, and encodes
the result. What a command *means* lives in ``Node``; what the server must know
about it to schedule it (may it run before AUTH, may it run inline on the
reactor, is it a write) lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower-case; the label in metrics and logs
    index: int  # position in COMMANDS; statistics are arrays indexed by it
    write: bool = False
    before_auth: bool = False  # allowed on a connection that has not authenticated
    # Work that grows with the number of keys (MGET, MSET, DEL of many keys, FLUSH):
    # above ``inline_batch_limit`` keys it runs in the worker pool, so one large
    # batch cannot hold the reactor (and every other client) for its whole duration.
    batch: bool = False
    # Work that takes long whatever its arguments (FLUSHALL frees every key): always the pool.
    slow: bool = False
    # Whether the pipeline must look closer before running this inline: a field,
    # not a property, because the pipeline reads it for every request.
    may_leave_reactor: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "may_leave_reactor", self.slow or self.batch)


_SPECS: list[tuple[str, dict[str, bool]]] = [
    ("ping", {}),
    ("auth", {"before_auth": True}),
    ("hello", {"before_auth": True}),  # HELLO ... AUTH authenticates; without it, refused before AUTH
    ("quit", {"before_auth": True}),
    ("echo", {}),
    ("select", {}),
    ("info", {"slow": True}),  # may walk every key (INFO shards)
    ("get", {}),
    ("get_ttl", {}),
    ("getdel", {"write": True}),
    ("getex", {"write": True}),
    ("set", {"write": True}),
    ("append", {"write": True}),
    ("incr", {"write": True}),
    ("del", {"write": True, "batch": True}),
    ("exists", {"batch": True}),
    ("expire", {"write": True}),
    ("persist", {"write": True}),
    ("ttl", {}),
    ("type", {}),
    ("strlen", {}),
    ("mget", {"batch": True}),
    ("mset", {"write": True, "batch": True}),
    ("dbsize", {}),
    ("flush", {"write": True, "slow": True}),
    ("snapshot", {"slow": True}),  # freezing the keyspace copies every key reference
    ("lastsave", {}),
    ("scan", {}),
    ("command", {}),
    ("client", {}),
    ("config", {}),
    ("topology", {}),  # native TOPOLOGY
    ("cluster", {}),  # RESP CLUSTER SLOTS / SHARDS / NODES / KEYSLOT / INFO / MYID
    ("readonly", {}),  # RESP READONLY / READWRITE (cluster clients send them)
    ("memory", {}),  # RESP MEMORY USAGE
]

COMMANDS: dict[str, Command] = {
    name: Command(name=name, index=index, **flags) for index, (name, flags) in enumerate(_SPECS)
}
COMMAND_LIST: list[Command] = list(COMMANDS.values())
