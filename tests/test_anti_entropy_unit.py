"""The sans-IO anti-entropy pieces (aegiskv.cluster.anti_entropy): digests, comparison, a bucket's repair.

One round is modelled as the server runs it: both copies digest their entries
with the primary's cutoff, the follower names the buckets that differ, the
primary sends those buckets' entries, the follower replaces what it holds there.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster import anti_entropy as ae
from aegiskv.cluster.peer_wire import Kind, ShardMessage
from aegiskv.cluster.replication import Change, Op

# key -> (value, version, expires_at_ms)
Copy = dict[bytes, tuple[bytes, int, int]]
NOW_MS = 1_000_000
CUTOFF = NOW_MS + ae.EXPIRY_MARGIN_MS


def items(copy: Copy) -> list[ae.Item]:
    return [(key, value, version, expires) for key, (value, version, expires) in copy.items()]


def one_round(primary: Copy, follower: Copy, buckets: int) -> tuple[list[int], int]:
    """Run one round on ``follower`` in place; the buckets that differed and the keys the repair sent."""
    wanted = ae.differing(ae.digest(items(primary), buckets, CUTOFF), ae.digest(items(follower), buckets, CUTOFF))
    chosen = set(wanted)
    sent = {key: entry for key, entry in primary.items() if ae.bucket_of(key, buckets) in chosen}
    for key in ae.keys_to_drop(follower, wanted, buckets, sent):
        del follower[key]
    follower.update(sent)
    return wanted, len(sent)


def settled_view(copy: Copy) -> Copy:
    return {key: entry for key, entry in copy.items() if ae.settled(entry[2], CUTOFF)}


entries = st.tuples(
    st.binary(max_size=8),
    st.integers(1, 50),
    st.sampled_from([0, 0, NOW_MS - 5, NOW_MS + 10, NOW_MS + 10_000_000]),
)
copies = st.dictionaries(st.binary(min_size=1, max_size=6), entries, max_size=60)


@settings(max_examples=150, deadline=None)
@given(primary=copies, drift=copies, dropped=st.sets(st.integers(0, 59)), buckets=st.sampled_from([1, 4, 64, 256]))
def test_one_round_makes_a_diverged_copy_equal(primary: Copy, drift: Copy, dropped: set[int], buckets: int) -> None:
    follower = dict(primary)
    for index, key in enumerate(list(follower)):
        if index in dropped:
            del follower[key]  # lost on the follower: the repair brings it back
    # Keys the primary lacks (deleted there), other versions, values and deadlines of shared keys.
    follower.update(drift)
    one_round(primary, follower, buckets)
    assert settled_view(follower) == settled_view(primary)
    # A second round finds nothing: the copies' digests agree.
    assert one_round(primary, follower, buckets) == ([], 0)


@settings(max_examples=60, deadline=None)
@given(primary=copies, buckets=st.sampled_from([1, 16, 256]))
def test_equal_copies_repair_nothing_whatever_their_order(primary: Copy, buckets: int) -> None:
    follower = dict(reversed(list(primary.items())))
    # What expires before the cutoff may be gone on one copy only (lazy expiry): no repair for it.
    for key, (_, _, expires) in primary.items():
        if not ae.settled(expires, CUTOFF):
            del follower[key]
    assert one_round(primary, follower, buckets) == ([], 0)


def test_every_kind_of_divergence_shows_in_its_bucket() -> None:
    primary: Copy = {b"a": (b"1", 5, 0), b"b": (b"2", 6, 0), b"c": (b"3", 7, NOW_MS + 60_000)}
    cases: list[Copy] = [
        {b"a": (b"1", 5, 0), b"c": (b"3", 7, NOW_MS + 60_000)},  # a key lost
        {**primary, b"d": (b"4", 1, 0)},  # a key the primary deleted
        {**primary, b"a": (b"1", 9, 0)},  # another version
        {**primary, b"a": (b"X", 5, 0)},  # the same version, another value (a corrupted copy)
        {**primary, b"c": (b"3", 7, 0)},  # the deadline lost
        {**primary, b"b": (b"2", 6, NOW_MS + 60_000)},  # a deadline the primary does not have
    ]
    for follower in cases:
        wanted, sent = one_round(primary, follower, 256)
        assert len(wanted) == 1
        assert sent == sum(1 for key in primary if ae.bucket_of(key, 256) == wanted[0])
        assert follower == primary


def test_keys_at_adds_what_the_log_changed_since_the_sweep() -> None:
    changes = [
        Change(1, Op.PUT, b"new", b"v", 1, 0),
        Change(2, Op.DELETE, b"old", b"", 0, 0),
        Change(3, Op.NOOP, b"", b"", 0, 0),
        Change(4, Op.FLUSH, b"", b"", 0, 0),
        Change(5, Op.EXPIRE, b"ttl", b"", 0, 5),
    ]
    assert ae.keys_at([b"old", b"kept"], changes) == {b"old", b"kept", b"new", b"ttl"}


def test_a_stored_blob_hashes_as_its_entry() -> None:
    version = 0x0102030405060708
    blob = version.to_bytes(8, "big") + b"value"
    assert ae.blob_hash(b"key", blob, 77) == ae.entry_hash(b"key", b"value", version, 77)
    assert ae.blob_hash(b"key", memoryview(blob), 0) == ae.entry_hash(b"key", bytearray(b"value"), version, 0)
    assert ae.entry_hash(b"key", b"value", version, 0) != ae.entry_hash(b"key", b"value", version + 1, 0)


def test_codecs_round_trip_and_refuse_malformed_input() -> None:
    sums = ae.digest([(b"k", b"v", 1, 0)], 64, CUTOFF)
    assert ae.decode_digest(ae.encode_digest(sums)) == sums
    assert ae.decode_bucket_ids(ae.encode_bucket_ids([0, 7, 63]), 64) == [0, 7, 63]
    with pytest.raises(ValueError, match="64-bit words"):
        ae.decode_digest(b"\0" * 12)
    with pytest.raises(ValueError, match="power of two"):
        ae.decode_digest(b"\0" * 24)
    with pytest.raises(ValueError, match="out of range"):
        ae.decode_bucket_ids(ae.encode_bucket_ids([64]), 64)
    with pytest.raises(ValueError, match="cannot be compared"):
        ae.differing([0] * 4, [0] * 8)
    with pytest.raises(ValueError, match="power of two"):
        ae.check_buckets(100)


def test_byte_budget_caps_the_rate_and_lets_an_oversized_send_through() -> None:
    budget = ae.ByteBudget(1000, now=0.0)  # 1000 bytes/s, a burst of 250
    assert budget.allows(200, 0.0)
    budget.spend(200)
    assert not budget.allows(200, 0.0)
    assert budget.allows(200, 0.2)  # 50 + 200 refilled
    budget.spend(200)
    assert not budget.allows(10_000, 0.2)  # larger than the burst: waits for a full bucket
    assert budget.allows(10_000, 1.0)
    budget.spend(10_000)
    assert not budget.allows(1, 5.0)  # in debt for the oversized send: 10 s of rate
    unlimited = ae.ByteBudget(0, now=0.0)
    assert unlimited.allows(1 << 40, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        ae.ByteBudget(-1, now=0.0)


def test_repair_messages_travel_compressed_and_round_trip() -> None:
    header = Change(0, Op.NOOP, b"", ae.encode_bucket_ids([3, 9]), 0, 0)
    items = [Change(0, Op.PUT, b"key:%d" % index, b"v" * 200, index + 1, 0) for index in range(20)]
    message = ShardMessage(Kind.AE_REPAIR, 3, 7, 42, changes=[header, *items])
    payload = message.encode()
    assert len(payload) < sum(item.size() for item in items) // 4  # lz4, as a snapshot's chunks
    assert ShardMessage.decode(Kind.AE_REPAIR, payload) == message
