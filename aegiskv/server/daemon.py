"""The ``aegis`` daemon: configuration in, a serving node out, clean exit on SIGTERM.

Exit codes: 0 after a normal or drained shutdown; 2 when start-up is refused
(bad configuration, unusable data directory, missing or broken plugin), always
with one line on stderr naming the problem and before any port is bound;
1 when a port cannot be bound or the server fails while running.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import ssl
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from loguru import logger

from aegiskv.backends.base import BackendOptions, wall_clock_ms
from aegiskv.backends.options import BuiltinBackendOptions
from aegiskv.backends.snapshot_format import SnapshotError
from aegiskv.backends.wal_log import WalCorruption
from aegiskv.cluster.interfaces import PlacementOptions
from aegiskv.cluster.shard_map import Topology
from aegiskv.cluster.slots import ShardMapper
from aegiskv.net.reactor import BindError
from aegiskv.net.tls import TlsConfigError, server_context
from aegiskv.node.operations import KeyspaceLimits, Node, first_version
from aegiskv.server import plugins
from aegiskv.server.datadir import DataDir, DataDirError
from aegiskv.server.live_settings import LiveSettings
from aegiskv.server.logs import settings_line, setup_logging
from aegiskv.server.settings import Settings, parse_address
from aegiskv.server.wiring import Server

EXIT_REFUSED = 2
EXIT_FAILED = 1


def refuse(message: str) -> int:
    print(f"aegis: {message}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def build_server(config: Settings) -> tuple[Server, DataDir]:
    """Everything short of binding: raises DataDirError or PluginError on refusal."""
    # The plugin and the TLS files first: a refusal must not leave a data dir behind.
    backend_name = resolve_backend(config)
    backend_plugin, backend_class = plugins.load_backend(backend_name)
    _placement_plugin, placement = plugins.load_placement(
        config.placement, PlacementOptions(config.virtual_nodes, config.placement_load_factor)
    )
    membership_factory = plugins.load_membership(config.membership)[1] if config.gossip else None
    ssl_context = tls_context(config)
    data_dir = DataDir.open(config.data_dir, config.node_id)
    try:
        mapper = ShardMapper(config.shards)
        backend = backend_class(backend_options(config, backend_plugin, data_dir.path))
        node = Node(
            backend,
            KeyspaceLimits(config.max_key_bytes, config.max_value_bytes, config.max_batch_keys),
            mapper,
            node_id=config.node_id,
        )
        topology = Topology(placement, mapper, config.replication_factor)
        return Server(config, node, topology, ssl_context, membership_factory), data_dir
    except BaseException:
        data_dir.close()
        raise


def backend_options(config: Settings, plugin: plugins.FoundPlugin, data_dir: str) -> BackendOptions:
    """What the backend is built with: AegisKV's own backends get their settings as well
    (BuiltinBackendOptions); any other distribution's get the public BackendOptions only,
    so no plugin comes to depend on the built-ins' internals (aegiskv.backends.options)."""
    public = BackendOptions(
        max_memory_bytes=config.max_memory_bytes,
        data_dir=data_dir,
        first_version=first_version(wall_clock_ms()),
    )
    if plugin.distribution != plugins.OWN_DISTRIBUTION:
        return public
    return BuiltinBackendOptions(
        max_memory_bytes=public.max_memory_bytes,
        data_dir=public.data_dir,
        first_version=public.first_version,
        protected_fraction=config.slru_protected_fraction,
        access_sample=config.access_sample,
        wal_mode=config.wal,
        wal_segment_bytes=config.wal_segment_bytes,
        wal_salvage=config.wal_salvage,
        snapshot_interval=config.snapshot_interval,
    )


# Backends that keep a write-ahead log; the memory backend would silently ignore --wal.
_DURABLE_BACKENDS = ("wal", "snapshot")


def resolve_backend(config: Settings) -> str:
    """The backend to load: ``auto`` is memory without a log, the WAL backend with one."""
    if config.backend == "auto":
        return "snapshot" if config.wal != "off" else "memory"
    if config.wal != "off" and config.backend not in _DURABLE_BACKENDS:
        raise plugins.PluginError(
            f"--wal {config.wal} needs a backend that keeps a log ({', '.join(_DURABLE_BACKENDS)} or auto), "
            f"not {config.backend!r}"
        )
    return config.backend


def tls_context(config: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None without --tls-cert; raises TlsConfigError."""
    if not (config.tls_cert or config.tls_key or config.tls_ca):
        if config.health_tls:
            raise TlsConfigError("health_tls = true needs --tls-cert and --tls-key")
        return None
    if not (config.tls_cert and config.tls_key):
        raise TlsConfigError("TLS needs both --tls-cert and --tls-key (and optionally --tls-ca)")
    return server_context(config.tls_cert, config.tls_key, config.tls_ca)


def _is_loopback(address: str) -> bool:
    host, _ = parse_address(address)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _warn_if_exposed(config: Settings) -> None:
    if config.gossip and not _is_loopback(config.gossip) and not (config.gossip_secret or config.auth_token):
        logger.warning(
            "SECURITY: gossip on {} is unsigned (no --gossip-secret or --auth-token): anyone who can reach it "
            "can join the cluster and take over shards. Set a secret, bind gossip to a private address, or "
            "--gossip off for a lone node.",
            config.gossip,
        )
    if not _is_loopback(config.bind) and not config.auth_token:
        logger.warning(
            "SECURITY: listening on {} with no --auth-token: anyone who can reach this address can read and "
            "write every key. Set --auth-token (and TLS) or bind to 127.0.0.1.",
            config.bind,
        )


def _warn_if_durable_files_ignored(config: Settings, data_dir: DataDir) -> None:
    if config.wal != "off":
        return
    found = data_dir.durable_files()
    if found:
        logger.warning(
            "data dir {} holds {} from an earlier run, but --wal is off: starting empty and leaving them "
            "untouched (start with --wal write to recover them, or delete them)",
            data_dir.path,
            " and ".join(f"{name}/" for name in found),
        )


def announcement(server: Server) -> str:
    """The one stdout line printed once every port is bound, whatever the log level.

    Scripts (and aegiskv.testing.localnode) read it to learn the ports chosen for port 0.
    """
    parts = [f"{name}={_show(address)}" for name, address in server.addresses().items()]
    return f"aegis ready: node={server.settings.node_id} pid={os.getpid()} " + " ".join(parts)


# Listener name (aegiskv.net.reactor.ListenerOptions.name) -> the port as the docs call it, and its flag.
_PORTS = {
    "native": ("native", "--bind"),
    "resp": ("RESP", "--resp-bind"),
    "resp_replica": ("replica endpoint", "--resp-replica-bind"),
    "http": ("health", "--health-addr"),
    "gossip": ("gossip", "--gossip"),
    "cluster": ("cluster", "--cluster-bind"),
}


def describe_bind_error(error: BindError) -> str:
    """``the RESP port 127.0.0.1:7379 (--resp-bind): Address already in use``."""
    port, flag = _PORTS.get(error.name, (error.name, "?"))
    return f"the {port} port {_show(error.address)} ({flag}): {error.reason}"


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(config: Settings, config_path: str | None = None, flags: Mapping[str, Any] | None = None) -> int:
    """Serve until drained. ``config_path`` and ``flags``: what ``config`` was built from, which
    SIGHUP builds the settings from again (aegiskv.server.live_settings)."""
    setup_logging(config.log_level, config.log_format)
    try:
        server, data_dir = build_server(config)
    except (DataDirError, plugins.PluginError, TlsConfigError, WalCorruption, SnapshotError) as error:
        return refuse(str(error))
    server.live_settings = LiveSettings(server, config_path, flags)
    pid_written = False
    try:
        if config.pid_file:
            # Before binding: an unwritable pid file is a refusal, not a crash after start.
            try:
                with open(config.pid_file, "w") as handle:
                    handle.write(f"{os.getpid()}\n")
            except OSError as error:
                return refuse(f"pid file {config.pid_file}: cannot write: {error.strerror or error}")
            pid_written = True

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # No logging here: a signal that lands while this thread is inside a loguru call
            # trips loguru's reentrance guard (a "Logging error" traceback). The reactor logs.
            name = signal.Signals(signum).name
            server.reactor.call_soon(lambda: drain_on(name))

        def drain_on(name: str) -> None:
            logger.info("received {}; draining", name)
            server.drain()

        def on_hangup(_signum: int, _frame: FrameType | None) -> None:
            server.reactor.call_soon(server.live_settings.reload)  # logs on the reactor (see on_signal)

        # Handlers before the ready line: a supervisor may signal as soon as it sees it.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hangup)
        # Past every refusal (whose one stderr line stands alone) and before binding.
        logger.info("{}", settings_line(config))
        _warn_if_durable_files_ignored(config, data_dir)
        try:
            server.start()
        except BindError as error:
            print(f"aegis: cannot listen: {describe_bind_error(error)}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        except OSError as error:
            print(f"aegis: cannot listen: {error.strerror or error}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        _warn_if_exposed(config)
        print(announcement(server), flush=True)
        server.run()
        server.final_snapshot()
        logger.info("stopped")
        return 0
    finally:
        server.node.backend.close()
        data_dir.close()
        if pid_written and config.pid_file:
            try:
                os.unlink(config.pid_file)
            except FileNotFoundError:
                pass
