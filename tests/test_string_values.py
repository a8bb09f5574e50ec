"""The pure value code behind the string commands of issue 25, without a server.

aegiskv.node.long_double (INCRBYFLOAT), aegiskv.node.bit_strings (ranges and bits) and
aegiskv.node.dump_payload (DUMP/RESTORE). The expected values are redis-server 7.0's
replies for the same inputs; tests/test_resp_oracle.py compares whole command streams.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegiskv.node import bit_strings, dump_payload, long_double
from tests.effort import examples


def incr(current: bytes, increment: bytes) -> bytes | None:
    start = long_double.parse(current)
    amount = long_double.parse(increment)
    assert start is not None and amount is not None
    total = long_double.add(start, amount)
    return None if total is None else long_double.format_human(total)


@pytest.mark.parametrize(
    ("current", "increment", "stored"),
    [
        (b"10.50", b"0.1", b"10.6"),  # 80-bit: 10.6 rounds back; a double sum would print 10.59999...
        (b"5.0e3", b"2.0e2", b"5200"),
        (b"0", b"-0.0", b"0"),  # -0 prints as 0
        (b"1", b"-1e-20", b"1"),  # 1 - 1e-20 rounds back to 1 in 64 bits
        (b"0", b"-1e-20", b"0"),  # rounds to -0.00000000000000000, printed 0
        (b"3", b"0x1.8p1", b"6"),
        (b"1e20", b"1", b"100000000000000000000"),  # 1e20 needs 67 bits: a step of 8, so +1 is lost
        (b".5", b"5.", b"5.5"),
    ],
)
def test_incrbyfloat_prints_as_redis(current: bytes, increment: bytes, stored: bytes) -> None:
    assert incr(current, increment) == stored


@pytest.mark.parametrize("text", [b"", b" 1", b"1 ", b"nan", b"NaN", b"1e", b"0x", b"1e5000", b"1e-5000", b"--1"])
def test_strtold_refusals(text: bytes) -> None:
    assert long_double.parse(text) is None


def test_infinity_parses_but_no_sum_with_it_is_stored() -> None:
    assert incr(b"1", b"inf") is None and incr(b"1", b"-Infinity") is None
    assert incr(b"1.1e4932", b"1.1e4932") is None  # overflow


def test_rounding_is_to_the_64_bit_significand() -> None:
    assert long_double.round_to_long_double(Fraction(2**64 + 1)) == 2**64  # a tie (step 2): to the even one
    assert long_double.round_to_long_double(Fraction(2**64 + 3)) == 2**64 + 4  # a tie: to the even one
    assert long_double.round_to_long_double(Fraction(2**65 + 3)) == 2**65 + 4  # step 4: the nearest
    assert long_double.round_to_long_double(Fraction(1, 3)) != Fraction(1, 3)


def test_ranges_clamp_as_redis() -> None:
    assert bit_strings.get_range(b"Hello", 1, -2) == b"ell"
    assert bit_strings.get_range(b"Hello", -1, -3) == b""
    assert bit_strings.get_range(b"Hello", -100, 100) == b"Hello"
    assert bit_strings.get_range(b"", 0, -1) == b""
    assert bit_strings.set_range(b"ab", 4, b"z") == b"ab\0\0z"
    assert bit_strings.set_range(b"abcdef", 1, b"XY") == b"aXYdef"


def _naive_bits(value: bytes) -> str:
    return "".join(f"{byte:08b}" for byte in value)


def _naive_count(value: bytes, start: int | None, end: int | None, in_bits: bool) -> int:
    if start is None or end is None:
        return _naive_bits(value).count("1")
    unit = 8 if in_bits else 1
    bounds = bit_strings.clamp_range(start, end, len(value) * (8 if in_bits else 1))
    if bounds is None:
        return 0
    bits = _naive_bits(value)
    low, high = (bounds[0], bounds[1] + 1) if in_bits else (bounds[0] * 8, (bounds[1] + 1) * 8)
    assert unit
    return bits[low:high].count("1")


def _naive_position(value: bytes, bit: int, start: int | None, end: int | None, in_bits: bool) -> int:
    length = len(value) * 8 if in_bits else len(value)
    bounds = bit_strings.clamp_range(start or 0, length - 1 if end is None else end, length, refuse_reversed=False)
    if bounds is None:
        return -1
    low, high = (bounds[0], bounds[1]) if in_bits else (bounds[0] * 8, bounds[1] * 8 + 7)
    found = _naive_bits(value).find(str(bit), low, high + 1)
    if found >= 0:
        return found
    return ((high >> 3) + 1) * 8 if not bit and end is None else -1


# monkeypatch.context() undoes each example's patch: the function-scoped fixture is safe here.
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.binary(max_size=40),
    slice_bytes=st.integers(1, 5),
    start=st.one_of(st.none(), st.integers(-400, 400)),
    end=st.one_of(st.none(), st.integers(-400, 400)),
    in_bits=st.booleans(),
    bit=st.integers(0, 1),
    as_view=st.booleans(),
)
def test_bit_count_and_position_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
    value: bytes,
    slice_bytes: int,
    start: int | None,
    end: int | None,
    in_bits: bool,
    bit: int,
    as_view: bool,
) -> None:
    # Sliced (issue 28) exactly as whole: against a bit string's count and find; the range
    # rules are Redis's (clamp_range; redis-server itself checks them in test_resp_oracle.py).
    with monkeypatch.context() as patch:
        patch.setattr(bit_strings, "SLICE_BYTES", slice_bytes)
        given_value = memoryview(value) if as_view else value
        assert bit_strings.bit_count(given_value, start, end, in_bits) == _naive_count(value, start, end, in_bits)
        if start is None and end is not None:
            return  # BITPOS takes an end only after a start
        found = bit_strings.bit_position(given_value, bit, start, end, in_bits)
        assert found == _naive_position(value, bit, start, end, in_bits)


def test_a_large_count_lets_the_reactor_run_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # BITCOUNT of 8 MiB took 70 ms in one piece, holding the interpreter lock throughout: in the
    # worker pool too, the reactor could not run. Now it lets go once per SLICE_BYTES.
    pauses = 0

    def counted() -> None:
        nonlocal pauses
        pauses += 1

    monkeypatch.setattr(bit_strings, "let_others_run", counted)
    value = b"\x00" * ((8 << 20) - 1) + b"\x01"
    assert bit_strings.bit_count(value, None, None, False) == 1
    assert pauses >= (8 << 20) // bit_strings.SLICE_BYTES - 1
    pauses = 0
    assert bit_strings.bit_position(value, 1, None, None, False) == 8 * len(value) - 1
    assert pauses >= (8 << 20) // bit_strings.SLICE_BYTES - 1


def test_bits() -> None:
    assert bit_strings.set_bit(b"", 9, 1) == (b"\x00\x40", 0)
    assert bit_strings.set_bit(b"\xff", 0, 0) == (b"\x7f", 1)
    assert bit_strings.get_bit(b"\x40", 1) == 1 and bit_strings.get_bit(b"\x40", 100) == 0
    assert bit_strings.bit_count(b"foobar", None, None, False) == 26
    assert bit_strings.bit_count(b"foobar", 5, 30, True) == 17
    assert bit_strings.bit_position(b"\x00\xff", 1, None, None, False) == 8
    assert bit_strings.bit_position(b"\xff\xff", 0, None, None, False) == 16
    assert bit_strings.bit_position(b"\xff\xff", 0, 0, 1, False) == -1
    assert bit_strings.bit_position(b"\xff\x0f", 0, 2, 9, True) == 8
    assert bit_strings.bit_position(b"\x01", 1, -20, -30, False) == 7  # clamped, not refused (unlike BITCOUNT)
    assert bit_strings.bit_operation(b"XOR", [b"\x0f", b"\xff\x01"]) == b"\xf0\x01"
    assert bit_strings.bit_operation(b"NOT", [b"\x0f"]) == b"\xf0"
    assert bit_strings.bit_operation(b"AND", [b"", b""]) == b""


def test_dump_payloads() -> None:
    assert dump_payload.crc64(b"123456789") == 0xE9C6D914C4B8D9CA  # the check value of Redis's crc64.c
    for value in (b"", b"0", b"-128", b"70000", b"2147483648", b"007", b"hello", bytes(range(256))):
        payload = dump_payload.encode(value)
        dump_payload.check(payload)
        assert dump_payload.decode(payload) == value
    assert dump_payload.encode(b"12") == b"\x00\xc0\x0c\x0a\x00" + dump_payload.encode(b"12")[5:]
    with pytest.raises(dump_payload.BadPayload, match="version or checksum"):
        dump_payload.check(dump_payload.encode(b"x")[:-1] + b"\0")
    later = b"\x00\x01x" + b"\x0b\x00"  # RDB version 11: newer than Redis 7.0 writes
    with pytest.raises(dump_payload.BadPayload, match="version or checksum"):
        dump_payload.check(later + dump_payload.crc64(later).to_bytes(8, "little"))


def test_lzf_back_references_may_overlap() -> None:
    # A literal "a", then a back reference of length 9 to distance 1: "a" * 10.
    assert dump_payload.lzf_decompress(b"\x00a" + bytes(((7 << 5) | 0, 0, 0)), 10) == b"a" * 10
    with pytest.raises(dump_payload.BadPayload):
        dump_payload.lzf_decompress(b"\x00a" + bytes(((1 << 5) | 0, 5)), 4)  # points before the start
