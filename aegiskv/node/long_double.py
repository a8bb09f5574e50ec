"""INCRBYFLOAT's arithmetic: Redis's x87 80-bit ``long double``, emulated exactly.

Redis parses the increment and the stored value with ``strtold``, adds them in
``long double`` (on x86-64 a 64-bit significand) and stores the sum printed with
``%.17Lf`` and its trailing zeros removed. A Python float has 53 bits, so
``10.1 + 0.2`` would print differently from Redis's ``10.30000000000000000``
(stored as ``10.3``). Every value here is an exact :class:`fractions.Fraction`
rounded to what the 80-bit format holds, the way the hardware rounds (to
nearest, ties to even), so the stored text is byte for byte Redis's.

Pure functions; no state. Hexadecimal floats (``0x1p3``) and ``inf`` are
accepted as ``strtold`` accepts them; NaN is refused as Redis refuses it.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

# The x87 extended format: 64-bit significand, exponents down to 2**-16382 (normal)
# and 2**-16445 (smallest subnormal); the largest finite value is just below 2**16384.
_SIGNIFICAND_BITS: Final = 64
_MIN_EXPONENT: Final = -16445  # the subnormal quantum's exponent
_OVERFLOW: Final = Fraction(2**16384)
# Redis copies the argument into a buffer of MAX_LONG_DOUBLE_CHARS (5 KiB) and refuses longer ones.
MAX_CHARS: Final = 5 * 1024

_DECIMAL = re.compile(rb"([+-]?)(\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?")
_HEXADECIMAL = re.compile(rb"([+-]?)0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP]([+-]?\d+))?")
_INFINITY = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)


class Infinite:
    """A parsed ``inf``: any sum with it is infinite, which INCRBYFLOAT refuses."""

    __slots__ = ("negative",)

    def __init__(self, negative: bool) -> None:
        self.negative = negative


def round_to_long_double(value: Fraction) -> Fraction | None:
    """``value`` rounded to the nearest 80-bit long double (ties to even); None when it overflows."""
    if value == 0:
        return value
    magnitude = abs(value)
    # The exponent of the leading bit: 2**exponent <= magnitude < 2**(exponent + 1).
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    quantum_exponent = max(exponent - (_SIGNIFICAND_BITS - 1), _MIN_EXPONENT)
    scaled = magnitude / Fraction(2) ** quantum_exponent
    rounded = Fraction(round(scaled)) * Fraction(2) ** quantum_exponent  # round() on a Fraction: ties to even
    if rounded >= _OVERFLOW:
        return None
    return rounded if value > 0 else -rounded


def parse(text: bytes) -> Fraction | Infinite | None:
    """The value ``strtold`` reads from ``text``, as Redis's string2ld accepts it; None if refused.

    Refused as Redis refuses: empty or longer than MAX_CHARS, leading space,
    anything after the number, NaN, and overflow or underflow to zero (ERANGE).
    """
    if not text or len(text) >= MAX_CHARS:
        return None
    if (match := _INFINITY.fullmatch(text)) is not None:
        return Infinite(match.group(1) == b"-")
    if (match := _HEXADECIMAL.fullmatch(text)) is not None:
        sign, digits, exponent_text = match.groups()
        whole, _, fraction = digits.partition(b".")
        mantissa = int(whole + fraction or b"0", 16)
        exponent = int(exponent_text or b"0") - 4 * len(fraction)
        base = 2
    elif (match := _DECIMAL.fullmatch(text)) is not None:
        sign, digits, exponent_text = match.groups()
        whole, _, fraction = digits.partition(b".")
        mantissa = _decimal_int(whole + fraction)
        exponent = int(exponent_text or b"0") - len(fraction)
        base = 10
    else:
        return None
    if mantissa == 0:
        return Fraction(0)
    # Far outside the format's range: decide without building a number of millions of digits.
    # The magnitude in bits, roughly (a decimal digit is 3.33 bits); the margins cover the error.
    bits = (len(digits.lstrip(b"0.")) + exponent) * 10 // 3 if base == 10 else mantissa.bit_length() + exponent
    if bits > 16500:
        return None  # ERANGE, HUGE_VAL
    if bits < -16600:
        return None  # ERANGE, underflow to zero
    value = Fraction(mantissa) * Fraction(base) ** exponent
    rounded = round_to_long_double(-value if sign == b"-" else value)
    if rounded is None or rounded == 0:
        return None
    return rounded


def add(current: Fraction | Infinite, increment: Fraction | Infinite) -> Fraction | None:
    """The long double sum; None when it is NaN or infinite (Redis refuses to store those)."""
    if isinstance(current, Infinite) or isinstance(increment, Infinite):
        return None
    return round_to_long_double(current + increment)


def format_human(value: Fraction) -> bytes:
    """``%.17Lf`` with the trailing zeros (and a bare point) removed, "-0" as "0": Redis's LD_STR_HUMAN."""
    scaled = value * 10**17
    units = round(scaled)  # the exact value's nearest, ties to even, as glibc's printf rounds
    negative = value < 0
    digits = _decimal_text(abs(units)).rjust(18, "0")
    text = f"{digits[:-17]}.{digits[-17:]}".rstrip("0").rstrip(".")
    if negative and text != "0":
        text = "-" + text
    return text.encode()


# Python refuses int <-> decimal text conversions above 4,300 digits (sys.set_int_max_str_digits,
# a process-wide setting); a long double's %.17Lf runs to 4,950 digits, so both go in chunks.
_CHUNK_DIGITS: Final = 4000
_CHUNK: Final = 10**_CHUNK_DIGITS


def _decimal_int(digits: bytes) -> int:
    value = 0
    for start in range(0, len(digits), _CHUNK_DIGITS):
        piece = digits[start : start + _CHUNK_DIGITS]
        value = value * 10 ** len(piece) + int(piece)
    return value


def _decimal_text(value: int) -> str:
    if value < _CHUNK:
        return str(value)
    high, low = divmod(value, _CHUNK)
    return _decimal_text(high) + str(low).rjust(_CHUNK_DIGITS, "0")
