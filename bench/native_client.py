"""Benchmark: the Python client against a real node over the native protocol.

Not a test. Starts an ``aegis`` node on loopback, then measures:

1. GET and SET at 1, 16 and 64 connections, closed loop (each connection waits
   for its reply before the next request): requests/s and latency
   p50/p99/p99.9. Each connection is a thread with its own pooled connection;
   the threads are spread over several load processes so the client's GIL is
   not the bottleneck being measured.
2. "Steady load": 16 connections paced at half the closed-loop GET rate, the
   latency a service sees when the cache is busy but not saturated.
3. Memory: process RSS per key for 1,000,000 keys of 100-byte values, and RSS
   when writing 2x --max-memory of data, against the idle process.

Each figure is the median of ``--runs`` runs (default 3). Prints a table and
writes ``bench/results/native_client.json`` and ``.txt``.

    python bench/native_client.py [--runs 3] [--duration 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import rss_bytes  # bench/servers.py: this script's directory is on sys.path

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode

RESULTS = Path(__file__).resolve().parent / "results"
VALUE = b"v" * 100
KEYSPACE = 100_000


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


# -- load generation (runs in child processes) ----------------------------------------


def _connection_loop(address: str, op: str, duration: float, interval: float, out: list[float], seed: int) -> None:
    with Client(Config(seeds=[address], max_conns=1, read_timeout=10, write_timeout=10)) as client:
        keys = [f"key:{(seed * 7919 + i) % KEYSPACE:06d}".encode() for i in range(1000)]
        client.set(keys[0], VALUE)
        deadline = time.perf_counter() + duration
        next_send = time.perf_counter()
        index = 0
        perf = time.perf_counter
        while True:
            if interval:
                now = perf()
                if now < next_send:
                    time.sleep(next_send - now)
                next_send += interval
            start = perf()
            if start >= deadline:
                break
            key = keys[index % 1000]
            index += 1
            if op == "set":
                client.set(key, VALUE)
            else:
                try:
                    client.get(key)
                except KeyError:
                    pass
            # With pacing, latency counts from the scheduled send time, so a
            # stalled server cannot hide its delay (no coordinated omission).
            out.append(perf() - (next_send - interval if interval else start))


def _load_process(address: str, op: str, threads: int, duration: float, interval: float, seed: int, queue) -> None:
    results: list[list[float]] = [[] for _ in range(threads)]
    workers = [
        threading.Thread(target=_connection_loop, args=(address, op, duration, interval, results[i], seed * 1000 + i))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put([latency for part in results for latency in part])


def run_load(address: str, op: str, connections: int, duration: float, rate: float = 0.0) -> dict[str, float]:
    processes = min(connections, 4)
    per_process = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    interval = connections / rate if rate else 0.0
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [
        context.Process(target=_load_process, args=(address, op, count, duration, interval, i, queue))
        for i, count in enumerate(per_process)
    ]
    started = time.perf_counter()
    for child in children:
        child.start()
    latencies: list[float] = []
    for _ in children:
        latencies.extend(queue.get())
    for child in children:
        child.join()
    elapsed = max(duration, time.perf_counter() - started - 0.5)  # minus process start-up, roughly
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / duration if duration else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
        "wall_s": elapsed,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# -- memory ---------------------------------------------------------------------------------


def fill(address: str, count: int, value_size: int, prefix: str = "key") -> None:
    value = b"x" * value_size
    with Client(Config(seeds=[address], read_timeout=60, write_timeout=60)) as client:
        batch = 1000
        for start in range(0, count, batch):
            client.mset([(f"{prefix}:{i:012d}".encode(), value) for i in range(start, min(count, start + batch))])


def memory_per_key(workdir: str, keys: int) -> dict[str, float]:
    with LocalNode(os.path.join(workdir, "mem"), ["--max-memory", "4096", "--log-level", "warn"]) as node:
        idle = rss_bytes(node.pid)
        fill(node.address_text, keys, 100)
        with Client(Config(seeds=[node.address_text])) as client:
            info = client.info("memory", "keyspace")
        full = rss_bytes(node.pid)
        node.stop()
    stored = int(info["keyspace"]["db0"]["keys"])
    return {
        "keys": stored,
        "idle_rss_mb": idle / 2**20,
        "rss_mb": full / 2**20,
        "rss_bytes_per_key": (full - idle) / stored,
        "accounted_bytes_per_key": int(info["memory"]["used_memory"]) / stored,
    }


def rss_at_twice_limit(workdir: str, max_memory_mb: int, value_size: int) -> dict[str, float]:
    with LocalNode(
        os.path.join(workdir, f"limit{value_size}"), ["--max-memory", str(max_memory_mb), "--log-level", "warn"]
    ) as node:
        idle = rss_bytes(node.pid)
        volume = 2 * max_memory_mb * 2**20
        fill(node.address_text, volume // (value_size + 16), value_size)
        with Client(Config(seeds=[node.address_text])) as client:
            info = client.info("memory", "stats")
        full = rss_bytes(node.pid)
        node.stop()
    limit = max_memory_mb * 2**20
    return {
        "max_memory_mb": max_memory_mb,
        "value_size": value_size,
        "written_mb": volume / 2**20,
        "idle_rss_mb": idle / 2**20,
        "rss_mb": full / 2**20,
        "used_memory_mb": int(info["memory"]["used_memory"]) / 2**20,
        "evicted_keys": int(info["stats"]["evicted_keys"]),
        "rss_over_limit_plus_idle": (full - idle) / limit,
    }


# -- main -------------------------------------------------------------------------------------


SCRIPT = "native_client.py"
SECTION_TITLE = "Python client, native protocol"
SECTION_STEMS = ["native_client"]
SECTION_INTRO = (
    "The Python client (aegiskv.client) against one local node on the native port: closed-loop GET "
    "and SET at 1, 16 and 64 connections, 16 connections paced below saturation (`steady`), memory "
    "per key, and RSS when filled to twice `--max-memory`. Run: `tox -e bench` or `python "
    "bench/native_client.py`."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys for the memory-per-key figure")
    parser.add_argument("--quick", action="store_true", help="one short run, 100k keys (smoke check)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    if args.quick:
        args.runs, args.duration, args.keys = 1, 1.0, 100_000

    report: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": args.runs,
        "duration_s": args.duration,
    }
    lines = []
    with tempfile.TemporaryDirectory() as workdir:
        with LocalNode(os.path.join(workdir, "node"), ["--log-level", "warn"], health_addr=None) as node:
            fill(node.address_text, KEYSPACE, 100)
            throughput = {}
            for connections in (1, 16, 64):
                for op in ("get", "set"):
                    runs = [run_load(node.address_text, op, connections, args.duration) for _ in range(args.runs)]
                    throughput[f"{op}_c{connections}"] = median_of(runs)
            steady_rate = throughput["get_c16"]["rps"] / 2
            steady = median_of(
                [run_load(node.address_text, "get", 16, args.duration, rate=steady_rate) for _ in range(args.runs)]
            )
            steady["target_rps"] = steady_rate
            node.stop()
        report["throughput"] = throughput
        report["steady_get_c16"] = steady
        report["memory_per_key"] = memory_per_key(workdir, args.keys)
        report["rss_at_2x_limit"] = [rss_at_twice_limit(workdir, 64, 100), rss_at_twice_limit(workdir, 64, 1000)]

    lines.append(f"AegisKV native protocol, Python client; median of {args.runs} runs of {args.duration:g}s")
    lines.append(f"{'load':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}")
    for name, figures in throughput.items():
        lines.append(
            f"{name:<14}{figures['rps']:>10.0f}{figures['p50_ms']:>10.3f}{figures['p99_ms']:>10.3f}"
            f"{figures['p999_ms']:>10.3f}"
        )
    lines.append(
        f"{'steady c16':<14}{steady['rps']:>10.0f}{steady['p50_ms']:>10.3f}{steady['p99_ms']:>10.3f}"
        f"{steady['p999_ms']:>10.3f}   (paced at {steady['target_rps']:.0f} req/s)"
    )
    memory = report["memory_per_key"]
    assert isinstance(memory, dict)
    lines.append(
        f"memory: {memory['keys']} keys of 100 B: {memory['rss_bytes_per_key']:.0f} B/key of RSS, "
        f"{memory['accounted_bytes_per_key']:.0f} B/key accounted (idle RSS {memory['idle_rss_mb']:.1f} MB)"
    )
    for row in report["rss_at_2x_limit"]:  # type: ignore[attr-defined]
        lines.append(
            f"2x --max-memory {row['max_memory_mb']} MB with {row['value_size']} B values: RSS {row['rss_mb']:.1f} MB "
            f"(idle {row['idle_rss_mb']:.1f}); (RSS-idle)/limit = {row['rss_over_limit_plus_idle']:.2f}; "
            f"evicted {row['evicted_keys']}"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "native_client.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "native_client.txt").write_text(text + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
