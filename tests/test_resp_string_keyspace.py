"""The string and keyspace commands of issue 25 through redis-py against a real node.

Edge cases the differential test (tests/test_resp_oracle.py) does not reach, or reaches only
by chance: redis-py's own helpers (expireat, getrange, copy ...), offsets past the end and the
512 MiB bound, INCRBYFLOAT's overflow and refusals, the cluster rules (CROSSSLOT, COPY DB),
DUMP payloads from a real redis-server, and writes reaching the write-ahead log.
Expected texts are redis-server 7.0's, collected from it while writing these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from aegiskv.node import dump_payload
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of


@pytest.fixture(scope="module")
def aegis(tmp_path_factory) -> Iterator[LocalNode]:
    # A value limit of 1 MiB, so a SETRANGE or SETBIT past it is refused below Redis's 512 MiB.
    environment = {**os.environ, "AEGIS_MAX_VALUE_BYTES": "1048576"}
    node = LocalNode(str(tmp_path_factory.mktemp("strcmds")), env=environment)
    yield node
    node.stop()


@pytest.fixture
def r(aegis: LocalNode) -> Iterator[redis.Redis]:
    host, port = resp_address_of(aegis)
    client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


def error_of(client: redis.Redis, *args) -> str:
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command(*args)
    return str(caught.value)


def test_time_is_the_wall_clock(r: redis.Redis) -> None:
    before = time.time()
    seconds, microseconds = r.time()
    after = time.time()
    assert 0 <= microseconds < 1_000_000
    assert int(before) <= seconds <= int(after) + 1


def test_redis_py_expiry_helpers_that_read_time(r: redis.Redis) -> None:
    r.set("k", "v")
    deadline = int(time.time()) + 1000
    assert r.expireat("k", deadline)
    assert r.expiretime("k") == deadline
    assert r.pexpireat("k", deadline * 1000 + 5)
    assert r.pexpiretime("k") == deadline * 1000 + 5
    assert r.expiretime("k") == deadline  # truncated, as Redis
    assert r.expiretime("missing") == -2
    r.persist("k")
    assert r.expiretime("k") == -1


def test_getrange_and_setrange(r: redis.Redis) -> None:
    r.set("k", "Hello World")
    assert r.getrange("k", 0, 4) == b"Hello"
    assert r.getrange("k", -5, -1) == b"World"
    assert r.getrange("k", -1, -5) == b""  # both negative, start after end: empty before clamping
    assert r.getrange("k", 5, 1000) == b" World"
    assert r.getrange("k", -1000, 2) == b"Hel"
    assert r.substr("k", 6, -1) == b"World"
    assert r.getrange("missing", 0, -1) == b""
    r.set("big", b"x" * 70_000 + b"end")  # above 64 KiB the node hands out a view of the value
    assert r.getrange("big", -3, -1) == b"end"
    assert r.setrange("k", 6, "Redis") == 11
    assert r.get("k") == b"Hello Redis"
    assert r.setrange("k", 15, "!") == 16  # past the end: zero bytes fill the gap
    assert r.get("k") == b"Hello Redis\0\0\0\0!"
    assert r.setrange("missing", 0, "") == 0  # empty data creates nothing
    assert r.exists("missing") == 0
    assert r.setrange("k", 2**29, "") == 16  # empty data: nothing is checked or grown
    assert error_of(r, "SETRANGE", "k", "-1", "x") == "offset is out of range"
    assert error_of(r, "SETRANGE", "k", "x", "x") == "value is not an integer or out of range"
    assert error_of(r, "GETRANGE", "k", "0", "x") == "value is not an integer or out of range"


def test_setrange_keeps_the_ttl(r: redis.Redis) -> None:
    r.set("k", "abc", ex=1000)
    r.setrange("k", 1, "X")
    assert 990 < r.ttl("k") <= 1000


def test_growing_past_the_bounds_is_refused_before_anything_is_built(r: redis.Redis) -> None:
    r.set("k", "abc")
    assert error_of(r, "SETRANGE", "k", str(2**29 - 1), "xx") == (
        "string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    # Under Redis's bound but above this node's --max-value-bytes of 1 MiB.
    assert error_of(r, "SETRANGE", "k", str(2**20), "x") == f"value of {2**20 + 1} bytes exceeds the limit of {2**20}"
    assert error_of(r, "SETBIT", "k", str(8 * 2**20), "1") == f"value of {2**20 + 1} bytes exceeds the limit of {2**20}"
    assert error_of(r, "SETBIT", "k", str(2**32), "1") == "bit offset is not an integer or out of range"
    assert r.get("k") == b"abc"


def test_incrbyfloat_formats_as_redis_long_double(r: redis.Redis) -> None:
    r.set("k", "10.50")
    assert r.incrbyfloat("k", 0.1) == 10.6
    assert r.get("k") == b"10.6"
    r.set("k", "5.0e3")
    assert r.execute_command("INCRBYFLOAT", "k", "2.0e2") == 5200
    assert r.get("k") == b"5200"
    r.set("k", "1")
    r.execute_command("INCRBYFLOAT", "k", "0x1p-2")  # strtold reads hexadecimal floats
    assert r.get("k") == b"1.25"
    r.set("k", "3")
    # 1e4000 is within a long double's range; its nearest long double is printed in full, all 4,000 digits.
    r.execute_command("INCRBYFLOAT", "k", "1e4000")
    big = r.execute_command("GET", "k")
    assert len(big) == 4000 and big.isdigit() and big.startswith(b"99999999999999999")
    assert r.incrbyfloat("missing", -0.5) == -0.5


def test_incrbyfloat_refusals(r: redis.Redis) -> None:
    r.set("k", "1")
    assert error_of(r, "INCRBYFLOAT", "k", "nan") == "value is not a valid float"
    assert error_of(r, "INCRBYFLOAT", "k", "1e5000") == "value is not a valid float"  # overflows strtold
    assert error_of(r, "INCRBYFLOAT", "k", " 1") == "value is not a valid float"
    assert error_of(r, "INCRBYFLOAT", "k", "1x") == "value is not a valid float"
    assert error_of(r, "INCRBYFLOAT", "k", "inf") == "increment would produce NaN or Infinity"
    r.set("big", "1.1e4932")
    assert error_of(r, "INCRBYFLOAT", "big", "1.1e4932") == "increment would produce NaN or Infinity"
    r.set("text", "abc")
    assert error_of(r, "INCRBYFLOAT", "text", "1") == "value is not a valid float"
    assert r.get("big") == b"1.1e4932" and r.get("k") == b"1"


def test_getset(r: redis.Redis) -> None:
    assert r.getset("k", "one") is None
    r.expire("k", 100)
    assert r.getset("k", "two") == b"one"
    assert r.ttl("k") == -1  # as SET, GETSET drops the TTL


def test_bits(r: redis.Redis) -> None:
    assert r.setbit("b", 7, 1) == 0
    assert r.setbit("b", 7, 1) == 1
    assert r.get("b") == b"\x01"
    assert r.getbit("b", 7) == 1 and r.getbit("b", 6) == 0 and r.getbit("b", 10**6) == 0
    r.set("f", "foobar")
    assert r.bitcount("f") == 26
    assert r.bitcount("f", 1, 1) == 6
    assert r.bitcount("f", 5, 30, "BIT") == 17
    assert r.bitcount("f", -1, -3) == 0
    assert r.bitcount("missing", 0, 1) == 0
    r.set("p", b"\xff\xf0\x00")
    assert r.bitpos("p", 0) == 12
    assert r.bitpos("p", 1, 2) == -1
    assert r.bitpos("p", 0, 7, 15, "bit") == 12
    r.set("ones", b"\xff\xff")
    assert r.bitpos("ones", 0) == 16  # no end given: the bit past the end
    assert r.bitpos("ones", 0, 0, -1) == -1  # an end given: none in range
    assert r.bitpos("missing", 1) == -1 and r.bitpos("missing", 0) == 0
    assert error_of(r, "BITPOS", "p", "2") == "The bit argument must be 1 or 0."
    assert error_of(r, "SETBIT", "p", "1", "2") == "bit is not an integer or out of range"
    assert error_of(r, "BITCOUNT", "p", "0", "1", "WORD") == "syntax error"


def test_bitop(r: redis.Redis) -> None:
    r.set("{t}a", b"\x0f\xf0")
    r.set("{t}b", b"\xff")
    assert r.bitop("AND", "{t}d", "{t}a", "{t}b") == 2
    assert r.get("{t}d") == b"\x0f\x00"
    assert r.bitop("OR", "{t}d", "{t}a", "{t}b", "{t}missing") == 2
    assert r.get("{t}d") == b"\xff\xf0"
    assert r.bitop("XOR", "{t}d", "{t}a", "{t}b") == 2
    assert r.get("{t}d") == b"\xf0\xf0"
    assert r.bitop("NOT", "{t}d", "{t}a") == 2
    assert r.get("{t}d") == b"\xf0\x0f"
    assert r.bitop("AND", "{t}d", "{t}none") == 0
    assert r.exists("{t}d") == 0  # an empty result deletes the destination
    assert error_of(r, "BITOP", "NOT", "{t}d", "{t}a", "{t}b") == "BITOP NOT must be called with a single source key."
    assert error_of(r, "BITOP", "NAND", "{t}d", "{t}a") == "syntax error"
    assert error_of(r, "BITOP", "AND", "d", "{t}a") == "Keys in request don't hash to the same slot"


def test_rename_and_copy_carry_the_ttl(r: redis.Redis) -> None:
    r.set("{u}a", "1", ex=1000)
    assert r.rename("{u}a", "{u}b")
    assert r.get("{u}b") == b"1" and r.exists("{u}a") == 0
    assert 990 < r.ttl("{u}b") <= 1000
    assert r.copy("{u}b", "{u}c")
    assert 990 < r.ttl("{u}c") <= 1000
    assert not r.copy("{u}b", "{u}c")  # the destination exists
    r.set("{u}b", "2")
    assert r.copy("{u}b", "{u}c", replace=True)
    assert r.get("{u}c") == b"2" and r.ttl("{u}c") == -1
    assert not r.renamenx("{u}b", "{u}c")
    assert r.renamenx("{u}b", "{u}d")
    assert error_of(r, "RENAME", "{u}missing", "{u}x") == "no such key"
    assert error_of(r, "COPY", "{u}c", "{u}c") == "source and destination objects are the same"
    assert not r.copy("{u}missing", "{u}x")


def test_cluster_rules_for_two_keys(r: redis.Redis) -> None:
    r.set("a", "1")
    crossslot = "Keys in request don't hash to the same slot"
    assert error_of(r, "RENAME", "a", "b") == crossslot
    assert error_of(r, "RENAMENX", "a", "b") == crossslot
    assert error_of(r, "COPY", "a", "b", "BOGUS") == crossslot  # as Redis Cluster: before the options
    assert error_of(r, "COPY", "a", "{a}b", "DB", "1") == "Copying to another database is not allowed in cluster mode"
    assert r.copy("a", "{a}b", destination_db="0")
    assert r.get("a") == b"1"


def test_touch_keys_randomkey(r: redis.Redis) -> None:
    assert r.randomkey() is None
    r.mset({"one": "1", "two": "2", "three": "3"})
    assert r.touch("one", "two", "missing") == 2
    assert sorted(r.keys()) == [b"one", b"three", b"two"]
    assert sorted(r.keys("t*")) == [b"three", b"two"]
    assert {r.randomkey() for _ in range(50)} <= {b"one", b"two", b"three"}
    r.set("short", "x", px=1)
    expired_at = time.time() + 0.002
    while time.time() < expired_at:  # wait for the deadline to pass: KEYS must not list the key after it
        time.sleep(0.001)
    listed = r.keys()
    assert b"short" not in listed and len(listed) == 3


def test_object(r: redis.Redis) -> None:
    r.set("int", "12345")
    r.set("short", "x" * 44)
    r.set("long", "x" * 45)
    assert r.object("encoding", "int") == b"int"
    assert r.object("encoding", "short") == b"embstr"
    assert r.object("encoding", "long") == b"raw"
    assert r.object("refcount", "int") == 1
    assert r.object("encoding", "missing") is None
    # Redis's LFU counter, fed one access in 16 here (exact counts: tests/test_hot_keys.py): a
    # key's count and idle minutes are its hash slot's; a read does not lower the count (one less
    # only if a minute began between the two readings).
    written = r.object("freq", "short")
    assert 0 <= written <= 255
    r.get("short")
    assert written - 1 <= r.object("freq", "short") <= 255
    assert r.object("idletime", "short") % 60 == 0  # whole minutes, in seconds
    assert r.object("freq", "missing") is None and r.object("idletime", "missing") is None
    assert error_of(r, "OBJECT", "FOO") == "unknown subcommand 'FOO'. Try OBJECT HELP."
    assert error_of(r, "OBJECT", "ENCODING") == "wrong number of arguments for 'object|encoding' command"
    help_lines = r.execute_command("OBJECT", "HELP")
    assert help_lines[0].startswith(b"OBJECT <subcommand>") and help_lines[-1] == b"    Prints this help."


def test_dump_and_restore(r: redis.Redis) -> None:
    r.set("k", "12")
    payload = r.dump("k")
    assert payload == dump_payload.encode(b"12")
    assert r.dump("missing") is None
    assert r.restore("copy", 0, payload)
    assert r.get("copy") == b"12" and r.ttl("copy") == -1
    # redis-py knows no BUSYKEY error class: the code stays in the text, as with redis-server.
    assert error_of(r, "RESTORE", "copy", "0", payload) == "BUSYKEY Target key name already exists."
    assert r.restore("copy", 100_000, dump_payload.encode(b"new"), replace=True)
    assert r.get("copy") == b"new" and 95 <= r.ttl("copy") <= 100
    deadline = int(time.time() * 1000) + 500_000
    assert r.restore("abs", deadline, payload, absttl=True)
    assert r.pexpiretime("abs") == deadline
    assert r.restore("past", 1, payload, absttl=True)  # already expired: stores nothing
    assert r.exists("past") == 0
    assert r.restore("idle", 0, payload, idletime=5)
    assert r.restore("freq", 0, payload, frequency=3)
    assert error_of(r, "RESTORE", "x", "0", payload[:-1] + b"\0") == "DUMP payload version or checksum are wrong"
    assert error_of(r, "RESTORE", "x", "-1", payload) == "Invalid TTL value, must be >= 0"
    assert error_of(r, "RESTORE", "x", "0", payload, "FREQ", "256") == "Invalid FREQ value, must be >= 0 and <= 255"
    assert error_of(r, "RESTORE", "x", "0", payload, "IDLETIME", "1", "FREQ", "1") == "syntax error"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_dump_payloads_cross_with_redis_server(r: redis.Redis, tmp_path) -> None:
    from tests.test_resp_oracle import _start_redis_server, _stop

    process, port = _start_redis_server(str(tmp_path))
    try:
        with redis.Redis(port=port) as real:
            samples = [b"", b"7", b"-129", b"40000", b"2147483648", b"plain text", b"ab" * 500, bytes(range(256))]
            for index, value in enumerate(samples):
                real.set("src", value)
                # Redis's payload (LZF-compressed for long repetitive strings) restores here ...
                assert r.restore(f"from-redis-{index}", 0, real.dump("src"))
                assert r.get(f"from-redis-{index}") == value
                # ... and ours there.
                r.set("ours", value)
                assert real.restore(f"from-aegis-{index}", 0, r.dump("ours"), replace=True)
                assert real.get(f"from-aegis-{index}") == value
                if len(value) <= 20:  # Redis compresses nothing shorter: byte for byte the same
                    assert r.dump("ours") == real.dump("src")
            real.rpush("list", "x")
            assert "strings only" in error_of(r, "RESTORE", "l", "0", real.dump("list"))
    finally:
        _stop(process)


def test_writes_reach_the_log(tmp_path) -> None:
    """SETRANGE, INCRBYFLOAT, SETBIT, BITOP, RENAME, COPY, RESTORE go through the node's operations:
    a node restarted on its write-ahead log has them all."""
    node = LocalNode(str(tmp_path / "wal"), ("--wal", "write"))
    expected = {}
    try:
        host, port = resp_address_of(node)
        with redis.Redis(host=host, port=port) as client:
            client.set("{w}s", "Hello")
            client.setrange("{w}s", 5, " World")
            client.incrbyfloat("{w}f", "1.5")
            client.setbit("{w}b", 3, 1)
            client.bitop("OR", "{w}o", "{w}b", "{w}s")
            client.set("{w}r", "moved", ex=1000)
            client.rename("{w}r", "{w}r2")
            client.copy("{w}s", "{w}c")
            client.restore("{w}d", 0, dump_payload.encode(b"restored"))
            expected = {key: client.get(key) for key in ("{w}s", "{w}f", "{w}b", "{w}o", "{w}r2", "{w}c", "{w}d")}
    finally:
        node.stop()
    node = LocalNode(str(tmp_path / "wal"), ("--wal", "write"))
    try:
        host, port = resp_address_of(node)
        with redis.Redis(host=host, port=port) as client:
            assert {key: client.get(key) for key in expected} == expected
            assert client.exists("{w}r") == 0
            assert 900 < client.ttl("{w}r2") <= 1000
    finally:
        node.stop()


def test_command_count_includes_the_new_commands(r: redis.Redis) -> None:
    names = {name.decode() if isinstance(name, bytes) else name for name in r.command_list()}
    new = {"time", "getset", "getrange", "substr", "setrange", "incrbyfloat", "setbit", "getbit", "bitcount"}
    new |= {"bitpos", "bitop", "keys", "rename", "renamenx", "copy", "randomkey", "touch", "expiretime"}
    new |= {"pexpiretime", "object", "dump", "restore", "lcs", "bitfield", "bitfield_ro"}
    assert new <= names
    # COMMAND LIST names subcommands too (config|get), COMMAND COUNT only the commands.
    assert r.command_count() == len({name for name in names if "|" not in name})


def test_redis_cli_reads_the_replies(aegis: LocalNode) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("needs redis-cli")
    host, port = resp_address_of(aegis)
    run = ["redis-cli", "-h", host, "-p", str(port)]
    subprocess.run([*run, "SET", "cli", "10.5"], check=True, capture_output=True)
    out = subprocess.run([*run, "INCRBYFLOAT", "cli", "0.1"], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "10.6"


def test_lcs(r: redis.Redis) -> None:
    r.set("{l}a", "ohmytext")
    r.set("{l}b", "mynewtext")
    assert r.lcs("{l}a", "{l}b") == b"mytext"
    assert r.lcs("{l}a", "{l}b", len=True) == 6
    assert r.execute_command("LCS", "{l}a", "{l}b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN") == [
        b"matches",
        [[[4, 7], [5, 8], 4]],
        b"len",
        6,
    ]
    assert r.lcs("{l}a", "{l}missing") == b""
    assert error_of(r, "LCS", "{l}a", "{l}b", "LEN", "IDX") == (
        "If you want both the length and indexes, please just use IDX."
    )
    assert error_of(r, "LCS", "a", "b") == "Keys in request don't hash to the same slot"
    r.set("{l}big", "x" * 4096)
    assert "over this node's limit" in error_of(r, "LCS", "{l}big", "{l}big")


def test_bitfield(r: redis.Redis) -> None:
    field = r.bitfield("bf")
    assert field.set("i8", 0, 100).incrby("i8", 0, 100).get("u4", 0).execute() == [0, -56, 12]
    assert r.bitfield("bf", default_overflow="SAT").incrby("u2", "#5", 7).execute() == [3]
    assert r.bitfield("bf", default_overflow="FAIL").incrby("i8", 0, 200).execute() == [None]
    assert r.bitfield_ro("bf", "i8", 0) == [-56]
    assert r.execute_command("BITFIELD", "missing", "GET", "u8", "100") == [0]
    assert r.exists("missing") == 0  # only GETs: nothing created
    assert r.execute_command("BITFIELD", "grown", "OVERFLOW", "FAIL", "SET", "u2", "30", "9") == [None]
    assert r.get("grown") == b"\0\0\0\0"  # grown to the bits it would write, even on FAIL, as Redis
    assert error_of(r, "BITFIELD_RO", "bf", "SET", "u8", "0", "1") == "BITFIELD_RO only supports the GET subcommand"
    assert error_of(r, "BITFIELD", "bf", "GET", "u64", "0").startswith("Invalid bitfield type.")
    assert error_of(r, "BITFIELD", "bf", "OVERFLOW", "MAYBE") == "Invalid OVERFLOW type specified"
    assert error_of(r, "BITFIELD", "bf", "SET", "u8", str(8 * 2**20), "1") == (
        f"value of {2**20 + 1} bytes exceeds the limit of {2**20}"
    )
