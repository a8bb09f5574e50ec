"""The dashboard of one server: its gate, its figures and its cluster view, wired to the server's parts."""

from __future__ import annotations

import ssl
from typing import Any, Protocol

from aegiskv.cluster.shard_map import Endpoint
from aegiskv.server.dashboard.access import DashboardAccess
from aegiskv.server.dashboard.cluster import ClusterGatherer, MemberEntry, fetch_status, member_entries
from aegiskv.server.dashboard.routes import Dashboard
from aegiskv.server.dashboard.status import RecentRequests, node_status
from aegiskv.server.info import InfoSource


class DashboardSource(InfoSource, Protocol):
    """What the dashboard reads of the server (aegiskv.server.wiring.Server has it)."""

    ready: bool

    @property
    def health_address(self) -> tuple[str, int] | None: ...


def build_dashboard(server: DashboardSource, peer_tls: ssl.SSLContext | None) -> Dashboard:
    """``peer_tls``: the client context for peers' operations ports, when they speak TLS (``--health-tls``)."""
    settings = server.settings
    token = settings.auth_token
    recent = RecentRequests(server.stats)

    def status() -> dict[str, Any]:
        return node_status(server, recent, server.ready)

    def members() -> list[MemberEntry]:
        if server.gossip is not None:
            return member_entries(server.gossip.member_states())
        health = server.health_address
        return [MemberEntry(settings.node_id, "alive", Endpoint(*health) if health else None)]

    access = DashboardAccess(token, secure=settings.health_tls)
    peer_headers = access.peer_headers()
    gatherer = ClusterGatherer(
        server.reactor,
        settings.node_id,
        members,
        lambda: server.topology.current,
        status,
        lambda endpoint, timeout: fetch_status(endpoint, peer_headers, peer_tls, timeout),
    )
    return Dashboard(access, status, gatherer.request, server.reactor.submit)
