"""Anti-entropy between the copies of a shard, as sans-IO pieces: bucketed digests, their comparison, a repair.

The replication stream (aegiskv.cluster.replication) keeps followers equal to
their primary as long as every change arrives and is applied; nothing in it
notices a copy that differs anyway (a bug, a disk that lost a write, a key
that was changed behind the stream's back). Anti-entropy compares the copies
now and then and repairs what differs.

**Digests.** A shard's keys fall into ``buckets`` buckets by a hash of the key
(:func:`bucket_of`). A bucket's digest is the XOR of a 64-bit hash of each of
its entries (key, value, version, deadline: :func:`entry_hash`), so it does not
depend on the order a node walks its keys in. Two copies whose digests are
equal in a bucket hold the same entries there (up to a hash collision, about
2**-32 per differing entry: the hash is two CRC-32s, chosen for speed, since a
node hashes every key it holds once per round; it guards against accidents,
not against an adversary, who could write the keys anyway).

**Expiry.** A key whose deadline passed is gone on one copy and may still be
held on another (expiry is lazy and sampled on each node). Entries expiring at
or before a round's ``cutoff_ms`` (the primary's clock a little ahead) are left
out of both digests: both copies drop them on their own, and a deadline that
differs (a copy with a TTL where the primary has none) still shows, since one
of the two entries counts.

**Authority.** No tombstones are kept (a deleted key and a key never written
look alike, see :class:`~aegiskv.cluster.replication.Copy`), so the versions
alone cannot say whether a key only one copy holds was deleted or missed:
the shard's primary (its lease holder) is the authority. Repairing a bucket
means the follower replaces everything it holds in that bucket with the
primary's entries (:func:`keys_to_drop` names what goes).

**When a digest means something.** Comparing copies while writes are in
flight would repair keys that only lag. The round protocol (driven by
aegiskv.server.anti_entropy) compares a primary's digest at its log position
S with the follower's at the same S: the primary computes it when every change
up to S has been sent on the link to the follower, and sends it on that same
ordered link, so the follower, which applies the stream in order on receipt,
computes its own on receipt at exactly S (it checks its position and skips
the round otherwise). Enumerating one shard's keys at S without a walk of the
whole keyspace per shard: a node sweeps its keys once per cycle, grouped by
shard, noting each shard's log position; the keys of a shard at S are the
swept ones plus those the log changed after the sweep (:func:`keys_at`).

No sockets, clocks or locks here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from zlib import crc32

from aegiskv.cluster.replication import Change, Op

BUCKETS = 256  # per shard: a repair resends one bucket, about keys/shards/256 keys
MAX_BUCKETS = 1 << 16
# Entries expiring this soon after the primary's clock are left out of a round's digests (see the
# module docstring): more than the gap between two nodes computing them, and clock skew on a LAN.
EXPIRY_MARGIN_MS = 2000
_VERSION = struct.Struct(">Q")  # as a MemoryBackend blob starts: blob_hash hashes the blob as it is
_DEADLINE = struct.Struct(">q")
NO_DEADLINE_BYTES = _DEADLINE.pack(0)
_DIGEST_WORD = ">Q"
_BUCKET_ID = ">H"
_KEYED_OPS = frozenset((Op.PUT, Op.DELETE, Op.EXPIRE, Op.RANGE))

# (key, value, version, expires_at_ms): one held entry, as a digest and a repair see it.
Item = tuple[bytes, bytes | bytearray | memoryview, int, int]


def check_buckets(buckets: int) -> int:
    """``buckets`` when it is a power of two from 1 to MAX_BUCKETS; ValueError otherwise."""
    if not 1 <= buckets <= MAX_BUCKETS or buckets & (buckets - 1):
        raise ValueError(f"buckets must be a power of two from 1 to {MAX_BUCKETS}, not {buckets}")
    return buckets


def bucket_of(key: bytes, buckets: int) -> int:
    """The bucket of ``key`` (``buckets`` a power of two)."""
    return crc32(key) & (buckets - 1)


def entry_hash(key: bytes, value: bytes | bytearray | memoryview, version: int, expires_at_ms: int) -> int:
    """A 64-bit hash of one entry: the key's CRC-32, then the CRC-32 of key, version (8 bytes big-endian),
    value and deadline (8 bytes), one stream."""
    key_crc = crc32(key)
    return (key_crc << 32) | crc32(_DEADLINE.pack(expires_at_ms), crc32(value, crc32(_VERSION.pack(version), key_crc)))


def blob_hash(key: bytes, blob: bytes | memoryview, expires_at_ms: int) -> int:
    """:func:`entry_hash` of an entry stored as one blob, version (8 bytes big-endian) then value.

    The same stream of bytes, so the same hash (CRC-32 runs on): a sweep of a
    memory backend hashes its blobs without splitting them.
    """
    key_crc = crc32(key)
    return (key_crc << 32) | crc32(_DEADLINE.pack(expires_at_ms), crc32(blob, key_crc))


def settled(expires_at_ms: int, cutoff_ms: int) -> bool:
    """Whether an entry with this deadline counts in a round with ``cutoff_ms`` (no deadline: 0, always)."""
    return expires_at_ms == 0 or expires_at_ms > cutoff_ms


def digest(items: Iterable[Item], buckets: int, cutoff_ms: int) -> list[int]:
    """Each bucket's XOR of :func:`entry_hash` over ``items``, leaving out those expiring by ``cutoff_ms``.

    O(len(items)); the hot loop of a round, so the hash is inlined.
    """
    sums = [0] * buckets
    mask = buckets - 1
    pack_version = _VERSION.pack
    pack_deadline = _DEADLINE.pack
    for key, value, version, expires_at_ms in items:
        if expires_at_ms and expires_at_ms <= cutoff_ms:
            continue
        key_crc = crc32(key)
        sums[key_crc & mask] ^= (key_crc << 32) | crc32(
            pack_deadline(expires_at_ms), crc32(value, crc32(pack_version(version), key_crc))
        )
    return sums


def differing(ours: Sequence[int], theirs: Sequence[int]) -> list[int]:
    """The buckets whose digests differ; ValueError when the two were made with different bucket counts."""
    if len(ours) != len(theirs):
        raise ValueError(f"digests of {len(ours)} and {len(theirs)} buckets cannot be compared")
    return [bucket for bucket, (mine, other) in enumerate(zip(ours, theirs, strict=True)) if mine != other]


def encode_digest(sums: Sequence[int]) -> bytes:
    return struct.pack(f">{len(sums)}Q", *sums)


def decode_digest(data: bytes) -> list[int]:
    """A digest's buckets; ValueError unless it is a whole power-of-two number of 64-bit words."""
    if len(data) % 8:
        raise ValueError(f"digest of {len(data)} bytes is not a whole number of 64-bit words")
    check_buckets(len(data) // 8)
    return list(struct.unpack(f">{len(data) // 8}Q", data))


def encode_bucket_ids(buckets: Sequence[int]) -> bytes:
    return struct.pack(f">{len(buckets)}H", *buckets)


def decode_bucket_ids(data: bytes, buckets: int) -> list[int]:
    """Bucket numbers, each below ``buckets``; ValueError on anything else."""
    if len(data) % 2:
        raise ValueError(f"bucket list of {len(data)} bytes is not a whole number of 16-bit ids")
    ids = list(struct.unpack(f">{len(data) // 2}H", data))
    if any(bucket >= buckets for bucket in ids):
        raise ValueError(f"bucket id out of range 0..{buckets - 1}")
    return ids


def keys_at(swept: Iterable[bytes], changes: Iterable[Change]) -> set[bytes]:
    """The keys a copy of a shard may hold: those a sweep found, plus those the log changed since.

    Some of them are gone (deleted since the sweep): the caller reads each key's
    entry and skips the absent ones.
    """
    keys = set(swept)
    keys.update(change.key for change in changes if change.op in _KEYED_OPS)
    return keys


def keys_to_drop(held: Iterable[bytes], repaired: Iterable[int], buckets: int, kept: Iterable[bytes]) -> list[bytes]:
    """The keys a follower holds in the ``repaired`` buckets that the primary's repair does not list."""
    wanted = set(repaired)
    keep = set(kept)
    mask = buckets - 1
    return [key for key in held if key not in keep and crc32(key) & mask in wanted]


class ByteBudget:
    """A token bucket of bytes per second: how much repair traffic may leave now.

    ``rate`` 0 means no cap. A send larger than the whole burst is let through
    once the bucket is full (and leaves it in debt), so one big bucket cannot
    stall a repair forever.
    """

    def __init__(self, rate: float, now: float, burst_seconds: float = 0.25) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, not {rate}")
        self.rate = rate
        self.burst = rate * burst_seconds
        self._tokens = self.burst
        self._at = now

    def refill(self, now: float) -> None:
        if self.rate:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def allows(self, size: int, now: float) -> bool:
        """Whether ``size`` bytes may leave now (True with no cap)."""
        if not self.rate:
            return True
        self.refill(now)
        return self._tokens >= min(size, self.burst)

    def spend(self, size: int) -> None:
        if self.rate:
            self._tokens -= size
