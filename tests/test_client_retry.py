"""The client's retry policy: RetryBudget on a fake clock, and the retry decisions against a scripted server.

The scripted server speaks the native protocol on a loopback port and answers
each request as the test says (a refusal, a reply, or a dropped connection), so
every decision in ``aegiskv.client.retry`` is met on purpose. The client's
waits go to a list instead of sleeping.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from aegiskv.client import (
    Client,
    ConditionNotMetError,
    Config,
    ConnectionClosedError,
    MovedError,
    RateLimitedError,
    RetriesExhaustedError,
    TryAgainError,
)
from aegiskv.client.connection import NativeConnection
from aegiskv.client.errors import AegisError
from aegiskv.client.retry import RetryBudget
from aegiskv.cluster.redirect import NO_PRIMARY_YET
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, FrameDecoder, Opcode, Status
from tests.wire import wait_until

# -- RetryBudget ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FixedJitter:
    """Stands in for random.Random: uniform() always gives the same point of its range."""

    def __init__(self, where: float) -> None:
        self.where = where

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.where


def budget(clock: FakeClock, *, max_retries: int = 20, seconds: float = 5.0, where: float = 0.0) -> RetryBudget:
    return RetryBudget(max_retries, seconds, 0.05, 0.5, clock, FixedJitter(where))  # type: ignore[arg-type]


def test_backoff_doubles_from_the_base_to_the_cap_with_jitter_below_it() -> None:
    low = budget(FakeClock(), where=0.0)
    assert [low.next_delay() for _ in range(6)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25])
    high = budget(FakeClock(), where=0.999)
    delays = [high.next_delay() for _ in range(6)]
    for delay, cap in zip(delays, [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]):
        assert delay is not None and cap * 0.99 < delay < cap


def test_retries_stop_at_max_retries() -> None:
    counted = budget(FakeClock(), max_retries=3)
    assert all(counted.next_delay() is not None for _ in range(3))
    assert counted.next_delay() is None
    assert counted.retries == 3
    assert budget(FakeClock(), max_retries=0).next_delay() is None


def test_retries_stop_at_the_time_budget_and_the_last_wait_is_cut_to_it() -> None:
    clock = FakeClock()
    timed = budget(clock, seconds=1.0, where=0.999)
    clock.now += 0.9
    assert timed.next_delay() == pytest.approx(0.05, rel=0.01)  # 0.1 s left: the wait fits
    clock.now += 0.08
    assert timed.next_delay() == pytest.approx(0.02)  # 0.02 s left: cut to it
    clock.now += 0.02
    assert timed.next_delay() is None  # the budget is spent, retries left or not
    assert timed.retries == 2


def test_exhausted_names_the_attempts_and_keeps_the_last_failure_as_cause() -> None:
    clock = FakeClock()
    failure = TryAgainError("slot 1 has no primary yet", "TRYAGAIN")
    fresh = budget(clock)
    assert fresh.exhausted(failure) is failure  # no retry made: the failure itself
    fresh.next_delay()
    fresh.next_delay()
    clock.now += 1.5
    raised = fresh.exhausted(failure)
    assert isinstance(raised, RetriesExhaustedError)
    assert "3 attempts" in str(raised) and "1.50s" in str(raised)
    assert raised.__cause__ is failure


# -- a scripted native server ------------------------------------------------------------------

CLOSE = None  # an answer: close the connection without replying


def reply_ok(frame: Frame) -> bytes:
    """What a healthy server would say: GET finds "v", anything else succeeds (version 1)."""
    if frame.opcode == Opcode.GET:
        return native.encode_value_reply(Opcode.GET, frame.request_id, b"v", 1)
    return native.encode_status_reply(frame.opcode, frame.request_id, Status.OK, version=1)


def refusal(status: int, code: str, message: str) -> Callable[[Frame], bytes]:
    return lambda frame: native.encode_error(frame.opcode, frame.request_id, status, code, message)


NO_PRIMARY = refusal(Status.TRY_AGAIN, "TRYAGAIN", f"slot 7 {NO_PRIMARY_YET} (an election is under way)")
QUORUM_LOST = refusal(
    Status.TRY_AGAIN, "TRYAGAIN", "write quorum of 2 not reached; the write may or may not have been applied"
)


class ScriptedServer:
    """Answers the n-th request (counted over all connections) with ``script[n]``, then ``reply_ok``.

    A script entry is a function of the request frame giving the reply bytes,
    or CLOSE. With ``close_when_idle`` the server closes each connection after
    its first reply (as a server would one that sat idle too long).
    """

    def __init__(self, script: list[Callable[[Frame], bytes] | None], close_when_idle: bool = False) -> None:
        self.script = list(script)
        self.close_when_idle = close_when_idle
        self.requests: list[Frame] = []
        self.connections = 0
        self.closed = 0  # connections this server closed
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        decoder = FrameDecoder()
        with connection:
            while data := connection.recv(65536):
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    with self._lock:
                        self.requests.append(frame)
                        answer = self.script.pop(0) if self.script else reply_ok
                    if answer is CLOSE:
                        break
                    connection.sendall(answer(frame))
                    if not self.close_when_idle:
                        continue
                    break
                else:
                    continue
                break
        with self._lock:
            self.closed += 1

    def sent(self, opcode: int) -> list[Frame]:
        with self._lock:
            return [frame for frame in self.requests if frame.opcode == opcode]

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: list[Callable[[Frame], bytes] | None], close_when_idle: bool = False) -> ScriptedServer:
        servers.append(ScriptedServer(script, close_when_idle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client_of(server: ScriptedServer, **options: object) -> tuple[Client, list[float]]:
    """A client of ``server`` alone whose waits between retries are recorded, not slept."""
    client = Client(Config(seeds=[server.address], cluster_routing=False, read_timeout=5.0, **options))  # type: ignore[arg-type]
    waits: list[float] = []
    client._sleep = waits.append
    return client, waits


# -- the decisions ------------------------------------------------------------------------------


def test_no_primary_yet_is_retried_even_for_a_conditional_set(scripted) -> None:
    server = scripted([NO_PRIMARY, NO_PRIMARY])
    client, waits = client_of(server)
    with client:
        assert client.set("k", "v", only_if_absent=True) == 1
    assert len(server.sent(Opcode.SET)) == 3  # the election "ended" on the third attempt
    assert len(waits) == 2


def test_an_unknown_outcome_repeats_only_idempotent_requests(scripted) -> None:
    server = scripted([QUORUM_LOST, QUORUM_LOST])
    client, _waits = client_of(server)
    with client:
        with pytest.raises(TryAgainError, match="may or may not"):
            client.set("k", "v", only_if_absent=True)
        assert len(server.sent(Opcode.SET)) == 1  # not repeated: the first may have stored it
        assert client.set("k", "v") == 1  # unconditional: repeating it cannot change the outcome
    assert len(server.sent(Opcode.SET)) == 3


def test_a_connection_lost_after_sending_repeats_only_idempotent_requests(scripted) -> None:
    server = scripted([CLOSE, CLOSE])
    client, _waits = client_of(server)
    with client:
        with pytest.raises(ConnectionClosedError):
            client.set("k", "v", if_version=4)
        assert len(server.sent(Opcode.SET)) == 1
        assert client.get("k") == b"v"
    assert len(server.sent(Opcode.GET)) == 2


def test_cluster_down_is_retried_and_other_refusals_are_not(scripted) -> None:
    down = refusal(Status.CLUSTER_DOWN, "CLUSTERDOWN", "no node serves slot 7")
    limited = refusal(Status.RATE_LIMITED, "RATELIMITED", "too many requests")
    server = scripted([down, limited])
    client, _waits = client_of(server)
    with client, pytest.raises(RateLimitedError):
        client.set("k", "v")  # CLUSTERDOWN, retried; then a rate limit, raised as it is
    assert len(server.sent(Opcode.SET)) == 2


def test_retries_end_at_max_retries_with_the_last_failure_as_cause(scripted) -> None:
    server = scripted([NO_PRIMARY] * 10)
    client, waits = client_of(server, max_retries=3)
    with client, pytest.raises(RetriesExhaustedError, match="4 attempts") as raised:
        client.get("k")
    assert isinstance(raised.value.__cause__, TryAgainError)
    assert len(server.sent(Opcode.GET)) == 4
    assert len(waits) == 3 and all(0 < wait <= 0.5 for wait in waits)


def test_redirects_are_followed_at_once_then_waited_on_like_other_refusals(scripted) -> None:
    server = scripted([])
    moved = refusal(Status.MOVED, "MOVED", f"{server.address} 9 7")  # to itself: the nodes disagree
    server.script = [moved] * 8
    client, waits = client_of(server, max_redirects=3)
    with client:
        assert client.set("k", "v", only_if_absent=True) == 1  # a redirected request was not run
    assert len(server.sent(Opcode.SET)) == 9
    assert len(waits) == 2  # after redirects 4 and 8: three are followed at once each time


def test_still_redirected_when_retries_run_out_raises_moved(scripted) -> None:
    server = scripted([])
    server.script = [refusal(Status.MOVED, "MOVED", f"{server.address} 9 7")] * 8
    client, _waits = client_of(server, max_redirects=2, max_retries=0)
    with client, pytest.raises(MovedError) as raised:
        client.get("k")
    assert raised.value.slot == 7
    assert len(server.sent(Opcode.GET)) == 3


def test_a_pipeline_follows_the_same_rules_operation_by_operation(scripted) -> None:
    # The connection drops after the batch was read: each operation's outcome is unknown.
    server = scripted([CLOSE])
    client, _waits = client_of(server)
    with client:
        pipe = client.pipeline()
        pipe.set("a", "1", only_if_absent=True).set("b", "2").get("c").delete("d")
        results = pipe.execute()
    assert isinstance(results[0], ConnectionClosedError)  # conditional: not repeated
    assert results[1:] == [1, b"v", True]  # idempotent: sent again, answered
    conditional = [frame for frame in server.sent(Opcode.SET) if frame.flags & native.SET_IF_ABSENT]
    assert len(conditional) == 1


def test_a_pipeline_retries_a_refused_operation_and_keeps_the_answered_ones(scripted) -> None:
    server = scripted([reply_ok, NO_PRIMARY, reply_ok])
    client, _waits = client_of(server)
    with client:
        pipe = client.pipeline()
        pipe.set("a", "1").set("b", "2", only_if_present=True).get("c")
        assert pipe.execute(raise_on_error=True) == [1, 1, b"v"]
    assert len(server.sent(Opcode.SET)) == 3  # "a" once, "b" twice
    assert len(server.sent(Opcode.GET)) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(scripted) -> None:
    server = scripted([], close_when_idle=True)
    client, _waits = client_of(server, max_retries=0)
    with client:
        client.set("k", "v")
        wait_until(lambda: server.closed == 1, what="the server to close the idle connection")
        # Sent into the closed connection, the request would be lost with an unknown outcome, and a
        # conditional set would fail. Noticed first, it goes over a new connection instead.
        assert client.set("k", "w", only_if_present=True) == 1
    assert server.connections == 2


def test_stale_sees_a_close_by_the_server_and_nothing_else(scripted) -> None:
    server = scripted([], close_when_idle=True)
    connection = NativeConnection(("127.0.0.1", int(server.address.rsplit(":", 1)[1])), 1.0, 5.0, 5.0)
    try:
        assert not connection.stale()  # connected, idle: usable
        assert connection.call(Opcode.PING).status == Status.OK
        wait_until(lambda: server.closed == 1, what="the server to close the connection")
        assert wait_until(connection.stale, what="the close to be seen")
    finally:
        connection.close()
    assert connection.stale()


def test_an_error_that_is_not_a_retry_decision_is_raised(scripted) -> None:
    server = scripted([refusal(Status.NOT_STORED, "", "")])
    client, waits = client_of(server)
    with client, pytest.raises(ConditionNotMetError):
        client.set("k", "v", only_if_absent=True)
    assert waits == []
    assert isinstance(ConditionNotMetError("x"), AegisError)
