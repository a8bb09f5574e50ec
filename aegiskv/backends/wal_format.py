"""The write-ahead log's record format and the scanner that reads it back.

A segment file is a sequence of records, all integers big-endian::

    offset  size  field
    0       4     length of the rest of the record (type .. crc), unsigned
    4       1     record type (RecordType)
    5       8     sequence number (grows by one per record, across segments)
    13      8     version of the key after this record (PUT), else 0
    21      8     absolute expiry, wall-clock ms since the epoch; 0 = none
    29      4     key length
    33      4     header CRC32C of bytes 0..32: the lengths above are
                  checked before they are trusted
    37      ...   key, then the value (the rest, up to the checksum)
    -4      4     CRC32C of every byte from the type to the end of the value

Expiry times are absolute, so replaying the log later never extends or
revives a TTL. A scan reports three kinds of ending:

* the clean end of the data;
* a *torn tail*: the last record runs past the end of the file (a write cut
  short by a crash), or the very last record is damaged (its bytes were only
  partly written: its checksum fails, or its header's does while its length
  still ends exactly at the end of the file) -- recovery truncates it with a
  warning;
* *corruption*: a header or record checksum failure, or an impossible length,
  anywhere before the tail -- recovery refuses to start (naming file and
  offset) unless the operator asked to salvage the prefix. Without the header
  checksum a damaged length would send the scan past the end of the file and
  pass for a torn tail, silently dropping every record after it. A wrong value
  is never served.
"""

from __future__ import annotations

import enum
import mmap
import struct
import warnings
from collections.abc import Iterator
from typing import Final, NamedTuple

import crcmod.predefined

with warnings.catch_warnings():
    # Without its C extension google-crc32c falls back to pure Python and warns on stderr at
    # import; the log then checksums with crcmod instead (below), so the warning says nothing true.
    warnings.simplefilter("ignore", RuntimeWarning)
    import google_crc32c

# What scan() reads: the bytes of a segment, or an mmap of its file.
Buffer = bytes | bytearray | memoryview | mmap.mmap
# A key or value to log: bytes, or a view of a stored value or a bytearray. Declared so, not as
# bytes: compiled (mypyc), a function checks its arguments' declared types when it is called.
Data = bytes | bytearray | memoryview
# CRC-32C (Castagnoli), the checksum records have always carried, computed twice over:
# writing, by google-crc32c's C extension, which uses the CPU's CRC instruction (8 MiB in
# under 1 ms, where crcmod's table walk took 25-30 ms, on the reactor, for every large SET:
# issue 28); reading back at start-up, by crcmod, which also takes the memoryviews of an
# mmap that scan() walks (the C function takes bytes objects only).
_crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def _crcmod_extend(crc: int, data: bytes) -> int:
    return int(_crc32c(data, crc))


if google_crc32c.implementation == "c":
    _fast_crc32c = google_crc32c.value
    _fast_crc32c_extend = google_crc32c.extend
else:  # its pure-Python fallback is far slower than crcmod's C table walk
    _fast_crc32c = _crc32c
    _fast_crc32c_extend = _crcmod_extend

_HEADER = struct.Struct("!IBQQQII")  # length, type, seq, version, expires_at, key_length, header crc
HEADER_SIZE = _HEADER.size  # 37
_CHECKED_HEADER = struct.Struct("!IBQQQI")  # what the header checksum covers
_CHECKED_SIZE = _CHECKED_HEADER.size  # 33
_LENGTH_SIZE = 4
_LENGTH = struct.Struct("!I")
_CRC = struct.Struct("!I")
_CRC_SIZE = 4
# The smallest valid "rest of record": type..header crc plus the record checksum.
_MIN_REST = HEADER_SIZE - _LENGTH_SIZE + _CRC_SIZE
# Nothing AegisKV writes is larger (max key + max value + slack); a length above
# this can only be damage, and must not make recovery allocate gigabytes.
MAX_RECORD = 2**31


class RecordType(enum.IntEnum):
    PUT = 1  # key = value, with version and absolute expiry
    DELETE = 2  # key removed (DEL, expiry, eviction)
    EXPIRE = 3  # key's expiry set to expires_at (0 = persist); value and version unchanged
    FLUSH = 4  # every key removed
    # APPEND or SETRANGE: the value is RANGE_OFFSET's 8-byte offset, then the bytes written there
    # (zero-padding before them), with the new version; the deadline is unchanged. The log holds
    # the bytes written, not the whole value: an APPEND to a 60 MiB value logs the appended bytes.
    RANGE = 5


_TYPES = {int(kind): kind for kind in RecordType}

RANGE_OFFSET: Final = struct.Struct(">Q")


class Record(NamedTuple):
    type: RecordType
    seq: int
    version: int
    expires_at_ms: int
    key: bytes
    value: bytes


def encode_into(
    buffer: bytearray,
    record_type: int,
    seq: int,
    key: Data,
    value: Data = b"",
    version: int = 0,
    expires_at_ms: int = 0,
) -> None:
    """Append one record to ``buffer``: the log's write path, once per change.

    The record is built where it will be written from: a header, its checksum, the key
    and the value are appended in place, then the checksum of what follows the length.
    Building a bytes object per record and joining them at the write cost two more copies
    and five intermediate objects per SET (issue 24).
    """
    header = _CHECKED_HEADER.pack(_MIN_REST + len(key) + len(value), record_type, seq, version, expires_at_ms, len(key))
    header_crc = _CRC.pack(_fast_crc32c(header))
    # The record checksum runs over the pieces in turn (the C function takes bytes only).
    crc = _fast_crc32c(header[_LENGTH_SIZE:] + header_crc)
    crc = _fast_crc32c_extend(crc, key if type(key) is bytes else bytes(key))
    crc = _fast_crc32c_extend(crc, value if type(value) is bytes else bytes(value))
    buffer += header
    buffer += header_crc
    buffer += key
    buffer += value
    buffer += _CRC.pack(crc)


def encode(record_type: int, seq: int, key: Data, value: Data = b"", version: int = 0, expires_at_ms: int = 0) -> bytes:
    """One record as bytes (tests and tools; the log appends with :func:`encode_into`)."""
    record = bytearray()
    encode_into(record, record_type, seq, key, value, version, expires_at_ms)
    return bytes(record)


def record_size(data: Buffer, position: int) -> int:
    """The size of the record that starts at ``position`` of ``data``, from its length field (unchecked)."""
    (rest,) = _LENGTH.unpack_from(data, position)
    return _LENGTH_SIZE + int(rest)


class ScanEnd(enum.Enum):
    CLEAN = "clean"
    TORN = "torn"
    CORRUPT = "corrupt"


class ScanResult(NamedTuple):
    end: ScanEnd
    good_bytes: int  # offset just after the last good record
    problem: str  # what was wrong at good_bytes (empty when CLEAN)


def scan(data: Buffer, records: list[Record]) -> ScanResult:
    """Decode every record of one segment into ``records``; say how the data ended.

    Pure function over the segment's bytes (a ``memoryview`` of an mmap in
    practice), so recovery and the tests read the log the same way.
    """
    view = memoryview(data)
    size = len(view)
    position = 0
    unpack_header = _HEADER.unpack_from
    while position < size:
        if size - position < HEADER_SIZE:
            return ScanResult(ScanEnd.TORN, position, f"{size - position} bytes of a record header at the end")
        rest, record_type, seq, version, expires_at, key_length, header_crc = unpack_header(view, position)
        end = position + _LENGTH_SIZE + rest
        if _crc32c(view[position : position + _CHECKED_SIZE]) != header_crc:
            # The length cannot be trusted. Only when it still ends exactly at
            # the end of the file is this the last record, partly written.
            if end == size:
                return ScanResult(ScanEnd.TORN, position, "header checksum mismatch in the last record")
            return ScanResult(ScanEnd.CORRUPT, position, "header checksum mismatch")
        if rest < _MIN_REST or rest > MAX_RECORD or key_length > rest - _MIN_REST:
            return ScanResult(ScanEnd.CORRUPT, position, f"impossible record length {rest} (key length {key_length})")
        if end > size:
            return ScanResult(ScanEnd.TORN, position, f"record of {rest + _LENGTH_SIZE} bytes cut off at the end")
        body = view[position + _LENGTH_SIZE : end - _CRC_SIZE]
        (stored_crc,) = _CRC.unpack_from(view, end - _CRC_SIZE)
        if _crc32c(body) != stored_crc:
            if end == size:
                return ScanResult(ScanEnd.TORN, position, "checksum mismatch in the last record")
            return ScanResult(ScanEnd.CORRUPT, position, "checksum mismatch")
        kind = _TYPES.get(record_type)  # a dict, not RecordType(): the enum call costs 20 us here
        if kind is None:
            return ScanResult(ScanEnd.CORRUPT, position, f"unknown record type {record_type}")
        key_start = position + HEADER_SIZE
        key_end = key_start + key_length
        records.append(
            Record(
                kind, seq, version, expires_at, bytes(view[key_start:key_end]), bytes(view[key_end : end - _CRC_SIZE])
            )
        )
        position = end
    return ScanResult(ScanEnd.CLEAN, position, "")


def iter_records(data: bytes) -> Iterator[Record]:
    """Every record of a clean segment (tests and tools); raises ValueError at any problem."""
    records: list[Record] = []
    result = scan(data, records)
    if result.end is not ScanEnd.CLEAN:
        raise ValueError(f"{result.end.value} at offset {result.good_bytes}: {result.problem}")
    yield from records
