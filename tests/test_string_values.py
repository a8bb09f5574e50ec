"""The pure value code behind the string commands of issue 25, without a server.

aegiskv.node.long_double (INCRBYFLOAT), aegiskv.node.bit_strings (ranges and bits) and
aegiskv.node.dump_payload (DUMP/RESTORE). The expected values are redis-server 7.0's
replies for the same inputs; tests/test_resp_oracle.py compares whole command streams.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from aegiskv.node import bit_strings, dump_payload, long_double


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
