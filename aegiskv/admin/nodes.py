"""Finding a cluster's nodes from a seed, and asking each of them, over the native protocol.

Every admin command starts from a shard map fetched from the first seed that answers, and
addresses each node by the client address that map gives it (an empty host in the map means
"the host you reached this node at", so the seed's host is used). Each node is then asked
once, on its own connection: a node that does not answer is reported as such, not retried,
since the command is reporting on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aegiskv.client import AegisError, AuthenticationError, Client, Config

T = TypeVar("T")


class AdminError(Exception):
    """A failure the operator must act on; its message is the one line ``aegis`` prints."""


@dataclass(frozen=True)
class Target:
    """How to reach the cluster: seeds, and the client settings every connection uses."""

    seeds: Sequence[str]
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    timeout: float = 2.0

    def config(self, seeds: Sequence[str] | None = None) -> Config:
        """No routing and no retries: each call reports on the one node it is addressed to."""
        return Config(
            seeds=list(seeds or self.seeds),
            auth_token=self.token,
            tls_ca=self.tls_ca,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            cluster_routing=False,
            max_retries=0,
            conn_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
        )

    def client(self, address: str) -> Client:
        return Client(self.config([address]))


@dataclass(frozen=True)
class ClusterView:
    """The shard map as one node (``source``) sees it, with each node's address made reachable."""

    source: str
    topology: dict[str, Any]
    addresses: dict[str, str]  # node id -> native host:port

    @property
    def lone(self) -> str | None:
        """The node id of a node running alone with gossip off, which serves every shard without a
        lease: its map lists only itself and names no primary. (A cluster of one with gossip on
        takes its leases within a round, so it looks so only for a moment after start.)"""
        if len(self.addresses) != 1 or any(shard.get("primary") for shard in self.topology.get("shards", [])):
            return None
        return next(iter(self.addresses))

    def primary(self, shard: dict[str, Any]) -> str | None:
        """A shard's primary: the lease holder in a cluster, the node itself when lone."""
        primary = shard.get("primary")
        return str(primary) if primary else self.lone

    def resolve(self, node: str) -> tuple[str, str]:
        """``(node id, address)`` for a node id of the map, or for a host:port (its id when the map has it)."""
        if node in self.addresses:
            return node, self.addresses[node]
        for node_id, address in self.addresses.items():
            if address == node:
                return node_id, address
        if ":" in node and node.rpartition(":")[2].isdigit():
            return node, node
        known = ", ".join(sorted(self.addresses)) or "none"
        raise AdminError(f"no node {node!r} in the cluster's map (nodes: {known}); give a node id or host:port")


def explain(error: Exception, address: str) -> str:
    """One line for a failed call to ``address``."""
    if isinstance(error, AuthenticationError):
        return f"{address} requires a token: give --token or set AEGIS_AUTH_TOKEN ({error})"
    return f"{address}: {error}"


def _reachable(address: str, seed: str) -> str:
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):  # bound to every interface: reach it where the seed was reached
        return f"{seed.rpartition(':')[0]}:{port}"
    return address


def discover(target: Target) -> ClusterView:
    """The shard map from the first seed that answers; AdminError when none does."""
    failures = []
    for seed in target.seeds:
        try:
            with target.client(seed) as client:
                topology = client.topology(server=seed)
                nodes: dict[str, Any] = topology.get("nodes", {})
                addresses = {node_id: _reachable(entry["client"], seed) for node_id, entry in nodes.items()}
                if not addresses:  # a lone node without gossip: its map lists no members
                    server = client.info("server", server=seed).get("server", {})
                    addresses = {str(server.get("aegis_node_id") or seed): seed}
        except (AegisError, OSError) as error:
            if isinstance(error, AuthenticationError):
                raise AdminError(explain(error, seed)) from None
            failures.append(explain(error, seed))
            continue
        return ClusterView(seed, topology, addresses)
    raise AdminError("cannot reach the cluster: " + "; ".join(failures))


def each_node(addresses: dict[str, str], call: Callable[[str], T]) -> dict[str, T | Exception]:
    """``call(address)`` for every node at once (one thread each); a node's failure is its value."""

    def attempt(address: str) -> T | Exception:
        try:
            return call(address)
        except (AegisError, OSError) as error:
            return error

    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        futures = {node: pool.submit(attempt, address) for node, address in addresses.items()}
        return {node: future.result() for node, future in futures.items()}


def node_info(target: Target, address: str, *sections: str) -> dict[str, dict[str, Any]]:
    with target.client(address) as client:
        return client.info(*sections, server=address)
