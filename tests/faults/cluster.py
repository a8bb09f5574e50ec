"""Real clusters inside a :class:`~tests.faults.netns.Network`: AegisKV nodes or Redis Cluster.

Each server runs in its own namespace (``ip netns exec``) on fixed ports of
its own address, so a restarted node comes back at the same address, as it
would on a real host. Both kinds offer what the nemeses and the checker need:

* ``pid(name)``, ``kill(name)``, ``restart(name)`` (same id, same data dir);
* ``slot_owners()``: slot -> node name, from ``CLUSTER SLOTS`` (AegisKV
  answers it too), asked from a client host;
* ``wait_settled()``: every running node agrees on one map that covers every
  slot (and, for Redis Cluster, each master has a connected replica again);
* ``node_of_host(address)``: which node an IP address belongs to.

Clients never run in the root namespace: ``client_hosts`` are namespaces on
the same bridge, one per "side" of a partition.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode
from tests.faults.netns import Host, Network

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

# Gossip five times faster than the LAN defaults (as tests/cluster_harness.py):
# a dead node is found in about a second, which keeps fault tests short.
FAST_GOSSIP = {
    "AEGIS_GOSSIP_PROBE_INTERVAL": "0.2s",
    "AEGIS_GOSSIP_PROBE_TIMEOUT": "0.12s",
    "AEGIS_GOSSIP_SUSPICION_MULT": "4",
    "AEGIS_GOSSIP_PUSH_PULL_INTERVAL": "2s",
    "AEGIS_GOSSIP_INTERVAL": "0.05s",
}

CLIENT_INDEX = 200  # client hosts are .200, .201, ...; servers .1, .2, ...


class SettleTimeout(AssertionError):
    """The cluster did not agree on one full map in time."""


def _slots_reply_owners(reply: Sequence[Any], node_of_host: Mapping[str, str]) -> dict[int, str]:
    owners: dict[int, str] = {}
    for entry in reply:
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        name = node_of_host.get(host, host)
        for slot in range(first, last + 1):
            owners[slot] = name
    return owners


class FaultCluster:
    """What both cluster kinds share: the network, client hosts, node hosts and processes."""

    kind = "cluster"
    resp_port = 0

    def __init__(self, network: Network, root: Path, node_names: Sequence[str], client_sides: int) -> None:
        self.network = network
        self.root = root
        self.hosts: dict[str, Host] = {}
        for index, name in enumerate(node_names, start=1):
            self.hosts[name] = network.add_host(name, index)
        self.clients = [network.add_host(f"c{side}", CLIENT_INDEX + side) for side in range(client_sides)]
        self._node_of_host = {host.address: name for name, host in self.hosts.items()}

    # -- what subclasses provide --------------------------------------------------------------

    def pid(self, name: str) -> int:
        raise NotImplementedError

    def running(self, name: str) -> bool:
        raise NotImplementedError

    def kill(self, name: str) -> None:
        raise NotImplementedError

    def restart(self, name: str) -> None:
        raise NotImplementedError

    def wait_settled(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def add_node(self, name: str) -> object:
        raise NotImplementedError(f"{self.kind}: no join nemesis")

    def drain(self, name: str, timeout: float = 60.0) -> int:
        raise NotImplementedError(f"{self.kind}: no drain nemesis")

    def close(self) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    @property
    def node_names(self) -> list[str]:
        return list(self.hosts)

    def node_of_host(self, address: str) -> str | None:
        return self._node_of_host.get(address)

    def signal(self, name: str, number: signal.Signals) -> None:
        os.kill(self.pid(name), number)

    def resp_seeds(self) -> list[tuple[str, int]]:
        return [(self.hosts[name].address, self.resp_port) for name in self.hosts if self.running(name)]

    def slot_owners(self, side: int = 0) -> dict[int, str]:
        """slot -> node name from the first running node that answers ``CLUSTER SLOTS`` (from client ``side``)."""

        def ask() -> dict[int, str]:
            last: Exception | None = None
            for address, port in self.resp_seeds():
                try:
                    with redis.Redis(address, port, socket_timeout=2, socket_connect_timeout=1) as plain:
                        return _slots_reply_owners(plain.execute_command("CLUSTER SLOTS"), self._node_of_host)
                except redis.RedisError as error:
                    last = error
            raise SettleTimeout(f"no node answered CLUSTER SLOTS: {last}")

        return self.clients[side].run(ask, timeout=30)


class AegisCluster(FaultCluster):
    """``size`` aegis nodes n0..n<size-1>, each in its own namespace, on fast gossip timing."""

    kind = "aegiskv"
    native_port, resp_port, gossip_port = 7700, 7379, 7701

    def __init__(
        self,
        network: Network,
        root: Path,
        size: int = 3,
        *,
        shards: int = 32,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        client_sides: int = 1,
    ) -> None:
        super().__init__(network, root, [f"n{index}" for index in range(size)], client_sides)
        self.shards = shards
        self.args = list(args)
        self.env = {**os.environ, **FAST_GOSSIP, **(env or {})}
        self.nodes: dict[str, LocalNode] = {}
        # The logs of earlier processes of a node (before a restart), oldest first.
        self.past_logs: dict[str, list[str]] = {}

    def _command_args(self, name: str) -> list[str]:
        seeds = [f"{self.hosts[other].address}:{self.gossip_port}" for other in self.hosts if other != name]
        return ["--node-id", name, "--shards", str(self.shards), "--seeds", ",".join(seeds), *self.args]

    def start(self, name: str) -> LocalNode:
        host = self.hosts[name]
        earlier = self.nodes.get(name)
        if earlier is not None:
            self.past_logs.setdefault(name, []).append(earlier.log_text())
        node = LocalNode(
            str(self.root / name),
            self._command_args(name),
            bind=f"{host.address}:{self.native_port}",
            resp_bind=f"{host.address}:{self.resp_port}",
            gossip=f"{host.address}:{self.gossip_port}",
            health_addr=None,
            env=self.env,
            command_prefix=host.exec_prefix,
            # Generous: on a loaded 2-core machine an interpreter start alone has taken over 20 s.
            start_timeout=60.0,
        )
        self.nodes[name] = node
        return node

    def start_all(self, settle_timeout: float = 60.0) -> None:
        for name in self.hosts:
            self.start(name)
        self.wait_settled(settle_timeout)

    def add_host(self, name: str) -> Host:
        """A new host for node ``name``, not started yet (a nemesis may cut it off first)."""
        if name in self.hosts:
            raise ValueError(f"{name} is already a node of this cluster")
        index = max(int(host.address.rsplit(".", 1)[1]) for host in self.hosts.values()) + 1
        host = self.hosts[name] = self.network.add_host(name, index)
        self._node_of_host[host.address] = name
        return host

    def add_node(self, name: str) -> LocalNode:
        """A new host and node ``name`` (a fresh id and data dir) seeded with the running nodes: a join.

        A host made beforehand by :meth:`add_host` (and not started) is used as it is.
        """
        if name not in self.hosts or name in self.nodes:
            self.add_host(name)
        return self.start(name)

    def drain(self, name: str, timeout: float = 60.0) -> int:
        """SIGTERM ``name`` (its graceful drain) and wait for the process to end; its exit code."""
        return self.nodes[name].stop(timeout)

    def pid(self, name: str) -> int:
        return self.nodes[name].pid

    def running(self, name: str) -> bool:
        node = self.nodes.get(name)
        return node is not None and node.process.poll() is None

    def kill(self, name: str) -> None:
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        """Start ``name`` again with the same id, address and data dir (after kill or stop)."""
        if self.running(name):
            raise RuntimeError(f"{name} is still running")
        self.start(name)

    def native_seeds(self) -> list[str]:
        return [f"{self.hosts[name].address}:{self.native_port}" for name in self.hosts if self.running(name)]

    def topologies(self, side: int = 0) -> dict[str, dict[str, Any]]:
        """Each running node's own shard map (TOPOLOGY), asked directly."""

        def ask() -> dict[str, dict[str, Any]]:
            answers: dict[str, dict[str, Any]] = {}
            for name in self.hosts:
                if not self.running(name):
                    continue
                address = f"{self.hosts[name].address}:{self.native_port}"
                config = Config(seeds=[address], cluster_routing=False, max_retries=0, read_timeout=2.0)
                with Client(config) as client:
                    answers[name] = client.topology()
            return answers

        return self.clients[side].run(ask, timeout=60)

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Until every running node lists exactly the running nodes, every shard has a primary (a
        lease holder, placement's preferred member) in every node's map, and all hold the same map.

        Without the primaries a writer started right after would meet "no primary yet" errors
        outside any fault window (as tests/cluster_harness.py's wait_for_agreement).
        """
        deadline = time.monotonic() + timeout
        expected = {name for name in self.hosts if self.running(name)}
        last = "no answer yet"
        while True:
            try:
                problem = _map_disagreement(self.topologies(), expected)
                if problem is None:
                    return
                last = problem
            except Exception as error:  # a node still starting or just killed: ask again
                last = f"{type(error).__name__}: {error}"
            if time.monotonic() > deadline:
                raise SettleTimeout(f"aegis nodes {sorted(expected)} did not agree in {timeout}s: {last}")
            time.sleep(0.2)

    def wait_replicated(self, replication_factor: int, timeout: float = 60.0) -> None:
        """Until every running node's map gives each shard min(RF, running nodes) caught-up replicas,
        all of them running nodes, and nothing still moving (a node that died for good is replaced).
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            running = {name for name in self.hosts if self.running(name)}
            try:
                problem = replica_shortfall(self.topologies(), min(replication_factor, len(running)), running)
                if problem is None:
                    return
                last = problem
            except Exception as error:  # a node still starting: ask again
                last = f"{type(error).__name__}: {error}"
            if time.monotonic() > deadline:
                raise SettleTimeout(f"replication factor {replication_factor} not restored in {timeout}s: {last}")
            time.sleep(0.2)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{node.log_text()[-4000:]}" for name, node in self.nodes.items())

    def save_logs(self, directory: Path) -> list[Path]:
        """Every process's whole log, restarts included (``n1.1.log`` before ``n1.2.log``), into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, node in self.nodes.items():
            for number, text in enumerate([*self.past_logs.get(name, []), node.log_text()], start=1):
                path = directory / f"{name}.{number}.log"
                path.write_text(text + "\n")
                written.append(path)
        return written


def _map_disagreement(answers: Mapping[str, Mapping[str, Any]], expected: set[str]) -> str | None:
    """What keeps these TOPOLOGY answers from being one settled map, or None when they are."""
    if set(answers) != expected:
        return f"answered: {sorted(answers)}"
    members = {name: sorted(answer["nodes"]) for name, answer in answers.items()}
    if any(set(seen) != expected for seen in members.values()):
        return "members: " + "; ".join(f"{name}: {seen}" for name, seen in members.items())
    for name, answer in answers.items():
        leaderless = [shard["shard"] for shard in answer["shards"] if shard["primary"] is None]
        if leaderless:
            return f"{name} knows no primary of shards {leaderless[:8]} ({len(leaderless)} in all)"
        # A primary that is not placement's preferred member hands its lease over to it (an
        # election: writes meet "no primary yet" meanwhile); settled means those are done.
        handing = [shard["shard"] for shard in answer["shards"] if shard["primary"] != shard["preferred"]]
        if handing:
            return f"{name}: shards {handing[:8]} ({len(handing)} in all) not led by their preferred member yet"
        # Moves in flight (a join, a drain): members still copying a shard, or still handing one over.
        moving = [shard["shard"] for shard in answer["shards"] if shard.get("learners") or shard.get("leaving")]
        if moving:
            return f"{name}: shards {moving[:8]} ({len(moving)} in all) still moving"
    views = {name: answer["shards"] for name, answer in answers.items()}
    first_name, first = next(iter(views.items()))
    for name, shards in views.items():
        differing = [(mine, theirs) for mine, theirs in zip(first, shards) if mine != theirs]
        if differing or len(shards) != len(first):
            mine, theirs = differing[0] if differing else ({}, {})
            return f"{len(differing)} shards differ between {first_name} and {name}, such as {mine} vs {theirs}"
    return None


def replica_shortfall(answers: Mapping[str, Mapping[str, Any]], wanted: int, running: set[str]) -> str | None:
    """Which shard, in whose map, lacks ``wanted`` replicas among ``running`` or still moves; None if none."""
    for name, answer in answers.items():
        for shard in answer["shards"]:
            replicas = list(shard["replicas"])
            if len(replicas) != wanted or not set(replicas) <= running:
                return f"{name}: shard {shard['shard']} has replicas {replicas}, wants {wanted} of {sorted(running)}"
            if shard.get("learners") or shard.get("leaving"):
                return f"{name}: shard {shard['shard']} still moving"
    return None


class RedisCluster(FaultCluster):
    """Redis Cluster: ``primaries`` masters with ``replicas`` replicas each, redis-server per namespace.

    Built the usual way (``redis-cli --cluster create``, run on a client host).
    No persistence (``--save '' --appendonly no``), like a cache; a node
    restarts with its ``nodes.conf``, so it rejoins with its identity.
    """

    kind = "redis"
    resp_port = 6379

    def __init__(
        self,
        network: Network,
        root: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 5000,
        client_sides: int = 1,
    ) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are needed for a Redis Cluster")
        count = primaries * (1 + replicas)
        super().__init__(network, root, [f"r{index}" for index in range(count)], client_sides)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        host = self.hosts[name]
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            *host.exec_prefix,
            REDIS_SERVER or "redis-server",
            "--bind",
            host.address,
            "--port",
            str(self.resp_port),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
        ]
        self.processes[name] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        address = host.address

        def answers() -> bool:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with redis.Redis(address, self.resp_port, socket_timeout=1, socket_connect_timeout=1) as plain:
                        return bool(plain.ping())
                except redis.RedisError:
                    time.sleep(0.05)
            return False

        if not self.clients[0].run(answers, timeout=15):
            raise RuntimeError(f"redis-server {name} did not answer PING:\n{self.log(name)}")

    def start_all(self, settle_timeout: float = 60.0) -> None:
        for name in self.hosts:
            self.start(name)
        create = [
            *self.clients[0].exec_prefix,
            REDIS_CLI or "redis-cli",
            "--cluster",
            "create",
            *(f"{host.address}:{self.resp_port}" for host in self.hosts.values()),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self.wait_settled(settle_timeout)

    def log(self, name: str) -> str:
        path = self.root / name / "redis.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.hosts)

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self, name: str) -> None:
        if self.running(name):
            raise RuntimeError(f"{name} is still running")
        self.start(name)

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Until every running node says cluster_state:ok, all agree on the slot owners, and every
        replica's link to its master is up (so the next fault can fail over)."""
        deadline = time.monotonic() + timeout
        running = [name for name in self.hosts if self.running(name)]
        last = "no answer yet"

        def look() -> str | None:
            owner_views = []
            for name in running:
                host = self.hosts[name]
                with redis.Redis(host.address, self.resp_port, socket_timeout=2, socket_connect_timeout=1) as plain:
                    info = plain.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
                    state = info.get("cluster_state") if isinstance(info, dict) else None
                    if state != "ok":
                        return f"{name}: cluster_state {state}"
                    owners = _slots_reply_owners(plain.execute_command("CLUSTER SLOTS"), self._node_of_host)
                    if len(owners) != 16384:
                        return f"{name}: {len(owners)} slots covered"
                    owner_views.append(owners)
                    replication = plain.info("replication")
                    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                        return f"{name}: replica not in sync with its master"
            if any(view != owner_views[0] for view in owner_views):
                return "nodes disagree on slot owners"
            return None

        while True:
            try:
                problem = self.clients[0].run(look, timeout=30)
                if problem is None:
                    return
                last = problem
            except Exception as error:
                last = f"{type(error).__name__}: {error}"
            if time.monotonic() > deadline:
                raise SettleTimeout(f"redis cluster did not settle in {timeout}s: {last}")
            time.sleep(0.2)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


def describe_owners(owners: Mapping[int, str]) -> dict[str, int]:
    """How many slots each node owns."""
    counts: dict[str, int] = {}
    for name in owners.values():
        counts[name] = counts.get(name, 0) + 1
    return counts


def slots_of(owners: Mapping[int, str], nodes: Iterable[str]) -> frozenset[int]:
    wanted = set(nodes)
    return frozenset(slot for slot, name in owners.items() if name in wanted)
