"""Real disks failing under real ``aegis`` processes: a full tmpfs, a read-only remount (root only).

Each test mounts what it needs under its own tmp_path (a tmpfs of a few
megabytes, or a bind mount of the data dir onto itself that is then remounted
read-only) and unmounts it at the end, so they run side by side under
``pytest -n auto``. Without root, or where mounting is not allowed (a
container without CAP_SYS_ADMIN), they skip.

What they check is what an operator would see (aegiskv.server.durability):

* full disk, ``--wal write``: the write whose record does not fit is answered
  with the MISCONF error, the next one is refused the same way, reads are
  served, INFO, /health and /metrics say so, the process stays up; a restart
  on the still-full disk comes up the same way; once a file is deleted,
  writes are accepted again within 5 s without anyone touching the node; and
  after a kill -9 and a restart every acknowledged write is there (and the
  refused ones are not);
* read-only remount, then BGSAVE and writes: no byte of anyone's data shows
  up on other connections (idle, unauthenticated ones receive nothing but the
  reply to their own PING), the process stays up, writes are refused until
  the file system is writable again, then accepted; a kill -9 and a restart
  keep every acknowledged write.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from aegiskv.testing.localnode import LocalNode
from tests.conftest import StartNode

pytestmark = pytest.mark.needs_root

TOKEN = "storage-fault-token"
VALUE = b"v" * (100 * 1024)  # the tester's 100 KB SETs
RECOVERY_SECONDS = 5.0  # the promise: writable again within 5 s of the disk having room
DEADLINE = 30.0  # for everything else that should come soon, on a busy machine


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def mount_or_skip(*command: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a file system)")
    result = run(*command)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(command)}): {result.stderr.strip()}")


def unmount(path: Path) -> None:
    if run("umount", str(path)).returncode != 0:
        run("umount", "-l", str(path))  # a process of this test still holds it: detach now


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount at teardown, last mounted first (after the test stopped its nodes)."""
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        unmount(path)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``condition``; returns the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def resp_client(node: LocalNode) -> redis.Redis:
    assert node.resp_address is not None
    return redis.Redis(*node.resp_address, password=TOKEN, socket_timeout=20)


def is_storage_error(error: redis.ResponseError) -> bool:
    return str(error).startswith("MISCONF Errors writing to the write-ahead log: ")


def write_accepted(client: redis.Redis, key: bytes, acknowledged: dict[bytes, bytes]) -> bool:
    try:
        client.set(key, VALUE)
    except redis.ResponseError as error:
        assert is_storage_error(error), error
        return False
    acknowledged[key] = VALUE
    return True


def http(node: LocalNode, path: str) -> str:
    assert node.health_address is not None
    host, port = node.health_address
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
        return response.read().decode()


def assert_refusing_writes(node: LocalNode, client: redis.Redis, readable: bytes, reason: str) -> None:
    """Writes refused with the storage error, reads served, and INFO, /health and /metrics say so."""
    with pytest.raises(redis.ResponseError) as refused:
        client.set(b"refused", b"x")
    assert is_storage_error(refused.value) and "writes are refused" in str(refused.value), refused.value
    assert reason in str(refused.value)
    assert client.get(readable) is not None
    persistence = client.info("persistence")
    assert persistence["aof_last_write_status"] == "err"
    assert reason in persistence["aegis_wal_failure"]
    assert http(node, "/health").startswith("degraded: writes refused: ")
    assert "aegis_wal_writable 0.0" in http(node, "/metrics")
    assert node.process.poll() is None


def assert_all_present(node: LocalNode, acknowledged: dict[bytes, bytes], absent: list[bytes]) -> None:
    client = resp_client(node)
    try:
        lost = [key for key, value in acknowledged.items() if client.get(key) != value]
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost: {lost[:5]}"
        revived = [key for key in absent if client.get(key) is not None]
        assert not revived, f"writes answered with an error came back after the restart: {revived}"
    finally:
        client.close()


def start(start_node: StartNode, data_dir: Path) -> LocalNode:
    return start_node("--wal", "write", "--auth-token", TOKEN, data_dir=str(data_dir))


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself(
    tmp_path: Path, mounts: list[Path], start_node: StartNode
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_or_skip("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk))
    mounts.append(disk)
    data_dir = disk / "node"
    node = start(start_node, data_dir)
    filler = disk / "filler"
    client = resp_client(node)
    acknowledged: dict[bytes, bytes] = {}
    failed: list[bytes] = []
    try:
        # Leave room for about 15 of the 100 KB writes, then write until the disk is full.
        with open(filler, "wb") as handle:
            handle.write(b"\0" * (free_bytes(disk) - 1536 * 1024))
        for index in range(100):
            key = b"key%03d" % index
            if not write_accepted(client, key, acknowledged):
                failed.append(key)
                break
        assert failed, "the disk never filled up"
        assert acknowledged, "no write fitted before the disk filled up"
        readable = next(iter(acknowledged))
        assert client.get(failed[0]) is None, "the write that did not fit was applied anyway"
        assert_refusing_writes(node, client, readable, "No space left on device (ENOSPC)")
        client.close()

        # A restart on the still-full disk comes up refusing writes and serving reads.
        node.kill()
        node = start(start_node, data_dir)
        client = resp_client(node)
        assert_all_present(node, acknowledged, failed)
        wait_until(lambda: not write_accepted(client, b"probe-full", acknowledged), "the full disk refuses writes")
        assert_refusing_writes(node, client, readable, "No space left on device (ENOSPC)")

        filler.unlink()  # room again: nobody touches the node
        wait_until(
            lambda: write_accepted(client, b"after-room", acknowledged),
            "writes accepted again after space returned",
            timeout=RECOVERY_SECONDS,
        )
        assert http(node, "/health") == "ok\n"
        for index in range(5):
            assert write_accepted(client, b"later%d" % index, acknowledged)
        client.close()
        node.kill()
        node = start(start_node, data_dir)
        assert_all_present(node, acknowledged, failed)
    finally:
        client.close()
        node.kill()


def idle_connection(node: LocalNode) -> socket.socket:
    assert node.resp_address is not None
    return socket.create_connection(node.resp_address, timeout=20)


def only_own_reply(connection: socket.socket) -> bytes:
    """Send PING on a connection that sent nothing so far; everything it receives, up to the reply's end."""
    connection.sendall(b"*1\r\n$4\r\nPING\r\n")
    received = b""
    while b"\r\n" not in received:
        data = connection.recv(1 << 20)
        if not data:
            break
        received += data
    return received


def test_read_only_remount_leaks_nothing_and_recovers(
    tmp_path: Path, mounts: list[Path], start_node: StartNode
) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    node = start(start_node, data_dir)
    client = resp_client(node)
    acknowledged: dict[bytes, bytes] = {}
    idle: list[socket.socket] = []
    try:
        for index in range(20):
            assert write_accepted(client, b"before%02d" % index, acknowledged)
        mount_or_skip("mount", "--bind", str(data_dir), str(data_dir))
        mounts.append(data_dir)
        result = run("mount", "-o", "remount,bind,ro", str(data_dir))
        if result.returncode != 0:
            pytest.skip(f"cannot remount read-only: {result.stderr.strip()}")

        with pytest.raises(redis.ResponseError) as refused_snapshot:
            client.bgsave()  # its first step, opening the next log segment, fails
        assert "Read-only file system (EROFS)" in str(refused_snapshot.value)
        # Accepted after the failure: a descriptor the log closed would be theirs now.
        idle = [idle_connection(node) for _ in range(3)]
        refused = []
        for index in range(10):
            if not write_accepted(client, b"during%02d" % index, acknowledged):
                refused.append(b"during%02d" % index)
        for connection in idle:
            assert only_own_reply(connection) == b"-NOAUTH Authentication required.\r\n"
        assert refused == [b"during%02d" % index for index in range(10)], "writes were accepted on a read-only disk"
        assert_refusing_writes(node, client, b"before00", "Read-only file system (EROFS)")

        assert run("mount", "-o", "remount,bind,rw", str(data_dir)).returncode == 0
        wait_until(
            lambda: write_accepted(client, b"after-rw", acknowledged),
            "writes accepted again after the remount read-write",
            timeout=RECOVERY_SECONDS,
        )
        assert client.bgsave()
        wait_until(lambda: client.info("persistence")["rdb_bgsave_in_progress"] == 0, "the snapshot finished")
        assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
        for index in range(5):
            assert write_accepted(client, b"later%d" % index, acknowledged)
        client.close()
        node.kill()
        unmount(data_dir)
        mounts.remove(data_dir)
        node = start(start_node, data_dir)
        assert_all_present(node, acknowledged, refused)
    finally:
        for connection in idle:
            connection.close()
        client.close()
        node.kill()
