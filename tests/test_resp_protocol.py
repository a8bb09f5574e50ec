"""Raw-socket tests of the RESP port, after Redis's own tests/unit/protocol.tcl.

Each case sends bytes on a fresh connection and checks the exact reply bytes, whether the server
closed the connection, and that another client is still served. The expected bytes are Redis's:
when redis-server is installed the same cases run against a real one, which checks the table
itself, so "AegisKV equals the table" means "AegisKV equals redis-server byte for byte".
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.net.reactor import SMALL_READ
from aegiskv.node.commands import COMMAND_TABLE
from aegiskv.protocols.resp.encoder import encode_command
from aegiskv.testing.localnode import LocalNode
from tests.effort import examples
from tests.wire import cpu_seconds, resp_address_of

TOKEN = b"s3cret-token"
REDIS_SERVER = shutil.which("redis-server")
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

# Appended to the requests of a case that must leave the connection open: its reply proves that
# the server is still reading this connection, and marks the end of the case's replies.
SENTINEL = encode_command(b"ECHO", b"sentinel-7f3a")
SENTINEL_REPLY = b"$13\r\nsentinel-7f3a\r\n"

OPEN, CLOSED, SILENT = "open", "closed", "silent (neither replied fully nor closed)"


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis_server(directory, *extra: str) -> tuple[subprocess.Popen, tuple[str, int]]:
    assert REDIS_SERVER is not None
    port = free_port()
    command = [REDIS_SERVER, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", *extra]
    process = subprocess.Popen(command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64):  # +PONG, or -NOAUTH with a password: either way it serves
                    return process, ("127.0.0.1", port)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.02)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()  # by PID: this process only
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    process, address = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield address
    stop_process(process)


@pytest.fixture(scope="module")
def redis_server_auth(tmp_path_factory) -> Iterator[tuple[str, int]]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    process, address = start_redis_server(tmp_path_factory.mktemp("redis-auth"), "--requirepass", TOKEN.decode())
    yield address
    stop_process(process)


def start_aegis(directory, *args: str) -> LocalNode:
    return LocalNode(str(directory), args)


def stop_aegis(node: LocalNode) -> None:
    try:
        node.stop(timeout=10)
    except subprocess.TimeoutExpired:
        pass  # stop() killed it; a slow drain is not what these tests are about


@pytest.fixture(scope="module")
def aegis(tmp_path_factory) -> Iterator[LocalNode]:
    node = start_aegis(tmp_path_factory.mktemp("aegis"))
    yield node
    stop_aegis(node)


@pytest.fixture(scope="module")
def aegis_auth(tmp_path_factory) -> Iterator[LocalNode]:
    node = start_aegis(tmp_path_factory.mktemp("aegis-auth"), "--auth-token", TOKEN.decode())
    yield node
    stop_aegis(node)


# -- the exchange --------------------------------------------------------------------------


class Sentinel(NamedTuple):
    request: bytes
    reply_start: bytes  # where its reply begins (searched from the end)
    reply_end: bytes  # how its reply ends


# After authentication: an ECHO. Before it: HELLO with AUTH, the only request that both
# authenticates and gives a reply no case can produce by accident.
ECHO_SENTINEL = Sentinel(SENTINEL, SENTINEL_REPLY, SENTINEL_REPLY)
AUTH_SENTINEL = Sentinel(
    encode_command(b"HELLO", b"2", b"AUTH", b"default", TOKEN), b"*14\r\n$6\r\nserver\r\n", b"$7\r\nmodules\r\n*0\r\n"
)


def exchange(
    address: tuple[str, int], payload: bytes, closes: bool, sentinel: Sentinel = ECHO_SENTINEL, timeout: float = 2.0
) -> tuple[bytes, str]:
    """Send a case's bytes on a new connection: (every reply byte, OPEN / CLOSED / SILENT)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(payload if closes else payload + sentinel.request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: what it replied is still readable
        received = b""
        while True:
            if not closes and received.endswith(sentinel.reply_end):
                return received[: received.rindex(sentinel.reply_start)], OPEN
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return received, CLOSED  # a close with unread input arrives as a reset
            except TimeoutError:
                return received, SILENT
            if not data:
                return received, CLOSED
            received += data


def desync_exchange(address: tuple[str, int], start: bytes) -> tuple[bytes, str]:
    """protocol.tcl's desync test: after ``start``, write "payload" until the server answers or closes."""
    with socket.create_connection(address, timeout=3) as sock:
        sock.sendall(start)
        for _ in range(1024 * 1024 // 7000):  # at most 1 MiB
            try:
                sock.sendall(b"payload" * 1000)
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0)[0]:
                break
        return exchange_rest(sock)


def exchange_rest(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the server still sends on ``sock``, and whether it then closed."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received, CLOSED
        except TimeoutError:
            return received, SILENT
        if not data:
            return received, CLOSED
        received += data


def still_serving(address: tuple[str, int], password: bytes | None = None) -> bool:
    """Another client gets answers (the case did not break the server)."""
    prefix = encode_command(b"AUTH", password) if password else b""
    expected = (b"+OK\r\n" if password else b"") + b"+PONG\r\n"
    with socket.create_connection(address, timeout=3) as sock:
        sock.sendall(prefix + encode_command(b"PING"))
        received = b""
        while len(received) < len(expected) and (data := sock.recv(1024)):
            received += data
    return received == expected


class Case(NamedTuple):
    payload: bytes
    reply: bytes  # everything Redis sends (for an open connection: before the sentinel's reply)
    closes: bool


def unknown(name: bytes, *args: bytes) -> bytes:
    shown = b"".join(b"'%s' " % arg for arg in args)
    return b"-ERR unknown command '%s', with args beginning with: %s\r\n" % (name, shown)


def protocol_error(text: bytes) -> bytes:
    return b"-ERR Protocol error: " + text + b"\r\n"


CASES = {
    # -- from protocol.tcl
    "handle-an-empty-query": Case(b"\r\n" + encode_command(b"PING"), b"+PONG\r\n", False),
    "negative-multibulk-length": Case(b"*-10\r\n" + encode_command(b"PING"), b"+PONG\r\n", False),
    "out-of-range-multibulk-length": Case(b"*3000000000\r\n", protocol_error(b"invalid multibulk length"), True),
    "wrong-multibulk-payload-header": Case(
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", protocol_error(b"expected '$', got 'f'"), True
    ),
    "negative-multibulk-payload-length": Case(
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", protocol_error(b"invalid bulk length"), True
    ),
    "out-of-range-multibulk-payload-length": Case(
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n", protocol_error(b"invalid bulk length"), True
    ),
    "non-number-multibulk-payload-length": Case(
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n", protocol_error(b"invalid bulk length"), True
    ),
    "multibulk-request-not-followed-by-bulk-arguments": Case(
        b"*1\r\nfoo\r\n", protocol_error(b"expected '$', got 'f'"), True
    ),
    "generic-wrong-number-of-args": Case(
        encode_command(b"PING", b"x", b"y", b"z"), b"-ERR wrong number of arguments for 'ping' command\r\n", False
    ),
    "unbalanced-number-of-quotes": Case(
        b'set """test-key""" test-value\r\nping\r\n', protocol_error(b"unbalanced quotes in request"), True
    ),
    # -- more of the same kind
    "empty-multibulk": Case(b"*0\r\n" + encode_command(b"PING"), b"+PONG\r\n", False),
    "blank-inline-lines": Case(b"\n\n   \r\n\t\nping\n", b"+PONG\r\n", False),
    "pipelined-inline-commands": Case(
        b"ping\r\nping\r\necho hi\r\nset k v\r\nget 'k'\r\necho \"a\\r\\nb\"\r\n",
        b"+PONG\r\n+PONG\r\n$2\r\nhi\r\n+OK\r\n$1\r\nv\r\n$4\r\na\r\nb\r\n",
        False,
    ),
    "inline-vertical-tab-inside-a-token": Case(b"echo a\x0bb\r\n", b"$3\r\na\x0bb\r\n", False),
    "unknown-command": Case(b"foo a b\r\n", unknown(b"foo", b"a", b"b"), False),
    "wrong-arity-inline": Case(b"get\r\n", b"-ERR wrong number of arguments for 'get' command\r\n", False),
    "bytes-after-a-bulk-unchecked": Case(b"*1\r\n$4\r\nPINGxx" + encode_command(b"PING"), b"+PONG\r\n" * 2, False),
    "replies-before-a-protocol-error": Case(
        b"PING\r\nfoo\r\n*1\r\nx\r\n", b"+PONG\r\n" + unknown(b"foo") + protocol_error(b"expected '$', got 'x'"), True
    ),
    "replies-before-an-error-after-a-crlf-value": Case(
        encode_command(b"ECHO", b"a\r\nb") + b"*1\r\nx\r\n",
        b"$4\r\na\r\nb\r\n" + protocol_error(b"expected '$', got 'x'"),
        True,
    ),
    "integer-where-a-bulk-belongs": Case(b"*2\r\n$4\r\nECHO\r\n:1\r\n", protocol_error(b"expected '$', got ':'"), True),
    "big-number-where-a-bulk-belongs": Case(
        b"*2\r\n$4\r\nECHO\r\n(123\r\n", protocol_error(b"expected '$', got '('"), True
    ),
    "verbatim-where-a-bulk-belongs": Case(
        b"*2\r\n$4\r\nECHO\r\n=5\r\ntxt:a\r\n", protocol_error(b"expected '$', got '='"), True
    ),
    # A command boundary starting with a RESP3 type byte is an inline command for Redis.
    "resp3-map-header-is-inline": Case(
        b"%1\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        unknown(b"%1")
        + unknown(b"$3")
        + b"-ERR wrong number of arguments for 'get' command\r\n"
        + unknown(b"$1")
        + unknown(b"k"),
        False,
    ),
    "resp3-map-with-array-key-is-inline": Case(
        b"%1\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n", unknown(b"%1") + unknown(b"a") + unknown(b"$1") + unknown(b"b"), False
    ),
    "resp3-set-header-is-inline": Case(b"~1\r\n$4\r\nPING\r\n", unknown(b"~1") + unknown(b"$4") + b"+PONG\r\n", False),
    # -- WAIT's arguments (the count is checked first); with no replica the count is 0 (Redis: after the timeout)
    "wait-wrong-arity": Case(
        encode_command(b"WAIT", b"1"), b"-ERR wrong number of arguments for 'wait' command\r\n", False
    ),
    "wait-timeout-not-an-integer": Case(
        encode_command(b"WAIT", b"0", b"1.5"), b"-ERR timeout is not an integer or out of range\r\n", False
    ),
    "wait-numreplicas-checked-first": Case(
        encode_command(b"WAIT", b"a", b"a"), b"-ERR value is not an integer or out of range\r\n", False
    ),
    "wait-numreplicas-not-an-integer": Case(
        encode_command(b"WAIT", b"a", b"0"), b"-ERR value is not an integer or out of range\r\n", False
    ),
    "wait-numreplicas-too-large": Case(
        encode_command(b"WAIT", b"99999999999999999999", b"0"),
        b"-ERR value is not an integer or out of range\r\n",
        False,
    ),
    "wait-negative-timeout": Case(encode_command(b"WAIT", b"0", b"-1"), b"-ERR timeout is negative\r\n", False),
    "wait-without-replicas": Case(
        encode_command(b"SET", b"wait-key", b"v")
        + encode_command(b"WAIT", b"0", b"0")
        + encode_command(b"WAIT", b"-1", b"0")
        + encode_command(b"WAIT", b"1", b"5")
        + encode_command(b"WAIT", b"0", b"9223372036854775807"),
        b"+OK\r\n:0\r\n:0\r\n:0\r\n:0\r\n",
        False,
    ),
    # -- requests that look like HTTP (cross-protocol attacks): closed without a reply
    "http-post": Case(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", b"", True),
    "http-host-line": Case(b"Host: example.com\r\n", b"", True),
    # Redis drops the GET's error reply too: the client is freed before its replies are written.
    "http-get": Case(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", b"", True),
}

# A general RESP reader (hiredis) reads "+abc" where a bulk belongs as "abc"; Redis refuses it.
CASES["simple-string-where-a-bulk-belongs"] = Case(
    b"*2\r\n$4\r\nECHO\r\n+abc\r\n", protocol_error(b"expected '$', got '+'"), True
)


def _before_auth_cases(token: bytes) -> dict[str, Case]:
    auth = encode_command(b"AUTH", token)
    eleven = encode_command(*[b"a"] * 11)
    return {
        "unauthenticated-multibulk-length": Case(b"*11\r\n", protocol_error(b"unauthenticated multibulk length"), True),
        "ten-arguments-before-auth": Case(
            encode_command(b"MGET", *[b"a"] * 9), b"-NOAUTH Authentication required.\r\n", False
        ),
        "unauthenticated-bulk-length": Case(
            b"*2\r\n$4\r\nECHO\r\n$16385\r\n", protocol_error(b"unauthenticated bulk length"), True
        ),
        "bulk-of-16384-before-auth": Case(
            encode_command(b"ECHO", b"x" * 16384), b"-NOAUTH Authentication required.\r\n", False
        ),
        # Redis applies the pre-auth limits to multibulk requests only.
        "inline-with-12-arguments-before-auth": Case(
            b"a b c d e f g h i j k l\r\n", unknown(b"a", *b"b c d e f g h i j k l".split()), False
        ),
        # The limits end with the AUTH: a request behind it in the same packet has the full ones.
        "eleven-arguments-pipelined-after-auth": Case(auth + eleven, b"+OK\r\n" + unknown(b"a", *[b"a"] * 10), False),
        "large-bulk-pipelined-after-auth": Case(
            auth + encode_command(b"ECHO", b"y" * 20000), b"+OK\r\n$20000\r\n" + b"y" * 20000 + b"\r\n", False
        ),
        "http-post-before-auth": Case(b"POST / HTTP/1.1\r\nHost: example.com\r\n\r\n", b"", True),
    }


AUTH_CASES = _before_auth_cases(TOKEN)


# -- the tests -----------------------------------------------------------------------------


def case_params(cases: dict[str, Case]) -> list:
    return [pytest.param(name, id=name) for name in cases]


@pytest.mark.parametrize("name", case_params(CASES))
def test_aegis(aegis: LocalNode, name: str) -> None:
    case = CASES[name]
    assert exchange(resp_address_of(aegis), case.payload, case.closes) == (case.reply, CLOSED if case.closes else OPEN)
    assert still_serving(resp_address_of(aegis))


@needs_redis_server
@pytest.mark.parametrize("name", case_params(CASES))
def test_redis_server_agrees(redis_server: tuple[str, int], name: str) -> None:
    case = CASES[name]
    assert exchange(redis_server, case.payload, case.closes) == (case.reply, CLOSED if case.closes else OPEN)
    assert still_serving(redis_server)


@pytest.mark.parametrize("name", case_params(AUTH_CASES))
def test_aegis_before_auth(aegis_auth: LocalNode, name: str) -> None:
    case = AUTH_CASES[name]
    reply = exchange(resp_address_of(aegis_auth), case.payload, case.closes, AUTH_SENTINEL)
    assert reply == (case.reply, CLOSED if case.closes else OPEN)
    assert still_serving(resp_address_of(aegis_auth), password=TOKEN)


@needs_redis_server
@pytest.mark.parametrize("name", case_params(AUTH_CASES))
def test_redis_server_agrees_before_auth(redis_server_auth: tuple[str, int], name: str) -> None:
    case = AUTH_CASES[name]
    reply = exchange(redis_server_auth, case.payload, case.closes, AUTH_SENTINEL)
    assert reply == (case.reply, CLOSED if case.closes else OPEN)
    assert still_serving(redis_server_auth, password=TOKEN)


DESYNC = [
    pytest.param(b"\x00", protocol_error(b"too big inline request"), id="1"),
    pytest.param(b"*\x00", protocol_error(b"too big mbulk count string"), id="2"),
    pytest.param(b"$\x00", protocol_error(b"too big inline request"), id="3"),
]


@pytest.mark.parametrize(("start", "expected"), DESYNC)
def test_protocol_desync_aegis(aegis: LocalNode, start: bytes, expected: bytes) -> None:
    assert desync_exchange(resp_address_of(aegis), start) == (expected, CLOSED)
    assert still_serving(resp_address_of(aegis))


@needs_redis_server
@pytest.mark.parametrize(("start", "expected"), DESYNC)
def test_protocol_desync_redis_server(redis_server: tuple[str, int], start: bytes, expected: bytes) -> None:
    assert desync_exchange(redis_server, start) == (expected, CLOSED)


# -- beyond byte-for-byte -----------------------------------------------------------------


def test_huge_multibulk_count_does_not_stall_other_clients(aegis: LocalNode) -> None:
    # 14 bytes from one client must not cost everyone else: a count over the limit (1M by default)
    # is refused from its header. A parser that takes the count first (hiredis did, when it was
    # one of the server's parsers) spends time proportional to it (8 s for 2e9, so about 1.2 s
    # for 3e8) on the serving thread when the next byte is bad. Counted in the server's own CPU
    # time, which a loaded test machine does not inflate: the whole exchange costs it a few
    # milliseconds, the stall a second or more.
    node = aegis
    with socket.create_connection(resp_address_of(node), timeout=10) as bystander:
        bystander.sendall(encode_command(b"PING"))
        assert bystander.recv(64) == b"+PONG\r\n"
        cpu_before = cpu_seconds(node.pid)
        with socket.create_connection(resp_address_of(node), timeout=10) as attacker:
            attacker.sendall(b"*300000000\r\n")
            time.sleep(0.1)
            attacker.sendall(b"x")
            reply, state = exchange_rest(attacker)
        bystander.sendall(encode_command(b"PING"))
        assert bystander.recv(64) == b"+PONG\r\n"
        spent = cpu_seconds(node.pid) - cpu_before
    assert (reply, state) == (protocol_error(b"invalid multibulk length"), CLOSED)
    # 0.3 s: ten times what the idle node's timers and this exchange use in the same window.
    assert spent < 0.3, f"refusing the count cost the server {spent:.2f}s of CPU"


def test_a_batch_over_the_limit_is_refused_before_its_arguments_arrive(aegis: LocalNode) -> None:
    # An MGET of 300,000 keys (max_batch_keys is 100,000) was parsed in full on the reactor,
    # about 300 ms, before the batch limit refused it (issue 28). Its header and name are enough
    # now: the refusal comes while most of its arguments have not even been sent.
    stream = encode_command(b"MGET", *[b"k"] * 300_000)
    with socket.create_connection(resp_address_of(aegis), timeout=5) as sock:
        sock.sendall(stream[:65536])
        reply, state = exchange_rest(sock)
    assert (reply, state) == (
        protocol_error(
            b"MGET with 300001 arguments is over this node's limit of 100001 (max_batch_keys); "
            b"refused before reading them"
        ),
        CLOSED,
    )
    assert still_serving(resp_address_of(aegis))


def test_many_clients_with_protocol_errors_do_not_disturb_a_pipeline(aegis: LocalNode) -> None:
    # A long-lived client pipelining while others are thrown out for protocol errors.
    with socket.create_connection(resp_address_of(aegis), timeout=10) as steady:
        for round_ in range(20):
            with socket.create_connection(resp_address_of(aegis), timeout=5) as bad:
                bad.sendall(b"*1\r\n$x\r\n")
                assert exchange_rest(bad) == (protocol_error(b"invalid bulk length"), CLOSED)
            requests = [encode_command(b"SET", b"steady", b"%d" % round_), encode_command(b"GET", b"steady")]
            steady.sendall(b"".join(requests))
            expected = b"+OK\r\n$%d\r\n%d\r\n" % (len(b"%d" % round_), round_)
            received = b""
            while len(received) < len(expected):
                received += steady.recv(1024)
            assert received == expected


def _echo_of_size(total: int, index: int) -> tuple[bytes, bytes]:
    """An ECHO request of ``total`` bytes (at least 24) and its reply.

    Where no payload gives exactly ``total`` (a length that gains a digit, e.g.
    121), the request is one byte longer."""
    for digits in range(1, 6):
        length = total - len(encode_command(b"ECHO", b"")) - (digits - 1)
        if len(b"%d" % length) == digits:
            payload = (b"%d:" % index + b"x" * length)[:length]
            return encode_command(b"ECHO", payload), b"$%d\r\n%s\r\n" % (length, payload)
    return _echo_of_size(total + 1, index)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        received += data
    return received


# Reads start small (one pymalloc block) and grow when a read comes back full;
# these sizes sit on both sides of that edge.
_FIRST_READ = SMALL_READ


@settings(max_examples=examples(40), deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(_FIRST_READ - 3, _FIRST_READ + 3), st.integers(24, 3 * _FIRST_READ)),
        min_size=1,
        max_size=12,
    ),
    together=st.booleans(),
)
def test_requests_either_side_of_the_first_read_size_are_answered_whole(
    aegis: LocalNode, sizes: list[int], together: bool
) -> None:
    # One at a time, each read holds one request, so the connection's read size
    # switches back and forth (a request of exactly the small size fills a read
    # and the read that follows finds nothing); together, they arrive as one burst.
    exchanges = [_echo_of_size(size, index) for index, size in enumerate(sizes)]
    assert all(len(request) == size for (request, _), size in zip(exchanges, sizes) if abs(size - _FIRST_READ) <= 3)
    with socket.create_connection(resp_address_of(aegis), timeout=10) as sock:
        if together:
            sock.sendall(b"".join(request for request, _ in exchanges))
            expected = b"".join(reply for _, reply in exchanges)
            assert _read_exactly(sock, len(expected)) == expected
        else:
            for request, reply in exchanges:
                sock.sendall(request)
                assert _read_exactly(sock, len(reply)) == reply


def _command_info(address: tuple[str, int], name: bytes) -> list:
    connection = redis.Connection(host=address[0], port=address[1], protocol=2)
    try:
        connection.send_command("COMMAND", "INFO", name)
        return connection.read_response()[0]
    finally:
        connection.disconnect()


@needs_redis_server
def test_command_info_agrees_with_redis_server(aegis: LocalNode, redis_server: tuple[str, int]) -> None:
    # Name, arity, flags, key positions and ACL categories, as Redis 7.0 gives them for every
    # command the port serves: tools build allow- and deny-lists from the categories. The port
    # prints the command table's rows (aegiskv/node/commands.py), so this checks the table.
    assert REDIS_SERVER is not None  # needs_redis_server skips the test otherwise
    version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    if " v=7.0." not in version:
        pytest.skip(f"the port follows Redis 7.0's command table; this redis-server is {version.strip()}")
    differences = {}
    for name in [command.name.encode() for command in COMMAND_TABLE if command.resp]:
        ours, theirs = _command_info(resp_address_of(aegis), name)[:7], _command_info(redis_server, name)[:7]
        if name in (b"memory", b"object"):
            # MEMORY USAGE's and OBJECT ENCODING's key position, for cluster routing (aegiskv/node/commands.py)
            ours[3:6] = [0, 0, 0]
        if ours != theirs:
            differences[name] = (ours, theirs)
    assert differences == {}
