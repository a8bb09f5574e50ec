"""The snapshot file format: lz4 blocks with checksums, an index, written atomically.

All integers big-endian. A file is::

    header (48 bytes)
        8   magic b"AEGISNAP"
        4   format version (2)
        8   sequence number of the last write-ahead log record the snapshot covers
        8   wall-clock ms when the snapshot was taken
        8   number of entries
        8   largest version handed out when it was taken (versions keep growing after a load)
        4   CRC32C of the 44 bytes above
    blocks, one after another; each:
        4   compressed length
        4   raw length
        4   entries in the block
        4   CRC32C of the 12 bytes above, then of the compressed bytes (a
            damaged length must not send the loader allocating or reading
            beyond the block)
        ... lz4 block (lz4.block, size not stored) of the raw bytes:
            every key length (u32 each), every blob length (u32 each), every
            expiry in ms (u64 each, 0 = none), then every key back to back,
            then every blob (8-byte version + value) back to back
    index: per block, its file offset (u64) and entry count (u32)
    footer (24 bytes)
        8   file offset of the index
        4   number of blocks
        4   CRC32C of the index
        8   magic b"SNAPEND!"

Columns rather than rows: loading unpacks each column with one ``struct``
call and finds offsets with ``itertools.accumulate`` (both C speed), so the
only per-entry Python work left is slicing keys and blobs.
A writer creates ``<name>.tmp``, fsyncs it, renames it into place and fsyncs
the directory, so a crash leaves either the old snapshot or the new one; a
write that fails (a full disk, EIO, a read-only file system) deletes the
temporary file and leaves the old snapshot as it was.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from itertools import accumulate, pairwise
from typing import NamedTuple

import crcmod.predefined
import lz4.block

from aegiskv.backends.file_ops import REAL_FILES, FileOps, fsync_directory, pwrite_all, write_all

_crc32c = crcmod.predefined.mkCrcFun("crc-32c")

MAGIC = b"AEGISNAP"
END_MAGIC = b"SNAPEND!"
FORMAT_VERSION = 2
_HEADER_BODY = struct.Struct("!8sIQQQQ")
_HEADER = struct.Struct("!8sIQQQQI")
_BLOCK_HEADER = struct.Struct("!IIII")
_BLOCK_FIELDS = struct.Struct("!III")  # what the block checksum covers ahead of the data
# lz4 cannot expand data more than about 255 times; a raw length beyond that is damage.
_LZ4_MAX_RATIO = 256
_INDEX_ENTRY = struct.Struct("!QI")
_FOOTER = struct.Struct("!QII8s")
BLOCK_RAW_BYTES = 1 << 20  # aim for about 1 MiB of raw entries per block


class SnapshotError(Exception):
    """The snapshot is damaged or not a snapshot; the message names file and place."""


class SnapshotInfo(NamedTuple):
    covered_seq: int
    created_ms: int
    entries: int
    max_version: int


def write(
    path: str,
    entries: Iterable[tuple[bytes, bytes | memoryview, int]],
    covered_seq: int,
    created_ms: int,
    max_version: int,
    files: FileOps = REAL_FILES,
) -> SnapshotInfo:
    """Write ``(key, blob, expires_at_ms)`` entries to ``path`` atomically; returns what was written.

    Raises OSError when the file cannot be written, fsynced or renamed into
    place (the temporary file is then gone and any older snapshot untouched),
    or when the directory cannot be fsynced after the rename (the new file is
    in place but may not survive a power loss: the caller must keep what it
    covers).
    """
    temporary = path + ".tmp"
    count = 0
    index: list[tuple[int, int]] = []
    fd = files.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    out = _Output(files, fd)
    try:
        try:
            out.write(b"\0" * _HEADER.size)  # filled in at the end
            keys: list[bytes] = []
            blobs: list[bytes | memoryview] = []
            deadlines: list[int] = []
            raw_size = 0
            for key, blob, expires_at in entries:
                keys.append(key)
                blobs.append(blob)
                deadlines.append(expires_at)
                raw_size += 16 + len(key) + len(blob)
                count += 1
                if raw_size >= BLOCK_RAW_BYTES:
                    index.append((out.offset, len(keys)))
                    _write_block(out, keys, blobs, deadlines)
                    keys, blobs, deadlines, raw_size = [], [], [], 0
            if keys:
                index.append((out.offset, len(keys)))
                _write_block(out, keys, blobs, deadlines)
            index_offset = out.offset
            index_bytes = b"".join(_INDEX_ENTRY.pack(offset, entries_in) for offset, entries_in in index)
            out.write(index_bytes)
            out.write(_FOOTER.pack(index_offset, len(index), _crc32c(index_bytes), END_MAGIC))
            header_body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, covered_seq, created_ms, count, max_version)
            pwrite_all(files, fd, header_body + struct.pack("!I", _crc32c(header_body)), 0)
            files.fsync(fd)
        finally:
            files.close(fd)  # once, whatever happened: a descriptor is never closed twice
        files.replace(temporary, path)
    except BaseException:
        try:
            files.unlink(temporary)
        except OSError:
            pass  # gone already, or the file system refuses: start-up deletes leftovers
        raise
    fsync_directory(files, os.path.dirname(os.path.abspath(path)))
    return SnapshotInfo(covered_seq, created_ms, count, max_version)


class _Output:
    """Appends to a descriptor through FileOps, knowing its offset (what a file object's tell() gave)."""

    def __init__(self, files: FileOps, fd: int) -> None:
        self._files = files
        self._fd = fd
        self.offset = 0

    def write(self, data: bytes) -> None:
        write_all(self._files, self._fd, data)
        self.offset += len(data)


def _write_block(out: _Output, keys: list[bytes], blobs: list[bytes | memoryview], deadlines: list[int]) -> None:
    count = len(keys)
    raw = b"".join(
        (
            struct.pack(f"!{count}I", *map(len, keys)),
            struct.pack(f"!{count}I", *map(len, blobs)),
            struct.pack(f"!{count}Q", *deadlines),
            *keys,
            *blobs,
        )
    )
    compressed = lz4.block.compress(raw, store_size=False)
    fields = _BLOCK_FIELDS.pack(len(compressed), len(raw), count)
    out.write(fields + struct.pack("!I", _crc32c(compressed, _crc32c(fields))))
    out.write(compressed)


def read_info(path: str) -> SnapshotInfo:
    """Header fields of ``path`` (checked); raises SnapshotError."""
    with open(path, "rb") as handle:
        header = handle.read(_HEADER.size)
    return _parse_header(path, header)


def _parse_header(path: str, header: bytes | memoryview) -> SnapshotInfo:
    if len(header) < _HEADER.size:
        raise SnapshotError(f"snapshot {path}: shorter than its header")
    magic, version, covered_seq, created_ms, entries, max_version, crc = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise SnapshotError(f"snapshot {path}: not a snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"snapshot {path}: format version {version}, this build reads {FORMAT_VERSION}")
    if _crc32c(bytes(header[: _HEADER_BODY.size])) != crc:
        raise SnapshotError(f"snapshot {path}: header checksum mismatch")
    return SnapshotInfo(covered_seq, created_ms, entries, max_version)


def read(path: str) -> tuple[SnapshotInfo, Iterator[Block]]:
    """Open ``path`` (mmap) and check its structure; returns the info and an iterator of blocks.

    Each block comes as columns (keys, blobs, expiry times, lengths). Every
    block's checksum is verified before it is decompressed; any damage raises
    :class:`SnapshotError` naming the file and offset. The whole file is
    checked (footer, index, every block) before the first block is returned,
    so a caller never loads half a damaged snapshot.
    """
    handle = open(path, "rb")  # noqa: SIM115 - closed when the iterator finishes
    try:
        size = os.fstat(handle.fileno()).st_size
        if size < _HEADER.size + _FOOTER.size:
            raise SnapshotError(f"snapshot {path}: {size} bytes, too short")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        handle.close()
        raise
    view = memoryview(mapped)
    # Slices of ``view`` are copied out (bytes) or temporary: a live slice
    # would keep the mmap exported, and closing it on an error would then
    # raise BufferError instead of the SnapshotError that names the damage.
    try:
        info = _parse_header(path, bytes(view[: _HEADER.size]))
        index_offset, block_count, index_crc, end_magic = _FOOTER.unpack_from(view, size - _FOOTER.size)
        if end_magic != END_MAGIC:
            raise SnapshotError(f"snapshot {path}: missing end marker (incomplete file)")
        index_end = index_offset + block_count * _INDEX_ENTRY.size
        if index_offset < _HEADER.size or index_end != size - _FOOTER.size:
            raise SnapshotError(f"snapshot {path}: index offset {index_offset} does not fit the file")
        index_bytes = bytes(view[index_offset:index_end])
        if _crc32c(index_bytes) != index_crc:
            raise SnapshotError(f"snapshot {path}: index checksum mismatch at offset {index_offset}")
        blocks = [_INDEX_ENTRY.unpack_from(index_bytes, i * _INDEX_ENTRY.size) for i in range(block_count)]
        total = 0
        for offset, entries_in in blocks:
            _check_block(path, view, offset, index_offset, entries_in)
            total += entries_in
        if total != info.entries:
            raise SnapshotError(f"snapshot {path}: index counts {total} entries, header {info.entries}")
    except BaseException:
        view.release()
        mapped.close()
        handle.close()
        raise

    def iterate() -> Iterator[Block]:
        try:
            for offset, _entries_in in blocks:
                yield _decode_block(path, view, offset)
        finally:
            view.release()
            mapped.close()
            handle.close()

    return info, iterate()


def _check_block(path: str, view: memoryview, offset: int, limit: int, indexed_entries: int) -> None:
    if offset < _HEADER.size or offset + _BLOCK_HEADER.size > limit:
        raise SnapshotError(f"snapshot {path}: block header at offset {offset} is outside the blocks")
    compressed_length, raw_length, entries, crc = _BLOCK_HEADER.unpack_from(view, offset)
    start = offset + _BLOCK_HEADER.size
    if start + compressed_length > limit:
        raise SnapshotError(f"snapshot {path}: block at offset {offset} runs past the blocks")
    fields_crc = _crc32c(view[offset : offset + _BLOCK_FIELDS.size])
    if _crc32c(view[start : start + compressed_length], fields_crc) != crc:
        raise SnapshotError(f"snapshot {path}: block checksum mismatch at offset {offset}")
    if entries != indexed_entries:
        raise SnapshotError(
            f"snapshot {path}: block at offset {offset} holds {entries} entries, the index says {indexed_entries}"
        )
    if raw_length > compressed_length * _LZ4_MAX_RATIO + 64:
        raise SnapshotError(f"snapshot {path}: block at offset {offset}: impossible raw length {raw_length}")


class Block(NamedTuple):
    """One block's entries as columns."""

    keys: list[bytes]
    blobs: list[bytes]
    deadlines: tuple[int, ...]
    key_lengths: tuple[int, ...]
    blob_lengths: tuple[int, ...]


def _decode_block(path: str, view: memoryview, offset: int) -> Block:
    compressed_length, raw_length, entries, _crc = _BLOCK_HEADER.unpack_from(view, offset)
    start = offset + _BLOCK_HEADER.size
    try:
        raw = lz4.block.decompress(view[start : start + compressed_length], uncompressed_size=raw_length)
    except (lz4.block.LZ4BlockError, ValueError, OverflowError, MemoryError) as error:
        raise SnapshotError(f"snapshot {path}: block at offset {offset} does not decompress: {error}") from None
    columns = 16 * entries
    if columns > len(raw):
        raise SnapshotError(f"snapshot {path}: block at offset {offset}: length columns larger than the block")
    key_lengths = struct.unpack_from(f"!{entries}I", raw, 0)
    blob_lengths = struct.unpack_from(f"!{entries}I", raw, 4 * entries)
    deadlines = struct.unpack_from(f"!{entries}Q", raw, 8 * entries)
    key_offsets = list(accumulate(key_lengths, initial=columns))
    blob_offsets = list(accumulate(blob_lengths, initial=key_offsets[-1]))
    if blob_offsets[-1] != len(raw):
        raise SnapshotError(f"snapshot {path}: block at offset {offset}: entries do not fill the block")
    keys = [raw[a:b] for a, b in pairwise(key_offsets)]
    blobs = [raw[a:b] for a, b in pairwise(blob_offsets)]
    return Block(keys, blobs, deadlines, key_lengths, blob_lengths)
