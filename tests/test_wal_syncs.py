"""fsyncs per second of the write-ahead log, in INFO persistence and /metrics, on a real node.

Group commit shows there as fewer fsyncs than writes; an operator reads the rate to see what
the disk is asked for.
"""

from __future__ import annotations

import time
import urllib.request

import redis

from aegiskv.testing.localnode import LocalNode
from tests.conftest import StartNode

DEADLINE = 30.0  # a busy machine; the rate is counted once a second


def _persistence(client: redis.Redis) -> dict[str, int]:
    """The log's counters of INFO persistence (its text fields left out)."""
    info = client.info("persistence")
    return {
        name: int(value) for name, value in info.items() if name.startswith("aegis_wal_") and isinstance(value, int)
    }


def _metrics(node: LocalNode) -> dict[str, float]:
    assert node.health_address is not None
    host, port = node.health_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("aegis_wal_syncs"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_fsync_mode_reports_fsyncs_per_second(start_node: StartNode) -> None:
    node = start_node("--wal", "fsync", "--gossip", "off")
    assert node.resp_address is not None
    client = redis.Redis(*node.resp_address, socket_timeout=10)
    deadline = time.monotonic() + DEADLINE
    writes = 0
    # Writes go on until a whole second with fsyncs in it was counted.
    while True:
        for _ in range(20):
            client.set(b"key:%d" % writes, b"v")
            writes += 1
        fields = _persistence(client)
        if fields["aegis_wal_syncs_per_sec"] > 0:
            break
        assert time.monotonic() < deadline, f"no fsync counted per second after {writes} writes: {fields}"
    total = fields["aegis_wal_syncs"]
    assert 0 < fields["aegis_wal_syncs_per_sec"] <= total <= fields["aegis_wal_records_written"]
    samples = _metrics(node)
    assert samples["aegis_wal_syncs_total"] >= total
    assert "aegis_wal_syncs_per_second" in samples
