"""Storage faults injected at the file-system calls of the log and the snapshots (tests/storage_faults.py).

What must hold whatever fails (aegiskv.backends.wal_log, aegiskv.server.durability):

* no descriptor is used after it was closed, and no log byte reaches any other
  file (the books FaultyFiles keeps, and pipes opened where a freed
  descriptor number would be reused);
* a change whose record did not reach the OS is undone in memory, so memory,
  and a reopen of the files, show the state before it;
* a failed fsync is never retried on the same descriptor, and the records it
  covered are written again to a fresh segment;
* recovery reads a segment only up to where the next one starts;
* a failed snapshot leaves the previous snapshot and the log as they were;
* a served node refuses writes on both ports with the storage error, keeps
  serving reads, says so in INFO, /health and /metrics, and accepts writes
  again by itself once the file system lets it.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from aegiskv.backends import wal_format
from aegiskv.backends.base import Backend, StorageUnavailable
from aegiskv.backends.snapshot import SnapshotBackend, list_snapshots
from aegiskv.backends.wal_format import RecordType
from aegiskv.backends.wal_log import WalCorruption, list_segments, recover, segment_name
from aegiskv.client import Client, Config, StorageFailedError
from tests.backend_state import State, state_of
from tests.storage_faults import Fault, FaultyFiles, Sentinels, in_process_node, open_backend

DEADLINE = 10.0  # seconds to wait for a condition that should come within a few retry intervals


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def serve(backend: SnapshotBackend) -> None:
    """What the server does after requests ran: write the log out, undo what it gave up."""
    log = backend.log
    assert log is not None
    log.write_out()
    backend.undo_unlogged()


def reopened(data_dir: Path, wal: str) -> State:
    backend = open_backend(data_dir, wal)
    try:
        return state_of(backend)
    finally:
        backend.close()


@pytest.fixture
def files() -> FaultyFiles:
    return FaultyFiles()


@pytest.fixture
def sentinels():
    opened = Sentinels()
    yield opened
    opened.close()


# -- the log, driven directly --------------------------------------------------------------------


@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC, errno.EIO], ids=errno.errorcode.get)
def test_failed_rotation_keeps_the_current_segment_and_writes_nowhere_else(
    error: int, tmp_path: Path, files: FaultyFiles, sentinels: Sentinels
) -> None:
    backend = open_backend(tmp_path, "write", files, wal_segment_bytes=200)
    log = backend.log
    assert log is not None
    backend.put(b"a", b"1" * 100)
    serve(backend)
    files.fail("open", 1, Fault(error))  # the next segment
    backend.put(b"b", b"2" * 100)
    serve(backend)  # written, then the rotation fails
    assert log.failure is not None and "opening the next write-ahead log segment" in log.failure
    assert len(files.open_descriptors) == 1, "the current segment stays open (and nothing else is)"
    sentinels.open()  # where a descriptor closed by mistake would be reused
    backend.put(b"c", b"3")  # refused by the server; here: given up and undone
    serve(backend)
    assert state_of(backend).keys() == {b"a", b"b"}
    assert sentinels.received() == b""
    assert files.misuse == []
    log.repair()
    assert log.failure is None
    backend.put(b"d", b"4")
    serve(backend)
    assert files.misuse == [] and sentinels.received() == b""
    expected = state_of(backend)
    backend.close()
    assert reopened(tmp_path, "write") == expected
    assert set(expected) == {b"a", b"b", b"d"}


CHANGES: dict[str, Callable[[Backend], object]] = {
    "put-new": lambda backend: backend.put(b"new", b"value"),
    "overwrite": lambda backend: backend.put(b"k1", b"changed", 1_900_000_000_000),
    "delete": lambda backend: backend.delete(b"k2"),
    "expire": lambda backend: backend.set_expiry(b"k1", 1_900_000_000_000),
    "persist": lambda backend: backend.set_expiry(b"ttl", 0),
    "flush": lambda backend: backend.flush(),
    "several": lambda backend: [backend.put(b"k1", b"x"), backend.delete(b"k1"), backend.put(b"k1", b"y")],
}
WRITE_FAULTS = {
    "ENOSPC": [Fault(errno.ENOSPC)],
    "EIO": [Fault(errno.EIO)],
    "EROFS": [Fault(errno.EROFS)],
    "short-then-ENOSPC": [Fault(short=True), Fault(errno.ENOSPC)],
}


# "memory": the change made on the backend's in-memory store, as the node's fast path
# makes it (WalBackend.memory); the log hears of it as a listener and must undo it the same.
@pytest.mark.parametrize("through", ["backend", "memory"])
@pytest.mark.parametrize("fault", list(WRITE_FAULTS))
@pytest.mark.parametrize("change", list(CHANGES))
def test_change_whose_record_cannot_be_written_is_undone(
    change: str, fault: str, through: str, tmp_path: Path, files: FaultyFiles
) -> None:
    backend = open_backend(tmp_path, "write", files)
    backend.put(b"k1", b"v1")
    backend.put(b"k2", b"v2")
    backend.put(b"ttl", b"t", 1_900_000_000_000)
    serve(backend)
    before = state_of(backend)
    for call, planned in enumerate(WRITE_FAULTS[fault], start=1):
        files.fail("write", call, planned)
    CHANGES[change](backend.memory if through == "memory" else backend)
    serve(backend)
    log = backend.log
    assert log is not None and log.failure is not None
    after = state_of(backend)
    if not WRITE_FAULTS[fault][0].short:
        assert after == before
    backend.check()
    backend.close()
    # Memory holds exactly what a restart replays (a short write keeps its whole records).
    assert reopened(tmp_path, "write") == after


def test_short_write_keeps_the_whole_records_and_gives_up_the_rest(tmp_path: Path, files: FaultyFiles) -> None:
    backend = open_backend(tmp_path, "write", files)
    log = backend.log
    assert log is not None
    # Three records in one write; half of it lands, then the disk is full.
    backend.put(b"a", b"x" * 10)
    backend.put(b"b", b"y" * 10)
    backend.put(b"c", b"z" * 200)
    files.fail("write", 1, Fault(short=True))
    files.fail("write", 2, Fault(errno.ENOSPC))
    serve(backend)
    assert log.written_seq == log.appended_seq - 1, "a and b were written whole"
    assert log.given_up == 1 and log.settled_through(log.appended_seq) == log.written_seq
    assert log.undone_since(0, log.appended_seq) and not log.undone_since(0, log.written_seq)
    assert set(state_of(backend)) == {b"a", b"b"}
    log.repair()
    backend.put(b"d", b"w")
    serve(backend)
    expected = state_of(backend)
    backend.close()
    # The abandoned segment ends inside c's record; the fresh one starts after b.
    assert len(list_segments(str(tmp_path / "wal"))) == 2
    assert reopened(tmp_path, "write") == expected


class TrackedFsyncs(FaultyFiles):
    """Also remembers which descriptors were fsynced, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.fsynced: list[int] = []

    def fsync(self, fd: int) -> None:
        self.fsynced.append(fd)
        super().fsync(fd)


def test_failed_fsync_is_never_retried_and_its_records_go_to_a_fresh_segment(tmp_path: Path) -> None:
    files = TrackedFsyncs()
    backend = open_backend(tmp_path, "fsync", files)
    log = backend.log
    assert log is not None
    backend.put(b"durable", b"1")
    serve(backend)
    log.sync()
    first_segment = list_segments(str(tmp_path / "wal"))[-1][1]
    durable_size = os.path.getsize(first_segment)
    backend.put(b"pending", b"2")
    backend.put(b"durable", b"3")
    serve(backend)
    abandoned_fd = log._fd
    files.fail("fsync", 1, Fault(errno.EIO))
    with pytest.raises(OSError):
        log.sync()
    assert log.failure is not None and "syncing" in log.failure
    assert log.durable_seq < log.written_seq
    files.fsynced.clear()
    with pytest.raises(StorageUnavailable):
        log.sync()  # refused: a descriptor is never fsynced again after a failure
    log.repair()
    assert abandoned_fd not in files.fsynced, "the abandoned segment was fsynced again"
    assert log.durable_seq == log.written_seq, "the repair fsynced the records again"
    expected = state_of(backend)
    backend.close()
    # The kernel may have dropped the pages the failed fsync covered: zero them.
    with open(first_segment, "r+b") as segment:
        segment.seek(durable_size)
        tail = len(segment.read())
        segment.seek(durable_size)
        segment.write(b"\0" * tail)
    assert reopened(tmp_path, "fsync") == expected
    assert expected[b"durable"][0] == b"3" and expected[b"pending"][0] == b"2"


# -- recovery of an abandoned segment --------------------------------------------------------------


def write_segment(directory: Path, first: int, records: list[tuple[int, bytes, bytes]], tail: bytes = b"") -> None:
    data = b"".join(wal_format.encode(RecordType.PUT, seq, key, value, seq) for seq, key, value in records)
    (directory / segment_name(first)).write_bytes(data + tail)


def replayed(directory: Path) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    recover(str(directory), lambda record: state.__setitem__(record.key, record.value))
    return state


def test_recovery_reads_a_segment_only_up_to_where_the_next_one_starts(tmp_path: Path) -> None:
    # An abandoned segment holds copies of records 3 and 4 (here with other values, to
    # tell them apart) and half a record; the fresh segment named 3 holds the real ones.
    half = wal_format.encode(RecordType.PUT, 5, b"e", b"lost")[:20]
    write_segment(tmp_path, 1, [(1, b"a", b"1"), (2, b"b", b"2"), (3, b"c", b"old"), (4, b"d", b"old")], half)
    write_segment(tmp_path, 3, [(3, b"c", b"3"), (4, b"d", b"4"), (6, b"f", b"6")])
    assert replayed(tmp_path) == {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4", b"f": b"6"}


def test_damage_before_where_the_next_segment_starts_is_still_corruption(tmp_path: Path) -> None:
    damaged = bytearray(wal_format.encode(RecordType.PUT, 2, b"b", b"2"))
    damaged[-1] ^= 0xFF
    write_segment(tmp_path, 1, [(1, b"a", b"1")], bytes(damaged) + wal_format.encode(RecordType.PUT, 3, b"c", b"3"))
    write_segment(tmp_path, 4, [(4, b"d", b"4")])
    with pytest.raises(WalCorruption):
        replayed(tmp_path)


# -- snapshots --------------------------------------------------------------------------------------

# The calls a snapshot makes, from the temporary file to the directory fsync after the rename.
SNAPSHOT_CALLS = [("open", 1), ("write", 1), ("write", 2), ("pwrite", 1), ("fsync", 1), ("close", 1), ("replace", 1)]
SNAPSHOT_CALLS += [("open", 2), ("fsync", 2)]  # the directory


@pytest.mark.parametrize(("operation", "call"), SNAPSHOT_CALLS, ids=[f"{op}-{n}" for op, n in SNAPSHOT_CALLS])
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=errno.errorcode.get)
def test_failed_snapshot_leaves_the_previous_one_and_the_log(
    operation: str, call: int, error: int, tmp_path: Path, files: FaultyFiles
) -> None:
    backend = open_backend(tmp_path, "write", files, wal_segment_bytes=300)
    for index in range(20):
        backend.put(b"before%d" % index, b"v" * 20)
    serve(backend)
    backend.begin_snapshot()()
    ((_seq, previous),) = list_snapshots(str(tmp_path / "snapshots"))
    previous_bytes = Path(previous).read_bytes()
    for index in range(20):
        backend.put(b"after%d" % index, b"w" * 20)
    serve(backend)
    segments_before = list_segments(str(tmp_path / "wal"))
    job = backend.begin_snapshot()  # rotates: the directory fsync of that is not what is under test
    files.fail(operation, call, Fault(error))
    with pytest.raises(OSError):
        job()
    assert Path(previous).read_bytes() == previous_bytes
    assert not [name for name in os.listdir(tmp_path / "snapshots") if name.endswith(".tmp")]
    assert {path for _first, path in segments_before} <= {path for _first, path in list_segments(str(tmp_path / "wal"))}
    log = backend.log
    assert log is not None and log.failure is None, "a failed snapshot leaves the log alone"
    backend.put(b"later", b"x")
    serve(backend)
    expected = state_of(backend)
    assert files.misuse == []
    backend.close()
    assert reopened(tmp_path, "write") == expected


# -- a served node ----------------------------------------------------------------------------------


def health(address: tuple[str, int] | None, path: str = "/health") -> str:
    assert address is not None
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=5) as response:
        return response.read().decode()


def accepts_writes(client: redis.Redis, key: str) -> bool:
    try:
        return client.set(key, "back") is True
    except redis.ResponseError as error:
        assert str(error).startswith("MISCONF Errors writing to the write-ahead log"), error
        return False


@pytest.mark.parametrize("wal", ["write", "fsync"])
def test_node_refuses_writes_serves_reads_and_recovers(wal: str, tmp_path: Path, files: FaultyFiles) -> None:
    with in_process_node(tmp_path, wal, files) as node:
        resp = redis.Redis(*node.resp_address, socket_timeout=10)
        native = Client(Config(seeds=[f"{node.native_address[0]}:{node.native_address[1]}"], max_retries=0))
        try:
            assert resp.set("kept", "1")
            files.fail_always("write", Fault(errno.ENOSPC))  # a full disk
            with pytest.raises(redis.ResponseError, match=r"^MISCONF Errors writing to the write-ahead log: No space"):
                resp.set("kept", "2")  # its record cannot be written: undone
            assert resp.get("kept") == b"1"
            # Refused before it runs, on both ports, while reads are served.
            with pytest.raises(redis.ResponseError, match="writes are refused until it can be written"):
                resp.set("other", "x")
            with pytest.raises(StorageFailedError) as refused:
                native.set("other", "x")
            assert refused.value.code == "STORAGE_FAILED"
            assert native.get("kept") == b"1"
            with pytest.raises(redis.ResponseError, match=r"^MISCONF cannot snapshot"):
                resp.bgsave()
            persistence = resp.info("persistence")
            assert persistence["aof_last_write_status"] == "err"
            assert persistence["aegis_wal_status"] == "failing"
            assert "No space left on device (ENOSPC)" in persistence["aegis_wal_failure"]
            assert health(node.health_address).startswith("degraded: writes refused: No space left on device")
            assert "aegis_wal_writable 0.0" in health(node.health_address, "/metrics")
            files.heal()
            wait_until(lambda: accepts_writes(resp, "other"), "writes are accepted again")
            assert health(node.health_address) == "ok\n"
            assert resp.info("persistence")["aof_last_write_status"] == "ok"
            native.set("native", "y")
            expected = {b"kept": b"1", b"other": b"back", b"native": b"y"}
        finally:
            native.close()
            resp.close()
    assert files.misuse == []
    assert {key: value for key, (value, _version, _deadline) in reopened(tmp_path, wal).items()} == expected


def test_reply_held_for_a_failed_fsync_leaves_once_the_records_are_written_again(
    tmp_path: Path, files: FaultyFiles
) -> None:
    with in_process_node(tmp_path, "fsync", files) as node:
        resp = redis.Redis(*node.resp_address, socket_timeout=10)
        try:
            assert resp.set("first", "1")
            files.fail("fsync", 1, Fault(errno.EIO))
            assert resp.set("second", "2"), "acknowledged once the repair fsynced it in a fresh segment"
            assert len(files.injected) == 1 and files.injected[0].startswith("fsync#"), files.injected
            assert resp.info("persistence")["aegis_wal_failures"] == 1
        finally:
            resp.close()
    assert files.misuse == []
    assert set(reopened(tmp_path, "fsync")) == {b"first", b"second"}


def pipelined(address: tuple[str, int], *commands: tuple[bytes, ...]) -> list[bytes]:
    """Send ``commands`` in one write on a fresh connection; their replies' first lines, in order."""
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(
            b"".join(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
                for parts in commands
            )
        )
        received = b""
        while received.count(b"\r\n") < len(commands):
            data = connection.recv(65536)
            assert data, "the node closed the connection"
            received += data
    return received.split(b"\r\n")[: len(commands)]


def test_replies_that_saw_an_undone_change_get_the_error(tmp_path: Path, files: FaultyFiles) -> None:
    # Found by the property test: DEL k (its record not written), DEL k again in the same
    # loop turn answered ":0", and after the first was undone k was there after all.
    with in_process_node(tmp_path, "write", files) as node:
        assert pipelined(node.resp_address, (b"SET", b"k", b"v")) == [b"+OK"]
        files.fail("write", 1, Fault(errno.ENOSPC))
        replies = pipelined(node.resp_address, (b"DEL", b"k"), (b"DEL", b"k"), (b"GET", b"k"))
        assert [reply.split(b":")[0] for reply in replies] == [b"-MISCONF Errors writing to the write-ahead log"] * 3
        assert all(b"changes not yet logged were undone" in reply for reply in replies)
        files.heal()
        assert pipelined(node.resp_address, (b"GET", b"k")) == [b"$1"]  # undone: still there
    assert files.misuse == []
    assert {key: value for key, (value, _version, _deadline) in reopened(tmp_path, "write").items()} == {b"k": b"v"}


def test_reads_are_served_while_failed_even_when_they_expire_keys(tmp_path: Path, files: FaultyFiles) -> None:
    # A read that finds a key expired appends a record (the drop); while the log is failed
    # that record is given up, and the read must not wait for it to be written.
    with in_process_node(tmp_path, "write", files) as node:
        resp = redis.Redis(*node.resp_address, socket_timeout=10)
        try:
            assert resp.set("kept", "1")
            assert resp.set("brief", "x", px=1)
            files.fail_always("write", Fault(errno.EIO))
            with pytest.raises(redis.ResponseError):
                resp.set("fails", "y")
            time.sleep(0.01)  # "brief" expires
            assert resp.get("brief") is None
            assert resp.mget("kept", "brief") == [b"1", None]
            assert node.backend.log is not None and node.backend.log.failure is not None
        finally:
            resp.close()
