"""Server and introspection commands against a real node, with redis-server 7.0 as the oracle.

COMMAND GETKEYS, subcommand rows (COMMAND INFO/LIST), CONFIG RESETSTAT, CLIENT LIST/KILL/
GETREDIR/NO-EVICT, ACL and INFO's cpu, commandstats and errorstats. Where a reply is
deterministic it is compared with redis-server's (started once per module on a free port);
the rest (CLIENT LIST's addresses, CPU seconds, counts) is checked for Redis's shape and for
what the node must have done (a killed connection is closed, a reset count is zero).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aegiskv.node.commands import SUBCOMMANDS
from aegiskv.testing.localnode import LocalNode
from tests.test_resp_oracle import _start_redis_server, _stop
from tests.wire import resp_address_of

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture(scope="module")
def aegis(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("srvcmds")), [])
    yield node
    node.stop()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    process, port = _start_redis_server(str(tmp_path_factory.mktemp("srvcmds-redis")))
    yield port
    _stop(process)


def _raw(client: redis.Redis) -> redis.Redis:
    client.response_callbacks.clear()  # the parsed reply, nothing re-shaped
    return client


@pytest.fixture
def ours(aegis: LocalNode) -> Iterator[redis.Redis]:
    host, port = resp_address_of(aegis)
    client = _raw(redis.Redis(host=host, port=port, protocol=2, socket_timeout=10))
    yield client
    client.close()


@pytest.fixture
def theirs(redis_port: int) -> Iterator[redis.Redis]:
    client = _raw(redis.Redis(port=redis_port, protocol=2, socket_timeout=10))
    yield client
    client.close()


def _reply(client: redis.Redis, *command: Any) -> Any:
    try:
        return client.execute_command(*command)
    except redis.ResponseError as error:
        return f"error: {error}"


# Deterministic on both servers: the same reply, or the same error text.
SAME_REPLY = [
    ("COMMAND", "GETKEYS", "get", "foo"),
    ("COMMAND", "GETKEYS", "ping", "x"),
    ("COMMAND", "GETKEYS", "nosuch", "x"),
    ("COMMAND", "GETKEYS", "get", "a", "b"),
    ("COMMAND", "GETKEYS", "config", "get", "x"),
    ("COMMAND", "GETKEYS", "config", "nosuch", "x"),
    ("COMMAND", "GETKEYS", "memory", "usage", "k"),
    ("COMMAND", "GETKEYS", "memory", "usage"),
    ("COMMAND", "GETKEYS", "memory", "x"),
    ("COMMAND", "GETKEYS", "memory"),
    ("COMMAND", "GETKEYS", "mset", "a", "1", "b"),
    ("COMMAND", "GETKEYS", "MGET", "a", "b", "c"),
    ("COMMAND", "GETKEYS"),
    ("COMMAND", "GETKEYSANDFLAGS", "set", "a", "b"),
    ("COMMAND", "GETKEYSANDFLAGS", "set", "a", "b", "GET"),
    ("COMMAND", "GETKEYSANDFLAGS", "del", "a", "b"),
    ("COMMAND", "GETKEYSANDFLAGS", "getdel", "a"),
    ("COMMAND", "GETKEYSANDFLAGS", "msetnx", "a", "1"),
    ("COMMAND", "GETKEYSANDFLAGS", "memory", "usage", "k"),
    ("COMMAND", "INFO", "config|get", "client|list", "nosuch|x", "get|x"),
    ("COMMAND", "COUNT", "x"),
    ("CONFIG", "RESETSTAT", "x"),
    ("CONFIG", "HELP", "x"),
    ("CONFIG", "FOO"),
    ("CLIENT", "KILL", "127.0.0.1:1"),
    ("CLIENT", "KILL", "ID", "99999"),
    ("CLIENT", "KILL", "ID", "0"),
    ("CLIENT", "KILL", "ID", "abc"),
    ("CLIENT", "KILL", "foo", "bar"),
    ("CLIENT", "KILL", "SKIPME", "maybe"),
    ("CLIENT", "KILL", "USER", "nosuch"),
    ("CLIENT", "KILL", "ADDR", "1.2.3.4:5", "SKIPME", "no"),
    ("CLIENT", "KILL", "LADDR", "1.2.3.4:5"),
    ("CLIENT", "KILL", "TYPE", "pubsub"),
    ("CLIENT", "KILL", "TYPE", "nosuch"),
    ("CLIENT", "GETREDIR"),
    ("CLIENT", "NO-EVICT", "maybe"),
    ("CLIENT", "NO-EVICT"),
    ("CLIENT", "LIST", "TYPE", "foo"),
    ("CLIENT", "LIST", "TYPE", "master"),
    ("CLIENT", "LIST", "ID", "1", "2", "x"),
    ("CLIENT", "LIST", "ID"),
    ("CLIENT", "LIST", "foo"),
    ("ACL", "WHOAMI"),
    ("ACL", "LIST"),
    ("ACL", "USERS"),
    ("ACL", "FOO"),
    ("ACL", "WHOAMI", "x"),
    ("LASTSAVE", "x"),
    ("SLOWLOG", "GET", "abc"),
    ("SLOWLOG", "GET", "-2"),
    ("SLOWLOG", "GET", "1", "2"),
    ("SLOWLOG", "LEN", "x"),
    ("SLOWLOG", "FOO"),
    ("LATENCY", "HISTORY"),
    ("LATENCY", "HISTORY", "nosuch"),
    ("LATENCY", "RESET", "nosuch"),
    ("LATENCY", "FOO"),
]


@needs_redis
@pytest.mark.parametrize("command", SAME_REPLY, ids=" ".join)
def test_replies_are_redis_replies(ours: redis.Redis, theirs: redis.Redis, command: tuple[str, ...]) -> None:
    assert _reply(ours, *command) == _reply(theirs, *command)


def _redis_subcommands(client: redis.Redis, container: str) -> dict[bytes, list]:
    entry = client.execute_command("COMMAND", "INFO", container)[0]
    return {sub[0]: sub for sub in entry[9]}


@needs_redis
@pytest.mark.parametrize("container", sorted(SUBCOMMANDS))
def test_subcommand_rows_are_redis_rows(ours: redis.Redis, theirs: redis.Redis, container: str) -> None:
    """Each subcommand AegisKV serves is described as Redis 7.0 describes it (CLIENT SETINFO is 7.2's)."""
    mine = _redis_subcommands(ours, container)
    reference = _redis_subcommands(theirs, container)
    assert set(mine) == {row.name.encode() for row in SUBCOMMANDS[container]}
    for name, entry in mine.items():
        if name == b"client|setinfo":
            continue
        # name, arity, flags, first/last/step, categories and tips; not the key specifications.
        assert entry[:8] == reference[name][:8], name
    # The container's own row: arity, flags, no keys, categories.
    assert (
        ours.execute_command("COMMAND", "INFO", container)[0][:7]
        == theirs.execute_command("COMMAND", "INFO", container)[0][:7]
    )
    # COMMAND LIST names the subcommands; COMMAND COUNT counts only commands.
    listed = set(ours.execute_command("COMMAND", "LIST"))
    assert set(mine) <= listed


def _fields(line: bytes) -> list[str]:
    return [pair.split("=", 1)[0] for pair in line.decode().split(" ")]


@needs_redis
def test_client_list_has_redis_fields(ours: redis.Redis, theirs: redis.Redis) -> None:
    (line,) = ours.execute_command("CLIENT", "LIST").splitlines()
    (reference,) = theirs.execute_command("CLIENT", "LIST").splitlines()
    # Redis 7.0's fields in its order, then 7.2's lib-name and lib-ver.
    assert _fields(line) == [*_fields(reference), "lib-name", "lib-ver"]
    assert re.search(rb" cmd=client\|list user=default redir=-1 resp=2 ", line)
    assert ours.execute_command("CLIENT", "INFO").startswith(line.split(b" ", 1)[0] + b" ")


def test_client_list_names_every_connection_and_their_last_command(aegis: LocalNode, ours: redis.Redis) -> None:
    host, port = resp_address_of(aegis)
    with redis.Redis(host=host, port=port, protocol=2, socket_timeout=10) as other:
        other.client_setname("worker-7")
        other_id = other.client_id()
        other.set("k", "v")
        lines = {int(line.split(b" ", 1)[0][3:]): line for line in ours.execute_command("CLIENT", "LIST").splitlines()}
        assert b" name=worker-7 " in lines[other_id] and b" cmd=set " in lines[other_id]
        assert ours.execute_command("CLIENT", "LIST", "ID", other_id).splitlines() == [lines[other_id]]
        other.client_getname()
        assert b" cmd=client|getname " in ours.execute_command("CLIENT", "LIST", "ID", other_id)
        assert ours.execute_command("CLIENT", "NO-EVICT", "on") == b"OK"
        assert b" flags=e " in ours.execute_command("CLIENT", "INFO")


def _connected(node: LocalNode) -> redis.Connection:
    host, port = resp_address_of(node)
    connection = redis.Connection(host=host, port=port, protocol=2, socket_timeout=10)
    connection.connect()
    return connection


def _closed_by_server(connection: redis.Connection) -> bool:
    connection.send_command("PING")
    try:
        connection.read_response()
    except (redis.ConnectionError, ConnectionError):
        return True
    return False


@pytest.mark.parametrize("form", ["id", "addr", "old"])
def test_client_kill_closes_the_other_connection(aegis: LocalNode, ours: redis.Redis, form: str) -> None:
    victim = _connected(aegis)
    try:
        victim.send_command("CLIENT", "ID")
        victim_id = victim.read_response()
        assert victim._sock is not None
        host, port = victim._sock.getsockname()[:2]
        if form == "id":
            assert ours.execute_command("CLIENT", "KILL", "ID", victim_id) == 1
        elif form == "addr":
            assert ours.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}", "SKIPME", "yes") == 1
        else:  # the old form: OK, or an error when no connection has that address
            assert ours.execute_command("CLIENT", "KILL", f"{host}:{port}") == b"OK"
        assert _closed_by_server(victim)
        remaining = ours.execute_command("CLIENT", "LIST", "ID", victim_id)
        assert remaining == b""
    finally:
        victim.disconnect()


def test_client_kill_skipme_no_closes_the_caller_after_its_reply(aegis: LocalNode) -> None:
    connection = _connected(aegis)
    try:
        connection.send_command("CLIENT", "ID")
        own_id = connection.read_response()
        connection.send_command("CLIENT", "KILL", "ID", own_id, "SKIPME", "no")
        assert connection.read_response() == 1  # the reply arrives, then the connection closes
        assert _closed_by_server(connection)
    finally:
        connection.disconnect()


def _info(client: redis.Redis, section: str) -> dict[str, str]:
    text = client.execute_command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_info_counts_commands_and_errors_and_resetstat_zeroes_them(ours: redis.Redis) -> None:
    ours.execute_command("CONFIG", "RESETSTAT")
    ours.execute_command("SET", "counted", "1")
    ours.execute_command("GET", "counted")
    with pytest.raises(redis.ResponseError):
        ours.execute_command("INCR", "nosuch-number-" + "x" * 3, "extra")  # wrong arity: no command runs
    ours.execute_command("SET", "word", "abc")
    with pytest.raises(redis.ResponseError):
        ours.execute_command("INCR", "word")  # runs and fails
    commands = _info(ours, "commandstats")
    assert re.fullmatch(
        r"calls=1,usec=\d+,usec_per_call=\d+\.\d\d,rejected_calls=0,failed_calls=1", commands["cmdstat_incr"]
    )
    assert commands["cmdstat_set"].startswith("calls=2,")
    assert _info(ours, "errorstats") == {"errorstat_ERR": "count=2"}
    assert int(_info(ours, "stats")["keyspace_hits"]) == 1
    assert int(_info(ours, "stats")["total_error_replies"]) == 2
    cpu = _info(ours, "cpu")
    assert list(cpu) == ["used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"]
    assert all(re.fullmatch(r"\d+\.\d{6}", value) for value in cpu.values())
    assert ours.execute_command("CONFIG", "RESETSTAT") == b"OK"
    assert "cmdstat_incr" not in _info(ours, "commandstats")
    assert _info(ours, "errorstats") == {}
    assert int(_info(ours, "stats")["keyspace_hits"]) == 0


def test_slowlog_logs_slow_requests_and_latency_samples_them(aegis: LocalNode, ours: redis.Redis) -> None:
    host, port = resp_address_of(aegis)
    try:
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "0")  # every request
        assert ours.execute_command("SLOWLOG", "RESET") == b"OK"
        with redis.Redis(host=host, port=port, protocol=2, socket_timeout=10) as other:
            other.client_setname("slow-one")
            other.set("slow:key", "v")
            address = "{}:{}".format(*other.connection_pool.get_connection()._sock.getsockname()[:2])
        entries = ours.execute_command("SLOWLOG", "GET", "-1")
        # An inline request is logged with its command's name (its arguments are not kept).
        assert [b"set"] in [entry[3] for entry in entries]
        mine = next(entry for entry in entries if entry[3] == [b"set"])
        assert mine[4:] == [address.encode(), b"slow-one"] and mine[2] >= 0
        ids = [entry[0] for entry in entries]
        assert ids == sorted(ids, reverse=True)  # newest first
        assert ours.execute_command("SLOWLOG", "LEN") >= len(entries) > 0
        assert len(ours.execute_command("SLOWLOG", "GET", "1")) == 1

        # A batch run in the worker pool is timed alone and logged with its arguments, shortened
        # as Redis shortens them; latency-monitor-threshold 1 ms samples it as the "command" event.
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "1", "latency-monitor-threshold", "1")
        ours.execute_command("SLOWLOG", "RESET")
        ours.execute_command("LATENCY", "RESET")
        pairs = [item for index in range(2000) for item in (f"batch:{index}", "x" * 200)]
        ours.execute_command("MSET", *pairs)
        logged = [entry for entry in ours.execute_command("SLOWLOG", "GET", "-1") if entry[3][0] == b"MSET"]
        assert len(logged) == 1
        assert logged[0][3][1:3] == [b"batch:0", b"x" * 128 + b"... (72 more bytes)"]
        assert len(logged[0][3]) == 32 and logged[0][3][-1] == b"... (3970 more arguments)"
        (latest,) = ours.execute_command("LATENCY", "LATEST")
        assert latest[0] == b"command" and latest[2] >= 1 and latest[3] >= latest[2]
        assert ours.execute_command("LATENCY", "HISTORY", "command")[-1] == [latest[1], latest[2]]
        assert ours.execute_command("LATENCY", "RESET") == 1
        assert ours.execute_command("LATENCY", "LATEST") == []
    finally:
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "10000", "latency-monitor-threshold", "0")
        ours.execute_command("FLUSHALL")


def test_slowlog_max_len_keeps_the_newest(ours: redis.Redis) -> None:
    try:
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "0", "slowlog-max-len", "3")
        for _ in range(10):
            ours.execute_command("PING")
        assert ours.execute_command("SLOWLOG", "LEN") == 3
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "-1")  # off
        ours.execute_command("SLOWLOG", "RESET")
        ours.execute_command("PING")
        assert ours.execute_command("SLOWLOG", "LEN") == 0
    finally:
        ours.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "10000", "slowlog-max-len", "128")
