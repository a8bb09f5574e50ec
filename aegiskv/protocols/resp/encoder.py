"""RESP replies as bytes (RESP2 and RESP3), and requests as clients send them.

Pure functions of their arguments: the command handlers build every reply
with these, so framing is written once.
"""

from __future__ import annotations

from typing import Final

CRLF: Final = b"\r\n"

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
NULL_BULK: Final = b"$-1\r\n"
NULL_ARRAY: Final = b"*-1\r\n"
NULL3: Final = b"_\r\n"
EMPTY_ARRAY: Final = b"*0\r\n"
ZERO: Final = b":0\r\n"
ONE: Final = b":1\r\n"


# "$<n>\r\n" for the common value sizes: a table lookup instead of formatting
# (about 0.2 us of a GET's reply here).
_BULK_HEADERS: Final = [b"$%d\r\n" % length for length in range(4096)]
_BULK_HEADER_LIMIT: Final = len(_BULK_HEADERS)


def bulk(value: bytes | memoryview) -> bytes:
    length = len(value)
    if length < _BULK_HEADER_LIMIT and type(value) is bytes:
        # Two concatenations: compiled, cheaper than building a tuple to join.
        return _BULK_HEADERS[length] + value + CRLF
    return b"".join((b"$%d\r\n" % length, value, CRLF))


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def simple(text: str) -> bytes:
    return b"+%b\r\n" % text.encode()


def error(text: str) -> bytes:
    """``text`` starts with the error code (``ERR ...``, ``WRONGTYPE ...``); CR/LF become spaces.

    Client bytes quoted in a message (an unknown command's name) arrive decoded
    with ``surrogateescape`` and go back out as the same bytes, as Redis echoes them.
    """
    line = text.replace("\r", " ").replace("\n", " ")
    try:
        encoded = line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        encoded = line.encode("utf-8", "replace")
    return b"-%b\r\n" % encoded


def null(protocol: int) -> bytes:
    return NULL3 if protocol == 3 else NULL_BULK


def array(items: list[bytes]) -> bytes:
    """An array of already-encoded replies."""
    return b"*%d\r\n%b" % (len(items), b"".join(items))


def bulk_array(values: list[bytes | memoryview | None], protocol: int = 2) -> bytes:
    nil = null(protocol)
    parts = [b"*%d\r\n" % len(values)]
    parts.extend(nil if value is None else bulk(value) for value in values)
    return b"".join(parts)


def mapping(pairs: list[tuple[bytes, bytes]], protocol: int) -> bytes:
    """A map of already-encoded keys and values: RESP3 ``%``, or a flat RESP2 array."""
    if protocol == 3:
        return b"%%%d\r\n%b" % (len(pairs), b"".join(key + value for key, value in pairs))
    return b"*%d\r\n%b" % (2 * len(pairs), b"".join(key + value for key, value in pairs))


def verbatim(text: bytes, protocol: int) -> bytes:
    """Text meant for people (INFO, CLIENT INFO): RESP3 verbatim string, else bulk."""
    if protocol == 3:
        return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
    return bulk(text)


def encode_command(*arguments: bytes) -> bytes:
    """A request as clients send it (tests and benchmarks)."""
    return b"*%d\r\n" % len(arguments) + b"".join(b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in arguments)
