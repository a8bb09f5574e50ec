"""Unit and property tests for the native protocol codec (aegiskv.protocols.native.codec).

The codec is sans-IO, so everything here is pure bytes in, frames or ProtocolError out.
Frames are often built by hand (``header``/``item`` below) rather than with ``encode_frame``,
so that the decoder is checked against the documented wire layout, not against the encoder.
"""

from __future__ import annotations

import itertools
import random
import struct
from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    MAGIC,
    NULL_LENGTH,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameLimits,
    Opcode,
    ProtocolError,
    Status,
)
from tests.effort import examples

# Layout from the module docstring, kept separate from native._HEADER on purpose.
_WIRE_HEADER = struct.Struct("!IHBBHHIqQI")
_MIN_LENGTH = 32  # the length field counts the 32 header bytes after it
_RID = 0xDEADBEEF  # a request id that cannot be mistaken for a default
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_TTL_MIN, _TTL_MAX = -(2**63), 2**63 - 1

# Small limits make every limit error reachable with tiny frames.
_SMALL = FrameLimits(max_key_bytes=4, max_value_bytes=8, max_items=2, max_frame_bytes=128)

# Property tests: enough examples to find shallow bugs, few enough that the file stays fast.
_PROPERTY = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers -----------------------------------------------------------------------------


def header(
    length: int = _MIN_LENGTH,
    *,
    magic: int = MAGIC,
    version: int = PROTOCOL_VERSION,
    opcode: int = Opcode.GET,
    flags: int = 0,
    status: int = 0,
    request_id: int = _RID,
    ttl_ms: int = 0,
    key_version: int = 0,
    count: int = 0,
) -> bytes:
    return _WIRE_HEADER.pack(length, magic, version, opcode, flags, status, request_id, ttl_ms, key_version, count)


def item(key_length: int, value_length: int) -> bytes:
    return struct.pack("!II", key_length, value_length)


def raw_frame(body: bytes = b"", *, count: int = 0, **fields: int) -> bytes:
    """A frame whose length field is right for ``body`` but whose items may be anything."""
    return header(_MIN_LENGTH + len(body), count=count, **fields) + body


def encode(frame: Frame) -> bytes:
    return native.encode_frame(
        frame.opcode,
        frame.request_id,
        flags=frame.flags,
        status=frame.status,
        ttl_ms=frame.ttl_ms,
        version=frame.version,
        items=frame.items,
    )


def decode_one(data: bytes, limits: FrameLimits = DEFAULT_LIMITS) -> Frame:
    """Decode exactly one frame that fills ``data`` (any opcode a frame may carry, 0 included)."""
    decoder = FrameDecoder(limits, native.RESPONSE_OPCODES)
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.buffered == 0
    assert decoder.next_frame() is None
    return frame


def expect_error(data: bytes, code: str, limits: FrameLimits = DEFAULT_LIMITS) -> ProtocolError:
    decoder = FrameDecoder(limits)
    decoder.receive_data(data)
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code == code, caught.value
    return caught.value


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, so any ints will do)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


Outcome = tuple[list[Frame], tuple[str, int] | None, int]


def feed(chunks: list[bytes], limits: FrameLimits = DEFAULT_LIMITS) -> Outcome:
    """Feed chunks as a server would, draining frames after each; check the buffer stays bounded.

    Returns the frames, the error as (code, request_id) or None, and the bytes left buffered.
    Any exception other than ProtocolError propagates and fails the calling test.
    """
    decoder = FrameDecoder(limits, native.RESPONSE_OPCODES)
    frames: list[Frame] = []
    # An incomplete frame that passed the length check is under max_frame_bytes; fewer than
    # HEADER_SIZE bytes may also wait (the header is needed to see the rest).
    bound = max(limits.max_frame_bytes, HEADER_SIZE)
    for chunk in chunks:
        decoder.receive_data(chunk)
        assert decoder.buffered <= bound + len(chunk)
        try:
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
        except ProtocolError as error:
            assert isinstance(error.code, str) and error.code
            assert 0 <= error.request_id <= _U32_MAX
            return frames, (error.code, error.request_id), decoder.buffered
        assert decoder.buffered < bound, "decoder waits on more than max_frame_bytes"
    return frames, None, decoder.buffered


# -- header fields round-trip ------------------------------------------------------------

# (field name on Frame, keyword for encode_frame, value, struct format, offset in the frame)
_FIELD_CASES = [
    *[("opcode", None, int(op), "!B", 7) for op in Opcode],
    ("request_id", "request_id", 0, "!I", 12),
    ("request_id", "request_id", 1, "!I", 12),
    ("request_id", "request_id", _U32_MAX, "!I", 12),
    ("flags", "flags", native.SET_FLAGS, "!H", 8),
    ("flags", "flags", 0xFFFF, "!H", 8),
    *[("status", "status", int(status), "!H", 10) for status in Status],
    ("status", "status", 0xFFFF, "!H", 10),
    ("ttl_ms", "ttl_ms", _TTL_MIN, "!q", 16),
    ("ttl_ms", "ttl_ms", -1, "!q", 16),
    ("ttl_ms", "ttl_ms", 1, "!q", 16),
    ("ttl_ms", "ttl_ms", _TTL_MAX, "!q", 16),
    ("version", "version", 0, "!Q", 24),
    ("version", "version", 1, "!Q", 24),
    ("version", "version", _U64_MAX, "!Q", 24),
]


@pytest.mark.parametrize(("name", "keyword", "value", "fmt", "offset"), _FIELD_CASES)
def test_header_field_round_trips_at_documented_offset(
    name: str, keyword: str | None, value: int, fmt: str, offset: int
) -> None:
    # keyword None: the opcode itself is the field under test (it is positional).
    if keyword is None:
        data = native.encode_frame(value, 7)
    else:
        field: dict[str, Any] = {keyword: value}  # by name: which keyword argument it is varies
        data = native.encode_frame(Opcode.PING, **field)
    # The encoder must put the field where the docstring says, or other implementations break.
    assert struct.unpack_from(fmt, data, offset)[0] == value
    assert struct.unpack_from("!HB", data, 4) == (MAGIC, PROTOCOL_VERSION)
    frame = decode_one(data)
    assert getattr(frame, name) == value
    # Every other field keeps its default: no field bleeds into its neighbour.
    defaults = {"opcode": Opcode.PING, "request_id": 0, "flags": 0, "status": 0, "ttl_ms": 0, "version": 0}
    if keyword is None:
        defaults["request_id"] = 7
    for other, default in defaults.items():
        if other != name:
            assert getattr(frame, other) == default, other
    assert frame.items == ()


def test_all_fields_together_round_trip() -> None:
    frame = Frame(Opcode.SET, _U32_MAX, 0xFFFF, 0xFFFF, _TTL_MIN, _U64_MAX, ((b"k", b"v"),))
    assert decode_one(encode(frame)) == frame


def test_decoder_reads_hand_built_header() -> None:
    # Built from the docstring layout, independent of the encoder.
    data = header(opcode=Opcode.EXPIRE, flags=3, status=4, request_id=99, ttl_ms=-5, key_version=77)
    assert decode_one(data) == Frame(Opcode.EXPIRE, 99, 3, 4, -5, 77, ())


def test_length_and_count_fields_match_the_body() -> None:
    items = ((b"ab", b"cde"), (b"", None))
    data = native.encode_frame(Opcode.MSET, items=items)
    length, count = struct.unpack_from("!I", data, 0)[0], struct.unpack_from("!I", data, 32)[0]
    assert length == len(data) - 4
    assert count == 2
    assert data[36:] == item(2, 3) + b"abcde" + item(0, NULL_LENGTH)


@pytest.mark.parametrize("count", [0, 1, 2, 17])
def test_item_count_round_trips(count: int) -> None:
    items = tuple((b"k%d" % i, b"v" * i) for i in range(count))
    data = native.encode_frame(Opcode.MGET, items=items)
    assert struct.unpack_from("!I", data, 32)[0] == count
    assert decode_one(data).items == items


# -- items -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        ((b"", b"value"),),
        ((b"key", b""),),
        ((b"", b""),),
        ((b"key", None),),
        ((b"", None),),
        ((b"a", None), (b"b", b""), (b"", b"c"), (b"", None)),
        ((b"\x00\xff" * 10, bytes(range(256))),),
    ],
    ids=["empty-key", "empty-value", "both-empty", "null", "empty-key-null", "mixed", "binary"],
)
def test_items_round_trip(items: tuple[tuple[bytes, bytes | None], ...]) -> None:
    assert decode_one(native.encode_frame(Opcode.MSET, 1, items=items)).items == items


def test_null_value_and_empty_value_stay_distinct() -> None:
    # MGET relies on this: a missing key (None) is not the same as an empty string.
    null = decode_one(native.encode_frame(Opcode.MGET, items=((b"k", None),)))
    empty = decode_one(native.encode_frame(Opcode.MGET, items=((b"k", b""),)))
    assert null.items == ((b"k", None),)
    assert empty.items == ((b"k", b""),)
    assert null != empty


def test_null_value_needs_no_value_limit() -> None:
    # 0xFFFFFFFF marks NULL; it must not be compared with max_value_bytes.
    limits = FrameLimits(max_key_bytes=4, max_value_bytes=0, max_items=2, max_frame_bytes=128)
    assert decode_one(raw_frame(item(1, NULL_LENGTH) + b"k", count=1), limits).items == ((b"k", None),)


def test_many_items() -> None:
    items = tuple((i.to_bytes(4, "big"), None if i % 3 == 0 else b"x" * (i % 5)) for i in range(10_000))
    assert decode_one(native.encode_frame(Opcode.MSET, items=items)).items == items


def test_large_value_streamed_in_chunks() -> None:
    value = random.Random(1).randbytes(5 * 1024 * 1024)
    data = native.encode_frame(Opcode.SET, 3, items=((b"big", value),))
    frames, error, left = feed(split(data, list(range(0, len(data), 65536))))
    assert error is None and left == 0
    assert frames == [Frame(Opcode.SET, 3, items=((b"big", value),))]


def test_key_and_value_exactly_at_limits_are_accepted() -> None:
    items = ((b"kkkk", b"vvvvvvvv"), (b"", None))  # max_key 4, max_value 8, max_items 2
    data = native.encode_frame(Opcode.MSET, items=items)
    limits = _SMALL._replace(max_frame_bytes=len(data))  # the limit counts the length prefix
    assert decode_one(data, limits).items == items


def test_frame_exactly_at_max_frame_bytes_is_accepted() -> None:
    data = native.encode_frame(Opcode.SET, items=((b"k", b"v" * 50),))
    assert decode_one(data, DEFAULT_LIMITS._replace(max_frame_bytes=len(data))).items == ((b"k", b"v" * 50),)
    expect_error(data, "FRAME_TOO_LARGE", DEFAULT_LIMITS._replace(max_frame_bytes=len(data) - 1))


def test_memoryview_values_encode_like_bytes() -> None:
    # The memory backend hands out memoryview slices of stored blobs for large values.
    blob = b"__header__" + b"payload"
    view = memoryview(blob)[10:]
    assert native.encode_frame(Opcode.GET, 1, items=((b"k", view),)) == native.encode_frame(
        Opcode.GET, 1, items=((b"k", b"payload"),)
    )
    assert native.encode_value_reply(Opcode.GET, 1, view, 5) == native.encode_value_reply(Opcode.GET, 1, b"payload", 5)


def test_memoryview_with_multibyte_items_is_encoded_consistently() -> None:
    # The signature takes any memoryview. One whose items are wider than a byte has
    # len() != nbytes; the length field and the bytes written must still agree, or the
    # peer's stream desynchronises. Raising for such input would also be acceptable.
    view = memoryview(array("I", [1, 2]))
    try:
        data = native.encode_frame(Opcode.SET, 1, items=((b"k", view),))
    except (TypeError, ValueError):
        return
    frames, error, left = feed([data])
    assert (frames, error, left) == ([Frame(Opcode.SET, 1, items=((b"k", view.tobytes()),))], None, 0)


# -- the reply encoders ------------------------------------------------------------------


def test_encode_value_reply_matches_encode_frame() -> None:
    data = native.encode_value_reply(Opcode.GET_TTL, _U32_MAX, b"hello", _U64_MAX, ttl_ms=-1)
    assert data == native.encode_frame(Opcode.GET_TTL, _U32_MAX, ttl_ms=-1, version=_U64_MAX, items=((b"", b"hello"),))
    assert decode_one(data) == Frame(Opcode.GET_TTL, _U32_MAX, 0, Status.OK, -1, _U64_MAX, ((b"", b"hello"),))


def test_encode_value_reply_with_empty_value() -> None:
    assert decode_one(native.encode_value_reply(Opcode.GET, 4, b"", 1)).items == ((b"", b""),)


@pytest.mark.parametrize("status", list(Status))
def test_encode_status_reply_round_trips(status: Status) -> None:
    data = native.encode_status_reply(Opcode.SET, 12, status, version=_U64_MAX, ttl_ms=_TTL_MIN)
    assert len(data) == HEADER_SIZE
    assert decode_one(data) == Frame(Opcode.SET, 12, 0, status, _TTL_MIN, _U64_MAX, ())


def test_encode_error_round_trips() -> None:
    data = native.encode_error(Opcode.SET, 5, Status.ERROR, "INVALID", "bad flags \u00e9")
    assert decode_one(data) == Frame(Opcode.SET, 5, 0, Status.ERROR, 0, 0, ((b"INVALID", "bad flags \u00e9".encode()),))


def test_protocol_error_reply_with_opcode_0_is_decodable() -> None:
    # The server answers a ProtocolError, and refuses connections, with opcode NONE (0)
    # (native_commands.NativeAdapter.next_request and refusal). The client decodes replies with
    # RESPONSE_OPCODES and checks for status PROTOCOL_ERROR / BUSY, so those frames must decode.
    data = native.encode_error(Opcode.NONE, 7, Status.PROTOCOL_ERROR, "BAD_MAGIC", "not a native frame")
    decoder = FrameDecoder(FrameLimits(2**32 - 2, 2**32 - 2, 2**32 - 1, 2**40), native.RESPONSE_OPCODES)
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert frame.status == Status.PROTOCOL_ERROR
    assert frame.request_id == 7
    assert frame.items == ((b"BAD_MAGIC", b"not a native frame"),)


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": -1},
        {"request_id": 2**32},
        {"ttl_ms": _TTL_MIN - 1},
        {"ttl_ms": _TTL_MAX + 1},
        {"version": -1},
        {"version": 2**64},
    ],
    ids=lambda fields: "-".join(f"{k}={v}" for k, v in fields.items()),
)
def test_encode_frame_rejects_out_of_range_fields(fields: dict[str, Any]) -> None:
    # A ValueError (caller bug) rather than struct.error or a silently wrapped value.
    with pytest.raises(ValueError):
        native.encode_frame(Opcode.SET, **fields)


# -- decoder errors ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, _MIN_LENGTH - 1])
def test_frame_too_short_as_soon_as_length_arrives(length: int) -> None:
    error = expect_error(struct.pack("!I", length), "FRAME_TOO_SHORT")
    assert error.request_id == 0  # nothing after the length has arrived
    # With the whole header present the answer is the same (chunking must not change errors).
    error = expect_error(header(length) + b"\x00" * 8, "FRAME_TOO_SHORT")
    assert error.request_id == 0


@pytest.mark.parametrize("prefix", range(4, HEADER_SIZE))
def test_frame_too_large_before_body_is_buffered(prefix: int) -> None:
    limits = DEFAULT_LIMITS._replace(max_frame_bytes=1000)
    data = header(1000 - 4 + 1, count=1)  # one byte over: 1001 bytes with the prefix
    decoder = FrameDecoder(limits)
    decoder.receive_data(data[:prefix])
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code == "FRAME_TOO_LARGE"
    assert decoder.buffered == prefix  # refused with only part of the header held


@pytest.mark.parametrize("prefix", range(4, HEADER_SIZE))
def test_frame_at_limit_waits_for_body(prefix: int) -> None:
    # The counterpart of the test above: one byte smaller is fine and just needs more data.
    decoder = FrameDecoder(DEFAULT_LIMITS._replace(max_frame_bytes=1000))
    decoder.receive_data(header(1000 - 4)[:prefix])
    assert decoder.next_frame() is None


def test_frame_too_large_with_default_limits_and_full_header() -> None:
    error = expect_error(header(_U32_MAX), "FRAME_TOO_LARGE")
    # The length is judged before the id is read, so no id whatever the chunking.
    assert error.request_id == 0


def test_fewer_than_four_bytes_wait_even_if_they_look_oversized() -> None:
    decoder = FrameDecoder(_SMALL)
    for byte in b"\xff\xff\xff":
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.receive_data(b"\xff")
    with pytest.raises(ProtocolError, match="FRAME_TOO_LARGE"):
        decoder.next_frame()


def test_bad_magic() -> None:
    error = expect_error(header(magic=0x6BAE), "BAD_MAGIC")
    # Deliberately no id: with a wrong magic nothing after it can be trusted.
    assert error.request_id == 0


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version_carries_request_id(version: int) -> None:
    assert expect_error(header(version=version), "BAD_VERSION").request_id == _RID


@pytest.mark.parametrize("opcode", [0, max(Opcode) + 1, 255])
def test_unknown_opcode_carries_request_id(opcode: int) -> None:
    assert expect_error(header(opcode=opcode), "UNKNOWN_OPCODE").request_id == _RID


def test_custom_opcode_set_is_honoured() -> None:
    decoder = FrameDecoder(opcodes=frozenset({0}))
    decoder.receive_data(header(opcode=0) + header(opcode=Opcode.GET))
    assert decoder.next_frame() == Frame(0, _RID)
    with pytest.raises(ProtocolError, match="UNKNOWN_OPCODE"):
        decoder.next_frame()


def test_too_many_items_from_header_alone() -> None:
    body = item(0, 0) * 3
    data = raw_frame(body, count=3)
    # Raised with only the header buffered: the count is checked before waiting for the body.
    assert expect_error(data[:HEADER_SIZE], "TOO_MANY_ITEMS", _SMALL).request_id == _RID
    assert expect_error(data, "TOO_MANY_ITEMS", _SMALL).request_id == _RID


def test_item_count_that_cannot_fit_from_header_alone() -> None:
    # 3 items need at least 24 body bytes; a 23-byte body cannot hold them.
    data = raw_frame(b"\x00" * 23, count=3)
    assert expect_error(data[:HEADER_SIZE], "BAD_ITEM_LENGTH").request_id == _RID
    # A huge count with a tiny body: must be refused without allocating per item.
    data = raw_frame(b"", count=_U32_MAX)
    big = FrameLimits(2**32 - 2, 2**32 - 2, _U32_MAX, 2**40)  # the client's limits: count passes max_items
    assert expect_error(data, "BAD_ITEM_LENGTH", big).request_id == _RID


@pytest.mark.parametrize(
    ("body", "count"),
    [
        # Item 1 (8-byte key) consumes the space item 2's header needed.
        (item(8, 0) + b"k" * 8, 2),
        # Key data past the end (value present).
        (item(4, 0) + b"abc", 1),
        # Value data past the end.
        (item(1, 4) + b"k" + b"vvv", 1),
        # Key data past the end with a NULL value.
        (item(4, NULL_LENGTH) + b"abc", 1),
        # Leftover bytes after the last item.
        (item(1, 1) + b"kv" + b"!", 1),
        # Leftover bytes with no items at all.
        (b"\x00", 0),
    ],
    ids=["header-past-end", "key-past-end", "value-past-end", "null-key-past-end", "leftover", "leftover-no-items"],
)
def test_bad_item_length(body: bytes, count: int) -> None:
    error = expect_error(raw_frame(body, count=count) + header(), "BAD_ITEM_LENGTH")
    assert error.request_id == _RID


@pytest.mark.parametrize("value_length", [0, 1, NULL_LENGTH])
def test_key_too_large(value_length: int) -> None:
    body = item(5, value_length) + b"kkkkk" + (b"v" if value_length == 1 else b"")
    assert expect_error(raw_frame(body, count=1), "KEY_TOO_LARGE", _SMALL).request_id == _RID


def test_value_too_large() -> None:
    body = item(1, 9) + b"k" + b"v" * 9
    assert expect_error(raw_frame(body, count=1), "VALUE_TOO_LARGE", _SMALL).request_id == _RID


def test_error_in_second_item_after_a_good_one() -> None:
    body = item(1, 1) + b"kv" + item(5, 0) + b"kkkkk"
    assert expect_error(raw_frame(body, count=2), "KEY_TOO_LARGE", _SMALL).request_id == _RID


def test_error_after_valid_frames_keeps_earlier_frames() -> None:
    good = native.encode_frame(Opcode.GET, 1, items=((b"k", b""),))
    frames, error, _ = feed([good + good + header(magic=0)])
    assert frames == [decode_one(good)] * 2
    assert error == ("BAD_MAGIC", 0)


# -- streaming ---------------------------------------------------------------------------


def _sample_frames() -> list[Frame]:
    return [
        Frame(Opcode.PING, 1),
        Frame(Opcode.SET, 2, native.SET_CAS, 0, 1500, 42, ((b"key", b"value"),)),
        Frame(Opcode.MGET, 3, items=((b"a", None), (b"", b""), (b"c", b"x" * 300))),
        Frame(Opcode.INFO, _U32_MAX, status=Status.BUSY, ttl_ms=-1, version=_U64_MAX),
    ]


def test_one_byte_at_a_time() -> None:
    frames = _sample_frames()
    encoded = [encode(frame) for frame in frames]
    ends = {sum(len(e) for e in encoded[: i + 1]) for i in range(len(encoded))}
    stream = b"".join(encoded)
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    for position in range(len(stream)):
        decoder.receive_data(stream[position : position + 1])
        frame = decoder.next_frame()
        # A frame appears exactly when its last byte arrives, never earlier.
        if position + 1 in ends:
            assert frame is not None
            decoded.append(frame)
        else:
            assert frame is None
        assert decoder.next_frame() is None
    assert decoded == frames
    assert decoder.buffered == 0


@pytest.mark.parametrize("seed", range(10))
def test_random_chunk_sizes(seed: int) -> None:
    rng = random.Random(seed)
    frames = _sample_frames() * 5
    stream = b"".join(encode(frame) for frame in frames)
    chunks = []
    position = 0
    while position < len(stream):
        size = rng.choice([1, 2, 3, 7, 35, 36, 37, 100, 1000])
        chunks.append(stream[position : position + size])
        position += size
    assert feed(chunks) == (frames, None, 0)


def test_next_frame_on_empty_decoder_and_empty_data() -> None:
    decoder = FrameDecoder()
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_buffered_counts_unconsumed_bytes() -> None:
    first, second = (encode(frame) for frame in _sample_frames()[1:3])
    decoder = FrameDecoder()
    decoder.receive_data(first + second[:10])
    assert decoder.buffered == len(first) + 10
    assert decoder.next_frame() is not None
    assert decoder.buffered == 10
    assert decoder.next_frame() is None
    assert decoder.buffered == 10  # waiting consumes nothing
    decoder.receive_data(second[10:])
    assert decoder.buffered == len(second)
    assert decoder.next_frame() is not None
    assert decoder.buffered == 0


def test_buffered_unchanged_by_error() -> None:
    decoder = FrameDecoder()
    data = header(magic=1)
    decoder.receive_data(data)
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    assert decoder.buffered == len(data)


def test_limits_can_be_raised_between_frames() -> None:
    # The server decodes with tight limits until AUTH succeeds, then raises them; a client may
    # pipeline AUTH and a large request in one packet.
    tight = DEFAULT_LIMITS._replace(max_items=1, max_frame_bytes=64)
    auth = native.encode_frame(Opcode.AUTH, 1, items=((b"secret", b""),))
    mset = native.encode_frame(Opcode.MSET, 2, items=((b"a", b"1" * 100), (b"b", b"2")))
    decoder = FrameDecoder(tight)
    decoder.receive_data(auth + mset)
    assert decoder.next_frame() == decode_one(auth)
    decoder.limits = DEFAULT_LIMITS
    assert decoder.next_frame() == decode_one(mset)
    assert decoder.buffered == 0
    # Without raising them, the same bytes are refused: the test above proves something.
    decoder = FrameDecoder(tight)
    decoder.receive_data(auth + mset)
    assert decoder.next_frame() is not None
    with pytest.raises(ProtocolError, match="FRAME_TOO_LARGE"):
        decoder.next_frame()


def test_limits_raised_while_large_frame_is_partially_buffered() -> None:
    tight = DEFAULT_LIMITS._replace(max_frame_bytes=64)
    auth = native.encode_frame(Opcode.AUTH, 1, items=((b"secret", b""),))
    big = native.encode_frame(Opcode.SET, 2, items=((b"k", b"v" * 200),))
    decoder = FrameDecoder(tight)
    decoder.receive_data(auth + big[:2])  # only half of the next length field
    assert decoder.next_frame() is not None
    decoder.limits = DEFAULT_LIMITS
    decoder.receive_data(big[2:])
    assert decoder.next_frame() == decode_one(big)


# -- decode work linear in the input -----------------------------------------------------

# As for the RESP reader (tests/test_resp_codec.py): a frame with four times the items may cost
# the decoder at most this much more work (FrameDecoder.examined, which unlike time does not move
# with the machine), however the frame is cut into reads.
_WORK_RATIO = 4.5
_MANY_ITEMS = FrameLimits(max_items=1 << 20, max_frame_bytes=64 << 20)


def _frame_reads(frame: bytes, chunking: str) -> list[bytes]:
    if chunking == "whole":
        return [frame]
    if chunking == "bytes":
        return [frame[position : position + 1] for position in range(len(frame))]
    rng = random.Random(len(frame))  # random sizes up to 16 KiB: reads end in headers and in items
    cuts = list(itertools.accumulate(rng.randint(1, 16384) for _ in range(len(frame) // 8192 + 1)))
    return split(frame, [cut for cut in cuts if cut < len(frame)])


def _decode_work(items: int, chunking: str) -> int:
    """The decoder's work to take one MGET frame of ``items`` 1-byte keys, delivered as ``chunking`` says."""
    frame = native.encode_frame(Opcode.MGET, 1, items=((b"k", b""),) * items)
    decoder = FrameDecoder(_MANY_ITEMS)
    frames: list[Frame] = []
    received = 0
    for reads, data in enumerate(_frame_reads(frame, chunking), 1):
        decoder.receive_data(data)
        while (decoded := decoder.next_frame()) is not None:  # as the server drains it
            frames.append(decoded)
        received += len(data)
        # Appended once, read or copied once, moved at most once by a compaction; and one
        # header read per call while the frame is incomplete.
        assert decoder.examined <= 3 * received + HEADER_SIZE * (reads + len(frames)), (decoder.examined, received)
    assert len(frames) == 1 and len(frames[0].items) == items
    return decoder.examined


@pytest.mark.parametrize(("chunking", "items"), [("whole", 160_000), ("random", 160_000), ("bytes", 8_000)])
def test_decode_work_is_linear_in_the_input_however_it_is_cut(chunking: str, items: int) -> None:
    work = _decode_work(items, chunking)
    four_times = _decode_work(4 * items, chunking)
    assert four_times <= _WORK_RATIO * work, (work, four_times, four_times / work)


# -- property tests ----------------------------------------------------------------------

_u32 = st.integers(0, _U32_MAX)
_items = st.lists(st.tuples(st.binary(max_size=24), st.one_of(st.none(), st.binary(max_size=96))), max_size=6).map(
    tuple
)
frames_strategy = st.builds(
    Frame,
    opcode=st.sampled_from([int(op) for op in Opcode]),
    request_id=_u32,
    flags=st.integers(0, 0xFFFF),
    status=st.integers(0, 0xFFFF),
    ttl_ms=st.integers(_TTL_MIN, _TTL_MAX),
    version=st.integers(0, _U64_MAX),
    items=_items,
)
_cuts = st.lists(st.integers(0, 10_000), max_size=12)
limits_strategy = st.one_of(
    st.just(DEFAULT_LIMITS),
    st.builds(
        FrameLimits,
        max_key_bytes=st.integers(0, 32),
        max_value_bytes=st.integers(0, 128),
        max_items=st.integers(0, 8),
        max_frame_bytes=st.integers(HEADER_SIZE, 512),
    ),
)


@_PROPERTY
@given(frame=frames_strategy)
def test_property_round_trip(frame: Frame) -> None:
    data = encode(frame)
    assert decode_one(data) == frame
    assert len(data) == 4 + struct.unpack_from("!I", data)[0]


@settings(_PROPERTY, max_examples=examples(200))  # each example is several frames: the costliest test here
@given(frames=st.lists(frames_strategy, max_size=5), cuts=_cuts)
def test_property_round_trip_concatenated_and_chunked(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode(frame) for frame in frames)
    assert feed(split(stream, cuts)) == (frames, None, 0)


def _same_outcome(chunked: Outcome, whole: Outcome) -> None:
    """Chunking may change when a frame or error appears, never what it is."""
    assert chunked[:2] == whole[:2]
    if whole[1] is None:  # after an error, how much was buffered depends on the chunking
        assert chunked[2] == whole[2]


def _consistent(stream: bytes, outcome: Outcome) -> None:
    """Whatever the decoder accepted re-encodes to exactly the bytes it consumed (the encoding
    is canonical), so it cannot have skipped, invented or reordered anything."""
    frames, error, left = outcome
    consumed = b"".join(encode(frame) for frame in frames)
    assert stream.startswith(consumed)
    if error is None:
        assert len(consumed) + left == len(stream)


_header_piece = st.builds(
    lambda length, magic, version, opcode, rid, count: header(
        length, magic=magic, version=version, opcode=opcode, request_id=rid, count=count
    ),
    length=st.one_of(st.integers(0, 120), _u32),
    magic=st.one_of(st.just(MAGIC), st.integers(0, 0xFFFF)),
    version=st.one_of(st.just(PROTOCOL_VERSION), st.integers(0, 255)),
    opcode=st.integers(0, 13),
    rid=_u32,
    count=st.one_of(st.integers(0, 4), _u32),
)
_item_piece = st.builds(
    item,
    st.one_of(st.integers(0, 12), _u32),
    st.one_of(st.integers(0, 12), st.just(NULL_LENGTH), _u32),
)
# A header whose length matches a body of item headers and junk, so the item parser gets exercised.
_shaped_frame = st.builds(
    lambda body, count, opcode: raw_frame(body, count=count, opcode=opcode),
    st.lists(st.one_of(_item_piece, st.binary(max_size=12)), max_size=5).map(b"".join),
    st.integers(0, 5),
    st.integers(0, 12),
)
# Byte streams shaped like frames, so the fuzzing gets past the magic into the item parser.
plausible_streams = st.lists(
    st.one_of(_shaped_frame, _header_piece, _item_piece, st.binary(max_size=16)), max_size=8
).map(b"".join)


@_PROPERTY
@given(stream=st.one_of(st.binary(max_size=300), plausible_streams), limits=limits_strategy, cuts=_cuts)
def test_property_random_streams_only_raise_protocol_error(stream: bytes, limits: FrameLimits, cuts: list[int]) -> None:
    whole = feed([stream], limits)
    chunked = feed(split(stream, cuts), limits)
    _same_outcome(chunked, whole)
    _consistent(stream, whole)


_mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "u32"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.sampled_from([0, 1, 7, 8, 31, 32, 33, 0x7FFFFFFF, 0xFFFFFFFE, NULL_LENGTH]),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, byte, word in mutations:
        at = position % (len(buffer) + 1)
        if kind == "insert":
            buffer[at:at] = bytes([byte])
        elif kind == "truncate":
            del buffer[at:]
        elif not buffer:
            continue
        elif kind == "flip":
            buffer[at % len(buffer)] ^= 1 << (byte % 8)
        elif kind == "delete":
            del buffer[at % len(buffer)]
        else:  # overwrite a (possible) length field with an interesting value
            buffer[at : at + 4] = word.to_bytes(4, "big")
    return bytes(buffer)


@_PROPERTY
@given(
    frames=st.lists(frames_strategy, min_size=1, max_size=4),
    mutations=st.lists(_mutation, min_size=1, max_size=4),
    limits=limits_strategy,
    cuts=_cuts,
)
def test_property_mutated_streams_only_raise_protocol_error(
    frames: list[Frame], mutations: list[tuple[str, int, int, int]], limits: FrameLimits, cuts: list[int]
) -> None:
    stream = _mutate(b"".join(encode(frame) for frame in frames), mutations)
    whole = feed([stream], limits)
    chunked = feed(split(stream, cuts), limits)
    _same_outcome(chunked, whole)
    _consistent(stream, whole)
