"""INFO ``hotkeys``: each node's top keys, read and merged into one cluster-wide top-k.

A node reports the section as::

    # Hotkeys
    hotkeys_tracked:<int>
    hotkey_<rank>:freq=<int>,key=<key>

rank 0 is the hottest; the key is the rest of the line, with backslash and every byte that is
not printable ASCII written ``\\xHH``. That escaping is one spelling per key, so keys are merged
by their escaped text, and shown as it (a terminal never receives a raw control byte).
Over the native protocol the same fields arrive as a JSON object (field -> value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_FIELD = re.compile(r"hotkey_(?P<rank>\d+)")
_VALUE = re.compile(r"freq=(?P<freq>\d+),key=(?P<key>.*)", re.DOTALL)


class HotKeysFormatError(ValueError):
    """A node's hotkeys section does not follow the format above."""


@dataclass(frozen=True)
class HotKey:
    rank: int
    freq: int
    key: str  # escaped as the node wrote it


@dataclass
class MergedKey:
    key: str
    freq: int = 0
    nodes: list[str] = field(default_factory=list)


def parse_fields(fields: Mapping[str, Any]) -> tuple[int, list[HotKey]]:
    """``(hotkeys_tracked, keys by rank)`` from the section's fields."""
    tracked = fields.get("hotkeys_tracked", 0)
    if not isinstance(tracked, int) and not (isinstance(tracked, str) and tracked.isdigit()):
        raise HotKeysFormatError(f"hotkeys_tracked is {tracked!r}, not an integer")
    keys = []
    for name, value in fields.items():
        matched = _FIELD.fullmatch(name)
        if matched is None:
            continue
        if isinstance(value, Mapping):  # a node whose INFO parsed "freq=..,key=.." into fields
            freq, key = value.get("freq"), value.get("key")
            if not isinstance(freq, int) or key is None:
                raise HotKeysFormatError(f"{name}: {value!r} is not freq=<int>,key=<key>")
            keys.append(HotKey(int(matched["rank"]), freq, str(key)))
            continue
        parsed = _VALUE.fullmatch(str(value))
        if parsed is None:
            raise HotKeysFormatError(f"{name}: {value!r} is not freq=<int>,key=<key>")
        keys.append(HotKey(int(matched["rank"]), int(parsed["freq"]), parsed["key"]))
    keys.sort(key=lambda hot: hot.rank)
    return int(tracked), keys


def parse_text(text: str) -> dict[str, str]:
    """The fields of the section as RESP's INFO prints it (the key may hold ':' and '=')."""
    fields = {}
    for line in text.splitlines():
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HotKeysFormatError(f"line {line!r} has no ':'")
        fields[name] = value
    return fields


def merge(per_node: Mapping[str, list[HotKey]], top: int) -> list[MergedKey]:
    """The ``top`` keys over every node, by frequency summed over the nodes that report them.

    A key is read from its primary and, with quorum or follower reads, from its followers:
    the sum is how hot it is for the cluster. Ties go to the key's text, so the order is stable.
    """
    merged: dict[str, MergedKey] = {}
    for node, keys in per_node.items():
        for hot in keys:
            entry = merged.setdefault(hot.key, MergedKey(hot.key))
            entry.freq += hot.freq
            entry.nodes.append(node)
    ranked = sorted(merged.values(), key=lambda entry: (-entry.freq, entry.key))
    return ranked[:top]
