"""One fault run: start the workload, let a scenario act, heal, settle, read back, check.

``run_faults(cluster, scenario, ...)`` is what tests and ``bench/faults.py``
call. ``scenario`` gets a :class:`~tests.faults.nemesis.Nemesis` and does
its faults (the ``SCENARIOS`` below are the standard ones); whatever it leaves
broken is repaired afterwards (paused nodes resumed, partitions healed), then
the workload runs ``cooldown`` seconds more, stops, the cluster settles and
every key written is read back from client side 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.faults.checker import CheckSettings, Timeline, check, render
from tests.faults.cluster import AegisCluster, FaultCluster, SettleTimeout
from tests.faults.nemesis import Nemesis
from tests.faults.netns import Host
from tests.faults.workload import KeyValueClient, NativeClient, RespClient, Workload, read_back

Scenario = Callable[[Nemesis], None]


def client_factory(
    cluster: FaultCluster, protocol: str, options: Mapping[str, Any] | None = None
) -> Callable[[Host], KeyValueClient]:
    """Clients of ``protocol`` ("resp": redis-py RedisCluster; "native": aegiskv.client) for ``cluster``."""
    chosen = dict(options or {})
    if protocol == "resp":
        return lambda _host: RespClient(cluster.resp_seeds(), chosen)
    if protocol == "native":
        if not isinstance(cluster, AegisCluster):
            raise ValueError("the native client speaks to AegisKV only")
        return lambda _host: NativeClient(cluster.native_seeds(), chosen)
    raise ValueError(f"unknown protocol {protocol!r}")


@dataclass
class RunOptions:
    protocol: str = "resp"
    client_options: dict[str, Any] = field(default_factory=dict)
    rate: float = 400.0
    writers_per_host: int = 4
    units: int = 64
    read_rate: float = 0.0
    sides: int = 1  # how many client hosts write (each at rate / sides)
    warmup: float = 2.0
    cooldown: float = 4.0
    settle_timeout: float = 60.0
    # False: a cluster that does not agree on one map in settle_timeout is recorded
    # (summary "settled", "unsettled") instead of failing the run.
    require_settled: bool = True
    check: CheckSettings = field(default_factory=CheckSettings)


@dataclass
class RunResult:
    summary: dict[str, Any]
    timeline: Timeline
    workload: Workload
    final: dict[bytes, bytes | None]  # every key written, as read back (None: not found)
    unreadable: dict[bytes, str]

    def lost(self) -> set[bytes]:
        """Every acknowledged write's key that is missing or different now (the summary lists a few)."""
        return {
            write.key
            for write in self.workload.writes
            if write.ok and write.key not in self.unreadable and self.final.get(write.key) != write.value
        }

    def table(self, title: str = "") -> str:
        return render(self.summary, title)


def run_faults(cluster: FaultCluster, scenario: Scenario, options: RunOptions | None = None) -> RunResult:
    options = options or RunOptions()
    factory = client_factory(cluster, options.protocol, options.client_options)
    timeline = Timeline()
    workload = Workload(
        hosts=cluster.clients[: options.sides],
        factory=factory,
        node_of_host=cluster.node_of_host,
        rate=options.rate,
        writers_per_host=options.writers_per_host,
        units=options.units,
        read_rate=options.read_rate,
    )
    nemesis = Nemesis(cluster, timeline)
    workload.start()
    try:
        time.sleep(options.warmup)
        scenario(nemesis)
    finally:
        nemesis.repair()
        time.sleep(options.cooldown)
        workload.stop()
    end = time.monotonic()
    unsettled: str | None = None
    try:
        cluster.wait_settled(options.settle_timeout)
    except SettleTimeout as error:
        if options.require_settled:
            raise
        unsettled = str(error)  # a finding in itself; the keys are still read back and checked
    settle_s = time.monotonic() - end
    final, unreadable = read_back(cluster.clients[0], factory, [write.key for write in workload.writes])
    summary = check(
        workload.writes, final, timeline, unreadable=unreadable, reads=workload.reads, end=end, settings=options.check
    )
    summary["cluster"] = cluster.kind
    summary["protocol"] = options.protocol
    summary["settled"] = unsettled is None
    summary["settle_s"] = round(settle_s, 2)
    summary["unsettled"] = unsettled
    return RunResult(summary, timeline, workload, final, unreadable)


# -- the standard scenarios ---------------------------------------------------------------------------


def kill(victim: str, after: float = 6.0) -> Scenario:
    """kill -9 ``victim``; keep writing ``after`` seconds."""

    def scenario(nemesis: Nemesis) -> None:
        nemesis.kill(victim)
        time.sleep(after)

    return scenario


def kill_restart(victim: str, downtime: float = 6.0, after: float = 4.0) -> Scenario:
    """kill -9, ``downtime`` seconds later start it again with the same id and data dir."""

    def scenario(nemesis: Nemesis) -> None:
        nemesis.kill(victim)
        time.sleep(downtime)
        nemesis.restart(victim)
        time.sleep(after)

    return scenario


def pause(victim: str, seconds: float, after: float = 3.0) -> Scenario:
    """SIGSTOP ``victim`` for ``seconds``, then SIGCONT."""

    def scenario(nemesis: Nemesis) -> None:
        nemesis.pause_for(victim, seconds)
        time.sleep(after)

    return scenario


def isolate(victim: str, seconds: float, *, client_with_victim: str | None = None, after: float = 3.0) -> Scenario:
    """Cut ``victim`` (and optionally one client side, which stays with it) from everyone else."""

    def scenario(nemesis: Nemesis) -> None:
        cluster = nemesis.cluster
        alone = [victim] + ([client_with_victim] if client_with_victim else [])
        rest = [name for name in cluster.node_names if name != victim]
        rest += [client.name for client in cluster.clients if client.name != client_with_victim]
        nemesis.partition([alone, rest])
        time.sleep(seconds)
        nemesis.heal()
        time.sleep(after)

    return scenario


def join(name: str, after: float = 8.0) -> Scenario:
    """A new node ``name`` joins under the workload; keep going ``after`` seconds (its shards move)."""

    def scenario(nemesis: Nemesis) -> None:
        nemesis.join(name)
        time.sleep(after)

    return scenario


def drain(victim: str, after: float = 6.0) -> Scenario:
    """SIGTERM ``victim`` (graceful drain, a planned leave); keep writing ``after`` seconds."""

    def scenario(nemesis: Nemesis) -> None:
        nemesis.drain(victim)
        time.sleep(after)

    return scenario


def together(*scenarios: Scenario) -> Scenario:
    """Run ``scenarios`` at the same time, each in its own thread: overlapping faults.

    Partitions are one at a time (the nemesis refuses a second before a heal);
    kills, restarts and pauses of different nodes combine freely with each
    other and with one partition.
    """

    def scenario(nemesis: Nemesis) -> None:
        failures: list[BaseException] = []

        def run_one(one: Scenario) -> None:
            try:
                one(nemesis)
            except BaseException as error:
                failures.append(error)

        threads = [
            threading.Thread(target=run_one, args=(one,), name=f"nemesis-{n}") for n, one in enumerate(scenarios)
        ]
        nemesis.freeze_owners()
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            nemesis.thaw_owners()
        if failures:
            raise failures[0]

    return scenario


# -- planned membership changes in sequence, and faults during them ---------------------------------


def scale(
    joiners: Sequence[str], leavers: Sequence[str], *, settle_timeout: float = 90.0, after: float = 2.0
) -> Scenario:
    """Grow by ``joiners`` one at a time, then shrink by draining ``leavers`` (SIGTERM) one at a
    time, waiting after each step until the cluster is settled (nothing moving) and ``after`` s more.
    """

    def scenario(nemesis: Nemesis) -> None:
        for name in joiners:
            nemesis.join(name)
            nemesis.settle(settle_timeout)
            time.sleep(after)
        for name in leavers:
            nemesis.drain(name)
            nemesis.settle(settle_timeout)
            time.sleep(after)

    return scenario


def rolling_restart(
    names: Sequence[str], *, replication_factor: int, settle_timeout: float = 90.0, after: float = 1.0
) -> Scenario:
    """Each node in turn: drained (SIGTERM), started again with its id and data dir, and waited for
    until the map is settled and every shard has its replicas again (it is back and caught up).
    """

    def scenario(nemesis: Nemesis) -> None:
        for name in names:
            nemesis.drain(name)
            nemesis.rejoin(name)
            nemesis.settle(settle_timeout, replication_factor)
            time.sleep(after)

    return scenario


def join_during_partition(new: str, victim: str, seconds: float, *, after: float = 4.0) -> Scenario:
    """Cut ``victim`` off from every other node and client, let ``new`` join the majority side
    meanwhile, heal after ``seconds`` (from the cut) and keep going ``after`` s.
    """

    def scenario(nemesis: Nemesis) -> None:
        cluster = nemesis.cluster
        rest = [name for name in cluster.node_names if name != victim]
        rest += [client.name for client in cluster.clients]
        cut = nemesis.partition([[victim], rest])
        nemesis.join(new, side_with=rest[0])
        time.sleep(max(0.0, cut.at + seconds - time.monotonic()))
        nemesis.heal()
        time.sleep(after)

    return scenario


def leave_without_drain(
    victim: str, *, replication_factor: int, settle_timeout: float = 90.0, after: float = 2.0
) -> Scenario:
    """kill -9 ``victim``, never started again: wait until the rest have re-replicated every shard
    to ``replication_factor`` copies (as far as the nodes left allow), then ``after`` s more.
    """

    def scenario(nemesis: Nemesis) -> None:
        nemesis.kill(victim)
        nemesis.settle(settle_timeout, replication_factor)
        time.sleep(after)

    return scenario
