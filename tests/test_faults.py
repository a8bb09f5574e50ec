"""Real faults on real processes: kill -9, SIGSTOP, partitions and restarts, under a steady writer.

Two groups (the harness itself is tests/faults/, its checker's definitions
are pinned in tests/test_fault_checker.py):

* **Harness checks** run today. Each would fail if the harness lied: an RF-1
  cluster must lose exactly the killed node's acknowledged writes (no more,
  no fewer, all attributed to it); a SIGSTOPped node must acknowledge nothing
  while stopped (and, in a build without leases, what it answers on waking
  must be flagged as stale acknowledgements); a partition must really stop packets, in the directions
  asked, and heal; a restart must come back with the same id and data dir;
  and on Redis Cluster, which replicates, the checker must find no loss
  beyond the last instant before a master's death.

* **Replication acceptance tests** are written against the replication
  targets and skip until the daemon has ``--write-quorum``; then they turn on
  by themselves. At W = majority of RF 3 they demand 0 acknowledged writes
  lost and 0 acknowledgements from a node whose lease had run out, after
  kill -9 of a primary, SIGSTOP of a primary for twice the lease, a partition
  of a primary from its followers with clients on both sides, and a restart
  with the same id, and kill -9 of one node while another is stopped; after
  kill -9, every shard writable again within 3 s and
  no client error once it is. At W = 0 they demand no stale acknowledgement
  and report the writes lost. ``AEGISKV_FAULT_RUNS=20`` repeats each (CI: 1).

* **Planned membership changes**: a join and a drain of a primary (RF 3 and
  1), and a rolling restart of every node at RF 3, under a steady writer and
  reader, must lose no acknowledged write and answer no read of an
  acknowledged key "not found" (bench/faults.py runs the longer ones: scale
  3 -> 5 -> 3, a join during a partition, a kill -9 with no return).

Needs root (namespaces, nftables); skipped otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aegiskv.client import Client, Config
from tests.faults.checker import CheckSettings, Timeline
from tests.faults.cluster import REDIS_SERVER, AegisCluster, RedisCluster
from tests.faults.nemesis import Nemesis
from tests.faults.netns import Host, Network, unavailable_reason
from tests.faults.run import (
    RunOptions,
    RunResult,
    drain,
    isolate,
    join,
    kill,
    kill_restart,
    pause,
    rolling_restart,
    run_faults,
    together,
)
from tests.wire import wait_until

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]

RUNS = int(os.environ.get("AEGISKV_FAULT_RUNS", "1"))
LEASE = 2.0  # the daemon's default lease (aegiskv/cluster/leases.py LeaseTiming)
MAJORITY_OF_RF3 = 2

MakeAegis = Callable[..., AegisCluster]


@pytest.fixture
def network() -> Iterator[Network]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with Network() as made:
        yield made


@pytest.fixture
def aegis(network: Network, tmp_path: Path) -> Iterator[MakeAegis]:
    """Factory: ``aegis("--replication-factor", "1", sides=2)`` starts 3 nodes and waits for one map."""
    started: list[AegisCluster] = []

    def make(*args: str, sides: int = 1, size: int = 3) -> AegisCluster:
        cluster = AegisCluster(network, tmp_path / f"aegis{len(started)}", size, args=args, client_sides=sides)
        started.append(cluster)
        cluster.start_all()
        return cluster

    yield make
    for cluster in started:
        cluster.close()


def report(result: RunResult, title: str) -> None:
    """The human table on stdout (``-s``), the summary in the test's report properties."""
    print("\n" + result.table(title))


def acked_before(result: RunResult, moment: float, slots: frozenset[int]) -> set[bytes]:
    return {w.key for w in result.workload.writes if w.ok and w.done < moment and w.slot in slots}


# -- harness checks (run today) -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["resp", "native"])
def test_rf1_kill_9_loses_exactly_what_the_killed_node_acknowledged(aegis: MakeAegis, protocol: str) -> None:
    cluster = aegis("--replication-factor", "1")
    result = run_faults(cluster, kill("n1", after=4.0), RunOptions(protocol=protocol, rate=300, cooldown=1.5))
    report(result, f"RF 1, kill -9 n1 ({protocol})")
    killed = result.timeline.events[0]
    assert killed.kind == "kill" and killed.nodes == ("n1",)
    victim_slots = killed.impacts[0].slots
    expected = acked_before(result, killed.at, victim_slots)
    assert expected, "the writer acknowledged nothing on n1 before the kill: no test"
    # With one copy, what n1 acknowledged dies with it, and nothing else may be reported lost.
    assert result.lost() == expected
    assert result.summary["lost"] == len(expected)
    assert result.summary["lost_by_acking_node"] == {"n1": len(expected)}
    # The other nodes' slots kept every acknowledged write.
    survivors = {w.key for w in result.workload.writes if w.ok and w.slot not in victim_slots}
    assert all(result.final[key] is not None for key in survivors)
    # n1's slots were unwritable for a measurable while (death is detected by gossip, not instantly)
    # and became writable again on the survivors.
    impact = result.summary["events"][0]["impacts"][0]
    assert impact["never_writable_again"] == 0
    assert 0.2 < impact["window_s"] < 15.0, impact
    assert all(w.node != "n1" for w in result.workload.writes if w.ok and w.sent > killed.at)


def test_a_stopped_node_acknowledges_nothing_until_it_is_continued(aegis: MakeAegis) -> None:
    cluster = aegis("--replication-factor", "1")
    seconds = LEASE + 0.5  # past a lease and the checker's tolerance
    states: list[str] = []

    def scenario(nemesis: Nemesis) -> None:
        paused = nemesis.pause("n2")
        # SIGSTOP takes effect asynchronously: wait for the kernel to show it (or time out).
        states.append(_settled_state(cluster.pid("n2"), "T"))
        time.sleep(max(0.0, paused.at + seconds - time.monotonic()))
        nemesis.resume("n2")
        states.append(_process_state(cluster.pid("n2")))
        time.sleep(3.0)

    result = run_faults(cluster, scenario, RunOptions(protocol="resp", rate=300, cooldown=1.0))
    report(result, "RF 1, SIGSTOP n2 for 2.5 s")
    assert states[0] == "T" and states[1] != "T", states
    [cut] = result.timeline.cuts
    assert cut.node == "n2" and cut.kind == "pause"
    assert cut.end - cut.start == pytest.approx(seconds, abs=0.3)
    acks_by_n2 = [w for w in result.workload.writes if w.ok and w.node == "n2"]
    assert any(w.done < cut.start for w in acks_by_n2), "no acknowledgement was attributed to n2 before the pause"
    # A stopped process sends nothing: an acknowledgement "from n2" read while it was stopped
    # would mean the attribution (or the pause) is wrong. 0.2 s: replies already on their way.
    assert not [w for w in acks_by_n2 if cut.start + 0.2 < w.done < cut.end], "n2 answered while stopped"
    pause_event = result.summary["events"][0]
    assert pause_event["kind"] == "pause"
    assert pause_event["impacts"][0]["window_s"] is None or pause_event["impacts"][0]["window_s"] > 0.2
    if "--write-quorum" not in _daemon_help():
        # No leases in this build: on SIGCONT n2 answers the SETs queued in its sockets (redis-py
        # waits without a timeout by default), past any lease it could have held. The checker
        # must flag them, and only them.
        stale = result.summary["stale_ack_examples"]
        assert result.summary["stale_acks"] > 0
        assert all(entry["node"] == "n2" and entry["acked"] >= entry["cut_end"] for entry in stale), stale


def _settled_state(pid: int, wanted: str, timeout: float = 2.0) -> str:
    """The process's state once it reads ``wanted``, or whatever it reads at the timeout."""
    deadline = time.monotonic() + timeout
    state = _process_state(pid)
    while state != wanted and time.monotonic() < deadline:
        time.sleep(0.005)
        state = _process_state(pid)
    return state


def _process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _tcp_reaches(host: Host, address: str, port: int) -> bool:
    def attempt() -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    return host.run(attempt, timeout=10)


def _udp_delivered(sender: Host, receiver: Host) -> bool:
    """One datagram from ``sender`` to ``receiver`` (on a port of the test's own): did it arrive?"""

    def bind() -> socket.socket:
        # Made inside the receiver's namespace: a socket belongs to its creator thread's namespace.
        listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listening.bind((receiver.address, 0))
        listening.settimeout(0.5)
        return listening

    listening = receiver.run(bind, timeout=5)
    try:
        port = listening.getsockname()[1]

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                out.sendto(b"probe", (receiver.address, port))

        sender.run(send, timeout=5)
        try:
            return listening.recv(16) == b"probe"
        except OSError:
            return False
    finally:
        listening.close()


def test_partitions_stop_real_packets_in_the_directions_asked_and_heal(aegis: MakeAegis) -> None:
    cluster = aegis(sides=2)
    n0, n1, n2 = (cluster.hosts[name] for name in ("n0", "n1", "n2"))
    c0, c1 = cluster.clients
    nemesis = Nemesis(cluster, Timeline())
    try:
        event = nemesis.partition([["n1", "c1"], ["n0", "n2", "c0"]])
        assert event.kind == "partition" and event.nodes == ("n1", "n0", "n2")
        assert [impact.label for impact in event.impacts] == ["c0: n1 fail over", "c1 cut from majority"]
        # Each side reaches its own nodes only.
        port = cluster.native_port
        assert _tcp_reaches(c0, n0.address, port) and _tcp_reaches(c1, n1.address, port)
        assert not _tcp_reaches(c0, n1.address, port) and not _tcp_reaches(c1, n2.address, port)
        time.sleep(1.0)  # gossip keeps knocking
        dropped = nemesis.dropped_packets()
        assert dropped["n1"] > 0 and dropped["n0"] > 0, dropped
        healed = nemesis.heal()
        assert healed.kind == "heal" and healed.nodes == ("n1",)
        [cut] = nemesis.timeline.cuts
        assert (cut.node, cut.kind) == ("n1", "isolated") and cut.end > cut.start
        assert _tcp_reaches(c0, n1.address, port) and _tcp_reaches(c1, n2.address, port)

        # One way: n0's packets to n2 vanish, n2's to n0 still arrive; n0 and n2 are not linked,
        # so with n1 still linked to both nobody is cut off from a majority.
        one_way = nemesis.one_way(["n0"], ["n2"])
        assert not _udp_delivered(n0, n2)
        assert _udp_delivered(n2, n0)
        assert _udp_delivered(n0, n1) and _udp_delivered(n1, n2)
        assert one_way.impacts == ()
        nemesis.heal()
        assert _udp_delivered(n0, n2)
        assert nemesis.dropped_packets() == {}
        listing = n2.run(lambda: subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout)
        assert "aegis_fault" not in listing
    finally:
        nemesis.close()


def test_restart_brings_back_the_same_node_with_its_data_dir(aegis: MakeAegis) -> None:
    cluster = aegis("--replication-factor", "1", "--wal", "write")
    first_pid = cluster.pid("n1")
    result = run_faults(
        cluster, kill_restart("n1", downtime=3.0, after=3.0), RunOptions(protocol="native", rate=300, cooldown=1.0)
    )
    report(result, "RF 1, --wal write, kill -9 n1, restart")
    killed, restarted = result.timeline.events
    assert (killed.kind, restarted.kind) == ("kill", "restart")
    assert cluster.pid("n1") != first_pid
    assert set(cluster.topologies()["n0"]["nodes"]) == {"n0", "n1", "n2"}
    # Same id and data dir: n1 owns its old slots again and its log brought back every write it
    # acknowledged before the kill (a fresh data dir or a new id would lose them all).
    kept = acked_before(result, killed.at, killed.impacts[0].slots)
    assert kept and not kept & result.lost()
    assert "serving after" in restarted.detail
    assert any(w.ok and w.node == "n1" and w.sent > restarted.at for w in result.workload.writes)


def _gossip_counts(cluster: AegisCluster, name: str, side: int = 0) -> tuple[int, int, int]:
    """(alive, suspect, dead) members in ``name``'s own gossip view (INFO cluster), asked from client ``side``."""

    def ask() -> tuple[int, int, int]:
        address = f"{cluster.hosts[name].address}:{cluster.native_port}"
        with Client(Config(seeds=[address], cluster_routing=False, max_retries=0, read_timeout=2.0)) as client:
            section = client.info("cluster")["cluster"]
        alive, suspect, dead = (int(section[f"aegis_gossip_members_{state}"]) for state in ("alive", "suspect", "dead"))
        return alive, suspect, dead

    return cluster.clients[side].run(ask, timeout=30)


def test_a_partition_that_outlasts_the_tombstones_still_heals(network: Network, tmp_path: Path) -> None:
    # Tombstones kept 2 s: each side of the partition forgets the other entirely, so nothing
    # membership remembers says where to look; only the seeds do.
    cluster = AegisCluster(network, tmp_path, shards=8, env={"AEGIS_GOSSIP_DEAD_RECLAIM_TIME": "2s"}, client_sides=2)
    nemesis = Nemesis(cluster, Timeline())
    try:
        cluster.start_all()
        nemesis.partition([["n1", "c1"], ["n0", "n2", "c0"]])
        forgotten = {"n0": (0, (2, 0, 0)), "n2": (0, (2, 0, 0)), "n1": (1, (1, 0, 0))}
        wait_until(
            lambda: all(_gossip_counts(cluster, name, side) == counts for name, (side, counts) in forgotten.items()),
            timeout=60,
            interval=0.2,
            what="both sides to declare the other dead and drop the tombstones",
        )
        nemesis.heal()
        cluster.wait_settled(timeout=60)
        # Membership agrees, not only the maps: no one is left suspected or dead.
        wait_until(
            lambda: all(_gossip_counts(cluster, name) == (3, 0, 0) for name in cluster.node_names),
            timeout=30,
            interval=0.2,
            what="every node to count three members alive, none suspect or dead",
        )
    finally:
        nemesis.close()
        cluster.close()


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server")
def test_on_redis_cluster_a_killed_master_loses_at_most_its_last_instant(network: Network, tmp_path: Path) -> None:
    cluster = RedisCluster(network, tmp_path, node_timeout_ms=2000)
    try:
        cluster.start_all()
        victim = cluster.slot_owners()[0]
        options = RunOptions(protocol="resp", rate=300, cooldown=1.0, client_options={"socket_timeout": 1.0})
        result = run_faults(cluster, kill(victim, after=6.0), options)
    finally:
        cluster.close()
    report(result, f"Redis Cluster, kill -9 master {victim}")
    killed = result.timeline.events[0]
    # A replicating system: the checker must not invent losses. Replication is asynchronous, so
    # only writes acknowledged in the last moment before the kill may be missing.
    assert all(w.done > killed.at - 0.1 for w in result.workload.writes if w.key in result.lost())
    assert result.summary["acked"] > 500
    impact = result.summary["events"][0]["impacts"][0]
    assert impact["never_writable_again"] == 0 and impact["window_s"] > 1.0  # node timeout 2 s, then election


# -- replication acceptance (turn on when the daemon has --write-quorum) ----------------------------


@functools.cache
def _daemon_help() -> str:
    environment = {**os.environ, "PYTHONSAFEPATH": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aegiskv", "--help"], capture_output=True, text=True, env=environment
    ).stdout


@pytest.fixture
def replication() -> None:
    if "--write-quorum" not in _daemon_help():
        pytest.skip("replication is not in this build (aegis has no --write-quorum)")


WRITE_QUORUMS = [pytest.param(MAJORITY_OF_RF3, id="W=majority"), pytest.param(0, id="W=0")]
RUN_NUMBERS = [pytest.param(number, id=f"run{number}") for number in range(RUNS)]
SETTINGS = CheckSettings(lease=LEASE)


def _verdict(result: RunResult, quorum: int, title: str) -> dict[str, Any]:
    report(result, f"{title}, W={quorum}")
    summary = result.summary
    # Leases hold whatever the quorum: no acknowledgement from a node whose lease had run out.
    assert summary["stale_acks"] == 0, json.dumps(summary["stale_ack_examples"], indent=1)
    if quorum >= MAJORITY_OF_RF3:
        assert summary["lost"] == 0, json.dumps(summary["lost_examples"], indent=1)
    return summary


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("run", RUN_NUMBERS)
@pytest.mark.parametrize("protocol", ["resp", "native"])
@pytest.mark.parametrize("quorum", WRITE_QUORUMS)
def test_kill_9_of_a_primary(aegis: MakeAegis, quorum: int, protocol: str, run: int) -> None:
    cluster = aegis("--write-quorum", str(quorum))
    # Library defaults on both clients: riding out a failover must need no tuning.
    options = RunOptions(protocol=protocol, rate=400, cooldown=2.0, check=SETTINGS)
    summary = _verdict(run_faults(cluster, kill("n1", after=6.0), options), quorum, f"kill -9 n1 ({protocol})")
    impact = summary["events"][0]["impacts"][0]
    assert impact["never_writable_again"] == 0
    assert impact["unit_p99_s"] <= 3.0, impact["unit_windows_s"]
    # Errors only while the shards were unwritable, none once they were written again.
    assert summary["errors"]["outside"] == 0, summary["errors"]["outside_examples"]


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("run", RUN_NUMBERS)
@pytest.mark.parametrize("quorum", WRITE_QUORUMS)
def test_sigstop_of_a_primary_for_twice_the_lease(aegis: MakeAegis, quorum: int, run: int) -> None:
    cluster = aegis("--write-quorum", str(quorum))
    # The writer waits longer than the pause: whatever n1 had queued is answered after SIGCONT,
    # which is exactly when a node that ignores its lease's end would acknowledge it.
    options = RunOptions(protocol="resp", rate=400, client_options={"socket_timeout": 3 * LEASE}, check=SETTINGS)
    summary = _verdict(run_faults(cluster, pause("n1", 2 * LEASE), options), quorum, "SIGSTOP n1 for 2 leases")
    assert summary["events"][0]["impacts"][0]["never_writable_again"] == 0


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("run", RUN_NUMBERS)
@pytest.mark.parametrize("quorum", WRITE_QUORUMS)
def test_partition_of_a_primary_with_clients_on_both_sides(aegis: MakeAegis, quorum: int, run: int) -> None:
    cluster = aegis("--write-quorum", str(quorum), sides=2)
    options = RunOptions(protocol="resp", rate=400, sides=2, client_options={"socket_timeout": 1.0}, check=SETTINGS)
    scenario = isolate("n1", 3 * LEASE, client_with_victim="c1")
    summary = _verdict(run_faults(cluster, scenario, options), quorum, "n1 and c1 cut off for 3 leases")
    majority_side = next(i for i in summary["events"][0]["impacts"] if i["label"] == "c0: n1 fail over")
    assert majority_side["never_writable_again"] == 0


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("run", RUN_NUMBERS)
@pytest.mark.parametrize("quorum", WRITE_QUORUMS)
@pytest.mark.parametrize("protocol", ["native", "resp"])
def test_restart_of_a_node_with_the_same_id(aegis: MakeAegis, quorum: int, protocol: str, run: int) -> None:
    cluster = aegis("--write-quorum", str(quorum))
    options = RunOptions(protocol=protocol, rate=400, cooldown=2.0, check=SETTINGS)
    title = f"kill -9 n1, restart ({protocol})"
    summary = _verdict(run_faults(cluster, kill_restart("n1", downtime=3.0), options), quorum, title)
    assert all(impact["never_writable_again"] == 0 for event in summary["events"] for impact in event["impacts"])
    if protocol == "native":
        # The node's return (it takes its shards back) costs the client nothing: no errors after the
        # kill's window. redis-py is not held to it yet: its TRYAGAIN budget (about 0.4 s) is shorter
        # than a hand-back's election on a loaded machine, and it then reports "TTL exhausted" (the
        # report above prints those errors; issue 22 counts them as a miss).
        assert summary["errors"]["outside"] == 0, summary["errors"]["outside_examples"]


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("run", RUN_NUMBERS)
@pytest.mark.parametrize("quorum", WRITE_QUORUMS)
def test_kill_9_of_a_primary_while_another_node_is_stopped(aegis: MakeAegis, quorum: int, run: int) -> None:
    cluster = aegis("--write-quorum", str(quorum))
    # One node of three left: no majority, so no shard may take writes until n2 is continued.
    scenario = together(kill("n1", after=2 * LEASE + 4.0), pause("n2", 2 * LEASE, after=0.0))
    options = RunOptions(protocol="native", rate=400, check=SETTINGS)
    summary = _verdict(run_faults(cluster, scenario, options), quorum, "kill -9 n1 while n2 is stopped")
    assert all(impact["never_writable_again"] == 0 for event in summary["events"] for impact in event["impacts"])


# -- planned membership changes: joins and drains copy before they switch ---------------------------

DEFAULT_QUORUM = 0  # the daemon's --write-quorum default


def _nothing_lost_or_unreachable(summary: dict[str, Any]) -> None:
    assert summary["lost"] == 0, json.dumps(summary["lost_examples"], indent=1)
    reads = summary["reads"]
    assert reads["reads"] > 200, reads  # the reader really read, throughout
    # Never "not found" for a key that was acknowledged: not while its shard moved, not after.
    assert reads["not_found_but_exists"] == 0 and reads["not_found_lost_key"] == 0, reads
    assert summary["stale_acks"] == 0, json.dumps(summary["stale_ack_examples"], indent=1)


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("replication_factor", [3, 1])
def test_a_fourth_node_joins_under_load_and_nothing_is_lost_or_unreachable(
    aegis: MakeAegis, replication_factor: int
) -> None:
    # RF 1 is the hard case: the shards the new node gains have no other copy than the old owner's.
    cluster = aegis("--replication-factor", str(replication_factor), "--write-quorum", str(DEFAULT_QUORUM))
    options = RunOptions(protocol="resp", rate=300, read_rate=100, cooldown=2.0, check=SETTINGS)
    result = run_faults(cluster, join("n3", after=8.0), options)
    report(result, f"n3 joins 3 nodes, RF {replication_factor}, W={DEFAULT_QUORUM}")
    _nothing_lost_or_unreachable(result.summary)
    # The join did something: the new node leads shards now, and acknowledged writes on its own.
    owners = cluster.slot_owners()
    assert "n3" in owners.values()
    assert any(w.ok and w.node == "n3" for w in result.workload.writes)
    # It led only once it held the shard: a lease handed over to it, not one that ran out.
    assert "handing over to n3" in "".join(cluster.nodes[name].log_text() for name in ("n0", "n1", "n2"))


@pytest.mark.usefixtures("replication")
@pytest.mark.parametrize("replication_factor", [3, 1])
def test_a_drained_primary_hands_over_and_nothing_is_lost_or_unreachable(
    aegis: MakeAegis, replication_factor: int
) -> None:
    cluster = aegis("--replication-factor", str(replication_factor), "--write-quorum", str(DEFAULT_QUORUM))
    options = RunOptions(protocol="resp", rate=300, read_rate=100, cooldown=2.0, check=SETTINGS)
    result = run_faults(cluster, drain("n1", after=4.0), options)
    report(result, f"SIGTERM n1 of 3, RF {replication_factor}, W={DEFAULT_QUORUM}")
    _nothing_lost_or_unreachable(result.summary)
    drained = result.timeline.events[0]
    assert drained.kind == "drain" and "exit 0" in drained.detail
    log = cluster.nodes["n1"].log_text()
    # Its leases went by hand-off, not by running out, and it left only once every shard had moved.
    assert "handing over to" in log and "every shard handed over" in log, log[-3000:]
    assert set(cluster.topologies()["n0"]["nodes"]) == {"n0", "n2"}


@pytest.mark.usefixtures("replication")
def test_a_rolling_restart_under_load_loses_nothing_and_leaves_every_shard_replicated(aegis: MakeAegis) -> None:
    # Every node in turn drained and started again with its id and data dir, waited for until the
    # map is settled and each shard has its 3 replicas: at W = 0, the quorum that waits for no
    # follower, a node's acknowledged writes survive only if its drain really handed them over.
    cluster = aegis("--replication-factor", "3", "--write-quorum", str(DEFAULT_QUORUM))
    options = RunOptions(protocol="resp", rate=300, read_rate=100, cooldown=1.0, check=SETTINGS)
    result = run_faults(cluster, rolling_restart(["n0", "n1", "n2"], replication_factor=3), options)
    report(result, f"rolling restart of 3 nodes, RF 3, W={DEFAULT_QUORUM}")
    _nothing_lost_or_unreachable(result.summary)
    events = [(event.kind, event.nodes) for event in result.timeline.events]
    steps = [[("drain", (name,)), ("rejoin", (name,)), ("settled", ())] for name in ("n0", "n1", "n2")]
    assert events == [step for triple in steps for step in triple], events
    drains = [event for event in result.timeline.events if event.kind == "drain"]
    assert all("exit 0" in event.detail for event in drains), [event.detail for event in drains]
    # Each node came back as a full member: it acknowledged writes after its return.
    for rejoined in (event for event in result.timeline.events if event.kind == "rejoin"):
        [name] = rejoined.nodes
        assert any(w.ok and w.node == name and w.sent > rejoined.at for w in result.workload.writes), name
    cluster.wait_replicated(3, timeout=10)
