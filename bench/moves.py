"""Benchmark: foreground latency while a fourth node joins and shards are copied to it, and the copy rate.

Not a test. A 3-node cluster on loopback (127.0.0.1-3, the harness of
tests/cluster_harness.py, ``--shards`` shards (256), RF 3, ``--wal off``) is filled with
``--keys`` keys of 100 bytes (pipelined SETs to each slot's owner). Saturation
is ``redis-benchmark --cluster -t set -d 100 -c 50 -P 1``'s requests/s; the
foreground load is then an open-loop writer at half of it (one RESP connection
per node, SETs of 100 bytes to the slot's owner, routes refreshed from CLUSTER
SLOTS every half second; a reply's latency counts from its scheduled send).

Three windows under that load, each ``--window`` seconds or as long as the move:

* ``before``: no move.
* ``move``: node n3 starts and joins; the window lasts from its start until
  every node's INFO replication shows no shard copy sent, queued or received
  and the copy counters stopped moving (at least ``--window`` seconds).
* ``after``: no move again (the four nodes).

Per window: the writer's p50/p99/p99.9/max and the replies that were not OK
(MOVED while routes catch up, TRYAGAIN during a lease hand-off). The move's
throughput is the key and value bytes the old nodes sent in shard copies
(INFO's ``aegis_copy_bytes``, summed) over the time from the first copy seen
to the last one done, polled every 0.2 s.

``--bandwidth`` and ``--concurrency`` set ``move_bandwidth`` and
``move_concurrency`` on every node (defaults: the daemon's); the default run
measures the defaults and then ``unlimited`` (bandwidth 0, 64 copies at once)
to show what the throttle buys.

Writes bench/results/moves.{json,txt} (``--quick``: moves_quick.*) and its
section of bench/RESULTS.md.

    python bench/moves.py [--keys 200000] [--window 10] [--quick] [--render]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import socket
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replication_throughput import InfoPoller, run_cluster_benchmark, slot_owners, start_cluster
from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import RESULTS, require_redis_tools

from aegiskv.cluster.slots import key_slot
from aegiskv.server.settings import SETTINGS_BY_NAME
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, topology, wait_for_agreement

SCRIPT = "moves.py"
SECTION_TITLE = "Moves: foreground latency during a join, and copy throughput"
SECTION_STEMS = ["moves"]
SECTION_INTRO = (
    "A 3-node cluster (RF 3) holding keys of 100 B under an open-loop SET load at half of saturation;\n"
    "a fourth node joins. The writer's latency in a window with the move is compared with windows\n"
    "without one, at the default `move_bandwidth`/`move_concurrency` and unlimited (the file gives\n"
    "the command, shard and key counts, and the machine's load). Target (issue #23): p99 during a\n"
    "move <= 2x the p99 without one."
)
VARIANTS = {
    "default": (
        int(SETTINGS_BY_NAME["move_bandwidth"].default),
        int(SETTINGS_BY_NAME["move_concurrency"].default),
    ),
    "unlimited": (0, 64),
}


class RoutedWriter:
    """Open-loop SETs at a fixed rate, each to its slot's owner; routes refreshed on request.

    Commands leave on schedule whether or not earlier replies came back; replies
    are matched to send times in order per connection. Each reply is recorded as
    (scheduled send time, latency, OK or not).
    """

    def __init__(self, owners: list[tuple[str, int]], rate: float, keys: int) -> None:
        self.rate = rate
        self.keys = keys
        self._selector = selectors.DefaultSelector()
        self._connections: dict[tuple[str, int], socket.socket] = {}
        self._pending: dict[tuple[str, int], deque[float]] = {}
        self._buffers: dict[tuple[str, int], bytes] = {}
        self._owners: list[tuple[str, int]] = []
        self.replies: list[tuple[float, float, bool]] = []
        self.errors: dict[str, int] = {}
        self._next_key = 0
        self._started = time.monotonic()
        self._sent = 0
        self.reroute(owners)

    def reroute(self, owners: list[tuple[str, int]]) -> None:
        for address in set(owners) - set(self._connections):
            connection = socket.create_connection(address, timeout=10)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections[address] = connection
            self._pending[address] = deque()
            self._buffers[address] = b""
            self._selector.register(connection, selectors.EVENT_READ, address)
        self._owners = owners

    def run_until(self, end: float) -> None:
        """Write on schedule until ``end`` (monotonic), reading replies in between."""
        value = b"v" * 100
        while True:
            now = time.monotonic()
            if now >= end:
                return
            due = int((now - self._started) * self.rate) - self._sent
            if due > 0:
                batches: dict[tuple[str, int], list[bytes]] = {}
                for index in range(due):
                    key = b"key:%d" % (self._next_key % self.keys)
                    self._next_key += 1
                    address = self._owners[key_slot(key)]
                    batches.setdefault(address, []).append(
                        b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$100\r\n%b\r\n" % (len(key), key, value)
                    )
                    # The scheduled time, not now: a writer that fell behind still counts the wait.
                    self._pending[address].append(self._started + (self._sent + index + 1) / self.rate)
                self._sent += due
                for address, parts in batches.items():
                    self._connections[address].sendall(b"".join(parts))
            next_due = self._started + (self._sent + 1) / self.rate
            self._read(max(0.0, min(next_due, end) - time.monotonic()))

    def drain(self, timeout: float = 60.0) -> None:
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
            lines = (self._buffers[address] + data).split(b"\r\n")
            self._buffers[address] = lines.pop()
            pending = self._pending[address]
            for line in lines:
                sent_at = pending.popleft()
                ok = line == b"+OK"
                self.replies.append((sent_at, now - sent_at, ok))
                if not ok:
                    kind = line.split(b" ", 1)[0].decode(errors="replace")
                    self.errors[kind] = self.errors.get(kind, 0) + 1

    def close(self) -> None:
        self._selector.close()
        for connection in self._connections.values():
            connection.close()


def fill(node: LocalNode, keys: int) -> None:
    """``keys`` SETs of 100 bytes, pipelined in batches to each slot's owner; those refused (TRYAGAIN
    while a lease moves, MOVED) are sent again with fresh routes."""
    value = b"v" * 100
    todo = list(range(keys))
    for _attempt in range(20):
        owners = routes(node)
        batches: dict[tuple[str, int], list[int]] = {}
        for index in todo:
            batches.setdefault(owners[key_slot(b"key:%d" % index)], []).append(index)
        todo = []
        for address, indexes in batches.items():
            with socket.create_connection(address, timeout=120) as connection:
                reader = connection.makefile("rb")
                for start in range(0, len(indexes), 2000):
                    chunk = indexes[start : start + 2000]
                    connection.sendall(
                        b"".join(
                            b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$100\r\n%b\r\n" % (len(key), key, value)
                            for key in (b"key:%d" % index for index in chunk)
                        )
                    )
                    todo += [index for index in chunk if reader.readline() != b"+OK\r\n"]
        if not todo:
            return
        time.sleep(0.5)  # a lease moving: its election takes a moment
    raise RuntimeError(f"fill: {len(todo)} keys still refused")


def moving(node: LocalNode) -> bool:
    """Whether ``node``'s map still stages a move (a shard with learners or leaving members), or lacks n3."""
    shards = topology(node)["shards"]
    staged = any(shard.get("learners") or shard.get("leaving") for shard in shards)
    return staged or not any("n3" in shard.get("replicas", []) for shard in shards)


def routes(node: LocalNode, attempts: int = 10) -> list[tuple[str, int]]:
    """CLUSTER SLOTS of ``node``, asked again when it does not answer within its timeout (a node
    busy with resyncs after the fill, on shared cores, can take that long)."""
    for attempt in range(attempts):
        try:
            return slot_owners(node)
        except (TimeoutError, RuntimeError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def settle(nodes: list[LocalNode], timeout: float = 600.0) -> None:
    """Until no node sends, queues or receives a shard copy and every follower acknowledged every change."""
    pollers = [InfoPoller(node) for node in nodes]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = [poller.fields() for poller in pollers]
            busy = sum(
                int(field[name])
                for field in fields
                for name in ("aegis_copies_sending", "aegis_copies_queued", "aegis_copies_receiving")
            )
            if not busy and all(field["aegis_max_follower_lag_changes"] == "0" for field in fields):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the cluster did not settle after the fill in {timeout} s")
    finally:
        for poller in pollers:
            poller.close()


def quantiles(replies: list[tuple[float, float, bool]], start: float, end: float) -> dict[str, Any]:
    window = sorted(latency for sent_at, latency, _ok in replies if start <= sent_at < end)
    failed = sum(1 for sent_at, _latency, ok in replies if start <= sent_at < end and not ok)

    def at(fraction: float) -> float:
        return window[min(len(window) - 1, int(fraction * len(window)))] * 1e3 if window else 0.0

    return {
        "replies": len(window),
        "not_ok": failed,
        "seconds": end - start,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": window[-1] * 1e3 if window else 0.0,
    }


def copy_state(pollers: list[InfoPoller]) -> tuple[int, int, int]:
    """(copies sent, queued or received now; copy bytes sent so far; copies completed), over the nodes."""
    busy = sent = completed = 0
    for poller in pollers:
        fields = poller.fields()
        busy += sum(int(fields[name]) for name in ("aegis_copies_sending", "aegis_copies_queued"))
        busy += int(fields["aegis_copies_receiving"])
        sent += int(fields["aegis_copy_bytes"])
        completed += int(fields["aegis_copies_completed"])
    return busy, sent, completed


def one_variant(args: argparse.Namespace, scratch: Path, name: str) -> dict[str, Any]:
    bandwidth, concurrency = VARIANTS[name]
    os.environ["AEGIS_MOVE_BANDWIDTH"] = str(bandwidth)  # the harness passes the environment on
    os.environ["AEGIS_MOVE_CONCURRENCY"] = str(concurrency)
    # The join copies each shard it moves whole (the path move_bandwidth governs) only where the
    # shard's history outgrew its backlog; the daemon's 64 MiB would replay a bench-sized data set.
    os.environ["AEGIS_REPLICATION_BACKLOG"] = args.backlog
    root = scratch / name
    root.mkdir()
    cluster, nodes = start_cluster(root, ["--replication-factor", "3"], args.shards)
    try:
        return measure(args, cluster, nodes, name)
    except BaseException:
        for node_id, node in cluster.nodes.items():  # what the nodes said (--log-level warn), to see why
            for line in node.log_text().splitlines()[-40:]:
                print(f"  {node_id}: {line[:240]}", flush=True)
        raise
    finally:
        cluster.close()


def measure(args: argparse.Namespace, cluster: Cluster, nodes: list[LocalNode], name: str) -> dict[str, Any]:
    began = time.monotonic()
    fill(nodes[0], args.keys)
    print(f"  {name}: {args.keys} keys filled in {time.monotonic() - began:.1f}s", flush=True)
    settle(nodes)  # the fill outran the followers: their resyncs end before anything is measured
    owners = routes(nodes[0])
    print(f"  {name}: settled after {time.monotonic() - began:.1f}s", flush=True)
    saturation = run_cluster_benchmark(nodes, ["-c", "50", "-P", "1"], args.saturation_requests)
    rate = saturation["rps"] / 2
    print(f"  {name}: saturation {saturation['rps']:.0f} req/s, load at {rate:.0f}/s", flush=True)
    writer = RoutedWriter(owners, rate, args.keys)
    pollers = [InfoPoller(node) for node in nodes]
    windows: dict[str, dict[str, Any]] = {}
    try:
        writer.run_until(time.monotonic() + 2.0)  # warm-up
        start = time.monotonic()
        writer.run_until(start + args.window)
        windows["before"] = {"start": start, "end": time.monotonic()}
        _, bytes_before, completed_before = copy_state(pollers)
        host, port = nodes[0].addresses["gossip"]
        extra = ["--wal", "off", "--log-level", "warn", "--replication-factor", "3"]
        joined = time.monotonic()
        newcomer = cluster.start(3, seeds=[f"{host}:{port}"], extra=extra)
        writer.run_until(time.monotonic() + 0.2)
        pollers.append(InfoPoller(newcomer))
        first_copy = last_copy = None
        last_bytes, quiet_since = bytes_before, time.monotonic()
        deadline = joined + args.move_timeout
        while True:
            writer.run_until(time.monotonic() + 0.2)
            busy, sent, _ = copy_state(pollers)
            now = time.monotonic()
            if sent != last_bytes or busy:
                first_copy = first_copy or now
                last_copy = now
                last_bytes, quiet_since = sent, now
            if not busy and now - quiet_since >= 2.0 and now - joined >= args.window and not moving(nodes[0]):
                break
            if now > deadline:
                raise RuntimeError(f"the move did not finish in {args.move_timeout} s")
            writer.reroute(routes(nodes[0]))
        windows["move"] = {"start": joined, "end": time.monotonic()}
        _, bytes_after, completed_after = copy_state(pollers)
        wait_for_agreement([*nodes, newcomer], {"n0", "n1", "n2", "n3"}, timeout=120)
        writer.reroute(routes(nodes[0]))
        writer.run_until(time.monotonic() + 3.0)  # routes settle after the hand-offs
        writer.reroute(routes(nodes[0]))
        start = time.monotonic()
        writer.run_until(start + args.window)
        windows["after"] = {"start": start, "end": time.monotonic()}
        writer.drain()
    finally:
        writer.close()
        for poller in pollers:
            poller.close()
    copy_seconds = max(last_copy - first_copy, 1e-3) if first_copy is not None and last_copy is not None else 0.0
    copied = bytes_after - bytes_before
    result: dict[str, Any] = {
        "bandwidth": VARIANTS[name][0],
        "concurrency": VARIANTS[name][1],
        "keys": args.keys,
        "saturation": saturation,
        "load_rate": rate,
        "windows": {label: quantiles(writer.replies, w["start"], w["end"]) for label, w in windows.items()},
        "errors": writer.errors,
        "copies_completed": completed_after - completed_before,
        "copy_bytes": copied,
        "copy_seconds": copy_seconds,
        "copy_mb_per_s": copied / copy_seconds / 1e6 if copy_seconds else 0.0,
    }
    without = max(result["windows"]["before"]["p99_ms"], result["windows"]["after"]["p99_ms"])
    result["p99_ratio"] = result["windows"]["move"]["p99_ms"] / without if without else float("inf")
    return result


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, started: str, elapsed: float) -> list[str]:
    lines = [
        f"bench/moves.py, {started}, {elapsed:.0f} s; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"command: python bench/moves.py --keys {args.keys} --window {args.window:g} --shards {args.shards} "
        f"--backlog {args.backlog}" + (" --quick" if args.quick else ""),
        f"3 nodes RF 3, {args.shards} shards, --wal off, {args.keys} keys x 100 B; load: open-loop SETs at half of "
        "redis-benchmark --cluster -t set -c 50 -P 1",
        "p99 windows: before (3 nodes, no move), move (n3 joins until every copy is done), after (4 nodes)",
        f"load average (1 min) when the run began and ended: {args.load_before}, {os.getloadavg()[0]:.1f} "
        "(the cores are shared: other work on the machine shows in every window)",
        "",
    ]
    header = f"{'variant':<10} {'window':<7} {'replies':>8} {'not OK':>7} {'p50 ms':>8} {'p99 ms':>8}"
    header += f" {'p99.9 ms':>9} {'max ms':>8}"
    for name, result in results.items():
        if "failed" in result:
            lines += [f"{name}: the run failed: {result['failed']}", ""]
            continue
        bandwidth = result["bandwidth"]
        lines.append(
            f"{name}: move_bandwidth {bandwidth if bandwidth else 'unlimited'} B/s, move_concurrency "
            f"{result['concurrency']}; saturation {result['saturation']['rps']:.0f} req/s, load "
            f"{result['load_rate']:.0f}/s"
        )
        lines.append(header)
        for label, window in result["windows"].items():
            lines.append(
                f"{name:<10} {label:<7} {window['replies']:>8} {window['not_ok']:>7} {window['p50_ms']:>8.2f} "
                f"{window['p99_ms']:>8.2f} {window['p999_ms']:>9.2f} {window['max_ms']:>8.1f}"
            )
        target = "met" if result["p99_ratio"] <= 2.0 else "NOT met"
        lines.append(
            f"p99 during the move / worst p99 without: {result['p99_ratio']:.2f}x (target <= 2x: {target}); "
            f"copies {result['copies_completed']}, {result['copy_bytes'] / 1e6:.1f} MB in "
            f"{result['copy_seconds']:.1f} s = {result['copy_mb_per_s']:.2f} MB/s; "
            f"not-OK replies {dict(sorted(result['errors'].items())) or 'none'}"
        )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument(
        "--backlog", default="64KiB", help="replication_backlog of every node (default the least: copies, not replays)"
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds of each window (the move's at least)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"a subset of {','.join(VARIANTS)}")
    parser.add_argument("--saturation-requests", type=int, default=100_000)
    parser.add_argument("--move-timeout", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="50k keys, 4 s windows, the default variant only")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))
    if args.quick:
        args.keys, args.window, args.variants, args.saturation_requests = 50_000, 4.0, "default", 30_000
    wanted = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(wanted) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {sorted(VARIANTS)}")
    require_redis_tools()
    args.load_before = f"{os.getloadavg()[0]:.1f}"
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    clock = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="aegis-movesbench-") as scratch:
        for name in wanted:
            print(f"variant {name}", flush=True)
            try:
                results[name] = one_variant(args, Path(scratch), name)
            except (OSError, RuntimeError) as error:
                # A run that broke (a node reset the writer, the machine too loaded to settle) is
                # reported as such; the other variants' figures stand.
                results[name] = {"failed": f"{type(error).__name__}: {error}"}
    lines = report(results, args, started, time.monotonic() - clock)
    stem = "moves_quick" if args.quick else "moves"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if not args.quick:
        write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
