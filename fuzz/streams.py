"""Shared by the fuzz targets: cutting a byte stream into the reads a socket might deliver."""

from __future__ import annotations


def chunks(stream: bytes, sizes: list[int]) -> list[bytes]:
    """Cut ``stream`` into pieces of the given sizes, cycling; no sizes means one piece."""
    if not sizes:
        return [stream]
    pieces = []
    position = 0
    index = 0
    while position < len(stream):
        size = sizes[index % len(sizes)]
        pieces.append(stream[position : position + size])
        position += size
        index += 1
    return pieces
