"""The replica endpoint: which requests a follower's copy answers there, and the redirect for the rest.

Redis Cluster clients give every ``host:port`` one role, master or replica, and
an AegisKV node is both: primary of some shards, follower of others. So a node
started with ``resp_replica_bind`` opens a second RESP port, its *replica
endpoint*, and CLUSTER SLOTS lists it as the replica of each shard the node
follows with a complete copy, while the main RESP port stays the primary of the
shards it leads (aegiskv.protocols.resp.cluster). redis-py's
``RedisCluster(read_from_replicas=True)`` then sends reads to the endpoint and
keeps every main port as a primary, so broadcasts (DBSIZE, FLUSHALL, a cluster
SCAN) still reach every node.

On the replica endpoint, as on a Redis replica:

* a keyed read (Redis's ``readonly`` flag) on a connection that sent READONLY
  is answered from this node's copy when the node leads the key's shard or
  holds a *readable* copy of it (:meth:`CopyState.readable`: complete, caught
  up, and its primary heard from within the lease it holds, so a follower cut
  off from its primary stops answering within ``lease_duration``);
* every other keyed command (a write, a read of a connection without READONLY,
  a read of a copy that is not readable) is redirected with MOVED to the
  primary's main port, this node's own included;
* a keyless write (FLUSHALL) is refused with READONLY; keyless commands that
  write nothing (PING, INFO, CLUSTER, DBSIZE) are answered.

**The check is made where the read runs.** A request is checked when it is
routed (on the reactor) and again when it runs, which may be in a worker
behind a large batch, after the copy changed. A resync empties a copy before
it refills it; :meth:`CopyState.copy_generation` grows before that, so a read
that ran while its shard's copy was emptied is answered with the redirect
instead of what it read (:meth:`ReplicaReads.finish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aegiskv.cluster.redirect import Moved, Router, Routing
from aegiskv.cluster.shard_map import ShardMap
from aegiskv.cluster.slots import key_slot
from aegiskv.errors import CommandError, ErrorKind


class CopyState(Protocol):
    """The copies this node follows (aegiskv.server.replicas.ReplicaManager). Any thread may ask."""

    def readable(self, shard: int) -> bool:
        """Whether this node's follower copy of ``shard`` may answer reads now."""
        ...

    def copy_generation(self, shard: int) -> int:
        """A count that grows before this node's copy of ``shard`` is emptied (a resync, the shard dropped)."""
        ...


class ReplicaReads:
    """The replica endpoint's routing for one node (see the module docstring)."""

    __slots__ = ("_routing", "_copies")

    def __init__(self, routing: Routing, copies: CopyState | None) -> None:
        self._routing = routing
        self._copies = copies

    def start(self, keys: Sequence[bytes], reads: bool) -> list[int]:
        """Before a request runs (or is queued): raise the redirect unless every key may be answered here.

        ``reads``: the request is a read this endpoint may answer (its connection sent READONLY);
        anything else is redirected. Returns each key's copy generation, for :meth:`finish`.
        """
        shard_map = self._routing.shard_map
        if shard_map is None:
            raise CommandError(ErrorKind.CLUSTER_DOWN, "this node does not know the shard map yet")
        router = self._routing.router
        copies = self._copies
        shard_of_key = shard_map.mapper.shard_of_key
        generations = []
        for key in keys:
            shard = shard_of_key(key)
            # Read before the copy is judged: a resync that begins after this shows as a new generation.
            generation = copies.copy_generation(shard) if copies is not None else 0
            if not reads or not (
                router is None or router.leads(shard) or (copies is not None and copies.readable(shard))
            ):
                _redirect(key, router, shard_map, self._routing.node_id)
            generations.append(generation)
        return generations

    def finish(self, keys: Sequence[bytes], generations: Sequence[int]) -> None:
        """After a read ran: raise the redirect if a copy it read from was emptied meanwhile."""
        copies = self._copies
        shard_map = self._routing.shard_map
        if copies is None or shard_map is None:
            return
        shard_of_key = shard_map.mapper.shard_of_key
        for key, generation in zip(keys, generations):
            if copies.copy_generation(shard_of_key(key)) != generation:
                _redirect(key, self._routing.router, shard_map, self._routing.node_id)


def _redirect(key: bytes, router: Router | None, shard_map: ShardMap, node_id: str) -> None:
    """Raise MOVED to the primary of ``key``'s shard (or the error saying why there is none)."""
    if router is not None:
        router.to_primary(key)  # raises
        return
    # No router: this node leads every shard, so its main port is the primary.
    me = shard_map.members.get(node_id)
    if me is None:
        raise CommandError(ErrorKind.CLUSTER_DOWN, "this node is not in its own shard map yet")
    raise Moved(key_slot(key), shard_map.epoch, me.client, me.resp)
