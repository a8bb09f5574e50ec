"""Benchmark: anti-entropy on a 3-node cluster: how fast a damaged copy is repaired, what idle rounds cost.

Not a test. A fresh 3-node cluster on loopback (nodes on 127.0.0.1-3, the
harness of tests/cluster_harness.py with the daemon's own gossip timing,
``--wal off``, RF 3, default shard count), ``--keys`` keys of ``--value-bytes``
bytes loaded over RESP (pipelined, routed by slot), every node started with
``--anti-entropy-interval`` and ``enable_debug_command``.

1. **Idle.** Once the three copies are equal (DEBUG DIGEST, a hash of every
   entry a node holds, agrees on all three), each node's CPU (utime+stime from
   /proc) over ``--idle-seconds`` with no client traffic: the rounds find no
   difference, so this is what anti-entropy costs a node while idle of
   differences (gossip and lease renewals included: the figure is an upper bound).
2. **Repair.** DEBUG DIVERGE ``--divergent`` on one node damages that many keys
   of its own copy, in shards it follows (dropped, value changed, newer version,
   deadline changed, a key added; see aegiskv/node/operations.py Node.diverge).
   The time until that node's ``anti_entropy_keys_repaired`` grew by the count
   and no repair is in flight anywhere, or (a shard's lease moved to the damaged
   node meanwhile, which makes its copy the truth) until the three DEBUG DIGESTs
   agree, checked every 5 s; then a last DEBUG DIGEST check that the copies are
   equal; the repair traffic from INFO replication.

Writes bench/results/anti_entropy.{json,txt} and its section of bench/RESULTS.md.

    python bench/anti_entropy.py [--keys 1000000] [--divergent 10000] [--interval 20] [--render]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import RESULTS, cpu_seconds

import aegiskv
from aegiskv.client.errors import AegisError
from aegiskv.cluster.slots import key_slot
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import FAST_GOSSIP, Cluster, wait_for_agreement

MEMBERS = {"n0", "n1", "n2"}
SCRIPT = "anti_entropy.py"
SECTION_TITLE = "Anti-entropy repair"
SECTION_INTRO = (
    "A 3-node RF 3 cluster on loopback; one node's copy damaged behind replication's back (DEBUG DIVERGE), "
    "time until anti-entropy repaired it, and each node's CPU while the copies are equal. Target (issue 23): "
    "10,000 divergent keys out of 1,000,000 repaired within 30 s, under 10% of a core per node while idle. "
    "Run: `python bench/anti_entropy.py`."
)
SECTION_STEMS = ["anti_entropy"]


def start_cluster(
    root: Path, interval: float, shards: int | None, lease_duration: float
) -> tuple[Cluster, list[LocalNode]]:
    env = {
        "AEGIS_ANTI_ENTROPY_INTERVAL": f"{interval:g}",
        "AEGIS_ENABLE_DEBUG_COMMAND": "true",
        "AEGIS_LEASE_DURATION": f"{lease_duration:g}",
    }
    cluster = Cluster(root, shards=shards or 256, env=env)
    for key in FAST_GOSSIP:  # the daemon's own failure-detection timing: a loaded machine trips the fast one
        cluster.env.pop(key, None)
    extra = ["--wal", "off", "--log-level", "info"]
    try:
        first = cluster.start(0, extra=extra)
        host, port = first.addresses["gossip"]
        nodes = [first] + [cluster.start(index, seeds=[f"{host}:{port}"], extra=extra) for index in (1, 2)]
        for attempt in range(5):
            try:
                wait_for_agreement(nodes, MEMBERS, timeout=180)
                break
            except AegisError:  # a node too starved to answer TOPOLOGY within the client's 2 s: ask again
                if attempt == 4:
                    raise
    except BaseException:
        cluster.close()
        raise
    return cluster, nodes


def connection(node: LocalNode) -> redis.Redis:
    assert node.resp_address is not None
    return redis.Redis(host=node.resp_address[0], port=node.resp_address[1], socket_timeout=600)


def slot_owners(node: LocalNode) -> list[Any]:
    """The RESP address serving each slot (CLUSTER SLOTS)."""
    with connection(node) as client:
        rows = client.execute_command("CLUSTER SLOTS")
    owners: list[Any] = [None] * 16384
    for row in rows:
        host = row[2][0].decode() if isinstance(row[2][0], bytes) else row[2][0]
        for slot in range(int(row[0]), int(row[1]) + 1):
            owners[slot] = (host, int(row[2][1]))
    return owners


def load(nodes: list[LocalNode], keys: int, value_bytes: int) -> float:
    """SET ``keys`` keys on their primaries, pipelined; returns the seconds it took.

    A SET refused (an election under way on a loaded machine: TRYAGAIN, or MOVED) is sent
    again after the slot map is read afresh.
    """
    clients = {node.resp_address: connection(node) for node in nodes}
    value = b"v" * value_bytes
    started = time.monotonic()
    todo = [b"ae:%d" % index for index in range(keys)]
    while todo:
        owners = slot_owners(nodes[0])
        failed: list[bytes] = []
        for start in range(0, len(todo), 20_000):
            pipes: dict[Any, Any] = {}
            batch: dict[Any, list[bytes]] = {}
            for key in todo[start : start + 20_000]:
                owner = owners[key_slot(key)]
                if owner not in pipes:
                    pipes[owner] = clients[owner].pipeline(transaction=False)
                    batch[owner] = []
                pipes[owner].set(key, value)
                batch[owner].append(key)
            for owner, pipe in pipes.items():
                answers = pipe.execute(raise_on_error=False)
                failed += [key for key, answer in zip(batch[owner], answers, strict=True) if answer is not True]
        todo = failed
        if todo:
            time.sleep(1.0)
    for client in clients.values():
        client.close()
    return time.monotonic() - started


def digests(nodes: list[LocalNode]) -> list[str]:
    result = []
    for node in nodes:
        with connection(node) as client:
            answer = client.execute_command("DEBUG", "DIGEST")
        result.append(answer.decode() if isinstance(answer, bytes) else str(answer))
    return result


def wait_equal(nodes: list[LocalNode], timeout: float) -> float:
    started = time.monotonic()
    while True:
        if len(set(digests(nodes))) == 1:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"copies still differ after {timeout:g}s")
        time.sleep(1.0)


def replication(node: LocalNode) -> dict[str, Any]:
    """INFO replication over RESP, with a long timeout: a loaded machine answers slowly."""
    with connection(node) as client:
        return dict(client.info("replication"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--divergent", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=20.0, help="anti_entropy_interval of every node (s)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--shards", type=int, default=None, help="default: the daemon's")
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=2.0,
        help="lease_duration of every node (s); longer keeps an overloaded machine from re-electing all the time",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for the repair (s)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        sys.exit(render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS))

    with tempfile.TemporaryDirectory(prefix="aegis-ae-bench-") as scratch:
        cluster, nodes = start_cluster(Path(scratch), args.interval, args.shards, args.lease_duration)
        try:
            load_seconds = load(nodes, args.keys, args.value_bytes)
            print(f"loaded {args.keys} keys in {load_seconds:.1f}s", flush=True)
            settle_seconds = wait_equal(nodes, 600)
            print(f"copies equal {settle_seconds:.1f}s after the load", flush=True)
            pids = [node.process.pid for node in nodes]
            before = [replication(node) for node in nodes]
            cpu_before = [cpu_seconds(pid) for pid in pids]
            idle_started = time.monotonic()
            time.sleep(args.idle_seconds)
            idle_seconds = time.monotonic() - idle_started
            cpu_idle = [(cpu_seconds(pid) - start) / idle_seconds for pid, start in zip(pids, cpu_before, strict=True)]
            after_idle = [replication(node) for node in nodes]
            idle_rounds = sum(
                a["aegis_anti_entropy_rounds"] - b["aegis_anti_entropy_rounds"]
                for a, b in zip(after_idle, before, strict=True)
            )
            idle_differing = sum(
                a["aegis_anti_entropy_buckets_differing"] - b["aegis_anti_entropy_buckets_differing"]
                for a, b in zip(after_idle, before, strict=True)
            )
            ae_idle = [
                (a["aegis_anti_entropy_cpu_ms"] - b["aegis_anti_entropy_cpu_ms"]) / 1000 / idle_seconds
                for a, b in zip(after_idle, before, strict=True)
            ]
            print(
                f"idle: CPU per node {[f'{share:.1%}' for share in cpu_idle]}, anti-entropy's part "
                f"{[f'{share:.1%}' for share in ae_idle]}, {idle_rounds} rounds",
                flush=True,
            )

            victim = next(node for node in nodes if replication(node)["aegis_shards_follower"] > 0)
            base = replication(victim)["aegis_anti_entropy_keys_repaired"]
            sent_before = sum(section["aegis_anti_entropy_bytes_sent"] for section in after_idle)
            keys_sent_before = sum(section["aegis_anti_entropy_keys_sent"] for section in after_idle)
            with connection(victim) as client:
                changed = int(client.execute_command("DEBUG", "DIVERGE", args.divergent))
            damaged_at = time.monotonic()
            print(f"damaged {changed} keys on n{nodes.index(victim)}", flush=True)
            repaired_seconds = None
            checked = damaged_at
            while time.monotonic() - damaged_at < args.timeout:
                sections = [replication(node) for node in nodes]
                victim_section = sections[nodes.index(victim)]
                repaired = victim_section["aegis_anti_entropy_keys_repaired"] - base
                in_flight = sum(section["aegis_anti_entropy_repairs_in_flight"] for section in sections)
                if repaired >= changed and not in_flight:
                    repaired_seconds = time.monotonic() - damaged_at
                    break
                # A shard whose lease moved to the damaged node meanwhile is "repaired" the other way
                # (its copy is the truth then; the followers take it): the counter never reaches the
                # count, so equal digests end the wait too (checked every few seconds: they walk every key).
                if not in_flight and time.monotonic() - checked >= 5.0:
                    checked = time.monotonic()
                    if len(set(digests(nodes))) == 1:
                        repaired_seconds = checked - damaged_at
                        break
                time.sleep(0.25)
            final = [replication(node) for node in nodes]
            equal = len(set(digests(nodes))) == 1
            bytes_sent = sum(section["aegis_anti_entropy_bytes_sent"] for section in final) - sent_before
            keys_sent = sum(section["aegis_anti_entropy_keys_sent"] for section in final) - keys_sent_before
            repaired_total = final[nodes.index(victim)]["aegis_anti_entropy_keys_repaired"] - base
        finally:
            cluster.close()

    shards = args.shards or 256
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        "build": aegiskv.build(),
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "shards": shards,
        "interval_s": args.interval,
        "lease_duration_s": args.lease_duration,
        "load_seconds": round(load_seconds, 1),
        "idle_seconds": round(idle_seconds, 1),
        "idle_cpu_per_node": [round(share, 4) for share in cpu_idle],
        "idle_anti_entropy_cpu_per_node": [round(share, 4) for share in ae_idle],
        "idle_rounds": idle_rounds,
        "idle_buckets_differing": idle_differing,
        "divergent_requested": args.divergent,
        "divergent": changed,
        "repair_seconds": None if repaired_seconds is None else round(repaired_seconds, 1),
        "keys_repaired": repaired_total,
        "keys_sent": keys_sent,
        "bytes_sent": bytes_sent,
        "copies_equal_after": equal,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "anti_entropy.json").write_text(json.dumps(result, indent=2) + "\n")
    repair = "not within the timeout" if repaired_seconds is None else f"{repaired_seconds:.1f} s"
    lines = [
        f"Measured {result['when']} on {result['machine']}; request path {result['build']}.",
        f"3 nodes, RF 3, {shards} shards, {args.keys:,} keys of {args.value_bytes} bytes, "
        f"anti_entropy_interval {args.interval:g} s, anti_entropy_bandwidth default (8 MiB/s), "
        f"lease_duration {args.lease_duration:g} s.",
        "",
        f"idle ({idle_seconds:.0f} s, copies equal): CPU per node "
        + ", ".join(f"{share:.1%}" for share in cpu_idle)
        + " of a core (everything the node did, gossip and leases included), of which anti-entropy "
        + ", ".join(f"{share:.1%}" for share in ae_idle)
        + f" (its own thread-CPU counter); {idle_rounds} rounds, "
        f"{idle_differing} buckets differing",
        f"repair: {changed:,} keys damaged on one follower, repaired in {repair} "
        f"({repaired_total:,} keys changed there, {keys_sent:,} keys / {bytes_sent:,} bytes sent "
        "by the primaries); "
        f"copies equal after: {'yes' if equal else 'NO'}",
        f"(load: {load_seconds:.0f} s; time to repair counts from DEBUG DIVERGE to the last repair applied)",
    ]
    (RESULTS / "anti_entropy.txt").write_text("\n".join(lines) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
