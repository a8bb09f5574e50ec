"""SCAN MATCH's glob against redis-server's, case by case (the oracle test finds these at random)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from aegiskv.node.pattern import glob_match
from tests.test_resp_protocol import REDIS_SERVER, start_redis_server, stop_process

TEXTS = [b"", b"a", b"ab", b"ba", b"aa", b"a*", b"[", b"\\", b"abc", b"\xff"]
PATTERNS = [b"", b"*", b"**", b"***", b"?", b"?*", b"*?", b"a*", b"*a", b"a**", b"**a", b"[a]", b"[^a]*", b"\\*"]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    process, (host, port) = start_redis_server(tmp_path_factory.mktemp("redis-glob"))
    client = redis.Redis(host=host, port=port)
    try:
        yield client
    finally:
        client.close()
        stop_process(process)


def test_every_pattern_matches_what_redis_matches(oracle: redis.Redis) -> None:
    oracle.mset({text: b"v" for text in TEXTS})
    for pattern in PATTERNS:
        expected = {key for key in oracle.scan_iter(match=pattern, count=1000)}
        mine = {text for text in TEXTS if glob_match(pattern, text)}
        assert mine == expected, f"pattern {pattern!r}"


def test_the_empty_key_matches_only_an_empty_pattern_or_exactly_a_star() -> None:
    # Redis's matcher never enters its loop for an empty string; "*" is SCAN's "no pattern".
    assert [pattern for pattern in PATTERNS if glob_match(pattern, b"")] == [b"", b"*"]
    assert all(glob_match(pattern, b"a") for pattern in (b"*", b"**", b"a**", b"**a"))
