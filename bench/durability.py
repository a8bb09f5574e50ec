"""Benchmark: durability costs, AegisKV against redis-server in the same run.

Not a test. Three figures:

1. SET throughput and latency with every write on disk before its reply:
   AegisKV ``--wal fsync`` against redis-server ``--appendonly yes
   --appendfsync always``, ``redis-benchmark -t set -d 100 -r 100000`` at
   ``-c 50 -P 1`` and ``-c 1 -P 1``, interleaved, median of ``--runs``.
   ``--wal write`` (no fsync) and redis ``--appendfsync no`` are shown too.
2. Restart time with 1,000,000 keys of 100 bytes: AegisKV from its newest
   snapshot plus 100,000 more writes in the log, against redis-server loading
   an RDB of the same keys; both timed from process start until the server
   answers (redis answers -LOADING until its data is in).
3. Write-ahead log bytes per SET, from INFO persistence.

Writes bench/results/durability.json and .txt.

    python bench/durability.py [--runs 3] [--keys 1000000] [--quick]
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
import time

import servers
from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import (
    RESULTS,
    info_field,
    info_text,
    mass_insert,
    redis_cli,
    run_benchmark,
    start_aegis,
    start_redis,
)

SHAPES = [("c50_P1", ["-c", "50", "-P", "1"], 50_000), ("c1_P1", ["-c", "1", "-P", "1"], 10_000)]
# Each AegisKV mode against the Redis setting with the same promise.
REFERENCE = {
    "redis-always": "redis-always",
    "aegis-fsync": "redis-always",
    "redis-no-fsync": "redis-no-fsync",
    "aegis-write": "redis-no-fsync",
}


def throughput(workdir: str, runs: int, scale: int) -> tuple[dict[str, dict[str, dict[str, float]]], str]:
    """Medians per shape and server, and the AegisKV build measured (compiled or interpreted)."""
    running = {
        "redis-always": start_redis(
            servers.fresh_dir(workdir, "redis-always"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            name="redis-always",
        ),
        "aegis-fsync": start_aegis(servers.fresh_dir(workdir, "aegis-fsync"), ["--wal", "fsync"], name="aegis-fsync"),
        "redis-no-fsync": start_redis(
            servers.fresh_dir(workdir, "redis-no"), "--appendonly", "yes", "--appendfsync", "no", name="redis-no-fsync"
        ),
        "aegis-write": start_aegis(servers.fresh_dir(workdir, "aegis-write"), ["--wal", "write"], name="aegis-write"),
    }
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for shape_name, shape, requests in SHAPES:
            for _ in range(runs):
                for name, server in running.items():
                    figures = run_benchmark(server, "set", shape, requests // scale)
                    raw.setdefault(shape_name, {}).setdefault(name, []).append(figures)
                    print(f"{shape_name} {name}: {figures['rps']:.0f} SET/s p99 {figures['p99_ms']:.2f} ms", flush=True)
        wal_bytes = info_field(running["aegis-fsync"].port, "persistence", "aegis_wal_bytes_written")
        wal_records = info_field(running["aegis-fsync"].port, "persistence", "aegis_wal_records_written")
        wal_syncs = info_field(running["aegis-fsync"].port, "persistence", "aegis_wal_syncs")
        # Compiled or interpreted: the figures differ about twofold, so the header says which.
        build = info_text(running["aegis-fsync"].port, "server", "aegis_build")
    finally:
        for server in running.values():
            server.stop()
    medians = {
        shape: {
            name: {key: statistics.median(run[key] for run in runs_list) for key in runs_list[0]}
            for name, runs_list in by_server.items()
        }
        for shape, by_server in raw.items()
    }
    medians["wal"] = {
        "bytes_per_record": {"value": wal_bytes / max(1, wal_records)},
        "records_per_fsync": {"value": wal_records / max(1, wal_syncs)},
    }
    return medians, build


def restart_times(workdir: str, keys: int, tail_writes: int) -> dict[str, float]:
    data_path = os.path.join(workdir, "mass.resp")
    tail_path = os.path.join(workdir, "tail.resp")
    # redis: fill, SAVE an RDB, stop, time a restart that loads it.
    redis_dir = servers.fresh_dir(workdir, "redis-rdb")
    redis = start_redis(redis_dir, "--dbfilename", "dump.rdb", name="redis-rdb")
    mass_insert(redis.port, keys, data_path)
    redis_cli(redis.port, "save")
    port = redis.port
    redis.kill()
    started = time.perf_counter()
    redis = start_redis(redis_dir, "--dbfilename", "dump.rdb", name="redis-rdb", port=port)
    redis_seconds = time.perf_counter() - started
    redis_keys = int(redis_cli(redis.port, "dbsize"))
    redis.stop()
    # AegisKV: fill, snapshot, more writes into the log, crash, time a restart.
    aegis_dir = servers.fresh_dir(workdir, "aegis-restart")
    aegis = start_aegis(aegis_dir, ["--wal", "write"], name="aegis-restart")
    mass_insert(aegis.port, keys, data_path)
    redis_cli(aegis.port, "save")
    mass_insert(aegis.port, tail_writes, tail_path, prefix=b"tail")
    aegis.kill()
    started = time.perf_counter()
    aegis = start_aegis(aegis_dir, ["--wal", "write"], name="aegis-restart")
    aegis_seconds = time.perf_counter() - started
    aegis_keys = int(redis_cli(aegis.port, "dbsize"))
    aegis.stop()
    return {
        "keys": keys,
        "log_tail_writes": tail_writes,
        "redis_rdb_seconds": redis_seconds,
        "redis_keys": redis_keys,
        "aegis_snapshot_plus_wal_seconds": aegis_seconds,
        "aegis_keys": aegis_keys,
        "ratio": aegis_seconds / redis_seconds,
    }


SCRIPT = "durability.py"
SECTION_TITLE = "Durability"
SECTION_STEMS = ["durability"]
SECTION_INTRO = (
    "SET throughput with the write-ahead log (`--wal fsync`, `--wal write`) against redis-server "
    "with `appendfsync always` and without fsync, by redis-benchmark; log bytes per SET; restart "
    "time with 1,000,000 keys (snapshot plus 100,000 logged writes) against redis-server loading an "
    "RDB of the same keys. Run: `python bench/durability.py`."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="1 run, fewer requests, 100k keys")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    servers.require_redis_tools()
    runs = 1 if args.quick else args.runs
    scale = 5 if args.quick else 1
    keys = 100_000 if args.quick else args.keys
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as workdir:
        figures, build = throughput(workdir, runs, scale)
        restart = restart_times(workdir, keys, keys // 10)
    lines = [
        f"AegisKV ({build}) durability vs {version}; redis-benchmark -t set -d 100 -r 100000; "
        f"median of {runs} interleaved runs",
        f"{'shape':<9}{'server':<16}{'SET/s':>10}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'cpu us/req':>11}",
    ]
    for shape_name, _shape, _requests in SHAPES:
        by_server = figures[shape_name]
        for name, row in by_server.items():
            reference = by_server[REFERENCE[name]]
            row["ratio"] = row["rps"] / reference["rps"]
            lines.append(
                f"{shape_name:<9}{name:<16}{row['rps']:>10.0f}{row['ratio']:>7.2f}{row['p50_ms']:>9.3f}"
                f"{row['p99_ms']:>9.3f}{row['p999_ms']:>10.3f}{row['cpu_us_per_request']:>11.1f}"
            )
    lines.append(
        f"write-ahead log: {figures['wal']['bytes_per_record']['value']:.0f} bytes per SET record; "
        f"--wal fsync: {figures['wal']['records_per_fsync']['value']:.1f} records per fsync"
    )
    lines.append(
        f"restart with {restart['keys']} keys: redis-server RDB {restart['redis_rdb_seconds']:.2f}s; "
        f"AegisKV snapshot + {restart['log_tail_writes']} logged writes "
        f"{restart['aegis_snapshot_plus_wal_seconds']:.2f}s "
        f"(ratio {restart['ratio']:.2f}; keys {restart['redis_keys']} / {restart['aegis_keys']})"
    )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "redis": version, "aegis": build},
        "runs": runs,
        "throughput": figures,
        "restart": restart,
    }
    (RESULTS / f"durability{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"durability{suffix}.txt").write_text(text + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
