"""Benchmark: AegisKV's RESP port against redis-server, measured by redis-benchmark.

Not a test. In one run it starts redis-server (``--save '' --appendonly no``)
and AegisKV nodes on loopback, then runs ``redis-benchmark -t <op> -d 100 -r 100000`` against each, interleaved,
for every load shape:

    -c 50 -P 1   -n 200000
    -c 50 -P 16  -n 1000000
    -c 1  -P 1   -n 50000

Each (shape, op, server) is repeated ``--runs`` times (default 3); the table
shows the median requests/s, p50/p99/p99.9 latency (from redis-benchmark's
percentile distribution), server CPU microseconds per request (utime+stime
from /proc/<pid>/stat around the run), and the ratio to redis-server measured
in the same run ("each run": the ratio within each repetition, lowest to
highest, which shows how far the machine moved the median). Then it loads
1,000,000 keys of 100 bytes into each server (``redis-cli --pipe``) and
compares bytes per key.

The nodes run the aegiskv installed for the interpreter that runs this script
(``aegis``); when that build is compiled by mypyc (``.tox/py311/bin/python``,
see setup.py) ``aegis-interp`` also runs this checkout's sources interpreted,
for the comparison.

Writes bench/results/resp_vs_redis.json and .txt.

    .tox/py311/bin/python bench/resp_vs_redis.py [--runs 3] [--quick] [--keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import servers
from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import (
    RESULTS,
    Server,
    info_field,
    info_text,
    mass_insert,
    rss_bytes,
    run_benchmark,
    start_aegis,
    start_redis,
)

SHAPES = [
    ("c50_P1", ["-c", "50", "-P", "1"], 200_000),
    ("c50_P16", ["-c", "50", "-P", "16"], 1_000_000),
    ("c1_P1", ["-c", "1", "-P", "1"], 50_000),
]
OPS = ("set", "get")


def start_aegis_with(workdir: str, name: str, interpreted: bool = False) -> Server:
    return start_aegis(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir), name=name, interpreted=interpreted)


def memory_comparison(workdir: str, keys: int) -> dict[str, dict[str, float]]:
    """Bytes per key on fresh servers (a server that served the benchmarks keeps its freed memory)."""
    result = {}
    data_path = os.path.join(workdir, "mass.resp")
    for name, start in (
        ("redis", lambda: start_redis(workdir)),
        ("aegis", lambda: start_aegis_with(workdir, "aegis")),
    ):
        server = start()
        try:
            used_before = info_field(server.port, "memory", "used_memory")
            rss_before = rss_bytes(server.pid)
            mass_insert(server.port, keys, data_path)
            used_after = info_field(server.port, "memory", "used_memory")
            rss_after = rss_bytes(server.pid)
        finally:
            server.stop()
        result[name] = {
            "keys": keys,
            "used_memory_bytes_per_key": (used_after - used_before) / keys,
            "rss_bytes_per_key": (rss_after - rss_before) / keys,
        }
    return result


SCRIPT = "resp_vs_redis.py"
SECTION_TITLE = "RESP port against redis-server"
SECTION_STEMS = ["resp_vs_redis"]
SECTION_INTRO = (
    "redis-benchmark (`-d 100 -r 100000`) against redis-server and AegisKV nodes on loopback, "
    "interleaved, at `-c 50 -P 1`, `-c 50 -P 16` and `-c 1 -P 1`; servers pinned to CPU 1, the load "
    "generator to CPU 0. `ratio` is against redis-server in the same run, `cpu us/req` the server's "
    "CPU per request, `each run` the ratio in each repetition. The memory lines are bytes per key "
    "after loading 1,000,000 keys of 100 bytes. Run: `.tox/py311/bin/python bench/resp_vs_redis.py` "
    "(the compiled build)."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="1 run, requests / 10, 100k keys (smoke check)")
    parser.add_argument("--only-default", action="store_true", help="only redis and the installed build's node")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    servers.PIN = servers.PIN and not args.no_pin
    servers.require_redis_tools()
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    keys = 100_000 if args.quick else args.keys
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory() as workdir:
        running = {"redis": start_redis(workdir), "aegis": start_aegis_with(workdir, "aegis")}
        build = info_text(running["aegis"].port, "server", "aegis_build")
        if build == "compiled" and not args.only_default:
            interpreted = start_aegis_with(workdir, "aegis-interp", interpreted=True)
            assert info_text(interpreted.port, "server", "aegis_build") == "interpreted"
            running[interpreted.name] = interpreted
        try:
            raw: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
            for shape_name, shape, requests in SHAPES:
                for op in OPS:
                    for _ in range(runs):
                        for name, server in running.items():  # interleaved: drift hits every server alike
                            figures = run_benchmark(server, op, shape, requests // scale)
                            raw.setdefault(shape_name, {}).setdefault(op, {}).setdefault(name, []).append(figures)
                            print(f"{shape_name} {op} {name}: {figures['rps']:.0f} req/s", flush=True)
        finally:
            for server in running.values():
                server.stop()
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
        + ("; servers pinned to CPU 1, redis-benchmark to CPU 0" if servers.PIN else ""),
        f"aegis nodes: request path {build}"
        + (" (-interp: the same sources interpreted)" if build == "compiled" else ""),
        f"{'shape':<9}{'op':<5}{'server':<22}{'req/s':>10}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'cpu us/req':>11}{'cpu ratio':>10}{'each run':>11}",
    ]
    ratios_by_run: dict[str, dict[str, dict[str, list[float]]]] = {}
    for shape_name, by_op in medians.items():
        for op, by_server in by_op.items():
            reference = by_server["redis"]
            reference_runs = raw[shape_name][op]["redis"]
            for name, figures in by_server.items():
                ratio = figures["rps"] / reference["rps"]
                cpu_ratio = figures["cpu_us_per_request"] / reference["cpu_us_per_request"]
                # Each repetition ran every server back to back: its own ratio.
                paired = sorted(
                    run["rps"] / against["rps"] for run, against in zip(raw[shape_name][op][name], reference_runs)
                )
                figures["ratio_to_redis"] = ratio
                figures["cpu_ratio_to_redis"] = cpu_ratio
                ratios_by_run.setdefault(shape_name, {}).setdefault(op, {})[name] = paired
                by_run = f"{paired[0]:.2f}-{paired[-1]:.2f}" if name != "redis" else ""
                lines.append(
                    f"{shape_name:<9}{op:<5}{name:<22}{figures['rps']:>10.0f}{ratio:>7.2f}{figures['p50_ms']:>9.3f}"
                    f"{figures['p99_ms']:>9.3f}{figures['p999_ms']:>10.3f}{figures['cpu_us_per_request']:>11.2f}"
                    f"{cpu_ratio:>10.2f}{by_run:>11}"
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
        "aegis_build": build,
        "runs": runs,
        "quick": args.quick,
        "medians": medians,
        "ratios_by_run": ratios_by_run,
        "raw": raw,
        "memory": memory,
    }
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"resp_vs_redis{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"resp_vs_redis{suffix}.txt").write_text(text + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
