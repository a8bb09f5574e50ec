"""Which keys this node serves, and the redirect for the ones it does not.

A node serves a key when it is the primary of the key's shard in its current
shard map. For any other key the command fails with :class:`Moved`, which the
native port sends as status MOVED (message ``"<host:port> <epoch> <slot>"``,
the owner's client address) and the RESP port as ``-MOVED <slot> <host:port>``
(the owner's RESP address), exactly what Redis Cluster clients follow.

While the node is primary of every shard (a lone node) there is no router at
all, so the hot path pays one attribute read.
"""

from __future__ import annotations

from collections.abc import Iterable

from aegiskv.cluster.shard_map import Endpoint, ShardMap
from aegiskv.cluster.slots import key_slot
from aegiskv.errors import CommandError, ErrorKind

# In the TRYAGAIN refusal of a key whose shard has no primary yet: the request was not run.
# Clients read it to retry even requests that are not idempotent (aegiskv.client.retry).
NO_PRIMARY_YET = "has no primary yet"


class Moved(CommandError):
    """The key belongs to another node."""

    def __init__(self, slot: int, epoch: int, client: Endpoint, resp: Endpoint | None) -> None:
        self.slot = slot
        self.epoch = epoch
        self.client = client
        self.resp = resp
        owner = resp or client
        # Redis writes the address without IPv6 brackets; its clients split at the last colon.
        super().__init__(ErrorKind.MOVED, f"{slot} {owner.host}:{owner.port}")

    @property
    def native_message(self) -> str:
        return f"{self.client} {self.epoch} {self.slot}"


class Router:
    """Checks keys against one shard map for one node. Immutable.

    With ``leased`` (replication: a shard's primary is the holder of its lease)
    the node serves the shards the map names it primary of by lease, and a
    shard whose holder is not known yet, where the node itself would be named,
    is refused with TRYAGAIN (an election is under way) rather than redirected
    to itself. So are the shards in ``electing``: those whose election this
    node takes part in without knowing its winner, where a redirect could only
    follow gossip's older word.
    """

    __slots__ = ("_local", "_shard_of_key", "_shard_map", "_node_id", "_leased", "_electing")

    def __init__(
        self, shard_map: ShardMap, node_id: str, leased: bool = False, electing: frozenset[int] = frozenset()
    ) -> None:
        self._shard_map = shard_map
        self._shard_of_key = shard_map.mapper.shard_of_key
        self._node_id = node_id
        self._leased = leased
        self._electing = electing
        if leased:
            primaries = shard_map.primaries
            self._local = bytes(primaries.get(shard) == node_id for shard in range(len(shard_map.replica_sets)))
        else:
            self._local = bytes(replicas[:1] == (node_id,) for replicas in shard_map.replica_sets)

    def check(self, key: bytes) -> None:
        if not self._local[self._shard_of_key(key)]:
            self._moved(key)

    def check_all(self, keys: Iterable[bytes]) -> None:
        """Every key must be local; the redirect names the first that is not."""
        local, shard_of_key = self._local, self._shard_of_key
        for key in keys:
            if not local[shard_of_key(key)]:
                self._moved(key)

    def leads(self, shard: int) -> bool:
        """Whether this node serves ``shard`` as its primary."""
        return bool(self._local[shard])

    def to_primary(self, key: bytes) -> None:
        """Raise the redirect to the primary of ``key``'s shard, this node's own main port included.

        The replica endpoint (aegiskv.cluster.replica_reads) sends writes there: to Redis Cluster
        clients it is another node than the primary, even when the primary is this process.
        """
        if self._local[self._shard_of_key(key)]:
            slot = key_slot(key)
            me = self._shard_map.members[self._node_id]
            raise Moved(slot, self._shard_map.epoch, me.client, me.resp)
        self._moved(key)

    def _moved(self, key: bytes) -> None:
        slot = key_slot(key)
        shard_map = self._shard_map
        owner = shard_map.primary_of_slot(slot)
        if owner is None:
            raise CommandError(ErrorKind.CLUSTER_DOWN, f"no node serves slot {slot}")
        if self._leased and (owner.node_id == self._node_id or self._shard_of_key(key) in self._electing):
            raise CommandError(ErrorKind.TRYAGAIN, f"slot {slot} {NO_PRIMARY_YET} (an election is under way)")
        raise Moved(slot, shard_map.epoch, owner.client, owner.resp)


class Routing:
    """The server's current router; swapped whole when the shard map changes (any thread may read it)."""

    def __init__(self) -> None:
        self.router: Router | None = None
        # The map and node the router was built from: kept even when there is no router (this node
        # leads every shard), for the replica endpoint's redirects to this node's own main port.
        self.shard_map: ShardMap | None = None
        self.node_id = ""

    def update(
        self, shard_map: ShardMap, node_id: str, leased: bool = False, electing: frozenset[int] = frozenset()
    ) -> None:
        if leased:
            everything_local = all(
                shard_map.primaries.get(shard) == node_id for shard in range(shard_map.mapper.shards)
            )
        else:
            everything_local = all(replicas[:1] == (node_id,) for replicas in shard_map.replica_sets)
        self.shard_map = shard_map
        self.node_id = node_id
        self.router = None if everything_local else Router(shard_map, node_id, leased, electing)
