"""LCS: the longest common subsequence of two strings, and its matching ranges, as Redis 7.0.

The same dynamic programming table Redis builds (LCS[i][j] is the length for
the first i bytes of one string and the first j of the other), walked back
from the end the same way, so the string, the length and the IDX ranges are
Redis's, ties included. Pure Python does roughly ten million cells a second,
so the caller bounds the table (aegiskv.node.operations) and the command
runs in the worker pool.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple


class Match(NamedTuple):
    """One matching range: inclusive byte positions in each string."""

    first: tuple[int, int]
    second: tuple[int, int]

    @property
    def length(self) -> int:
        return self.first[1] - self.first[0] + 1


def _table(first: bytes, second: bytes) -> list[array[int]]:
    rows = [array("I", bytes(4 * (len(second) + 1)))]
    for i in range(1, len(first) + 1):
        above = rows[-1]
        row = array("I", bytes(4 * (len(second) + 1)))
        byte = first[i - 1]
        for j in range(1, len(second) + 1):
            if byte == second[j - 1]:
                row[j] = above[j - 1] + 1
            else:
                left, up = row[j - 1], above[j]
                row[j] = up if up > left else left
        rows.append(row)
    return rows


def longest_common_subsequence(first: bytes, second: bytes, min_match: int = 0) -> tuple[bytes, list[Match], int]:
    """(the subsequence, the matching ranges from the end backwards of at least ``min_match`` bytes, its length)."""
    table = _table(first, second)
    length = table[len(first)][len(second)]
    result = bytearray(length)
    matches: list[Match] = []
    index = length
    i, j = len(first), len(second)
    unset = len(first)  # Redis's marker for "no range open"
    a_end = b_start = b_end = 0
    a_start = unset
    while i > 0 and j > 0:
        emit = False
        if first[i - 1] == second[j - 1]:
            result[index - 1] = first[i - 1]
            if a_start == unset:
                a_start = a_end = i - 1
                b_start = b_end = j - 1
            elif a_start == i and b_start == j:
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            index -= 1
            i -= 1
            j -= 1
        else:
            if table[i - 1][j] > table[i][j - 1]:
                i -= 1
            else:
                j -= 1
            if a_start != unset:
                emit = True
        if emit:
            match = Match((a_start, a_end), (b_start, b_end))
            if min_match == 0 or match.length >= min_match:
                matches.append(match)
            a_start = unset
    return bytes(result), matches, length
