"""Ranges and bits of a string value, computed as Redis 7.0 computes them.

Pure functions of a value and the command's already-parsed arguments, used by
the node's operations (aegiskv.node.operations): GETRANGE's and BITCOUNT's
index rules (negative indexes count from the end, ranges are clamped),
SETRANGE's and SETBIT's zero padding, BITPOS's rule for a clear bit past the
end, BITOP, and BITFIELD's fields and overflow rules. Bit 0 is the most significant bit of byte 0, as in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, NamedTuple

# Redis bounds a string a command may grow to by proto-max-bulk-len (512 MiB by default).
MAX_STRING_BYTES: Final = 512 * 1024 * 1024
# BITCOUNT and BITPOS walk a value this many bytes at a time (about 0.3 ms each) and let the
# interpreter lock go between slices. A large value's count runs in the worker pool
# (aegiskv.server.pipeline), which holds that lock while it computes: in one piece, the count
# of 64 MiB would keep the reactor, and so every client, waiting for its whole length.
SLICE_BYTES = 256 * 1024


def let_others_run() -> None:
    """Between two slices: give the interpreter lock to a thread waiting for it (the reactor)."""
    time.sleep(0)


def clamp_range(start: int, end: int, length: int, refuse_reversed: bool = True) -> tuple[int, int] | None:
    """Redis's inclusive [start, end] over ``length`` items, negatives from the end; None: empty.

    ``refuse_reversed``: two negative indexes with start after end mean an
    empty range at once (GETRANGE, BITCOUNT), before they are clamped.
    """
    if refuse_reversed and start < 0 and end < 0 and start > end:
        return None
    if start < 0:
        start += length
    if end < 0:
        end += length
    start = max(start, 0)
    end = max(end, 0)
    end = min(end, length - 1)
    if start > end or length == 0:
        return None
    return start, end


def get_range(value: bytes | memoryview, start: int, end: int) -> bytes | memoryview:
    """GETRANGE: the bytes from ``start`` to ``end`` inclusive (a view of a view, not a copy)."""
    bounds = clamp_range(start, end, len(value))
    return b"" if bounds is None else value[bounds[0] : bounds[1] + 1]


def set_range(value: bytes, offset: int, data: bytes) -> bytes:
    """SETRANGE: ``data`` written at ``offset``, zero bytes filling any gap."""
    if offset > len(value):
        value += bytes(offset - len(value))
    return value[:offset] + data + value[offset + len(data) :]


def get_bit(value: bytes, offset: int) -> int:
    byte = offset >> 3
    if byte >= len(value):
        return 0
    return (value[byte] >> (7 - (offset & 7))) & 1


def set_bit(value: bytes, offset: int, bit: int) -> tuple[bytes, int]:
    """SETBIT: the new value (grown with zero bytes as needed) and the bit's old value."""
    byte = offset >> 3
    if byte >= len(value):
        value += bytes(byte + 1 - len(value))
    mask = 1 << (7 - (offset & 7))
    old = 1 if value[byte] & mask else 0
    new_byte = value[byte] | mask if bit else value[byte] & ~mask
    return value[:byte] + bytes((new_byte,)) + value[byte + 1 :], old


def _count_set_bits(view: memoryview, start: int, stop: int) -> int:
    """Set bits in ``view[start:stop]``, a slice at a time (see SLICE_BYTES)."""
    total = 0
    for low in range(start, stop, SLICE_BYTES):
        if low != start:
            let_others_run()
        total += int.from_bytes(view[low : min(low + SLICE_BYTES, stop)], "big").bit_count()
    return total


def bit_count(value: bytes | memoryview, start: int | None, end: int | None, in_bits: bool) -> int:
    """BITCOUNT over the whole value, or over [start, end] in bytes or (``in_bits``) bits."""
    view = memoryview(value)
    if start is None or end is None:
        return _count_set_bits(view, 0, len(view))
    length = len(view) * 8 if in_bits else len(view)
    bounds = clamp_range(start, end, length)
    if bounds is None:
        return 0
    first, last = bounds
    if not in_bits:
        return _count_set_bits(view, first, last + 1)
    first_byte, last_byte = first >> 3, last >> 3
    total = _count_set_bits(view, first_byte, last_byte + 1)
    total -= (view[first_byte] >> (8 - (first & 7))).bit_count()  # the bits before ``first`` in its byte
    return total - (view[last_byte] & ((1 << (7 - (last & 7))) - 1)).bit_count()  # and after ``last``


def _first_bit_in(view: memoryview, bit: int, first_bit: int, last_bit: int) -> int:
    """The first ``bit`` from ``first_bit`` to ``last_bit`` (inclusive), -1 when none: one slice."""
    chunk = int.from_bytes(view[first_bit >> 3 : (last_bit >> 3) + 1], "big")
    if not bit:
        chunk = ~chunk
    # Keep the bits from first_bit to last_bit: drop those after, then those before.
    chunk >>= 7 - (last_bit & 7)
    chunk &= (1 << (last_bit - first_bit + 1)) - 1
    if chunk:
        return first_bit + (last_bit - first_bit + 1) - chunk.bit_length()
    return -1


def bit_position(value: bytes | memoryview, bit: int, start: int | None, end: int | None, in_bits: bool) -> int:
    """BITPOS: the first ``bit`` in the range, -1 when none.

    As Redis: looking for a clear bit with no ``end`` given, a value of all set
    bits answers the first bit past its end (the string is taken as padded with
    zeros on the right); with an ``end`` given, -1. Unlike GETRANGE and
    BITCOUNT, two negative indexes in the wrong order are clamped, not refused.
    """
    view = memoryview(value)
    length = len(view) * 8 if in_bits else len(view)
    bounds = clamp_range(start or 0, length - 1 if end is None else end, length, refuse_reversed=False)
    if bounds is None:
        return -1
    first_bit, last_bit = bounds if in_bits else (bounds[0] * 8, bounds[1] * 8 + 7)
    # A slice at a time (see SLICE_BYTES), each slice ending at a byte boundary.
    low = first_bit
    while low <= last_bit:
        if low != first_bit:
            let_others_run()
        high = min(last_bit, ((low >> 3) + SLICE_BYTES) * 8 - 1)
        found = _first_bit_in(view, bit, low, high)
        if found >= 0:
            return found
        low = high + 1
    if not bit and end is None:
        return ((last_bit >> 3) + 1) * 8
    return -1


def bit_operation(operation: bytes, sources: Sequence[bytes]) -> bytes:
    """BITOP AND/OR/XOR/NOT over ``sources`` (missing keys given as b""), zero-padded to the longest."""
    length = max((len(source) for source in sources), default=0)
    if length == 0:
        return b""
    numbers = [int.from_bytes(source.ljust(length, b"\0"), "big") for source in sources]
    if operation == b"NOT":
        result = ~numbers[0] & ((1 << (8 * length)) - 1)
    else:
        result = numbers[0]
        for number in numbers[1:]:
            if operation == b"AND":
                result &= number
            elif operation == b"OR":
                result |= number
            else:
                result ^= number
    return result.to_bytes(length, "big")


# -- BITFIELD ------------------------------------------------------------------------------


class BitfieldOp(NamedTuple):
    """One BITFIELD subcommand, parsed: ``write`` is SET or INCRBY (``increment``: INCRBY)."""

    write: bool
    increment: bool
    signed: bool
    bits: int
    offset: int
    value: int  # SET's value or INCRBY's increment (a signed 64-bit integer)
    overflow: str  # "wrap", "sat" or "fail", as the last OVERFLOW before it said


def field_get(value: bytes | bytearray, offset: int, bits: int, signed: bool) -> int:
    """The ``bits``-bit field at bit ``offset`` (past the end reads as zeros)."""
    first, last = offset >> 3, (offset + bits - 1) >> 3
    chunk = bytes(value[first : last + 1]).ljust(last - first + 1, b"\0")
    number = int.from_bytes(chunk, "big") >> (7 - ((offset + bits - 1) & 7))
    number &= (1 << bits) - 1
    if signed and number >> (bits - 1):
        number -= 1 << bits
    return number


def field_set(value: bytearray, offset: int, bits: int, number: int) -> None:
    """Write the low ``bits`` bits of ``number`` at bit ``offset`` (``value`` already covers them)."""
    first, last = offset >> 3, (offset + bits - 1) >> 3
    shift = 7 - ((offset + bits - 1) & 7)
    width = (last - first + 1) * 8
    mask = ((1 << bits) - 1) << shift
    chunk = int.from_bytes(value[first : last + 1], "big")
    chunk = (chunk & ~mask & ((1 << width) - 1)) | ((number << shift) & mask)
    value[first : last + 1] = chunk.to_bytes(last - first + 1, "big")


def _int64(number: int) -> int:
    """``number`` as C's int64_t holds it: wrapped to 64 bits, two's complement."""
    number &= 2**64 - 1
    return number - 2**64 if number >= 2**63 else number


def _signed_overflow(value: int, increment: int, bits: int) -> int:
    """Redis's checkSignedBitfieldOverflow: 1 above the range, -1 below, 0 within.

    Written as the C is, int64 wrap-around included: its bounds on the increment
    wrap for a value far outside the field's range, so SET i3 with -2**63 counts
    as an overflow upwards (and SAT stores the maximum), as in Redis.
    """
    high = 2**63 - 1 if bits == 64 else (1 << (bits - 1)) - 1
    low = -high - 1
    most, least = _int64(high - value), _int64(low - value)
    if value > high or (bits != 64 and increment > most) or (value >= 0 and increment > 0 and increment > most):
        return 1
    if value < low or (bits != 64 and increment < least) or (value < 0 and increment < 0 and increment < least):
        return -1
    return 0


def _unsigned_overflow(value: int, increment: int, bits: int) -> int:
    """Redis's checkUnsignedBitfieldOverflow (``value`` an unsigned 64-bit number)."""
    high = (1 << bits) - 1
    if value > high or (increment > 0 and increment > _int64(high - value)):
        return 1
    if increment < 0 and increment < _int64(-value):
        return -1
    return 0


def field_result(old: int, op: BitfieldOp) -> tuple[int | None, int | None]:
    """(what the reply says, what to write) for a SET or INCRBY on a field holding ``old``.

    Redis's overflow rules: WRAP keeps the low bits (two's complement for
    signed fields), SAT clamps to the type's range, FAIL writes nothing and
    answers nil. SET's value, for an unsigned field, is first read as an
    unsigned 64-bit number, as Redis casts it.
    """
    bits = op.bits
    if op.increment:
        value, increment = old, op.value
    else:
        value, increment = (op.value if op.signed else op.value % 2**64), 0
    if op.signed:
        overflow = _signed_overflow(value, increment, bits)
        high = 2**63 - 1 if bits == 64 else (1 << (bits - 1)) - 1
        low = -high - 1
    else:
        overflow = _unsigned_overflow(value, increment, bits)
        high, low = (1 << bits) - 1, 0
    if not overflow:
        new = value + increment
    elif op.overflow == "fail":
        return None, None
    elif op.overflow == "sat":
        new = high if overflow > 0 else low
    else:
        new = (value + increment) % (1 << bits)
        if op.signed and new > high:
            new -= 1 << bits
    return (new if op.increment else old), new
