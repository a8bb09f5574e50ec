"""INFO: the node's figures as one ordered model, which both ports render.

:func:`build_info` gathers the sections once, as section name -> field ->
value, each in the order Redis prints them. Fields Redis has keep Redis's
name and meaning (``redis_version``, ``connected_clients``, ``used_memory``,
``keyspace_hits``, ``aof_last_write_status`` ...), so monitoring written for
Redis reads them unchanged; AegisKV's own carry an ``aegis_`` prefix. The RESP
port prints the model as Redis's text (``# Server`` then ``field:value``,
aegiskv.protocols.resp.server) and the native port sends each section as a
JSON object (aegiskv.protocols.native.handlers): the same sections, fields and
values on both, which tests/test_info.py checks.

Values are ints, floats and strings; a dictionary is one of Redis's
``key=value,...`` fields (``db0:keys=3,expires=1,avg_ttl=0``).
"""

from __future__ import annotations

import os
import platform
import resource
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aegiskv
from aegiskv.backends.base import BackendStats
from aegiskv.cluster.gossip import GossipService
from aegiskv.cluster.shard_map import Endpoint, Topology
from aegiskv.net.reactor import Reactor
from aegiskv.node.commands import FAMILIES, REDIS_COMPATIBLE_VERSION
from aegiskv.node.operations import Node
from aegiskv.protocols.adapter import Info, InfoValue
from aegiskv.protocols.resp.adapter import ERROR_PREFIX
from aegiskv.server.durability import Durability
from aegiskv.server.replicas import ReplicaManager
from aegiskv.server.settings import Settings
from aegiskv.server.stats import ERROR_KINDS, StatsRegistry

# INFO without a section (or "default"), in Redis's order.
DEFAULT_SECTIONS = (
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "errorstats",
    "cluster",
    "keyspace",
)
# Added by "all" and "everything", as Redis adds them (one line per command).
ALL_SECTIONS = (*DEFAULT_SECTIONS[:-3], "commandstats", *DEFAULT_SECTIONS[-3:])
# Only when asked for by name: "shards" walks every key (Node.keys_per_shard); "hotkeys" is
# AegisKV's own, kept out of "all" so that INFO's default and "all" output stay Redis's.
ON_REQUEST_SECTIONS = ("shards", "hotkeys")
_EVERY_SECTION = ALL_SECTIONS + ON_REQUEST_SECTIONS
_GROUPS = frozenset({"all", "everything"})


@dataclass(frozen=True)
class InfoBaseline:
    """Counters INFO shows from zero again after CONFIG RESETSTAT: their values at the reset.

    The counters themselves keep growing (/metrics shows them to Prometheus, whose
    counters must never go down); INFO subtracts these.
    """

    hits: int = 0
    misses: int = 0
    expirations: int = 0
    evictions: int = 0
    accepted: int = 0
    rejected: int = 0

    @classmethod
    def now(cls, server: InfoSource) -> InfoBaseline:
        backend = server.node.backend_stats()
        return cls(
            hits=server.node.hits,
            misses=server.node.misses,
            expirations=backend.expirations,
            evictions=backend.evictions,
            accepted=server.reactor.accepted_total,
            rejected=server.reactor.rejected_total,
        )


class InfoSource(Protocol):
    """What INFO reads of the server (aegiskv.server.wiring.Server has it). Any thread."""

    settings: Settings
    node: Node
    reactor: Reactor
    stats: StatsRegistry
    topology: Topology
    gossip: GossipService | None
    replicas: ReplicaManager | None
    durability: Durability | None
    run_id: str
    started: float  # wall-clock seconds
    info_baseline: InfoBaseline

    @property
    def native_bound(self) -> tuple[str, int]: ...
    @property
    def resp_bound(self) -> tuple[str, int]: ...


def chosen_sections(names: Sequence[str] | None) -> list[str]:
    """The sections INFO ``names`` asks for, in the model's order, each once (names in any case).

    None or empty: the default sections; unknown names add nothing, as in Redis.
    """
    if not names:
        return list(DEFAULT_SECTIONS)
    wanted = {name.lower() for name in names}
    if "default" in wanted:
        wanted |= set(DEFAULT_SECTIONS)
    if wanted & _GROUPS:
        wanted |= set(ALL_SECTIONS)
    return [section for section in _EVERY_SECTION if section in wanted]


def build_info(server: InfoSource, names: Sequence[str] | None = None, now: Callable[[], float] = time.time) -> Info:
    """The sections ``names`` asks for (see :func:`chosen_sections`). ``now``: the wall clock."""
    sections = chosen_sections(names)
    # One reading of the backend for every section that shows it, so they agree.
    backend = server.node.backend_stats() if _BACKEND_SECTIONS.keys() & set(sections) else None
    info: Info = {}
    for section in sections:
        if section == "server":
            info[section] = _server(server, now())
        elif section == "clients":
            info[section] = _clients(server)
        elif section == "persistence":
            info[section] = _persistence(server)
        elif section == "cluster":
            info[section] = _cluster(server)
        elif section == "replication":
            info[section] = _replication(server)
        elif section == "shards":
            info[section] = _shards(server)
        elif section == "hotkeys":
            info[section] = _hotkeys(server)
        elif section == "cpu":
            info[section] = _cpu()
        elif section == "commandstats":
            info[section] = _commandstats(server)
        elif section == "errorstats":
            info[section] = _errorstats(server)
        else:
            assert backend is not None
            info[section] = _BACKEND_SECTIONS[section](server, backend)
    return info


def human_bytes(size: int) -> str:
    """Redis's ``*_human`` form: 1.50M, 812.00K, 100B."""
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


def _server(server: InfoSource, now: float) -> dict[str, InfoValue]:
    uptime = int(now - server.started)
    return {
        "redis_version": REDIS_COMPATIBLE_VERSION,
        "redis_mode": "cluster",  # every node answers the CLUSTER commands (a lone one owns every slot)
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "arch_bits": struct.calcsize("P") * 8,
        "process_id": os.getpid(),
        "run_id": server.run_id,
        "tcp_port": server.resp_bound[1],  # Redis's port: the RESP one (0: none)
        "uptime_in_seconds": uptime,
        "uptime_in_days": uptime // 86400,
        "executable": "aegis",
        "aegis_version": aegiskv.__version__,
        "aegis_build": aegiskv.build(),  # compiled with mypyc, or interpreted
        "aegis_node_id": server.settings.node_id,
        "aegis_native_port": server.native_bound[1],
        "aegis_python_version": platform.python_version(),
        "aegis_backend": server.settings.backend,
    }


def _clients(server: InfoSource) -> dict[str, InfoValue]:
    return {
        "connected_clients": server.reactor.client_connections,
        "maxclients": server.settings.max_connections,
        "blocked_clients": 0,  # no command blocks
        # Redis's names for the largest query and output buffer of the last few seconds, then
        # ours: every client's buffers together against max_client_memory, the bytes held for
        # connections not yet authenticated (every port) against max_unauthenticated_memory,
        # and the connections each budget closed (net/budget.py).
        **{
            (name if name.startswith("client_recent") else f"aegis_{name}"): value
            for name, value in server.reactor.budget.snapshot().items()
        },
        "aegis_unauthenticated_displaced": server.reactor.unauthenticated_displaced,
    }


def _memory(server: InfoSource, backend: BackendStats) -> dict[str, InfoValue]:
    rss = _rss_bytes()
    return {
        "used_memory": backend.used_bytes,
        "used_memory_human": human_bytes(backend.used_bytes),
        "used_memory_rss": rss,
        "used_memory_rss_human": human_bytes(rss),
        "maxmemory": backend.limit_bytes,
        "maxmemory_human": human_bytes(backend.limit_bytes),
        "maxmemory_policy": "allkeys-lru",  # the nearest Redis policy; CONFIG GET says the same
        "aegis_eviction": "slru",  # what it is: a segmented LRU
    }


def _persistence(server: InfoSource) -> dict[str, InfoValue]:
    node = server.node
    log = node.backend.log
    failure = log.failure if log is not None else None
    return {
        "loading": 0,
        "rdb_bgsave_in_progress": int(node.snapshot_running),
        "rdb_last_save_time": int(node.last_snapshot_time),
        "rdb_last_bgsave_status": "err" if node.last_snapshot_error else "ok",
        "aof_enabled": int(server.settings.wal != "off"),
        # Redis's "err" while its appends fail and writes get -MISCONF: the same here.
        "aof_last_write_status": "ok" if failure is None else "err",
        "aegis_wal": server.settings.wal,
        "aegis_wal_records_written": log.records_written if log is not None else 0,
        "aegis_wal_bytes_written": log.bytes_written if log is not None else 0,
        "aegis_wal_syncs": log.syncs if log is not None else 0,
        # fsyncs in the last whole second (--wal fsync; one covers every write before it).
        "aegis_wal_syncs_per_sec": server.durability.syncs_per_second if server.durability is not None else 0,
        "aegis_wal_written_seq": log.written_seq if log is not None else 0,
        "aegis_wal_durable_seq": log.durable_seq if log is not None else 0,
        # "failing" while the log cannot be written: writes are refused, reads served.
        "aegis_wal_status": "ok" if failure is None else "failing",
        "aegis_wal_failure": failure or "",
        "aegis_wal_failures": log.failures if log is not None else 0,
        "aegis_wal_records_given_up": log.given_up if log is not None else 0,
        "aegis_snapshot_failures": node.snapshot_failures,
        "aegis_last_snapshot_error": node.last_snapshot_error,
    }


def _stats(server: InfoSource, backend: BackendStats) -> dict[str, InfoValue]:
    totals = server.stats.totals_since_reset()
    reactor = server.reactor
    base = server.info_baseline
    return {
        "total_connections_received": reactor.accepted_total - base.accepted,
        "total_commands_processed": sum(totals.calls),
        "rejected_connections": reactor.rejected_total - base.rejected,
        "expired_keys": backend.expirations - base.expirations,
        "evicted_keys": backend.evictions - base.evictions,
        "keyspace_hits": server.node.hits - base.hits,
        "keyspace_misses": server.node.misses - base.misses,
        "total_error_replies": sum(totals.error_kinds),
        "aegis_rejected_commands": sum(totals.rejected),  # refused before running: auth, rate limit, failed log
        # The reactor's longest loop turn: the longest any client waited behind other requests.
        "aegis_longest_turn_usec": reactor.longest_turn_ns // 1000,
    }


def _cpu() -> dict[str, InfoValue]:
    """Redis's CPU seconds, from getrusage (the process's threads together, and its children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "used_cpu_sys": f"{own.ru_stime:.6f}",
        "used_cpu_user": f"{own.ru_utime:.6f}",
        "used_cpu_sys_children": f"{children.ru_stime:.6f}",
        "used_cpu_user_children": f"{children.ru_utime:.6f}",
    }


def _commandstats(server: InfoSource) -> dict[str, InfoValue]:
    """One ``cmdstat_<family>`` line per command family that ran or was refused, as Redis's per command.

    Counted by family (SETEX as SET): the statistics are arrays by family (aegiskv.server.stats).
    """
    totals = server.stats.totals_since_reset()
    fields: dict[str, InfoValue] = {}
    for index, family in enumerate(FAMILIES):
        calls, rejected = totals.calls[index], totals.rejected[index]
        if not calls and not rejected:
            continue
        usec = totals.latency_sum_ns[index] // 1000
        fields[f"cmdstat_{family}"] = {
            "calls": calls,
            "usec": usec,
            "usec_per_call": f"{usec / calls if calls else 0.0:.2f}",
            "rejected_calls": rejected,
            "failed_calls": totals.errors[index],
        }
    return fields


def _errorstats(server: InfoSource) -> dict[str, InfoValue]:
    """Error replies by their RESP prefix (``errorstat_ERR:count=2``), as Redis counts them."""
    totals = server.stats.totals_since_reset()
    counts: dict[str, int] = {}
    for kind, count in zip(ERROR_KINDS, totals.error_kinds, strict=True):
        if count:
            prefix = ERROR_PREFIX[kind]
            counts[prefix] = counts.get(prefix, 0) + count
    return {f"errorstat_{prefix}": {"count": count} for prefix, count in sorted(counts.items())}


def _cluster(server: InfoSource) -> dict[str, InfoValue]:
    settings = server.settings
    shard_map = server.topology.current
    primary, follower = shard_map.shards_of(settings.node_id)
    fields: dict[str, InfoValue] = {
        # As CLUSTER INFO and CONFIG GET cluster-enabled say: with or without gossip, every
        # node answers the CLUSTER commands, so cluster clients can use any node.
        "cluster_enabled": 1,
        "aegis_epoch": shard_map.epoch,
        "aegis_members": len(shard_map.members),
        "aegis_shards": server.node.shards.shards,
        "aegis_shards_primary": len(primary),
        "aegis_shards_follower": len(follower),
        "aegis_replication_factor": settings.replication_factor,
        "aegis_placement": settings.placement,
        "aegis_gossip": "on" if server.gossip is not None else "off",
    }
    if server.gossip is not None:
        fields["aegis_gossip_address"] = str(Endpoint(*server.gossip.address))
        fields.update({f"aegis_gossip_{name}": value for name, value in server.gossip.stats().items()})
    return fields


def _replication(server: InfoSource) -> dict[str, InfoValue]:
    """Redis's role and replica count where they mean something per node, the rest per shard as aegis_."""
    replicas = server.replicas
    if replicas is None:  # a lone node (gossip off): primary of every shard, no copies
        return {
            "role": "master",
            "connected_slaves": 0,
            "master_replid": server.run_id,
            "master_repl_offset": 0,
            "repl_backlog_active": 0,
            "aegis_shards_primary": server.node.shards.shards,
        }
    details = replicas.info()
    shown_as_redis = ("role", "links_up", "repl_offset", "repl_backlog_size")
    return {
        # Redis has one role per server; a node here leads some shards and follows others. As
        # Redis Cluster shows a node that masters any slot: master while it leads a shard.
        "role": "master" if details["shards_primary"] else "slave",
        "connected_slaves": details["links_up"],
        "master_replid": server.run_id,
        # Changes numbered in every shard's backlog held here (the shards' offsets summed).
        "master_repl_offset": details["repl_offset"],
        "repl_backlog_active": 1,
        "repl_backlog_size": details["repl_backlog_size"],
        **{f"aegis_{name}": value for name, value in details.items() if name not in shown_as_redis},
        "aegis_links_up": details["links_up"],
    }


def _keyspace(server: InfoSource, backend: BackendStats) -> dict[str, InfoValue]:
    if not backend.keys:
        return {}  # as Redis: a database without keys is not listed
    return {"db0": {"keys": backend.keys, "expires": backend.keys_with_ttl, "avg_ttl": backend.average_ttl_ms}}


_BACKEND_SECTIONS: dict[str, Callable[[InfoSource, BackendStats], dict[str, InfoValue]]] = {
    "memory": _memory,
    "stats": _stats,
    "keyspace": _keyspace,
}


def _shards(server: InfoSource) -> dict[str, InfoValue]:
    shard_keys = server.node.keys_per_shard()
    return {
        "aegis_shards": len(shard_keys),
        "aegis_shard_keys_min": min(shard_keys),
        "aegis_shard_keys_max": max(shard_keys),
        "aegis_shard_keys_mean": round(sum(shard_keys) / len(shard_keys), 1),
    }


def _hotkeys(server: InfoSource) -> dict[str, InfoValue]:
    """``hotkeys_tracked`` then ``hotkey_<rank>: freq=..,key=..``, hottest first (rank 0).

    ``freq`` is the key's LFU count (OBJECT FREQ, aegiskv.backends.access); the key
    is last on its line and escaped by :func:`printable_key`, so a reader takes the
    rest of the line as the key (the ops CLI and the dashboard parse exactly this)."""
    hot = server.node.hot_keys()
    fields: dict[str, InfoValue] = {"hotkeys_tracked": len(hot)}
    for rank, (key, count) in enumerate(hot):
        fields[f"hotkey_{rank}"] = {"freq": count, "key": printable_key(key)}
    return fields


def printable_key(key: bytes) -> str:
    """``key`` as text: printable ASCII as is, backslash and every other byte as ``\\xHH``.

    One spelling per key and no control byte, so a key can end an INFO line, be a
    Prometheus label, and reach a terminal safely."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F and byte != 0x5C else f"\\x{byte:02x}" for byte in key)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
