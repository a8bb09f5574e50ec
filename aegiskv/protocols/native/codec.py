"""The native binary protocol, as a sans-IO codec (no sockets here).

Every frame, request or response, has the same layout. All integers are
big-endian (network byte order)::

    offset  size  field
    0       4     frame length: bytes after this field (32 + body), unsigned
    4       2     magic 0xAE6B
    6       1     protocol version (1)
    7       1     opcode (see Opcode)
    8       2     flags (see the SET_* constants; 0 unless stated)
    10      2     status (responses, see Status; 0 in requests)
    12      4     request id, echoed in the response
    16      8     ttl in milliseconds, signed (SET, EXPIRE; GET_TTL response: -1 = none)
    24      8     version, unsigned (SET with SET_CAS: expected version; responses: the key's version)
    32      4     item count
    36      ...   items, each: key length u32, value length u32, key bytes, value bytes
                  (value length 0xFFFFFFFF = no value, e.g. a missing key in MGET)

A request carries its keys (and values) as items: GET has one item with an
empty value, MSET one item per pair, PING none, INFO the names of the sections
it wants. An error response carries one item whose key names the error and
whose value explains it.

Every length is checked before anything is allocated for it: the frame length
against the limit as soon as 4 bytes have arrived, the item count and each item
length against the limits and against the frame. A violation raises
:class:`ProtocolError`; the server answers it with a PROTOCOL_ERROR frame and
closes the connection.

The decoder follows h11's shape: ``receive_data(bytes)``, then ``next_frame()``
until it returns ``None`` (more data needed). Its buffer is a ``bytearray`` with
a read offset, compacted now and then, never re-sliced per frame; a frame that
is still arriving costs one header read per call, so the work stays linear in
the input however it is cut (``examined`` counts it; a test holds it so).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import NamedTuple

from aegiskv.protocols.errors import PeerProtocolError

MAGIC = 0xAE6B
PROTOCOL_VERSION = 1

_HEADER = struct.Struct("!IHBBHHIqQI")
_LENGTH = struct.Struct("!I")
HEADER_SIZE = _HEADER.size  # 36, including the 4-byte length prefix
_LENGTH_PREFIX = 4
_MIN_FRAME_LENGTH = HEADER_SIZE - _LENGTH_PREFIX
_ITEM_HEADER = struct.Struct("!II")
_ITEM_HEADER_SIZE = _ITEM_HEADER.size
NULL_LENGTH = 0xFFFFFFFF
_TTL_MIN, _TTL_MAX = -(2**63), 2**63 - 1
_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1


class Opcode(enum.IntEnum):
    # Only in server-to-client frames that answer no particular request: a
    # protocol error found before a request could be read, or a refused connection.
    NONE = 0
    PING = 1
    AUTH = 2
    GET = 3
    GET_TTL = 4
    SET = 5
    DEL = 6
    EXPIRE = 7
    PERSIST = 8
    MGET = 9
    MSET = 10
    INFO = 11  # items: the sections wanted (none: the default ones); reply: one item per section, JSON fields
    SNAPSHOT = 12  # write a snapshot; flags: SNAPSHOT_BACKGROUND replies once it started
    TOPOLOGY = 13  # the shard map: one item (b"topology", JSON of ShardMap.describe())
    # String and keyspace commands (issue 25); see "Opcodes with arguments" below for their fields.
    SETRANGE = 14
    GETRANGE = 15
    INCRBYFLOAT = 16
    RENAME = 17
    COPY = 18
    TOUCH = 19
    EXPIRE_TIME = 20
    # Admin: the node drains (leaves the cluster, finishes in-flight requests, stops), as on SIGTERM.
    # No items; reply OK once the drain is scheduled. Behind AUTH like every request when a token is set.
    DRAIN = 21


REQUEST_OPCODES = frozenset(int(op) for op in Opcode if op != Opcode.NONE)
RESPONSE_OPCODES = frozenset(int(op) for op in Opcode)


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    NOT_STORED = 2  # SET_IF_ABSENT / SET_IF_PRESENT condition not met
    VERSION_MISMATCH = 3  # SET_CAS: the key's version differs (response carries the current one)
    ERROR = 4  # the request was well-formed but wrong (bad argument); the connection stays
    NOAUTH = 5  # authenticate first
    AUTH_FAILED = 6
    RATE_LIMITED = 7
    OUT_OF_MEMORY = 8  # the value cannot fit under --max-memory
    PROTOCOL_ERROR = 9  # the connection broke the protocol and is being closed
    BUSY = 10  # the server refuses the connection (limit reached, draining)
    MOVED = 11  # another node serves the key; message: "<owner client host:port> <map epoch> <slot>"
    CLUSTER_DOWN = 12  # no node serves the key's shard
    STORAGE_FAILED = 13  # the node cannot write its log: writes refused until it can, reads served
    TRY_AGAIN = 14  # a failover is under way, or a write's quorum failed (outcome unknown): retry
    CROSS_SLOT = 15  # RENAME, COPY: the two keys hash to different slots (as Redis Cluster's CROSSSLOT)


# SET flags.
SET_IF_ABSENT = 0x1
SET_IF_PRESENT = 0x2
SET_CAS = 0x4  # compare-and-set: store only if the key's version equals the request's version field
SET_KEEP_TTL = 0x8  # keep the key's current TTL instead of clearing it (ttl field must be 0)
SET_FLAGS = SET_IF_ABSENT | SET_IF_PRESENT | SET_CAS | SET_KEEP_TTL

# SNAPSHOT flags.
SNAPSHOT_BACKGROUND = 0x1

# Opcodes with arguments (issue 25). Each keyed item is a key, as the router expects:
#   SETRANGE     one item (key, data); the ttl field is the offset (>= 0).
#                Reply OK, the new length in the version field.
#   GETRANGE     one item (key, GETRANGE_BOUNDS.pack(start, end)): inclusive, negatives count from the end.
#                Reply OK with one item (b"", the bytes); a missing key reads as empty.
#   INCRBYFLOAT  one item (key, the increment as decimal text). Reply OK with one item (b"", the new value).
#   RENAME       two items (source, None), (destination, None); flag RENAME_IF_ABSENT.
#                Reply OK; NOT_FOUND: no source; NOT_STORED: the destination exists (with the flag).
#   COPY         two items as RENAME; flag COPY_REPLACE. Reply OK; NOT_FOUND; NOT_STORED: the destination exists.
#   TOUCH        one item per key. Reply OK, the number of keys that exist in the version field.
#   EXPIRE_TIME  one item. Reply OK, the absolute deadline in Unix milliseconds in the ttl field
#                (-1: no TTL); NOT_FOUND.
GETRANGE_BOUNDS = struct.Struct("!qq")
RENAME_IF_ABSENT = 0x1
COPY_REPLACE = 0x1


class FrameLimits(NamedTuple):
    max_key_bytes: int = 65535
    max_value_bytes: int = 64 * 1024 * 1024
    max_items: int = 100_000
    max_frame_bytes: int = 64 * 1024 * 1024 + 65535 + 1024 * 1024


DEFAULT_LIMITS = FrameLimits()


# Frame's fields, for equality and repr (a class compiled by mypyc has no __slots__ attribute).
_FRAME_FIELDS = ("opcode", "request_id", "flags", "status", "ttl_ms", "version", "items")


class Frame:
    """One decoded frame (request or response). Treat as immutable.

    A plain slotted class: a frozen dataclass costs about 2 microseconds per
    instance to build, which is most of a request's budget.
    """

    __slots__ = ("opcode", "request_id", "flags", "status", "ttl_ms", "version", "items")

    def __init__(
        self,
        opcode: int,
        request_id: int = 0,
        flags: int = 0,
        status: int = 0,
        ttl_ms: int = 0,
        version: int = 0,
        items: tuple[tuple[bytes, bytes | None], ...] = (),
    ) -> None:
        self.opcode = opcode
        self.request_id = request_id
        self.flags = flags
        self.status = status
        self.ttl_ms = ttl_ms
        self.version = version
        self.items = items

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FRAME_FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FRAME_FIELDS)
        return f"Frame({fields})"


class ProtocolError(PeerProtocolError):
    """The peer broke the protocol. ``code`` names the problem; ``request_id`` is 0 if unknown."""

    def __init__(self, code: str, message: str, request_id: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class FrameDecoder:
    """Turns a byte stream into :class:`Frame` objects; see the module docstring."""

    __slots__ = ("limits", "examined", "_buffer", "_offset", "_opcodes")

    def __init__(self, limits: FrameLimits = DEFAULT_LIMITS, opcodes: frozenset[int] = REQUEST_OPCODES) -> None:
        self.limits = limits  # may be replaced between frames (raised after AUTH)
        # Bytes appended, moved, read or copied so far: the decoder's work as a count
        # that does not depend on the machine (a test compares it across input sizes).
        self.examined = 0
        self._buffer = bytearray()
        self._offset = 0
        self._opcodes = opcodes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed as frames."""
        return len(self._buffer) - self._offset

    def receive_data(self, data: bytes) -> None:
        if self._offset and self._offset >= len(self._buffer) // 2:
            # At most what was consumed since the last compaction is moved: linear in all.
            self.examined += len(self._buffer) - self._offset
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data
        self.examined += len(data)

    def next_frame(self) -> Frame | None:  # noqa: C901 - the frame parser's states, per frame on the request path
        """The next complete frame, or ``None`` until more data arrives."""
        buffer = self._buffer
        start = self._offset
        available = len(buffer) - start
        if available < HEADER_SIZE:
            self.examined += available
            if available >= _LENGTH_PREFIX:
                # Refuse an oversized frame as soon as its length is known.
                self._check_length(_LENGTH.unpack_from(buffer, start)[0])
            return None
        length, magic, version, opcode, flags, status, request_id, ttl_ms, key_version, count = _HEADER.unpack_from(
            buffer, start
        )
        self.examined += HEADER_SIZE
        limits = self.limits
        if length < _MIN_FRAME_LENGTH or length + _LENGTH_PREFIX > limits.max_frame_bytes:
            self._check_length(length)
        if magic != MAGIC:
            raise ProtocolError("BAD_MAGIC", f"magic 0x{magic:04X} is not 0x{MAGIC:04X}")
        if version != PROTOCOL_VERSION:
            raise ProtocolError("BAD_VERSION", f"protocol version {version} is not {PROTOCOL_VERSION}", request_id)
        if opcode not in self._opcodes:
            raise ProtocolError("UNKNOWN_OPCODE", f"opcode {opcode} is not known", request_id)
        body_length = length - _MIN_FRAME_LENGTH
        if count > limits.max_items:
            raise ProtocolError("TOO_MANY_ITEMS", f"{count} items exceed the limit of {limits.max_items}", request_id)
        if count * _ITEM_HEADER_SIZE > body_length:
            raise ProtocolError(
                "BAD_ITEM_LENGTH", f"{count} items cannot fit in a body of {body_length} bytes", request_id
            )
        end = start + _LENGTH_PREFIX + length
        if len(buffer) < end:
            return None
        position = start + HEADER_SIZE
        items: list[tuple[bytes, bytes | None]] = []
        max_key = limits.max_key_bytes
        max_value = limits.max_value_bytes
        unpack_item = _ITEM_HEADER.unpack_from
        for _ in range(count):
            if position + _ITEM_HEADER_SIZE > end:
                raise ProtocolError("BAD_ITEM_LENGTH", "item header runs past the end of the frame", request_id)
            key_length, value_length = unpack_item(buffer, position)
            position += _ITEM_HEADER_SIZE
            if key_length > max_key:
                raise ProtocolError(
                    "KEY_TOO_LARGE", f"key of {key_length} bytes exceeds the limit of {max_key}", request_id
                )
            if value_length == NULL_LENGTH:
                if position + key_length > end:
                    raise ProtocolError("BAD_ITEM_LENGTH", "item data runs past the end of the frame", request_id)
                key = bytes(buffer[position : position + key_length])
                position += key_length
                items.append((key, None))
                continue
            if value_length > max_value:
                raise ProtocolError(
                    "VALUE_TOO_LARGE", f"value of {value_length} bytes exceeds the limit of {max_value}", request_id
                )
            value_start = position + key_length
            value_end = value_start + value_length
            if value_end > end:
                raise ProtocolError("BAD_ITEM_LENGTH", "item data runs past the end of the frame", request_id)
            items.append((bytes(buffer[position:value_start]), bytes(buffer[value_start:value_end])))
            position = value_end
        self.examined += position - start - HEADER_SIZE  # item headers read, keys and values copied
        if position != end:
            raise ProtocolError("BAD_ITEM_LENGTH", f"{end - position} bytes left over after {count} items", request_id)
        self._offset = end
        return Frame(opcode, request_id, flags, status, ttl_ms, key_version, tuple(items))

    def _check_length(self, length: int) -> None:
        if length < _MIN_FRAME_LENGTH:
            raise ProtocolError(
                "FRAME_TOO_SHORT", f"frame length {length} is below the {_MIN_FRAME_LENGTH}-byte header"
            )
        if length + _LENGTH_PREFIX > self.limits.max_frame_bytes:
            raise ProtocolError(
                "FRAME_TOO_LARGE",
                f"frame of {length + _LENGTH_PREFIX} bytes exceeds the limit of {self.limits.max_frame_bytes}",
            )


def encode_frame(
    opcode: int,
    request_id: int = 0,
    *,
    flags: int = 0,
    status: int = 0,
    ttl_ms: int = 0,
    version: int = 0,
    items: Sequence[tuple[bytes, bytes | memoryview | None]] = (),
) -> bytes:
    """Serialise one frame. Raises ``ValueError`` for fields out of range (a caller bug)."""
    if not (
        0 <= request_id <= _U32_MAX
        and _TTL_MIN <= ttl_ms <= _TTL_MAX
        and 0 <= version <= _U64_MAX
        and 0 <= opcode <= 0xFF
        and 0 <= flags <= 0xFFFF
        and 0 <= status <= 0xFFFF
    ):
        raise ValueError("opcode, flags, status, request_id, ttl_ms or version out of range")
    parts: list[bytes | memoryview] = []
    body_length = 0
    for key, value in items:
        if type(value) is memoryview and value.itemsize != 1:
            value = value.cast("B")  # lengths below count bytes, not wider elements
        if value is None:
            parts.append(_ITEM_HEADER.pack(len(key), NULL_LENGTH))
            parts.append(key)
            body_length += _ITEM_HEADER_SIZE + len(key)
        else:
            parts.append(_ITEM_HEADER.pack(len(key), len(value)))
            parts.append(key)
            parts.append(value)
            body_length += _ITEM_HEADER_SIZE + len(key) + len(value)
    header = _HEADER.pack(
        _MIN_FRAME_LENGTH + body_length,
        MAGIC,
        PROTOCOL_VERSION,
        opcode,
        flags,
        status,
        request_id,
        ttl_ms,
        version,
        len(items),
    )
    return header + b"".join(parts) if parts else header


def encode_value_reply(opcode: int, request_id: int, value: bytes | memoryview, version: int, ttl_ms: int = 0) -> bytes:
    """Fast path for the commonest reply: OK with one value (GET, GET_TTL)."""
    value_length = len(value) if type(value) is bytes else memoryview(value).nbytes
    return b"".join(
        (
            _HEADER.pack(
                _MIN_FRAME_LENGTH + _ITEM_HEADER_SIZE + value_length,
                MAGIC,
                PROTOCOL_VERSION,
                opcode,
                0,
                0,
                request_id,
                ttl_ms,
                version,
                1,
            ),
            _ITEM_HEADER.pack(0, value_length),
            value,
        )
    )


def encode_status_reply(opcode: int, request_id: int, status: int, version: int = 0, ttl_ms: int = 0) -> bytes:
    """A reply with a status and no items (SET, DEL, NOT_FOUND, ...)."""
    return _HEADER.pack(_MIN_FRAME_LENGTH, MAGIC, PROTOCOL_VERSION, opcode, 0, status, request_id, ttl_ms, version, 0)


def encode_error(opcode: int, request_id: int, status: int, code: str, message: str) -> bytes:
    return encode_frame(opcode, request_id, status=status, items=((code.encode(), message.encode()),))
