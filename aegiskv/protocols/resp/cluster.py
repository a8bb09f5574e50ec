"""RESP ``CLUSTER`` subcommands: the shard map in Redis Cluster's shapes.

Redis Cluster clients (redis-py ``RedisCluster``, ``redis-cli -c``) learn the
slot map from ``CLUSTER SLOTS`` or ``CLUSTER SHARDS`` and follow ``-MOVED``.
AegisKV answers from the same :class:`~aegiskv.cluster.shard_map.ShardMap` the
native ``TOPOLOGY`` uses, with two translations:

* Redis node ids are 40 hex characters; an AegisKV node id is any text, so
  RESP replies name a node by the SHA-1 of its id (``redis_node_id``).
* A node is primary of the shards it leads and follower of others, and Redis
  gives each ``host:port`` one role. So the main RESP address stands for the
  node as a primary, and a node with a replica endpoint (``resp_replica_bind``,
  aegiskv.cluster.replica_reads) is listed there as the replica of each shard
  it holds a complete copy of (its gossiped ``ready`` shards) without leading:
  a second node to Redis clients, named ``redis_replica_id``. CLUSTER SLOTS
  and SHARDS give each slot range its primary's main address, then those
  replica endpoints; CLUSTER NODES lists the main addresses as masters and the
  replica endpoints as slaves, each of the primary whose shards it follows
  most (the format has one master per slave). Nodes without a replica
  endpoint are listed as primaries only, and every read goes to the primary.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from aegiskv.cluster.shard_map import Member, ShardMap
from aegiskv.cluster.slots import key_slot
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import Args, subcommand
from aegiskv.protocols.session import Session


def redis_node_id(node_id: str) -> str:
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()


def redis_replica_id(node_id: str) -> str:
    """The Redis node id of a node's replica endpoint (NUL never occurs in a node id)."""
    return redis_node_id(node_id + "\0replica")


def _resp_endpoint(member: Member) -> tuple[str, int]:
    endpoint = member.resp or member.client
    return endpoint.host, endpoint.port


class _Served(NamedTuple):
    """Consecutive slots with one primary and the same replica endpoints listed as its replicas."""

    first: int
    last: int
    primary: str
    replicas: tuple[str, ...]  # node ids whose replica endpoints serve the range's reads


def _served_ranges(shard_map: ShardMap) -> list[_Served]:
    members = shard_map.members
    ranges: list[_Served] = []
    for shard, replica_set in enumerate(shard_map.replica_sets):
        first, last = shard_map.mapper.slot_range(shard)
        if not replica_set or first > last or replica_set[0] not in members:
            continue
        replicas = tuple(
            node_id
            for node_id in replica_set[1:]
            if node_id in members and members[node_id].replica is not None and shard in members[node_id].ready
        )
        previous = ranges[-1] if ranges else None
        if (
            previous
            and previous.last + 1 == first
            and (previous.primary, previous.replicas) == (replica_set[0], replicas)
        ):
            ranges[-1] = previous._replace(last=last)
        else:
            ranges.append(_Served(first, last, replica_set[0], replicas))
    return ranges


def _slots_node(host: str, port: int, node_id: str) -> bytes:
    return resp.array([resp.bulk(host.encode()), resp.integer(port), resp.bulk(node_id.encode())])


def cluster_slots(shard_map: ShardMap) -> bytes:
    """Each slot range: first, last, its primary's main address, then its followers' replica endpoints."""
    members = shard_map.members
    entries = []
    for served in _served_ranges(shard_map):
        nodes = [_slots_node(*_resp_endpoint(members[served.primary]), redis_node_id(served.primary))]
        for node_id in served.replicas:
            endpoint = members[node_id].replica
            assert endpoint is not None
            nodes.append(_slots_node(endpoint.host, endpoint.port, redis_replica_id(node_id)))
        entries.append(resp.array([resp.integer(served.first), resp.integer(served.last), *nodes]))
    return resp.array(entries)


def _primary_ranges(shard_map: ShardMap) -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = {node_id: [] for node_id in shard_map.members}
    for slot_range in shard_map.slot_ranges():
        if slot_range.replica_set:
            ranges[slot_range.replica_set[0]].append((slot_range.first, slot_range.last))
    return ranges


def _shard_node(node_id: str, host: str, port: int, role: bytes, protocol: int) -> bytes:
    return resp.mapping(
        [
            (resp.bulk(b"id"), resp.bulk(node_id.encode())),
            (resp.bulk(b"port"), resp.integer(port)),
            (resp.bulk(b"ip"), resp.bulk(host.encode())),
            (resp.bulk(b"endpoint"), resp.bulk(host.encode())),
            (resp.bulk(b"role"), resp.bulk(role)),
            (resp.bulk(b"replication-offset"), resp.integer(0)),
            (resp.bulk(b"health"), resp.bulk(b"online")),
        ],
        protocol,
    )


def cluster_shards(shard_map: ShardMap, protocol: int) -> bytes:
    """One entry per primary and its listed replica endpoints (Redis 7 shape): ranges, master, replicas."""
    members = shard_map.members
    grouped: dict[tuple[str, tuple[str, ...]], list[tuple[int, int]]] = {}
    for served in _served_ranges(shard_map):
        grouped.setdefault((served.primary, served.replicas), []).append((served.first, served.last))
    entries = []
    for (primary, replicas), owned in sorted(grouped.items()):
        nodes = [_shard_node(redis_node_id(primary), *_resp_endpoint(members[primary]), b"master", protocol)]
        for node_id in replicas:
            endpoint = members[node_id].replica
            assert endpoint is not None
            nodes.append(_shard_node(redis_replica_id(node_id), endpoint.host, endpoint.port, b"replica", protocol))
        slots = resp.array([resp.integer(bound) for first_last in owned for bound in first_last])
        entries.append(resp.mapping([(resp.bulk(b"slots"), slots), (resp.bulk(b"nodes"), resp.array(nodes))], protocol))
    return resp.array(entries)


def _replica_masters(shard_map: ShardMap) -> dict[str, str]:
    """Each listed replica endpoint's master for CLUSTER NODES: the primary it follows most slots of."""
    followed: dict[str, dict[str, int]] = {}
    for served in _served_ranges(shard_map):
        for node_id in served.replicas:
            counts = followed.setdefault(node_id, {})
            counts[served.primary] = counts.get(served.primary, 0) + served.last - served.first + 1
    return {
        node_id: min(counts, key=lambda primary: (-counts[primary], primary)) for node_id, counts in followed.items()
    }


def cluster_nodes(shard_map: ShardMap, my_id: str) -> bytes:
    """Redis's CLUSTER NODES text: one master line per node (slots as first-last ranges), then the replica endpoints."""
    lines = []
    epoch = str(shard_map.epoch)
    for node_id, ranges in sorted(_primary_ranges(shard_map).items()):
        host, port = _resp_endpoint(shard_map.members[node_id])
        flags = "myself,master" if node_id == my_id else "master"
        slots = " ".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)
        fields = [redis_node_id(node_id), f"{host}:{port}@0", flags, "-", "0", "0", epoch, "connected"]
        lines.append(" ".join(fields) + (f" {slots}" if slots else ""))
    for node_id, master in sorted(_replica_masters(shard_map).items()):
        endpoint = shard_map.members[node_id].replica
        assert endpoint is not None
        address = f"{endpoint.host}:{endpoint.port}@0"
        lines.append(
            " ".join([redis_replica_id(node_id), address, "slave", redis_node_id(master), "0", "0", epoch, "connected"])
        )
    return ("\n".join(lines) + "\n").encode()


def cluster_info(shard_map: ShardMap) -> bytes:
    assigned = sum(
        slot_range.last - slot_range.first + 1 for slot_range in shard_map.slot_ranges() if slot_range.replica_set
    )
    serving = sum(1 for ranges in _primary_ranges(shard_map).values() if ranges)
    fields = [
        ("cluster_enabled", 1),
        ("cluster_state", "ok" if assigned == 16384 else "fail"),
        ("cluster_slots_assigned", assigned),
        ("cluster_slots_ok", assigned),
        ("cluster_slots_pfail", 0),
        ("cluster_slots_fail", 0),
        # Replica endpoints count as nodes, as CLUSTER NODES lists them.
        ("cluster_known_nodes", len(shard_map.members) + len(_replica_masters(shard_map))),
        ("cluster_size", serving),
        ("cluster_current_epoch", shard_map.epoch),
        ("cluster_my_epoch", shard_map.epoch),
    ]
    return "".join(f"{name}:{value}\r\n" for name, value in fields).encode()


_HELP = [
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node.",
    "SHARDS",
    "    Return information about slot range mappings and the nodes serving them.",
    "SLOTS",
    "    Return information about slots range mappings.",
    "HELP",
    "    Print this help.",
]


def cmd_cluster(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = subcommand("cluster", args, session)
    shard_map = server.topology.current
    if sub == b"slots":
        return cluster_slots(shard_map)
    if sub == b"shards":
        return cluster_shards(shard_map, session.protocol)
    if sub == b"nodes":
        return resp.verbatim(cluster_nodes(shard_map, server.settings.node_id), session.protocol)
    if sub == b"info":
        return resp.verbatim(cluster_info(shard_map), session.protocol)
    if sub == b"myid":
        return resp.bulk(redis_node_id(server.settings.node_id).encode())
    if sub == b"keyslot":
        return resp.integer(key_slot(args[2]))
    return resp.array([resp.simple(line) for line in _HELP])


def cmd_readonly(server: HandlerContext, session: Session, args: Args) -> bytes:
    """READONLY / READWRITE: whether a replica endpoint may answer this connection's reads from its copy.

    On the main port they change nothing: it answers reads of the shards it leads either way.
    """
    session.readonly = args[0].lower() == b"readonly"
    return resp.OK
