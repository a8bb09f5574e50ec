"""Key -> slot -> shard: the one mapping every part of AegisKV asks.

``slot = CRC16-XMODEM(key or its {hash tag}) mod 16384`` exactly as Redis
Cluster computes it, so Redis Cluster clients route keys the same way; then
``shard = slot * shards // 16384``, which gives each shard a contiguous slot
range (what ``CLUSTER SLOTS`` reports).

CRC16-XMODEM is computed with :func:`binascii.crc_hqx` (initial value 0), which
is that same CRC in C from the standard library: about 0.07 microseconds per
key against 0.33 for crcmod's generated function here. A test checks both agree.
"""

from __future__ import annotations

from binascii import crc_hqx

SLOTS = 16384


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: the first non-empty ``{...}``, else the key."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes) -> int:
    if b"{" in key:
        key = hash_tag(key)
    return crc_hqx(key, 0) & (SLOTS - 1)


class ShardMapper:
    """Maps slots and keys to shards for a fixed shard count. Immutable, thread-safe."""

    __slots__ = ("shards",)

    def __init__(self, shards: int) -> None:
        if not 1 <= shards <= SLOTS:
            raise ValueError(f"shards must be from 1 to {SLOTS}, not {shards}")
        self.shards = shards

    def shard_of_slot(self, slot: int) -> int:
        return slot * self.shards // SLOTS

    def shard_of_key(self, key: bytes) -> int:
        if b"{" in key:
            key = hash_tag(key)
        return (crc_hqx(key, 0) & (SLOTS - 1)) * self.shards // SLOTS

    def slot_range(self, shard: int) -> tuple[int, int]:
        """First and last slot (inclusive) of ``shard``."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} out of range 0..{self.shards - 1}")
        first = -(-shard * SLOTS // self.shards)  # ceil(shard * SLOTS / shards)
        last = -(-(shard + 1) * SLOTS // self.shards) - 1
        return first, last
