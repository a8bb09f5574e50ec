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

``--baseline REV`` measures an earlier revision beside them: REV is built into
venvs of its own, compiled and interpreted (bench/baseline.py, kept under
/tmp/aegis-bench-baselines for the next run), and ``aegis@REV`` and
``aegis-interp@REV`` join the interleaved runs, one per build of this checkout
that runs. A second table gives, per shape, op and build, this checkout's
requests/s over REV's (ratio of the medians, and the ratio within each
repetition) and its CPU per request over REV's. The repetitions rotate the
order the servers run in, so no server always follows the same one. Such a run
skips the memory comparison and writes bench/results/resp_vs_redis_baseline.json
and .txt instead.

The nodes gossip on loopback, each a cluster of one, as a node started without
flags does: writes go through the replication stream. ``--gossip-off`` runs
them lone (``--gossip off``: no membership, leases or replication stream), to
measure the request path alone; its files get ``_lone`` in their names.

Writes bench/results/resp_vs_redis.json and .txt (``_quick`` with --quick).

    .tox/py311/bin/python bench/resp_vs_redis.py [--runs 3] [--quick] [--keys 1000000]
        [--baseline REV [--baseline-cache DIR]] [--gossip-off]
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
from dataclasses import asdict, dataclass
from pathlib import Path

import servers
from baseline import BUILDS, DEFAULT_CACHE, Baseline, build_baseline, resolve, start_baseline
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


# The gossip address of every aegis node: a one-node cluster, as a node starts by
# default; None (--gossip-off) runs lone nodes, whose writes skip the replication
# stream and leases, to compare the request path alone.
GOSSIP: str | None = "127.0.0.1:0"


def start_aegis_with(workdir: str, name: str, interpreted: bool = False) -> Server:
    data_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
    return start_aegis(data_dir, name=name, interpreted=interpreted, gossip=GOSSIP)


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
SECTION_STEMS = ["resp_vs_redis", "resp_vs_redis_lone", "resp_vs_redis_baseline", "resp_vs_redis_baseline_lone"]
SECTION_INTRO = (
    "redis-benchmark (`-d 100 -r 100000`) against redis-server and AegisKV nodes on loopback, "
    "interleaved, at `-c 50 -P 1`, `-c 50 -P 16` and `-c 1 -P 1`; servers pinned to CPU 1, the load "
    "generator to CPU 0. `ratio` is against redis-server in the same run, `cpu us/req` the server's "
    "CPU per request, `each run` the ratio in each repetition. The memory lines are bytes per key "
    "after loading 1,000,000 keys of 100 bytes. Run: `.tox/py311/bin/python bench/resp_vs_redis.py` "
    "(the compiled build). The `_baseline` file compares this checkout with an earlier revision "
    "built the same two ways (`aegis@REV`, `aegis-interp@REV`), measured in the same interleaved runs: "
    "`--baseline REV`. `_lone`: the nodes ran with `--gossip off` (`--gossip-off`), without the "
    "replication stream a one-node cluster's writes go through."
)


# Issue 21's bar for the layout change: no shape and op more than 3% slower than before.
TOLERANCE = 0.03

Raw = dict[str, dict[str, dict[str, list[dict[str, float]]]]]  # shape -> op -> server -> one figures per run
Medians = dict[str, dict[str, dict[str, dict[str, float]]]]  # shape -> op -> server -> median figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="1 run, requests / 10, 100k keys (smoke check)")
    parser.add_argument("--only-default", action="store_true", help="only redis and the installed build's node")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    parser.add_argument(
        "--gossip-off",
        action="store_true",
        help="run the aegis nodes with --gossip off: lone nodes, no membership, leases or replication stream",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run REV of this repository (built compiled and interpreted) and compare with it",
    )
    parser.add_argument(
        "--baseline-cache",
        metavar="DIR",
        type=Path,
        default=DEFAULT_CACHE,
        help="where --baseline keeps its built venvs (default: %(default)s)",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    if args.baseline:
        resolve(args.baseline)  # a typo fails here, before any server starts
    return args


def start_current(workdir: str, only_default: bool) -> tuple[dict[str, str], dict[str, Server]]:
    """This checkout's nodes: ``aegis`` (the installed build) and, when that is compiled, ``aegis-interp``.

    Returns the build of each node's name and the started servers (redis first)."""
    running = {"redis": start_redis(workdir), "aegis": start_aegis_with(workdir, "aegis")}
    builds = {"aegis": info_text(running["aegis"].port, "server", "aegis_build")}
    if builds["aegis"] == "compiled" and not only_default:
        interpreted = start_aegis_with(workdir, "aegis-interp", interpreted=True)
        running[interpreted.name] = interpreted
        builds[interpreted.name] = info_text(interpreted.port, "server", "aegis_build")
        assert builds[interpreted.name] == "interpreted"
    return builds, running


def start_baselines(workdir: str, baselines: dict[str, Baseline], running: dict[str, Server]) -> list[tuple[str, str]]:
    """A node of each baseline build, named after the current node of the same build: ``(current, baseline)``."""
    pairs = []
    for current, baseline in baselines.items():
        name = f"{current}@{baseline.short}"
        server = start_baseline(baseline, tempfile.mkdtemp(prefix=f"{name}-", dir=workdir), name, gossip=GOSSIP)
        running[name] = server
        reported = info_text(server.port, "server", "aegis_build")
        if reported != baseline.build:
            raise SystemExit(f"{name}: built {baseline.build}, but the node reports {reported}")
        pairs.append((current, name))
    return pairs


def measure(running: dict[str, Server], runs: int, scale: int) -> Raw:
    """Every (shape, op) on every server, ``runs`` times, interleaved; each repetition starts one server later."""
    raw: Raw = {}
    names = list(running)
    for shape_name, shape, requests in SHAPES:
        for op in OPS:
            for repetition in range(runs):
                # Interleaved, so drift hits every server alike; rotated, so no server
                # always runs right after the same one (a cache or CPU clock it left warm).
                shift = repetition % len(names)
                for name in names[shift:] + names[:shift]:
                    figures = run_benchmark(running[name], op, shape, requests // scale)
                    raw.setdefault(shape_name, {}).setdefault(op, {}).setdefault(name, []).append(figures)
                    print(f"{shape_name} {op} {name}: {figures['rps']:.0f} req/s", flush=True)
    return raw


def medians_of(raw: Raw, servers_in_order: list[str]) -> Medians:
    medians: Medians = {}
    for shape_name, by_op in raw.items():
        for op, by_server in by_op.items():
            for name in servers_in_order:
                runs_list = by_server[name]
                medians.setdefault(shape_name, {}).setdefault(op, {})[name] = {
                    key: statistics.median(run[key] for run in runs_list) for key in runs_list[0]
                }
    return medians


def paired_ratios(raw: Raw, shape_name: str, op: str, name: str, reference: str) -> list[float]:
    """``name``'s req/s over ``reference``'s within each repetition (they ran back to back), in run order."""
    by_server = raw[shape_name][op]
    return [run["rps"] / against["rps"] for run, against in zip(by_server[name], by_server[reference])]


def server_table(raw: Raw, medians: Medians) -> tuple[list[str], dict[str, dict[str, dict[str, list[float]]]]]:
    """One line per (shape, op, server) with its ratios to redis-server; and each run's ratio, by server."""
    lines = [
        f"{'shape':<9}{'op':<5}{'server':<22}{'req/s':>10}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'cpu us/req':>11}{'cpu ratio':>10}{'each run':>11}",
    ]
    ratios_by_run: dict[str, dict[str, dict[str, list[float]]]] = {}
    for shape_name, by_op in medians.items():
        for op, by_server in by_op.items():
            reference = by_server["redis"]
            for name, figures in by_server.items():
                ratio = figures["rps"] / reference["rps"]
                cpu_ratio = figures["cpu_us_per_request"] / reference["cpu_us_per_request"]
                paired = sorted(paired_ratios(raw, shape_name, op, name, "redis"))
                figures["ratio_to_redis"] = ratio
                figures["cpu_ratio_to_redis"] = cpu_ratio
                ratios_by_run.setdefault(shape_name, {}).setdefault(op, {})[name] = paired
                by_run = f"{paired[0]:.2f}-{paired[-1]:.2f}" if name != "redis" else ""
                lines.append(
                    f"{shape_name:<9}{op:<5}{name:<22}{figures['rps']:>10.0f}{ratio:>7.2f}{figures['p50_ms']:>9.3f}"
                    f"{figures['p99_ms']:>9.3f}{figures['p999_ms']:>10.3f}{figures['cpu_us_per_request']:>11.2f}"
                    f"{cpu_ratio:>10.2f}{by_run:>11}"
                )
    return lines, ratios_by_run


@dataclass(frozen=True)
class Comparison:
    """One shape, op and build: this checkout's node against the baseline's (figures here over figures there)."""

    shape: str
    op: str
    build: str
    current: str
    baseline: str
    rps_ratio: float  # of the medians
    cpu_ratio: float  # CPU microseconds per request, of the medians
    rps_ratio_each_run: list[float]  # within each repetition, in run order

    @property
    def within_tolerance(self) -> bool:
        return self.rps_ratio >= 1 - TOLERANCE


def compare(raw: Raw, medians: Medians, pairs: list[tuple[str, str]], builds: dict[str, str]) -> list[Comparison]:
    comparisons = []
    for shape_name, by_op in medians.items():
        for op, by_server in by_op.items():
            for current, base in pairs:
                comparisons.append(
                    Comparison(
                        shape=shape_name,
                        op=op,
                        build=builds[current],
                        current=current,
                        baseline=base,
                        rps_ratio=by_server[current]["rps"] / by_server[base]["rps"],
                        cpu_ratio=by_server[current]["cpu_us_per_request"] / by_server[base]["cpu_us_per_request"],
                        rps_ratio_each_run=paired_ratios(raw, shape_name, op, current, base),
                    )
                )
    return comparisons


def baseline_table(comparisons: list[Comparison], medians: Medians, short: str) -> list[str]:
    """This checkout against the baseline, build by build, and a verdict per build against TOLERANCE."""
    lines = [
        f"this checkout against {short}, the same build (ratio: req/s here over req/s at {short}, medians; "
        f"each run: that ratio within each repetition, in run order; ok: at most {TOLERANCE:.0%} slower)",
        f"{'shape':<9}{'op':<5}{'build':<13}{'req/s':>10}{'req/s@' + short:>15}{'ratio':>7}{'cpu ratio':>10}"
        f"  {'each run':<25}{'ok':>3}",
    ]
    for row in comparisons:
        by_server = medians[row.shape][row.op]
        runs_text = " ".join(f"{value:.2f}" for value in row.rps_ratio_each_run)
        lines.append(
            f"{row.shape:<9}{row.op:<5}{row.build:<13}{by_server[row.current]['rps']:>10.0f}"
            f"{by_server[row.baseline]['rps']:>15.0f}{row.rps_ratio:>7.2f}{row.cpu_ratio:>10.2f}  {runs_text:<25}"
            f"{'yes' if row.within_tolerance else 'NO':>3}"
        )
    for build in BUILDS:
        of_build = [row for row in comparisons if row.build == build]
        if not of_build:
            why = "needs .tox/py311/bin/python's compiled install" if build == "compiled" else "--only-default"
            lines.append(f"{build}: not compared ({why})")
            continue
        worst = min(of_build, key=lambda row: row.rps_ratio)
        within = sum(1 for row in of_build if row.within_tolerance)
        lines.append(
            f"{build}: {within} of {len(of_build)} at most {TOLERANCE:.0%} slower; "
            f"lowest ratio {worst.rps_ratio:.3f} ({worst.shape} {worst.op})"
        )
    return lines


def memory_lines(memory: dict[str, dict[str, float]], keys: int) -> list[str]:
    reference_memory = memory["redis"]
    lines = [f"memory, {keys} keys of 100 B (bytes per key):"]
    for name, figures in memory.items():
        figures["rss_ratio_to_redis"] = figures["rss_bytes_per_key"] / reference_memory["rss_bytes_per_key"]
        lines.append(
            f"  {name:<15} used_memory {figures['used_memory_bytes_per_key']:>7.0f}"
            f"   RSS {figures['rss_bytes_per_key']:>7.0f}"
            f"   RSS ratio to redis {figures['rss_ratio_to_redis']:.2f}"
        )
    return lines


def main() -> int:
    args = parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    servers.PIN = servers.PIN and not args.no_pin
    global GOSSIP
    GOSSIP = None if args.gossip_off else GOSSIP
    servers.require_redis_tools()
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    keys = 100_000 if args.quick else args.keys
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    baselines: dict[str, Baseline] = {}
    pairs: list[tuple[str, str]] = []
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        builds, running = start_current(workdir, args.only_default)
        try:
            if args.baseline:
                # Built with the nodes up but idle: a first build takes minutes, a cached one none.
                for current, of_build in builds.items():
                    baselines[current] = build_baseline(args.baseline, of_build, args.baseline_cache)
                pairs = start_baselines(workdir, baselines, running)
                builds.update({base: builds[current] for current, base in pairs})
            raw = measure(running, runs, scale)
        finally:
            for server in running.values():
                server.stop()
        if not args.baseline:  # a baseline run is about speed; memory has its own runs
            memory = memory_comparison(workdir, keys)

    build = builds["aegis"]
    medians = medians_of(raw, list(running))
    lines = [
        f"AegisKV RESP port vs {version}; redis-benchmark -d 100 -r 100000; median of {runs} interleaved runs"
        + ("; servers pinned to CPU 1, redis-benchmark to CPU 0" if servers.PIN else ""),
        f"aegis nodes: request path {build}"
        + (" (-interp: the same sources interpreted)" if build == "compiled" else "")
        + ("; --gossip off (lone nodes)" if GOSSIP is None else "; gossip on (one-node clusters)"),
    ]
    commit = next(iter(baselines.values())).commit if baselines else ""
    if baselines:
        lines.append(
            f"@{commit[:7]}: commit {commit} ({args.baseline}), installed into venvs of this interpreter with "
            "this checkout's dependency pins; " + ", ".join(f"{name}@{commit[:7]} {builds[name]}" for name in baselines)
        )
    table, ratios_by_run = server_table(raw, medians)
    lines += table
    comparisons = compare(raw, medians, pairs, builds)
    if baselines:
        lines += baseline_table(comparisons, medians, commit[:7])
    if memory:
        lines += memory_lines(memory, keys)
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "redis": version},
        "aegis_build": build,
        "builds": builds,
        "gossip": GOSSIP is not None,
        "runs": runs,
        "quick": args.quick,
        "medians": medians,
        "ratios_by_run": ratios_by_run,
        "raw": raw,
    }
    if memory:
        report["memory"] = memory
    if baselines:
        report["baseline"] = {
            "requested": args.baseline,
            "commit": commit,
            "tolerance": TOLERANCE,
            "comparisons": [{**asdict(row), "within_tolerance": row.within_tolerance} for row in comparisons],
        }
    stem = "resp_vs_redis" + ("_baseline" if baselines else "") + ("_lone" if GOSSIP is None else "")
    stem += "_quick" if args.quick else ""
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.txt").write_text(text + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
