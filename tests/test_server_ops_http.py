"""The operations side of a real node: /health, /ready, /metrics and the SIGTERM drain."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from aegiskv.client import Client, Config, NotFoundError
from aegiskv.protocols.native.codec import Opcode, Status
from aegiskv.testing.localnode import LocalNode
from tests.wire import RawConnection, http_request, metric_samples, server_has_read_everything, wait_until


@pytest.fixture(scope="module")
def ops_node(tmp_path_factory) -> Iterator[LocalNode]:
    """One node for the HTTP tests; only the metrics test sends it native requests (it counts them)."""
    node = LocalNode(str(tmp_path_factory.mktemp("http-node")))
    yield node
    assert node.stop() == 0


def test_health_and_ready_while_serving(ops_node: LocalNode) -> None:
    node = ops_node
    assert node.health_address is not None
    status, headers, body = http_request(node.health_address, "/health")
    assert (status, body) == (200, b"ok\n")
    assert headers["Connection"] == "close"
    status, _, body = http_request(node.health_address, "/ready")
    assert (status, body) == (200, b"ready\n")
    # HEAD answers like GET, without a body.
    status, headers, body = http_request(node.health_address, "/health", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "3"


def test_unknown_path_and_method(ops_node: LocalNode) -> None:
    node = ops_node
    assert node.health_address is not None
    assert http_request(node.health_address, "/nope")[0] == 404
    assert http_request(node.health_address, "/health", method="POST")[0] == 405
    assert http_request(node.health_address, "/metrics", method="DELETE")[0] == 405
    # A request line that is not HTTP gets 400, not a hang or a crash.
    with socket.create_connection(node.health_address, timeout=5) as sock:
        sock.sendall(b"hello there\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    assert http_request(node.health_address, "/health")[0] == 200


def test_metrics_count_requests_keys_memory_and_latency(ops_node: LocalNode) -> None:
    node = ops_node
    assert node.health_address is not None
    with Client(Config(seeds=[node.address_text])) as client:
        for index in range(3):
            client.set(f"metric:{index}", "v" * 100)
        for index in range(5):
            client.get(f"metric:{index % 3}")
        with pytest.raises(NotFoundError):
            client.get("metric:missing")

    status, headers, body = http_request(node.health_address, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = metric_samples(body.decode())

    # A miss is a served request, not an error.
    assert samples[("aegis_requests_total", (("command", "get"), ("result", "ok")))] == 6
    assert samples[("aegis_requests_total", (("command", "set"), ("result", "ok")))] == 3
    assert samples[("aegis_requests_total", (("command", "set"), ("result", "error")))] == 0
    assert samples[("aegis_keys", ())] == 3
    assert samples[("aegis_memory_used_bytes", ())] >= 3 * 100
    assert samples[("aegis_keyspace_misses_total", ())] == 1

    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "aegis_request_duration_seconds_bucket" and dict(labels)["command"] == "get"
    )
    assert len(buckets) > 2
    assert buckets[-1] == (float("inf"), 6)
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "histogram buckets must be cumulative"
    assert samples[("aegis_request_duration_seconds_count", (("command", "get"),))] == 6


def test_metrics_count_requests_of_the_checked_path_too(start_node) -> None:
    """A rate-limited connection's requests run through the reactor's checked path
    (RequestPipeline._execute), which counts them with their loop turn like the
    plain path; a refused one is counted as rejected, not as run."""
    node = start_node("--rate-limit", "1", "--rate-burst", "4")
    assert node.health_address is not None
    with Client(Config(seeds=[node.address_text], max_conns=1, cluster_routing=False)) as client:
        pipeline = client.pipeline()
        for index in range(6):
            pipeline.set(f"checked:{index}", "v")
        results = pipeline.execute()
    stored = sum(isinstance(result, int) for result in results)
    assert 4 <= stored <= 5, results  # the burst, plus at most a token refilled meanwhile

    samples = metric_samples(http_request(node.health_address, "/metrics")[2].decode())
    assert samples[("aegis_requests_total", (("command", "set"), ("result", "ok")))] == stored
    assert samples[("aegis_requests_total", (("command", "set"), ("result", "rejected")))] == 6 - stored
    assert samples[("aegis_request_duration_seconds_count", (("command", "set"),))] == stored


def test_sigterm_drains_finishes_in_flight_work_and_exits_cleanly(start_node, tmp_path) -> None:
    pid_file = tmp_path / "aegis.pid"
    node = start_node("--pid-file", str(pid_file), "--drain-timeout", "10")
    assert node.health_address is not None
    # Written before the ready line, so a supervisor that saw the line can rely on the file.
    assert pid_file.read_text().strip() == str(node.pid)

    with Client(Config(seeds=[node.address_text])) as client:
        client.set("drain:k", "v")
        idle = RawConnection(node.address, timeout=10)
        busy = RawConnection(node.address, timeout=10)
        try:
            # A batch large enough to stay in the worker pool for a while: the drain must wait for it.
            items = [(b"drain:%06d" % index, b"v") for index in range(100_000)]
            busy.send(Opcode.MSET, items=items)
            # SIGTERM only once the server holds the whole request, so it is in flight, not half-received.
            wait_until(lambda: server_has_read_everything(busy.sock, node.address[1]), what="the batch to arrive")
            signalled = time.monotonic()
            node.process.send_signal(signal.SIGTERM)

            readiness: list[int | str] = []

            def not_ready() -> bool:
                try:
                    status = http_request(node.health_address, "/ready")[0]
                except OSError as error:
                    status = type(error).__name__  # the port closed: the process is gone
                readiness.append(status)
                return status != 200

            wait_until(not_ready, timeout=10, interval=0.01, what="/ready to report not ready")
            assert readiness[-1] in (503, "ConnectionRefusedError", "ConnectionResetError"), readiness

            # The in-flight batch is answered before the connection is closed; the idle one is just closed.
            replies = busy.read_until_closed()
            assert [(reply.opcode, reply.status) for reply in replies] == [(Opcode.MSET, Status.OK)]
            assert idle.read_until_closed() == []
        finally:
            idle.close()
            busy.close()

    assert node.process.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 10
    assert not pid_file.exists()
    log = node.log_text()
    assert "draining" in log and "drained; stopping" in log
