"""The router of a replicated node: serve, redirect, or say an election is under way."""

from __future__ import annotations

import pytest

from aegiskv.cluster.redirect import NO_PRIMARY_YET, Moved, Router
from aegiskv.cluster.shard_map import Endpoint, Member, ShardMap
from aegiskv.cluster.slots import ShardMapper
from aegiskv.errors import CommandError, ErrorKind

MAPPER = ShardMapper(4)
MEMBERS = {
    name: Member(name, Endpoint("127.0.0.1", 7000 + index), Endpoint("127.0.0.1", 8000 + index))
    for index, name in enumerate(("a", "b", "c"))
}
# Every shard placed on all three, "a" preferred.
PLACEMENT: list[tuple[str, ...]] = [("a", "b", "c")] * MAPPER.shards


def key_of_shard(shard: int) -> bytes:
    return next(key for key in (f"k{index}".encode() for index in range(1000)) if MAPPER.shard_of_key(key) == shard)


def test_a_shard_led_elsewhere_is_redirected_to_its_holder() -> None:
    shard_map = ShardMap(1, MAPPER, PLACEMENT, MEMBERS, primaries={0: "b", 1: "c", 2: "c", 3: "c"})
    router = Router(shard_map, "c", leased=True)
    router.check(key_of_shard(1))  # led here: served
    with pytest.raises(Moved) as moved:
        router.check(key_of_shard(0))
    assert moved.value.client == MEMBERS["b"].client


def test_a_shard_under_election_here_is_tryagain_whatever_gossip_said() -> None:
    # Gossip still says "b" leads shard 0, but this node takes part in its election and knows
    # no winner: a redirect to "b" could send the client straight back here.
    shard_map = ShardMap(1, MAPPER, PLACEMENT, MEMBERS, primaries={0: "b", 1: "c", 2: "c", 3: "c"})
    router = Router(shard_map, "c", leased=True, electing=frozenset({0}))
    with pytest.raises(CommandError) as refused:
        router.check(key_of_shard(0))
    assert refused.value.kind is ErrorKind.TRYAGAIN and NO_PRIMARY_YET in refused.value.message
    router.check(key_of_shard(2))  # the others are unchanged


def test_without_a_known_holder_the_preferred_primary_is_named() -> None:
    shard_map = ShardMap(1, MAPPER, PLACEMENT, MEMBERS, primaries={1: "c", 2: "c", 3: "c"})
    with pytest.raises(Moved) as moved:
        Router(shard_map, "c", leased=True).check(key_of_shard(0))
    assert moved.value.client == MEMBERS["a"].client
    with pytest.raises(CommandError) as refused:  # at the preferred primary itself: TRYAGAIN
        Router(shard_map, "a", leased=True).check(key_of_shard(0))
    assert refused.value.kind is ErrorKind.TRYAGAIN
