"""The shard map: key -> slot -> shard -> replica set -> member addresses.

This is the one mapping routing, ``TOPOLOGY``, ``CLUSTER SLOTS`` and the client
use. :class:`Topology` owns the current map and rebuilds it with the configured
placement whenever the member set (or a member's address) changes; the map's
epoch grows by one on every rebuild that changed anything, so a client holding
an older epoch knows to refresh.

The primary of a shard is the member that holds its lease (aegiskv.cluster.leases),
when the node knows it: ``replica_sets`` lists that member first. Until a holder
is known, placement's order stands and its first member (the *preferred*
primary) is named.

**Moves copy before they switch.** Placement says where a shard should be (its
*target* set); the map uses the *staged* set (:func:`staged_set`), built from
what each member publishes of itself: the shards it holds a complete copy of
(``ready``) and whether it is draining (placement leaves a draining member out
of every target). A target member without a complete copy is a *learner*: it is
streamed the shard but does not vote for its lease, does not count towards a
write quorum and is never the preferred primary. Members that hold a complete
copy but are no longer targets (*leaving*) stay in the set, voting, for as long
as they publish their copy as ready; the primary moves to the first ready target
member by a lease hand-off. A leaving member withdraws its copy once, in its own
map, every target member is ready and it leads the shard no more. So a learner
becoming ready adds one voter, a leaving member withdrawing removes one, each a
separate step: every majority of one step meets every majority of the next
(aegiskv.cluster.leases, "What this module does not do"), which a replacement
in one step (``{a, b, c}`` to ``{a, b, d}``) would not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from aegiskv.cluster.interfaces import Placement
from aegiskv.cluster.slots import SLOTS, ShardMapper


class Endpoint(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Member(NamedTuple):
    """What the shard map needs to know about one node."""

    node_id: str
    client: Endpoint  # native protocol
    resp: Endpoint | None  # RESP, when the node serves it
    peer: Endpoint | None = None  # the cluster port (leases, replication), when it replicates
    lead: frozenset[int] = frozenset()  # the shards it says it leads (gossip news: may lag)
    ready: frozenset[int] = frozenset()  # the shards it says it holds a complete copy of
    draining: bool = False  # leaving: placement gives it nothing, its shards move away first
    recovering: frozenset[int] = frozenset()  # shards it holds from before a restart, not yet caught up
    # Its replica endpoint (resp_replica_bind): a second RESP port where it answers, as a Redis replica
    # does, reads of the shards it follows; Redis Cluster clients see it as a node of its own.
    replica: Endpoint | None = None


class SlotRange(NamedTuple):
    first: int
    last: int  # inclusive
    replica_set: tuple[str, ...]  # node ids, primary first


class ShardMap:
    """An immutable snapshot of who holds what. Safe to share between threads."""

    __slots__ = (
        "epoch",
        "mapper",
        "placement_sets",
        "learners",
        "leaving",
        "replica_sets",
        "primaries",
        "members",
        "_ranges",
    )

    def __init__(
        self,
        epoch: int,
        mapper: ShardMapper,
        replica_sets: list[tuple[str, ...]],
        members: Mapping[str, Member],
        primaries: Mapping[int, str] | None = None,
        learners: list[frozenset[str]] | None = None,
        leaving: list[frozenset[str]] | None = None,
    ) -> None:
        if len(replica_sets) != mapper.shards:
            raise ValueError(f"{len(replica_sets)} replica sets for {mapper.shards} shards")
        self.epoch = epoch
        self.mapper = mapper
        self.placement_sets = tuple(replica_sets)  # staged (see above): the first is the preferred primary
        # Per shard, the members of placement_sets still copying it (never primary, no vote).
        self.learners = tuple(learners) if learners is not None else tuple(frozenset() for _ in replica_sets)
        # Per shard, the members of placement_sets placement no longer wants there (they hand over).
        self.leaving = tuple(leaving) if leaving is not None else tuple(frozenset() for _ in replica_sets)
        # Known lease holders by shard; one outside the shard's replica set is out of date and ignored.
        self.primaries = {
            shard: holder for shard, holder in (primaries or {}).items() if holder in self.placement_sets[shard]
        }
        self.replica_sets = tuple(
            _primary_first(replicas, self.primaries.get(shard)) for shard, replicas in enumerate(self.placement_sets)
        )
        self.members = dict(members)
        self._ranges: list[SlotRange] | None = None

    def with_primaries(self, primaries: Mapping[int, str]) -> ShardMap:
        """The same map with these lease holders, one epoch later (clients refresh on a new epoch)."""
        return ShardMap(
            self.epoch + 1,
            self.mapper,
            list(self.placement_sets),
            self.members,
            primaries,
            list(self.learners),
            list(self.leaving),
        )

    def voters(self, shard: int) -> tuple[str, ...]:
        """The members of ``shard``'s set that vote for its lease and count towards write quorums."""
        learners = self.learners[shard]
        members = self.placement_sets[shard]
        return tuple(member for member in members if member not in learners) if learners else members

    def replica_set_of_key(self, key: bytes) -> tuple[str, ...]:
        return self.replica_sets[self.mapper.shard_of_key(key)]

    def replica_set_of_slot(self, slot: int) -> tuple[str, ...]:
        return self.replica_sets[self.mapper.shard_of_slot(slot)]

    def primary_of_slot(self, slot: int) -> Member | None:
        replica_set = self.replica_set_of_slot(slot)
        return self.members[replica_set[0]] if replica_set else None

    def slot_ranges(self) -> list[SlotRange]:
        """Contiguous slot ranges with one replica set each (neighbouring shards with the same set merged)."""
        if self._ranges is None:
            ranges: list[SlotRange] = []
            for shard, replica_set in enumerate(self.replica_sets):
                first, last = self.mapper.slot_range(shard)
                if first > last:
                    continue  # more shards than slots in this range: an empty shard
                if ranges and ranges[-1].replica_set == replica_set and ranges[-1].last + 1 == first:
                    ranges[-1] = ranges[-1]._replace(last=last)
                else:
                    ranges.append(SlotRange(first, last, replica_set))
            self._ranges = ranges
        return self._ranges

    def shards_of(self, node_id: str) -> tuple[list[int], list[int]]:
        """(shards ``node_id`` is primary of, shards it follows)."""
        primary = [shard for shard, replicas in enumerate(self.replica_sets) if replicas[:1] == (node_id,)]
        follower = [shard for shard, replicas in enumerate(self.replica_sets) if node_id in replicas[1:]]
        return primary, follower

    def describe(self) -> dict[str, Any]:
        """The map as plain data (the native TOPOLOGY reply, as JSON)."""
        return {
            "epoch": self.epoch,
            "slots": SLOTS,
            "shards": [
                {
                    "shard": shard,
                    "slots": list(self.mapper.slot_range(shard)),
                    "replicas": list(replicas),  # the primary first
                    "primary": self.primaries.get(shard),  # the lease holder, None while unknown
                    "preferred": self.placement_sets[shard][0] if self.placement_sets[shard] else None,
                    "learners": sorted(self.learners[shard]),  # still copying the shard
                    "leaving": sorted(self.leaving[shard]),  # placement moved it away: handing over
                }
                for shard, replicas in enumerate(self.replica_sets)
            ],
            "nodes": {
                member.node_id: {"client": str(member.client), "resp": str(member.resp) if member.resp else None}
                for member in self.members.values()
            },
        }


def _primary_first(replicas: tuple[str, ...], primary: str | None) -> tuple[str, ...]:
    if primary is None or replicas[:1] == (primary,):
        return replicas
    return (primary, *(member for member in replicas if member != primary))


class Topology:
    """The node's current shard map, rebuilt by :meth:`update` when membership changes."""

    def __init__(self, placement: Placement, mapper: ShardMapper, replication_factor: int) -> None:
        self._placement = placement
        self._mapper = mapper
        self._replication_factor = replication_factor
        self._lock = threading.Lock()  # serialises rebuilds; readers just take self.current
        self.current = ShardMap(0, mapper, [() for _ in range(mapper.shards)], {})

    def update(self, members: Iterable[Member]) -> ShardMap:
        """Rebuild for this member set; the epoch grows only if the map changed."""
        by_id = {member.node_id: member for member in members}
        with self._lock:
            current = self.current
            if by_id == current.members:
                return current
            if _only_leads_changed(current.members, by_id):
                # Gossip carries what each member leads, so every election and hand-off in the
                # cluster lands here on every node. Placement and staging read nothing of it:
                # keep their sets rather than recompute them for every shard, which under load
                # made each election cost every node tens of ms of its event loop, enough to
                # lose more leases (a storm of them: issue 22).
                self.current = ShardMap(
                    current.epoch + 1,
                    self._mapper,
                    list(current.placement_sets),
                    by_id,
                    current.primaries,
                    list(current.learners),
                    list(current.leaving),
                )
                return self.current
            # A draining member gets nothing (its shards move away), unless every member drains.
            staying = {node: member for node, member in by_id.items() if not member.draining} or by_id
            targets = self._placement.assign(list(staying), self._mapper.shards, self._replication_factor)
            _check_replica_sets(targets, staying, self._mapper.shards, self._replication_factor)
            staged = [staged_set(shard, target, by_id) for shard, target in enumerate(targets)]
            self.current = ShardMap(
                current.epoch + 1,
                self._mapper,
                [members for members, _, _ in staged],
                by_id,
                current.primaries,
                [learners for _, learners, _ in staged],
                [leaving for _, _, leaving in staged],
            )
            return self.current

    def set_primaries(self, primaries: Mapping[int, str]) -> ShardMap:
        """Record the known lease holders; the epoch grows only if that changed the map."""
        with self._lock:
            current = self.current
            candidate = current.with_primaries(primaries)
            if candidate.replica_sets == current.replica_sets and candidate.primaries == current.primaries:
                return current
            self.current = candidate
            return candidate


def _only_leads_changed(before: Mapping[str, Member], after: Mapping[str, Member]) -> bool:
    """The same members, and each differs from before at most in the shards it says it leads."""
    if before.keys() != after.keys():
        return False
    return all(member._replace(lead=before[node].lead) == before[node] for node, member in after.items())


def staged_set(
    shard: int, target: tuple[str, ...], members: Mapping[str, Member]
) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """The replica set the map uses for ``shard`` while it moves to ``target``; its learners; its leaving members.

    Ready target members first (placement's order: the first is the preferred
    primary), then the leaving members (outside the target, still publishing a
    ready copy: they withdraw it themselves, see above), then the learners.

    When the ready copies are fewer than a majority of the target there is no
    staging: the target and the leaving members are the set, learners none. No ready copy at all is a new
    cluster (or every copy lost): nothing to copy from. A few (members died or
    restarted) could not elect a primary to copy from, and the leases' own rule
    for untrusted voters (they vote again after a while) must keep the shard live.
    """
    if any(node in members and shard in members[node].recovering for node in target):
        # A target member restarted with its own copy (its log): the target stands, as before
        # staging; the restarted member catches up as a voter that grants no election until then
        # (or, the shard's only member, leads with what its log brought back).
        return target, frozenset(), frozenset()
    ready = [node for node, member in members.items() if shard in member.ready]
    ready_targets = tuple(node for node in target if node in ready)
    learners = tuple(node for node in target if node not in ready)
    outside = sorted(node for node in ready if node not in target)
    if len(ready_targets) + len(outside) < len(target) // 2 + 1:
        return target + tuple(outside), frozenset(), frozenset(outside)
    return ready_targets + tuple(outside) + learners, frozenset(learners), frozenset(outside)


def _check_replica_sets(
    replica_sets: list[tuple[str, ...]], members: Mapping[str, Member], shards: int, replication_factor: int
) -> None:
    """A placement plugin's answer is checked before anything routes by it."""
    if len(replica_sets) != shards:
        raise ValueError(f"placement returned {len(replica_sets)} replica sets for {shards} shards")
    copies = min(replication_factor, len(members))
    for shard, replicas in enumerate(replica_sets):
        if len(replicas) != copies or len(set(replicas)) != copies or not set(replicas) <= members.keys():
            raise ValueError(f"placement gave shard {shard} the replica set {replicas!r}; expected {copies} members")
