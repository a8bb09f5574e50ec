"""Benchmark: hit ratio of AegisKV against redis-server under the same max-memory, cache-aside.

Not a test. For each trace of ``bench/traces.py`` (stationary Zipf(0.99),
Zipf with one-off scans, a hot set drifting onto new keys, a day-shaped mix)
and each value size (100 and 1,000 bytes), it starts fresh servers on loopback
with the same memory budget -- an ``aegis`` node (the aegiskv installed for
the interpreter running this script; ``--also PYTHON`` adds the one installed
for another interpreter, e.g. an older commit's build), redis-server with
``allkeys-lru`` and with ``allkeys-lfu`` -- and replays the trace through a
cache-aside client: GET the key; on a miss, SET it. It reports the hit ratio
overall and per window (a slow collapse shows there), the keys held, memory
(the server's own used_memory and its RSS) and throughput (requests/s of this
client, and the server's CPU microseconds per request, from /proc).

The client pipelines (``--batch`` requests per round trip, over a redis-py
connection; see :class:`Pipe`) without
changing cache-aside semantics: a batch's first request for each key is a GET;
then, in the batch's order, a SET for each of those that missed and a GET for
each later request of the same key, so every request sees every earlier
request's SET of its key, as it would one at a time; a later GET that misses
(evicted meanwhile) is SET in a third round trip. Only the interleaving of
different keys within a batch changes (a batch of 256 against a cache of
tens of thousands of keys).

Hit ratios are counted by the client from the replies. The traces are seeded,
so each server sees the same requests; the hit ratio of one server moves by
less than 0.005 between runs here, the throughput by 10-30% (the machine),
which is why ``--runs`` repeats and the table gives medians.

    python bench/hit_ratio.py [--quick] [--requests 10000000] [--max-memory 64] [--keyspace N]
                              [--traces zipf,scan,drift,daily] [--values 100,1000] [--runs 1]
                              [--also PYTHON [--also-name aegis@REF]]

Default: 10M requests per trace, 64 MiB, a keyspace of 2.4M keys (36 per KiB
of budget; about ten times what the budget holds at 100 bytes). ``--quick``:
1M requests, 8 MiB, 300k keys. Writes bench/results/hit_ratio.txt and .json
(``hit_ratio_quick.*`` with --quick) and the "Hit ratio" section of
bench/RESULTS.md, rendered from both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import servers
from results_md import write_section  # bench/results_md.py
from servers import RESULTS, Server, cpu_seconds, info_field, info_text, rss_bytes, start_aegis, start_redis
from traces import KEY_FORMAT, TRACES, generate

ROOT = Path(__file__).resolve().parent.parent
SECTION_TITLE = "Hit ratio"
KEYS_PER_KIB = 36  # default keyspace per KiB of budget


class Pipe:
    """Pipelined round trips over one redis-py connection (its hiredis reply parser), commands packed here.

    redis-py's ``Pipeline`` object costs about 20 us of client time per
    command, so the client, not the servers, set the pace (about 20,000
    requests/s against any server; 8 minutes per server for a 10M-request
    trace). Packing GET and SET by hand and reading the replies with the
    connection's own parser took that to 76,000-100,000 requests/s, with the
    same bytes on the wire and the same hit ratios.
    """

    def __init__(self, port: int) -> None:
        self._connection = redis.Connection(port=port, socket_timeout=120)
        self._connection.connect()
        self._commands: list[bytes] = []

    def get(self, key: bytes) -> None:
        self._commands.append(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key))

    def set(self, key: bytes, value: bytes) -> None:
        self._commands.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value))

    def execute(self) -> list[Any]:
        """Send the commands queued, in one write; their replies, in order."""
        count = len(self._commands)
        if not count:
            return []
        self._connection.send_packed_command([b"".join(self._commands)], check_health=False)
        self._commands.clear()
        read = self._connection.read_response
        return [read() for _ in range(count)]

    def close(self) -> None:
        self._connection.disconnect()


def replay_batch(pipe: Pipe, keys: Sequence[bytes], value: bytes) -> int:
    """One batch, cache-aside, pipelined; returns the hits (see the module docstring for the order)."""
    first: dict[bytes, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    for key in first:
        pipe.get(key)
    found = dict(zip(first, (reply is not None for reply in pipe.execute())))
    hits = sum(found.values())
    later: list[tuple[int, bytes]] = []  # (position in the second round trip, key) of the later GETs
    queued = 0
    for index, key in enumerate(keys):
        if first[key] == index:
            if not found[key]:
                pipe.set(key, value)
                queued += 1
        else:
            pipe.get(key)
            later.append((queued, key))
            queued += 1
    replies = pipe.execute()
    missed = [key for position, key in later if replies[position] is None]
    hits += len(later) - len(missed)
    for key in missed:
        pipe.set(key, value)
    pipe.execute()
    return hits


def replay(server: Server, trace: str, requests: int, keyspace: int, value: bytes, batch: int, windows: int) -> dict:
    pipe = Pipe(server.port)
    window_size = max(1, requests // windows)
    window_ratios: list[float] = []
    hits = window_hits = window_requests = 0
    busy = 0.0
    cpu_before = cpu_seconds(server.pid)
    for chunk in generate(trace, requests, keyspace):
        keys = [KEY_FORMAT % number for number in chunk]
        started = time.perf_counter()
        for offset in range(0, len(keys), batch):
            # Batches never cross a window's end, so each window counts its own requests.
            part = keys[offset : offset + batch]
            while part:
                take = min(len(part), window_size - window_requests)
                got = replay_batch(pipe, part[:take], value)
                part = part[take:]
                hits += got
                window_hits += got
                window_requests += take
                if window_requests == window_size:
                    window_ratios.append(window_hits / window_size)
                    window_hits = window_requests = 0
        busy += time.perf_counter() - started
    cpu = cpu_seconds(server.pid) - cpu_before
    pipe.close()
    keys_held = int(redis.Redis(port=server.port).dbsize())
    result = {
        "hit_ratio": hits / requests,
        "windows": window_ratios,
        "keys": keys_held,
        "used_memory": info_field(server.port, "memory", "used_memory"),
        "rss": rss_bytes(server.pid),
        "requests_per_second": requests / busy,
        "server_cpu_us_per_request": cpu / requests * 1e6,
    }
    return result


def start(name: str, workdir: str, max_memory_mib: int, python: str | None) -> Server:
    if name.startswith("redis-"):
        policy = "allkeys-" + name.removeprefix("redis-")
        return start_redis(workdir, "--maxmemory", f"{max_memory_mib}mb", "--maxmemory-policy", policy, name=name)
    data_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
    return start_aegis(data_dir, ["--max-memory", str(max_memory_mib)], name=name, python=python or sys.executable)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M requests, 8 MiB, 300k keys")
    parser.add_argument("--requests", type=int, help="per trace (default 10M; --quick 1M)")
    parser.add_argument("--max-memory", type=int, help="MiB, the same for every server (default 64; --quick 8)")
    parser.add_argument("--keyspace", type=int, help=f"keys the traces draw from (default {KEYS_PER_KIB} per KiB)")
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--values", default="100,1000", help="value sizes in bytes")
    parser.add_argument("--runs", type=int, default=1, help="repetitions; the table shows medians")
    parser.add_argument("--batch", type=int, default=256, help="requests per pipelined batch")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--also", metavar="PYTHON", help="also an aegis node of the aegiskv installed for PYTHON")
    parser.add_argument("--also-name", default="aegis-also", help="its name in the table (e.g. aegis@<commit>)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and client to CPUs")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        if write_results_md():
            print(f"bench/RESULTS.md: section {SECTION_TITLE!r} rendered from bench/results/")
            return 0
        print("bench/hit_ratio.py: no results to render (bench/results/hit_ratio*.json)")
        return 1
    servers.PIN = servers.PIN and not args.no_pin
    servers.require_redis_tools()
    requests = args.requests or (1_000_000 if args.quick else 10_000_000)
    max_memory = args.max_memory or (8 if args.quick else 64)
    keyspace = args.keyspace or max_memory * 1024 * KEYS_PER_KIB
    names = ["aegis", *([args.also_name] if args.also else []), "redis-lru", "redis-lfu"]
    pythons = {"aegis": sys.executable, args.also_name: args.also}
    builds: dict[str, str] = {}  # what each aegis node reports in INFO (compiled or interpreted)
    if servers.PIN:
        os.sched_setaffinity(0, {servers.LOAD_CPU})
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    raw: dict[str, dict[str, dict[str, list[dict]]]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for trace in args.traces.split(","):
            for size in (int(text) for text in args.values.split(",")):
                value = b"v" * size
                for _ in range(args.runs):
                    for name in names:  # interleaved: drift hits every server alike
                        server = start(name, workdir, max_memory, pythons.get(name))
                        try:
                            if name.startswith("aegis"):
                                builds[name] = info_text(server.port, "server", "aegis_build")
                            result = replay(server, trace, requests, keyspace, value, args.batch, args.windows)
                        finally:
                            server.stop()
                        raw.setdefault(trace, {}).setdefault(str(size), {}).setdefault(name, []).append(result)
                        print(
                            f"{trace} {size} B {name}: hit ratio {result['hit_ratio']:.3f}, {result['keys']} keys,"
                            f" {result['requests_per_second']:.0f} req/s; windows "
                            + " ".join(f"{ratio:.2f}" for ratio in result["windows"]),
                            flush=True,
                        )

    medians = {
        trace: {size: {name: median_of(runs) for name, runs in by_name.items()} for size, by_name in by_size.items()}
        for trace, by_size in raw.items()
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "redis": version},
        "builds": builds,
        "also": args.also,
        "quick": args.quick,
        "requests": requests,
        "max_memory_mib": max_memory,
        "keyspace": keyspace,
        "batch": args.batch,
        "runs": args.runs,
        "medians": medians,
        "raw": raw,
    }
    text = render(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = "hit_ratio_quick" if args.quick else "hit_ratio"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.txt").write_text(text)
    write_results_md()
    return 0


def median_of(runs: list[dict]) -> dict:
    """Per-figure medians over runs (per window too)."""
    merged: dict[str, Any] = {}
    for field in runs[0]:
        if field == "windows":
            merged[field] = [statistics.median(values) for values in zip(*(run[field] for run in runs))]
        else:
            merged[field] = statistics.median(run[field] for run in runs)
    return merged


def render(report: dict) -> str:
    """The text table of one report."""
    lines = [
        f"Hit ratio, cache-aside (GET; SET on a miss), {report['requests']:,} requests per trace,"
        f" keyspace {report['keyspace']:,}, max-memory {report['max_memory_mib']} MiB for every server;"
        f" median of {report['runs']} run(s); {report['date']} at {report['commit']}; {report['machine']['redis']}",
        "aegis builds: " + ", ".join(f"{name} {build}" for name, build in report["builds"].items()),
        f"{'trace':<6}{'value':>6} {'server':<15}{'hit ratio':>10}{'keys':>9}{'used MiB':>9}{'RSS MiB':>8}"
        f"{'req/s':>8}{'cpu us':>7}  hit ratio per window",
    ]
    for trace, by_size in report["medians"].items():
        for size, by_name in by_size.items():
            for name, figures in by_name.items():
                lines.append(
                    f"{trace:<6}{size:>6} {name:<15}{figures['hit_ratio']:>10.3f}{figures['keys']:>9.0f}"
                    f"{figures['used_memory'] / 2**20:>9.1f}{figures['rss'] / 2**20:>8.1f}"
                    f"{figures['requests_per_second']:>8.0f}{figures['server_cpu_us_per_request']:>7.1f}  "
                    + " ".join(f"{ratio:.2f}" for ratio in figures["windows"])
                )
    return "\n".join(lines) + "\n"


def write_results_md() -> bool:
    """Replace (or add) this benchmark's section of bench/RESULTS.md, from the latest full and quick reports."""
    reports = [RESULTS / name for name in ("hit_ratio.json", "hit_ratio_quick.json")]
    body = [
        "Cache-aside client (GET; SET on a miss), pipelined in order per key; every server under the same"
        " memory budget; `keys` held at the end, `used MiB` the server's own accounting, `cpu us` server CPU"
        " per request; the hit ratio per window shows a collapse that the overall figure averages away."
        " Run: `python bench/hit_ratio.py` (`--quick` for the smaller run).",
        "",
    ]
    found = [path for path in reports if path.exists()]
    for path in found:
        report = json.loads(path.read_text())
        body += [
            f"### {report['requests']:,} requests, {report['max_memory_mib']} MiB"
            + (" (`--quick`)" if report["quick"] else ""),
            "",
            "```",
            render(report).rstrip(),
            "```",
            "",
        ]
    if found:
        write_section(
            "hit_ratio.py", SECTION_TITLE, ", ".join(f"`bench/results/{path.name}`" for path in found), "\n".join(body)
        )
    return bool(found)


if __name__ == "__main__":
    sys.exit(main())
