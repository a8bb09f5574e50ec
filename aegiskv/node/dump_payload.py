"""DUMP and RESTORE payloads: Redis's serialisation of one value, for strings.

A payload is an RDB object (its type byte and the value), the RDB version
as two little-endian bytes, and a CRC-64 (Jones polynomial, reflected, as
Redis's crc64.c) of everything before it, eight little-endian bytes. Redis
7.0 writes RDB version 10 and refuses a payload of a later one.

A string object is written as Redis writes it: as an integer (1, 2 or 4
bytes) when its text is the canonical form of one that fits in 32 bits,
otherwise as its length and bytes. Redis also LZF-compresses strings longer
than 20 bytes when that saves space; :func:`decode` reads those, and
:func:`encode` never writes them (Redis reads both forms alike), so a DUMP
from AegisKV is byte for byte Redis's for strings of up to 20 bytes.

Pure functions; the CRC runs in Python at about 10 MB/s, so the command
table runs DUMP and RESTORE in the worker pool.
"""

from __future__ import annotations

import struct
from typing import Final

RDB_VERSION: Final = 10  # Redis 7.0's
_TYPE_STRING: Final = 0
# Redis's type bytes for what AegisKV cannot hold, named in the refusal.
_TYPE_NAMES: Final = {
    1: "list",
    2: "set",
    3: "sorted set",
    4: "hash",
    5: "sorted set",
    6: "module",
    7: "module",
    9: "hash",
    10: "list",
    11: "set",
    12: "sorted set",
    13: "hash",
    14: "list",
    15: "stream",
    16: "hash",
    17: "sorted set",
    18: "list",
    19: "stream",
}
_ENC_INT8: Final = 0
_ENC_INT16: Final = 1
_ENC_INT32: Final = 2
_ENC_LZF: Final = 3


class BadPayload(ValueError):
    """The payload is not one this node can restore; the message is Redis's reply text."""


def _crc64_table() -> list[int]:
    polynomial = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9, bit-reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE: Final = _crc64_table()


def crc64(data: bytes) -> int:
    """Redis's CRC-64 (crc64("123456789") == 0xE9C6D914C4B8D9CA)."""
    crc = 0
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _length(value: int) -> bytes:
    if value < 1 << 6:
        return bytes((value,))
    if value < 1 << 14:
        return bytes((0x40 | (value >> 8), value & 0xFF))
    if value <= 0xFFFFFFFF:
        return b"\x80" + struct.pack(">I", value)
    return b"\x81" + struct.pack(">Q", value)


def _as_small_integer(value: bytes) -> bytes | None:
    """The integer encoding Redis picks for a string of up to 11 bytes that is a canonical 32-bit integer."""
    if len(value) > 11 or not value:
        return None
    digits = value[1:] if value[:1] == b"-" else value
    if not digits.isdigit() or not digits.isascii():
        return None
    number = int(value)
    if b"%d" % number != value:
        return None  # "007", "-0": not how the number prints
    if -(2**7) <= number < 2**7:
        return bytes((0xC0 | _ENC_INT8,)) + struct.pack("<b", number)
    if -(2**15) <= number < 2**15:
        return bytes((0xC0 | _ENC_INT16,)) + struct.pack("<h", number)
    if -(2**31) <= number < 2**31:
        return bytes((0xC0 | _ENC_INT32,)) + struct.pack("<i", number)
    return None


def encode(value: bytes) -> bytes:
    """The DUMP payload of a string value."""
    encoded = _as_small_integer(value)
    body = bytes((_TYPE_STRING,)) + (encoded if encoded is not None else _length(len(value)) + value)
    body += struct.pack("<H", RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


def check(payload: bytes) -> None:
    """Redis's verifyDumpPayload: raises BadPayload unless the version and the CRC are right."""
    if len(payload) < 10:
        raise BadPayload("DUMP payload version or checksum are wrong")
    version = payload[-10] | payload[-9] << 8
    if version > RDB_VERSION or struct.unpack("<Q", payload[-8:])[0] != crc64(payload[:-8]):
        raise BadPayload("DUMP payload version or checksum are wrong")


def decode(payload: bytes) -> bytes:
    """The string a checked payload holds; raises BadPayload for another type or bad data."""
    body = payload[:-10]
    if not body:
        raise BadPayload("Bad data format")
    kind = body[0]
    if kind != _TYPE_STRING:
        name = _TYPE_NAMES.get(kind)
        if name is None:
            raise BadPayload("Bad data format")
        raise BadPayload(f"the DUMP payload holds a {name}; AegisKV stores strings only")
    return _read_string(body, 1)


def _read_length(body: bytes, position: int) -> tuple[int, bool, int]:
    """(length or special encoding, whether it is a special encoding, the next position)."""
    if position >= len(body):
        raise BadPayload("Bad data format")
    first = body[position]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, False, position + 1
    if kind == 1:
        if position + 2 > len(body):
            raise BadPayload("Bad data format")
        return (first & 0x3F) << 8 | body[position + 1], False, position + 2
    if kind == 3:
        return first & 0x3F, True, position + 1
    if first == 0x80 and position + 5 <= len(body):
        return struct.unpack_from(">I", body, position + 1)[0], False, position + 5
    if first == 0x81 and position + 9 <= len(body):
        return struct.unpack_from(">Q", body, position + 1)[0], False, position + 9
    raise BadPayload("Bad data format")


def _read_string(body: bytes, position: int) -> bytes:
    length, special, position = _read_length(body, position)
    if not special:
        if position + length > len(body):
            raise BadPayload("Bad data format")
        return body[position : position + length]
    if length in (_ENC_INT8, _ENC_INT16, _ENC_INT32):
        layout = ("<b", "<h", "<i")[length]
        if position + struct.calcsize(layout) > len(body):
            raise BadPayload("Bad data format")
        return b"%d" % struct.unpack_from(layout, body, position)[0]
    if length == _ENC_LZF:
        compressed_length, special_c, position = _read_length(body, position)
        plain_length, special_p, position = _read_length(body, position)
        if special_c or special_p or position + compressed_length > len(body):
            raise BadPayload("Bad data format")
        return lzf_decompress(body[position : position + compressed_length], plain_length)
    raise BadPayload("Bad data format")


def lzf_decompress(data: bytes, plain_length: int) -> bytes:
    """LZF (liblzf's format, as Redis's lzf_d.c): literal runs and back references."""
    out = bytearray()
    position = 0
    end = len(data)
    while position < end:
        control = data[position]
        position += 1
        if control < 32:  # a run of control + 1 literal bytes
            run = control + 1
            if position + run > end:
                raise BadPayload("Bad data format")
            out += data[position : position + run]
            position += run
            continue
        length = control >> 5
        if length == 7:
            if position >= end:
                raise BadPayload("Bad data format")
            length += data[position]
            position += 1
        if position >= end:
            raise BadPayload("Bad data format")
        back = len(out) - ((control & 0x1F) << 8) - 1 - data[position]
        position += 1
        if back < 0:
            raise BadPayload("Bad data format")
        for index in range(length + 2):  # may overlap what it writes: byte by byte
            out.append(out[back + index])
        if len(out) > plain_length:
            raise BadPayload("Bad data format")
    if len(out) != plain_length:
        raise BadPayload("Bad data format")
    return bytes(out)
