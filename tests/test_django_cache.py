"""The Django cache backend against a real ``aegis`` node: the BaseCache contract, Django's timeout rules.

Runs where Django is installed (tox env ``django``, Django pinned in
requirements/test-constraints.txt); elsewhere the module skips. Expiry is
checked by waiting for the key to go, never by sleeping a fixed time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402 - only once Django is known to be there
from django.core.cache import caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from aegiskv.client import Client, Config  # noqa: E402
from aegiskv.contrib.django import AegisKVCache  # noqa: E402
from aegiskv.testing.localnode import LocalNode  # noqa: E402
from tests.cluster_harness import Cluster, wait_for_agreement  # noqa: E402
from tests.wire import wait_until  # noqa: E402

if not settings.configured:
    settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    django.setup()


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[LocalNode]:
    started = LocalNode(str(tmp_path_factory.mktemp("django-node")))
    yield started
    assert started.stop() == 0


_prefixes = iter(range(10**6))


def make_cache(node: LocalNode, **params: Any) -> AegisKVCache:
    """A backend on ``node`` with a key prefix of its own, so tests on the shared node do not meet."""
    params.setdefault("KEY_PREFIX", f"test{next(_prefixes)}")
    return AegisKVCache(node.address_text, params)


@pytest.fixture
def cache(node: LocalNode) -> AegisKVCache:
    return make_cache(node, TIMEOUT=300)


def raw_ttl(node: LocalNode, made_key: str) -> float | None:
    """The TTL the server holds for a key, in seconds (None: no expiry)."""
    with Client(Config(seeds=[node.address_text])) as client:
        ttl = client.get_with_ttl(made_key).ttl
    return None if ttl is None else ttl.total_seconds()


def test_values_round_trip_pickled(cache: AegisKVCache) -> None:
    values: list[Any] = [b"bytes", "text", 42, 1.5, None, [1, {"a": (2, 3)}], {"set"}, True]
    for index, value in enumerate(values):
        cache.set(f"v{index}", value)
        assert cache.get(f"v{index}", default="missing") == value
    assert cache.get("absent") is None
    assert cache.get("absent", default="fallback") == "fallback"
    assert cache.has_key("v0") and not cache.has_key("absent")
    assert "v1" in cache


def test_timeouts_follow_django_rules(cache: AegisKVCache, node: LocalNode) -> None:
    cache.set("default", 1)  # the backend's TIMEOUT (300 s)
    ttl = raw_ttl(node, cache.make_key("default"))
    assert ttl is not None and 290 < ttl <= 300
    cache.set("forever", 1, timeout=None)
    assert raw_ttl(node, cache.make_key("forever")) is None
    cache.set("zero", 1)
    cache.set("zero", 2, timeout=0)  # expires at once: the old value goes too
    assert cache.get("zero") is None
    cache.set("negative", 1, timeout=-5)
    assert cache.get("negative") is None
    cache.set("short", 1, timeout=0.3)
    assert cache.get("short") == 1
    wait_until(lambda: not cache.has_key("short"), what="a 0.3 s key to expire")
    forever = make_cache(node, TIMEOUT=None)
    forever.set("k", 1)
    assert raw_ttl(node, forever.make_key("k")) is None


def test_add_stores_only_when_absent(cache: AegisKVCache) -> None:
    assert cache.add("a", 1) is True
    assert cache.add("a", 2) is False
    assert cache.get("a") == 1
    assert cache.add("expired-at-once", 1, timeout=0) is True  # "stored", and gone
    assert not cache.has_key("expired-at-once")
    assert cache.add("a", 3, timeout=0) is False  # present: nothing changes
    assert cache.get("a") == 1


def test_touch_changes_only_the_expiry(cache: AegisKVCache, node: LocalNode) -> None:
    cache.set("t", "value", timeout=None)
    assert cache.touch("t", 100) is True
    ttl = raw_ttl(node, cache.make_key("t"))
    assert ttl is not None and 90 < ttl <= 100
    assert cache.touch("t", None) is True
    assert raw_ttl(node, cache.make_key("t")) is None
    assert cache.get("t") == "value"
    assert cache.touch("t", 0) is True
    assert cache.get("t") is None
    assert cache.touch("absent", 10) is False


def test_many_at_once(cache: AegisKVCache) -> None:
    assert cache.set_many({"m1": 1, "m2": "two", "m3": [3]}) == []
    assert cache.get_many(["m1", "m2", "m3", "absent"]) == {"m1": 1, "m2": "two", "m3": [3]}
    assert cache.get_many([]) == {}
    cache.delete_many(["m1", "m3", "absent"])
    assert cache.get_many(["m1", "m2", "m3"]) == {"m2": "two"}
    assert cache.set_many({"m2": "gone"}, timeout=0) == []
    assert cache.get("m2") is None
    assert cache.delete("m2") is False
    cache.set("d", 1)
    assert cache.delete("d") is True


def test_incr_and_decr_are_atomic_and_keep_the_ttl(cache: AegisKVCache, node: LocalNode) -> None:
    cache.set("n", 10, timeout=100)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n", 6) == 10
    ttl = raw_ttl(node, cache.make_key("n"))
    assert ttl is not None and 90 < ttl <= 100
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")
    with pytest.raises(ValueError, match="not found"):
        cache.decr("absent")
    # Eight threads, each with its own cache object (as Django gives each thread), add 50 each.
    cache.set("counter", 0)
    prefix = cache.key_prefix

    def add_fifty() -> None:
        mine = make_cache(node, KEY_PREFIX=prefix)
        for _ in range(50):
            mine.incr("counter")

    threads = [threading.Thread(target=add_fifty) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert cache.get("counter") == 400


def test_versions_and_key_functions(node: LocalNode) -> None:
    cache = make_cache(node, VERSION=2, KEY_PREFIX="site")
    cache.set("k", "v2")
    assert cache.get("k") == "v2"
    assert cache.get("k", version=1) is None
    cache.set("k", "v1", version=1)
    assert cache.get("k", version=1) == "v1" and cache.get("k") == "v2"
    assert cache.incr_version("k") == 3
    assert cache.get("k", version=3) == "v2" and cache.get("k") is None
    assert cache.decr_version("k", version=3) == 2
    assert cache.get("k") == "v2"
    # The key as stored is Django's KEY_PREFIX:VERSION:key, or whatever KEY_FUNCTION makes it.
    with Client(Config(seeds=[node.address_text])) as client:
        assert client.get("site:2:k") is not None
    custom = make_cache(node, KEY_FUNCTION=lambda key, prefix, version: f"custom/{prefix}/{key}")
    custom.set("x", 1)
    with Client(Config(seeds=[node.address_text])) as client:
        assert client.get(f"custom/{custom.key_prefix}/x") is not None


class JsonSerializer:
    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def test_a_configurable_serializer(node: LocalNode) -> None:
    cache = make_cache(node, OPTIONS={"SERIALIZER": f"{__name__}.JsonSerializer"})
    cache.set("j", {"a": [1, 2]})
    assert cache.get("j") == {"a": [1, 2]}
    with Client(Config(seeds=[node.address_text])) as client:
        assert client.get(cache.make_key("j")) == b'{"a": [1, 2]}'  # JSON on the wire, not a pickle
    cache.set("n", 1)
    assert cache.incr("n") == 2


def test_bad_configuration_is_refused_with_the_reason(node: LocalNode) -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown max_connections"):
        make_cache(node, OPTIONS={"max_connections": 3})
    with pytest.raises(ImproperlyConfigured, match="host:port"):
        AegisKVCache("no-port-here", {})
    with pytest.raises(ImproperlyConfigured, match="max_conns"):
        make_cache(node, OPTIONS={"max_conns": 0})


def test_get_or_set_and_the_caches_setting(node: LocalNode) -> None:
    backend = {
        "BACKEND": "aegiskv.contrib.django.AegisKVCache",
        "LOCATION": node.address_text,
        "TIMEOUT": 60,
        "KEY_PREFIX": "settings",
        "OPTIONS": {"max_conns": 2},
    }
    with override_settings(CACHES={"default": backend}):
        cache = caches["default"]
        assert isinstance(cache, AegisKVCache)
        assert cache.get_or_set("computed", lambda: {"made": 1}) == {"made": 1}
        assert cache.get_or_set("computed", lambda: {"made": 2}) == {"made": 1}
        cache.close()  # Django's request_finished: the backend stays usable
        assert cache.get("computed") == {"made": 1}


def test_clear_empties_every_node_of_a_cluster(tmp_path) -> None:
    cluster = Cluster(tmp_path)
    try:
        nodes = cluster.start_many(3)
        wait_for_agreement(nodes, {"n0", "n1", "n2"})
        cache = AegisKVCache([node.address_text for node in nodes], {"KEY_PREFIX": "c"})
        cache.set_many({f"k{index}": index for index in range(100)})
        assert len(cache.get_many([f"k{index}" for index in range(100)])) == 100
        cache.clear()
        assert cache.get_many([f"k{index}" for index in range(100)]) == {}
        for node in nodes:  # every node, replicas included, is empty
            with Client(Config(seeds=[node.address_text], cluster_routing=False)) as client:

                def empty(client: Client = client) -> bool:
                    return "db0" not in client.info("keyspace")["keyspace"]

                wait_until(empty, what="an empty node")
    finally:
        cluster.close()
