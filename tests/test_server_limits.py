"""The node's protective limits, each against a real process: memory, auth, rate, connections, idleness, output.

Each test starts a node with the setting it exercises (flags where they exist,
``AEGIS_*`` variables otherwise) and checks both sides: the offender is
limited, and everyone else keeps being served.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from aegiskv.client import (
    AuthenticationError,
    Client,
    Config,
    ConnectionClosedError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolViolationError,
    RateLimitedError,
)
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Opcode, Status
from aegiskv.testing.localnode import LocalNode
from tests.wire import RawConnection, error_code, rss_bytes, wait_until

MIB = 1024 * 1024


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, **{f"AEGIS_{name.upper()}": value for name, value in settings.items()}}


# -- memory ----------------------------------------------------------------------------


def test_eviction_keeps_memory_under_max_and_spares_the_hot_key(start_node) -> None:
    node = start_node("--max-memory", "2")
    with Client(Config(seeds=[node.address_text])) as client:
        client.set("hot", "often read")
        for _ in range(3):
            # Read after its write: the hit moves it from probation to the protected segment.
            assert client.get("hot") == b"often read"
        cold_value = b"c" * 4096
        written = 0
        # About 8 MiB of cold data, four times the budget, in batches small enough to run inline.
        # The hot key is not read during this scan: plain LRU would evict it, SLRU must not.
        for batch in range(32):
            client.mset({f"cold:{batch}:{index}": cold_value for index in range(64)})
            written += 64
            memory = client.info("memory")["memory"]
            assert memory["used_memory"] <= memory["maxmemory"] == 2 * MIB

        info = client.info()
        assert info["stats"]["evicted_keys"] > 0
        assert info["keyspace"]["db0"]["keys"] < written
        # Least recently used cold keys went first; the newest are still there.
        assert client.mget([f"cold:0:{index}" for index in range(64)]) == [None] * 64
        assert client.get("cold:31:63") == cold_value
        assert client.get("hot") == b"often read"

        # A value that cannot fit at all is refused without evicting anything.
        keys_before = client.info("keyspace")["keyspace"]["db0"]["keys"]
        with pytest.raises(OutOfMemoryError) as raised:
            client.set("too-big", b"x" * (3 * MIB))
        assert raised.value.code == "OUT_OF_MEMORY"
        assert client.info("keyspace")["keyspace"]["db0"]["keys"] == keys_before
        assert client.get("hot") == b"often read"


# -- authentication ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_node(tmp_path_factory):
    node = LocalNode(str(tmp_path_factory.mktemp("auth-node")), ["--auth-token", "s3cret"])
    yield node
    assert node.stop() == 0


def test_requests_before_auth_are_refused(auth_node: LocalNode) -> None:
    with Client(Config(seeds=[auth_node.address_text])) as client:
        with pytest.raises(AuthenticationError) as raised:
            client.get("k")
        assert raised.value.code == "NOAUTH"
        with pytest.raises(AuthenticationError):
            client.set("k", "v")
        with pytest.raises(AuthenticationError):
            client.info()
    # Nothing was written by the refused SET.
    with Client(Config(seeds=[auth_node.address_text], auth_token="s3cret")) as client, pytest.raises(NotFoundError):
        client.get("k")


def test_wrong_token_is_refused(auth_node: LocalNode) -> None:
    with Client(Config(seeds=[auth_node.address_text], auth_token="wrong")) as client:
        with pytest.raises(AuthenticationError) as raised:
            client.get("k")
        assert raised.value.code == "AUTH_FAILED"


def test_right_token_works_and_lifts_the_small_frame_limit(auth_node: LocalNode) -> None:
    with Client(Config(seeds=[auth_node.address_text], auth_token="s3cret")) as client:
        value = b"v" * 100_000  # far above unauthenticated_max_frame
        client.set("auth:big", value)
        assert client.get("auth:big") == value


def test_connection_closed_after_max_auth_failures(auth_node: LocalNode) -> None:
    with RawConnection(auth_node.address) as raw:
        for _ in range(2):
            reply = raw.request(Opcode.AUTH, items=((b"nope", b""),))
            assert reply.status == Status.AUTH_FAILED
            # Still open after a failure below the limit: the next request gets an answer.
            assert raw.request(Opcode.GET, items=((b"k", b""),)).status == Status.NOAUTH
        reply = raw.request(Opcode.AUTH, items=((b"nope", b""),))
        assert reply.status == Status.AUTH_FAILED
        assert raw.read_until_closed() == []
    # The limit counts per connection: a new one may authenticate, and once it has,
    # wrong tokens neither close it nor take its access away.
    with RawConnection(auth_node.address) as raw:
        assert raw.request(Opcode.AUTH, items=((b"s3cret", b""),)).status == Status.OK
        for _ in range(5):
            assert raw.request(Opcode.AUTH, items=((b"nope", b""),)).status == Status.AUTH_FAILED
        assert raw.request(Opcode.GET, items=((b"auth:none", b""),)).status == Status.NOT_FOUND


@pytest.mark.parametrize(
    "opcode, items, code, detail",
    [
        (Opcode.SET, ((b"k", b"x" * 5000),), "FRAME_TOO_LARGE", b"4096"),
        (Opcode.MGET, ((b"a", b""), (b"b", b"")), "TOO_MANY_ITEMS", b"limit of 1"),
    ],
    ids=["large frame", "several items"],
)
def test_big_request_before_auth_is_a_protocol_error(auth_node: LocalNode, opcode, items, code, detail) -> None:
    # Before AUTH the limits are tiny, so a guesser cannot make the server buffer much.
    with RawConnection(auth_node.address) as raw:
        raw.send(opcode, items=items)
        frames = raw.read_until_closed()
    assert len(frames) == 1
    assert frames[0].status == Status.PROTOCOL_ERROR
    assert error_code(frames[0]) == code
    assert detail in (frames[0].items[0][1] or b"")


def test_client_reports_the_servers_protocol_error(auth_node: LocalNode) -> None:
    # Without a token the client's 5000-byte SET breaks the pre-auth frame limit; the server answers
    # PROTOCOL_ERROR/FRAME_TOO_LARGE and closes. The client should relay that, not call the reply garbage.
    client = Client(Config(seeds=[auth_node.address_text], max_retries=0))
    with client, pytest.raises(ProtocolViolationError, match="FRAME_TOO_LARGE"):
        client.set("k", b"x" * 5000)


# -- rate limit --------------------------------------------------------------------------


def test_rate_limit_per_connection(start_node) -> None:
    node = start_node("--rate-limit", "5", "--rate-burst", "5")
    # Without cluster routing: the client's shard-map fetch (TOPOLOGY) is a request like any
    # other and would take one of the five tokens this test counts.
    with Client(Config(seeds=[node.address_text], max_conns=1, cluster_routing=False)) as limited:
        pipeline = limited.pipeline()
        for index in range(20):
            pipeline.set(f"rate:{index}", "v")
        results = pipeline.execute()
        stored = [index for index, result in enumerate(results) if isinstance(result, int)]
        refused = [result for result in results if not isinstance(result, int)]
        # The burst of 5 passes (plus at most a token refilled meanwhile); the rest are refused.
        assert 5 <= len(stored) <= 6, results
        assert all(isinstance(result, RateLimitedError) for result in refused), refused
        assert {result.code for result in refused} == {"RATE_LIMITED"}

        # The bucket is per connection: another connection is not limited, and sees
        # that the refused writes were not applied.
        with Client(Config(seeds=[node.address_text])) as other:
            values = other.mget([f"rate:{index}" for index in range(20)])
        assert [index for index, value in enumerate(values) if value is not None] == stored

        # Tokens come back at 5 per second.
        def succeeds() -> bool:
            try:
                limited.set("rate:after", "v")
            except RateLimitedError:
                return False
            return True

        # One token takes 0.2 s to come back; 2 s is ten times that, so only a refill far
        # slower than the configured rate fails, not a busy test machine.
        started = time.monotonic()
        wait_until(succeeds, timeout=5, interval=0.05, what="a token to be refilled")
        assert time.monotonic() - started < 2.0


# -- connection limit --------------------------------------------------------------------


def test_connection_limit_refuses_the_sixth_connection(start_node) -> None:
    node = start_node(env=_env(max_connections="5"))
    connections = [RawConnection(node.address) for _ in range(5)]
    try:
        for raw in connections:
            assert raw.request(Opcode.PING).status == Status.OK

        with RawConnection(node.address) as sixth:
            frames = sixth.read_until_closed()
        assert len(frames) == 1
        assert frames[0].status == Status.BUSY
        assert error_code(frames[0]) == "BUSY"
        assert b"max number of clients" in (frames[0].items[0][1] or b"")

        # Existing connections are unaffected.
        for index, raw in enumerate(connections):
            reply = raw.request(Opcode.SET, items=((b"limit:%d" % index, b"v"),))
            assert reply.status == Status.OK
        info = connections[0].request(Opcode.INFO, items=((b"clients", b""), (b"stats", b"")))
        sections = {name: json.loads(value or b"") for name, value in info.items}  # a JSON object per section
        assert sections[b"clients"]["connected_clients"] == 5
        assert sections[b"stats"]["rejected_connections"] >= 1

        # A freed slot can be taken again (the server notices the close asynchronously).
        connections.pop().close()

        def accepted() -> bool:
            with RawConnection(node.address) as raw:
                raw.send(Opcode.PING)
                try:
                    return raw.recv_frame().status == Status.OK
                except EOFError:
                    return False

        wait_until(accepted, what="a slot to free up")
    finally:
        for raw in connections:
            raw.close()


def test_client_sees_refusal_as_connection_closed(start_node) -> None:
    node = start_node(env=_env(max_connections="1"))
    with RawConnection(node.address) as holder:
        assert holder.request(Opcode.PING).status == Status.OK
        client = Client(Config(seeds=[node.address_text], max_retries=0))
        # The documented mapping: a BUSY refusal is ConnectionClosedError.
        with client, pytest.raises(ConnectionClosedError, match="refused"):
            client.ping()


# -- idle timeout ------------------------------------------------------------------------


def test_idle_connection_is_closed_and_active_one_is_not(start_node) -> None:
    node = start_node(env=_env(idle_timeout="500ms"))
    stop = threading.Event()
    active_errors: list[BaseException] = []

    def keep_active(raw: RawConnection) -> None:
        try:
            while not stop.wait(0.2):
                assert raw.request(Opcode.PING).status == Status.OK
        except BaseException as error:
            active_errors.append(error)

    with RawConnection(node.address, timeout=10) as idle, RawConnection(node.address) as active:
        thread = threading.Thread(target=keep_active, args=(active,))
        thread.start()
        try:
            started = time.monotonic()
            assert idle.sock.recv(1) == b""  # blocks until the server closes it
            waited = time.monotonic() - started
        finally:
            stop.set()
            thread.join(5)
        # Closed no earlier than the 0.5 s idle timeout; 5 s is ten times it, for a loaded machine.
        assert 0.45 <= waited < 5, waited
        assert not active_errors, active_errors
        assert active.request(Opcode.PING).status == Status.OK


# -- back-pressure -----------------------------------------------------------------------


def test_reader_that_never_reads_does_not_grow_the_server(start_node) -> None:
    node = start_node()
    value = os.urandom(MIB)
    gets = 300  # 300 MB of replies if the server buffered them all
    with Client(Config(seeds=[node.address_text])) as client:
        client.set("bp:value", value)
        client.set("bp:small", "s")
        assert client.get("bp:value") == value
        baseline_rss = rss_bytes(node.pid)
        hits_before = int(client.info("stats")["stats"]["keyspace_hits"])

        stalled = RawConnection(node.address, receive_buffer=64 * 1024)
        try:
            request = native.encode_frame(Opcode.GET, 1, items=((b"bp:value", b""),))
            stalled.send_raw(request * gets)

            # Wait until the server stops executing the stalled client's GETs.
            samples: list[int] = []

            def settled() -> bool:
                samples.append(int(client.info("stats")["stats"]["keyspace_hits"]))
                return len(samples) >= 5 and samples[-1] == samples[-5]

            wait_until(settled, timeout=10, interval=0.05, what="the server to stop reading the stalled client")
            executed = samples[-1] - hits_before
            peak_rss = max(rss_bytes(node.pid) for _ in range(5))

            # Only about output_high_water (4 MiB) of replies plus socket buffers may be queued.
            assert executed < 50, f"{executed} of {gets} GETs executed for a client that reads nothing"
            assert peak_rss - baseline_rss < 64 * MIB, (baseline_rss, peak_rss)
            # Everyone else is still served, large values included.
            assert client.get("bp:small") == b"s"
            assert client.get("bp:value") == value
        finally:
            stalled.close()

        # The server notices the disconnect even though it stopped reading that socket.
        wait_until(
            lambda: client.info("clients")["clients"]["connected_clients"] == 1,
            what="the stalled connection to be closed",
        )
        assert client.ping() > 0
