"""Benchmark: AegisKV's RESP port against redis-server, measured by redis-benchmark.

Not a test. In one run it starts redis-server (``--save '' --appendonly no``)
and AegisKV nodes (RESP parser: hiredis, and pure Python) on loopback, then
runs ``redis-benchmark -t <op> -d 100 -r 100000`` against each, interleaved,
for every load shape:

    -c 50 -P 1   -n 200000
    -c 50 -P 16  -n 1000000
    -c 1  -P 1   -n 50000

Each (shape, op, server) is repeated ``--runs`` times (default 3); the table
shows the median requests/s, p50/p99/p99.9 latency (from redis-benchmark's
percentile distribution), server CPU microseconds per request (utime+stime
from /proc/<pid>/stat around the run), and the ratio to redis-server measured
in the same run. Then it loads 1,000,000 keys of 100 bytes into each server
(``redis-cli --pipe``) and compares bytes per key.

Writes bench/results/resp_vs_redis.json and .txt.

    python bench/resp_vs_redis.py [--runs 3] [--quick] [--keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegiskv.localnode import LocalNode

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [
    ("c50_P1", ["-c", "50", "-P", "1"], 200_000),
    ("c50_P16", ["-c", "50", "-P", "16"], 1_000_000),
    ("c1_P1", ["-c", "1", "-P", "1"], 50_000),
]
OPS = ("set", "get")
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
    """Pin every thread of ``pid`` to one CPU.

    On two cores the scheduler otherwise sometimes puts the load generator and
    the server on the same core and sometimes not, which swings single-client
    throughput by 30%. The server gets CPU 1, redis-benchmark CPU 0, for every
    server alike.
    """
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
    stop: object  # callable


def start_redis(workdir: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip()
            == "PONG"
        ):
            break
        time.sleep(0.05)

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        process.wait(10)

    if PIN:
        pin(process.pid, SERVER_CPU)
    return Server("redis", port, process.pid, stop)


def start_aegis(workdir: str, parser: str) -> Server:
    env = {**os.environ, "AEGIS_RESP_PARSER": parser}
    node = LocalNode(
        tempfile.mkdtemp(prefix=f"aegis-{parser}-", dir=workdir),
        ["--log-level", "warn", "--max-memory", "4096"],
        health_addr=None,
        env=env,
    )
    assert node.resp_address is not None
    if PIN:
        pin(node.pid, SERVER_CPU)
    return Server(f"aegis-{parser}", node.resp_address[1], node.pid, node.stop)


_THROUGHPUT = re.compile(r"throughput summary:\s+([\d.]+) requests per second")
_PERCENTILE = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds", re.MULTILINE)


def percentile_from(output: str, wanted: float) -> float:
    """The latency at the first distribution line whose percentile is >= ``wanted``."""
    for percent, latency in _PERCENTILE.findall(output):
        if float(percent) >= wanted:
            return float(latency)
    return float("nan")


def run_benchmark(server: Server, op: str, shape: list[str], requests: int) -> dict[str, float]:
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
        "100000",
        "-n",
        str(requests),
        "--precision",
        "3",
        *shape,
    ]
    before = cpu_seconds(server.pid)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    after = cpu_seconds(server.pid)
    output = result.stdout
    match = _THROUGHPUT.search(output)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"redis-benchmark failed against {server.name}:\n{output[-2000:]}\n{result.stderr}")
    return {
        "rps": float(match.group(1)),
        "p50_ms": percentile_from(output, 50.0),
        "p99_ms": percentile_from(output, 99.0),
        "p999_ms": percentile_from(output, 99.9),
        "cpu_us_per_request": (after - before) / requests * 1e6,
    }


def mass_insert(port: int, keys: int, path: str) -> None:
    value = b"x" * 100
    with open(path, "wb") as out:
        for index in range(keys):
            key = b"key:%012d" % index
            out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$100\r\n%b\r\n" % (len(key), key, value))
    with open(path, "rb") as data:
        result = subprocess.run(
            ["redis-cli", "-p", str(port), "--pipe"], stdin=data, capture_output=True, text=True, timeout=900
        )
    if "errors: 0" not in result.stdout:
        raise RuntimeError(f"mass insert failed: {result.stdout[-500:]} {result.stderr[-500:]}")


def info_field(port: int, section: str, field: str) -> int:
    output = subprocess.run(["redis-cli", "-p", str(port), "info", section], capture_output=True, text=True).stdout
    for line in output.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"no {field} in INFO {section}")


def memory_comparison(workdir: str, keys: int) -> dict[str, dict[str, float]]:
    """Bytes per key on fresh servers (a server that served the benchmarks keeps its freed memory)."""
    result = {}
    data_path = os.path.join(workdir, "mass.resp")
    for name, start in (("redis", lambda: start_redis(workdir)), ("aegis", lambda: start_aegis(workdir, "hiredis"))):
        server = start()
        try:
            used_before = info_field(server.port, "memory", "used_memory")
            rss_before = rss_bytes(server.pid)
            mass_insert(server.port, keys, data_path)
            used_after = info_field(server.port, "memory", "used_memory")
            rss_after = rss_bytes(server.pid)
        finally:
            server.stop()  # type: ignore[operator]
        result[name] = {
            "keys": keys,
            "used_memory_bytes_per_key": (used_after - used_before) / keys,
            "rss_bytes_per_key": (rss_after - rss_before) / keys,
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="1 run, requests / 10, 100k keys (smoke check)")
    parser.add_argument("--no-python-parser", action="store_true", help="skip the pure-Python parser node")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    args = parser.parse_args()
    global PIN
    PIN = PIN and not args.no_pin
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install redis-server redis-tools", file=sys.stderr)
            return 2
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    keys = 100_000 if args.quick else args.keys
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory() as workdir:
        servers = {"redis": start_redis(workdir), "aegis-hiredis": start_aegis(workdir, "hiredis")}
        if not args.no_python_parser:
            servers["aegis-python"] = start_aegis(workdir, "python")
        try:
            raw: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
            for shape_name, shape, requests in SHAPES:
                for op in OPS:
                    for _ in range(runs):
                        for name, server in servers.items():  # interleaved: drift hits every server alike
                            figures = run_benchmark(server, op, shape, requests // scale)
                            raw.setdefault(shape_name, {}).setdefault(op, {}).setdefault(name, []).append(figures)
                            print(f"{shape_name} {op} {name}: {figures['rps']:.0f} req/s", flush=True)
        finally:
            for server in servers.values():
                server.stop()  # type: ignore[operator]
        memory = memory_comparison(workdir, keys)

    medians: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for shape_name, by_op in raw.items():
        for op, by_server in by_op.items():
            for name, runs_list in by_server.items():
                medians.setdefault(shape_name, {}).setdefault(op, {})[name] = {
                    key: statistics.median(run[key] for run in runs_list) for key in runs_list[0]
                }

    lines = [
        f"AegisKV RESP port vs {version}; redis-benchmark -d 100 -r 100000; median of {runs} interleaved runs"
        + ("; servers pinned to CPU 1, redis-benchmark to CPU 0" if PIN else ""),
        f"{'shape':<9}{'op':<5}{'server':<15}{'req/s':>10}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'cpu us/req':>11}{'cpu ratio':>10}",
    ]
    for shape_name, by_op in medians.items():
        for op, by_server in by_op.items():
            reference = by_server["redis"]
            for name, figures in by_server.items():
                ratio = figures["rps"] / reference["rps"]
                cpu_ratio = figures["cpu_us_per_request"] / reference["cpu_us_per_request"]
                figures["ratio_to_redis"] = ratio
                figures["cpu_ratio_to_redis"] = cpu_ratio
                lines.append(
                    f"{shape_name:<9}{op:<5}{name:<15}{figures['rps']:>10.0f}{ratio:>7.2f}{figures['p50_ms']:>9.3f}"
                    f"{figures['p99_ms']:>9.3f}{figures['p999_ms']:>10.3f}{figures['cpu_us_per_request']:>11.2f}"
                    f"{cpu_ratio:>10.2f}"
                )
    reference_memory = memory["redis"]
    lines.append(f"memory, {keys} keys of 100 B (bytes per key):")
    for name, figures in memory.items():
        figures["rss_ratio_to_redis"] = figures["rss_bytes_per_key"] / reference_memory["rss_bytes_per_key"]
        lines.append(
            f"  {name:<15} used_memory {figures['used_memory_bytes_per_key']:>7.0f}"
            f"   RSS {figures['rss_bytes_per_key']:>7.0f}"
            f"   RSS ratio to redis {figures['rss_ratio_to_redis']:.2f}"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "redis": version},
        "runs": runs,
        "quick": args.quick,
        "medians": medians,
        "raw": raw,
        "memory": memory,
    }
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"resp_vs_redis{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"resp_vs_redis{suffix}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
