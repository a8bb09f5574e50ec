"""Fault rounds: what kill -9, SIGSTOP, restarts and partitions cost, AegisKV against Redis Cluster.

Not a test. Each round builds a fresh cluster in network namespaces of its own
(tests/faults/), runs the recorded writer (redis-py RedisCluster, unique keys,
``--rate`` writes/s), does one fault, heals, lets the cluster settle, reads
every key back and checks (tests/faults/checker.py). Per system, write
quorum and fault, over the rounds: acknowledged writes lost, acknowledgements
from a node past its lease, how long the slots of the faulted node stayed
unwritable (per slot, pooled over the rounds: p50 / p99 / max), and client
errors outside every unavailability window.

Systems: ``aegiskv`` (3 nodes, RF 3, the daemon's default timing unless
``--fast-gossip``; at W = 0 and, when the daemon has ``--write-quorum``, at
W = majority) and ``redis`` (3 masters + 3 replicas, node timeout 5 s, no
persistence). The writer uses a 1 s socket timeout on both, so a stopped node
holds a writer thread for a second, not for the whole pause.

Faults: ``kill`` (kill -9 a primary, write 12 s more), ``pause`` (SIGSTOP a
primary for ``--pause`` seconds), ``kill-restart`` (kill -9, start it again
with the same id and data dir ``--downtime`` seconds later), ``partition``
(a primary and one client side cut off from the rest for ``--pause`` seconds),
``kill+pause`` (kill -9 a primary while another is stopped for ``--pause`` s).
Planned moves (AegisKV only): ``join`` (a 4th node), ``drain`` (SIGTERM a
primary), ``scale`` (3 -> 5 -> 3: two joins, then n0 and n1 drained, each
step waited for until nothing moves), ``rolling-restart`` (each node drained
and started again with its id and data dir, waited for until every shard has
its replicas), ``join-partition`` (a primary cut off for ``--pause`` s, a 4th
node joins the majority meanwhile), ``leave`` (4 nodes, kill -9 of one that
never comes back: the rest must re-replicate to the RF). Their windows are
pooled over every step.

Writes bench/results/faults.txt and .json and the "Faults" section of
bench/RESULTS.md. Needs root.

    python bench/faults.py --rounds 3 --faults kill,pause,kill-restart --systems aegiskv,redis
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_md import write_section  # bench/results_md.py

from tests.faults.checker import CheckSettings, percentile
from tests.faults.cluster import FAST_GOSSIP, AegisCluster, FaultCluster, RedisCluster
from tests.faults.netns import Network, unavailable_reason
from tests.faults.run import (
    RunOptions,
    Scenario,
    drain,
    isolate,
    join,
    join_during_partition,
    kill,
    kill_restart,
    leave_without_drain,
    pause,
    rolling_restart,
    run_faults,
    scale,
    together,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def daemon_has_write_quorum() -> bool:
    environment = {**os.environ, "PYTHONSAFEPATH": "1"}
    listing = subprocess.run(
        [sys.executable, "-m", "aegiskv", "--help"], capture_output=True, text=True, env=environment
    )
    return "--write-quorum" in listing.stdout


def scenario_for(fault: str, victims: list[str], args: argparse.Namespace) -> Scenario:
    """The scenario of ``fault``; ``victims`` are primaries, the first is the one faulted alone."""
    victim = victims[0]
    if fault == "kill":
        return kill(victim, after=12.0)
    if fault == "pause":
        return pause(victim, args.pause, after=6.0)
    if fault == "kill-restart":
        return kill_restart(victim, downtime=args.downtime, after=6.0)
    if fault == "partition":
        return isolate(victim, args.pause, client_with_victim="c1", after=6.0)
    if fault == "kill+pause":
        # Two primaries at once: no majority is left until the stopped one is continued.
        return together(kill(victim, after=args.pause + 10.0), pause(victims[1], args.pause, after=0.0))
    if fault == "join":
        return join("n3", after=args.move_time)  # a 4th node joins the 3; its shards move to it
    if fault == "drain":
        return drain(victim, after=args.move_time)  # SIGTERM: a planned leave of a primary
    rf = args.replication_factor
    if fault == "scale":
        # 3 -> 5 -> 3: two joins, then two of the original nodes drained (their data lives on only
        # if the joins really copied it).
        return scale(["n3", "n4"], ["n0", "n1"])
    if fault == "rolling-restart":
        return rolling_restart(["n0", "n1", "n2"], replication_factor=rf)
    if fault == "join-partition":
        return join_during_partition("n3", victim, args.pause)
    if fault == "leave":
        return leave_without_drain(victim, replication_factor=rf)
    raise ValueError(f"unknown fault {fault!r}")


# Faults of several steps: their windows are pooled over every step, not only the first event.
MULTI_STEP = {"scale", "rolling-restart", "join-partition", "leave"}
# A node killed for good leaves RF 3 with three nodes to re-replicate onto.
CLUSTER_SIZE = {"leave": 4}


def one_round(system: str, quorum: int | None, fault: str, args: argparse.Namespace) -> dict[str, Any]:
    sides = 2 if fault == "partition" else 1
    with tempfile.TemporaryDirectory(prefix="aegis-faults-") as scratch, Network() as network:
        cluster: FaultCluster
        if system == "aegiskv":
            flags = ["--wal", args.wal, "--replication-factor", str(args.replication_factor)]
            flags += ["--write-quorum", str(quorum)] if quorum else []
            size = CLUSTER_SIZE.get(fault, 3)
            aegis = AegisCluster(network, Path(scratch), size, shards=args.shards, args=flags, client_sides=sides)
            if not args.fast_gossip:
                # The daemon's own defaults: drop the fast timing AegisCluster uses for tests.
                for key in FAST_GOSSIP:
                    aegis.env.pop(key, None)
            cluster = aegis
        else:
            cluster = RedisCluster(network, Path(scratch), node_timeout_ms=args.redis_node_timeout, client_sides=sides)
        try:
            cluster.start_all(settle_timeout=120)
            owners = cluster.slot_owners()
            # Primaries in the order of their first slot (every AegisKV node is a primary of some shards).
            victims = ["n1", "n2"] if system == "aegiskv" else list(dict.fromkeys(owners[s] for s in sorted(owners)))
            options = RunOptions(
                protocol="resp",
                rate=args.rate,
                writers_per_host=args.writers,
                sides=sides,
                warmup=3.0,
                cooldown=3.0,
                settle_timeout=180.0,
                require_settled=False,
                client_options={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
                read_rate=args.read_rate,
                check=CheckSettings(lease=args.lease),
            )
            result = run_faults(cluster, scenario_for(fault, victims, args), options)
            summary = result.summary
            if args.keep_logs and isinstance(cluster, AegisCluster) and _went_wrong(summary):
                # The scratch dir goes away with the round: what explains a loss must outlive it.
                kept = args.keep_logs / f"{fault}-W{quorum or 0}-{time.strftime('%H%M%S')}"
                cluster.save_logs(kept)
                summary["logs_kept_in"] = str(kept)
                print(f"{fault} W={quorum or 0}: node logs kept in {kept}", flush=True)
        finally:
            cluster.close()
    summary = result.summary
    fault_event = result.timeline.events[0]
    victim_slots = set().union(*(impact.slots for impact in fault_event.impacts)) if fault_event.impacts else set()
    share = [w for w in result.workload.writes if w.ok and w.slot in victim_slots and w.done < fault_event.at]
    summary["victim"] = fault_event.nodes[0]
    summary["acked_on_victim_slots_before_fault"] = len(share)
    summary["windows_over"] = "every event" if fault in MULTI_STEP else "the first event"
    return summary


def _went_wrong(summary: dict[str, Any]) -> bool:
    """A round with an acknowledged write lost, a not-found read of an acknowledged key, or a stale ack."""
    reads = summary["reads"]
    return bool(summary["lost"] or summary["stale_acks"] or reads["not_found_but_exists"] or reads["wrong_value"])


def aggregate(all_rounds: list[dict[str, Any]]) -> dict[str, Any]:
    # (A check summary has "failed" too: the writes that failed. A round that broke has only this.)
    failed = [summary["round_failed"] for summary in all_rounds if "round_failed" in summary]
    rounds = [summary for summary in all_rounds if "round_failed" not in summary]
    if not rounds:
        return {"rounds": 0, "failed_rounds": failed}
    windows: list[float] = []
    worst: list[float] = []
    never = 0
    for summary in rounds:
        if summary.get("windows_over") == "every event":
            impacts = [impact for event in summary["events"] for impact in event["impacts"]]
        else:
            impacts = summary["events"][0]["impacts"][:1]
        for impact in impacts:
            windows.extend(value for value in impact["unit_windows_s"] if value is not None)
            never += impact["never_writable_again"]
            if impact["window_s"] is not None:
                worst.append(impact["window_s"])
    acked = sum(summary["acked"] for summary in rounds)
    lost = [summary["lost"] for summary in rounds]
    # Acknowledged before the fault (what the victim held) or after it (by the nodes that took over).
    before = sum(summary["lost_by_phase"].get("before any fault", 0) for summary in rounds)
    victim_share = sum(summary["acked_on_victim_slots_before_fault"] for summary in rounds)
    return {
        "rounds": len(rounds),
        "acked": acked,
        "lost_per_round": lost,
        "lost_fraction": round(sum(lost) / acked, 5) if acked else 0.0,
        "lost_acked_before_fault": before,
        "lost_acked_after_fault": sum(lost) - before,
        "victim_pre_fault_acked": victim_share,
        "victim_pre_fault_lost_fraction": round(before / victim_share, 3) if victim_share else 0.0,
        "stale_acks": sum(summary["stale_acks"] for summary in rounds),
        "reads": sum(summary["reads"]["reads"] for summary in rounds),
        "not_found_reads": sum(summary["reads"]["not_found_but_exists"] for summary in rounds),
        "unreachable_keys": sum(summary["reads"].get("unreachable_keys", 0) for summary in rounds),
        "not_found_lost_reads": sum(summary["reads"]["not_found_lost_key"] for summary in rounds),
        "errors_outside": sum(summary["errors"]["outside"] for summary in rounds),
        "errors_in_window": sum(summary["errors"]["in_window"] for summary in rounds),
        "window_p50_s": round(percentile(windows, 0.5), 2) if windows else None,
        "window_p99_s": round(percentile(windows, 0.99), 2) if windows else None,
        "window_max_s": round(max(worst), 2) if worst else None,
        "never_writable_again": never,
        "writes_per_s": round(sum(summary["writes_per_s"] for summary in rounds) / len(rounds), 1),
        "unsettled_rounds": sum(1 for summary in rounds if not summary.get("settled", True)),
        "settle_max_s": max(summary.get("settle_s", 0.0) for summary in rounds),
        "failed_rounds": failed,
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| system | W | fault | rounds | acked | lost per round | lost % | lost, acked before / after the fault | "
        "victim's pre-fault acks lost | window p50 / p99 / max s | stale acks | errors outside windows | "
        "one map again after (max s) | reads not-found of acked keys: existing (keys) / lost |"
    )
    lines = [header, "|" + "---|" * 14]
    for row in rows:
        figures = row["result"]
        if figures is None or not figures["rounds"]:
            note = row["note"] or f"every round failed: {figures['failed_rounds'][0] if figures else ''}"
            lines.append(f"| {row['system']} | {row['quorum']} | {row['fault']} | - | {note} ||||||||||")
            continue
        rounds = str(figures["rounds"])
        if figures.get("unsettled_rounds"):
            rounds += f" ({figures['unsettled_rounds']} not re-converged)"
        if figures.get("failed_rounds"):
            rounds += f" (+{len(figures['failed_rounds'])} failed)"
        window = " / ".join(
            "-" if v is None else f"{v:.2f}"
            for v in (figures[k] for k in ("window_p50_s", "window_p99_s", "window_max_s"))
        )
        if figures["never_writable_again"]:
            window += f" ({figures['never_writable_again']} slots never)"
        lines.append(
            f"| {row['system']} | {row['quorum']} | {row['fault']} | {rounds} | {figures['acked']} | "
            f"{', '.join(str(n) for n in figures['lost_per_round'])} | {figures['lost_fraction']:.2%} | "
            f"{figures['lost_acked_before_fault']} / {figures['lost_acked_after_fault']} | "
            f"{figures['victim_pre_fault_lost_fraction']:.0%} of {figures['victim_pre_fault_acked']} | {window} | "
            f"{figures['stale_acks']} | {figures['errors_outside']} | {figures.get('settle_max_s', '-')} | "
            f"{figures.get('not_found_reads', '-')} of {figures.get('reads', '-')} "
            f"({figures.get('unreachable_keys', '-')}) / {figures.get('not_found_lost_reads', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--faults",
        default="kill,pause,kill-restart",
        help="kill, pause, kill-restart, partition, kill+pause; join, drain, scale, rolling-restart, "
        "join-partition, leave (AegisKV only)",
    )
    parser.add_argument("--read-rate", type=float, default=100.0, help="reads/s of acknowledged keys per side")
    parser.add_argument("--move-time", type=float, default=10.0, help="seconds of workload after a join or drain")
    parser.add_argument("--replication-factor", type=int, default=3, help="AegisKV's --replication-factor")
    parser.add_argument("--quorums", default="0,2", help="AegisKV write quorums to run (0, 1, 2, ...)")
    parser.add_argument("--systems", default="aegiskv,redis")
    parser.add_argument("--rate", type=float, default=800.0, help="writes per second (all client sides)")
    parser.add_argument("--writers", type=int, default=8, help="writer threads per client side")
    parser.add_argument("--pause", type=float, default=15.0, help="seconds of SIGSTOP or partition")
    parser.add_argument("--downtime", type=float, default=10.0, help="seconds between kill -9 and restart")
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--wal", default="off")
    parser.add_argument("--lease", type=float, default=2.0, help="lease the stale-acknowledgement check assumes")
    parser.add_argument("--fast-gossip", action="store_true", help="AegisKV on the tests' fast gossip timing")
    parser.add_argument("--redis-node-timeout", type=int, default=5000, help="ms")
    parser.add_argument("--quick", action="store_true", help="write results/faults_quick.* and leave RESULTS.md")
    parser.add_argument("--keep-logs", type=Path, help="save the node logs of a round that lost or hid a key here")
    parser.add_argument("--name", help="write results/NAME.txt and .json instead (implies leaving RESULTS.md)")
    parser.add_argument("--from-json", type=Path, help="re-render a saved results/faults*.json, measure nothing")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from results/faults.json"
    )
    args = parser.parse_args()
    if args.render:
        saved = RESULTS / "faults.json"
        if not saved.exists():
            sys.exit("bench/faults.py: no results to render (bench/results/faults.json)")
        write_results_md(json.loads(saved.read_text()))
        print("bench/RESULTS.md: section 'Faults' rendered from bench/results/")
        return
    if args.from_json:
        rerender(args.from_json)
        return
    if args.name is not None and (not args.name or Path(args.name).name != args.name or "." in args.name):
        sys.exit(f"bench/faults.py: --name wants a bare file name without suffix, not {args.name!r}")
    reason = unavailable_reason()
    if reason:
        sys.exit(f"bench/faults.py {reason}")

    has_quorum = daemon_has_write_quorum()
    rows: list[dict[str, Any]] = []
    for system in args.systems.split(","):
        quorums: list[int | None] = [None] if system == "redis" else [int(q) for q in args.quorums.split(",")]
        for quorum in quorums:
            label = "async" if system == "redis" else {0: "0", 2: "majority"}.get(quorum or 0, str(quorum))
            for fault in args.faults.split(","):
                if system == "redis" and fault in ("join", "drain", *MULTI_STEP):
                    continue  # no add-node/rebalance driver for Redis Cluster in the harness yet
                if quorum and not has_quorum:
                    rows.append(
                        {
                            "system": system,
                            "quorum": label,
                            "fault": fault,
                            "result": None,
                            "rounds": [],
                            "note": "not run: this build has no --write-quorum",
                        }
                    )
                    continue
                rounds = []
                for number in range(args.rounds):
                    started = time.monotonic()
                    try:
                        summary = one_round(system, quorum, fault, args)
                    except Exception as error:  # one broken round must not lose the others
                        rounds.append({"round_failed": f"{type(error).__name__}: {error}"[:500]})
                        print(f"{system} W={label} {fault} round {number + 1} FAILED: {error}", flush=True)
                        continue
                    rounds.append(summary)
                    impact = summary["events"][0]["impacts"][0] if summary["events"][0]["impacts"] else {}
                    print(
                        f"{system} W={label} {fault} round {number + 1}: acked {summary['acked']}, "
                        f"lost {summary['lost']}, window {impact.get('window_s')} s, stale {summary['stale_acks']}, "
                        f"errors outside {summary['errors']['outside']}, settled {summary['settled']} after "
                        f"{summary['settle_s']} s ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
                rows.append(
                    {
                        "system": system,
                        "quorum": label,
                        "fault": fault,
                        "result": aggregate(rounds),
                        "rounds": rounds,
                        "note": "",
                    }
                )

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = "python bench/faults.py " + " ".join(sys.argv[1:])
    settings = (
        f"{args.rounds} rounds per row; writer: redis-py RedisCluster, {args.rate:g} writes/s, {args.writers} threads, "
        f"1 s socket timeout; AegisKV: 3 nodes (4 for leave), RF {args.replication_factor}, {args.shards} shards, "
        f"--wal {args.wal}, "
        f"{'fast' if args.fast_gossip else 'default'} gossip timing; Redis Cluster: 3 masters + 3 replicas, "
        f"node timeout {args.redis_node_timeout / 1000:g} s, no persistence; pause/partition {args.pause:g} s, "
        f"restart after {args.downtime:g} s"
    )
    publish(
        {"command": command, "commit": commit.stdout.strip(), "when": when, "settings": settings, "rows": rows},
        args.name or ("faults_quick" if args.quick else "faults"),
    )


def report_text(run: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"Faults (bench/faults.py), run {run['when']} on {run['commit']}: `{run['command']}`",
            run["settings"],
            "window: per slot of the faulted node, from the fault to the first acknowledged write to it, "
            "pooled over the rounds; lost: acknowledged, then missing on read-back (before / after: "
            "acknowledged before the fault, or after it by the nodes that took over); stale acks: "
            "acknowledgements from a stopped or isolated node past its lease, or of requests it held through "
            "the cut (tests/faults/checker.py).",
            "",
            table(run["rows"]),
        ]
    )


def write_results_md(run: dict[str, Any]) -> None:
    write_section("faults.py", "Faults", "`bench/results/faults.json` (details per round there)", report_text(run))


def publish(run: dict[str, Any], name: str) -> None:
    """Write results/<name>.txt and .json, and (unless a quick run) the Faults section of RESULTS.md."""
    text = report_text(run)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(run, indent=1) + "\n")
    if name == "faults":
        write_results_md(run)


def rerender(path: Path) -> None:
    """Recompute the rows of a saved run from its rounds and publish them again (no new measurement)."""
    run = json.loads(path.read_text())
    for row in run["rows"]:
        if row["rounds"]:
            row["result"] = aggregate(row["rounds"])
    publish(run, path.stem)


if __name__ == "__main__":
    main()
