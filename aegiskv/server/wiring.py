"""One node's server: listeners, the reactor, timers, INFO, metrics and drain.

This is the wiring layer between the reactor (``net``), the operations
(``node``) and the protocols' adapters. ``daemon`` builds a ``Server`` from the
configuration and runs it; tests can build one in-process as well.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from loguru import logger

import aegiskv
from aegiskv.backends.base import BackendStats, WriteAheadLogLike
from aegiskv.cluster.gossip import GossipService
from aegiskv.cluster.interfaces import GossipTiming, MembershipFactory, MembershipOptions
from aegiskv.cluster.leases import LeaseTiming
from aegiskv.cluster.redirect import Routing
from aegiskv.cluster.replica_reads import ReplicaReads
from aegiskv.cluster.shard_map import Endpoint, Member, Topology
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.net.http import encode_response
from aegiskv.net.reactor import BindError, Listener, ListenerOptions, Reactor
from aegiskv.net.tls import client_context
from aegiskv.node.operations import Node
from aegiskv.obs.slowlog import LatencyMonitor, SlowLog
from aegiskv.protocols.adapter import ClientFigures, Info
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.handlers import NativeAdapter, refusal
from aegiskv.protocols.resp import reader as resp
from aegiskv.protocols.resp import strings as resp_strings
from aegiskv.protocols.resp.adapter import RespAdapter
from aegiskv.protocols.resp.adapter import refusal as resp_refusal
from aegiskv.protocols.session import Authenticator, TokenBucket
from aegiskv.server.anti_entropy import AntiEntropy, AntiEntropyOptions
from aegiskv.server.dashboard.service import build_dashboard
from aegiskv.server.durability import Durability
from aegiskv.server.health import HealthProtocol
from aegiskv.server.info import InfoBaseline, build_info
from aegiskv.server.live_settings import LiveSettings
from aegiskv.server.memtrim import find_malloc_trim
from aegiskv.server.metrics import build_registry, render
from aegiskv.server.peer_links import PeerNetwork, PeerSecurity
from aegiskv.server.pipeline import RequestPipeline
from aegiskv.server.replicas import ReplicaManager, ReplicationOptions
from aegiskv.server.settings import Settings, parse_address
from aegiskv.server.slow_requests import SlowRequests
from aegiskv.server.stats import RequestStats, StatsRegistry

_HEALTH_MAX_CONNECTIONS = 64
_HEALTH_IDLE_TIMEOUT = 10.0
_DRAIN_CHECK_INTERVAL = 0.05
# Of --drain-timeout, the share a drain may spend handing its shards over; the rest is for the
# client connections to finish once the listeners are closed.
_HAND_OFF_SHARE = 0.75
_HAND_OFF_REPORT_EVERY = 1.0  # seconds between progress lines while shards are handed over
# Bytes around the largest key and value a single frame may also carry (headers,
# item lengths, further small items of an MSET).
_FRAME_SLACK = 1024 * 1024


class Server:
    def __init__(
        self,
        config: Settings,
        node: Node,
        topology: Topology,
        ssl_context: ssl.SSLContext | None = None,
        membership_factory: MembershipFactory | None = None,
    ) -> None:
        self.settings = config
        self.topology = topology  # the shard map; rebuilt when membership changes
        self.routing = Routing()  # which keys this node serves (None router: all of them)
        self.gossip: GossipService | None = None
        self.membership_factory = membership_factory
        self.ssl_context = ssl_context  # TLS on the client ports (and /health with health_tls)
        self.node = node
        self.reactor = Reactor(config.worker_threads)
        self.reactor.max_client_connections = config.max_connections
        self.reactor.budget.client_limit = config.effective_client_memory
        self.reactor.budget.preauth_limit = config.max_unauthenticated_memory
        self.stats = StatsRegistry()
        self.slow_requests = SlowRequests(self.reactor, config)  # SLOWLOG and LATENCY
        self.authenticator = Authenticator(config.auth_token, config.max_auth_failures)
        self.rate_limit = config.rate_limit
        self.rate_burst = config.rate_burst
        self.inline_batch_limit = config.inline_batch_limit
        self.ready = False
        self.draining = False
        self.started = time.time()
        self.native_limits = native.FrameLimits(
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
            max_items=config.max_batch_keys,
            max_frame_bytes=config.max_key_bytes + config.max_value_bytes + _FRAME_SLACK,
        )
        self.unauthenticated_limits = (
            self.native_limits._replace(max_frame_bytes=config.unauthenticated_max_frame, max_items=1)
            if self.authenticator.required
            else None
        )
        self.resp_limits = resp.RespLimits(
            max_bulk=config.max_bulk_bytes,
            max_bulk_setting=config.max_bulk_setting,
            max_multibulk=config.resp_max_multibulk,
            batch_arguments=resp_strings.batch_arguments(config.max_batch_keys),
        )
        self.run_id = secrets.token_hex(20)
        log = node.backend.log
        self.durability = Durability(self.reactor, log, node.undo_unlogged) if log is not None else None
        # Replication runs wherever the node can be part of a cluster (gossip on).
        self.replicas: ReplicaManager | None = None
        self.peers: PeerNetwork | None = None
        self.cluster_listener: Listener | None = None
        if config.gossip:
            self.replicas = ReplicaManager(
                node,
                self.reactor,
                config.node_id,
                replication_options(config),
                config.data_dir,
                log_durable=_log_positions(log) if log is not None else None,
            )
            self.replicas.anti_entropy = AntiEntropy(
                node,
                self.replicas,
                self.reactor,
                AntiEntropyOptions(config.anti_entropy_interval, config.anti_entropy_bandwidth),
            )
        self.metrics_registry = build_registry(self)
        self.info_baseline = InfoBaseline()  # INFO's counters at the last CONFIG RESETSTAT
        # CONFIG SET; the daemon replaces it with one that knows the file SIGHUP reloads.
        self.live_settings = LiveSettings(self)
        self.native_listener: Listener | None = None
        self.resp_listener: Listener | None = None
        self.replica_listener: Listener | None = None  # the replica endpoint (resp_replica_bind)
        self.health_listener: Listener | None = None
        self._drain_deadline = 0.0
        self._hand_off_started = 0.0
        self._hand_off_reported = 0.0
        self.on_stopped: Callable[[], None] | None = None
        self._trim_pending = False

    # -- start-up --------------------------------------------------------------------

    def start(self) -> None:
        """Bind every port and schedule the timers. On the thread that will run the reactor."""
        config = self.settings
        inline_stats = self.stats.for_this_thread()
        self.reactor.turn_observers.append(inline_stats.finish_turn)
        self.reactor.turn_observers.append(self.slow_requests.turn_finished)
        self.native_listener = self.reactor.listen(
            parse_address(config.bind),
            ListenerOptions(
                name="native",
                protocol_factory=lambda: RequestPipeline(
                    self, NativeAdapter(self.native_limits, self.unauthenticated_limits, self.routing), inline_stats
                ),
                refusal=refusal,
                **self._client_port_options(),
            ),
        )
        if config.resp_bind:
            authenticated = not self.authenticator.required
            self.resp_listener = self.reactor.listen(
                parse_address(config.resp_bind),
                ListenerOptions(
                    name="resp",
                    protocol_factory=lambda: RequestPipeline(
                        self,
                        RespAdapter(self.resp_limits, authenticated, self.routing),
                        inline_stats,
                    ),
                    refusal=resp_refusal,
                    **self._client_port_options(),
                ),
            )
        if config.resp_replica_bind:
            self.replica_listener = self._listen_replica_endpoint(config.resp_replica_bind, inline_stats)
        if config.health_addr:
            peer_tls = peer_security(config, self.ssl_context).client_tls if config.health_tls else None
            dashboard = build_dashboard(self, peer_tls)
            self.health_listener = self.reactor.listen(
                parse_address(config.health_addr),
                ListenerOptions(
                    name="http",
                    protocol_factory=lambda: HealthProtocol(
                        lambda: self.ready, self.render_metrics, self.storage_failure, dashboard
                    ),
                    max_connections=_HEALTH_MAX_CONNECTIONS,
                    idle_timeout=_HEALTH_IDLE_TIMEOUT,
                    output_high_water=1 << 20,
                    refusal=lambda reason: encode_response(503, f"{reason}\n".encode()),
                    counts_as_client=False,
                    ssl_context=self.ssl_context if config.health_tls else None,
                    handshake_timeout=config.tls_handshake_timeout,
                    request_timeout=_HEALTH_IDLE_TIMEOUT,
                ),
            )
        self.reactor.call_every(config.expiry_interval, self._expire_step)
        if self.node.snapshot_interval:
            self.reactor.call_every(self.node.snapshot_interval, self._timed_snapshot)
        release_memory = find_malloc_trim()
        if config.memory_trim_interval and release_memory is not None:
            self.reactor.call_every(config.memory_trim_interval, lambda: self._trim_memory(release_memory))
        if config.gossip:
            self._start_replication()
            self.gossip = self._start_gossip()
            assert self.replicas is not None
            # Elections that need no other node (a node alone, so far) are won before the node says
            # it is ready, so its first clients find primaries rather than an election under way.
            self.replicas.settle()
        else:
            self._membership_changed([self.local_member()])
        self.ready = True
        logger.info(
            "node {} serving: {} (request path {})",
            config.node_id,
            ", ".join(f"{name} on {host}:{port}" for name, (host, port) in self.addresses().items()),
            aegiskv.build(),
        )

    def _listen_replica_endpoint(self, bind: str, inline_stats: RequestStats) -> Listener:
        """The second RESP port, where this node answers as the replica of the shards it follows."""
        replica = ReplicaReads(self.routing, self.replicas)
        authenticated = not self.authenticator.required
        return self.reactor.listen(
            parse_address(bind),
            ListenerOptions(
                name="resp_replica",
                protocol_factory=lambda: RequestPipeline(
                    self, RespAdapter(self.resp_limits, authenticated, self.routing, replica), inline_stats
                ),
                refusal=resp_refusal,
                **self._client_port_options(),
            ),
        )

    def _start_replication(self) -> None:
        config = self.settings
        replicas = self.replicas
        assert replicas is not None
        peers = PeerNetwork(
            self.reactor,
            config.node_id,
            peer_security(config, self.ssl_context),
            replicas.on_message,
            max_frame=self.native_limits.max_frame_bytes + _FRAME_SLACK,
            on_link_up=replicas.link_up,
        )
        self.cluster_listener = peers.listen(parse_address(config.cluster_bind))
        self.peers = peers
        replicas.peers = peers
        replicas.start(self._primaries_changed)
        if isinstance(replicas.anti_entropy, AntiEntropy):
            replicas.anti_entropy.start()

    def _primaries_changed(self, primaries: dict[int, str], electing: frozenset[int]) -> None:
        """The known lease holders changed: route by them, and tell the cluster which shards this node leads."""
        shard_map = self.topology.set_primaries(primaries)
        self.routing.update(shard_map, self.settings.node_id, leased=True, electing=electing)
        if self.gossip is not None and self.replicas is not None:
            self.gossip.set_meta(self._meta())

    def _meta(self) -> dict[str, str]:
        """What gossip publishes of this node: the addresses clients and peers use."""
        me = self.local_member()
        meta = {"client": str(me.client)}
        if me.resp is not None:
            meta["resp"] = str(me.resp)
        if me.replica is not None:
            meta["replica"] = str(me.replica)
        if self.cluster_listener is not None:
            meta["peer"] = str(advertised_endpoint(self.settings.cluster_advertise, self.cluster_listener.address))
        if self.health_listener is not None:
            # The dashboard's /cluster.json reads each peer's /status.json here. No setting of
            # its own: a wildcard bind advertises an empty host, read as the gossip host.
            meta["health"] = str(advertised_endpoint(None, self.health_listener.address))
        if self.replicas is not None:
            # What moves are staged by (aegiskv.cluster.shard_map): the shards led, the complete copies.
            meta["lead"] = self.replicas.led_bitmap()
            meta["ready"] = self.replicas.ready_bitmap()
            meta["recovering"] = self.replicas.recovering_bitmap()
        if self.draining:
            meta["drain"] = "1"  # placement gives this node nothing: its shards move away
        return meta

    def _start_gossip(self) -> GossipService:
        config = self.settings
        assert config.gossip is not None and self.membership_factory is not None
        meta = self._meta()
        factory = self.membership_factory
        bind = parse_address(config.gossip)
        try:
            gossip = GossipService(
                self.reactor,
                config.node_id,
                bind,
                advertise=config.gossip_advertise,
                seeds=[parse_address(seed) for seed in config.seeds or ()],
                secret=gossip_key(config),
                max_skew=config.gossip_max_skew,
                make_membership=lambda address: factory(membership_options(config, address, meta)),
                push_pull_interval=config.gossip_push_pull_interval,
                on_change=self._membership_changed,
            )
        except OSError as error:  # binding its UDP and TCP sockets: named like the other ports
            raise BindError("gossip", bind, error) from error
        gossip.start()
        return gossip

    def _membership_changed(self, members: list[Member]) -> None:
        before = self.topology.current
        shard_map = self.topology.update(members)
        replicas = self.replicas
        # (While gossip starts, self.gossip is not set yet: joined means it was given no seeds.)
        joined = self.gossip.joined if self.gossip is not None else not self.settings.seeds
        if replicas is not None and not joined:
            # A node given seeds leads nothing until it is in their cluster: alone, it would elect
            # itself primary of every shard and take writes the cluster then resyncs away.
            self.routing.update(shard_map, self.settings.node_id, leased=True)
        elif replicas is not None:
            peers = {member.node_id: (member.peer.host, member.peer.port) for member in members if member.peer}
            replicas.set_gossip_leads({shard: member.node_id for member in members for shard in member.lead})
            left = self.gossip.departed if self.gossip is not None else frozenset()
            replicas.set_shard_map(shard_map, peers, left)  # publishes the primaries: routing follows
        else:
            self.routing.update(shard_map, self.settings.node_id)
        if shard_map is not before:
            primary, follower = shard_map.shards_of(self.settings.node_id)
            logger.info(
                "shard map epoch {}: {} members; primary of {} shards, follower of {}",
                shard_map.epoch,
                len(shard_map.members),
                len(primary),
                len(follower),
            )

    def local_member(self) -> Member:
        """This node as the shard map lists it: id and the addresses clients should use."""
        config = self.settings
        resp_endpoint = replica_endpoint = None
        if self.resp_listener is not None:
            resp_endpoint = advertised_endpoint(config.resp_advertise, self.resp_listener.address)
        if self.replica_listener is not None:
            replica_endpoint = advertised_endpoint(config.resp_replica_advertise, self.replica_listener.address)
        return Member(
            config.node_id,
            advertised_endpoint(config.client_advertise, self.native_address),
            resp_endpoint,
            replica=replica_endpoint,
        )

    def _client_port_options(self) -> dict[str, Any]:
        """Limits and TLS shared by the native and RESP ports."""
        config = self.settings
        return {
            "max_connections": config.max_connections,
            "idle_timeout": config.idle_timeout,
            "output_high_water": config.output_high_water,
            "ssl_context": self.ssl_context,
            "handshake_timeout": config.tls_handshake_timeout,
            "request_timeout": config.request_timeout,
            "output_limit": config.effective_output_limit,
            "send_timeout": config.send_timeout,
        }

    def run(self) -> None:
        """Serve until drained or stopped; then release every socket."""
        try:
            self.reactor.run()
        finally:
            if self.gossip is not None:
                self.gossip.close()
            self.reactor.close()
            if self.on_stopped is not None:
                self.on_stopped()

    # -- timers --------------------------------------------------------------------------

    def _expire_step(self) -> None:
        self.node.expire_step(self.settings.expiry_sample_size, self.settings.expiry_step_budget)

    def _timed_snapshot(self) -> None:
        if self.node.snapshot_running or self.storage_failure() is not None:
            return  # none while the log cannot be written: rotating it is a snapshot's first step
        self.reactor.submit(self._start_timed_snapshot, self._snapshot_done)

    def _start_timed_snapshot(self) -> None:
        try:
            self.snapshot_in_background()
        except CommandError as error:
            logger.warning("timed snapshot not started: {}", error.message)

    def snapshot_in_background(self) -> None:
        """Freeze the keyspace and write it from another worker (BGSAVE). Any thread but the reactor
        should call this: freezing takes the node lock for a C-speed copy of the key references.
        Raises CommandError when no snapshot can start (one is running, the log failed)."""
        job = self.node.start_snapshot()

        def write() -> None:
            try:
                job()
            except CommandError as error:  # a storage error, already counted for INFO
                logger.error("{}", error.message)

        self.reactor.submit(write, self._snapshot_done)

    def _snapshot_done(self, _path: object, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, CommandError):
            logger.error("snapshot failed: {}", error)

    def final_snapshot(self) -> None:
        """On graceful shutdown (after the reactor stopped): write a snapshot, synchronously."""
        try:
            self.node.start_snapshot()()
        except CommandError as error:
            if error.kind is not ErrorKind.INVALID:  # INVALID: no snapshots with this backend
                logger.error("snapshot at shutdown failed: {}", error.message)
        except Exception as error:  # noqa: BLE001 - shutdown goes on whatever failed
            logger.error("snapshot at shutdown failed: {}", error)

    def _trim_memory(self, release: Callable[[], int]) -> None:
        if not self._trim_pending:  # never queue a second trim behind a slow one
            self._trim_pending = True
            self.reactor.submit(release, self._trim_done)

    def _trim_done(self, _released: object, _error: BaseException | None) -> None:
        self._trim_pending = False

    # -- drain ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful shutdown (reactor thread), all within ``drain_timeout``: become not ready; in a
        cluster, hand every shard over first (below); then leave the membership, stop accepting,
        finish in-flight requests, close and stop.

        The hand-over: the node publishes that it drains, so placement moves its shards to the
        other members; each gaining member copies the shard before the map switches to it, and
        the primaries this node holds go to caught-up members by lease hand-off (never by
        letting a lease run out). Clients are served meanwhile. The node leaves once no shard's
        replica set lists it any more, or when its share of the timeout has passed (what was
        left unfinished is logged).
        """
        if self.draining:
            return
        self.draining = True
        self.ready = False
        now = time.monotonic()
        self._drain_deadline = now + self.settings.drain_timeout
        replicas, gossip = self.replicas, self.gossip
        others = set(self.topology.current.members) - {self.settings.node_id}
        if replicas is not None and gossip is not None and gossip.joined and others:
            self._hand_off_started = self._hand_off_reported = now
            gossip.set_meta(self._meta())
            primary, follower = self.topology.current.shards_of(self.settings.node_id)
            logger.info(
                "draining: handing over {} shards led and {} followed to {} other members, up to {:.1f}s",
                len(primary),
                len(follower),
                len(others),
                self.settings.drain_timeout * _HAND_OFF_SHARE,
            )
            self._hand_off_step()
        else:
            self._close_and_drain()

    def _hand_off_step(self) -> None:
        replicas = self.replicas
        assert replicas is not None
        now = time.monotonic()
        led = replicas.led_shards()
        primary, follower = self.topology.current.shards_of(self.settings.node_id)
        elapsed = now - self._hand_off_started
        if not led and not replicas.holds_shards():
            logger.info("drain: every shard handed over in {:.2f}s", elapsed)
            replicas.mark_drained()
            self._close_and_drain()
        elif now >= self._hand_off_started + self.settings.drain_timeout * _HAND_OFF_SHARE:
            logger.warning(
                "drain: hand-over timeout after {:.1f}s; leaving with shards {} still led here and {} still "
                "copied from here (their new members may lack what was written only here)",
                elapsed,
                sorted(led)[:32],
                sorted(set(primary) | set(follower))[:32],
            )
            self._close_and_drain()
        else:
            if now - self._hand_off_reported >= _HAND_OFF_REPORT_EVERY:
                self._hand_off_reported = now
                logger.info(
                    "drain: {:.1f}s in, {} shards still led here, {} still list this node",
                    elapsed,
                    len(led),
                    len(primary) + len(follower),
                )
            self.reactor.call_later(_DRAIN_CHECK_INTERVAL, self._hand_off_step)

    def _close_and_drain(self) -> None:
        """Leave the membership, stop accepting, and let the client connections finish."""
        if self.gossip is not None:
            self.gossip.leave()
        logger.info(
            "draining: {} client connections, up to {:.1f}s",
            self.reactor.client_connections,
            max(0.0, self._drain_deadline - time.monotonic()),
        )
        for listener in self.reactor.listeners:
            if listener is not self.health_listener and listener.accepting:
                listener.accepting = False
                self.reactor.poller.unregister(listener.sock)
                listener.sock.close()
        self._drain_step()

    def request_drain(self) -> None:
        """Drain from any thread (the native DRAIN request): ``drain`` runs on the reactor."""
        self.reactor.call_soon(self.drain)

    def _drain_step(self) -> None:
        reactor = self.reactor
        for connection in list(reactor.connections.values()):
            if connection.options.counts_as_client and not connection.protocol.busy():
                connection.close(flush=True)  # closes once its replies have been sent
        remaining = reactor.client_connections
        if remaining == 0:
            logger.info("drained; stopping")
            reactor.stop()
        elif time.monotonic() >= self._drain_deadline:
            logger.warning("drain timeout with {} connections still busy; stopping", remaining)
            reactor.stop()
        else:
            reactor.call_later(_DRAIN_CHECK_INTERVAL, self._drain_step)

    def stop(self) -> None:
        """Stop at once (from any thread)."""
        self.reactor.call_soon(self.reactor.stop)

    # -- introspection -------------------------------------------------------------------

    @property
    def native_address(self) -> tuple[str, int]:
        assert self.native_listener is not None
        return self.native_listener.address

    @property
    def health_address(self) -> tuple[str, int] | None:
        return self.health_listener.address if self.health_listener else None

    @property
    def resp_address(self) -> tuple[str, int]:
        assert self.resp_listener is not None
        return self.resp_listener.address

    @property
    def native_bound(self) -> tuple[str, int]:
        """The native port's bound address (``("", 0)`` before it is bound)."""
        return self.native_listener.address if self.native_listener is not None else ("", 0)

    @property
    def resp_bound(self) -> tuple[str, int]:
        return self.resp_listener.address if self.resp_listener is not None else ("", 0)

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Every bound port by name: native, resp, resp_replica, health."""
        found = {}
        for name, listener in (
            ("native", self.native_listener),
            ("resp", self.resp_listener),
            ("resp_replica", self.replica_listener),
            ("health", self.health_listener),
        ):
            if listener is not None:
                found[name] = listener.address
        if self.gossip is not None:
            found["gossip"] = self.gossip.bound
        if self.cluster_listener is not None:
            found["cluster"] = self.cluster_listener.address
        return found

    def node_stats(self) -> BackendStats:
        return self.node.backend_stats()

    def render_metrics(self) -> tuple[bytes, str]:
        return render(self.metrics_registry)

    def storage_failure(self) -> str | None:
        """Why writes are refused now, in one line (None: they are accepted). Any thread."""
        log = self.node.backend.log
        return log.failure if log is not None else None

    def clients(self) -> list[ClientFigures]:
        """Every client connection of the native and RESP ports, by connection id (CLIENT LIST).

        Any thread: a command behind a batch runs in the pool. The connections are
        copied in one C call (atomic under the GIL) and each read from plain fields.
        """
        found = []
        for connection in list(self.reactor.connections.values()):
            protocol = connection.protocol
            if isinstance(protocol, RequestPipeline):
                figures = protocol.client_figures()
                if figures is not None:
                    found.append(figures)
        found.sort(key=lambda figures: figures.session.connection_id)
        return found

    def kill_client(self, connection_id: int) -> None:
        """Close a client connection, dropping unsent replies (CLIENT KILL). Any thread: the reactor closes it."""

        def close() -> None:
            connection = self.reactor.connections.get(connection_id)
            if connection is not None and connection.options.counts_as_client:
                connection.close(flush=False)

        self.reactor.call_soon(close)

    def set_evictable(self, connection_id: int, evictable: bool) -> None:
        """CLIENT NO-EVICT: exempt a connection from the client memory budget (net/budget.py). Any thread."""

        def apply() -> None:
            connection = self.reactor.connections.get(connection_id)
            if connection is not None:
                connection.evictable = evictable

        self.reactor.call_soon(apply)

    @property
    def slow_log(self) -> SlowLog:
        return self.slow_requests.slow_log

    @property
    def latency_monitor(self) -> LatencyMonitor:
        return self.slow_requests.latency

    def configure(self, pairs: list[tuple[str, str]]) -> None:
        """CONFIG SET: change live settings (aegiskv.server.live_settings); raises CommandError. Any thread."""
        self.live_settings.configure(pairs)

    def refresh_rate_limits(self) -> None:
        """Give every open client connection the current rate limit and burst (reactor thread)."""
        for connection in list(self.reactor.connections.values()):
            protocol = connection.protocol
            if isinstance(protocol, RequestPipeline):
                protocol.session.rate = TokenBucket(self.rate_limit, self.rate_burst) if self.rate_limit > 0 else None

    def reset_statistics(self) -> None:
        """CONFIG RESETSTAT: INFO's counters start again from zero; /metrics keeps counting. Any thread."""
        self.stats.reset()
        self.info_baseline = InfoBaseline.now(self)
        self.reactor.longest_turn_ns = 0

    def info(self, sections: Sequence[str] | None = None) -> Info:
        """INFO: the sections named (None: the default ones), as aegiskv.server.info builds them. Any thread."""
        return build_info(self, sections)


def replication_options(config: Settings) -> ReplicationOptions:
    return ReplicationOptions(
        write_quorum=config.write_quorum,
        read_quorum=config.read_quorum,
        quorum_timeout=config.quorum_timeout,
        backlog_bytes=config.replication_backlog,
        timing=LeaseTiming(lease_duration=config.lease_duration, max_clock_drift=config.max_clock_drift),
        replication_factor=config.replication_factor,
        copy_bandwidth=config.move_bandwidth,
        copy_slots=config.move_concurrency,
    )


def peer_security(config: Settings, server_tls: ssl.SSLContext | None) -> PeerSecurity:
    """How cluster links authenticate: the cluster key (as gossip's), and TLS as the client ports have it.

    With a CA, a link verifies the peer's certificate against it (and presents
    its own: the cluster port requires one, as the client ports do). Without a
    CA the link is encrypted, and the handshake's proof of the key says who is
    at the other end.
    """
    client_tls = None
    if config.tls_cert and config.tls_key:
        client_tls = client_context(config.tls_ca, config.tls_cert, config.tls_key, check_hostname=False)
        if not config.tls_ca:
            client_tls.verify_mode = ssl.CERT_NONE
    return PeerSecurity(gossip_key(config), server_tls, client_tls)


def _log_positions(log: WriteAheadLogLike) -> Callable[[], tuple[bool, int, int]]:
    fsync = log.mode == "fsync"
    return lambda: (fsync, log.appended_seq, log.durable_seq)


def gossip_key(config: Settings) -> bytes | None:
    """The HMAC key for gossip: --gossip-secret, else one derived from --auth-token.

    The auth token guards node-to-node traffic too (SPEC: "shared token for
    clients and cluster traffic"), so a cluster with a token but no separate
    gossip secret still refuses unsigned and forged gossip.
    """
    if config.gossip_secret:
        return config.gossip_secret.encode()
    if config.auth_token:
        return hashlib.sha256(b"aegiskv gossip key\0" + config.auth_token.encode()).digest()
    return None


def membership_options(config: Settings, address: tuple[str, int], meta: dict[str, str]) -> MembershipOptions:
    """The membership plugin's options from the node's settings."""
    timing = GossipTiming(
        probe_interval=config.gossip_probe_interval,
        probe_timeout=config.gossip_probe_timeout,
        suspicion_mult=config.gossip_suspicion_mult,
        indirect_checks=config.gossip_indirect_checks,
        push_pull_interval=config.gossip_push_pull_interval,
        dead_reclaim_time=config.gossip_dead_reclaim_time,
        gossip_interval=config.gossip_interval,
        gossip_nodes=config.gossip_nodes,
    )
    # incarnation: a restart supersedes this node's own tombstone.
    return MembershipOptions(config.node_id, address, meta, int(time.time() * 1000), time.monotonic(), timing)


def advertised_endpoint(advertise: str | None, bound: tuple[str, int]) -> Endpoint:
    """The configured advertised address, else the bound one.

    A wildcard bind has no single address to give: it advertises an empty host,
    which clients (ours, and redis-py for CLUSTER SLOTS) read as "the host you
    reached this node at".
    """
    if advertise:
        return Endpoint(*parse_address(advertise))
    host, port = bound
    return Endpoint("" if host in _WILDCARD_HOSTS else host, port)


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
