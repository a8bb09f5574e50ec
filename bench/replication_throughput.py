"""Benchmark: what replication costs a 3-node cluster in SET throughput, and how far followers lag.

Not a test. Each configuration is a fresh 3-node cluster on loopback (nodes on
127.0.0.1-3, the harness of tests/cluster_harness.py, default shard count,
``--wal off``), measured by ``redis-benchmark --cluster -t set -d 100 -r 100000``
at saturation in two shapes:

    -c 50 -P 1    (-n 200000)
    -c 50 -P 16   (-n 300000)

Configurations: ``rf1`` (--replication-factor 1: one copy, no stream), and RF 3
at ``--write-quorum`` 0 (``rf3-w0``: the reply leaves once the primary applied
the write), 2 (``rf3-w2``: once a follower also acknowledged it) and -1
(``rf3-wall``: once both followers did). Per run: requests/s, p50/p99/p99.9
(redis-benchmark's percentile distribution), and server CPU per request (the
three nodes' utime+stime from /proc around the run, summed).

Then, on each RF 3 configuration, a rate-limited writer (open loop, one RESP
connection per node, keys routed by slot, SETs of 100 bytes) writes at half the
rf3-w0 -c 50 -P 1 rate of the same repetition for ``--lag-seconds``, and the
replication lag comes from the nodes themselves: each primary samples the time
from applying a change to a follower's acknowledgement of it
(``aegis_replication_lag_seconds``, see aegiskv/cluster/replication.py
LagMarks); the benchmark scrapes every node's /metrics before and after the
phase and reads p50/p99/max off the difference of the bucket counts, summed
over the nodes (bucket bounds: at most 19% above the true value). It also
polls ``aegis_replication_follower_gap_changes`` (changes a follower has yet to
acknowledge) during the phase and reports the largest seen, and the writer's
own reply latency.

The configurations are interleaved within each repetition (rf3-w0 first: the
lag phase needs its rate), ``--runs`` repetitions (default 3); tables show
medians, and ratios to rf1 are the median of each repetition's ratio (the
machine is shared and moves between runs; ratios within a run are what count).
Everything shares the machine's cores: the three nodes, redis-benchmark and the
writer are not pinned.

Writes bench/results/replication_throughput.{json,txt} (``--quick``:
replication_throughput_quick.*) and its section of bench/RESULTS.md.

    python bench/replication_throughput.py [--runs 3] [--quick] [--render]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import RESULTS, measure_benchmark, require_redis_tools

from aegiskv.cluster.replication import LAG_BUCKET_BOUNDS, quantile_of
from aegiskv.cluster.slots import key_slot
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import FAST_GOSSIP, Cluster, wait_for_agreement
from tests.wire import metric_samples

CONFIGURATIONS: dict[str, list[str]] = {
    "rf3-w0": ["--replication-factor", "3", "--write-quorum", "0"],
    "rf1": ["--replication-factor", "1"],
    "rf3-w2": ["--replication-factor", "3", "--write-quorum", "2"],
    "rf3-wall": ["--replication-factor", "3", "--write-quorum", "-1"],
}
BASELINE = "rf1"
SHAPES = [("c50_P1", ["-c", "50", "-P", "1"], 200_000), ("c50_P16", ["-c", "50", "-P", "16"], 300_000)]
MEMBERS = {"n0", "n1", "n2"}
LAG_METRIC = "aegis_replication_lag_seconds_bucket"
GAP_FIELD = "aegis_follower_gap_changes_"


# -- the cluster ------------------------------------------------------------------------------------


def start_cluster(root: Path, flags: Sequence[str], shards: int) -> tuple[Cluster, list[LocalNode]]:
    cluster = Cluster(root, shards=shards)
    # The daemon's own failure-detection timing, not the harness's fast one for tests: under
    # saturation on shared cores, the fast probes time out, peers are suspected, and shards re-elect.
    for key in FAST_GOSSIP:
        cluster.env.pop(key, None)
    extra = ["--wal", "off", "--log-level", "warn", *flags]
    try:
        first = cluster.start(0, extra=extra)
        host, port = first.addresses["gossip"]
        nodes = [first] + [cluster.start(index, seeds=[f"{host}:{port}"], extra=extra) for index in (1, 2)]
        wait_for_agreement(nodes, MEMBERS, timeout=120)
    except BaseException:
        cluster.close()
        raise
    return cluster, nodes


def resp_address(node: LocalNode) -> tuple[str, int]:
    assert node.resp_address is not None
    return node.resp_address[0], node.resp_address[1]


def slot_owners(node: LocalNode) -> list[tuple[str, int]]:
    """The RESP address serving each of the 16384 slots (CLUSTER SLOTS of ``node``)."""
    host, port = resp_address(node)
    owners: list[tuple[str, int] | None] = [None] * 16384
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
        reader = connection.makefile("rb")
        for first, last, owner in _cluster_slots(_read_resp(reader)):
            for slot in range(first, last + 1):
                owners[slot] = owner
    if any(owner is None for owner in owners):
        raise RuntimeError("CLUSTER SLOTS left slots without an owner")
    return [owner for owner in owners if owner is not None]


def _cluster_slots(reply: Any) -> list[tuple[int, int, tuple[str, int]]]:
    return [(int(row[0]), int(row[1]), (row[2][0].decode(), int(row[2][1]))) for row in reply]


def _read_resp(reader: Any) -> Any:
    """One RESP2 reply from a buffered reader (enough of RESP for CLUSTER SLOTS)."""
    line = reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        return [_read_resp(reader) for _ in range(int(rest))]
    if kind == b"$":
        data = reader.read(int(rest) + 2)
        return data[:-2]
    if kind == b":":
        return int(rest)
    if kind == b"-":
        raise RuntimeError(rest.decode())
    return rest


class InfoPoller:
    """INFO replication of one node over one RESP connection."""

    def __init__(self, node: LocalNode) -> None:
        self._connection = socket.create_connection(resp_address(node), timeout=120)
        self._reader = self._connection.makefile("rb")

    def fields(self) -> dict[str, str]:
        self._connection.sendall(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
        text = _read_resp(self._reader).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def close(self) -> None:
        self._reader.close()
        self._connection.close()


def wait_for_idle(info: list[InfoPoller], timeout: float = 30.0) -> None:
    """Until every follower acknowledged every change (no lag sample is still to come)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(poller.fields()["aegis_max_follower_lag_changes"] == "0" for poller in info):
            return
        time.sleep(0.05)
    raise RuntimeError(f"followers still behind after {timeout} s")


def scrape(node: LocalNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert node.health_address is not None
    connection = http.client.HTTPConnection(*node.health_address, timeout=60)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"/metrics of {node.address_text} answered {status}")
    return metric_samples(body.decode())


def lag_counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[int]:
    """Per-bucket counts (LAG_BUCKET_BOUNDS, then the overflow) of a node's cumulative lag histogram."""
    # By the bound's value: the exposition may spell a bound differently from repr().
    cumulative = {float(labels[0][1]): value for (name, labels), value in samples.items() if name == LAG_METRIC}
    counts = []
    below = 0.0
    for bound in [*LAG_BUCKET_BOUNDS, float("inf")]:
        value = cumulative[bound]
        counts.append(int(value - below))
        below = value
    return counts


# -- load ---------------------------------------------------------------------------------------------


def run_cluster_benchmark(nodes: list[LocalNode], shape: Sequence[str], requests: int) -> dict[str, float]:
    """redis-benchmark --cluster SET: req/s, p50/p99/p99.9 ms, the nodes' CPU us per request."""
    host, port = resp_address(nodes[0])
    command = ["redis-benchmark", "--cluster", "-h", host, "-p", str(port), "-t", "set", "-d", "100"]
    command += ["-r", "100000", "-n", str(requests), "--precision", "3", *shape]
    return measure_benchmark(command, [node.pid for node in nodes], requests, "against the cluster")


class PacedWriter:
    """Open-loop SETs at a fixed rate: one connection per node, each key sent to its slot's owner.

    Commands leave on schedule whether or not earlier replies came back (a closed loop would slow
    down exactly when the servers do, and hide it); replies are matched to send times in order.
    """

    def __init__(self, owners: list[tuple[str, int]], rate: float, keyspace: int = 100_000) -> None:
        self.rate = rate
        self.value = b"v" * 100
        self._selector = selectors.DefaultSelector()
        self._connections: dict[tuple[str, int], socket.socket] = {}
        for address in sorted(set(owners)):
            connection = socket.create_connection(address, timeout=10)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections[address] = connection
            self._selector.register(connection, selectors.EVENT_READ, address)
        self._pending: dict[tuple[str, int], deque[float]] = {address: deque() for address in self._connections}
        self._buffers: dict[tuple[str, int], bytes] = {address: b"" for address in self._connections}
        keys = [b"lag:%d" % index for index in range(keyspace)]
        self._commands = [
            (
                owners[key_slot(key)],
                b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(self.value), self.value),
            )
            for key in keys
        ]
        self.latencies: list[float] = []
        self.errors: list[bytes] = []
        self.sent = 0

    def run(self, seconds: float) -> float:
        """Write for ``seconds`` (not waiting for replies still out); returns the rate sent."""
        started = time.monotonic()
        end = started + seconds
        commands = self._commands
        sent = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - started) * self.rate) - sent
            if due > 0:
                batches: dict[tuple[str, int], list[bytes]] = {}
                for _ in range(due):
                    address, command = commands[self.sent % len(commands)]
                    batches.setdefault(address, []).append(command)
                    self._pending[address].append(now)
                    self.sent += 1
                sent += due
                for address, parts in batches.items():
                    self._connections[address].sendall(b"".join(parts))
            next_due = started + (sent + 1) / self.rate
            self._read(max(0.0, min(next_due, end) - time.monotonic()))
        return sent / (time.monotonic() - started)

    def drain(self, timeout: float = 30.0) -> None:
        """Until every reply came back."""
        deadline = time.monotonic() + timeout
        while any(self._pending.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"replies still missing after {timeout} s")
            self._read(0.1)

    def _read(self, timeout: float) -> None:
        for key, _events in self._selector.select(timeout):
            address = key.data
            data = self._connections[address].recv(1 << 16)
            if not data:
                raise RuntimeError(f"{address} closed the connection")
            now = time.monotonic()
            buffer = self._buffers[address] + data
            lines = buffer.split(b"\r\n")
            self._buffers[address] = lines.pop()  # an incomplete reply, or b""
            pending = self._pending[address]
            for line in lines:
                sent_at = pending.popleft()
                if line == b"+OK":
                    self.latencies.append(now - sent_at)
                else:
                    self.errors.append(line)

    def close(self) -> None:
        self._selector.close()
        for connection in self._connections.values():
            connection.close()


def measure_lag(nodes: list[LocalNode], rate: float, seconds: float) -> dict[str, Any]:
    """Write at ``rate`` for ``seconds``; the nodes' lag samples of that window, and the writer's view.

    /metrics is scraped only while the writer is idle (and every reply and acknowledgement is in):
    a scrape costs a node about 0.1 s of CPU on a thread that competes with its event loop, which
    would show in the very lag it measures. Follower gaps are polled during the window through
    INFO replication, which is cheap.
    """
    writer = PacedWriter(slot_owners(nodes[0]), rate)
    info = [InfoPoller(node) for node in nodes]
    try:
        writer.run(min(2.0, seconds / 4))  # warm-up: connections, the first batches of every shard
        writer.drain()
        wait_for_idle(info)
        before = [lag_counts(scrape(node)) for node in nodes]
        counters_before = [poller.fields() for poller in info]
        writer.latencies.clear()
        writer.errors.clear()
        gap_max = 0
        rates = []
        chunk = 1.0  # poll the follower gaps between chunks of writing
        for _ in range(max(1, round(seconds / chunk))):
            rates.append(writer.run(chunk))
            for poller in info:
                fields = poller.fields()
                gap_max = max([gap_max, *(int(v) for k, v in fields.items() if k.startswith(GAP_FIELD))])
        writer.drain()
        wait_for_idle(info)
        after = [lag_counts(scrape(node)) for node in nodes]
        counters_after = [poller.fields() for poller in info]
    finally:
        writer.close()
        for poller in info:
            poller.close()
    achieved = statistics.mean(rates)
    elections = sum(
        int(late["aegis_lease_elections_started"]) - int(early["aegis_lease_elections_started"])
        for early, late in zip(counters_before, counters_after)
    )
    window = [[late - early for early, late in zip(first, last)] for first, last in zip(before, after)]
    total = [sum(column) for column in zip(*window)]
    latencies = sorted(writer.latencies)

    def writer_quantile(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1e3 if latencies else 0.0

    # The window's maximum: the bound of the highest bucket with a sample (infinite past the last bound).
    highest = max((index for index, count in enumerate(total) if count), default=-1)
    lag_max = [*LAG_BUCKET_BOUNDS, float("inf")][highest] if highest >= 0 else 0.0
    return {
        "target_rate": rate,
        "achieved_rate": achieved,
        "lag_samples": sum(total),
        "lag_p50_ms": quantile_of(total, 0.5) * 1e3,
        "lag_p99_ms": quantile_of(total, 0.99) * 1e3,
        "lag_max_ms": lag_max * 1e3,
        "lag_p99_ms_per_node": [quantile_of(counts, 0.99) * 1e3 for counts in window],
        "follower_gap_max_changes": gap_max,
        "writer_p50_ms": writer_quantile(0.5),
        "writer_p99_ms": writer_quantile(0.99),
        "writer_errors": len(writer.errors),
        "elections_during_window": elections,
        "writer_error_sample": sorted({error.decode(errors="replace")[:80] for error in writer.errors})[:3],
    }


# -- the run ------------------------------------------------------------------------------------------


def one_repetition(args: argparse.Namespace, scratch: Path, repetition: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in args.configurations:
        for attempt in (1, 2):
            try:
                results[name] = one_configuration(args, scratch / f"{name}-{repetition}-{attempt}", name, results)
                break
            except (RuntimeError, OSError) as error:
                # The machine is shared: a node starved for long enough fails a step. Once, that is
                # retried on a fresh cluster (and said); twice ends the run.
                print(f"  {name}: attempt {attempt} failed: {error!r}", flush=True)
                args.retries.append(f"repetition {repetition + 1} {name}: {error!r}"[:200])
                if attempt == 2:
                    raise
    return results


def one_configuration(
    args: argparse.Namespace, root: Path, name: str, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    cluster, nodes = start_cluster(root, CONFIGURATIONS[name], args.shards)
    try:
        row: dict[str, Any] = {}
        for shape, flags, requests in SHAPES:
            row[shape] = run_cluster_benchmark(nodes, flags, max(10_000, int(requests * args.scale)))
            print(f"  {name} {shape}: {format_run(row[shape])}", flush=True)
        if name != BASELINE:
            saturated = results.get("rf3-w0", row)["c50_P1"]["rps"]
            row["lag"] = measure_lag(nodes, saturated / 2, args.lag_seconds)
            print(f"  {name} lag: {format_lag(row['lag'])}", flush=True)
        return row
    finally:
        cluster.close()


def format_run(run: dict[str, float]) -> str:
    return (
        f"{run['rps']:9.0f} rps  p50/p99/p99.9 {run['p50_ms']:.2f}/{run['p99_ms']:.2f}/{run['p999_ms']:.2f} ms"
        f"  {run['cpu_us_per_request']:.1f} us CPU/req"
    )


def format_lag(lag: dict[str, Any]) -> str:
    return (
        f"{lag['achieved_rate']:.0f}/{lag['target_rate']:.0f} writes/s, lag p50/p99/max "
        f"{lag['lag_p50_ms']:.2f}/{lag['lag_p99_ms']:.2f}/{lag['lag_max_ms']:.2f} ms over {lag['lag_samples']} samples,"
        f" gap max {lag['follower_gap_max_changes']:.0f}, writer p50/p99 {lag['writer_p50_ms']:.2f}/"
        f"{lag['writer_p99_ms']:.2f} ms, {lag['writer_errors']} errors"
    )


def median_of(runs: list[dict[str, dict[str, Any]]], name: str, *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run[name]
        for step in path:
            value = value[step]
        values.append(float(value))
    return statistics.median(values)


def summarise(runs: list[dict[str, dict[str, Any]]], configurations: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in configurations:
        entry: dict[str, Any] = {}
        for shape, _flags, _requests in SHAPES:
            metrics = {key: median_of(runs, name, shape, key) for key in runs[0][name][shape]}
            if BASELINE in configurations:
                ratios = sorted(run[name][shape]["rps"] / run[BASELINE][shape]["rps"] for run in runs)
                metrics["ratio_to_rf1"] = statistics.median(ratios)
                metrics["ratio_to_rf1_each_run"] = ratios
            entry[shape] = metrics
        if "lag" in runs[0][name]:
            lag_keys = [key for key, value in runs[0][name]["lag"].items() if isinstance(value, (int, float))]
            entry["lag"] = {key: median_of(runs, name, "lag", key) for key in lag_keys}
            entry["lag"]["lag_p99_ms_each_run"] = sorted(run[name]["lag"]["lag_p99_ms"] for run in runs)
        summary[name] = entry
    return summary


TARGETS = {"rf3-w0": 0.8, "rf3-w2": 0.5}  # issue 22: RF 3 throughput against RF 1, at least


def report(summary: dict[str, Any], args: argparse.Namespace, started: str, elapsed: float) -> list[str]:
    lines = [
        f"replication throughput: 3 nodes on loopback, --wal off, {args.shards} shards, redis-benchmark --cluster"
        " -t set -d 100 -r 100000",
        f"{started}, {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs shared"
        " by the 3 nodes, the load generator and other work on the machine (nothing pinned)",
        f"medians of {args.runs} interleaved repetitions; ratio = median of each repetition's ratio to rf1"
        " (each run's ratios in brackets)",
        "",
    ]
    for shape, flags, _requests in SHAPES:
        lines.append(f"{shape} ({' '.join(flags)}):")
        lines.append(
            f"  {'configuration':10} {'req/s':>9} {'ratio':>6} {'each run':>20} {'p50/p99/p99.9 ms':>20}"
            f" {'CPU us/req':>10}  target"
        )
        for name, entry in summary.items():
            run = entry[shape]
            ratio = run.get("ratio_to_rf1", float("nan"))
            each = "/".join(f"{value:.2f}" for value in run.get("ratio_to_rf1_each_run", []))
            target = TARGETS.get(name)
            verdict = f">= {target}: {'met' if ratio >= target else 'MISSED'}" if target and shape == "c50_P1" else ""
            latency = f"{run['p50_ms']:.2f}/{run['p99_ms']:.2f}/{run['p999_ms']:.2f}"
            lines.append(
                f"  {name:10} {run['rps']:9.0f} {ratio:6.2f} {'[' + each + ']':>20} {latency:>20}"
                f" {run['cpu_us_per_request']:10.1f}  {verdict}"
            )
        lines.append("")
    lines.append(
        "replication lag at half of rf3-w0's -c50 -P1 rate (open-loop writer, one connection per node):"
        " the nodes' own samples (apply on the primary -> follower's ack), bucket bounds (<= 19% high)"
    )
    lines.append(
        f"  {'configuration':10} {'writes/s':>9} {'lag p50/p99/max ms':>22} {'p99 each run':>20} {'samples':>8}"
        f" {'gap max':>8} {'writer p50/p99 ms':>18} {'elections':>9}  target p99 <= 5 ms"
    )
    for name, entry in summary.items():
        lag = entry.get("lag")
        if lag is None:
            continue
        each = "/".join(f"{value:.2f}" for value in lag["lag_p99_ms_each_run"])
        lines.append(
            f"  {name:10} {lag['achieved_rate']:9.0f} "
            f"{lag['lag_p50_ms']:.2f}/{lag['lag_p99_ms']:.2f}/{lag['lag_max_ms']:.2f}".rjust(33)
            + f" {'[' + each + ']':>20} {lag['lag_samples']:8.0f} {lag['follower_gap_max_changes']:8.0f}"
            f" {lag['writer_p50_ms']:.2f}/{lag['writer_p99_ms']:.2f}".rjust(19)
            + f" {lag['elections_during_window']:9.0f}  {'met' if lag['lag_p99_ms'] <= 5.0 else 'MISSED'}"
        )
    lines += [
        "",
        f"(run time {elapsed:.0f} s; `gap max`: most changes one follower had yet to acknowledge, polled each second;"
        " `elections`: lease elections the three nodes started during the lag window)",
    ]
    return lines


SCRIPT = "replication_throughput.py"
SECTION_TITLE = "Replication throughput and lag"
SECTION_STEMS = ["replication_throughput"]
SECTION_INTRO = (
    "A 3-node cluster on loopback at RF 1 and at RF 3 with write quorums 0, 2 and -1, saturated by "
    "`redis-benchmark --cluster -t set`, and the replication lag the nodes measure (applied on the primary "
    "to acknowledged by a follower) at half of RF 3 W = 0's saturation rate. Issue 22's targets: W = 0 >= 0.8x "
    "RF 1, W = 2 >= 0.5x, lag p99 <= 5 ms. Run: `python bench/replication_throughput.py`."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 run, fewer requests, a short lag phase")
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument(
        "--configurations", default=",".join(CONFIGURATIONS), help=f"a subset of {','.join(CONFIGURATIONS)}"
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    wanted = [name for name in args.configurations.split(",") if name]
    unknown = sorted(set(wanted) - set(CONFIGURATIONS))
    if unknown:
        parser.error(f"unknown configurations {unknown}: choose from {sorted(CONFIGURATIONS)}")
    # rf3-w0 runs first in every repetition: the lag phases write at half its rate.
    args.configurations = [name for name in CONFIGURATIONS if name in wanted]
    if any(name not in (BASELINE, "rf3-w0") for name in wanted) and "rf3-w0" not in wanted:
        parser.error("the lag phase writes at half of rf3-w0's rate: include rf3-w0")
    args.scale = 1.0
    args.retries = []
    if args.quick:
        args.runs, args.scale, args.lag_seconds = 1, 0.25, min(args.lag_seconds, 4.0)
    require_redis_tools()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    clock = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="aegis-replbench-") as scratch:
        for repetition in range(args.runs):
            print(f"repetition {repetition + 1}/{args.runs}", flush=True)
            runs.append(one_repetition(args, Path(scratch), repetition))
    summary = summarise(runs, args.configurations)
    lines = report(summary, args, started, time.monotonic() - clock)
    stem = "replication_throughput_quick" if args.quick else "replication_throughput"
    RESULTS.mkdir(exist_ok=True)
    if args.retries:
        lines += ["retried on a fresh cluster:", *(f"  {retry}" for retry in args.retries)]
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"summary": summary, "runs": runs, "retries": args.retries}, indent=2) + "\n"
    )
    (RESULTS / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if not args.quick:
        write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
