"""Redis-style glob patterns (``SCAN ... MATCH``) matched in O(pattern x text) time.

Syntax as Redis's ``stringmatchlen``: ``*`` any run, ``?`` one byte,
``[abc]``, ``[^abc]``, ``[a-z]`` classes, ``\\x`` a literal ``x``.

The matcher is the classic wildcard algorithm that remembers only the last
``*`` and retries from it: a failed match after a star moves the star's
starting point one byte on, and earlier stars never need revisiting (a later
star can absorb whatever an earlier one would have). So a hostile pattern such
as ``*a*a*a*a*b`` costs pattern x text steps, never exponential time; a regex
translation (``fnmatch``) was the rejected alternative because backtracking
regex engines can go exponential on such patterns.
"""

from __future__ import annotations

from functools import lru_cache

_STAR = -1
_ANY = -2

# A compiled token: an int byte value (literal), _STAR, _ANY, or a class
# (negated, frozenset of byte values).
Token = int | tuple[bool, frozenset[int]]


@lru_cache(maxsize=256)
def compile_pattern(pattern: bytes) -> tuple[Token, ...]:
    tokens: list[Token] = []
    index = 0
    size = len(pattern)
    while index < size:
        char = pattern[index]
        if char == 42:  # *
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
        elif char == 63:  # ?
            tokens.append(_ANY)
        elif char == 92 and index + 1 < size:  # backslash escapes the next byte
            index += 1
            tokens.append(pattern[index])
        elif char == 91:  # [
            index += 1
            negated = index < size and pattern[index] == 94  # ^
            if negated:
                index += 1
            members: set[int] = set()
            while index < size and pattern[index] != 93:  # ]
                if pattern[index] == 92 and index + 1 < size:
                    index += 1
                    members.add(pattern[index])
                elif index + 2 < size and pattern[index + 1] == 45:  # a-z (as Redis: even "a-]")
                    # Redis compares C chars, which are signed: bytes from 0x80 up
                    # sort below 0, so "[a-\xff]" is the range -1..97.
                    low, high = sorted((_signed(pattern[index]), _signed(pattern[index + 2])))
                    members.update(value & 0xFF for value in range(low, high + 1))
                    index += 2
                else:
                    members.add(pattern[index])
                index += 1
            # An unclosed class runs to the end of the pattern, as in Redis.
            tokens.append((negated, frozenset(members)))
        else:
            tokens.append(char)
        index += 1
    return tuple(tokens)


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _matches_one(token: Token, byte: int) -> bool:
    if token == _ANY:
        return True
    if isinstance(token, tuple):
        negated, members = token
        return (byte in members) != negated
    return token == byte


def glob_match(pattern: bytes, text: bytes) -> bool:
    """True when ``text`` matches the Redis glob ``pattern``."""
    if not text:
        # Redis's matcher never enters its loop for an empty string, so only an empty
        # pattern matches it; SCAN and KEYS take a pattern of exactly "*" as "no pattern"
        # and list the empty key anyway, but "**" (or "?*"...) does not match it.
        return pattern in (b"", b"*")
    tokens = compile_pattern(pattern)
    if tokens == (_STAR,):
        return True
    token_index = text_index = 0
    star_token = -1
    star_text = 0
    token_count = len(tokens)
    text_size = len(text)
    while text_index < text_size:
        if token_index < token_count:
            token = tokens[token_index]
            if token == _STAR:
                star_token = token_index
                star_text = text_index
                token_index += 1
                continue
            if _matches_one(token, text[text_index]):
                token_index += 1
                text_index += 1
                continue
        if star_token == -1:
            return False
        # Let the last star swallow one more byte and retry from there.
        star_text += 1
        text_index = star_text
        token_index = star_token + 1
    while token_index < token_count and tokens[token_index] == _STAR:
        token_index += 1
    return token_index == token_count
