"""OBJECT FREQ / IDLETIME against redis-server, INFO hotkeys on both ports, /metrics, redis-cli.

One real node per module, started with ``PYTHONHASHSEED=0`` and ``access_sample = 1``:
the access counters live in slots of the key's hash (aegiskv/backends/access.py), and
keys that share a slot share a count. With a known seed the test picks keys in distinct
slots (:func:`distinct_slot_keys`), and with every access counted (the default samples
one in 16, tests/test_access_counts.py) the counts follow Redis's rule, so an exact
count is a fair expectation; the node's behaviour is the same under any seed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aegiskv.backends.access import MIN_SLOTS
from aegiskv.client import Client, Config
from aegiskv.server.info import printable_key
from aegiskv.testing.localnode import LocalNode
from tests.test_resp_oracle import _start_redis_server, _stop
from tests.wire import health_address_of, http_request, metric_samples, resp_address_of

HASH_SEED = "0"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[LocalNode]:
    # Every access counted, as Redis counts them (the default samples one in 16): exact counts.
    environment = {**os.environ, "PYTHONHASHSEED": HASH_SEED, "AEGIS_ACCESS_SAMPLE": "1"}
    started = LocalNode(str(tmp_path_factory.mktemp("hotkeys")), env=environment)
    yield started
    assert started.stop() == 0


@pytest.fixture
def ours(node: LocalNode) -> Iterator[redis.Redis]:
    host, port = resp_address_of(node)
    client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=10)
    client.response_callbacks.clear()  # the parsed reply, nothing re-shaped
    client.flushall()  # every slot counts LFU_INIT again: a test starts from a known table
    yield client
    client.close()


def distinct_slot_keys(candidates: list[bytes], wanted: int) -> list[bytes]:
    """The first ``wanted`` candidates whose slots differ in the node's (smallest) table."""
    program = f"import sys\nfor line in sys.stdin.read().split(): print(hash(bytes.fromhex(line)) & {MIN_SLOTS - 1})\n"
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=" ".join(candidate.hex() for candidate in candidates),
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": HASH_SEED},
        check=True,
    )
    chosen: dict[int, bytes] = {}
    for key, slot in zip(candidates, result.stdout.split(), strict=True):
        chosen.setdefault(int(slot), key)
        if len(chosen) == wanted:
            return list(chosen.values())
    raise AssertionError("not enough candidates in distinct slots")


def _read(client: redis.Redis, key: bytes, times: int) -> None:
    pipe = client.pipeline(transaction=False)
    for _ in range(times):
        pipe.get(key)
    pipe.execute()


def _reply(client: redis.Redis, *command: Any) -> Any:
    try:
        return client.execute_command(*command)
    except redis.ResponseError as error:
        return f"error: {error}"


# -- OBJECT FREQ and IDLETIME: redis-server as the oracle ----------------------------------------


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    process, port = _start_redis_server(str(tmp_path_factory.mktemp("hotkeys-redis")))
    yield port
    _stop(process)


@pytest.fixture
def theirs(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port, protocol=2, socket_timeout=10)
    client.response_callbacks.clear()
    client.flushall()
    yield client
    client.close()


def test_object_freq_and_idletime_answer_as_redis(ours: redis.Redis, theirs: redis.Redis) -> None:
    # FREQ as Redis answers it under an LFU policy, IDLETIME under an LRU one: AegisKV keeps both.
    theirs.config_set("maxmemory-policy", "allkeys-lfu")
    for client in (ours, theirs):
        client.set("k", "v")
    same = [
        ("OBJECT", "FREQ", "k"),  # a new key: LFU_INIT, 5
        ("GET", "k"),
        ("OBJECT", "FREQ", "k"),  # the first access to a count of 5 always counts: 6
        ("OBJECT", "FREQ", "missing"),
        ("OBJECT", "IDLETIME", "missing"),
        ("OBJECT", "FREQ"),
        ("OBJECT", "FREQ", "k", "extra"),
        ("OBJECT", "IDLETIME"),
    ]
    answers = [(_reply(ours, *step), _reply(theirs, *step)) for step in same]
    assert [mine for mine, _oracle in answers] == [oracle for _mine, oracle in answers]
    assert answers[0] == (5, 5) and answers[2] == (6, 6)
    for client in (ours, theirs):
        client.set("k", "w")  # a rewrite is an access too: 6 -> 7 with probability 1/11, on each server
        assert _reply(client, "OBJECT", "FREQ", "k") in (6, 7)
    theirs.config_set("maxmemory-policy", "allkeys-lru")
    for client in (ours, theirs):
        client.set("fresh", "v")  # Redis reads the LFU bits of a key made before the switch as a time
    assert _reply(ours, "OBJECT", "IDLETIME", "fresh") == _reply(theirs, "OBJECT", "IDLETIME", "fresh") == 0
    # The documented difference (docs/redis-compatibility.md): Redis answers one of the two, by policy.
    assert "An LFU maxmemory policy is not selected" in _reply(theirs, "OBJECT", "FREQ", "k")
    assert _reply(ours, "OBJECT", "FREQ", "k") in (6, 7)


# -- INFO hotkeys ------------------------------------------------------------------------------------


def test_info_hotkeys_ranks_the_read_keys_in_the_documented_format(node: LocalNode, ours: redis.Redis) -> None:
    odd = b"odd\\key\x00\xff:=,\r\n end"
    hot, warm, cold, strange = distinct_slot_keys(
        [b"hot", b"warm", b"cold", odd, *(b"spare%d" % i for i in range(9))], 4
    )
    assert strange == odd  # the candidates' order holds unless two of them collide under seed 0
    for key in (hot, warm, cold, strange):
        ours.set(key, b"v")
    _read(ours, hot, 400)
    _read(ours, warm, 60)
    _read(ours, strange, 10)
    frequencies = {key: ours.execute_command("OBJECT", "FREQ", key) for key in (hot, warm, strange)}
    assert frequencies[hot] > frequencies[warm] > frequencies[strange] > 5

    text = ours.execute_command("INFO", "hotkeys").decode()
    lines = text.split("\r\n")
    assert lines[:2] == ["# Hotkeys", "hotkeys_tracked:3"]  # a key only written never counted up
    assert lines[2:5] == [
        f"hotkey_0:freq={frequencies[hot]},key=hot",
        f"hotkey_1:freq={frequencies[warm]},key=warm",
        f"hotkey_2:freq={frequencies[strange]},key=odd\\x5ckey\\x00\\xff:=,\\x0d\\x0a end",
    ]
    assert lines[5:] == [""]

    # The native port sends the same fields as a JSON object.
    with Client(Config(seeds=[node.address_text], cluster_routing=False)) as client:
        native = client.info("hotkeys")
    assert native == {
        "hotkeys": {
            "hotkeys_tracked": 3,
            "hotkey_0": {"freq": frequencies[hot], "key": "hot"},
            "hotkey_1": {"freq": frequencies[warm], "key": "warm"},
            "hotkey_2": {"freq": frequencies[strange], "key": printable_key(odd)},
        }
    }
    # Not part of INFO's default or "all" output (Redis has no such section).
    assert b"# Hotkeys" not in ours.execute_command("INFO", "all")
    ours.delete(hot)
    assert ours.execute_command("INFO", "hotkeys").decode().split("\r\n")[1:3] == [
        "hotkeys_tracked:2",
        f"hotkey_0:freq={frequencies[warm]},key=warm",
    ]


def test_metrics_show_the_ten_hottest(node: LocalNode, ours: redis.Redis) -> None:
    keys = distinct_slot_keys([b"metric:%d" % index for index in range(60)], 12)
    for number, key in enumerate(keys):
        ours.set(key, b"v")
        _read(ours, key, 3 + number * 8)
    status, _headers, body = http_request(health_address_of(node), "/metrics")
    assert status == 200
    shown = {
        labels: value
        for (name, labels), value in metric_samples(body.decode()).items()
        if name == "aegis_hot_key_frequency"
    }
    assert len(shown) == 10  # bounded: INFO hotkeys lists them all
    ranked = sorted(((int(dict(labels)["rank"]), dict(labels)["key"], value) for labels, value in shown.items()))
    assert [rank for rank, _key, _value in ranked] == list(range(10))
    counts = [value for _rank, _key, value in ranked]
    assert counts == sorted(counts, reverse=True)
    for _rank, label, value in ranked:
        assert ours.execute_command("OBJECT", "FREQ", label) == value
    everyone = sorted((ours.execute_command("OBJECT", "FREQ", key) for key in keys), reverse=True)
    assert counts == everyone[:10]  # the ten largest of the twelve
    assert b"hotkeys_tracked:12" in ours.execute_command("INFO", "hotkeys")


# -- redis-cli's own scans -----------------------------------------------------------------------


needs_cli = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")


def _cli(node: LocalNode, *args: str) -> str:
    host, port = resp_address_of(node)
    result = subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), *args], capture_output=True, timeout=60, check=False, text=True
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@needs_cli
def test_redis_cli_hotkeys_finds_the_hot_key(node: LocalNode, ours: redis.Redis) -> None:
    # redis-cli --hotkeys: DBSIZE, SCAN, then OBJECT FREQ of every key; the 16 largest are listed.
    hot, *others = distinct_slot_keys([b"cli:hot", *(b"cli:%d" % index for index in range(40))], 20)
    for key in (hot, *others):
        ours.set(key, b"v")
    _read(ours, hot, 300)
    frequency = ours.execute_command("OBJECT", "FREQ", hot)
    output = _cli(node, "--hotkeys")
    assert "Sampled 20 keys in the keyspace!" in output
    summary = output.split("-------- summary -------")[1].strip().splitlines()
    assert summary[1] == f'hot key found with counter: {frequency}\tkeyname: "cli:hot"'
    assert len(summary) == 1 + 16  # the header line, then redis-cli's top 16


@needs_cli
def test_redis_cli_bigkeys_finds_the_biggest_string(node: LocalNode, ours: redis.Redis) -> None:
    # redis-cli --bigkeys: DBSIZE, SCAN, TYPE and STRLEN of every key.
    for index in range(30):
        ours.set(f"big:{index}", "x" * index)
    ours.set("big:largest", "y" * 5000)
    output = _cli(node, "--bigkeys")
    assert "Sampled 31 keys in the keyspace!" in output
    assert "Biggest string found '\"big:largest\"' has 5000 bytes" in output
    assert f"31 strings with {5000 + sum(range(30))} bytes" in output
