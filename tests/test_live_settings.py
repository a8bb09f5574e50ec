"""Settings changed on a running node: CONFIG SET and SIGHUP, against real processes.

A CONFIG SET must change what the node does (a rate limit refuses requests on a connection
opened before it, a lowered memory bound evicts), not only what CONFIG GET says. SIGHUP
reloads the TOML file the node was started with: live settings apply, a bad file is refused
with one log line, a changed start-up setting is logged as needing a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from aegiskv.server.live_settings import parse_config_set
from aegiskv.testing.localnode import LocalNode
from tests.test_resp_oracle import _start_redis_server, _stop
from tests.wire import resp_address_of


def _client(node: LocalNode) -> redis.Redis:
    host, port = resp_address_of(node)
    client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=10)
    client.response_callbacks.clear()
    return client


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _reply(client: redis.Redis, *command: str) -> object:
    try:
        return client.execute_command(*command)
    except redis.ResponseError as error:
        return f"error: {error}"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[LocalNode]:
    started = LocalNode(str(tmp_path_factory.mktemp("live")), ["--max-memory", "64"])
    yield started
    started.stop()


# Redis 7.0's replies for the settings both servers have, and its errors.
SAME_REPLY = [
    ("CONFIG", "SET", "foo", "1"),
    ("CONFIG", "SET", "maxmemory", "abc"),
    ("CONFIG", "SET", "loglevel", "foo"),
    ("CONFIG", "SET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "100mb", "maxmemory", "3"),
    ("CONFIG", "SET", "maxmemory", "100mb", "loglevel", "nope"),
    ("CONFIG", "SET", "maxmemory", "1", "2"),
    ("CONFIG", "SET", "loglevel", "warning"),
    ("CONFIG", "GET", "loglevel"),
    ("CONFIG", "SET", "loglevel", "notice", "maxmemory", "64mb"),
    ("CONFIG", "GET", "maxmemory", "loglevel"),
]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_config_set_answers_as_redis(node: LocalNode, tmp_path: Path) -> None:
    process, port = _start_redis_server(str(tmp_path))
    try:
        theirs = redis.Redis(port=port, protocol=2, socket_timeout=10)
        theirs.response_callbacks.clear()
        ours = _client(node)
        for command in SAME_REPLY:
            mine, reference = _reply(ours, *command), _reply(theirs, *command)
            if command[:2] == ("CONFIG", "GET"):  # pairs in the servers' table order: compared as maps
                assert isinstance(mine, list) and isinstance(reference, list)
                mine, reference = dict(zip(mine[::2], mine[1::2])), dict(zip(reference[::2], reference[1::2]))
            assert mine == reference, command
        theirs.close()
        ours.close()
    finally:
        _stop(process)


def test_a_refused_config_set_changes_nothing() -> None:
    with pytest.raises(Exception, match="can't set immutable config"):
        parse_config_set([("rate-limit", "5"), ("shards", "2")])
    assert parse_config_set([("max_memory", "32"), ("rate-limit", "2.5"), ("LOGLEVEL", "verbose")]) == {
        "max_memory": 32,
        "rate_limit": 2.5,
        "log_level": "debug",
    }


def test_rate_limit_applies_to_open_connections(node: LocalNode) -> None:
    admin, user = _client(node), _client(node)
    try:
        user.execute_command("PING")  # open before the change
        assert admin.execute_command("CONFIG", "SET", "rate-limit", "1", "rate-burst", "1") == b"OK"
        assert admin.execute_command("CONFIG", "GET", "rate-*") == [b"rate-limit", b"1", b"rate-burst", b"1"]

        def refused() -> bool:
            return str(_reply(user, "PING")).startswith("error: rate limit exceeded")

        _wait_for(refused)
    finally:
        # The admin connection is limited too: retried until a token lets it through.
        _wait_for(lambda: _reply(admin, "CONFIG", "SET", "rate-limit", "0") == b"OK")
        admin.close()
    try:
        _wait_for(lambda: _reply(user, "PING") == b"PONG")
    finally:
        user.close()


def _info(client: redis.Redis, section: str) -> dict[str, str]:
    text = client.execute_command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_lowering_max_memory_evicts_down_to_it_while_serving(node: LocalNode) -> None:
    client = _client(node)
    try:
        client.execute_command("FLUSHALL")
        pipe = client.pipeline(transaction=False)
        for index in range(25_000):
            pipe.execute_command("SET", f"fill:{index}", "x" * 2000)
        pipe.execute()
        used = int(_info(client, "memory")["used_memory"])
        assert used > 40 * 2**20  # close to the 64 MB bound
        assert client.execute_command("CONFIG", "SET", "maxmemory", "32mb") == b"OK"
        assert client.execute_command("PING") == b"PONG"  # served while the bound comes down
        _wait_for(lambda: int(_info(client, "memory")["maxmemory"]) == 32 * 2**20)
        memory = _info(client, "memory")
        assert int(memory["used_memory"]) <= 32 * 2**20
        assert 0 < client.execute_command("DBSIZE") < 25_000
        assert client.execute_command("CONFIG", "GET", "max-memory") == [b"max-memory", b"32"]
        assert client.execute_command("CONFIG", "SET", "max-memory", "64") == b"OK"
        _wait_for(lambda: int(_info(client, "memory")["maxmemory"]) == 64 * 2**20)
    finally:
        client.execute_command("FLUSHALL")
        client.close()


# -- SIGHUP ------------------------------------------------------------------------------------


def test_sighup_reloads_live_settings_and_keeps_running_ones_on_a_bad_file(tmp_path: Path) -> None:
    config = tmp_path / "aegis.toml"
    config.write_text("rate_limit = 0.0\nshards = 256\n")
    node = LocalNode(str(tmp_path / "data"), ["--config", str(config)])
    try:
        client = _client(node)
        config.write_text("rate_limit = 250.0\nrate_burst = 40\nshards = 64\n")
        os.kill(node.pid, signal.SIGHUP)
        node.wait_for_log(r"SIGHUP: reloaded .*aegis\.toml; rate_limit = 250\.0, rate_burst = 40")
        node.wait_for_log(r"SIGHUP: shards changed in .*; it takes effect at the next restart")
        assert client.execute_command("CONFIG", "GET", "rate-*") == [b"rate-limit", b"250", b"rate-burst", b"40"]

        config.write_text("rate_limit = -3\n")  # refused: the running settings stay
        os.kill(node.pid, signal.SIGHUP)
        line = node.wait_for_log(r"SIGHUP: configuration not reloaded")
        assert "rate_limit = -3" in line
        assert client.execute_command("CONFIG", "GET", "rate-limit") == [b"rate-limit", b"250"]
        assert client.execute_command("PING") == b"PONG"
        client.close()
    finally:
        assert node.stop() == 0
