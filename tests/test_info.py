"""INFO is one model (aegiskv/server/info.py) rendered by both ports: the same sections, fields and values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aegiskv.client import Client, Config
from aegiskv.protocols.adapter import Info
from aegiskv.protocols.resp.server import info_text, render_info
from aegiskv.server.info import ALL_SECTIONS, DEFAULT_SECTIONS, chosen_sections
from aegiskv.testing.localnode import LocalNode

# Fields that may change between two readings a moment apart; each is checked to lie
# between the RESP port's readings taken before and after the native one.
# Counters and maxima since start: only ever grow (the longest reactor turn now includes the
# replies sent at the end of a turn, which an INFO reply itself can lengthen).
_GROWING = {"uptime_in_seconds", "uptime_in_days", "total_commands_processed", "aegis_longest_turn_usec"}
_MOVING = {"used_memory_rss", "used_memory_rss_human"}  # the process's memory: no order to check
# Sections whose every value moves as the readings run: CPU seconds, and each command's calls and
# time (the INFOs counted themselves); their field names are checked, not their values.
# The cluster section moves too: a one-node cluster's shard map epoch may still be settling (its
# lease rounds publish primaries) between the three readings.
_MOVING_SECTIONS = {"cpu", "commandstats", "cluster"}


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[LocalNode]:
    started = LocalNode(str(tmp_path_factory.mktemp("info")), ["--wal", "write"])  # gossip on (the default here)
    yield started
    assert started.stop() == 0


def _resp_info(connection: redis.Connection, *sections: str) -> dict[str, dict[str, str]]:
    """The RESP port's INFO text, parsed without redis-py's type guessing."""
    connection.send_command("INFO", *sections)
    text = connection.read_response().decode()
    parsed: dict[str, dict[str, str]] = {}
    fields: dict[str, str] = {}
    for line in text.split("\r\n"):
        if line.startswith("# "):
            fields = parsed.setdefault(line[2:].lower(), {})
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value
    return parsed


def _pairs(text: str) -> dict[str, int]:
    return {key: int(number) for key, _, number in (pair.partition("=") for pair in text.split(","))}


def _as_text(info: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {section: {name: info_text(value) for name, value in fields.items()} for section, fields in info.items()}


@pytest.mark.parametrize("sections", [(), ("everything", "shards"), ("Keyspace", "cluster")])
def test_native_and_resp_info_give_the_same_sections_fields_and_values(
    node: LocalNode, sections: tuple[str, ...]
) -> None:
    assert node.resp_address is not None
    with Client(Config(seeds=[node.address_text], cluster_routing=False)) as client:
        client.set("info:plain", "v")
        client.set_with_ttl("info:ttl", "v", 100)  # db0 lists keys, expires and avg_ttl
        client.ping()  # the native connection is open before the first reading
        connection = redis.Connection(host=node.resp_address[0], port=node.resp_address[1], protocol=2)
        try:
            before = _resp_info(connection, *sections)
            native = _as_text(client.info(*sections))
            after = _resp_info(connection, *sections)
        finally:
            connection.disconnect()
    assert list(native) == list(before) == chosen_sections(list(sections))
    for section, fields in native.items():
        if section in _MOVING_SECTIONS:
            assert list(before[section]) == [name for name in fields if name in before[section]]
            assert list(fields) == [name for name in after[section] if name in fields]
            continue
        assert list(fields) == list(before[section]), section  # the same fields in the same order
        for name, value in fields.items():
            if name in _GROWING:
                assert int(before[section][name]) <= int(value) <= int(after[section][name]), name
            elif name == "db0":  # the mean TTL left shrinks as time passes
                ours, first, last = (_pairs(text) for text in (value, before[section][name], after[section][name]))
                assert ours.keys() == first.keys() == {"keys", "expires", "avg_ttl"}
                assert (ours["keys"], ours["expires"]) == (first["keys"], first["expires"]) == (2, 1)
                assert last["avg_ttl"] <= ours["avg_ttl"] <= first["avg_ttl"]
            elif name not in _MOVING:
                assert (section, name, value) == (section, name, before[section][name])
    if "cluster" in native:
        # The gossip counters the README promises under INFO cluster, on both ports.
        assert native["cluster"]["cluster_enabled"] == "1"
        assert native["cluster"]["aegis_gossip_members_alive"] == "1"
    if "persistence" in native:
        assert native["persistence"]["aof_last_write_status"] == "ok"
        assert native["persistence"]["aegis_wal_status"] == "ok"


def test_sections_are_chosen_as_redis_chooses_them() -> None:
    assert chosen_sections(None) == chosen_sections([]) == list(DEFAULT_SECTIONS)
    assert chosen_sections(["default"]) == list(DEFAULT_SECTIONS)
    for group in ("all", "everything", "ALL"):  # never "shards": it walks every key
        assert chosen_sections([group]) == list(ALL_SECTIONS)
    # As Redis 7.0: commandstats only with "all", between cpu and errorstats.
    assert (*DEFAULT_SECTIONS[:7], "commandstats", *DEFAULT_SECTIONS[7:]) == ALL_SECTIONS
    assert chosen_sections(["keyspace", "SERVER", "server", "nosuch"]) == ["server", "keyspace"]
    assert chosen_sections(["shards", "all"]) == [*ALL_SECTIONS, "shards"]
    assert chosen_sections(["default", "commandstats"]) == list(ALL_SECTIONS)
    assert chosen_sections(["nosuch"]) == []


def test_the_resp_text_is_redis_layout() -> None:
    info: Info = {
        "server": {"redis_version": "7.0.0", "process_id": 12},
        "keyspace": {"db0": {"keys": 3, "expires": 1, "avg_ttl": 250}},
        "shards": {"aegis_shard_keys_mean": 1.5},
    }
    assert render_info(info) == (
        b"# Server\r\nredis_version:7.0.0\r\nprocess_id:12\r\n"
        b"\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=250\r\n"
        b"\r\n# Shards\r\naegis_shard_keys_mean:1.5\r\n"
    )
    assert render_info({"keyspace": {}}) == b"# Keyspace\r\n"  # no keys: the heading alone, as Redis
