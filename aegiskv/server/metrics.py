"""Prometheus exposition of the server's counters (prometheus-client).

The hot path never calls prometheus-client: its counters take a lock per
increment (about a microsecond). Instead the server keeps plain per-thread
integers (aegiskv.server.stats) and this collector turns them into metric families
when /metrics is scraped. Each server has its own registry, so several servers
can live in one process (tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from aegiskv.backends.base import BackendStats
from aegiskv.cluster.replication import LAG_BUCKET_BOUNDS, LagHistogram
from aegiskv.net.reactor import Reactor
from aegiskv.node.commands import FAMILIES
from aegiskv.node.operations import Node
from aegiskv.protocols.session import Authenticator
from aegiskv.server.durability import Durability
from aegiskv.server.info import printable_key
from aegiskv.server.stats import BUCKET_BOUNDS_SECONDS, StatsRegistry


class ReplicationSource(Protocol):
    """The replica manager's report (aegiskv.server.replicas.ReplicaManager.info) and lag."""

    lag: LagHistogram

    def info(self) -> dict[str, int | str]: ...

    def follower_gaps(self) -> dict[str, int]: ...


# Replication counters on /metrics: INFO replication's name (without aegis_) -> help text.
_REPLICATION_COUNTERS = {
    "changes_replicated": "Changes this node sent to followers of the shards it leads",
    "changes_applied": "Changes this node applied as a follower",
    "resyncs_sent": "Shard snapshots sent to followers that fell behind or had a gap",
    "resyncs_received": "Shard snapshots received as a follower",
    "changes_discarded": "Changes a returning copy discarded because the new primary never had them",
    "fenced": "Times this node, as a primary, was fenced by a higher epoch and stepped down",
    "quorum_failures": "Writes answered 'outcome unknown' because their write quorum was not reached",
    "quorum_timeouts": "Writes whose quorum wait ran out (quorum_timeout)",
    "lease_lost_replies": "Writes answered 'outcome unknown' because the primary's lease lapsed while they waited",
    "unreplicated_writes": "Writes applied on a shard this node no longer leads; their replies fail",
    "handoffs": "Shards this node handed to placement's preferred primary",
    "read_quorum_reads": "Reads answered after --read-quorum copies answered",
    "read_quorum_failures": "Reads refused because --read-quorum copies did not answer in time",
    "read_repairs": "Newer copies a quorum read found on a follower and wrote back on this primary",
    "read_stale_copies": "Follower copies a quorum read found older than the newest (the stream catches them up)",
    "lease_elections_started": "Lease elections this node started for a shard",
    "lease_elections_won": "Lease elections this node won (it became the shard's primary)",
    "lease_renewals": "Lease renewals this node completed as a primary",
    "lease_grants": "Lease votes this node granted (renewals included)",
    "lease_refusals": "Lease votes this node refused",
    "lease_lost": "Leases this node lost (could not renew in time)",
    "lease_releases": "Leases this node gave up (hand-off, shutdown)",
}

# Anti-entropy counters on /metrics (aegiskv.server.anti_entropy): INFO replication's
# anti_entropy_<name> -> help text; exported as aegis_anti_entropy_<name>.
_ANTI_ENTROPY_COUNTERS = {
    "cycles": "Anti-entropy cycles this node began (a sweep of its keys, then a round per shard it leads)",
    "rounds": "Anti-entropy rounds completed: a follower compared its digest of a shard with this primary's",
    "rounds_skipped": "Anti-entropy rounds not compared (a copy not at the primary's position, a stale key index)",
    "buckets_compared": "Digest buckets compared in completed rounds",
    "buckets_differing": "Digest buckets found differing, each then repaired",
    "keys_sent": "Keys this primary sent in anti-entropy repairs",
    "bytes_sent": "Bytes this primary sent in anti-entropy repairs",
    "keys_repaired": "Keys this follower's copy changed or dropped in anti-entropy repairs",
}


class MetricsSource(Protocol):
    """What the collector reads (aegiskv.server.wiring.Server has it); read when /metrics is scraped."""

    node: Node
    reactor: Reactor
    stats: StatsRegistry
    ready: bool
    authenticator: Authenticator
    durability: Durability | None

    @property
    def replicas(self) -> ReplicationSource | None: ...

    def node_stats(self) -> BackendStats: ...


class ServerCollector(Collector):
    def __init__(self, server: MetricsSource) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        totals = server.stats.totals()

        requests = CounterMetricFamily(
            "aegis_requests", "Requests handled, by command and result", labels=["command", "result"]
        )
        latency = HistogramMetricFamily(
            "aegis_request_duration_seconds",
            "Time a request spent in the server: the event-loop turn that read and answered it, or its run in the"
            " worker pool",
            labels=["command"],
        )
        for index, family in enumerate(FAMILIES):
            calls = totals.calls[index]
            errors = totals.errors[index]
            requests.add_metric([family, "ok"], calls - errors)
            requests.add_metric([family, "error"], errors)
            requests.add_metric([family, "rejected"], totals.rejected[index])
            cumulative = 0
            buckets = []
            for bound, count in zip(BUCKET_BOUNDS_SECONDS, totals.latency[index]):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cumulative))
            latency.add_metric([family], buckets, totals.latency_sum_ns[index] / 1e9)
        yield requests
        yield latency

        backend = server.node_stats()
        yield GaugeMetricFamily(
            "aegis_keys", "Keys stored (including expired keys not yet removed)", value=backend.keys
        )
        yield GaugeMetricFamily("aegis_keys_with_ttl", "Keys that have a TTL", value=backend.keys_with_ttl)
        yield GaugeMetricFamily("aegis_memory_used_bytes", "Bytes charged to --max-memory", value=backend.used_bytes)
        yield GaugeMetricFamily(
            "aegis_memory_limit_bytes", "The --max-memory bound in bytes", value=backend.limit_bytes
        )
        yield CounterMetricFamily("aegis_evictions", "Keys evicted to stay under --max-memory", value=backend.evictions)
        yield CounterMetricFamily(
            "aegis_expirations", "Keys removed because their TTL passed", value=backend.expirations
        )
        yield CounterMetricFamily("aegis_keyspace_hits", "Reads that found their key", value=server.node.hits)
        yield CounterMetricFamily(
            "aegis_keyspace_misses", "Reads that did not find their key", value=server.node.misses
        )

        reactor = server.reactor
        yield GaugeMetricFamily("aegis_connections", "Client connections open now", value=reactor.client_connections)
        yield CounterMetricFamily(
            "aegis_connections_accepted", "Connections accepted since start", value=reactor.accepted_total
        )
        yield CounterMetricFamily(
            "aegis_connections_rejected", "Connections refused at the connection limit", value=reactor.rejected_total
        )
        budget = reactor.budget.snapshot()
        buffers = GaugeMetricFamily(
            "aegis_client_buffer_bytes",
            "Query (input) and reply (output) buffers of authenticated clients, counted against max_client_memory",
            labels=["direction"],
        )
        buffers.add_metric(["input"], budget["client_input_buffer_bytes"])
        buffers.add_metric(["output"], budget["client_output_buffer_bytes"])
        yield buffers
        yield GaugeMetricFamily(
            "aegis_client_memory_limit_bytes", "The max_client_memory budget", value=budget["max_client_memory"]
        )
        yield GaugeMetricFamily(
            "aegis_unauthenticated_buffer_bytes",
            "Bytes held for connections not yet authenticated, on every port",
            value=budget["unauthenticated_buffer_bytes"],
        )
        closed = CounterMetricFamily(
            "aegis_buffer_budget_closed",
            "Connections closed because a buffer budget was exceeded "
            "(client: max_client_memory; unauthenticated: max_unauthenticated_memory)",
            labels=["budget"],
        )
        closed.add_metric(["client"], budget["client_memory_evictions"])
        closed.add_metric(["unauthenticated"], budget["unauthenticated_evictions"])
        yield closed
        yield CounterMetricFamily(
            "aegis_unauthenticated_displaced",
            "Connections not yet authenticated closed to make room on a full gossip or cluster port",
            value=reactor.unauthenticated_displaced,
        )
        yield GaugeMetricFamily("aegis_ready", "1 while the node serves clients, 0 otherwise", value=int(server.ready))

        log = server.node.backend.log
        if log is not None:
            yield GaugeMetricFamily(
                "aegis_wal_writable",
                "1 while the write-ahead log can be written; 0 while it fails and writes are refused",
                value=int(log.failure is None),
            )
            yield CounterMetricFamily(
                "aegis_wal_failures", "Times the write-ahead log failed (full or failing disk)", value=log.failures
            )
            yield CounterMetricFamily(
                "aegis_wal_syncs",
                "fsyncs of the write-ahead log (--wal fsync: one covers every write before it)",
                value=log.syncs,
            )
            if server.durability is not None:
                yield GaugeMetricFamily(
                    "aegis_wal_syncs_per_second",
                    "fsyncs of the write-ahead log in the last whole second",
                    value=server.durability.syncs_per_second,
                )
            yield CounterMetricFamily(
                "aegis_wal_records_given_up",
                "Log records that never reached the disk; the writes they described were undone and refused",
                value=log.given_up,
            )
        yield CounterMetricFamily(
            "aegis_snapshot_failures", "Snapshots that could not be written", value=server.node.snapshot_failures
        )
        if server.replicas is not None:
            yield from _replication(server.replicas)
        yield _hot_keys(server.node, names=not server.authenticator.required)


# /metrics shows this many hot keys: a label per key, so few (INFO hotkeys lists them all).
HOT_KEYS_SHOWN = 10


def _hot_keys(node: Node, names: bool) -> Metric:
    """The hottest keys' counts; their names only on a node without an auth token: /metrics is
    open to scrapers without one, and a key's name can be data (INFO hotkeys, behind AUTH, has them)."""
    hot = GaugeMetricFamily(
        "aegis_hot_key_frequency",
        f"LFU access count (OBJECT FREQ) of this node's {HOT_KEYS_SHOWN} hottest keys; rank 0 is the hottest"
        + ("" if names else " (key names only in INFO hotkeys: the node has an auth token)"),
        labels=["rank", "key"] if names else ["rank"],
    )
    for rank, (key, count) in enumerate(node.hot_keys()[:HOT_KEYS_SHOWN]):
        hot.add_metric([str(rank), printable_key(key)] if names else [str(rank)], count)
    return hot


def _replication(source: ReplicationSource) -> Iterator[Metric]:
    details = source.info()
    shards = GaugeMetricFamily("aegis_replication_shards", "Shards this node holds a copy of, by role", labels=["role"])
    shards.add_metric(["primary"], int(details["shards_primary"]))
    shards.add_metric(["follower"], int(details["shards_follower"]))
    yield shards
    yield GaugeMetricFamily(
        "aegis_replication_max_follower_lag_changes",
        "Most changes any follower of a shard this node leads has yet to acknowledge",
        value=int(details["max_follower_lag_changes"]),
    )
    yield GaugeMetricFamily(
        "aegis_replication_links_up", "Cluster links to other replicas that are up", value=int(details["links_up"])
    )
    for name, help_text in _REPLICATION_COUNTERS.items():
        yield CounterMetricFamily(f"aegis_replication_{name}", help_text, value=int(details[name]))
    for name, help_text in _ANTI_ENTROPY_COUNTERS.items():
        if f"anti_entropy_{name}" in details:
            yield CounterMetricFamily(
                f"aegis_anti_entropy_{name}", help_text, value=int(details[f"anti_entropy_{name}"])
            )
    if "anti_entropy_cpu_ms" in details:
        yield CounterMetricFamily(
            "aegis_anti_entropy_cpu_seconds",
            "CPU anti-entropy used on the event-loop thread (sweeps, digests, repairs)",
            value=int(details["anti_entropy_cpu_ms"]) / 1000,
        )
    yield _lag_histogram(source.lag)
    gaps = GaugeMetricFamily(
        "aegis_replication_follower_gap_changes",
        "Changes to the shards this node leads that a follower has yet to acknowledge",
        labels=["follower"],
    )
    for follower, gap in sorted(source.follower_gaps().items()):
        gaps.add_metric([follower], gap)
    yield gaps
    yield from _shard_copies(details)


def _shard_copies(details: dict[str, int | str]) -> Iterator[Metric]:
    """The shard copies of moves (INFO replication's copies_* and copy_*)."""
    flight = GaugeMetricFamily(
        "aegis_shard_copies_in_flight", "Shard copies under way now, sent or received", labels=["direction"]
    )
    flight.add_metric(["sending"], int(details["copies_sending"]))
    flight.add_metric(["receiving"], int(details["copies_receiving"]))
    yield flight
    yield GaugeMetricFamily(
        "aegis_shard_copies_queued",
        "Shard copies waiting for a slot (move_concurrency) or their key list",
        value=int(details["copies_queued"]),
    )
    yield CounterMetricFamily(
        "aegis_shard_copies_completed",
        "Shard copies this node finished sending",
        value=int(details["copies_completed"]),
    )
    yield CounterMetricFamily(
        "aegis_shard_copies_abandoned",
        "Shard copies given up before their end (lease lost, link reset, member gone)",
        value=int(details["copies_abandoned"]),
    )
    yield CounterMetricFamily("aegis_shard_copies_keys", "Keys sent in shard copies", value=int(details["copy_keys"]))
    yield CounterMetricFamily(
        "aegis_shard_copies_bytes", "Key and value bytes sent in shard copies", value=int(details["copy_bytes"])
    )
    yield GaugeMetricFamily(
        "aegis_shard_copies_last_rate_bytes_per_second",
        "Bytes per second of the last shard copy this node finished sending",
        value=int(details["copy_last_rate_bytes_per_sec"]),
    )


def _lag_histogram(histogram: LagHistogram) -> Metric:
    lag = HistogramMetricFamily(
        "aegis_replication_lag_seconds",
        "Time from this primary applying a change to a follower acknowledging it (sampled: the first change of each"
        " shard in each event-loop turn, per follower)",
    )
    counts = list(histogram.counts)  # the reactor may record meanwhile: one copy, consistent enough
    cumulative = 0
    buckets = []
    for bound, count in zip(LAG_BUCKET_BOUNDS, counts):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", cumulative + counts[-1]))
    lag.add_metric([], buckets, histogram.total)
    return lag


def build_registry(server: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
