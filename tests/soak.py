"""The soak of issue 28 (item 7): one node under mixed load while faults come and go, and a checker.

``python -m tests.soak [MINUTES]`` (``tox -e soak -- MINUTES``; 30 by default) runs one real
``aegis`` process (``--wal write``, an auth token, max-memory 64 MB) on a data dir of its own: a
small tmpfs bind-mounted onto itself, so that it can be filled and remounted read-only. Needs
root. Meanwhile:

* load: writers SET keys of their own (each value names its key and a sequence number), read
  them back, APPEND and MGET; a probe PINGs every 20 ms on its own connection; idle
  connections (authenticated or not, RESP and native) only listen;
* nemeses, one at a time in turn: the disk full (a file fills the tmpfs, then is deleted), the
  data dir remounted read-only (then writable), kill -9 and a restart, a huge multibulk (an
  MGET of 300,000 arguments in one send), huge appends (200 pipelined 64 KiB APPENDs to a
  value of 8 MiB and more), pre-auth floods on every TCP port (connections that send part of
  a 100 MB bulk and stop).

The checker, when the time is up: 0 acknowledged writes lost (every key reads back at least the
sequence number last acknowledged, after a final kill -9 and restart), 0 bytes of anyone's data
on another connection (a value names its key; idle connections receive nothing), 0 crashes
(the process only ever exits by the soak's kill -9), RSS <= max-memory + client budget +
pre-auth budget + idle RSS at every sample, and the probe's p99 <= 10 ms outside the kill
windows. ``tests/test_soak.py`` runs it for 45 s in the slow group.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from aegiskv.testing.localnode import LocalNode

MIB = 1 << 20
TOKEN = "soak-token"
MAX_MEMORY_MB = 64
CLIENT_BUDGET = 32 * MIB  # --max-client-memory
PRE_AUTH_BUDGET = 16 * MIB  # max_unauthenticated_memory's default
TMPFS_BYTES = 192 * MIB
WRITERS = 3
KEYS_PER_WRITER = 500
PROBE_INTERVAL = 0.02
P99_LIMIT_MS = 10.0
REFERENCE_FACTOR = 3.0  # see Soak.reference_probe
NEMESIS_GAP = 3.0  # seconds of plain load between two faults
KILL_GRACE = 1.0  # seconds after a restart still counted in the kill window (clients reconnect)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def must(*command: str) -> None:
    result = run(*command)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")


@contextmanager
def data_mount(root: Path) -> Iterator[Path]:
    """A TMPFS_BYTES tmpfs at root/disk with the data dir in it (the read-only nemesis bind-mounts it)."""
    disk = root / "disk"
    disk.mkdir()
    must("mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(disk))
    data = disk / "data"
    data.mkdir()
    try:
        yield data
    finally:
        run("umount", "-l", str(data))  # a read-only bind mount a failed nemesis left (else a no-op)
        if run("umount", str(disk)).returncode:
            run("umount", "-l", str(disk))


PROBE_SCRIPT = """
import socket, sys, time
host, port, token, interval = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
sock = socket.create_connection((host, port), timeout=5)
sock.sendall(b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n" % (len(token), token))
assert sock.recv(64) == b"+OK\\r\\n"
print("ready", flush=True)
while True:
    started = time.monotonic()
    sock.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
    reply = b""
    while not reply.endswith(b"\\r\\n"):
        chunk = sock.recv(64)
        if not chunk:
            sys.exit(0)
        reply += chunk
    print(started, time.monotonic() - started, flush=True)
    time.sleep(interval)
"""


@dataclass
class Findings:
    """What the checker counts; ``ok`` when every target holds."""

    acknowledged: int = 0  # writes acknowledged
    refused: int = 0  # writes answered with an error (MISCONF, OOM) or cut off
    refused_reads: int = 0  # reads answered with the storage error (they saw an undone change)
    lost: list[str] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)  # someone else's bytes where they do not belong
    crashes: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)  # the soak's own threads that died
    rss_samples: list[int] = field(default_factory=list)
    rss_bound: int = 0
    probe_ms: list[float] = field(default_factory=list)  # outside the kill windows
    probe_failures: int = 0  # outside the kill windows
    reference_ms: list[float] = field(default_factory=list)  # the same probe against redis-server
    probe_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    longest_turn_ms: dict[str, float] = field(default_factory=dict)  # the node's own, per phase
    nemeses: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    notes: list[str] = field(default_factory=list)

    def p99(self) -> float:
        return percentile(self.probe_ms, 0.99)

    def p99_limit(self) -> float:
        """P99_LIMIT_MS, or on a machine so busy that Redis itself misses it, REFERENCE_FACTOR times Redis's."""
        return max(P99_LIMIT_MS, REFERENCE_FACTOR * percentile(self.reference_ms, 0.99))

    def ok(self) -> bool:
        return (
            not self.lost
            and not self.crossed
            and not self.crashes
            and not self.harness_errors
            and max(self.rss_samples, default=0) <= self.rss_bound
            and self.p99() <= self.p99_limit()
            and self.probe_failures == 0
            and self.acknowledged > 0
        )

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok(),
            "acknowledged_writes": self.acknowledged,
            "refused_writes": self.refused,
            "refused_reads": self.refused_reads,
            "lost": len(self.lost),
            "lost_examples": self.lost[:5],
            "crossed": len(self.crossed),
            "crossed_examples": self.crossed[:5],
            "crashes": self.crashes,
            "harness_errors": self.harness_errors,
            "rss_max_mb": round(max(self.rss_samples, default=0) / MIB, 1),
            "rss_bound_mb": round(self.rss_bound / MIB, 1),
            "probe_samples": len(self.probe_ms),
            "probe_p50_ms": round(percentile(self.probe_ms, 0.5), 2),
            "probe_p99_ms": round(self.p99(), 2),
            "probe_max_ms": round(max(self.probe_ms, default=0.0), 2),
            "probe_p99_limit_ms": round(self.p99_limit(), 2),
            "reference_redis_p50_ms": round(percentile(self.reference_ms, 0.5), 2),
            "reference_redis_p99_ms": round(percentile(self.reference_ms, 0.99), 2),
            "reference_redis_max_ms": round(max(self.reference_ms, default=0.0), 2),
            "probe_failures_outside_kills": self.probe_failures,
            "probe_by_phase_ms": self.probe_phases,
            "server_longest_turn_ms": self.longest_turn_ms,
            "nemeses": self.nemeses,
            "kills": self.kills,
            "notes": self.notes[:20],
        }


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Soak:
    """The node, its load, its nemeses and the books the checker reads."""

    def __init__(self, root: Path, data: Path, seconds: float, seed: int) -> None:
        self.root = root
        self.data = data
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.findings = Findings()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.up = threading.Event()  # set while the node serves (cleared around a kill)
        self.in_kill_window = False
        self.kill_windows: list[tuple[float, float]] = []  # (kill, restarted + KILL_GRACE), monotonic
        self.samples: list[tuple[float, float]] = []  # the probe's (sent at, ms)
        self.phases: list[tuple[str, float, float]] = []  # (nemesis, started, ended + 0.5 s)
        self.reference_samples: list[float] = []  # the same probe's ms against redis-server
        self.expected_exit = False
        self.node: LocalNode | None = None
        # key -> sequence number last acknowledged / last sent (a write cut off may have landed)
        self.acked: dict[bytes, int] = {}
        self.sent: dict[bytes, int] = {}
        self.append_acked = 0  # length the big value had after its last acknowledged APPEND
        self.logs: list[str] = []

    # -- the node ------------------------------------------------------------------------------

    def start_node(self) -> LocalNode:
        node = LocalNode(
            str(self.data),
            [
                "--wal", "write",
                "--auth-token", TOKEN,
                "--max-memory", str(MAX_MEMORY_MB),
                "--max-client-memory", str(CLIENT_BUDGET),
            ],
            # Snapshots drop the log they cover: without them the log would fill the tmpfs.
            env={**os.environ, "AEGIS_SNAPSHOT_INTERVAL": "15", "AEGIS_WAL_SEGMENT_BYTES": str(4 * MIB)},
            start_timeout=60.0,
        )  # fmt: skip
        self.expected_exit = False
        self.node = node
        self.up.set()
        return node

    def client(self, timeout: float = 10.0) -> redis.Redis:
        node = self.node
        assert node is not None and node.resp_address is not None
        return redis.Redis(*node.resp_address, password=TOKEN, socket_timeout=timeout, socket_connect_timeout=5)

    def kill_and_restart(self) -> None:
        node = self.node
        assert node is not None
        with self.lock:
            self.in_kill_window = True
            self.up.clear()
            self.expected_exit = True
            killed = time.monotonic()
        self.logs.append(node.log_text())
        node.kill()
        self.findings.kills += 1
        self.start_node()
        with self.lock:
            self.kill_windows.append((killed, time.monotonic() + KILL_GRACE))
            self.in_kill_window = False

    def outside_kill_window(self, moment: float) -> bool:
        with self.lock:
            return not self.in_kill_window and all(not start <= moment <= end for start, end in self.kill_windows)

    # -- load ----------------------------------------------------------------------------------

    def writer(self, index: int) -> None:
        rng = random.Random(index)
        client: redis.Redis | None = None
        sequence = 0
        while not self.stop.is_set():
            if not self.up.wait(1.0):
                continue
            if client is None:
                client = self.client()
            key_index = rng.randrange(KEYS_PER_WRITER)
            key = b"w%d:%d" % (index, key_index)
            try:
                choice = rng.random()
                if choice < 0.6:
                    sequence += 1
                    value = b"%s=%d;" % (key, sequence) + b"p" * rng.randrange(16, 400)
                    with self.lock:
                        self.sent[key] = sequence
                    try:
                        client.set(key, value)
                    except redis.ResponseError:
                        self.findings.refused += 1
                        continue
                    with self.lock:
                        self.acked[key] = max(self.acked.get(key, 0), sequence)
                        self.findings.acknowledged += 1
                elif choice < 0.9:
                    found = client.get(key)
                    self.check_value(key, found, "GET")
                else:
                    keys = [b"w%d:%d" % (index, rng.randrange(KEYS_PER_WRITER)) for _ in range(50)]
                    for asked, found in zip(keys, client.mget(keys)):
                        self.check_value(asked, found, "MGET")
            except redis.ResponseError as error:
                # A read that saw a change the failing log then undid gets the storage error.
                if not str(error).startswith("MISCONF"):
                    self.findings.notes.append(f"unexpected error reply: {error}")
                with self.lock:
                    self.findings.refused_reads += 1
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                client = None  # a kill, or a flood that closed us: reconnect
                with self.lock:
                    self.findings.refused += 1
                time.sleep(0.05)
            time.sleep(0.002)

    def check_value(self, key: bytes, found: object, how: str) -> None:
        if found is None:
            with self.lock:
                if self.acked.get(key):
                    self.findings.lost.append(f"{how} {key!r}: missing, acknowledged {self.acked[key]}")
            return
        if not isinstance(found, bytes):
            self.findings.crossed.append(f"{how} {key!r} answered with {found!r:.60}")
            return
        name, _, rest = found.partition(b"=")
        if name != key:
            self.findings.crossed.append(f"{how} {key!r} answered with a value of {name[:40]!r}")
            return
        sequence = int(rest.split(b";", 1)[0])
        with self.lock:
            if sequence < self.acked.get(key, 0):
                self.findings.lost.append(f"{how} {key!r}: read {sequence}, acknowledged {self.acked[key]}")

    def probe(self) -> None:
        """PINGs from a process of its own (this one's GIL would add the writers' time), timed there."""
        while not self.stop.is_set():
            if not self.up.wait(1.0):
                continue
            node = self.node
            assert node is not None and node.resp_address is not None
            host, port = node.resp_address
            command = [sys.executable, "-c", PROBE_SCRIPT, host, str(port), TOKEN, str(PROBE_INTERVAL)]
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as child:
                assert child.stdout is not None
                for line in child.stdout:
                    if line.startswith("ready"):
                        continue
                    started, elapsed = (float(part) for part in line.split())
                    self.samples.append((started, elapsed * 1000))
                    if self.stop.is_set():
                        break
                child.kill()
            ended = time.monotonic()
            if not self.stop.is_set() and self.outside_kill_window(ended) and node is self.node:
                self.findings.probe_failures += 1
                self.findings.notes.append("the probe's connection ended outside a kill")

    def reference_probe(self) -> None:
        """The same probe against a redis-server beside the node: what this machine's load alone
        does to a PING (the p99 target is met when within P99_LIMIT_MS, or within
        REFERENCE_FACTOR times what Redis gets at the same time, on a machine busy with others)."""
        probe_socket = socket.socket()
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
        probe_socket.close()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", TOKEN],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            command = [sys.executable, "-c", PROBE_SCRIPT, "127.0.0.1", str(port), TOKEN, str(PROBE_INTERVAL)]
            while not self.stop.is_set():
                with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as child:
                    assert child.stdout is not None
                    for line in child.stdout:
                        if line.startswith("ready"):
                            continue
                        self.reference_samples.append(float(line.split()[1]) * 1000)
                        if self.stop.is_set():
                            break
                    child.kill()
                self.stop.wait(0.1)  # not up yet
        finally:
            server.kill()
            server.wait()

    def listeners(self) -> None:
        """Idle connections on the RESP and native ports: they must never receive a byte."""
        while not self.stop.is_set():
            if not self.up.wait(1.0):
                continue
            node = self.node
            assert node is not None
            sockets: list[tuple[str, socket.socket]] = []
            try:
                for name in ("resp", "native"):
                    address = node.addresses.get(name)
                    if address is None:
                        continue
                    for _ in range(2):
                        sockets.append((name, socket.create_connection(address, timeout=5)))
                authenticated = socket.create_connection(node.addresses["resp"], timeout=5)
                authenticated.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(TOKEN), TOKEN.encode()))
                if authenticated.recv(64) != b"+OK\r\n":
                    self.findings.notes.append("AUTH on a listening connection failed")
                sockets.append(("resp-authenticated", authenticated))
            except OSError:
                for _name, sock in sockets:
                    sock.close()
                time.sleep(0.2)
                continue
            for _name, sock in sockets:
                sock.setblocking(False)
            while not self.stop.is_set() and self.up.is_set() and self.node is node:
                for name, sock in sockets:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        self.findings.crossed.append(f"idle {name} connection received {data[:60]!r}")
                self.stop.wait(0.5)
            for _name, sock in sockets:
                sock.close()

    def monitor(self) -> None:
        """RSS samples and crashes: the process only exits by the soak's own kill -9."""
        while not self.stop.is_set():
            node = self.node
            if node is not None:
                code = node.process.poll()
                with self.lock:
                    expected = self.expected_exit
                if code is not None and not expected and node is self.node:
                    self.findings.crashes.append(f"exit {code}: {node.log_text()[-2000:]}")
                    self.logs.append(node.log_text())
                    self.start_node()
                elif code is None:
                    rss = rss_of(node.pid)
                    if rss:
                        self.findings.rss_samples.append(rss)
            self.stop.wait(0.5)

    # -- nemeses -------------------------------------------------------------------------------

    def disk_full(self) -> None:
        filler = self.data.parent / "filler"
        with open(filler, "wb") as out:
            try:
                while True:
                    out.write(b"\0" * MIB)
            except OSError:
                pass  # full
        self.stop.wait(3.0)
        filler.unlink()
        self.wait_writable("the disk had room again")

    def read_only(self) -> None:
        # A bind mount of the data dir onto itself, made read-only: the log's open segment is on
        # the mount below (so the remount is allowed), every file opened from now on is read-only.
        must("mount", "--bind", str(self.data), str(self.data))
        try:
            must("mount", "-o", "remount,bind,ro", str(self.data))
            with self.client() as admin:
                try:
                    admin.bgsave()  # a rotation and a snapshot that must fail cleanly
                except redis.ResponseError:
                    pass
            self.stop.wait(3.0)
        finally:
            if run("umount", str(self.data)).returncode:
                must("umount", "-l", str(self.data))
        self.wait_writable("the data dir was writable again")

    def wait_writable(self, what: str) -> None:
        deadline = time.monotonic() + 10.0
        with self.client() as admin:
            while time.monotonic() < deadline:
                try:
                    admin.set(b"soak:writable", b"1")
                    return
                except redis.ResponseError:
                    time.sleep(0.05)
        self.findings.notes.append(f"writes still refused 10 s after {what}")

    def huge_multibulk(self) -> None:
        node = self.node
        assert node is not None and node.resp_address is not None
        count = 300_000
        request = b"*%d\r\n$4\r\nMGET\r\n" % (count + 1) + b"$1\r\nk\r\n" * count
        with socket.create_connection(node.resp_address, timeout=60) as sock:
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(TOKEN), TOKEN.encode()))
            sock.recv(64)
            sock.sendall(request)
            first = sock.recv(1 << 20)
            if first.startswith(b"-"):
                self.findings.notes.append(f"huge multibulk refused: {first[:80]!r}")
                return
            received = first
            lines = first.count(b"\r\n")
            while first and lines < count + 1:  # "*300000" then "$-1" per key (none exists)
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                lines += (received[-1:] + chunk).count(b"\r\n")  # a CRLF may straddle two reads
                received = chunk

    def huge_appends(self) -> None:
        with self.client(timeout=60) as client:
            try:
                length = client.strlen(b"soak:big")
                if length > 24 * MIB or length < 8 * MIB:
                    client.set(b"soak:big", b"=" * (8 * MIB))
                    self.append_acked = 8 * MIB
                pipe = client.pipeline(transaction=False)
                for _ in range(200):
                    pipe.append(b"soak:big", b"a" * (64 * 1024))
                results = pipe.execute(raise_on_error=False)
                lengths = [result for result in results if isinstance(result, int)]
                if lengths:
                    self.append_acked = max(lengths)
            except redis.ResponseError as error:
                self.findings.notes.append(f"huge appends refused: {error}")

    def pre_auth_flood(self) -> None:
        node = self.node
        assert node is not None
        sockets: list[socket.socket] = []
        for address in node.addresses.values():
            for _ in range(20):
                try:
                    sock = socket.create_connection(address, timeout=2)
                    sock.setblocking(False)
                    sock.send(b"*1\r\n$100000000\r\n" + os.urandom(256 * 1024))
                    sockets.append(sock)
                except OSError:
                    continue  # refused or closed already: the node defends itself
        self.findings.notes.append(f"pre-auth flood: {len(sockets)} connections on {len(node.addresses)} ports")
        self.stop.wait(3.0)
        for sock in sockets:
            sock.close()

    def nemeses(self) -> None:
        faults: list[tuple[str, Callable[[], None]]] = [
            ("disk_full", self.disk_full),
            ("read_only", self.read_only),
            ("kill9", self.kill_and_restart),
            ("huge_multibulk", self.huge_multibulk),
            ("huge_appends", self.huge_appends),
            ("pre_auth_flood", self.pre_auth_flood),
        ]
        turn = 0
        while not self.stop.wait(NEMESIS_GAP):
            name, fault = faults[turn % len(faults)]
            turn += 1
            self.server_turns("load")
            started = time.monotonic()
            try:
                fault()
            except (redis.RedisError, OSError, RuntimeError) as error:
                self.findings.notes.append(f"{name}: {error!r}")
            self.phases.append((name, started, time.monotonic() + 0.5))
            self.findings.nemeses[name] = self.findings.nemeses.get(name, 0) + 1
            self.server_turns(name)

    def server_turns(self, phase: str) -> None:
        """The node's longest reactor turn since the last reading (INFO stats), kept per phase."""
        try:
            with self.client() as admin:
                longest = int(admin.info("stats")["aegis_longest_turn_usec"])
                admin.execute_command("CONFIG", "RESETSTAT")
        except (redis.RedisError, OSError, KeyError):
            return
        turns = self.findings.longest_turn_ms
        turns[phase] = max(turns.get(phase, 0.0), longest / 1000)

    def probe_by_phase(self) -> dict[str, dict[str, float]]:
        """The probe's p99 and worst (ms) during each kind of nemesis, and under load alone."""
        grouped: dict[str, list[float]] = {}
        for started, ms in self.samples:
            if not self.outside_kill_window(started):
                continue
            phase = next((name for name, begin, end in self.phases if begin <= started <= end), "load")
            grouped.setdefault(phase, []).append(ms)
        result = {}
        for phase, values in sorted(grouped.items()):
            values.sort()
            result[phase] = {"p99": round(values[int(len(values) * 0.99)], 2), "max": round(values[-1], 2)}
        return result

    # -- the run -------------------------------------------------------------------------------

    def idle_rss(self) -> int:
        node = self.node
        assert node is not None
        with self.client() as client:
            client.ping()
        time.sleep(1.0)
        return rss_of(node.pid)

    def read_back(self) -> None:
        """After a last kill -9 and restart: every acknowledged write is there."""
        self.kill_and_restart()
        with self.client(timeout=30) as client:
            keys = sorted(self.acked)
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for key, found in zip(chunk, client.mget(chunk)):
                    self.check_value(key, found, "read-back")
            if self.append_acked:
                length = client.strlen(b"soak:big")
                if length < self.append_acked:
                    self.findings.lost.append(f"soak:big has {length} bytes, {self.append_acked} acknowledged")

    def guarded(self, target: Callable[..., None], *args: object) -> threading.Thread:
        """A thread whose unexpected exception is a finding (a soak thread that died would
        silently take its load, or its checks, away)."""

        def body() -> None:
            try:
                target(*args)
            except BaseException as error:
                self.findings.harness_errors.append(f"soak thread {target.__name__} died: {error!r}")
                raise

        return threading.Thread(target=body, name=target.__name__, daemon=True)

    def run(self) -> Findings:
        try:
            self.start_node()
            self.findings.rss_bound = MAX_MEMORY_MB * MIB + CLIENT_BUDGET + PRE_AUTH_BUDGET + self.idle_rss()
            threads = [self.guarded(self.writer, index) for index in range(WRITERS)]
            for target in (self.probe, self.reference_probe, self.listeners, self.monitor):
                threads.append(self.guarded(target))
            nemesis = self.guarded(self.nemeses)
            for thread in [*threads, nemesis]:
                thread.start()
            self.stop.wait(self.seconds)
            self.stop.set()
            nemesis.join(120)
            for thread in threads:
                thread.join(30)
            self.findings.probe_ms = [ms for started, ms in self.samples if self.outside_kill_window(started)]
            self.findings.probe_phases = self.probe_by_phase()
            self.findings.reference_ms = self.reference_samples
            self.read_back()
            return self.findings
        finally:
            self.stop.set()
            node = self.node
            if node is not None:
                self.logs.append(node.log_text())
                node.kill()


def soak(seconds: float, seed: int = 1, workdir: Path | None = None) -> Findings:
    """Run the soak for ``seconds`` (root: it mounts a tmpfs); the findings say whether it held."""
    if os.geteuid() != 0:
        raise PermissionError("the soak mounts a tmpfs and remounts it read-only: run it as root")
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        root = Path(scratch)
        with data_mount(root) as data:
            return Soak(root, data, seconds, seed).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", nargs="?", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    started = time.monotonic()
    findings = soak(options.minutes * 60, options.seed)
    summary = findings.summary()
    summary["minutes"] = round((time.monotonic() - started) / 60, 1)
    print(json.dumps(summary, indent=2))
    return 0 if findings.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
