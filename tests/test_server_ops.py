"""Every client operation against a real node, plus concurrency, malformed input and pooled batches.

One node per xdist worker serves the whole module (a node starts in about
0.4 s); tests use their own key prefixes so they do not depend on each other.
Tests that need a clean keyspace or special settings start their own node.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from aegiskv.client import (
    Client,
    ConditionNotMetError,
    Config,
    NotFoundError,
    ServerError,
    ValueWithTTL,
    VersionMismatchError,
)
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Opcode, Status
from aegiskv.testing.localnode import LocalNode
from tests.wire import RawConnection, error_code, resp_address_of, server_has_read_everything, wait_until


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("ops-node")))
    yield node
    assert node.stop() == 0


@pytest.fixture(scope="module")
def kv(shared_node: LocalNode) -> Iterator[Client]:
    with Client(Config(seeds=[shared_node.address_text])) as client:
        yield client


# -- single-key operations ---------------------------------------------------------------


def test_get_of_missing_key_raises_not_found(kv: Client) -> None:
    with pytest.raises(NotFoundError):
        kv.get("ops:missing")
    with pytest.raises(NotFoundError):
        kv.get_with_ttl("ops:missing")
    # NotFoundError is also a KeyError so dict-style callers can catch it.
    with pytest.raises(KeyError):
        kv.get(b"ops:missing")


def test_set_returns_increasing_versions(kv: Client) -> None:
    versions = [kv.set("ops:ver:a", "1"), kv.set("ops:ver:a", "2"), kv.set("ops:ver:b", "3"), kv.set("ops:ver:a", "4")]
    assert all(version > 0 for version in versions)
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions
    assert kv.get("ops:ver:a") == b"4"
    # The version read back is the one the last write returned.
    assert kv.get_with_ttl("ops:ver:a").version == versions[-1]


def test_get_with_ttl_reports_none_without_ttl_and_a_timedelta_with_one(kv: Client) -> None:
    version = kv.set("ops:ttl:none", b"v")
    assert kv.get_with_ttl("ops:ttl:none") == ValueWithTTL(b"v", None, version)

    kv.set("ops:ttl:some", b"w", ttl=30)
    result = kv.get_with_ttl("ops:ttl:some")
    assert result.value == b"w"
    assert isinstance(result.ttl, timedelta)
    assert timedelta(seconds=25) < result.ttl <= timedelta(seconds=30)


def test_set_with_ttl_accepts_float_seconds_and_timedelta(kv: Client) -> None:
    kv.set_with_ttl("ops:ttl:float", "a", 12.5)
    kv.set_with_ttl("ops:ttl:delta", "b", timedelta(minutes=2))
    float_ttl = kv.get_with_ttl("ops:ttl:float").ttl
    delta_ttl = kv.get_with_ttl("ops:ttl:delta").ttl
    assert float_ttl is not None and timedelta(seconds=10) < float_ttl <= timedelta(seconds=12.5)
    assert delta_ttl is not None and timedelta(seconds=110) < delta_ttl <= timedelta(minutes=2)
    with pytest.raises(ValueError):
        kv.set_with_ttl("ops:ttl:bad", "c", 0)


def test_only_if_absent_and_only_if_present(kv: Client) -> None:
    with pytest.raises(ConditionNotMetError):
        kv.set("ops:cond", "x", only_if_present=True)
    with pytest.raises(NotFoundError):
        kv.get("ops:cond")  # the failed conditional set stored nothing

    first = kv.set("ops:cond", "first", only_if_absent=True)
    with pytest.raises(ConditionNotMetError) as raised:
        kv.set("ops:cond", "second", only_if_absent=True)
    # A plain condition failure is not a version mismatch.
    assert not isinstance(raised.value, VersionMismatchError)
    assert kv.get("ops:cond") == b"first"

    second = kv.set("ops:cond", "third", only_if_present=True)
    assert second > first
    assert kv.get("ops:cond") == b"third"


def test_compare_and_set(kv: Client) -> None:
    # if_version=0 means "must be absent".
    v1 = kv.set("ops:cas", "one", if_version=0)
    with pytest.raises(VersionMismatchError) as raised:
        kv.set("ops:cas", "again", if_version=0)
    assert raised.value.current_version == v1

    v2 = kv.set("ops:cas", "two", if_version=v1)
    assert v2 > v1
    with pytest.raises(VersionMismatchError) as raised:
        kv.set("ops:cas", "stale", if_version=v1)
    assert raised.value.current_version == v2
    assert kv.get("ops:cas") == b"two"

    # A CAS against a missing key reports current version 0.
    with pytest.raises(VersionMismatchError) as raised:
        kv.set("ops:cas:absent", "x", if_version=v2)
    assert raised.value.current_version == 0


def test_keep_ttl(kv: Client) -> None:
    kv.set("ops:keep", "a", ttl=60)
    kv.set("ops:keep", "b", keep_ttl=True)
    kept = kv.get_with_ttl("ops:keep")
    assert kept.value == b"b"
    assert kept.ttl is not None and kept.ttl > timedelta(seconds=50)

    # Without keep_ttl a plain set clears the TTL.
    kv.set("ops:keep", "c")
    assert kv.get_with_ttl("ops:keep").ttl is None

    # keep_ttl and a new ttl contradict each other: the server rejects the request.
    with pytest.raises(ServerError) as raised:
        kv.set("ops:keep", "d", ttl=5, keep_ttl=True)
    assert raised.value.code == "INVALID"
    assert kv.get("ops:keep") == b"c"


def test_delete_reports_whether_the_key_existed(kv: Client) -> None:
    kv.set("ops:del", "x")
    assert kv.delete("ops:del") is True
    assert kv.delete("ops:del") is False
    with pytest.raises(NotFoundError):
        kv.get("ops:del")


def test_expire_and_persist(kv: Client) -> None:
    assert kv.expire("ops:exp:missing", 10) is False
    assert kv.persist("ops:exp:missing") is False

    kv.set("ops:exp", "v")
    assert kv.expire("ops:exp", timedelta(seconds=40)) is True
    ttl = kv.get_with_ttl("ops:exp").ttl
    assert ttl is not None and timedelta(seconds=35) < ttl <= timedelta(seconds=40)

    assert kv.persist("ops:exp") is True
    assert kv.get_with_ttl("ops:exp").ttl is None
    assert kv.get("ops:exp") == b"v"


def test_mset_and_mget(kv: Client) -> None:
    pairs = {f"ops:m:{index}": f"value-{index}" for index in range(20)}
    before = kv.set("ops:m:marker", "m")
    version = kv.mset(pairs)
    assert version > before

    keys = ["ops:m:none-1", *pairs, "ops:m:none-2"]
    values = kv.mget(keys)
    assert values[0] is None and values[-1] is None
    assert values[1:-1] == [value.encode() for value in pairs.values()]

    # Order follows the request, including repeated keys.
    assert kv.mget(["ops:m:3", "ops:m:1", "ops:m:3"]) == [b"value-3", b"value-1", b"value-3"]
    assert kv.mget([]) == []

    kv.mset([("ops:m:ttl:a", "a"), ("ops:m:ttl:b", "b")], ttl=timedelta(seconds=30))
    ttl = kv.get_with_ttl("ops:m:ttl:b").ttl
    assert ttl is not None and ttl <= timedelta(seconds=30)


def test_info_sections(kv: Client, shared_node: LocalNode) -> None:
    kv.set("ops:info", "x")
    everything = kv.info()
    # Redis's default sections in Redis's order.
    assert list(everything) == [
        "server",
        "clients",
        "memory",
        "persistence",
        "stats",
        "replication",
        "cpu",
        "errorstats",
        "cluster",
        "keyspace",
    ]
    assert everything["persistence"]["aegis_wal"] == "off"
    assert everything["server"]["process_id"] == shared_node.pid
    assert everything["server"]["aegis_native_port"] == shared_node.address[1]
    assert everything["server"]["tcp_port"] == resp_address_of(shared_node)[1]  # Redis's port field: the RESP port
    assert everything["clients"]["connected_clients"] >= 1
    assert everything["keyspace"]["db0"]["keys"] >= 1
    assert everything["memory"]["used_memory"] > 0
    assert everything["cluster"]["cluster_enabled"] == 1

    only_memory = kv.info("memory")
    assert set(only_memory) == {"memory"}
    assert only_memory["memory"]["maxmemory"] == 1024 * 1024 * 1024

    two = kv.info("KEYSPACE", "stats")  # any case; sections come in the model's order
    assert list(two) == ["stats", "keyspace"]
    assert two["stats"]["total_commands_processed"] > 0

    # "shards" walks every key: only when named, never in "all".
    assert "shards" not in kv.info("all")
    shards = kv.info("shards")["shards"]
    assert shards["aegis_shards"] == everything["cluster"]["aegis_shards"]
    assert shards["aegis_shard_keys_max"] >= 1


def test_ping(kv: Client, shared_node: LocalNode) -> None:
    assert 0 < kv.ping() < 1.0
    assert 0 < kv.ping(shared_node.address_text) < 1.0


def test_pipeline_returns_results_in_order(kv: Client) -> None:
    kv.delete("ops:pipe:gone")
    pipeline = kv.pipeline()
    pipeline.set("ops:pipe:a", "1").get("ops:pipe:a").get("ops:pipe:gone").set("ops:pipe:a", "2")
    pipeline.get("ops:pipe:a").delete("ops:pipe:a").delete("ops:pipe:a")
    assert len(pipeline) == 7
    results = pipeline.execute()
    assert len(results) == 7
    first_version, value, missing, second_version, value2, deleted, deleted_again = results
    assert isinstance(first_version, int) and isinstance(second_version, int)
    assert second_version > first_version
    assert value == b"1"
    assert isinstance(missing, NotFoundError)
    assert value2 == b"2"
    assert (deleted, deleted_again) == (True, False)
    assert len(pipeline) == 0  # execute() empties the queue

    with pytest.raises(NotFoundError):
        kv.pipeline().get("ops:pipe:gone").execute(raise_on_error=True)


# -- keys and values -------------------------------------------------------------------


def test_str_and_bytes_keys_and_values_are_the_same_bytes(kv: Client) -> None:
    kv.set("ops:ключ", "значение")
    assert kv.get("ops:ключ".encode()) == "значение".encode()
    kv.set(b"ops:bytes", b"\xff\xfe")
    assert kv.get("ops:bytes") == b"\xff\xfe"
    with pytest.raises(TypeError):
        kv.set("ops:bad", 42)  # type: ignore[arg-type]


def test_empty_value_is_not_a_missing_value(kv: Client) -> None:
    kv.set("ops:empty", b"")
    assert kv.get("ops:empty") == b""
    assert kv.get_with_ttl("ops:empty").value == b""
    # MGET must tell an empty value (b"") from a missing key (None).
    assert kv.mget(["ops:empty", "ops:empty:missing"]) == [b"", None]


def test_binary_keys_and_values_with_every_byte(kv: Client) -> None:
    every_byte = bytes(range(256))
    key = b"ops:bin:" + every_byte
    value = every_byte * 4 + every_byte[::-1]
    kv.set(key, value)
    assert kv.get(key) == value
    assert kv.mget([key]) == [value]


def test_ten_megabyte_value(kv: Client) -> None:
    value = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    kv.set("ops:big", value)
    assert kv.get("ops:big") == value
    assert kv.get_with_ttl("ops:big").value == value
    assert kv.delete("ops:big") is True


# -- expiry ----------------------------------------------------------------------------


def _gone(client: Client, key: str) -> bool:
    try:
        client.get(key)
    except NotFoundError:
        return True
    return False


def test_short_ttl_expires_on_time(kv: Client) -> None:
    started = time.monotonic()
    kv.set_with_ttl("ops:short", "v", 0.2)
    kv.set("ops:short:expire", "w")
    kv.expire("ops:short:expire", 0.2)
    assert kv.get("ops:short") == b"v"  # readable right after the write
    wait_until(lambda: _gone(kv, "ops:short") and _gone(kv, "ops:short:expire"), timeout=3, what="expiry")
    # Gone, but not before its TTL ran out (small slack for the millisecond rounding).
    assert time.monotonic() - started >= 0.19


def test_active_expiry_removes_keys_never_read(start_node) -> None:
    node = start_node()
    with Client(Config(seeds=[node.address_text])) as client:
        client.mset({f"active:{index}": "v" for index in range(200)}, ttl=0.3)
        client.mset({f"active:keep:{index}": "v" for index in range(5)})
        assert client.info("keyspace")["keyspace"]["db0"]["keys"] == 205

        # No reads: only the active sampler can bring the count down.
        def expired() -> bool:
            database = client.info("keyspace")["keyspace"]["db0"]
            return database["keys"] == 5 and database["expires"] == 0

        wait_until(expired, timeout=5, interval=0.05, what="the active expiry sampler")
        assert client.info("stats")["stats"]["expired_keys"] == 200
        assert client.mget([f"active:keep:{index}" for index in range(5)]) == [b"v"] * 5


# -- many clients ------------------------------------------------------------------------


def test_hundred_connections_pipelining_get_replies_in_order(shared_node: LocalNode) -> None:
    connections, requests_each = 100, 100
    barrier = threading.Barrier(connections, timeout=20)
    failures: list[str] = []

    def run(index: int) -> None:
        try:
            with RawConnection(shared_node.address, timeout=20) as raw:
                payload: list[bytes] = []
                expected: list[tuple[int, Opcode, Status, bytes | None]] = []
                for item in range(requests_each):
                    key = f"conc:{index}:{item}".encode()
                    value = f"{index}/{item}/".encode() * (item % 7 + 1)
                    request_id, frame = raw.encode(Opcode.SET, items=((key, value),))
                    payload.append(frame)
                    expected.append((request_id, Opcode.SET, Status.OK, None))
                    request_id, frame = raw.encode(Opcode.GET, items=((key, b""),))
                    payload.append(frame)
                    expected.append((request_id, Opcode.GET, Status.OK, value))
                request_id, frame = raw.encode(Opcode.GET, items=((f"conc:{index}:missing".encode(), b""),))
                payload.append(frame)
                expected.append((request_id, Opcode.GET, Status.NOT_FOUND, None))
                # Everyone sends at once, so the server really holds 100 busy connections.
                barrier.wait()
                raw.send_raw(b"".join(payload))
                for request_id, opcode, status, expected_value in expected:
                    reply = raw.recv_frame()
                    if (reply.request_id, reply.opcode, reply.status) != (request_id, opcode, status):
                        failures.append(f"connection {index}: expected {request_id}/{opcode!r}/{status!r}, got {reply}")
                        return
                    if expected_value is not None and reply.items[0][1] != expected_value:
                        failures.append(f"connection {index}: wrong value for request {request_id}")
                        return
        except Exception as error:
            failures.append(f"connection {index}: {error!r}")
            barrier.abort()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures[:5]
    assert not any(thread.is_alive() for thread in threads)


# -- malformed input ---------------------------------------------------------------------


def _patched(offset: int, data: bytes) -> bytes:
    """A valid PING frame (request id 7) with ``data`` written at ``offset``."""
    frame = bytearray(native.encode_frame(Opcode.PING, 7))
    frame[offset : offset + len(data)] = data
    return bytes(frame)


MALFORMED = {
    "bad magic": (_patched(4, b"\xbe\xef"), "BAD_MAGIC"),
    "bad version": (_patched(6, b"\x09"), "BAD_VERSION"),
    "unknown opcode": (_patched(7, b"\xc8"), "UNKNOWN_OPCODE"),
    # Only the length prefix is sent: the server must refuse before waiting for 2 GB.
    "oversize length": ((0x7FFFFFF0).to_bytes(4, "big"), "FRAME_TOO_LARGE"),
    "length below header": ((8).to_bytes(4, "big") + b"\0" * 8, "FRAME_TOO_SHORT"),
    # One item whose key length points past the end of the frame.
    "item past end": (
        native.encode_frame(Opcode.GET, 7, items=((b"k", b""),))[:-9] + (100).to_bytes(4, "big") + b"\0" * 4 + b"k",
        "BAD_ITEM_LENGTH",
    ),
    # An HTTP client on the native port: "GET " read as a length is over 1 GB.
    "http garbage": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "FRAME_TOO_LARGE"),
    "binary garbage": (bytes.fromhex("00000040") + bytes(range(100, 200)), "BAD_MAGIC"),
}


@contextmanager
def keeps_working(client: Client) -> Iterator[list[int]]:
    """Run set/get on ``client`` in a thread for the duration; fail if any call fails."""
    stop = threading.Event()
    counts = [0]
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                client.set("bystander", str(counts[0]))
                assert client.get("bystander") == str(counts[0]).encode()
                counts[0] += 1
            except BaseException as error:
                errors.append(error)
                return

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_until(lambda: counts[0] > 0 or errors, what="the bystander's first round trip")
        yield counts
        before = counts[0]
        wait_until(lambda: counts[0] > before or errors, what="the bystander to keep going")
    finally:
        stop.set()
        thread.join(5)
    assert not errors, errors


@pytest.mark.parametrize("data, code", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_gets_protocol_error_and_close(shared_node: LocalNode, kv: Client, data: bytes, code: str):
    with keeps_working(kv), RawConnection(shared_node.address) as raw:
        raw.send_raw(data)
        frames = raw.read_until_closed()
    assert len(frames) == 1, frames
    reply = frames[0]
    assert reply.status == Status.PROTOCOL_ERROR
    assert error_code(reply) == code
    assert reply.items[0][1], "the error should explain itself"


def test_valid_requests_before_garbage_are_answered_first(shared_node: LocalNode) -> None:
    with RawConnection(shared_node.address) as raw:
        ping = native.encode_frame(Opcode.PING, 1)
        get = native.encode_frame(Opcode.GET, 2, items=((b"ops:before-garbage", b""),))
        raw.send_raw(ping + get + _patched(4, b"\x00\x00"))
        frames = raw.read_until_closed()
    assert [(frame.request_id, frame.status) for frame in frames] == [
        (1, Status.OK),
        (2, Status.NOT_FOUND),
        (0, Status.PROTOCOL_ERROR),
    ]
    assert error_code(frames[2]) == "BAD_MAGIC"


# -- batches in the worker pool ----------------------------------------------------------


def test_batches_above_inline_limit_are_correct_and_ordered(kv: Client, shared_node: LocalNode) -> None:
    # 3000 keys > inline_batch_limit (256): these MSET/MGET run in the worker pool.
    pairs = {f"pool:{index}": f"value-{index}".encode() * (index % 5 + 1) for index in range(3000)}
    assert kv.mset(pairs) > 0
    keys = list(pairs)
    values = kv.mget([*keys, "pool:missing"])
    assert values[:-1] == list(pairs.values())
    assert values[-1] is None

    # Requests pipelined behind a pooled batch run after it, in order (read-your-writes).
    with RawConnection(shared_node.address) as raw:
        batch = [(f"pool2:{index}".encode(), b"v%d" % index) for index in range(1000)]
        frames = [
            native.encode_frame(Opcode.MSET, 1, items=batch),
            native.encode_frame(Opcode.GET, 2, items=((b"pool2:999", b""),)),
            native.encode_frame(Opcode.SET, 3, items=((b"pool2:999", b"overwritten"),)),
            native.encode_frame(Opcode.MGET, 4, items=[(key, b"") for key, _ in batch]),
            native.encode_frame(Opcode.PING, 5),
        ]
        raw.send_raw(b"".join(frames))
        replies = [raw.recv_frame() for _ in frames]
    assert [reply.request_id for reply in replies] == [1, 2, 3, 4, 5]
    assert all(reply.status == Status.OK for reply in replies), replies
    assert replies[1].items[0][1] == b"v999"
    assert [value for _, value in replies[3].items] == [value for _, value in batch[:-1]] + [b"overwritten"]


_POOLED_BATCH_KEYS = 400_000


@pytest.fixture(scope="module")
def big_batch_node(tmp_path_factory) -> Iterator[LocalNode]:
    """A node that accepts batches large enough to keep a worker busy for most of a second."""
    env = {**os.environ, "AEGIS_MAX_BATCH_KEYS": str(_POOLED_BATCH_KEYS)}
    node = LocalNode(str(tmp_path_factory.mktemp("big-batch-node")), env=env)
    yield node
    assert node.stop() == 0


def _latencies_during_pooled_batch(node: LocalNode, probe_opcode: int) -> tuple[float, list[float]]:
    """Run a 400,000-key MSET in the worker pool and probe the reactor on another connection meanwhile.

    Returns (seconds the pool worked on the batch, latency of each probe sent
    while it did). The reactor decodes a frame and hands it to the pool in the
    same loop turn in which it reads the frame's last bytes, so: wait until the
    server has read every byte, then the first probe's reply marks the hand-off
    and every later probe measures the reactor while a worker runs the batch.
    """
    items = [(b"pooled:%06d" % index, b"v" * 16) for index in range(_POOLED_BATCH_KEYS)]
    probe_items = ((b"pooled:probe", b""),) if probe_opcode == Opcode.GET else ()
    with RawConnection(node.address, timeout=20) as batch, RawConnection(node.address) as probe:
        batch_reply: list[tuple[float, object]] = []

        def wait_for_batch() -> None:
            frame = batch.recv_frame()
            batch_reply.append((time.perf_counter(), frame))

        batch.send(Opcode.MSET, items=items)
        waiter = threading.Thread(target=wait_for_batch)
        waiter.start()
        wait_until(lambda: server_has_read_everything(batch.sock, node.address[1]), what="the batch to be read")
        assert probe.request(probe_opcode, items=probe_items).status in (Status.OK, Status.NOT_FOUND)
        handed_off = time.perf_counter()
        latencies = []
        while waiter.is_alive():
            started = time.perf_counter()
            reply = probe.request(probe_opcode, items=probe_items)
            latencies.append(time.perf_counter() - started)
            assert reply.status in (Status.OK, Status.NOT_FOUND)
        waiter.join()
    assert batch_reply, "the batch got no reply"
    finished, frame = batch_reply[0]
    assert frame.status == Status.OK  # type: ignore[attr-defined]
    return finished - handed_off, latencies


@pytest.mark.parametrize("probe", [Opcode.PING, Opcode.GET], ids=["ping", "get"])
def test_pooled_batch_does_not_hold_the_reactor(big_batch_node: LocalNode, probe: Opcode) -> None:
    pool_seconds, latencies = _latencies_during_pooled_batch(big_batch_node, probe)
    # Without a batch long enough to tell a stall from scheduling noise this test proves nothing.
    assert pool_seconds > 0.2, f"batch ran only {pool_seconds:.3f}s in the pool"
    assert latencies, "no probe was answered while the pool worked on the batch"
    # While a worker runs the batch the reactor must keep answering other clients.
    # A healthy reactor answers within the GIL switch interval (5 ms); measured
    # under a full -n 2 load it stays below 70 ms, though once a probe waited
    # 0.21 s of a 0.59 s batch (the worker descheduled while it held the node
    # lock, on a machine busy with other tests). A reactor that waits for the
    # whole batch answers no probe during it (the assertion above), and one that
    # waits for long stretches of it stalls a probe for a large share of it.
    slowest = max(latencies)
    assert slowest < max(0.1, pool_seconds / 2), (
        f"a {probe.name} on another connection waited {slowest:.3f}s while the pool spent {pool_seconds:.3f}s "
        f"on the batch ({len(latencies)} probes)"
    )
