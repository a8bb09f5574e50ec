"""Client-side routing: which node serves each key, from a node's TOPOLOGY reply.

The client asks any node for the shard map (``Client.topology()``) and then
sends each key straight to its shard's primary. A redirect (status MOVED) means
the map changed: the client refreshes it and tries again. The map also expires
after ``Config.topology_refresh`` seconds, so a client notices nodes that
joined even when no redirect told it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from aegiskv.cluster.slots import ShardMapper

Address = tuple[str, int]


def parse_address(text: str, default_host: str) -> Address:
    """``host:port`` or ``[v6]:port``; an empty host means ``default_host`` (the node we asked)."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    return host or default_host, int(port)


def parse_moved(message: str) -> tuple[Address, int, int]:
    """The native MOVED message ``"<host:port> <epoch> <slot>"``: (owner address, epoch, slot)."""
    address_text, epoch, slot = message.split()
    return parse_address(address_text, ""), int(epoch), int(slot)


class RouteTable:
    """Shard -> primary address, from one TOPOLOGY reply. Immutable."""

    __slots__ = ("epoch", "fetched_at", "_mapper", "_owners", "addresses", "spans_nodes")

    def __init__(self, topology: Mapping[str, Any], asked: Address, now: float | None = None) -> None:
        self.epoch = int(topology["epoch"])
        self.fetched_at = time.monotonic() if now is None else now
        nodes = {
            node_id: parse_address(str(info["client"]), asked[0]) for node_id, info in dict(topology["nodes"]).items()
        }
        shards = list(topology["shards"])
        self._mapper = ShardMapper(len(shards))
        owners: list[Address | None] = []
        for shard in shards:
            replicas = list(shard["replicas"])
            owners.append(nodes.get(replicas[0]) if replicas else None)
        self._owners = owners
        self.addresses = sorted(set(nodes.values()))
        # More than one node serves keys: routing matters. Asked on every request, so worked out once.
        self.spans_nodes = len({owner for owner in owners if owner is not None}) > 1

    def owner(self, key: bytes) -> Address | None:
        return self._owners[self._mapper.shard_of_key(key)]


def refresh_due(table: RouteTable | None, failed_at: float, now: float, refresh_after: float) -> bool:
    """Whether to fetch the map now: it is missing or older than ``refresh_after`` seconds.

    After a failed fetch (at ``failed_at``) the client goes on with what it has
    for ``TOPOLOGY_RETRY_SECONDS`` instead of asking every known server again
    on every request.
    """
    stale = table is None or now - table.fetched_at >= refresh_after
    return stale and now - failed_at >= TOPOLOGY_RETRY_SECONDS


# After a failed shard-map fetch, keys go to any server for this long before the next try.
TOPOLOGY_RETRY_SECONDS = 1.0


def refresh_order(
    hint: Address | None, seeds: list[Address], table: RouteTable | None, unreachable: Collection[Address]
) -> list[Address]:
    """The servers to ask for the map, in order: ``hint`` (a redirect named it), the seeds, the nodes we know.

    Servers that failed to answer lately come last, so a dead primary does not
    delay learning who replaced it.
    """
    known = table.addresses if table is not None else []
    candidates = ([hint] if hint else []) + seeds + known
    return sorted(dict.fromkeys(candidates), key=lambda address: address in unreachable)  # stable


def table_of_reply(topology: bytes | None, asked: Address) -> RouteTable:
    """The table a TOPOLOGY reply's JSON describes; ValueError, KeyError or TypeError when it is not one."""
    return RouteTable(json.loads(topology or b"{}"), asked)
