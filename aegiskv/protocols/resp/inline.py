"""Inline commands: what a person types into telnet (``SET k "a b"``), split as Redis splits them.

The reader (aegiskv.protocols.resp.reader) finds the line; this module turns it
into arguments the way Redis's sdssplitargs does, quotes and escapes included.
"""

from __future__ import annotations

INLINE_MAX = 64 * 1024  # Redis PROTO_INLINE_MAX_SIZE: the longest line without its newline

_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"
_SPACES = b" \n\r\t\v\f"  # isspace(): skipped between arguments
_TOKEN_END = b" \n\r\t\0"  # what ends an unquoted argument in Redis's sdssplitargs


def split_inline(line: bytes) -> list[bytes] | None:  # noqa: C901 - the inline parser's states, as Redis's
    """Redis's sdssplitargs: spaces separate, quotes group, escapes in double quotes.

    Returns ``None`` for unbalanced quotes (or a closing quote not followed by a space).
    """
    # sdssplitargs walks a C string: a NUL byte ends the line (inside quotes it
    # leaves them unbalanced, which the truncated line reproduces).
    nul = line.find(b"\0")
    if nul != -1:
        line = line[:nul]
    arguments: list[bytes] = []
    index = 0
    size = len(line)
    while True:
        while index < size and line[index] in _SPACES:
            index += 1
        if index >= size:
            return arguments
        current = bytearray()
        in_double = in_single = False
        while True:
            if in_double:
                if index >= size:
                    return None
                char = line[index]
                if (
                    char == 92  # backslash
                    and index + 3 < size
                    and line[index + 1] == ord("x")
                    and line[index + 2] in _HEX
                    and line[index + 3] in _HEX
                ):
                    current.append(int(line[index + 2 : index + 4], 16))
                    index += 3
                elif char == 92 and index + 1 < size:
                    index += 1
                    current += _ESCAPES.get(line[index], bytes([line[index]]))
                elif char == 34:  # closing double quote must be followed by a space or the end
                    if index + 1 < size and line[index + 1] not in _SPACES:
                        return None
                    index += 1
                    break
                else:
                    current.append(char)
            elif in_single:
                if index >= size:
                    return None
                char = line[index]
                if char == 92 and index + 1 < size and line[index + 1] == 39:
                    index += 1
                    current.append(39)
                elif char == 39:
                    if index + 1 < size and line[index + 1] not in _SPACES:
                        return None
                    index += 1
                    break
                else:
                    current.append(char)
            else:
                if index >= size:
                    break
                char = line[index]
                if char in _TOKEN_END:
                    break
                if char == 34:
                    in_double = True
                elif char == 39:
                    in_single = True
                else:
                    current.append(char)
            index += 1
        arguments.append(bytes(current))
