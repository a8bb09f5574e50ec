"""Benchmark: the asyncio client beside redis.asyncio, same event loop, same concurrency.

Not a test. Starts one ``aegis`` node and one redis-server on loopback, then
measures three pairs of client and server, interleaved within each run:

* ``aegis native``: :class:`aegiskv.client.AsyncClient` against the node's native port;
* ``redis``: redis-py's ``redis.asyncio`` against redis-server (the reference);
* ``aegis resp``: ``redis.asyncio`` against the node's RESP port.

For GET and SET of 100-byte values over 10,000 keys, at 1, 16 and 64
concurrent tasks in one event loop (closed loop: each task waits for its
reply before its next request; the pool holds as many connections as there
are tasks), it records requests/s, latency p50/p99/p99.9 and the load
process's CPU time per request (the client's own cost). Each figure is
the median of ``--runs`` runs (default 3); the ratio column divides by the
``redis`` figure of the same concurrency and op. The load process is pinned
to one CPU and the servers to the other when there are two (bench/servers.py),
so on this kind of machine the client's own event loop is usually what
limits throughput: this compares the clients as much as the servers.

Writes bench/results/asyncio_client.json and .txt and its section of
bench/RESULTS.md.

    python bench/asyncio_client.py [--runs 3] [--duration 3] [--quick] [--render]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import LOAD_CPU, PIN, RESULTS, Server, fresh_dir, start_aegis, start_redis  # bench/servers.py

from aegiskv.client import AsyncClient, Config

VALUE = b"v" * 100
KEYSPACE = 10_000
CONCURRENCY = (1, 16, 64)
OPS = ("get", "set")
TARGETS = ("aegis native", "redis", "aegis resp")

Operation = Callable[[bytes], Awaitable[Any]]


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def closed_loop(operation: Operation, tasks: int, duration: float) -> dict[str, float]:
    """``tasks`` tasks calling ``operation`` back to back for ``duration`` seconds; figures over all calls."""
    keys = [f"key:{index:06d}".encode() for index in range(KEYSPACE)]
    latencies: list[list[float]] = [[] for _ in range(tasks)]
    perf = time.perf_counter
    deadline = perf() + duration

    async def task(number: int) -> None:
        out = latencies[number].append
        index = number * 7919
        while True:
            started = perf()
            if started >= deadline:
                return
            await operation(keys[index % KEYSPACE])
            index += 1
            out(perf() - started)

    started, cpu_started = perf(), time.process_time()
    await asyncio.gather(*(task(number) for number in range(tasks)))
    elapsed, cpu = perf() - started, time.process_time() - cpu_started
    merged = sorted(latency for part in latencies for latency in part)
    return {
        "requests": len(merged),
        "rps": len(merged) / elapsed,
        "p50_ms": percentile(merged, 0.50) * 1000,
        "p99_ms": percentile(merged, 0.99) * 1000,
        "p999_ms": percentile(merged, 0.999) * 1000,
        # The load process's own CPU per request: the client's cost, which a busy machine moves less
        # than it moves requests/s (the server runs in another process).
        "client_cpu_us": cpu / max(1, len(merged)) * 1e6,
    }


async def measure(target: str, address: tuple[str, int], op: str, tasks: int, duration: float) -> dict[str, float]:
    """One measurement: a fresh client for ``target``, preloaded keys, then the closed loop."""
    host, port = address
    if target == "aegis native":
        config = Config(seeds=[f"{host}:{port}"], max_conns=tasks, read_timeout=10, write_timeout=10)
        async with AsyncClient(config) as aegis:
            await aegis.mset([(f"key:{index:06d}".encode(), VALUE) for index in range(KEYSPACE)])
            operation: Operation = aegis.get if op == "get" else lambda key: aegis.set(key, VALUE)
            await operation(b"key:000000")  # connect before the clock starts
            return await closed_loop(operation, tasks, duration)
    pool = redis.asyncio.BlockingConnectionPool(host=host, port=port, max_connections=tasks, timeout=10)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        await client.mset({f"key:{index:06d}".encode(): VALUE for index in range(KEYSPACE)})
        operation = client.get if op == "get" else lambda key: client.set(key, VALUE)
        await operation(b"key:000000")
        return await closed_loop(operation, tasks, duration)
    finally:
        await client.aclose()


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


SCRIPT = "asyncio_client.py"
SECTION_TITLE = "asyncio client beside redis.asyncio"
SECTION_STEMS = ["asyncio_client"]
SECTION_INTRO = (
    "aegiskv's `AsyncClient` against a node's native port, redis-py's `redis.asyncio` against "
    "redis-server and against the node's RESP port: closed-loop GET and SET of 100-byte values at "
    "1, 16 and 64 tasks in one event loop, one pooled connection per task. The ratio divides by "
    "`redis` at the same concurrency; `client us/req` is the load process's CPU per request. "
    "Run: `python bench/asyncio_client.py`."
)


def render_table(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    lines = [
        f"asyncio clients, one event loop; median of {report['runs']} runs of {report['duration_s']:g}s; "
        f"redis-py {report['redis_py']} ({report['redis_parser']} parser); "
        f"1-minute load average {report['load_average'][0]:g} before, {report['load_average'][1]:g} after "
        f"({report['machine']['cpus']} CPUs)",
        f"{'op':<5}{'tasks':>6}  {'client -> server':<34}{'req/s':>9}{'ratio':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'client us/req':>15}",
    ]
    described = {
        "aegis native": "AsyncClient -> aegis native",
        "redis": "redis.asyncio -> redis-server",
        "aegis resp": "redis.asyncio -> aegis RESP",
    }
    for op in OPS:
        for tasks in CONCURRENCY:
            reference = results[f"{op}_c{tasks}_redis"]["rps"]
            for target in TARGETS:
                figures = results[f"{op}_c{tasks}_{target.replace(' ', '_')}"]
                lines.append(
                    f"{op:<5}{tasks:>6}  {described[target]:<34}{figures['rps']:>9.0f}"
                    f"{figures['rps'] / reference:>7.2f}{figures['p50_ms']:>9.3f}{figures['p99_ms']:>9.3f}"
                    f"{figures['p999_ms']:>10.3f}{figures['client_cpu_us']:>15.1f}"
                )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="one run of 1s (smoke check)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    if args.quick:
        args.runs, args.duration = 1, 1.0
    if PIN:
        os.sched_setaffinity(0, {LOAD_CPU})

    samples: dict[str, list[dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        servers: list[Server] = []
        try:
            reference = start_redis(fresh_dir(workdir, "redis"))
            servers.append(reference)
            aegis = start_aegis(fresh_dir(workdir, "aegis"))
            servers.append(aegis)
            assert aegis.node is not None
            addresses = {
                "aegis native": aegis.node.address,
                "redis": ("127.0.0.1", reference.port),
                "aegis resp": ("127.0.0.1", aegis.port),
            }
            for run in range(args.runs):
                for op in OPS:
                    for tasks in CONCURRENCY:
                        for target in TARGETS:  # interleaved: a slow moment of the machine hits all three
                            figures = asyncio.run(measure(target, addresses[target], op, tasks, args.duration))
                            name = f"{op}_c{tasks}_{target.replace(' ', '_')}"
                            samples.setdefault(name, []).append(figures)
                            print(f"run {run + 1}: {name:<28} {figures['rps']:>9.0f} req/s", flush=True)
        finally:
            for server in servers:
                server.stop()

    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": args.runs,
        "duration_s": args.duration,
        "redis_py": redis.__version__,
        "redis_parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python",
        "pinned": PIN,
        # Other work on the machine moves every figure; the table says how busy it was.
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "results": {name: median_of(runs) for name, runs in samples.items()},
        "runs_raw": samples,
    }
    text = "\n".join(render_table(report)) + "\n"
    print(text)
    stem = "asyncio_client_quick" if args.quick else "asyncio_client"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{stem}.txt").write_text(text)
    if not args.quick:
        write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
