"""The node's data directory: created on start, locked by one daemon at a time.

Two daemons writing the same directory would corrupt each other's files (the
write-ahead log and snapshots live here once durability is on), so the
directory holds a ``LOCK`` file under an exclusive ``flock`` for the life of
the process, and records the node id it belongs to: starting a different node
id on the same directory is refused, because its data would be taken for
another node's.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO


class DataDirError(Exception):
    """The directory cannot be used; the message is one line for the operator."""


class DataDir:
    LOCK_NAME = "LOCK"
    NODE_ID_NAME = "node_id"

    def __init__(self, path: str, lock_file: IO[str]) -> None:
        self.path = path
        self._lock_file = lock_file

    @classmethod
    def open(cls, path: str, node_id: str) -> DataDir:
        path = os.path.abspath(path)
        try:
            os.makedirs(path, exist_ok=True)
            lock_file = open(os.path.join(path, cls.LOCK_NAME), "a+")  # noqa: SIM115 - held for the process's life
        except OSError as error:
            raise DataDirError(f"data dir {path}: cannot create or open: {error.strerror or error}") from None
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise DataDirError(f"data dir {path}: in use by another aegis process (pid {holder})") from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        data_dir = cls(path, lock_file)
        try:
            data_dir._claim(node_id)
        except DataDirError:
            data_dir.close()
            raise
        return data_dir

    def _claim(self, node_id: str) -> None:
        id_path = os.path.join(self.path, self.NODE_ID_NAME)
        try:
            with open(id_path) as handle:
                recorded = handle.read().strip()
        except FileNotFoundError:
            recorded = ""
        except OSError as error:
            raise DataDirError(f"data dir {self.path}: cannot read {id_path}: {error.strerror}") from None
        if recorded and recorded != node_id:
            raise DataDirError(
                f"data dir {self.path} belongs to node {recorded!r}, not {node_id!r}: "
                "use that --node-id or another --data-dir"
            )
        if not recorded:
            temporary = id_path + ".tmp"
            with open(temporary, "w") as handle:
                handle.write(node_id + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, id_path)

    # Where the durable backends keep their files (aegiskv.backends.wal, aegiskv.backends.snapshot).
    DURABLE_DIRECTORIES = ("wal", "snapshots")

    def durable_files(self) -> list[str]:
        """The durable backends' directories here that hold files, e.g. ``["wal", "snapshots"]``.

        A node started with ``--wal off`` reads none of them: the daemon warns rather than
        start empty without a word while an earlier run's data sits beside it.
        """
        found = []
        for name in self.DURABLE_DIRECTORIES:
            try:
                if any(entry.is_file() for entry in os.scandir(os.path.join(self.path, name))):
                    found.append(name)
            except OSError:  # absent or unreadable: nothing this node would have ignored
                continue
        return found

    def close(self) -> None:
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        finally:
            self._lock_file.close()
