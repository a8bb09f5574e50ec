"""Node-to-node messages on the cluster port: framing, the mutual handshake, and the message codecs.

Sans-IO, after h11: :class:`FrameReader` takes bytes and yields ``(kind, payload)``
frames, ``frame(kind, payload)`` makes bytes; nothing here touches a socket.

A frame is a 4-byte big-endian length (of what follows), a kind byte, and the
payload. Before the handshake completes a frame may hold at most
``HANDSHAKE_MAX`` bytes, so a stranger can make a node buffer next to nothing.

**Handshake.** Both sides prove they hold the cluster key (derived from
``--gossip-secret`` or ``--auth-token``) without sending it, and bind the
proof to both node ids and fresh nonces, so a recorded handshake cannot be
replayed and a node cannot be impersonated to another:

1. dialer -> ``HELLO`` (version, dialer id, dialer nonce)
2. acceptor -> ``WELCOME`` (acceptor id, acceptor nonce, MAC over both nonces and ids)
3. dialer checks it, -> ``PROVE`` (its own MAC, under a different label)
4. acceptor checks it, -> ``READY``; from here on frames may be large.

Without a key the MACs are empty and accepted (a cluster on a trusted
network, as gossip without a secret); mutual TLS, when configured, authenticates
the link underneath either way.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Iterable
from typing import NamedTuple

import lz4.block

from aegiskv.cluster.replication import Change, HistoryEntry, decode_changes, encode_changes

PROTOCOL_VERSION = 1
HANDSHAKE_MAX = 512  # bytes a frame may hold before the peer proved it holds the key
NONCE_BYTES = 16
_LENGTH = struct.Struct(">I")


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    PROVE = 3
    READY = 4
    REFUSED = 5  # the handshake failed: a one-line reason, then the connection closes
    LEASE = 10  # an aegiskv.cluster.leases message, as its own codec encodes it
    OFFER = 20  # primary -> follower: I hold shard s at epoch e, my log ends at last_seq
    POSITION = 21  # follower -> primary: where my copy of s is (answers OFFER; asks for a resync when lost)
    APPEND = 22  # primary -> follower: changes, in order
    ACK = 23  # follower -> primary: applied (and logged per my --wal) up to seq
    FENCED = 24  # follower -> primary: your epoch is behind my term; you are no longer primary
    SNAPSHOT_BEGIN = 25  # primary -> follower: the whole shard follows; drop what you hold of it
    SNAPSHOT_ITEMS = 26  # primary -> follower: a chunk of the shard's keys
    SNAPSHOT_END = 27  # primary -> follower: the copy is complete up to seq; the stream continues after it
    READ = 28  # primary -> follower: what do you hold of this key (a quorum read, --read-quorum)
    READ_REPLY = 29  # follower -> primary: the key's entry (or none) and where my copy of the shard is
    AE_DIGEST = 30  # primary -> follower: my anti-entropy digest of s at seq (aegiskv.cluster.anti_entropy)
    AE_DIFF = 31  # follower -> primary: the buckets where my digest at that seq differs (or: not compared)
    AE_REPAIR = 32  # primary -> follower: whole buckets of s as of seq; replace what you hold in them


class PeerProtocolError(Exception):
    """The peer broke the protocol (or failed the handshake): close the connection."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _LENGTH.pack(len(payload) + 1) + bytes((kind,)) + payload


class FrameReader:
    """Bytes in, ``(kind, payload)`` out; bounded by ``max_frame`` (raise it once the handshake is done)."""

    def __init__(self, max_frame: int = HANDSHAKE_MAX) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._offset = 0

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._offset

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete frame, or None until more bytes arrive; raises PeerProtocolError."""
        buffer, offset = self._buffer, self._offset
        if len(buffer) - offset < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(buffer, offset)
        if length < 1 or length > self.max_frame:
            raise PeerProtocolError(f"frame of {length} bytes (limit {self.max_frame})")
        end = offset + _LENGTH.size + length
        if len(buffer) < end:
            return None
        kind = buffer[offset + _LENGTH.size]
        payload = bytes(buffer[offset + _LENGTH.size + 1 : end])
        self._offset = end
        if end == len(buffer):
            buffer.clear()
            self._offset = 0
        elif end > 1 << 16:  # drop what was read once it is worth a copy; reads stay linear
            del buffer[:end]
            self._offset = 0
        return kind, payload


# -- handshake --------------------------------------------------------------------------------


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def _mac(key: bytes | None, label: bytes, *parts: bytes) -> bytes:
    if key is None:
        return b""
    message = label + b"".join(_LENGTH.pack(len(part)) + part for part in parts)
    return hmac.new(key, message, hashlib.sha256).digest()


def acceptor_proof(key: bytes | None, dialer_nonce: bytes, acceptor_nonce: bytes, dialer: str, acceptor: str) -> bytes:
    return _mac(key, b"aegis peer acceptor", dialer_nonce, acceptor_nonce, dialer.encode(), acceptor.encode())


def dialer_proof(key: bytes | None, dialer_nonce: bytes, acceptor_nonce: bytes, dialer: str, acceptor: str) -> bytes:
    return _mac(key, b"aegis peer dialer", dialer_nonce, acceptor_nonce, dialer.encode(), acceptor.encode())


def proof_matches(expected: bytes, offered: bytes) -> bool:
    return hmac.compare_digest(expected, offered)


class Hello(NamedTuple):
    version: int
    node_id: str
    nonce: bytes

    def encode(self) -> bytes:
        return _pack_fields(bytes((self.version,)), self.node_id.encode(), self.nonce)

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        version, node_id, nonce = _unpack_fields(payload, 3, "HELLO")
        if len(version) != 1 or len(nonce) != NONCE_BYTES:
            raise PeerProtocolError("malformed HELLO")
        return cls(version[0], _text(node_id, "HELLO"), nonce)


class Welcome(NamedTuple):
    node_id: str
    nonce: bytes
    proof: bytes

    def encode(self) -> bytes:
        return _pack_fields(self.node_id.encode(), self.nonce, self.proof)

    @classmethod
    def decode(cls, payload: bytes) -> Welcome:
        node_id, nonce, proof = _unpack_fields(payload, 3, "WELCOME")
        if len(nonce) != NONCE_BYTES:
            raise PeerProtocolError("malformed WELCOME")
        return cls(_text(node_id, "WELCOME"), nonce, proof)


def _pack_fields(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(field)) + field for field in fields)


def _unpack_fields(payload: bytes, count: int, what: str) -> list[bytes]:
    fields = []
    offset = 0
    for _ in range(count):
        if len(payload) - offset < 2:
            raise PeerProtocolError(f"truncated {what}")
        (length,) = struct.unpack_from(">H", payload, offset)
        offset += 2
        if len(payload) - offset < length:
            raise PeerProtocolError(f"truncated {what}")
        fields.append(payload[offset : offset + length])
        offset += length
    if offset != len(payload):
        raise PeerProtocolError(f"trailing bytes in {what}")
    return fields


def _text(data: bytes, what: str) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise PeerProtocolError(f"{what}: node id is not UTF-8") from None
    if not text or len(text) > 255:
        raise PeerProtocolError(f"{what}: bad node id")
    return text


# -- replication messages -----------------------------------------------------------------------

History = list[HistoryEntry]
_SHARD_EPOCH = struct.Struct(">IQ")
_HISTORY_ENTRY = struct.Struct(">QQQ")
_U64 = struct.Struct(">Q")


def _pack_history(history: Iterable[HistoryEntry]) -> bytes:
    entries = list(history)
    return struct.pack(">H", len(entries)) + b"".join(_HISTORY_ENTRY.pack(*entry) for entry in entries)


def _unpack_history(payload: bytes, offset: int) -> tuple[History, int]:
    if len(payload) - offset < 2:
        raise PeerProtocolError("truncated history")
    (count,) = struct.unpack_from(">H", payload, offset)
    offset += 2
    end = offset + count * _HISTORY_ENTRY.size
    if len(payload) < end:
        raise PeerProtocolError("truncated history")
    history = [_HISTORY_ENTRY.unpack_from(payload, offset + index * _HISTORY_ENTRY.size) for index in range(count)]
    return [(int(epoch), int(first), int(writer)) for epoch, first, writer in history], end


class ShardMessage(NamedTuple):
    """Every replication message: which shard, under which epoch, and the rest by kind.

    ``seq`` is OFFER's and SNAPSHOT_END's last seq, POSITION's position seq, ACK's
    applied seq, FENCED's term (in ``epoch``'s place the sender's term), APPEND's
    seq before its first change. ``position_epoch`` and ``position_writer`` are
    POSITION's: the epoch and writer of the follower's last change.

    READ and READ_REPLY carry a request id in ``seq`` and one change: READ's names
    the key (a NOOP), READ_REPLY's is the follower's entry (a PUT with its value,
    version and deadline, or a DELETE with version 0 when it holds none) whose
    ``seq`` is the follower's position seq; with ``position_epoch`` and
    ``position_writer`` it says where the follower's copy of the shard is.

    The anti-entropy messages carry the primary's position ``seq`` and a first NOOP
    change whose ``version`` is the round's id: AE_DIGEST's ``value`` is the digest
    and its ``expires_at_ms`` the round's cutoff; AE_DIFF's ``value`` the differing
    bucket ids and its ``expires_at_ms`` 1 when compared (0: skipped, the copy was
    not at ``seq``); AE_REPAIR's ``value`` the bucket ids it replaces, the entries
    of those buckets following as PUT changes.
    """

    kind: int
    shard: int
    epoch: int
    seq: int = 0
    position_epoch: int = 0
    history: History = []
    changes: list[Change] = []
    position_writer: int = 0

    def encode(self) -> bytes:
        head = _SHARD_EPOCH.pack(self.shard, self.epoch) + _U64.pack(self.seq) + _U64.pack(self.position_epoch)
        head += _U64.pack(self.position_writer)
        body = encode_changes(self.changes)
        if self.kind in _COMPRESSED:
            # A shard's keys go over the wire once per resync: lz4 block compression
            # (about 1 GB/s here) pays for itself on any link slower than loopback.
            body = lz4.block.compress(body, store_size=True)
        return head + _pack_history(self.history) + body

    @classmethod
    def decode(cls, kind: int, payload: bytes, max_changes: int = 1 << 20, max_bytes: int = 1 << 30) -> ShardMessage:
        fixed = _SHARD_EPOCH.size + 3 * _U64.size
        if len(payload) < fixed:
            raise PeerProtocolError(f"truncated message of kind {kind}")
        shard, epoch = _SHARD_EPOCH.unpack_from(payload, 0)
        (seq,) = _U64.unpack_from(payload, _SHARD_EPOCH.size)
        (position_epoch,) = _U64.unpack_from(payload, _SHARD_EPOCH.size + _U64.size)
        (position_writer,) = _U64.unpack_from(payload, _SHARD_EPOCH.size + 2 * _U64.size)
        history, offset = _unpack_history(payload, fixed)
        body: bytes | memoryview = memoryview(payload)[offset:]
        try:
            if kind in _COMPRESSED:
                body = _decompress(bytes(body), max_bytes)
            changes = decode_changes(body, max_changes)
        except ValueError as error:
            raise PeerProtocolError(str(error)) from None
        return cls(kind, shard, epoch, seq, position_epoch, history, changes, position_writer)


# Kinds whose body is lz4-compressed: bulk key copies (a snapshot, an anti-entropy repair).
_COMPRESSED = frozenset((Kind.SNAPSHOT_ITEMS, Kind.AE_REPAIR))


def _decompress(data: bytes, max_bytes: int) -> bytes:
    """lz4 with the size stored in front; the size is checked before memory is given to it."""
    if len(data) < 4:
        raise ValueError("truncated compressed chunk")
    size = int.from_bytes(data[:4], "little")
    if size > max_bytes:
        raise ValueError(f"compressed chunk of {size} bytes (limit {max_bytes})")
    try:
        return bytes(lz4.block.decompress(data))
    except lz4.block.LZ4BlockError as error:
        raise ValueError(f"bad compressed chunk: {error}") from None
