"""The file-system calls the write-ahead log and the snapshots make, in one replaceable object.

The log and the snapshot writer never call ``os`` directly for what they
write: they call a :class:`FileOps`. The default one is the operating system;
tests pass a subclass that fails a chosen call (ENOSPC, EIO, EROFS, a short
write) to check that every call site copes. Reads at start-up (listing,
mmap) stay plain ``os`` calls: a failure there stops start-up with its message.

Each method is a thin wrapper called once per group write or sync, never per
record, so the seam costs one Python call on paths that make a system call
anyway. The wrappers look ``os`` up at call time, so a test that patches
``os.fsync`` still reaches them.
"""

from __future__ import annotations

import errno
import os

# What write() accepts: a record batch, or a memoryview of what is left of it.
Data = bytes | memoryview


class FileOps:
    """The real file system. Subclass and override a method to inject a fault."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: Data) -> int:
        """One ``write()``: may write less than asked (a short write), like the system call."""
        return os.write(fd, data)

    def pwrite(self, fd: int, data: Data, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, source: str, destination: str) -> None:
        os.replace(source, destination)

    def unlink(self, path: str) -> None:
        os.unlink(path)


REAL_FILES = FileOps()


def describe_error(error: OSError) -> str:
    """``No space left on device (ENOSPC)``: the text, and the name operators search for."""
    code = errno.errorcode.get(error.errno or 0)
    text = error.strerror or str(error)
    return f"{text} ({code})" if code else text


def write_all(files: FileOps, fd: int, data: Data) -> None:
    """Write every byte of ``data``, looping over short writes; raises OSError as the first failure.

    A short write followed by an error leaves the bytes before it in the
    file: callers that append must know where their good data ends.
    """
    view = memoryview(data)
    while view:
        written = files.write(fd, view)
        if written <= 0:  # a regular file never does this; a buggy or injected one must not spin
            raise OSError(errno.EIO, f"write() wrote {written} bytes")
        view = view[written:]


def pwrite_all(files: FileOps, fd: int, data: Data, offset: int) -> None:
    """Write every byte of ``data`` at ``offset``, looping over short writes; raises OSError."""
    view = memoryview(data)
    while view:
        written = files.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, f"pwrite() wrote {written} bytes")
        view = view[written:]
        offset += written


def fsync_directory(files: FileOps, directory: str) -> None:
    """Make a created, renamed or removed file's directory entry durable."""
    fd = files.open(directory, os.O_RDONLY)
    try:
        files.fsync(fd)
    finally:
        files.close(fd)
