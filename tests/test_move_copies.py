"""Shard copies of a join on real processes: a few at a time, at the bandwidth set, and shown in INFO.

Two nodes (RF 2) hold keys; a third joins and copies the shards it gains from
their primaries. With one copy at a time and a bandwidth far below what the
copies could take, no primary's INFO may show more than one copy under way
while its others wait their turn, the newcomer's INFO must show a copy it
receives, and the join must still end with every key on the newcomer's shards
and the counters (INFO and /metrics) matching.

Two nodes, not one: a lone node's shards have one voter and a quorum floor of
two once a second member is seen, so their leases lapse whenever the copies take
longer than a lease (aegiskv.cluster.leases, "The quorum floor"); that is not
what this test is about.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aegiskv.admin.main import admin_main
from aegiskv.client import Client, Config, NotFoundError
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster, gossip_address, info, wait_for_agreement
from tests.wire import http_request, metric_samples, wait_until

pytestmark = pytest.mark.slow  # three processes and throttled copies: several seconds

SHARDS = 8
KEYS = 1600
# 1600 keys x ~410 bytes: ~82 kB a shard, more than the smallest backlog keeps (64 KiB a shard), so
# the newcomer must be sent each shard it gains (~5 of 8, ~430 kB) whole, at 128 KiB/s per primary.
VALUE = "v" * 400
BANDWIDTH = 128 * 1024


def test_a_join_with_one_copy_at_a_time_and_a_low_bandwidth_converges_and_shows_its_copies(tmp_path: Path) -> None:
    cluster = Cluster(
        tmp_path,
        shards=SHARDS,
        env={
            "AEGIS_REPLICATION_FACTOR": "2",
            "AEGIS_REPLICATION_BACKLOG": "64KiB",
            "AEGIS_MOVE_CONCURRENCY": "1",
            "AEGIS_MOVE_BANDWIDTH": "128KiB",
        },
    )
    try:
        old = cluster.start_many(2)
        wait_for_agreement(old, {"n0", "n1"})
        with Client(Config(seeds=[node.address_text for node in old], max_retries=20)) as client:
            for index in range(KEYS):
                client.set(f"key:{index}", VALUE)
            joined = time.monotonic()
            newcomer = cluster.start(2, seeds=[gossip_address(old[0])])
            most_sending = 0
            seen: set[str] = set()  # what INFO and `aegis status` showed at least once while copying

            def copies_shown() -> bool:
                nonlocal most_sending
                sent = [info(node, "replication") for node in old]
                most_sending = max([most_sending, *(fields["aegis_copies_sending"] for fields in sent)])
                if any(fields["aegis_copies_queued"] > 0 for fields in sent):
                    seen.add("queued")
                if any("state=copying" in str(fields.get("aegis_move_out_0", "")) for fields in sent):
                    seen.add("sending")
                    if "status" not in seen and any(move["state"] == "copying" for move in status_moves(old[0])):
                        seen.add("status")
                    if "dashboard" not in seen and any(dashboard_moves(node) for node in old):
                        seen.add("dashboard")
                if str(info(newcomer, "replication").get("aegis_move_in_0", "")).startswith("shard="):
                    seen.add("received")
                return seen == {"queued", "sending", "status", "dashboard", "received"}

            wait_until(copies_shown, timeout=30, interval=0.02, what="INFO, aegis status, /status.json to show copies")
            wait_for_agreement([*old, newcomer], {"n0", "n1", "n2"})
            done = [wait_until(functools.partial(idle, node), timeout=30, what="no copy under way") for node in old]
            elapsed = time.monotonic() - joined
            assert most_sending == 1  # never more than the one slot
            assert sum(fields["aegis_copies_completed"] for fields in done) >= 1
            for node, fields in zip(old, done):
                assert fields["aegis_copies_queued"] == 0
                assert (fields["aegis_move_bandwidth"], fields["aegis_move_concurrency"]) == (BANDWIDTH, 1)
                assert not any(name.startswith("aegis_move_out_") for name in fields)
                # At least as long as the bandwidth asks: the bucket's first 64 KiB at once, then
                # 128 KiB/s (a lower bound: a slow machine only makes it longer).
                assert elapsed >= (fields["aegis_copy_bytes"] - 64 * 1024) / BANDWIDTH
                samples = metrics(node)
                assert samples[("aegis_shard_copies_completed_total", ())] == fields["aegis_copies_completed"]
                assert samples[("aegis_shard_copies_bytes_total", ())] == fields["aegis_copy_bytes"]
                assert samples[("aegis_shard_copies_keys_total", ())] == fields["aegis_copy_keys"]
                assert samples[("aegis_shard_copies_in_flight", (("direction", "sending"),))] == 0
            assert status_moves(old[0]) == []  # nothing in flight: aegis status lists no move
            assert not any(dashboard_moves(node) for node in old)
            copied = sum(fields["aegis_copy_keys"] for fields in done)
            assert copied >= KEYS // 3  # the newcomer's share, roughly two thirds of the keys
            with Client(Config(seeds=[newcomer.address_text], max_retries=20)) as fresh:
                lost = []
                for index in range(KEYS):
                    try:
                        if fresh.get(f"key:{index}") != VALUE.encode():
                            lost.append(index)
                    except NotFoundError:
                        lost.append(index)
                assert lost == []
    finally:
        cluster.close()


def status_moves(node: LocalNode) -> list[dict[str, Any]]:
    """``aegis status --json``'s moves, asked of ``node`` (in this process)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = admin_main(["status", "--seed", node.address_text, "--interval", "0.01", "--json"])
    assert code == 0
    moves: list[dict[str, Any]] = json.loads(out.getvalue())["moves"]
    for move in moves:
        assert move["from"] in ("n0", "n1") and move["to"] == "n2"
    return moves


def dashboard_moves(node: LocalNode) -> list[dict[str, Any]]:
    """The moves a node's /status.json reports (what the dashboard's /cluster.json gathers)."""
    status, _headers, body = http_request(node.addresses["health"], "/status.json")
    assert status == 200
    moves: list[dict[str, Any]] = json.loads(body)["moves"]
    for move in moves:
        assert move["to"] == "n2" and move["state"] in ("copying", "queued")
    return moves


def idle(node: LocalNode) -> dict[str, Any] | None:
    fields = info(node, "replication")
    return fields if fields["aegis_copies_sending"] == 0 and fields["aegis_copies_queued"] == 0 else None


def metrics(node: LocalNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _headers, body = http_request(node.addresses["health"], "/metrics")
    assert status == 200
    return metric_samples(body.decode())
