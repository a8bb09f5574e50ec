"""Shared by the benchmarks: start redis-server and AegisKV nodes, run redis-benchmark, read /proc.

Servers are pinned to CPU 1 and the load generator to CPU 0 (when there are
two CPUs and taskset exists): on two cores the scheduler otherwise sometimes
co-locates them and sometimes not, which swings single-client throughput by
30%, and every server gets the same treatment this way.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegiskv.testing.localnode import LocalNode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CPU, LOAD_CPU = 1, 0
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to one CPU."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    pid: int
    stop: Callable[[], None]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    node: LocalNode | None = field(default=None, repr=False)

    def kill(self) -> None:
        """SIGKILL (crash), then wait."""
        target = self.node.process if self.node is not None else self.process
        assert target is not None
        target.kill()
        target.wait()


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def wait_for_redis(port: int, timeout: float = 600.0) -> None:
    """Until redis answers PING with PONG (not -LOADING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_cli(port, "ping") == "PONG":
            return
        time.sleep(0.01)
    raise RuntimeError(f"redis on port {port} did not become ready")


def start_redis(workdir: str, *extra: str, name: str = "redis", port: int | None = None) -> Server:
    port = port or free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            workdir,
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_redis(port)

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        process.wait(60)

    if PIN:
        pin(process.pid, SERVER_CPU)
    return Server(name, port, process.pid, stop, process=process)


def start_aegis(
    data_dir: str,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "aegis",
    interpreted: bool = False,
    python: str = sys.executable,
    cluster_port: bool = True,
    gossip: str | None = "127.0.0.1:0",
) -> Server:
    """A node of the aegiskv installed for ``python`` (this interpreter unless given; compiled, if it was built so).

    ``interpreted``: the sources of this checkout instead, run by the interpreter.
    ``cluster_port=False``: no ``--cluster-bind``, for an aegis older than that flag (bench/baseline.py).
    ``gossip=None``: ``--gossip off``, a lone node (no membership, leases or replication stream).
    """
    environment = {**os.environ, **(env or {})}
    if interpreted:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    node = LocalNode(
        data_dir,
        ["--log-level", "warn", "--max-memory", "4096", *args],
        health_addr=None,
        env=environment,
        start_timeout=600,
        python=python,
        cluster_port=cluster_port,
        gossip=gossip,
    )
    assert node.resp_address is not None
    if PIN:
        pin(node.pid, SERVER_CPU)

    def stop() -> None:
        node.stop(timeout=600)

    return Server(name, node.resp_address[1], node.pid, stop, node=node)


def fresh_dir(workdir: str, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix + "-", dir=workdir)


_THROUGHPUT = re.compile(r"throughput summary:\s+([\d.]+) requests per second")
_PERCENTILE = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds", re.MULTILINE)


def percentile_from(output: str, wanted: float) -> float:
    """The latency at the first distribution line whose percentile is >= ``wanted``."""
    for percent, latency in _PERCENTILE.findall(output):
        if float(percent) >= wanted:
            return float(latency)
    return float("nan")


def run_benchmark(
    server: Server, op: str, shape: Sequence[str], requests: int, keyspace: int = 100_000
) -> dict[str, float]:
    """redis-benchmark against ``server``: req/s, p50/p99/p99.9 ms, server CPU us per request."""
    command = [
        *(["taskset", "-c", str(LOAD_CPU)] if PIN else []),
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-t",
        op,
        "-d",
        "100",
        "-r",
        str(keyspace),
        "-n",
        str(requests),
        "--precision",
        "3",
        *shape,
    ]
    return measure_benchmark(command, [server.pid], requests, f"against {server.name}")


def measure_benchmark(command: list[str], pids: list[int], requests: int, what: str) -> dict[str, float]:
    """Run a redis-benchmark command: req/s, p50/p99/p99.9 and the CPU the ``pids`` spent per request."""
    before = sum(cpu_seconds(pid) for pid in pids)
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    after = sum(cpu_seconds(pid) for pid in pids)
    output = result.stdout
    match = _THROUGHPUT.search(output)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"redis-benchmark failed {what}:\n{output[-2000:]}\n{result.stderr[-2000:]}")
    return {
        "rps": float(match.group(1)),
        "p50_ms": percentile_from(output, 50.0),
        "p99_ms": percentile_from(output, 99.0),
        "p999_ms": percentile_from(output, 99.9),
        "cpu_us_per_request": (after - before) / requests * 1e6,
    }


def mass_insert(port: int, keys: int, path: str, value_size: int = 100, prefix: bytes = b"key") -> None:
    """``keys`` SETs of ``value_size`` bytes through ``redis-cli --pipe``."""
    value = b"x" * value_size
    with open(path, "wb") as out:
        for index in range(keys):
            key = b"%s:%012d" % (prefix, index)
            out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value))
    with open(path, "rb") as data:
        result = subprocess.run(
            ["redis-cli", "-p", str(port), "--pipe"], stdin=data, capture_output=True, text=True, timeout=1800
        )
    if "errors: 0" not in result.stdout:
        raise RuntimeError(f"mass insert failed: {result.stdout[-500:]} {result.stderr[-500:]}")


def info_text(port: int, section: str, name: str) -> str:
    for line in redis_cli(port, "info", section).splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    raise RuntimeError(f"no {name} in INFO {section}")


def info_field(port: int, section: str, name: str) -> int:
    return int(info_text(port, section, name))


def require_redis_tools() -> None:
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install redis-server redis-tools")
