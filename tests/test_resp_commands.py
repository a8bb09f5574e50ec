"""Every RESP command through redis-py against a real node.

redis-py runs with each of its parsers (its pure-Python RESP reader and hiredis), so a reply that
only one reader tolerates shows up. Error texts are Redis 7.0's, as redis-server 7.0.15 words them (collected from
it while writing these tests; tests/test_resp_protocol.py compares the two servers directly).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
from redis._parsers import _HiredisParser, _RESP2Parser
from redis._parsers.base import BaseParser
from redis.utils import HIREDIS_AVAILABLE

from aegiskv.backends.memory import entry_cost
from aegiskv.node.scan_cursors import MIN_LISTS
from aegiskv.protocols.resp.encoder import encode_command
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of

TOKEN = "s3cret-token"

# redis-py picks its reader with parser_class; with protocol=3 its Python reader becomes _RESP3Parser.
CLIENT_PARSERS = [
    pytest.param(_RESP2Parser, id="redispy-python"),
    pytest.param(
        _HiredisParser,
        id="redispy-hiredis",
        marks=pytest.mark.skipif(not HIREDIS_AVAILABLE, reason="hiredis is not installed"),
    ),
]


def start(tmp_path_factory, *args: str) -> LocalNode:
    return LocalNode(str(tmp_path_factory.mktemp("resp")), args)


# One node for the whole module: commands are cheap, starting nodes is not.
@pytest.fixture(scope="module")
def aegis(tmp_path_factory) -> Iterator[LocalNode]:
    node = start(tmp_path_factory)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def aegis_auth(tmp_path_factory) -> Iterator[LocalNode]:
    node = start(tmp_path_factory, "--auth-token", TOKEN)
    yield node
    node.stop()


def connect(node: LocalNode, parser_class=_RESP2Parser, **kwargs) -> redis.Redis:
    host, port = resp_address_of(node)
    pool = redis.ConnectionPool(host=host, port=port, parser_class=parser_class, socket_timeout=10, **kwargs)
    return redis.Redis(connection_pool=pool)


@pytest.fixture(params=CLIENT_PARSERS)
def r(aegis: LocalNode, request) -> Iterator[redis.Redis]:
    client = connect(aegis, request.param, protocol=2)  # redis-py 8 defaults to RESP3
    client.flushall()  # tests of one xdist worker run one at a time: each starts from an empty node
    yield client
    client.close()


@pytest.fixture(scope="module")
def shared_clients(aegis: LocalNode) -> Iterator[dict]:
    made: dict = {}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture(params=CLIENT_PARSERS)
def shared(aegis: LocalNode, shared_clients: dict, request) -> redis.Redis:
    """One RESP2 client per reader for the whole module, for the many stateless error checks."""
    if request.param not in shared_clients:
        shared_clients[request.param] = connect(aegis, request.param, protocol=2)
    return shared_clients[request.param]


@pytest.fixture(params=CLIENT_PARSERS)
def r3(aegis: LocalNode, request) -> Iterator[redis.Redis]:
    client = connect(aegis, request.param, protocol=3)
    client.flushall()
    yield client
    client.close()


def error_of(call: Callable[[], object]) -> str:
    """The full error line (code and text) of a command that must fail, as the server sent it.

    redis-py's ``parse_error`` (7.x and 8.x alike) cuts the code off the message only for the
    codes it maps to an exception class (``BaseParser.EXCEPTION_CLASSES``: ERR, WRONGPASS, NOAUTH,
    ...) and leaves every other line whole (NOPROTO ...). 8.x also records an unmapped code in
    ``status_code``, which 7.x leaves empty, so whether the code is in the message is decided by
    the parser's table, not by ``status_code`` being set.
    """
    with pytest.raises(redis.RedisError) as raised:
        call()
    error = raised.value
    code = getattr(error, "status_code", None)
    if code is not None and code in BaseParser.EXCEPTION_CLASSES:
        return f"{code} {error}"
    return str(error)


def call_raw(client: redis.Redis, *args: object) -> Any:
    """One command through redis-py's connection and reader, without its per-command reply post-processing.

    The reply is whatever the reader made of it (bytes, int, list, dict, None): Any, for the tests to index.
    """
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        client.connection_pool.release(connection)


def raw_exchange(node: LocalNode, payload: bytes, until: bytes) -> bytes:
    """Send ``payload`` on a fresh socket and read until the replies end with ``until``."""
    with socket.create_connection(resp_address_of(node), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while not received.endswith(until):
            data = sock.recv(65536)
            assert data, f"closed after {received!r}"
            received += data
        return received


# -- error texts ---------------------------------------------------------------------------

ARITY = "ERR wrong number of arguments for '{}' command"
SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
OVERFLOW = "ERR increment or decrement would overflow"
INVALID_EXPIRE = "ERR invalid expire time in '{}' command"

ERRORS = [
    (("PING", "a", "b"), ARITY.format("ping")),
    (("ECHO",), ARITY.format("echo")),
    (("ECHO", "a", "b"), ARITY.format("echo")),
    (("SELECT", "x"), NOT_INTEGER),
    (("AUTH", "a", "b", "c"), SYNTAX),
    (("HELLO", "4"), "NOPROTO unsupported protocol version"),
    (("HELLO", "x"), "ERR Protocol version is not an integer or out of range"),
    (("HELLO", "2", "foo"), "ERR Syntax error in HELLO option 'foo'"),
    (("HELLO", "3", "SETNAME", "a b"), "ERR Client names cannot contain spaces, newlines or special characters."),
    (("GET",), ARITY.format("get")),
    (("GET", "a", "b"), ARITY.format("get")),
    (("SET", "k"), ARITY.format("set")),
    (("SET", "k", "v", "EX", "0"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "EX", "-1"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "PX", "0"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "EXAT", "0"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "PXAT", "-5"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "EX", "x"), NOT_INTEGER),
    (("SET", "k", "v", "EX"), SYNTAX),
    (("SET", "k", "v", "NX", "XX"), SYNTAX),
    (("SET", "k", "v", "EX", "1", "PX", "1"), SYNTAX),
    (("SET", "k", "v", "KEEPTTL", "EX", "1"), SYNTAX),
    (("SET", "k", "v", "FOO"), SYNTAX),
    (("SET", "k", "v", "EX", "9223372036854775807"), INVALID_EXPIRE.format("set")),
    # Redis also refuses a TTL that overflows once the current time is added.
    (("SET", "k", "v", "EX", "9223372036854775"), INVALID_EXPIRE.format("set")),
    (("SET", "k", "v", "PX", "9223372036854775807"), INVALID_EXPIRE.format("set")),
    (("SETNX", "k"), ARITY.format("setnx")),
    (("SETEX", "k", "0", "v"), INVALID_EXPIRE.format("setex")),
    (("SETEX", "k", "x", "v"), NOT_INTEGER),
    (("SETEX", "k", "9223372036854775", "v"), INVALID_EXPIRE.format("setex")),
    (("PSETEX", "k", "0", "v"), INVALID_EXPIRE.format("psetex")),
    (("PSETEX", "k", "9223372036854775807", "v"), INVALID_EXPIRE.format("psetex")),
    (("GETEX", "k", "FOO"), SYNTAX),
    (("GETEX", "k", "EX", "0"), INVALID_EXPIRE.format("getex")),
    (("GETEX", "k", "EX", "1", "PX", "1"), SYNTAX),
    (("GETEX", "k", "PERSIST", "EX", "1"), SYNTAX),
    (("GETEX", "k", "PX", "9223372036854775807"), INVALID_EXPIRE.format("getex")),
    (("GETDEL",), ARITY.format("getdel")),
    (("MGET",), ARITY.format("mget")),
    (("MSET", "a"), ARITY.format("mset")),
    (("MSET", "a", "1", "b"), ARITY.format("mset")),
    (("MSETNX", "a", "1", "b"), ARITY.format("msetnx")),
    (("APPEND", "k"), ARITY.format("append")),
    (("STRLEN",), ARITY.format("strlen")),
    (("INCR", "str"), NOT_INTEGER),
    (("INCRBY", "k2", "x"), NOT_INTEGER),
    (("INCRBY", "k2", "1.5"), NOT_INTEGER),
    (("INCR", "big"), OVERFLOW),
    (("DECR", "small"), OVERFLOW),
    (("INCRBY", "big", "1"), OVERFLOW),
    (("DECRBY", "big", "-1"), OVERFLOW),
    (("DECRBY", "k3", "-9223372036854775808"), "ERR decrement would overflow"),
    (("DEL",), ARITY.format("del")),
    (("UNLINK",), ARITY.format("unlink")),
    (("EXISTS",), ARITY.format("exists")),
    (("TTL",), ARITY.format("ttl")),
    (("PTTL", "a", "b"), ARITY.format("pttl")),
    (("EXPIRE", "k"), ARITY.format("expire")),
    (("EXPIRE", "k", "x"), NOT_INTEGER),
    (("EXPIRE", "k", "10", "FOO"), "ERR Unsupported option FOO"),
    (("EXPIRE", "k", "10", "NX", "XX"), "ERR NX and XX, GT or LT options at the same time are not compatible"),
    (("EXPIRE", "k", "10", "NX", "GT"), "ERR NX and XX, GT or LT options at the same time are not compatible"),
    (("EXPIRE", "k", "10", "GT", "LT"), "ERR GT and LT options at the same time are not compatible"),
    (("EXPIRE", "k", "9223372036854775807"), INVALID_EXPIRE.format("expire")),
    (("PEXPIRE", "k", "9223372036854775807"), INVALID_EXPIRE.format("pexpire")),
    (("EXPIREAT", "k", "9223372036854775807"), INVALID_EXPIRE.format("expireat")),
    (("PERSIST",), ARITY.format("persist")),
    (("TYPE",), ARITY.format("type")),
    (("DBSIZE", "x"), ARITY.format("dbsize")),
    (("FLUSHDB", "FOO"), SYNTAX),
    (("FLUSHALL", "ASYNC", "x"), SYNTAX),
    (("SCAN",), ARITY.format("scan")),
    (("SCAN", "x"), "ERR invalid cursor"),
    (("SCAN", "0", "COUNT", "0"), SYNTAX),
    (("SCAN", "0", "COUNT", "x"), NOT_INTEGER),
    (("SCAN", "0", "MATCH"), SYNTAX),
    (("SCAN", "0", "FOO", "bar"), SYNTAX),
    (("CLIENT",), ARITY.format("client")),
    (("CLIENT", "FOO"), "ERR unknown subcommand 'FOO'. Try CLIENT HELP."),
    (("CLIENT", "SETNAME"), ARITY.format("client|setname")),
    (("CLIENT", "SETNAME", "a b"), "ERR Client names cannot contain spaces, newlines or special characters."),
    (("CLIENT", "SETNAME", "h\u00e9llo"), "ERR Client names cannot contain spaces, newlines or special characters."),
    (("CLIENT", "GETNAME", "x"), ARITY.format("client|getname")),
    (("CLIENT", "ID", "x"), ARITY.format("client|id")),
    (("CONFIG",), ARITY.format("config")),
    (("CONFIG", "FOO"), "ERR unknown subcommand 'FOO'. Try CONFIG HELP."),
    (("CONFIG", "GET"), ARITY.format("config|get")),
    (("COMMAND", "FOO"), "ERR unknown subcommand 'FOO'. Try COMMAND HELP."),
    (("COMMAND", "COUNT", "x"), ARITY.format("command|count")),
    (("COMMAND", "LIST", "FILTERBY", "FOO", "x"), SYNTAX),
    (("COMMAND", "LIST", "FILTERBY", "PATTERN"), SYNTAX),
    (("COMMAND", "LIST", "x"), SYNTAX),
    (("BGSAVE", "SCHEDULE", "x"), SYNTAX),
    (("MEMORY",), ARITY.format("memory")),
    (("MEMORY", "USAGE"), ARITY.format("memory|usage")),
    (("MEMORY", "USAGE", "k", "SAMPLES"), SYNTAX),
    (("MEMORY", "USAGE", "k", "SAMPLES", "x"), NOT_INTEGER),
    (("MEMORY", "USAGE", "k", "SAMPLES", "x", "FOO"), NOT_INTEGER),
    (("MEMORY", "USAGE", "k", "SAMPLES", "1", "FOO"), SYNTAX),
    (("MEMORY", "USAGE", "k", "SAMPLES", "-1"), SYNTAX),
    (("MEMORY", "USAGE", "k", "FOO", "1"), SYNTAX),
    (("MEMORY", "HELP", "x"), ARITY.format("memory|help")),
    (("MEMORY", "DOCTOR"), "ERR unknown subcommand 'DOCTOR'. Try MEMORY HELP."),
    (("SELECT", "4294967296"), "ERR value is out of range, value must between -2147483648 and 2147483647"),
    (("SELECT", "-1"), "ERR SELECT is not allowed in cluster mode"),
    (("FOO", "a", "b"), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
    (("foo",), "ERR unknown command 'foo', with args beginning with: "),
    (("FOO", "a b", "c\r\nd"), "ERR unknown command 'FOO', with args beginning with: 'a b' 'c  d' "),
    # Redis stops listing arguments once about 128 characters are shown.
    (
        ("FOO", "a" * 100, "b" * 100, "c" * 100),
        "ERR unknown command 'FOO', with args beginning with: '" + "a" * 100 + "' '" + "b" * 25 + "' ",
    ),
]


@pytest.mark.parametrize(
    ("args", "expected"), ERRORS, ids=[" ".join(args)[:40].replace("\r\n", "_") for args, _ in ERRORS]
)
def test_error_text(shared: redis.Redis, args: tuple[str, ...], expected: str) -> None:
    shared.mset({"str": "abc", "big": "9223372036854775807", "small": "-9223372036854775808", "k": "v"})
    shared.delete("k2", "k3")
    assert error_of(lambda: shared.execute_command(*args)) == expected
    assert shared.ping()  # an error reply leaves the connection usable


# -- connection ----------------------------------------------------------------------------


def test_ping_echo(r: redis.Redis) -> None:
    assert r.ping() is True
    assert call_raw(r, "PING", "hello") == b"hello"
    assert r.echo(b"a\r\nb\x00\xff") == b"a\r\nb\x00\xff"
    assert r.echo(b"") == b""


def test_select(r: redis.Redis) -> None:
    # One database: SELECT 0 is accepted so that clients configured with db=0 work; others are refused.
    assert r.execute_command("SELECT", "0") is True
    # Every node runs in cluster mode (INFO says so), so Redis's cluster-mode text.
    assert error_of(lambda: r.execute_command("SELECT", "1")) == "ERR SELECT is not allowed in cluster mode"


def test_quit_replies_then_closes(aegis: LocalNode) -> None:
    with socket.create_connection(resp_address_of(aegis), timeout=5) as sock:
        sock.sendall(encode_command(b"QUIT") + encode_command(b"PING"))
        received = b""
        while data := sock.recv(1024):
            received += data
    assert received == b"+OK\r\n"  # and nothing for the PING behind it


def test_auth_without_a_configured_token(r: redis.Redis) -> None:
    expected = (
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?"
    )
    assert error_of(lambda: r.execute_command("AUTH", "x")) == expected
    # The default user has no password: Redis accepts any password given with its name.
    assert r.execute_command("AUTH", "default", "anything") is True


def test_hello(r: redis.Redis) -> None:
    reply = call_raw(r, "HELLO", "2")
    fields = dict(zip(reply[::2], reply[1::2]))
    assert fields[b"server"] == b"redis"
    assert fields[b"proto"] == 2
    assert fields[b"mode"] == b"cluster"
    assert fields[b"role"] == b"master"
    assert fields[b"modules"] == []
    assert fields[b"id"] == r.client_id()


def test_hello_setname(r: redis.Redis) -> None:
    r.execute_command("HELLO", "2", "SETNAME", "named")
    assert r.client_getname() in ("named", b"named")


def test_client_commands(r: redis.Redis) -> None:
    client_id = r.client_id()
    assert isinstance(client_id, int) and client_id > 0
    assert r.client_getname() is None
    assert r.client_setname("worker-1") is True
    assert r.client_getname() in ("worker-1", b"worker-1")
    assert r.client_setinfo("LIB-NAME", "tests") is True
    assert r.client_setinfo("LIB-VER", "1.2.3") is True
    info = r.client_info()
    assert info["id"] == client_id
    assert info["name"] == "worker-1"
    assert info["lib-name"] == "tests"
    assert info["lib-ver"] == "1.2.3"
    assert info["cmd"] == "client|info"
    assert info["db"] == 0
    # An empty name clears it, as in Redis.
    assert r.client_setname("") is True
    assert r.client_getname() is None


# -- authentication ------------------------------------------------------------------------


# redis-py 8 opens every connection with HELLO, which a node requiring a token refuses before AUTH
# (redis-server too): what happens before authentication is checked on raw sockets.


def raw_session(node: LocalNode, exchanges: list[tuple[bytes, bytes]]) -> None:
    """Send each request on one connection; its whole reply must be the expected bytes."""
    with socket.create_connection(resp_address_of(node), timeout=10) as sock:
        for request, expected in exchanges:
            sock.sendall(request)
            reply = b""
            while len(reply) < len(expected) and expected.startswith(reply):
                data = sock.recv(65536)
                assert data, f"closed; expected {expected!r} after {request!r}"
                reply += data
            assert reply == expected, request


NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


def test_noauth_before_auth(aegis_auth: LocalNode) -> None:
    hello_refused = (
        # Redis 7.0's wording (7.2 added "<proto>" after the second HELLO).
        b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
        b"AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol "
        b"version at the same time\r\n"
    )
    raw_session(
        aegis_auth,
        [
            (encode_command(b"GET", b"k"), NOAUTH),
            (encode_command(b"PING"), NOAUTH),
            (b"SET k v\r\n", NOAUTH),
            # The text of Redis 7.2 (7.0 lacks "<proto>"); either is fine for clients.
            (encode_command(b"HELLO", b"3"), hello_refused),
            (encode_command(b"AUTH", TOKEN.encode()), b"+OK\r\n"),
            (encode_command(b"SET", b"k", b"v"), b"+OK\r\n"),
            (encode_command(b"GET", b"k"), b"$1\r\nv\r\n"),
        ],
    )


def test_auth_as_default_user(aegis_auth: LocalNode) -> None:
    raw_session(
        aegis_auth,
        [
            (encode_command(b"AUTH", b"default", TOKEN.encode()), b"+OK\r\n"),
            (encode_command(b"PING"), b"+PONG\r\n"),
        ],
    )


@pytest.mark.parametrize(
    "args",
    [(b"AUTH", b"wrong"), (b"AUTH", b"default", b"wrong"), (b"AUTH", b"nobody", TOKEN.encode())],
    ids=["token", "default-user", "other-user"],
)
def test_auth_refused(aegis_auth: LocalNode, args: tuple[bytes, ...]) -> None:
    raw_session(aegis_auth, [(encode_command(*args), WRONGPASS), (encode_command(b"GET", b"k"), NOAUTH)])


def test_hello_3_with_auth(aegis_auth: LocalNode) -> None:
    payload = encode_command(b"HELLO", b"3", b"AUTH", b"default", TOKEN.encode()) + encode_command(b"GET", b"x")
    replies = raw_exchange(aegis_auth, payload, until=b"*0\r\n_\r\n")  # modules: [], then a RESP3 null
    assert replies.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in replies
    raw_session(
        aegis_auth,
        [(encode_command(b"HELLO", b"3", b"AUTH", b"default", b"wrong"), WRONGPASS), (b"PING\r\n", NOAUTH)],
    )


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("client_parser", CLIENT_PARSERS)
def test_redis_py_with_password(aegis_auth: LocalNode, protocol: int, client_parser) -> None:
    # redis-py authenticates inside its opening HELLO (HELLO <protocol> AUTH default <token>).
    for username in (None, "default"):
        client = connect(aegis_auth, client_parser, protocol=protocol, username=username, password=TOKEN)
        assert client.set("k", "v") is True
        assert client.get("k") == b"v"
        maxmemory = client.config_get("maxmemory")["maxmemory"]
        assert maxmemory is not None and maxmemory.isdigit()
        client.close()
    wrong = connect(aegis_auth, client_parser, protocol=protocol, password="wrong")
    assert error_of(wrong.ping) == "WRONGPASS invalid username-password pair or user is disabled."


# -- strings -------------------------------------------------------------------------------


def test_get_set_binary_safe(r: redis.Redis) -> None:
    key, value = b"k\r\n\x00\xff ", b"\r\n$3\r\nabc\x00"
    assert r.get(key) is None
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.set(b"", b"") is True  # empty key and value are legal
    assert r.get(b"") == b""


def test_set_expiry_options(r: redis.Redis) -> None:
    assert r.set("ex", "v", ex=10) is True
    assert 9 <= r.ttl("ex") <= 10
    assert r.set("px", "v", px=10_000) is True
    assert 9_000 < r.pttl("px") <= 10_000
    assert r.set("exat", "v", exat=int(time.time()) + 100) is True
    assert 98 <= r.ttl("exat") <= 100
    assert r.set("pxat", "v", pxat=int(time.time() * 1000) + 100_000) is True
    assert 98_000 < r.pttl("pxat") <= 100_000
    # An absolute time in the past stores and expires at once.
    assert r.set("past", "v", exat=1) is True
    assert r.exists("past") == 0


def test_set_conditions_and_get(r: redis.Redis) -> None:
    assert r.set("k", "1", nx=True) is True
    assert r.set("k", "2", nx=True) is None
    assert r.set("absent", "1", xx=True) is None
    assert r.exists("absent") == 0
    assert r.set("k", "3", xx=True) is True
    assert r.set("k", "4", get=True) == b"3"
    assert r.set("new", "1", get=True) is None
    assert r.get("new") == b"1"
    # Redis 7 allows NX with GET: the old value comes back and nothing is written.
    assert r.set("k", "5", nx=True, get=True) == b"4"
    assert r.get("k") == b"4"


def test_set_keepttl(r: redis.Redis) -> None:
    r.set("k", "v", ex=100)
    assert r.set("k", "w", keepttl=True) is True
    assert r.get("k") == b"w"
    assert 98 <= r.ttl("k") <= 100
    r.set("k", "x")  # a plain SET drops the TTL
    assert r.ttl("k") == -1


def test_setnx_setex_psetex(r: redis.Redis) -> None:
    assert r.setnx("k", "v") is True
    assert r.setnx("k", "w") is False
    assert r.get("k") == b"v"
    assert r.execute_command("SETEX", "ex", 10, "v") is True  # redis-py 8 deprecates its setex helper
    assert 9 <= r.ttl("ex") <= 10
    assert r.psetex("px", 5_000, "v") is True
    assert 4_000 < r.pttl("px") <= 5_000


def test_getdel(r: redis.Redis) -> None:
    r.set("k", "v")
    assert r.getdel("k") == b"v"
    assert r.getdel("k") is None
    assert r.exists("k") == 0


def test_getex(r: redis.Redis) -> None:
    assert r.getex("missing", ex=10) is None
    r.set("k", "v")
    assert r.getex("k") == b"v"
    assert r.ttl("k") == -1
    assert r.getex("k", ex=10) == b"v"
    assert 9 <= r.ttl("k") <= 10
    assert r.getex("k", px=20_000) == b"v"
    assert 19_000 < r.pttl("k") <= 20_000
    assert r.getex("k", exat=int(time.time()) + 50) == b"v"
    assert 48 <= r.ttl("k") <= 50
    assert r.getex("k", pxat=int(time.time() * 1000) + 60_000) == b"v"
    assert 58_000 < r.pttl("k") <= 60_000
    assert r.getex("k", persist=True) == b"v"
    assert r.ttl("k") == -1
    assert r.getex("k", exat=1) == b"v"  # a deadline in the past deletes after reading
    assert r.exists("k") == 0


def test_mget_mset_msetnx(r: redis.Redis) -> None:
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "missing", "b") == [b"1", None, b"2"]
    assert r.msetnx({"c": "3", "a": "x"}) is False  # all or nothing
    assert r.mget("a", "c") == [b"1", None]
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.mget("c", "d") == [b"3", b"4"]


def test_append_strlen(r: redis.Redis) -> None:
    assert r.strlen("k") == 0
    assert r.append("k", "abc") == 3
    assert r.append("k", b"\r\n") == 5
    assert r.get("k") == b"abc\r\n"
    assert r.strlen("k") == 5
    r.expire("k", 100)
    r.append("k", "x")
    assert r.ttl("k") > 0  # APPEND keeps the TTL


def test_incr_decr(r: redis.Redis) -> None:
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 20) == -10
    assert r.incrby("n", -5) == -15
    assert r.get("n") == b"-15"
    r.set("max", str(2**63 - 2))
    assert r.incr("max") == 2**63 - 1
    r.set("ttl", "1", ex=100)
    r.incr("ttl")
    assert r.ttl("ttl") > 0  # INCR keeps the TTL


# -- keys ----------------------------------------------------------------------------------


def test_del_unlink_exists(r: redis.Redis) -> None:
    r.mset({"a": "1", "b": "2", "c": "3"})
    assert r.exists("a", "a", "missing", "b") == 3  # duplicates count twice, as in Redis
    assert r.delete("a", "missing", "a") == 1
    assert r.unlink("b", "c") == 2
    assert r.exists("a", "b", "c") == 0
    assert r.delete("missing") == 0


def test_ttl_pttl_persist_type(r: redis.Redis) -> None:
    assert r.ttl("missing") == -2
    assert r.pttl("missing") == -2
    assert r.type("missing") == b"none"
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.pttl("k") == -1
    assert r.type("k") == b"string"
    assert r.persist("k") is False
    r.expire("k", 100)
    assert r.persist("k") is True
    assert r.ttl("k") == -1
    assert r.persist("missing") is False


def test_expire_family(r: redis.Redis) -> None:
    assert r.expire("missing", 10) is False
    r.set("k", "v")
    assert r.expire("k", 100) is True
    assert 98 <= r.ttl("k") <= 100
    assert r.pexpire("k", 50_000) is True
    assert 48_000 < r.pttl("k") <= 50_000
    assert r.expireat("k", int(time.time()) + 200) is True
    assert 198 <= r.ttl("k") <= 200
    assert r.pexpireat("k", int(time.time() * 1000) + 300_000) is True
    assert 298 <= r.ttl("k") <= 300


def test_expire_conditions(r: redis.Redis) -> None:
    r.set("k", "v")
    assert r.expire("k", 100, xx=True) is False  # no TTL yet
    assert r.expire("k", 100, gt=True) is False  # no TTL counts as infinite
    assert r.expire("k", 100, lt=True) is True
    assert r.expire("k", 200, nx=True) is False  # has a TTL now
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 200, gt=True) is True
    assert r.expire("k", 300, lt=True) is False
    assert r.expire("k", 150, lt=True) is True
    assert r.expire("k", 120, xx=True) is True
    assert 118 <= r.ttl("k") <= 120
    r.set("fresh", "v")
    assert r.expire("fresh", 100, nx=True) is True
    assert r.execute_command("EXPIRE", "fresh", "200", "XX", "GT") == 1


@pytest.mark.parametrize(
    "args",
    [("EXPIRE", "k", "-1"), ("PEXPIRE", "k", "0"), ("EXPIREAT", "k", "1"), ("PEXPIREAT", "k", "-100")],
    ids=lambda args: " ".join(args),
)
def test_expire_in_the_past_deletes(r: redis.Redis, args: tuple[str, ...]) -> None:
    r.set("k", "v")
    assert r.execute_command(*args) == 1
    assert r.exists("k") == 0
    assert r.get("k") is None


def test_dbsize_flush(r: redis.Redis) -> None:
    assert r.dbsize() == 0
    r.mset({f"k{index}": "v" for index in range(25)})
    assert r.dbsize() == 25
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.set("k", "v")
    assert r.flushall(asynchronous=True) is True
    assert r.dbsize() == 0
    r.set("k", "v")
    assert r.execute_command("FLUSHDB", "SYNC") is True
    assert r.dbsize() == 0


def test_scan_returns_every_key(r: redis.Redis) -> None:
    keys = {f"scan:{index}".encode() for index in range(1000)}
    others = {f"other:{index}".encode() for index in range(50)}
    r.mset({key: b"v" for key in keys | others})
    seen = list(r.scan_iter(match="scan:*", count=37))
    assert set(seen) == keys
    assert len(seen) >= len(keys)
    everything = list(r.scan_iter(count=100))
    assert set(everything) == keys | others
    assert set(r.scan_iter(_type="string", count=500)) == keys | others
    assert list(r.scan_iter(_type="hash", count=500)) == []


def test_scan_cursor_and_count(r: redis.Redis) -> None:
    r.mset({f"k{index}": "v" for index in range(105)})
    cursor, pages, seen = 0, 0, []
    while True:
        cursor, page = r.scan(cursor, count=10)
        pages += 1
        assert len(page) <= 20  # COUNT is a hint, but it bounds the work per call
        seen += page
        if cursor == 0:
            break
        assert pages < 1000
    assert pages >= 6
    assert len(set(seen)) == 105


def test_scan_while_keys_change(r: redis.Redis) -> None:
    # Keys present for the whole scan are returned; keys added or removed meanwhile may or may not be.
    stable = {f"stable:{index}".encode() for index in range(300)}
    doomed = [f"doomed:{index}".encode() for index in range(300)]
    r.mset({key: b"v" for key in [*stable, *doomed]})
    cursor, seen, round_ = 0, set[bytes](), 0
    while True:
        cursor, page = r.scan(cursor, count=25)
        seen.update(cast("list[bytes]", page))  # no decode_responses: redis-py gives the keys as bytes
        r.delete(*doomed[round_ * 10 : round_ * 10 + 10])
        r.set(f"new:{round_}", "v")
        round_ += 1
        if cursor == 0:
            break
    assert stable <= seen
    assert {key for key in seen if key.startswith(b"doomed:")} <= set(doomed)


def test_a_scan_outlives_many_abandoned_ones(r: redis.Redis) -> None:
    keys = {f"outlive:{index}".encode() for index in range(300)}
    r.mset({key: b"v" for key in keys})
    cursor, seen = r.scan(0, count=10)
    for index in range(150):  # scans started and dropped, each after a write so none share a snapshot
        r.set(f"abandon:{index}", "v")
        r.scan(0, count=10)
    while cursor:
        cursor, page = r.scan(cursor, count=50)
        seen += page
    assert keys <= set(seen)


def test_scans_past_the_snapshot_budget_are_refused_and_those_under_way_finish(start_node) -> None:
    # max-memory 1 MB: SCAN's snapshots may hold 256 KiB, and one copy of 5,000 keys can hold
    # about 265 KB (every key, should all be deleted meanwhile), so only the MIN_LISTS copies
    # always allowed fit.
    node = start_node("--max-memory", "1", "--resp-bind", "127.0.0.1:0")
    client = connect(node, protocol=2)
    keys = {b"budget:%05d" % index for index in range(5_000)}
    client.mset(dict.fromkeys(keys, b"v"))
    under_way = []
    for index in range(MIN_LISTS):
        client.set(f"written:{index}", "v")  # so no scan can share another's copy
        cursor, seen = client.scan(0, count=100)
        cursor, page = client.scan(cursor, count=100)  # past the first page: a scan, not a probe
        under_way.append((cursor, seen + page))
    client.set("written:last", "v")
    with pytest.raises(redis.ResponseError, match=rf"too many SCANs under way \({MIN_LISTS} key lists holding"):
        client.scan(0, count=100)
    for cursor, seen in under_way:
        while cursor:
            cursor, page = client.scan(cursor, count=500)
            seen += page
        assert keys <= set(seen)
    assert len(list(client.scan_iter(count=1000))) == 5_000 + MIN_LISTS + 1  # with those done, a new one runs
    client.close()


@pytest.mark.parametrize("cursor", ["1", "4294967296", "18446744073709551615", "-1"])
def test_a_cursor_never_handed_out_is_refused(r: redis.Redis, cursor: str) -> None:
    with pytest.raises(redis.ResponseError, match="start the SCAN again at 0"):
        r.execute_command("SCAN", cursor)


# -- server --------------------------------------------------------------------------------


def test_info_parses(r: redis.Redis) -> None:
    r.set("k", "v")
    r.set("t", "v", ex=100)
    info = r.info()
    assert info["redis_version"].count(".") == 2
    assert info["redis_mode"] == "cluster" and info["cluster_enabled"] == 1
    assert info["tcp_port"] == r.connection_pool.connection_kwargs["port"]
    assert info["connected_clients"] >= 1
    assert isinstance(info["used_memory"], int)
    db0 = info["db0"]
    assert (db0["keys"], db0["expires"]) == (2, 1)
    assert 90_000 < db0["avg_ttl"] <= 100_000  # ms left of the one key with a TTL


@pytest.mark.parametrize(
    ("section", "present", "absent"),
    [
        ("server", "redis_version", "used_memory"),
        ("clients", "connected_clients", "redis_version"),
        ("memory", "used_memory", "redis_version"),
        ("stats", "total_commands_processed", "used_memory"),
        ("keyspace", "db0", "redis_version"),
    ],
)
def test_info_sections(r: redis.Redis, section: str, present: str, absent: str) -> None:
    r.set("k", "v")
    info = r.info(section)
    assert present in info
    assert absent not in info
    assert {present, absent} <= set(r.info("everything"))
    assert {present, absent} <= set(r.info("all"))


def test_memory_usage_is_what_the_key_is_charged(r: redis.Redis) -> None:
    r.set("mem:small", "v")
    r.set("mem:large", "v" * 10_000)
    r.set("mem:ttl", "v", ex=100)
    small = r.memory_usage("mem:small")
    assert small is not None and small == entry_cost(len(b"mem:small"), 1)
    large = r.memory_usage("mem:large")
    assert large is not None and large - small >= 9_999  # at least the value's length more
    assert r.memory_usage("mem:ttl") == entry_cost(len(b"mem:ttl"), 1, has_ttl=True) > entry_cost(len(b"mem:ttl"), 1)
    assert r.memory_usage("mem:small", samples=0) == small
    assert call_raw(r, "MEMORY", "USAGE", "mem:small", "SAMPLES", "5", "samples", "3") == small  # as Redis
    assert r.memory_usage("mem:missing") is None
    assert call_raw(r, "MEMORY", "HELP")[0].startswith(b"MEMORY <subcommand>")


def test_info_memory_policy_agrees_with_config(r: redis.Redis) -> None:
    # Monitoring reads INFO, tools read CONFIG GET: both must name the same policy, one Redis knows.
    policy = r.config_get("maxmemory-policy")["maxmemory-policy"]
    assert r.info("memory")["maxmemory_policy"] == policy
    maxmemory = r.config_get("maxmemory")["maxmemory"]
    assert maxmemory is not None and r.info("memory")["maxmemory"] == int(maxmemory)


def test_command(r: redis.Redis) -> None:
    commands = r.command()
    assert commands["get"]["arity"] == 2
    assert "readonly" in commands["get"]["flags"]
    assert commands["set"]["arity"] == -3
    assert commands["mset"]["step_count"] == 2
    assert commands["del"]["last_key_pos"] == -1
    assert r.command_count() == len(commands)
    assert set(commands) >= {"ping", "get", "set", "scan", "info", "config", "command", "client", "hello"}
    # COMMAND LIST names the subcommands too (as Redis 7.0: config|get), COMMAND (and COUNT) only commands.
    listed = set(r.command_list())
    assert {name for name in listed if b"|" not in name} == {name.encode() for name in commands}
    assert {b"config|get", b"client|list", b"command|getkeys"} <= listed


def test_command_info(r: redis.Redis) -> None:
    entries = call_raw(r, "COMMAND", "INFO", "get", "nosuch", "SET")
    assert len(entries) == 3
    assert entries[0][:7] == [b"get", 2, [b"readonly", b"fast"], 1, 1, 1, [b"@read", b"@string", b"@fast"]]
    assert entries[1] is None
    assert entries[2][:2] == [b"set", -3]
    assert entries[2][6] == [b"@write", b"@string", b"@slow"]  # the categories Redis gives them
    assert call_raw(r, "COMMAND", "INFO", "del")[0][6] == [b"@keyspace", b"@write", b"@slow"]
    assert call_raw(r, "COMMAND", "INFO", "ping")[0][6] == [b"@fast", b"@connection"]


def test_command_list_filters(r: redis.Redis) -> None:
    assert call_raw(r, "COMMAND", "LIST", "FILTERBY", "PATTERN", "get*") == [
        b"get",
        b"getbit",
        b"getdel",
        b"getex",
        b"getrange",
        b"getset",
    ]
    assert call_raw(r, "COMMAND", "LIST", "FILTERBY", "PATTERN", "GET") == [b"get"]
    assert call_raw(r, "COMMAND", "LIST", "FILTERBY", "MODULE", "any") == []
    strings = call_raw(r, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "string")
    assert {b"get", b"set", b"mget", b"incr", b"append"} <= set(strings)
    assert not {b"del", b"ping", b"scan"} & set(strings)
    reads = set(call_raw(r, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "READ"))
    assert {b"get", b"mget", b"exists", b"ttl"} <= reads and b"set" not in reads


def test_command_info_without_names_lists_every_command(r: redis.Redis) -> None:
    # Redis 7: "COMMAND INFO" with no name describes every command, like COMMAND.
    assert len(call_raw(r, "COMMAND", "INFO")) == r.command_count()


def test_command_docs(r: redis.Redis) -> None:
    reply = call_raw(r, "COMMAND", "DOCS", "get", "nosuch")
    assert reply[0] == b"get"
    docs = dict(zip(reply[1][::2], reply[1][1::2]))
    assert docs[b"summary"] == b"Get the value of a key"
    assert docs[b"group"] == b"string"
    assert len(reply) == 2  # unknown names are left out


def test_config_get(r: redis.Redis) -> None:
    values = r.config_get("maxmemory")
    assert list(values) == ["maxmemory"]
    maxmemory = values["maxmemory"]
    assert maxmemory is not None and int(maxmemory) > 0
    everything = r.config_get("*")
    assert {"maxmemory", "maxmemory-policy", "maxclients", "timeout", "databases", "save", "appendonly"} <= set(
        everything
    )
    assert everything["databases"] == "1"
    assert r.config_get("max*") == {key: value for key, value in everything.items() if key and key.startswith("max")}
    # Names are case-insensitive; an exact name comes back spelled as it was asked (as Redis does).
    assert r.config_get("MAXMEMORY") == {"MAXMEMORY": values["maxmemory"]}
    assert r.config_get("MAX*") == r.config_get("max*")
    assert r.config_get("cluster-enabled") == {"cluster-enabled": "yes"}
    assert r.config_get("nosuch") == {}
    assert r.config_get("save", "appendonly") == {"save": "", "appendonly": "no"}
    # A setting named twice comes once, as Redis answers.
    assert call_raw(r, "CONFIG", "GET", "MAXMEMORY", "maxmemory") == [b"MAXMEMORY", maxmemory.encode()]
    twice = call_raw(r, "CONFIG", "GET", "maxmemory", "max*")
    names = twice[::2]
    assert len(names) == len(set(names)) and names[0] == b"maxmemory" and len(names) == len(r.config_get("max*"))
    # The longest string a request may carry: a value (64 MiB by default) or a key.
    assert r.config_get("proto-max-bulk-len") == {"proto-max-bulk-len": str(64 << 20)}


def test_config_set_refuses_what_is_fixed_at_start_up(r: redis.Redis) -> None:
    before = r.config_get("*")
    assert error_of(lambda: r.config_set("port", "1")) == (
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    )
    # maxmemory is live, but in whole megabytes (max_memory's unit): one byte is refused.
    assert error_of(lambda: r.config_set("maxmemory", "1")).startswith("ERR CONFIG SET failed")
    assert r.config_get("*") == before


# -- RESP3 ---------------------------------------------------------------------------------


def test_resp3_client(r3: redis.Redis) -> None:
    assert r3.get("missing") is None
    assert r3.mget("missing", "other") == [None, None]
    assert r3.set("k", "v", nx=True) is True
    assert r3.set("k", "v", nx=True) is None
    assert r3.getex("missing") is None
    assert r3.client_getname() is None
    hello = call_raw(r3, "HELLO", "3")
    assert isinstance(hello, dict)
    assert hello[b"proto"] == 3
    assert hello[b"server"] == b"redis"
    config = call_raw(r3, "CONFIG", "GET", "maxmemory")
    assert isinstance(config, dict) and list(config) == [b"maxmemory"]
    assert "redis_version" in r3.info("server")
    docs = call_raw(r3, "COMMAND", "DOCS", "get")
    assert docs[b"get"][b"summary"] == b"Get the value of a key"


def test_resp3_wire_encoding(aegis: LocalNode) -> None:
    # redis-py maps "$-1" and "_" to the same None: check the bytes themselves.
    requests = [
        (b"HELLO", b"3"),
        (b"FLUSHALL",),
        (b"GET", b"missing"),
        (b"MGET", b"missing", b"missing"),
        (b"SET", b"k", b"v", b"NX", b"GET"),  # writes (the key was absent) and returns the old value: none
        (b"SET", b"k", b"v", b"NX"),  # does not write
        (b"CONFIG", b"GET", b"appendonly"),
        (b"INFO", b"keyspace"),
        (b"PING",),
    ]
    replies = raw_exchange(aegis, b"".join(encode_command(*request) for request in requests), until=b"+PONG\r\n")
    assert replies.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    marker = b"$7\r\nmodules\r\n*0\r\n"  # the end of the HELLO map
    after_hello = replies[replies.index(marker) + len(marker) :]
    keyspace = b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"
    assert after_hello == (
        b"+OK\r\n"
        + b"_\r\n"
        + b"*2\r\n_\r\n_\r\n"
        + b"_\r\n"
        + b"_\r\n"
        + b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        + b"=%d\r\ntxt:%s\r\n" % (len(keyspace) + 4, keyspace)
        + b"+PONG\r\n"
    )


# -- pipelines and large values ------------------------------------------------------------


def test_pipeline_of_1000_commands(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for index in range(500):
        pipe.set(f"p{index}", index)
        pipe.get(f"p{index}")
    results = pipe.execute()
    assert len(results) == 1000
    assert results[0::2] == [True] * 500
    assert results[1::2] == [str(index).encode() for index in range(500)]


def test_pipeline_keeps_errors_in_place(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.set("n", "x")
    pipe.incr("n")
    pipe.set("m", "1")
    pipe.incr("m")
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True
    assert isinstance(results[1], redis.ResponseError)
    assert str(results[1]) == "value is not an integer or out of range"
    assert results[2:] == [True, 2]


def test_large_values(r: redis.Redis) -> None:
    value = os.urandom(10 * 1024 * 1024)
    assert r.set("big", value) is True
    assert r.strlen("big") == len(value)
    assert r.get("big") == value
    pipe = r.pipeline(transaction=False)
    pipe.set("big2", value[::-1])
    pipe.get("big")
    pipe.get("big2")
    assert pipe.execute() == [True, value, value[::-1]]
    assert r.ping()
