"""BITCOUNT, BITPOS and GETRANGE of large values: in the worker pool, sliced, and as Redis answers.

Issue 28: a command whose work grows with its value held the reactor for all of it (BITCOUNT
of 8 MiB: 70 ms during which no other client was answered). Above POOL_VALUE_BYTES these run
in the worker pool (aegiskv.server.pipeline), and the bit functions walk the value a slice at
a time, letting the interpreter lock go between slices (aegiskv.node.bit_strings), so the
reactor runs meanwhile. The replies are checked against redis-server's.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from aegiskv.client import Client, Config
from aegiskv.server.pipeline import POOL_VALUE_BYTES
from aegiskv.testing.localnode import LocalNode
from tests.test_resp_oracle import _start_redis_server, _stop

MIB = 1 << 20


def _value(size: int) -> bytes:
    # Runs of zero bytes, of 0xff bytes and random bytes: every BITPOS below finds its bit
    # somewhere past the first slices, some only at the very end.
    rng = random.Random(size)
    head = bytes(size // 2)
    middle = b"\xff" * (size // 4)
    tail = rng.randbytes(size - len(head) - len(middle) - 1) + b"\x01"
    return head + middle + tail


_COMMANDS = [
    ["BITCOUNT", "k"],
    ["BITCOUNT", "k", "100", "-100"],
    ["BITCOUNT", "k", "13", "20000001", "BIT"],
    ["BITCOUNT", "k", "-3000000", "-1", "BYTE"],
    ["BITPOS", "k", "1"],
    ["BITPOS", "k", "0"],
    ["BITPOS", "k", "0", "1500000"],
    ["BITPOS", "k", "1", "-100", "-1"],
    ["BITPOS", "k", "0", "8", "-1", "BIT"],
    ["BITPOS", "k", "1", "3", "16000003", "BIT"],
    ["GETRANGE", "k", "0", "-1"],
    ["GETRANGE", "k", "1000", "2500000"],
    ["SUBSTR", "k", "-2000000", "-3"],
]


@pytest.fixture(scope="module")
def redis_address(tmp_path_factory) -> Iterator[tuple[str, int]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    process, port = _start_redis_server(str(tmp_path_factory.mktemp("redis")))
    yield ("127.0.0.1", port)
    _stop(process)


def test_large_value_reads_answer_as_redis_server(start_node, redis_address: tuple[str, int]) -> None:
    node: LocalNode = start_node()
    assert node.resp_address is not None
    value = _value(3 * MIB)
    assert len(value) > POOL_VALUE_BYTES  # these run in the pool
    with (
        redis.Redis(*node.resp_address, socket_timeout=60) as aegis,
        redis.Redis(*redis_address, socket_timeout=60) as oracle,
    ):
        for client in (aegis, oracle):
            client.set("k", value)
            client.set("small", value[: 64 * 1024])
        for command in [*_COMMANDS, *[[name, "small", *rest] for name, _key, *rest in _COMMANDS]]:
            assert aegis.execute_command(*command) == oracle.execute_command(*command), command
    # The native port's GETRANGE is sized by its value too: handed to the pool the same way.
    with Client(Config(seeds=[node.address_text])) as native:
        assert native.get_range("k", 1000, 2_500_000) == value[1000:2_500_001]
        assert native.get_range("k", -5, -1) == value[-5:]


@pytest.mark.slow
def test_a_large_bitcount_does_not_hold_the_reactor(start_node) -> None:
    # Counted by the server: its longest reactor turn (INFO stats) while BITCOUNTs of a 64 MiB
    # value run, against how long they took. Inline, one turn was the whole count; in the pool
    # the reactor only hands it over, and answers PINGs on another connection meanwhile.
    node: LocalNode = start_node()
    assert node.resp_address is not None
    with (
        redis.Redis(*node.resp_address, socket_timeout=120) as client,
        redis.Redis(*node.resp_address, socket_timeout=120) as prober,
    ):
        client.set("big", b"\x5a" * (64 * MIB))
        pings = 0
        stop = threading.Event()

        def probe() -> None:
            nonlocal pings
            while not stop.is_set():
                assert prober.ping()
                pings += 1

        client.execute_command("CONFIG", "RESETSTAT")
        probing = threading.Thread(target=probe)
        probing.start()
        started = time.monotonic()
        try:
            for _ in range(3):
                assert client.bitcount("big") == 4 * 64 * MIB
        finally:
            stop.set()
            probing.join()
        counting_us = (time.monotonic() - started) / 3 * 1e6
        longest_us = int(client.info("stats")["aegis_longest_turn_usec"])
    assert pings > 0
    assert longest_us < counting_us / 2, (longest_us, counting_us)
