"""The one command table (aegiskv/node/commands.py) and the dispatch tables both ports build from it.

What the table says is checked against redis-server in tests/test_resp_protocol.py
(COMMAND INFO); these tests check how the ports and the pipeline read it.
"""

from __future__ import annotations

import pytest

from aegiskv.node.commands import COMMAND_TABLE, COMMANDS, FAMILIES, Command
from aegiskv.protocols.adapter import CommandTableError, bind_handlers
from aegiskv.protocols.native import handlers as native_handlers
from aegiskv.protocols.native.codec import REQUEST_OPCODES, Opcode
from aegiskv.protocols.resp import adapter as resp_adapter

# The command labels of aegis_requests and aegis_request_duration_seconds: dashboards
# and alerts name them, so a change here is a change of the metrics' contract.
METRIC_LABELS = {
    "ping", "auth", "hello", "quit", "echo", "select", "info", "get", "get_ttl", "getdel", "getex",
    "set", "append", "incr", "del", "exists", "expire", "persist", "ttl", "type", "strlen", "mget",
    "mset", "dbsize", "flush", "snapshot", "lastsave", "debug", "scan", "command", "client", "config",
    "topology", "cluster", "readonly", "memory", "wait", "acl", "slowlog", "latency",
    # The string and keyspace commands of issue 25 (GETSET counts as set, SUBSTR as getrange,
    # RENAMENX as rename, PEXPIRETIME as expiretime).
    "getrange", "setrange", "incrbyfloat", "setbit", "getbit", "bitcount", "bitpos", "bitop", "keys",
    "rename", "copy", "randomkey", "touch", "expiretime", "object", "dump", "restore", "time", "lcs",
    "bitfield", "bitfield_ro",
    # The native admin request behind `aegis drain NODE` (issue 26).
    "drain",
}  # fmt: skip


def test_families_are_the_metric_labels_and_index_the_statistics() -> None:
    assert set(FAMILIES) == METRIC_LABELS
    assert len(FAMILIES) == len(METRIC_LABELS)
    for command in COMMAND_TABLE:
        assert FAMILIES[command.index] == command.family


def test_names_are_unique_and_every_row_is_served_somewhere() -> None:
    assert len(COMMANDS) == len(COMMAND_TABLE)
    assert all(command.resp or command.native is not None for command in COMMAND_TABLE)
    natives = [command.native for command in COMMAND_TABLE if command.native is not None]
    assert len(natives) == len(set(natives))


def _families_where(fact: str) -> set[str]:
    return {command.family for command in COMMAND_TABLE if getattr(command, fact)}


def test_scheduling_facts_follow_from_the_flags_and_keys() -> None:
    # What the pipeline reads per request, derived from the Redis columns rather than declared
    # a second time. The families are those the scheduling table named before it was merged.
    assert _families_where("write") == {
        "getdel", "getex", "set", "append", "incr", "del", "expire", "persist", "mset", "flush",
        "setrange", "incrbyfloat", "setbit", "bitop", "rename", "copy", "restore", "bitfield",
    }  # fmt: skip
    assert _families_where("before_auth") == {"auth", "hello", "quit"}
    assert _families_where("batch") == {"del", "exists", "mget", "mset", "bitop", "touch"}
    # KEYS and RANDOMKEY copy the key list; DUMP and RESTORE compute a CRC-64 in Python, LCS a table;
    # DEBUG DIGEST and DIVERGE walk every key.
    assert _families_where("slow") == {
        "info", "flush", "snapshot", "keys", "randomkey", "dump", "restore", "lcs", "debug",
    }  # fmt: skip
    # Work that grows with the value: in the pool when the value is large (server/pipeline.py).
    assert _families_where("sized_by_value") == {"bitcount", "bitpos", "getrange"}
    for command in COMMAND_TABLE:
        assert command.write == ("write" in command.flags)
        assert command.before_auth == ("no_auth" in command.flags)
        assert command.may_leave_reactor == (command.slow or command.batch or command.sized_by_value)
        # Statistics count a family as one command: its rows must schedule alike.
        first = next(row for row in COMMAND_TABLE if row.family == command.family)
        assert (command.write, command.before_auth, command.batch, command.slow, command.sized_by_value) == (
            first.write,
            first.before_auth,
            first.batch,
            first.slow,
            first.sized_by_value,
        ), command.name


def test_resp_routes_every_resp_row_in_both_cases_to_its_handler() -> None:
    routes = resp_adapter._ROUTES
    served = {command.name for command in COMMAND_TABLE if command.resp}
    assert {name.decode().lower() for name in routes} == served
    for name in served:
        for spelling in (name.encode(), name.upper().encode()):
            command, handler = routes[spelling]  # compiled, a tuple read from the dict is a new one
            assert command is COMMANDS[name]
            assert handler is resp_adapter.HANDLERS[name]


def test_native_routes_every_request_opcode_by_its_row() -> None:
    routes = native_handlers.ROUTES
    assert set(routes) == set(REQUEST_OPCODES)
    for opcode, (command, handler) in routes.items():
        assert command.native == Opcode(opcode).name
        assert handler is native_handlers.HANDLERS[Opcode(opcode)]
    # The rows' key positions decide which requests the router checks: these carry keys.
    keyed = {Opcode(opcode).name for opcode, (command, _) in routes.items() if command.first_key}
    assert keyed == {
        "GET", "GET_TTL", "SET", "DEL", "EXPIRE", "PERSIST", "MGET", "MSET",
        "SETRANGE", "GETRANGE", "INCRBYFLOAT", "RENAME", "COPY", "TOUCH", "EXPIRE_TIME",
    }  # fmt: skip


def _handler() -> None:
    pass


def test_a_row_without_a_handler_or_a_handler_without_a_row_is_refused() -> None:
    rows: dict[str, Command] = {"get": COMMANDS["get"], "set": COMMANDS["set"]}
    assert bind_handlers("RESP", rows, {"get": _handler, "set": _handler}) == {
        "get": (COMMANDS["get"], _handler),
        "set": (COMMANDS["set"], _handler),
    }
    with pytest.raises(CommandTableError, match=r"^RESP .*rows without a handler: set$"):
        bind_handlers("RESP", rows, {"get": _handler})
    with pytest.raises(CommandTableError, match=r"handlers without a row: frob$"):
        bind_handlers("RESP", rows, {"get": _handler, "set": _handler, "frob": _handler})
    with pytest.raises(CommandTableError, match=r"rows without a handler: GET_TTL$"):
        bind_handlers("native", {Opcode.GET_TTL: COMMANDS["get_ttl"]}, {})
