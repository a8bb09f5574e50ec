"""RESP ``CLUSTER`` subcommands: the shard map in Redis Cluster's shapes.

Redis Cluster clients (redis-py ``RedisCluster``, ``redis-cli -c``) learn the
slot map from ``CLUSTER SLOTS`` or ``CLUSTER SHARDS`` and follow ``-MOVED``.
AegisKV answers from the same :class:`~aegiskv.cluster.shard_map.ShardMap` the
native ``TOPOLOGY`` uses, with two translations:

* Redis node ids are 40 hex characters; an AegisKV node id is any text, so
  RESP replies name a node by the SHA-1 of its id (``redis_node_id``).
* Only primaries are listed as serving slots. Followers hold copies, but no
  node serves reads for a shard it does not lead, and a client told about
  replicas would send reads to them (redis-py with ``read_from_replicas``).
"""

from __future__ import annotations

import hashlib

from aegiskv.cluster.shard_map import Member, ShardMap
from aegiskv.cluster.slots import key_slot
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import Args, subcommand
from aegiskv.protocols.session import Session


def redis_node_id(node_id: str) -> str:
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()


def _resp_endpoint(member: Member) -> tuple[str, int]:
    endpoint = member.resp or member.client
    return endpoint.host, endpoint.port


def cluster_slots(shard_map: ShardMap) -> bytes:
    entries = []
    for slot_range in shard_map.slot_ranges():
        if not slot_range.replica_set:
            continue
        host, port = _resp_endpoint(shard_map.members[slot_range.replica_set[0]])
        node = resp.array(
            [resp.bulk(host.encode()), resp.integer(port), resp.bulk(redis_node_id(slot_range.replica_set[0]).encode())]
        )
        entries.append(resp.array([resp.integer(slot_range.first), resp.integer(slot_range.last), node]))
    return resp.array(entries)


def _primary_ranges(shard_map: ShardMap) -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = {node_id: [] for node_id in shard_map.members}
    for slot_range in shard_map.slot_ranges():
        if slot_range.replica_set:
            ranges[slot_range.replica_set[0]].append((slot_range.first, slot_range.last))
    return ranges


def cluster_shards(shard_map: ShardMap, protocol: int) -> bytes:
    """One entry per node that is primary of some slots (Redis 7 shape)."""
    entries = []
    for node_id, ranges in sorted(_primary_ranges(shard_map).items()):
        if not ranges:
            continue
        member = shard_map.members[node_id]
        host, port = _resp_endpoint(member)
        node = resp.mapping(
            [
                (resp.bulk(b"id"), resp.bulk(redis_node_id(node_id).encode())),
                (resp.bulk(b"port"), resp.integer(port)),
                (resp.bulk(b"ip"), resp.bulk(host.encode())),
                (resp.bulk(b"endpoint"), resp.bulk(host.encode())),
                (resp.bulk(b"role"), resp.bulk(b"master")),
                (resp.bulk(b"replication-offset"), resp.integer(0)),
                (resp.bulk(b"health"), resp.bulk(b"online")),
            ],
            protocol,
        )
        slots = resp.array([resp.integer(bound) for first_last in ranges for bound in first_last])
        entries.append(
            resp.mapping([(resp.bulk(b"slots"), slots), (resp.bulk(b"nodes"), resp.array([node]))], protocol)
        )
    return resp.array(entries)


def cluster_nodes(shard_map: ShardMap, my_id: str) -> bytes:
    """Redis's CLUSTER NODES text: one line per node, slots as first-last ranges."""
    lines = []
    for node_id, ranges in sorted(_primary_ranges(shard_map).items()):
        host, port = _resp_endpoint(shard_map.members[node_id])
        flags = "myself,master" if node_id == my_id else "master"
        slots = " ".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)
        address = f"{host}:{port}@0"
        fields = [redis_node_id(node_id), address, flags, "-", "0", "0", str(shard_map.epoch), "connected"]
        lines.append(" ".join(fields) + (f" {slots}" if slots else ""))
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
        ("cluster_known_nodes", len(shard_map.members)),
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
    """READONLY / READWRITE: accepted; reads are served by primaries either way (see the module docstring)."""
    return resp.OK
