"""Differential test of the RESP port: random command sequences against AegisKV and an oracle.

The oracle is a real ``redis-server`` when one is on PATH (started once per module on a free port),
else ``fakeredis`` in-process; ``RESP_ORACLE=fakeredis`` (or ``=redis-server``) forces one. (Not an
``AEGIS_*`` name: the node refuses environment variables it does not know.) The oracle that ran is in
the test id (``[redis-server-resp2]``), in the junit property ``oracle`` and on a printed
``RESP oracle:`` line, so a CI log says which one judged the replies. With fakeredis, commands it is
known to answer unlike Redis 7.0 are skipped, or only checked for being refused when just the error
text differs (:func:`fakeredis_deviation`).

Every command goes to both servers and the replies must be identical: the value, or for an error
reply its exception type and message. Two channels carry commands: redis-py's ``execute_command`` with
its response callbacks removed (the parsed reply, nothing re-shaped), and with a real redis-server a
raw socket whose reply bytes are compared byte for byte (``+OK`` vs ``$2 OK``, ``_`` vs ``$-1`` count).

Timing is kept out of the comparison: every positive TTL is >= 100 s, two TTLs in one example are at
least 10 s apart (so EXPIRE ... GT/LT never compares two deadlines that differ only by the
microseconds between two commands), TTL/PTTL are compared with a tolerance, and SCAN is compared as
the set of keys over its whole cursor loop (cursors are opaque and differ between servers).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
import redis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from aegiskv.cluster.slots import key_slot
from aegiskv.node import dump_payload
from tests.effort import examples

ORACLE = os.environ.get("RESP_ORACLE") or ("redis-server" if shutil.which("redis-server") else "fakeredis")
if ORACLE not in ("redis-server", "fakeredis"):
    raise ValueError(f"RESP_ORACLE must be redis-server or fakeredis, not {ORACLE!r}")

# A raw socket needs a server on the other end; fakeredis only answers in-process.
CHANNELS = ("redis-py", "raw") if ORACLE == "redis-server" else ("redis-py",)

LLONG_MAX = 2**63 - 1
LLONG_MIN = -(2**63)
# Deadlines of two TTLs set in one example differ by at least this much (see the module docstring).
TTL_SPACING_MS = 10_000
# TTL/PTTL replies may differ by the time between the two servers running the command and by
# rounding; far less than TTL_SPACING_MS, so a wrong TTL still shows.
TTL_TOLERANCE_MS = 1_500


# -- the servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Oracle:
    kind: str
    version: str
    address: tuple[str, int] | None = None  # redis-server
    fake_server: Any = None  # fakeredis.FakeServer


def _start_redis_server(data_dir: str) -> tuple[subprocess.Popen, int]:
    # The free port can be taken between the probe and redis-server's bind: try a few.
    for _attempt in range(5):
        port = _free_port()
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", data_dir]
        process = subprocess.Popen(
            ["redis-server", *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        with redis.Redis(port=port, socket_timeout=1) as probe:
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    probe.ping()
                    return process, port
                except redis.ConnectionError:
                    time.sleep(0.05)
        _stop(process)
    raise RuntimeError("redis-server did not start")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Iterator[Oracle]:
    if ORACLE == "fakeredis":
        import fakeredis

        # Redis 7.0's error texts: AegisKV follows 7.0.
        yield Oracle(
            "fakeredis", f"fakeredis {fakeredis.__version__}", fake_server=fakeredis.FakeServer(version=(7, 0))
        )
        return
    process, port = _start_redis_server(str(tmp_path_factory.mktemp("redis-oracle")))
    try:
        with redis.Redis(port=port) as client:
            version = client.info("server")["redis_version"]
        yield Oracle("redis-server", f"redis-server {version}", address=("127.0.0.1", port))
    finally:
        _stop(process)


def _redis_py(address: tuple[str, int] | None, protocol: int, fake_server: Any = None) -> redis.Redis:
    client: redis.Redis
    if fake_server is not None:
        import fakeredis

        client = fakeredis.FakeRedis(server=fake_server, version=(7, 0), protocol=protocol)
    else:
        assert address is not None  # a real server (no fake_server) has an address
        host, port = address
        client = redis.Redis(host=host, port=port, protocol=protocol, decode_responses=False, socket_timeout=10)
    # No response callbacks: compare what came off the wire (SET's b"OK", not True; SCAN's list, not a tuple).
    client.response_callbacks.clear()
    return client


class RawReply(NamedTuple):
    wire: bytes  # the reply exactly as the server sent it
    tree: Any  # (type byte, payload) with nested lists for aggregates


class RawResp:
    """A blocking socket speaking RESP with no client library in between."""

    def __init__(self, address: tuple[str, int], protocol: int) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.reader = self.sock.makefile("rb")
        if protocol == 3:
            hello = self.call([b"HELLO", b"3"])
            assert hello.wire[:1] == b"%", hello  # a map: the connection now speaks RESP3

    def call(self, args: list[bytes]) -> RawReply:
        self.sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args))
        return self._read()

    def _read(self) -> RawReply:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"connection closed mid-reply: {line!r}")
        kind, body = line[:1], line[1:-2]
        if kind in b"+-:,#(_":
            return RawReply(line, (kind, body))
        if kind in b"$=!":
            size = int(body)
            if size < 0:
                return RawReply(line, (kind, None))
            data = self.reader.read(size + 2)
            return RawReply(line + data, (kind, data[:-2]))
        if kind in b"*~%>":
            size = int(body)
            if size < 0:
                return RawReply(line, (kind, None))
            items = [self._read() for _ in range(size * 2 if kind == b"%" else size)]
            return RawReply(line + b"".join(item.wire for item in items), (kind, [item.tree for item in items]))
        raise ConnectionError(f"not a RESP reply: {line!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class ReplyError(NamedTuple):
    """An error reply as redis-py reports it: exception class and message."""

    type: str
    message: str


class Server:
    """One side of the comparison: a redis-py client and (for real servers) a raw socket."""

    def __init__(self, name: str, client: redis.Redis, raw_address: tuple[str, int] | None, protocol: int) -> None:
        self.name = name
        self.client = client
        self.raw_address = raw_address
        self.protocol = protocol
        self.raw: RawResp | None = None

    def reconnect(self) -> None:
        """A fresh raw socket per example: a connection one example broke cannot fail the next."""
        self.close_raw()
        if self.raw_address is not None:
            self.raw = RawResp(self.raw_address, self.protocol)

    def run(self, channel: str, args: list[bytes]) -> Any:
        try:
            if channel == "raw":
                assert self.raw is not None
                return self.raw.call(args)
            try:
                return self.client.execute_command(*args)
            except redis.ResponseError as error:
                return ReplyError(type(error).__name__, str(error))
        except (OSError, redis.ConnectionError) as error:
            # Say which server dropped the connection, and on which command.
            raise ConnectionError(f"{self.name} [{channel}] {_show(args)}: {error!r}") from error

    def keyspace(self) -> list[Any]:
        """MGET of every key in KEYS and DBSIZE, in one round trip."""
        try:
            pipeline = self.client.pipeline(transaction=False)
            pipeline.execute_command(b"MGET", *KEYS)
            pipeline.execute_command(b"DBSIZE")
            return pipeline.execute()
        except (OSError, redis.ConnectionError) as error:
            raise ConnectionError(f"{self.name} [keyspace]: {error!r}") from error

    def close_raw(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None

    def close(self) -> None:
        self.client.close()
        self.close_raw()


# -- what to send ----------------------------------------------------------------------------


class Ttl(NamedTuple):
    """A positive TTL argument; the machine spaces it from the other TTLs of the example."""

    amount: int
    unit_ms: int  # 1000: seconds (EX, EXPIRE), 1: milliseconds (PX, PEXPIRE)


# A small key space so commands collide; glob metacharacters, the empty key and a non-UTF-8 byte
# exercise SCAN MATCH and the reply encoding.
KEYS = [b"a", b"b", b"c", b"ab", b"abc", b"ba", b"", b"a*", b"x?", b"[", b"\\", b"^", b"\xff", b"\x00", b"k:1", b"k-2"]
# Keys in the slot of "a" (a hash tag): RENAME, COPY and BITOP between them run on both servers;
# between keys of different slots AegisKV refuses them as Redis Cluster (CROSSSLOT).
SAME_SLOT = [b"a", b"{a}x", b"{a}y"]
KEYS += SAME_SLOT[1:]
keys = st.sampled_from(KEYS)
same_slot_keys = st.sampled_from(SAME_SLOT)
NUMERIC = [
    b"0",
    b"1",
    b"-1",
    b"12",
    b"9223372036854775807",
    b"9223372036854775806",
    b"-9223372036854775808",
    b"-9223372036854775807",
    b"9223372036854775808",  # one past the range: not an integer
    b"-9223372036854775809",
    b"99999999999999999999",
    b"-0",
    b"007",
    b"+1",
    b" 1",
    b"1 ",
    b"1.5",
    b"1e3",
    b"0x10",
    b"-",
]
values = st.one_of(
    st.sampled_from(NUMERIC),
    st.sampled_from([b"", b"v", b"hello", b"\r\n", b"\x00", b"\xff\xfe\x00", b"a b"]),
    st.binary(max_size=12),
)
amounts = st.one_of(st.sampled_from([*NUMERIC, b"", b"abc"]), st.integers(LLONG_MIN, LLONG_MAX).map(b"%d".__mod__))


def _spellings(word: str) -> list[bytes]:
    mixed = "".join(char.upper() if index % 2 else char.lower() for index, char in enumerate(word))
    return [word.upper().encode(), word.lower().encode(), mixed.encode()]


def word(text: str) -> st.SearchStrategy[bytes]:
    """A command or option name in upper, lower or mixed case (both servers ignore case)."""
    return st.sampled_from(_spellings(text))


def command(name: str, *parts: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.tuples(word(name), *parts).map(list)


def flat(groups: st.SearchStrategy[list[list]]) -> st.SearchStrategy[list]:
    return groups.map(lambda nested: [arg for group in nested for arg in group])


# Positive relative TTLs: >= 100 s so nothing expires during a run.
ttl_seconds = st.integers(100, 10**9).map(lambda amount: Ttl(amount, 1000))
ttl_millis = st.one_of(
    st.integers(100_000, 10**12).map(lambda amount: Ttl(amount, 1)),
    st.just(Ttl(LLONG_MAX - 10**13, 1)),  # valid for centuries: far from the overflow check
)
NOT_INTEGERS = [b"abc", b"1.5", b"", b" 1", b"+1", b"01", b"9223372036854775808"]
# SET/GETEX EX: <= 0 is refused, and so is anything whose milliseconds overflow once "now" is added.
bad_set_seconds = st.sampled_from(
    [
        b"0",
        b"-1",
        b"-9223372036854775808",
        b"9223372036854775",
        b"9223372036854776",
        b"9223372036854775807",
        *NOT_INTEGERS,
    ]
)
bad_set_millis = st.sampled_from(
    [b"0", b"-5", b"-9223372036854775808", b"9223372036854775807", b"%d" % (LLONG_MAX - 10**11), *NOT_INTEGERS]
)
# Absolute deadlines in the future (EXAT/PXAT/EXPIREAT); years 2286..2603, far from any relative TTL.
future_seconds = st.sampled_from([b"10000000000", b"20000000000", b"9223372036854775"])
future_millis = st.sampled_from([b"10000000000000", b"20000000000000", b"9223372036854775807"])
# Absolute deadlines in the past: the key goes at once (GETEX, EXPIREAT). Not used with SET: Redis
# 7.0 stores such a key and the active expiry removes it some time later, so DBSIZE depends on timing.
past_seconds = st.sampled_from([b"1", b"1000000000"])
past_millis = st.sampled_from([b"1", b"1000000000000"])

set_option = st.one_of(
    word("NX").map(lambda option: [option]),
    word("XX").map(lambda option: [option]),
    word("GET").map(lambda option: [option]),
    word("KEEPTTL").map(lambda option: [option]),
    st.tuples(word("EX"), st.one_of(ttl_seconds, bad_set_seconds)).map(list),
    st.tuples(word("PX"), st.one_of(ttl_millis, bad_set_millis)).map(list),
    st.tuples(word("EXAT"), st.one_of(future_seconds, st.sampled_from([b"0", b"-1", b"abc"]))).map(list),
    st.tuples(word("PXAT"), st.one_of(future_millis, st.sampled_from([b"0", b"-1", b"abc"]))).map(list),
    st.sampled_from([[b"EX"], [b"PX"], [b"FOO"], [b"PERSIST"], [b"100"]]),  # syntax errors
)
getex_option = st.one_of(
    word("PERSIST").map(lambda option: [option]),
    st.tuples(word("EX"), st.one_of(ttl_seconds, bad_set_seconds)).map(list),
    st.tuples(word("PX"), st.one_of(ttl_millis, bad_set_millis)).map(list),
    st.tuples(word("EXAT"), st.one_of(future_seconds, past_seconds, st.sampled_from([b"0", b"abc"]))).map(list),
    st.tuples(word("PXAT"), st.one_of(future_millis, past_millis, st.sampled_from([b"0", b"abc"]))).map(list),
    st.sampled_from([[b"EX"], [b"KEEPTTL"], [b"NX"], [b"GET"], [b"bogus"]]),  # syntax errors
)
expire_seconds = st.one_of(
    ttl_seconds,
    st.just(Ttl(10**12, 1000)),  # about 31,700 years: still valid
    st.sampled_from(
        [
            b"0",
            b"-1",
            b"-100",
            b"-9223372036854775",
            b"-9223372036854776",
            b"9223372036854775",
            b"9223372036854776",
            b"9223372036854775807",
            b"-9223372036854775808",
            *NOT_INTEGERS,
        ]
    ),
)
expire_millis = st.one_of(
    ttl_millis,
    st.sampled_from(
        [
            b"0",
            b"-1",
            b"-9223372036854775807",
            b"-9223372036854775808",
            b"9223372036854775807",
            b"%d" % (LLONG_MAX - 10**11),  # overflows once "now" is added
            *NOT_INTEGERS,
        ]
    ),
)
expire_condition = st.lists(st.sampled_from([*_spellings("NX"), b"XX", b"gt", b"GT", b"Lt", b"LT", b"FOO"]), max_size=2)


def glob_token() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([b"a", b"b", b"c", b"k", b":", b"-", b"x", b"\xff"]),
        st.sampled_from([b"*", b"**", b"?", b"[a-c]", b"[^x]", b"[^a]", b"[c-a]", b"[ab]", b"[]", b"[^]"]),
        st.sampled_from([b"\\*", b"\\?", b"\\[", b"\\\\", b"\\a", b"[\\]]", b"[a-]", b"[", b"\\"]),
    )


# Whole patterns worth trying on every run (random token lists rarely come out as only stars), then
# random ones; bytes >= 0x80 in a class range check how bytes compare (Redis compares C chars).
patterns = st.one_of(
    st.sampled_from([b"*", b"**", b"", b"?", b"a*", b"*a", b"*b*", b"[a-c]*", b"*\\*", b"k?*", b"\\", b"[^a]"]),
    st.sampled_from([b"[a-\xff]", b"[\x80-\xff]", b"[^\x00-\x7f]", b"*[\xfe-\xff]"]),
    st.lists(glob_token(), max_size=4).map(b"".join),
)
scan_option = st.one_of(
    st.tuples(word("MATCH"), patterns).map(list),
    st.tuples(word("COUNT"), st.one_of(st.integers(1, 7).map(b"%d".__mod__), st.sampled_from([b"0", b"-1", b"x"]))).map(
        list
    ),
    st.tuples(word("TYPE"), st.sampled_from([b"string", b"STRING", b"none", b"hash", b"bogus"])).map(list),
    st.sampled_from([[b"MATCH"], [b"COUNT"], [b"FOO", b"1"]]),  # syntax errors
)
scan_cursor = st.one_of(st.just(b"0"), st.sampled_from([b"abc", b" 0", b"1.5"]))

# Arguments for commands built blindly (arity and syntax errors). No small positive numbers: a
# blind "PEXPIRE a 5" would make the key's fate depend on timing.
FUZZ_WORDS = [b"a", b"b", b"", b"v", b"0", b"-1", b"abc", b"1.5", b"NX", b"XX", b"GT", b"GET", b"KEEPTTL"]
FUZZ_WORDS += [b"PERSIST", b"EX", b"PX", b"MATCH", b"COUNT", b"TYPE", b"ASYNC", b"*", b"9223372036854775808"]
COMMAND_NAMES = ["GET", "SET", "SETNX", "SETEX", "PSETEX", "GETDEL", "GETEX", "MGET", "MSET", "MSETNX", "DEL"]
COMMAND_NAMES += ["UNLINK", "EXISTS", "TTL", "PTTL", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST"]
COMMAND_NAMES += ["TYPE", "STRLEN", "APPEND", "INCR", "INCRBY", "DECR", "DECRBY", "DBSIZE", "SCAN"]
# The string and keyspace commands of issue 25 (fuzzed too; not sent to a fakeredis oracle).
ISSUE_25_COMMANDS = ["GETSET", "GETRANGE", "SUBSTR", "SETRANGE", "INCRBYFLOAT", "SETBIT", "GETBIT", "BITCOUNT"]
ISSUE_25_COMMANDS += ["BITPOS", "BITOP", "KEYS", "RENAME", "RENAMENX", "COPY", "RANDOMKEY", "TOUCH", "EXPIRETIME"]
ISSUE_25_COMMANDS += ["PEXPIRETIME", "OBJECT", "DUMP", "RESTORE", "LCS", "BITFIELD", "BITFIELD_RO"]
# KEYS, RANDOMKEY, RESTORE and OBJECT get rules of their own (their replies are compared specially,
# or depend on more than the arguments); the fuzzer sends the others blindly.
COMMAND_NAMES += [name for name in ISSUE_25_COMMANDS if name not in ("KEYS", "RANDOMKEY", "RESTORE", "OBJECT")]
fuzz_command = st.one_of(
    st.tuples(st.sampled_from(COMMAND_NAMES).flatmap(word), st.lists(st.sampled_from(FUZZ_WORDS), max_size=5)),
    # Unknown commands: the error quotes the arguments, so try long, binary and NUL-carrying ones.
    st.tuples(
        st.sampled_from([b"GETT", b"SETX", b"expires", b"G\xffT"]),
        st.lists(st.sampled_from([*FUZZ_WORDS, b"x" * 150, b"\xff\xfe", b"a\x00b", b"a\r\nb"]), max_size=4),
    ),
).map(lambda parts: [parts[0], *parts[1]])

channels = st.sampled_from(CHANNELS)

# -- issue 25's arguments: indexes around a small value's length, and the edges of the types
small_index = st.integers(-12, 12).map(b"%d".__mod__)
indexes = st.one_of(
    small_index,
    st.sampled_from([b"9223372036854775807", b"-9223372036854775808", b"100", b"-100", *NOT_INTEGERS]),
)
# SETRANGE offsets: small ones, and ones refused before anything is built (a valid large offset
# would make both servers allocate hundreds of MiB; AegisKV would refuse it at its value limit).
setrange_offsets = st.one_of(
    st.integers(0, 24).map(b"%d".__mod__), st.sampled_from([b"-1", b"536870912", b"abc", b"1.5"])
)
bit_offsets = st.one_of(
    st.integers(0, 100).map(b"%d".__mod__),
    st.sampled_from([b"-1", b"4294967296", b"abc", b"", b"9223372036854775808"]),
)
# The last valid bit offset: GETBIT only (SETBIT would make redis-server allocate 512 MiB).
getbit_offsets = st.one_of(bit_offsets, st.just(b"4294967295"))
bit_values = st.sampled_from([b"0", b"1", b"2", b"-1", b"abc", b"01"])
bit_units = st.sampled_from([b"BIT", b"byte", b"Bit", b"WORD"])
float_amounts = st.one_of(
    st.sampled_from([b"0.1", b"-0.1", b"1.5e3", b"1e-20", b"5.", b".5", b"-0", b"0x1p3", b"1e308", b"1e4000"]),
    st.sampled_from([b"inf", b"-inf", b"nan", b"1e5000", b"", b" 1", b"1 ", b"abc", b"1e", b"3"]),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda number: repr(number).encode()),
    amounts,
)
field_types = st.one_of(
    st.sampled_from([b"i1", b"u1", b"i8", b"u8", b"i5", b"u7", b"i63", b"u63", b"i64", b"u16", b"i32"]),
    st.sampled_from([b"u64", b"i65", b"i0", b"I8", b"x8", b"u", b"i-1"]),  # refused
)
field_offsets = st.one_of(
    st.integers(0, 40).map(b"%d".__mod__),
    st.sampled_from([b"#0", b"#1", b"#3", b"#-1", b"-1", b"x", b"4294967296", b"#"]),
)
field_amounts = st.one_of(
    st.integers(-300, 300).map(b"%d".__mod__),
    st.sampled_from([b"9223372036854775807", b"-9223372036854775808", b"x", b"1.5"]),
)
bitfield_op = st.one_of(
    st.tuples(word("GET"), field_types, field_offsets).map(list),
    st.tuples(st.sampled_from([b"SET", b"incrby", b"IncrBy"]), field_types, field_offsets, field_amounts).map(list),
    st.tuples(word("OVERFLOW"), st.sampled_from([b"WRAP", b"sat", b"Fail", b"bogus"])).map(list),
    st.sampled_from([[b"GET", b"i8"], [b"FOO"], [b"OVERFLOW"]]),  # syntax errors
)
copy_option = st.one_of(
    word("REPLACE").map(lambda option: [option]),
    st.tuples(word("DB"), st.sampled_from([b"0", b"x", b"99999999999"])).map(list),
    st.sampled_from([[b"DB"], [b"FOO"]]),  # syntax errors (DB 1 differs by design: cluster mode)
)
restore_option = st.one_of(
    word("REPLACE").map(lambda option: [option]),
    word("ABSTTL").map(lambda option: [option]),
    st.tuples(word("IDLETIME"), st.sampled_from([b"0", b"100", b"-1", b"x"])).map(list),
    st.tuples(word("FREQ"), st.sampled_from([b"0", b"255", b"256", b"-1", b"x"])).map(list),
    st.sampled_from([[b"FOO"], [b"IDLETIME"]]),
)


# -- fakeredis's known deviations from Redis 7.0 ------------------------------------------------

_EXPIRY_ARGUMENT_AFTER = {b"EX", b"PX", b"EXAT", b"PXAT"}
# The largest relative TTLs this test sends as valid (Ttl amounts after spacing); anything larger,
# like anything not a positive integer, is refused by Redis with "invalid expire time".
_LARGEST_VALID_SECONDS = 10**13
_LARGEST_VALID_MILLIS = LLONG_MAX - 10**13 + 10**9


def _integer(text: bytes) -> bool:
    """A 64-bit integer as Redis writes it (no sign but "-", no leading zeros, no spaces)."""
    digits = text[1:] if text[:1] == b"-" else text
    return (
        digits.isdigit()
        and (digits == b"0" or digits[:1] != b"0")
        and text != b"-0"
        and LLONG_MIN <= int(text) <= LLONG_MAX
    )


def _valid_ttl(option: bytes, text: bytes) -> bool:
    if not (text.isdigit() and text[:1] != b"0" and int(text) <= LLONG_MAX):
        return False
    if option in (b"EX", b"SETEX"):
        return int(text) <= _LARGEST_VALID_SECONDS
    if option in (b"PX", b"PSETEX"):
        return int(text) <= _LARGEST_VALID_MILLIS
    if option == b"EXAT":
        return int(text) <= LLONG_MAX // 1000
    return True  # PXAT: absolute, no "now" added


class Deviation(NamedTuple):
    reason: str
    # True: Redis and fakeredis both answer with an error and only its text differs, so the command is
    # still sent and AegisKV must answer with an error too (any text). False: not sent at all.
    errors_agree: bool


def _made_up_cursor(cursor: bytes) -> bool:
    """A cursor Redis's strtoul reads as a number other than 0."""
    return re.fullmatch(rb"[-+]?[0-9]+", cursor) is not None and int(cursor.lstrip(b"+-")) != 0


def fakeredis_deviation(args: list[bytes]) -> Deviation | None:
    """How fakeredis answers ``args`` unlike Redis 7.0 (each checked against redis-server 7.0.15), else None.

    Used only when fakeredis is the oracle, so its gaps cannot fail the test while AegisKV's still can.
    """
    name = args[0].upper()
    words = [arg.upper() for arg in args]
    options = list(zip(words[2::2], args[3::2]))  # SCAN's (option, value) pairs
    if name.decode("latin-1") in ISSUE_25_COMMANDS:
        return Deviation("issue 25's commands are compared with redis-server only", False)
    # Replies that differ in kind (a value against an error): the command is not sent.
    if name == b"SET" and any(words[3:].count(word) > 1 for word in (*_EXPIRY_ARGUMENT_AFTER, b"KEEPTTL")):
        return Deviation("SET with a TTL option twice: Redis takes the last, fakeredis says 'syntax error'", False)
    if name == b"GETEX" and sum(word in (*_EXPIRY_ARGUMENT_AFTER, b"PERSIST") for word in words[2:]) > 1:
        return Deviation("GETEX with two TTL options: fakeredis checks the TTL before the syntax", False)
    if name == b"GETEX" and any(
        word in _EXPIRY_ARGUMENT_AFTER and (index + 1 == len(args) or not _valid_ttl(word, args[index + 1]))
        for index, word in enumerate(words[2:], start=2)
    ):
        return Deviation("GETEX bad TTL: fakeredis refuses it before the lookup; Redis answers nil for no key", False)
    if name == b"GETEX" and any(
        word in (b"PX", b"PXAT") and int(value) > LLONG_MAX // 1000 for word, value in zip(words[2:], args[3:])
    ):
        return Deviation("GETEX PX/PXAT > 2**63 / 1000: fakeredis checks milliseconds as if they were seconds", False)
    if name == b"SCAN" and len(args) > 1 and re.fullmatch(rb"[-+]?[0-9]*", args[1]) and not _integer(args[1]):
        return Deviation("SCAN cursor '', '-1', '00', 2**63: Redis's strtoul takes it, fakeredis refuses it", False)
    if name == b"SCAN" and any(
        word == b"COUNT" and not (_integer(value) and int(value) > 0) for word, value in options
    ):
        return Deviation("SCAN COUNT < 1: fakeredis takes the last COUNT and checks it after the loop", False)
    patterns = [value for word, value in options if word == b"MATCH"] if name == b"SCAN" else []
    if any(len(pattern) > 1 and set(pattern) == {ord("*")} for pattern in patterns):
        return Deviation("SCAN MATCH **: fakeredis matches the empty key, Redis's matcher never does", False)
    if any(b"[" in pattern and max(pattern) >= 0x80 for pattern in patterns):
        return Deviation("SCAN MATCH [a-\\xff]: Redis compares class ranges as signed chars (x86)", False)
    if name in (b"FLUSHALL", b"FLUSHDB") and b"SYNC" in words[1:]:
        return Deviation("FLUSHALL SYNC: fakeredis only knows ASYNC", False)
    # Both refuse; only the error text differs.
    if name.decode("latin-1") not in (*COMMAND_NAMES, "FLUSHALL", "FLUSHDB"):
        return Deviation("unknown command: fakeredis lower-cases the name and leaves the arguments out", True)
    if name in (b"MSET", b"MSETNX") and len(args) % 2 == 0:
        return Deviation("odd MSET arguments: fakeredis says 'Wrong number of args calling Redis command ...'", True)
    if name in (b"SETEX", b"PSETEX") and len(args) == 4 and not _valid_ttl(name, args[2]):
        return Deviation("bad SETEX TTL: fakeredis's 'invalid expire time in setex' has no quotes, no 'command'", True)
    if name == b"SET" and any(
        word in _EXPIRY_ARGUMENT_AFTER and (index + 1 == len(args) or not _valid_ttl(word, args[index + 1]))
        for index, word in enumerate(words[3:], start=3)
    ):
        return Deviation("bad SET TTL: fakeredis's 'invalid expire time in set' has no quotes, no 'command'", True)
    if name in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT") and len(args) > 3 and not _integer(args[2]):
        return Deviation("EXPIRE bad amount and options: fakeredis reports the amount, Redis the options", True)
    if name in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT") and {b"GT", b"LT"} <= set(words[3:]):
        return Deviation("EXPIRE GT LT: fakeredis names NX and XX in the error too", True)
    if name == b"SCAN" and len(args) > 1 and not _integer(args[1]):
        return Deviation("bad SCAN cursor: fakeredis says 'value is not an integer', Redis 'invalid cursor'", True)
    if name == b"SCAN" and len(args) % 2:
        return Deviation("SCAN option without its value: fakeredis says 'Wrong number of args ...'", True)
    if name == b"DECRBY" and args[2:] == [b"-9223372036854775808"]:
        return Deviation("DECRBY -2**63: fakeredis says 'not an integer', Redis 'decrement would overflow'", True)
    return None


# -- comparing -------------------------------------------------------------------------------


def _show(args: list[bytes]) -> str:
    return " ".join(repr(arg)[1:] for arg in args)


def _stored(keyspace: list[Any]) -> str:
    values, dbsize = keyspace
    return f"{ {key: value for key, value in zip(KEYS, values) if value is not None}!r}; {dbsize}"


def _is_error(reply: Any) -> bool:
    return isinstance(reply, ReplyError) or (isinstance(reply, RawReply) and reply.tree[0] == b"-")


def _ttl_int(reply: Any) -> int | None:
    """The integer of a TTL/PTTL reply on either channel."""
    if isinstance(reply, RawReply) and reply.tree[0] == b":":
        return int(reply.tree[1])
    if isinstance(reply, int):
        return reply
    return None


def _ttl_equal(mine: Any, theirs: Any, unit_ms: int, relative: float = 0.0) -> bool:
    a, b = _ttl_int(mine), _ttl_int(theirs)
    if a is None or b is None or a < 0 or b < 0:
        return mine == theirs  # -1 (no TTL), -2 (no key) and errors compare exactly
    return abs(a - b) * unit_ms <= TTL_TOLERANCE_MS + relative * b * unit_ms


def _scan_page(reply: Any) -> tuple[bytes, list[bytes]] | None:
    """(cursor, keys) from a SCAN reply, None for an error reply."""
    if isinstance(reply, RawReply):
        kind, payload = reply.tree
        if kind == b"-":
            return None
        assert kind == b"*" and len(payload) == 2, reply
        (cursor_kind, cursor), (keys_kind, items) = payload
        assert cursor_kind == b"$" and keys_kind == b"*", reply
        assert all(item[0] == b"$" for item in items), reply
        return cursor, [item[1] for item in items]
    if isinstance(reply, ReplyError):
        return None
    cursor, items = reply
    return cursor, list(items)


def _bulk(reply: Any) -> bytes | None:
    """The bytes of a bulk-string reply on either channel (None: nil or not a bulk string)."""
    if isinstance(reply, RawReply):
        return reply.tree[1] if reply.tree[0] == b"$" else None
    return reply if isinstance(reply, bytes) else None


def _key_set(reply: Any) -> Any:
    """A KEYS reply as a sorted list of keys, the reply itself when it is an error."""
    if isinstance(reply, RawReply):
        kind, items = reply.tree
        return sorted(item[1] for item in items) if kind == b"*" else reply
    return sorted(reply) if isinstance(reply, list) else reply


def _dumped(reply: Any) -> Any:
    """The value a DUMP payload holds (read with AegisKV's reader, which the dump tests check)."""
    payload = _bulk(reply)
    return reply if payload is None else dump_payload.decode(payload)


# -- the machine -----------------------------------------------------------------------------


@dataclass
class Context:
    aegis: Server
    oracle: Server
    oracle_kind: str


class RespOracleMachine(RuleBasedStateMachine):
    def __init__(self, context: Context) -> None:
        super().__init__()
        self.aegis = context.aegis
        self.oracle = context.oracle
        self.oracle_kind = context.oracle_kind
        self.history: list[str] = []
        self.ttls_ms: list[int] = []
        # Each example starts from an empty keyspace on both sides.
        for server in (self.aegis, self.oracle):
            server.reconnect()
            assert server.run("redis-py", [b"FLUSHALL"]) == b"OK", server.name

    # -- plumbing ----------------------------------------------------------------------

    def _resolve(self, arg: bytes | Ttl) -> bytes:
        if not isinstance(arg, Ttl):
            return arg
        amount = arg.amount
        step = max(1, TTL_SPACING_MS // arg.unit_ms)
        while any(abs(amount * arg.unit_ms - used) < TTL_SPACING_MS for used in self.ttls_ms):
            amount += step
        self.ttls_ms.append(amount * arg.unit_ms)
        return b"%d" % amount

    def _fail(self, what: str, mine: Any, theirs: Any) -> None:
        raise AssertionError(
            f"{what}\n  aegis:        {mine!r}\n  {self.oracle_kind}: {theirs!r}\n"
            "commands sent in this example (channel, command -> aegis reply | oracle reply):\n"
            + "\n".join(self.history)
        )

    def deviation(self, channel: str, args: list[bytes]) -> Deviation | None:
        """A fakeredis oracle's known deviation for ``args`` (noted in the history), else None."""
        deviation = fakeredis_deviation(args) if self.oracle_kind == "fakeredis" else None
        if deviation is not None:
            how = "only error-ness compared" if deviation.errors_agree else "not sent"
            self.history.append(f"  [{channel}] {_show(args)}: {how}: {deviation.reason}")
        return deviation

    def compare(self, what: str, deviation: Deviation | None, mine: Any, theirs: Any) -> None:
        if deviation is not None and _is_error(theirs):
            # fakeredis's error text is known to differ from Redis's: AegisKV must still refuse.
            if not _is_error(mine):
                self._fail(f"{what}: {self.oracle_kind} refused, aegis did not", mine, theirs)
        elif mine != theirs:
            self._fail(f"{what}: replies differ", mine, theirs)

    def check(self, channel: str, command: list[bytes | Ttl]) -> None:
        args = [self._resolve(arg) for arg in command]
        deviation = self.deviation(channel, args)
        if deviation is not None and not deviation.errors_agree:
            return
        name = args[0].upper()
        if name == b"SCAN" and len(args) > 1:
            self.check_scan(channel, args, deviation)
            return
        if self.crossing_slots(name, args):
            mine = self.aegis.run(channel, args)
            self.history.append(f"  [{channel}] {_show(args)} -> {mine!r} (keys of different slots: CROSSSLOT)")
            if "CROSSSLOT" not in str(mine) and "same slot" not in str(mine):
                self._fail(f"{_show(args)}: keys of different slots were not refused", mine, "CROSSSLOT")
            return
        mine = self.aegis.run(channel, args)
        theirs = self.oracle.run(channel, args)
        self.history.append(f"  [{channel}] {_show(args)} -> {mine!r} | {theirs!r}")
        if name in (b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME") and len(args) == 2:
            # fakeredis keeps deadlines as float seconds: near 2**63 ms they are off by seconds.
            # EXPIRETIME: a relative TTL makes a deadline that differs by the time between the servers.
            relative = 1e-15 if self.oracle_kind == "fakeredis" else 0.0
            if not _ttl_equal(mine, theirs, 1 if name.startswith(b"P") else 1000, relative):
                self._fail(f"{_show(args)}: TTL differs by more than {TTL_TOLERANCE_MS} ms", mine, theirs)
        elif name == b"KEYS" and not _is_error(theirs):
            # Each server lists its keys in its own order.
            self.compare(_show(args) + " (as a set)", deviation, _key_set(mine), _key_set(theirs))
        elif name == b"DUMP" and len(_dumped(theirs) if _bulk(theirs) else b"") > 20:
            # Redis LZF-compresses values over 20 bytes; AegisKV never does (both read either):
            # the values the payloads hold must be equal.
            self.compare(_show(args) + " (payload's value)", deviation, _dumped(mine), _dumped(theirs))
        else:
            self.compare(_show(args), deviation, mine, theirs)

    @staticmethod
    def crossing_slots(name: bytes, args: list[bytes]) -> bool:
        """RENAME, RENAMENX, COPY and BITOP (past their arity check) with keys of different slots."""
        if (name in (b"RENAME", b"RENAMENX") and len(args) == 3) or (name in (b"COPY", b"LCS") and len(args) >= 3):
            named = args[1:3]
        elif name == b"BITOP" and len(args) >= 4:
            named = args[2:]
        else:
            return False
        return len({key_slot(key) for key in named}) > 1

    def check_scan(self, channel: str, args: list[bytes], deviation: Deviation | None) -> None:
        """A whole SCAN loop on each server; the keys seen, as sets, must match.

        One page can't be compared: cursors and the order of keys are each server's own.
        """
        if _made_up_cursor(args[1]):
            # AegisKV's cursors name a scan snapshot, so one it never handed out is refused
            # (README, SCAN), where Redis scans on from that hash-table position. Errors in
            # the options come first on both.
            mine, theirs = self.aegis.run(channel, args), self.oracle.run(channel, args)
            self.history.append(f"  [{channel}] {_show(args)} -> {mine!r} | {theirs!r} (a made-up cursor)")
            if _is_error(theirs):
                self.compare(_show(args), deviation, mine, theirs)
            else:
                assert _is_error(mine) and "invalid cursor" in str(mine), mine
            return
        seen = []
        for server in (self.aegis, self.oracle):
            first = server.run(channel, args)
            page = _scan_page(first)
            if page is None:
                seen.append(first)  # an error reply: compared as is
                continue
            found = set(page[1])
            for _ in range(1000):  # a db this small takes a few pages; the bound only stops a runaway loop
                if page[0] == b"0":
                    break
                reply = server.run(channel, [args[0], page[0], *args[2:]])
                page = _scan_page(reply)
                if page is None:
                    raise AssertionError(f"{_show(args)}: {server.name} refused its own cursor: {reply!r}")
                found |= set(page[1])
            else:
                raise AssertionError(f"{_show(args)}: {server.name}'s SCAN did not reach cursor 0 in 1000 pages")
            seen.append(sorted(found))
        self.history.append(f"  [{channel}] {_show(args)} (whole loop) -> {seen[0]!r} | {seen[1]!r}")
        self.compare(f"{_show(args)} (keys seen over the whole loop)", deviation, *seen)

    # -- strings -----------------------------------------------------------------------

    @rule(channel=channels, command=command("GET", keys))
    def get(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=st.tuples(command("SET", keys, values), flat(st.lists(set_option, max_size=3))))
    def set_(self, channel, command):
        self.check(channel, command[0] + command[1])

    @rule(channel=channels, command=command("SETNX", keys, values))
    def setnx(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.one_of(
            command("SETEX", keys, st.one_of(ttl_seconds, bad_set_seconds), values),
            command("PSETEX", keys, st.one_of(ttl_millis, bad_set_millis), values),
        ),
    )
    def setex(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=command("GETDEL", keys))
    def getdel(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=st.tuples(command("GETEX", keys), flat(st.lists(getex_option, max_size=2))))
    def getex(self, channel, command):
        self.check(channel, command[0] + command[1])

    @rule(channel=channels, command=st.tuples(word("MGET"), st.lists(keys, max_size=4)))
    def mget(self, channel, command):
        self.check(channel, [command[0], *command[1]])

    @rule(
        channel=channels,
        command=st.tuples(
            st.one_of(word("MSET"), word("MSETNX")),
            flat(st.lists(st.tuples(keys, values).map(list), max_size=3)),
            st.lists(keys, max_size=1),  # a dangling key: odd argument count
        ),
    )
    def mset(self, channel, command):
        self.check(channel, [command[0], *command[1], *command[2]])

    @rule(channel=channels, command=command("APPEND", keys, values))
    def append(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=st.one_of(command("STRLEN", keys), command("TYPE", keys)))
    def strlen_type(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.one_of(
            command("INCR", keys),
            command("DECR", keys),
            command("INCRBY", keys, amounts),
            command("DECRBY", keys, amounts),
        ),
    )
    def incr(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.tuples(keys, st.sampled_from([b"9223372036854775806", b"-9223372036854775807", b"-1", b"0"])),
    )
    def near_overflow_counter(self, channel, command):
        # Values at the edge of the 64-bit range, then a step over it in the direction that overflows.
        key, value = command
        self.check(channel, [b"SET", key, value])
        self.check(channel, [b"INCRBY" if value[:1] != b"-" else b"DECRBY", key, b"2"])

    # -- keys --------------------------------------------------------------------------

    @rule(
        channel=channels,
        command=st.tuples(st.one_of(word("DEL"), word("UNLINK"), word("EXISTS")), st.lists(keys, max_size=4)),
    )
    def del_exists(self, channel, command):
        self.check(channel, [command[0], *command[1]])

    @rule(channel=channels, command=st.one_of(command("TTL", keys), command("PTTL", keys)))
    def ttl(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.one_of(
            st.tuples(command("EXPIRE", keys, expire_seconds), expire_condition),
            st.tuples(command("PEXPIRE", keys, expire_millis), expire_condition),
            st.tuples(command("EXPIREAT", keys, st.one_of(future_seconds, past_seconds)), expire_condition),
            st.tuples(command("PEXPIREAT", keys, st.one_of(future_millis, past_millis)), expire_condition),
        ),
    )
    def expire(self, channel, command):
        self.check(channel, command[0] + command[1])

    @rule(channel=channels, command=command("PERSIST", keys))
    def persist(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels)
    def dbsize(self, channel):
        self.check(channel, [b"DBSIZE"])

    @rule(
        channel=channels,
        command=st.sampled_from(
            [
                [b"FLUSHALL"],
                [b"flushall", b"async"],
                [b"FLUSHALL", b"SYNC"],
                [b"FLUSHDB"],
                [b"FLUSHALL", b"LATER"],
                [b"FLUSHALL", b"ASYNC", b"SYNC"],
            ]  # the last two: syntax errors, no flush
        ),
    )
    def flushall(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, cursor=scan_cursor, options=flat(st.lists(scan_option, max_size=3)))
    def scan(self, channel, cursor, options):
        self.check(channel, [b"SCAN", cursor, *options])

    # -- issue 25: strings -------------------------------------------------------------

    @rule(channel=channels, command=command("GETSET", keys, values))
    def getset(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.one_of(command("GETRANGE", keys, indexes, indexes), command("SUBSTR", keys, indexes, indexes)),
    )
    def getrange(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=command("SETRANGE", keys, setrange_offsets, values))
    def setrange(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=command("INCRBYFLOAT", keys, float_amounts))
    def incrbyfloat(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels, command=st.tuples(keys, st.sampled_from([b"10.50", b"1e4931", b"-3", b"0x10", b"1.5"])))
    def incrbyfloat_stored(self, channel, command):
        # Stored numbers INCRBYFLOAT reads (a random value is rarely one).
        key, value = command
        self.check(channel, [b"SET", key, value])
        self.check(channel, [b"INCRBYFLOAT", key, b"0.1"])

    @rule(
        channel=channels,
        command=st.one_of(
            command("SETBIT", keys, bit_offsets, bit_values),
            command("GETBIT", keys, getbit_offsets),
        ),
    )
    def bits(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        command=st.one_of(
            command("BITCOUNT", keys),
            command("BITCOUNT", keys, indexes, indexes),
            command("BITCOUNT", keys, indexes, indexes, bit_units),
            command("BITCOUNT", keys, indexes),  # a syntax error, unless the key is missing
            command("BITPOS", keys, bit_values),
            command("BITPOS", keys, bit_values, indexes),
            command("BITPOS", keys, bit_values, indexes, indexes),
            command("BITPOS", keys, bit_values, indexes, indexes, bit_units),
        ),
    )
    def bit_queries(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        operation=st.sampled_from([b"AND", b"or", b"Xor", b"NOT", b"NAND"]),
        destination=st.one_of(same_slot_keys, keys),
        sources=st.lists(st.one_of(same_slot_keys, same_slot_keys, keys), min_size=1, max_size=3),
    )
    def bitop(self, channel, operation, destination, sources):
        self.check(channel, [b"BITOP", operation, destination, *sources])

    @rule(
        channel=channels,
        first=st.one_of(same_slot_keys, keys),
        second=st.one_of(same_slot_keys, keys),
        options=flat(
            st.lists(
                st.one_of(
                    st.sampled_from([[b"LEN"], [b"idx"], [b"WITHMATCHLEN"], [b"FOO"], [b"MINMATCHLEN"]]),
                    st.tuples(word("MINMATCHLEN"), st.sampled_from([b"0", b"1", b"2", b"-3", b"x"])).map(list),
                ),
                max_size=3,
            )
        ),
    )
    def lcs(self, channel, first, second, options):
        self.check(channel, [b"LCS", first, second, *options])

    @rule(
        channel=channels,
        name=st.sampled_from([b"BITFIELD", b"bitfield", b"BITFIELD_RO"]),
        key=keys,
        ops=flat(st.lists(bitfield_op, max_size=4)),
    )
    def bitfield(self, channel, name, key, ops):
        self.check(channel, [name, key, *ops])

    # -- issue 25: keyspace -----------------------------------------------------------

    @rule(
        channel=channels,
        name=st.sampled_from([b"RENAME", b"renamenx", b"COPY"]),
        source=st.one_of(same_slot_keys, keys),
        destination=st.one_of(same_slot_keys, keys),
        options=flat(st.lists(copy_option, max_size=2)),
    )
    def rename_copy(self, channel, name, source, destination, options):
        self.check(channel, [name, source, destination, *(options if name == b"COPY" else [])])

    @rule(channel=channels, pattern=patterns)
    def keys_(self, channel, pattern):
        self.check(channel, [b"KEYS", pattern])

    @rule(channel=channels, command=st.tuples(word("TOUCH"), st.lists(keys, min_size=1, max_size=4)))
    def touch(self, channel, command):
        self.check(channel, [command[0], *command[1]])

    @rule(channel=channels, command=st.one_of(command("EXPIRETIME", keys), command("PEXPIRETIME", keys)))
    def expiretime(self, channel, command):
        self.check(channel, command)

    @rule(channel=channels)
    def randomkey(self, channel):
        # Random on both sides: nil on both, or on each a key that exists there.
        mine = self.aegis.run(channel, [b"RANDOMKEY"])
        theirs = self.oracle.run(channel, [b"RANDOMKEY"])
        self.history.append(f"  [{channel}] RANDOMKEY -> {mine!r} | {theirs!r}")
        picked = _bulk(mine)
        if (picked is None) != (_bulk(theirs) is None):
            self._fail("RANDOMKEY: nil on one side only", mine, theirs)
        if picked is not None and self.aegis.run("redis-py", [b"EXISTS", picked]) != 1:
            self._fail("RANDOMKEY named a key that does not exist", mine, theirs)

    @rule(
        channel=channels,
        command=st.sampled_from(
            [
                [b"OBJECT", b"HELP"],
                [b"object", b"help", b"x"],
                [b"OBJECT", b"FOO"],
                [b"OBJECT", b"ENCODING"],
                [b"OBJECT", b"encoding", b"nosuchkey"],
                [b"OBJECT", b"REFCOUNT", b"nosuchkey"],
                [b"OBJECT", b"FREQ", b"nosuchkey"],
                [b"OBJECT", b"idletime", b"nosuchkey"],
                [b"OBJECT", b"FREQ"],
                [b"OBJECT", b"ENCODING", b"a", b"b"],
                [b"OBJECT"],
            ]
        ),
    )
    def object_(self, channel, command):
        # ENCODING, REFCOUNT, FREQ and IDLETIME of existing keys depend on each server's history
        # and eviction policy (tests/test_resp_string_keyspace.py, tests/test_hot_keys.py and
        # docs/redis-compatibility.md); of a missing key, both answer nil under any policy.
        self.check(channel, command)

    @rule(channel=channels, command=command("DUMP", keys))
    def dump(self, channel, command):
        self.check(channel, command)

    @rule(
        channel=channels,
        source=keys,
        into=keys,
        ttl=st.one_of(st.just(b"0"), ttl_millis, st.sampled_from([b"-1", b"x"]), future_millis),
        past=past_millis,
        options=flat(st.lists(restore_option, max_size=2)),
        corrupt=st.booleans(),
    )
    def restore(self, channel, source, into, ttl, past, options, corrupt):
        # A deadline in the past only with ABSTTL (nothing is stored): as a relative TTL of a few
        # milliseconds, whether the key is still there at the next command would depend on timing.
        if b"ABSTTL" in [option.upper() for option in options] and ttl == b"0":
            ttl = past
        # The payload is redis-server's own DUMP (a missing source: a payload of ours for "v").
        payload = _bulk(self.oracle.run("redis-py", [b"DUMP", source])) or dump_payload.encode(b"v")
        if corrupt:
            payload = payload[:-1] + bytes([payload[-1] ^ 1])
        self.check(channel, [b"RESTORE", into, ttl, payload, *options])

    # -- errors ------------------------------------------------------------------------

    @rule(channel=channels, command=fuzz_command)
    def fuzz(self, channel, command):
        """Known commands with blindly chosen arguments: arity and syntax errors must read the same."""
        self.check(channel, command)

    @invariant()
    def same_keyspace(self):
        # After every step the stored values agree: a divergence shows at the command that caused it.
        # One pipelined round trip per server: this runs after every step, so it dominates the runtime.
        mine, theirs = self.aegis.keyspace(), self.oracle.keyspace()
        self.history.append(f"  keyspace (stored keys; DBSIZE) -> {_stored(mine)} | {_stored(theirs)}")
        if mine != theirs:
            self._fail("values of the keys or DBSIZE differ", mine, theirs)


# -- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3], ids=[f"{ORACLE}-resp2", f"{ORACLE}-resp3"])
def test_resp_replies_match_oracle(protocol: int, oracle: Oracle, start_node, record_property) -> None:
    record_property("oracle", oracle.version)
    print(f"RESP oracle: {oracle.version} (RESP{protocol}; channels: {', '.join(CHANNELS)})")
    node = start_node()
    aegis = Server("aegis", _redis_py(node.resp_address, protocol), node.resp_address, protocol)
    if oracle.kind == "redis-server":
        other = Server(oracle.kind, _redis_py(oracle.address, protocol), oracle.address, protocol)
    else:
        other = Server(oracle.kind, _redis_py(None, protocol, oracle.fake_server), None, protocol)
    context = Context(aegis, other, oracle.kind)
    try:
        run_state_machine_as_test(
            # hypothesis calls any factory; its annotation asks for the machine's class.
            lambda: RespOracleMachine(context),  # type: ignore[arg-type]
            settings=settings(
                max_examples=examples(60),
                stateful_step_count=40,
                deadline=None,
                # No "explain" phase: it re-runs the failing example under a tracer, which costs more
                # time than the rest of the test and only names lines of this file.
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        for server in (aegis, other):
            with contextlib.suppress(OSError, redis.RedisError):
                server.close()
