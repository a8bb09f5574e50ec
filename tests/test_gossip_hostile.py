"""Hostile gossip: whatever arrives on the gossip port, the node keeps serving and counts it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from aegiskv.client import Client, Config
from aegiskv.cluster.membership import SwimMembership
from aegiskv.testing.localnode import LocalNode
from tests.wire import wait_until


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[LocalNode]:
    started = LocalNode(str(tmp_path_factory.mktemp("hostile-gossip")), ["--node-id", "target"])
    yield started
    assert started.stop() == 0


def _cluster_info(node: LocalNode) -> dict[str, Any]:
    with Client(Config(seeds=[node.address_text])) as client:
        return client.info("cluster")["cluster"]


def _unsigned(message: dict) -> bytes:
    return b"\x00" + json.dumps(message).encode()


HOSTILE = [
    b"",
    b"\x00",
    b"\x00not json",
    b"\x01" + b"x" * 60,  # "signed" without a secret configured
    _unsigned({"t": "pingreq", "s": 1, "f": "x", "to": "target", "h": "127.0.0.1", "p": 70000, "u": []}),
    _unsigned({"t": "pingreq", "s": 1, "f": "x", "to": "nobody", "h": "192.0.2.7", "p": 9, "u": []}),
    _unsigned({"t": "ping", "s": 1, "f": "x", "u": [["evil", 0, 1, "127.0.0.1", 7701, {"client": "garbage"}, "evil"]]}),
    _unsigned({"t": "ping", "s": 1, "f": "x", "u": [["evil", 0, 1, "evil.example", 7701, {}, "evil"]]}),
    _unsigned({"t": "ping", "s": 1, "f": "x", "u": [["evil", 0, 1, "127.0.0.1", 0, {}, "evil"]]}),
    _unsigned({"t": "ping", "s": 1e300, "f": "x", "u": []}),
    _unsigned({"t": "ping", "s": "9" * 5000, "f": "x", "u": []}),
    _unsigned({"t": "nonsense", "s": 1, "f": "x", "u": []}),
    b"\x00" + b"[" * 100_000,
]


def test_hostile_datagrams_are_dropped_and_the_node_keeps_serving(node: LocalNode) -> None:
    host, port = node.addresses["gossip"]
    before = _cluster_info(node)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in HOSTILE:
            sender.sendto(datagram[:65000], (host, port))

    def counted() -> dict[str, Any] | None:
        seen = _cluster_info(node)
        malformed = seen["aegis_gossip_malformed"] - before["aegis_gossip_malformed"]
        refused = seen["aegis_gossip_pingreq_refused"] - before["aegis_gossip_pingreq_refused"]
        return seen if malformed >= 8 and refused >= 1 else None

    seen = wait_until(counted, timeout=10, what="the hostile datagrams to be counted")
    # Nobody joined, the map is this node alone, and it still answers.
    assert seen["aegis_gossip_members_alive"] == 1
    with Client(Config(seeds=[node.address_text])) as client:
        assert set(client.topology()["nodes"]) == {"target"}
        client.set("still", b"serving")
        assert client.get("still") == b"serving"


def test_a_ping_request_for_an_unknown_target_sends_nothing() -> None:
    member = SwimMembership("me", ("10.0.0.1", 7701))
    request = {"t": "pingreq", "s": 3, "f": "x", "to": "stranger", "h": "192.0.2.9", "p": 53, "u": []}
    assert member.receive(("10.0.0.2", 7701), json.dumps(request).encode(), 1.0) == []
    assert member.counters["pingreq_refused"] == 1
