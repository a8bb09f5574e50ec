"""``/cluster.json``: the serving node's view of the cluster, with every live peer's own figures.

The members and their gossip states are read on the reactor thread (the
membership lives there); the rest runs as one worker task: this node's status,
the shard map drawn as data, and one ``GET /status.json`` per peer over its
operations port (the ``health`` address its gossip metadata publishes), with
the auth token as a bearer token. Peers are asked one after another within a
total budget of :data:`GATHER_BUDGET` seconds, none longer than
:data:`PEER_TIMEOUT`: a peer that does not answer in time is shown down, with
the reason. Members gossip already declares dead or gone are not asked.

However many pages poll, at most one gathering runs at a time (it holds one
worker), and its answer serves every request for :data:`REUSE_SECONDS`.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from loguru import logger

from aegiskv.cluster.gossip import parse_endpoint
from aegiskv.cluster.shard_map import Endpoint, ShardMap
from aegiskv.net.reactor import Reactor

GATHER_BUDGET = 1.5
PEER_TIMEOUT = 0.8
REUSE_SECONDS = 0.5
MAX_STATUS_BYTES = 1 << 20
_NOT_ASKED = frozenset({"dead", "left"})  # gossip already says they are gone


class MemberEntry(NamedTuple):
    node_id: str
    gossip: str  # alive, suspect, dead, left (the membership's word)
    health: Endpoint | None  # its operations port, when it publishes one


def member_entries(states: list[tuple[str, str, tuple[str, int], dict[str, str]]]) -> list[MemberEntry]:
    """Gossip's member states (aegiskv.cluster.gossip.GossipService.member_states) as entries."""
    entries = []
    for node_id, state, address, meta in states:
        try:
            health = parse_endpoint(meta["health"], address[0]) if "health" in meta else None
        except ValueError:
            health = None
        entries.append(MemberEntry(node_id, state, health))
    return entries


def fetch_status(
    endpoint: Endpoint, headers: dict[str, str], tls: ssl.SSLContext | None, timeout: float
) -> dict[str, Any]:
    """A peer's ``/status.json`` (worker thread), asked with ``headers`` (the dashboard's cookie when a
    token is set). Raises OSError or ValueError when it cannot be had."""
    connection: http.client.HTTPConnection
    if tls is not None:
        connection = http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=timeout, context=tls)
    else:
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        connection.request("GET", "/status.json", headers=headers)
        response = connection.getresponse()
        body = response.read(MAX_STATUS_BYTES + 1)
    except http.client.HTTPException as error:
        raise ValueError(f"bad HTTP answer: {error!r}") from error
    finally:
        connection.close()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status} {response.reason}")
    if len(body) > MAX_STATUS_BYTES:
        raise ValueError(f"status over {MAX_STATUS_BYTES} bytes")
    status = json.loads(body)
    if not isinstance(status, dict):
        raise ValueError("status is not a JSON object")
    return status


def shard_rows(shard_map: ShardMap) -> list[dict[str, Any]]:
    """Every shard: its slots, its primary (the lease holder; None while unknown) and followers."""
    rows = []
    for shard, replicas in enumerate(shard_map.replica_sets):
        primary = shard_map.primaries.get(shard)
        first, last = shard_map.mapper.slot_range(shard)
        rows.append(
            {
                "shard": shard,
                "slots": [first, last],
                "primary": primary,
                "followers": [member for member in replicas if member != primary],
            }
        )
    return rows


def health_of(gossip: str, unanswered: bool) -> str:
    """up, suspect or down: gossip's word, and down whenever the node was asked and did not answer.

    A node that was not asked (it serves no operations port, or the gathering ran out of
    time first) is shown as gossip sees it, without figures.
    """
    if unanswered or gossip in _NOT_ASKED:
        return "down"
    return "suspect" if gossip == "suspect" else "up"


Fetch = Callable[[Endpoint, float], dict[str, Any]]


def gather(
    node_id: str,
    members: list[MemberEntry],
    shard_map: ShardMap,
    local_status: Callable[[], dict[str, Any]],
    fetch: Fetch,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The whole ``/cluster.json`` document (worker thread)."""
    deadline = clock() + GATHER_BUDGET
    nodes = []
    for member in members:
        status: dict[str, Any] | None = None
        reason = ""
        unanswered = False
        started = clock()
        if member.node_id == node_id:
            status = local_status()
        elif member.gossip in _NOT_ASKED:
            reason = f"gossip says {member.gossip}"
        elif member.health is None:
            reason = "no figures: it serves no --health-addr"
        elif started >= deadline:
            reason = "no figures: not asked, the gathering ran out of time"
        else:
            try:
                status = fetch(member.health, min(PEER_TIMEOUT, deadline - started))
            except (OSError, ValueError) as error:
                reason = f"no answer from {member.health}: {error}"
                unanswered = True
        nodes.append(
            {
                "node_id": member.node_id,
                "gossip": member.gossip,
                "health": health_of(member.gossip, unanswered),
                "reason": reason,
                "address": str(member.health) if member.health else None,
                "answered_ms": round((clock() - started) * 1000, 1) if status is not None else None,
                "status": status,
            }
        )
    return {
        "served_by": node_id,
        "at": time.time(),
        "epoch": shard_map.epoch,
        "shards": shard_rows(shard_map),
        "nodes": nodes,
    }


class ClusterGatherer:
    """Runs :func:`gather` in the worker pool, one at a time, and reuses a fresh answer. Reactor thread only."""

    def __init__(
        self,
        reactor: Reactor,
        node_id: str,
        members: Callable[[], list[MemberEntry]],
        shard_map: Callable[[], ShardMap],
        local_status: Callable[[], dict[str, Any]],
        fetch: Fetch,
    ) -> None:
        self._reactor = reactor
        self._node_id = node_id
        self._members = members
        self._shard_map = shard_map
        self._local_status = local_status
        self._fetch = fetch
        self._waiting: list[Callable[[bytes | None], None]] = []
        self._answer: tuple[float, bytes] | None = None

    def request(self, done: Callable[[bytes | None], None]) -> None:
        """``done(document)`` later on the reactor thread; None if gathering failed."""
        if self._answer is not None and time.monotonic() - self._answer[0] < REUSE_SECONDS:
            done(self._answer[1])
            return
        self._waiting.append(done)
        if len(self._waiting) > 1:
            return  # a gathering is under way: its answer serves this request too
        members, shard_map = self._members(), self._shard_map()

        def task() -> bytes:
            document = gather(self._node_id, members, shard_map, self._local_status, self._fetch)
            return json.dumps(document).encode()

        self._reactor.submit(task, self._finished)

    def _finished(self, body: bytes | None, error: BaseException | None) -> None:
        waiting, self._waiting = self._waiting, []
        if error is None and body is not None:
            self._answer = (time.monotonic(), body)
        else:
            logger.error("gathering the dashboard's cluster view failed: {!r}", error)
        for done in waiting:
            done(body if error is None else None)
